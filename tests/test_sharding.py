"""Grid sharding over a Mesh of 8 forced CPU devices: padding, placement, equality with
unsharded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmsjax import sharding


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
