"""Chunked scans: long runs as a short Python loop over jitted chunks (DESIGN.md §4).

A long run is a jitted ``lax.scan`` over a chunk of steps, called from a Python loop that updates a
progress bar, appends each chunk's outputs to disk and can resume from the last finished chunk. This
gives progress bars that survive vmap, bounded device memory, and nothing lost to a crash or Ctrl-C.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from tmsjax.results import ResultStore
from tmsjax.types import PyTree

_KEY_MARK = "__prng_key__"


def tree_to_arrays(tree: PyTree) -> dict[str, np.ndarray]:
    """Flattens a pytree to numbered host arrays; new-style PRNG keys are stored as their raw data."""
    arrays = {}
    for index, leaf in enumerate(jax.tree.leaves(tree)):
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            arrays[f"{index}{_KEY_MARK}"] = np.asarray(jax.random.key_data(leaf))
        else:
            arrays[str(index)] = np.asarray(leaf)
    return arrays


def arrays_to_tree(arrays: dict[str, np.ndarray], like: PyTree) -> PyTree:
    """Inverse of :func:`tree_to_arrays`, using `like` for the tree structure."""
    leaves, treedef = jax.tree.flatten(like)
    restored = []
    for index, leaf in enumerate(leaves):
        if f"{index}{_KEY_MARK}" in arrays:
            impl = jax.random.key_impl(leaf)
            restored.append(jax.random.wrap_key_data(jnp.asarray(arrays[f"{index}{_KEY_MARK}"]), impl=impl))
        else:
            dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.asarray(leaf).dtype
            restored.append(np.asarray(arrays[str(index)], dtype=dtype))
    return jax.tree.unflatten(treedef, restored)


def run_chunked(
    chunk_fn: Callable[[Any, int], tuple[Any, PyTree]],
    carry: PyTree,
    num_chunks: int,
    *,
    store: ResultStore | None = None,
    name: str = "run",
    desc: str | None = None,
    progress: bool = True,
    on_chunk: Callable[[int, Any, PyTree], None] | None = None,
) -> tuple[PyTree, list[PyTree]]:
    """Runs ``carry, out = chunk_fn(carry, chunk_index)`` for every chunk, with progress and resume.

    Args:
      chunk_fn: one chunk of work, usually a jitted ``lax.scan``; the chunk index lets it fold keys.
      carry: the initial state (a pytree; PRNG keys allowed).
      num_chunks: how many chunks make the run.
      store: where to write ``{name}/chunk_XXXXX.npz`` (outputs) and ``{name}/carry.npz`` after each
        chunk. With a store, a re-run loads the finished chunks and continues from the saved carry.
      name: sub-folder of the store for this run.
      desc: progress bar label.
      progress: show a tqdm progress bar.
      on_chunk: optional callback ``(chunk_index, carry, outputs)`` after each chunk (e.g. a
        divergence check that raises).

    Returns:
      The final carry and the list of per-chunk outputs (host numpy pytrees), in order.
    """
    outputs: list[PyTree] = []
    start = 0
    if store is not None:
        saved = store.load_arrays(f"{name}/carry")
        if saved is not None:
            start = min(int(saved.pop("__num_done__")), num_chunks)
            carry = jax.tree.map(jnp.asarray, arrays_to_tree(saved, carry))
            out_like = jax.eval_shape(lambda c: chunk_fn(c, 0)[1], carry)
            for index in range(start):
                loaded = store.load_arrays(f"{name}/chunk_{index:05d}")
                outputs.append(arrays_to_tree(loaded, out_like))
    bar = tqdm(total=num_chunks, initial=start, desc=desc or name, disable=not progress, leave=False)
    try:
        for index in range(start, num_chunks):
            carry, out = chunk_fn(carry, index)
            out = jax.device_get(out)
            if on_chunk is not None:
                on_chunk(index, carry, out)
            if store is not None:
                store.save_arrays(f"{name}/chunk_{index:05d}", **tree_to_arrays(out))
                store.save_arrays(f"{name}/carry", __num_done__=np.asarray(index + 1), **tree_to_arrays(carry))
            outputs.append(out)
            bar.update(1)
    finally:
        bar.close()
    return carry, outputs


def concatenate_chunks(outputs: list[PyTree], axis: int = 0) -> PyTree:
    """Joins per-chunk outputs along the step axis."""
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=axis), *outputs)


__all__ = ["run_chunked", "concatenate_chunks", "tree_to_arrays", "arrays_to_tree"]
