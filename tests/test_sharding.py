"""Grid sharding over a Mesh of 8 forced CPU devices: padding, placement, equality with
unsharded (a plain vmapped sweep, and λ̂ along training)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmsjax import sharding
from tmsjax.llc import LLCSettings, llc_along_training


def test_pad_grid_repeats_last_element():
    tree = {"a": jnp.arange(5.0), "b": jnp.arange(10.0).reshape(5, 2)}
    padded, size = sharding.pad_grid(tree, 8)
    assert size == 5 and padded["a"].shape == (8,)
    np.testing.assert_array_equal(padded["a"], [0, 1, 2, 3, 4, 4, 4, 4])
    assert padded["b"].shape == (8, 2)


def test_grid_size_mismatch_raises():
    with pytest.raises(ValueError, match="grid axis"):
        sharding.grid_size({"a": jnp.zeros(3), "b": jnp.zeros(4)})


def test_sharded_equals_unsharded_with_keys():
    assert jax.device_count() == 8
    mesh = sharding.grid_mesh()
    keys = jax.random.split(jax.random.key(0), 13)  # 13: not a multiple of 8, exercises padding
    scale = jnp.linspace(0.5, 2.0, 13)

    @jax.jit
    @jax.vmap
    def work(key, s):
        return s * jnp.cumsum(jax.random.normal(key, (16,)))

    expected = work(keys, scale)
    sharded, size = sharding.shard_grid((keys, scale), mesh)
    assert len(sharded[1].sharding.device_set) == 8
    out = sharding.unpad(work(*sharded), size)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(sharding.run_sharded(work, keys, scale, mesh=mesh)),
        np.asarray(expected),
        rtol=1e-6,
    )


def test_mesh_needs_grid_axis():
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("other",))
    with pytest.raises(ValueError, match="grid"):
        sharding.shard_grid(jnp.zeros(4), mesh)


def _quadratic_loss(w, data):
    return jnp.sum((w - data) ** 2)


def test_llc_along_training_on_a_mesh_equals_unsharded():
    # 3 runs × 3 checkpoints = 9 cells over 8 devices: padded to 16, two cells per device. Data per
    # run: a cell must find its run's data after padding (shared data: multiprocess_worker).
    centers = jax.random.normal(jax.random.key(1), (3, 3, 2))
    data = jnp.arange(3.0)[:, None] * jnp.ones((3, 2))  # run r pulls towards (r, r)
    settings = LLCSettings(nbeta=10.0, num_chains=2, num_steps=20)
    kwargs = dict(data_per_run=True, cell_batch=1)
    key = jax.random.key(0)
    expected = llc_along_training(key, _quadratic_loss, centers, data, settings, **kwargs)
    sharded = llc_along_training(
        key, _quadratic_loss, centers, data, settings, mesh=sharding.grid_mesh(), **kwargs
    )
    # One cell per vmap lane on both paths (cell_batch=1): the same chains per cell, so the draws
    # and λ̂ are bitwise equal. The float diagnostics reduce over draws (sums, covariances), whose
    # order XLA may fuse differently in the sharded program: last bits only.
    pairs = zip(
        jax.tree_util.tree_leaves_with_path(expected), jax.tree.leaves(sharded), strict=True
    )
    for (path, want), got in pairs:
        name = jax.tree_util.keystr(path)
        if name.startswith(".diagnostics") and jnp.issubdtype(want.dtype, jnp.floating):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)
    assert sharded.llc.shape == (3, 3)
    assert len(np.unique(np.asarray(sharded.llc))) == 9  # no cell dropped or repeated
