"""Chunked runs: resume equals an uninterrupted run, host data survives the round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmsjax.results import ResultStore
from tmsjax.training.loop import arrays_to_tree, concatenate_chunks, run_chunked, tree_to_arrays


@jax.jit
def _chunk(carry, index):
    x, key = carry
    key, sub = jax.random.split(key)
    x, xs = jax.lax.scan(lambda x, k: (x + jax.random.normal(k), x), x, jax.random.split(sub, 5))
    return (x, key), {"xs": xs}


def test_resume_equals_uninterrupted_run(tmp_path):
    start = (jnp.zeros(()), jax.random.key(0))
    _, full = run_chunked(_chunk, start, 4, progress=False)
    store = ResultStore(tmp_path)

    def crash_at_second_chunk(index, carry, outputs):
        if index == 1:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        run_chunked(_chunk, start, 4, store=store, progress=False, on_chunk=crash_at_second_chunk)
    seen = []
    _, resumed = run_chunked(
        _chunk, start, 4, store=store, progress=False, on_chunk=lambda i, c, o: seen.append(i)
    )
    assert seen == [1, 2, 3]
    np.testing.assert_array_equal(concatenate_chunks(full)["xs"], concatenate_chunks(resumed)["xs"])
    with pytest.raises(ValueError, match="other settings"):
        run_chunked(_chunk, start, 4, store=store, progress=False, fingerprint={"step_size": 2})


def test_host_arrays_keep_their_dtype():
    tree = {
        "big": np.array([2**40], dtype=np.int64),
        "x": np.array([0.1], dtype=np.float64),
        "key": jax.random.key(3),
    }
    back = arrays_to_tree(tree_to_arrays(tree), tree)
    assert back["big"].dtype == np.int64 and back["big"][0] == 2**40
    assert back["x"].dtype == np.float64
    assert np.array_equal(jax.random.key_data(back["key"]), jax.random.key_data(tree["key"]))
