"""Chunked scans: long runs as a short Python loop over jitted chunks.

A long run is a jitted ``lax.scan`` over a chunk of steps, called from a Python loop that updates a
progress bar, appends each chunk's outputs to disk and can resume from the last finished chunk. This
gives progress bars that survive vmap, bounded device memory, and nothing lost to a crash or Ctrl-C.
"""

import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from tmsjax.results import ResultStore, to_jsonable
from tmsjax.types import PyTree

_KEY_MARK = "__prng_key__"


def tree_to_arrays(tree: PyTree) -> dict[str, np.ndarray]:
    """Flattens a pytree to numbered host arrays; new-style PRNG keys are stored as raw data."""
    arrays = {}
    for index, leaf in enumerate(jax.tree.leaves(tree)):
        # Host leaves stay numpy: a jnp round trip would silently narrow 64-bit values without x64.
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
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
            data = jnp.asarray(arrays[f"{index}{_KEY_MARK}"])
            restored.append(jax.random.wrap_key_data(data, impl=impl))
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
    fingerprint: dict | None = None,
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
      fingerprint: JSON-able settings that must match for a resume (e.g. the step schedule); the
        number of chunks and the carry's shapes and dtypes are always part of it.

    Raises:
      ValueError: when the store holds a run of `name` with another fingerprint (resuming it would
        relabel old chunks with new settings).

    Returns:
      The final carry and the list of per-chunk outputs (host numpy pytrees), in order.
    """
    outputs: list[PyTree] = []
    start = 0
    if store is not None:
        signature = {
            "num_chunks": int(num_chunks),
            "carry": [
                [list(np.shape(leaf)), str(getattr(leaf, "dtype", type(leaf).__name__))]
                for leaf in jax.tree.leaves(carry)
            ],
            "settings": fingerprint or {},
        }
        signature = json.loads(json.dumps(to_jsonable(signature)))
        previous = store.read_json(f"{name}/fingerprint.json")
        if previous is not None and previous != signature:
            changed = sorted(k for k in signature if previous.get(k) != signature[k])
            raise ValueError(
                f"{store.path(name)} holds a run with other settings ({changed}); use another "
                "store or name"
            )
        store.write_json(f"{name}/fingerprint.json", signature)
        saved = store.load_arrays(f"{name}/carry")
        if saved is not None:
            start = min(int(saved.pop("__num_done__")), num_chunks)
            carry = jax.tree.map(jnp.asarray, arrays_to_tree(saved, carry))
            out_like = jax.eval_shape(lambda c: chunk_fn(c, 0)[1], carry)
            for index in range(start):
                loaded = store.load_arrays(f"{name}/chunk_{index:05d}")
                outputs.append(arrays_to_tree(loaded, out_like))
    bar = tqdm(
        total=num_chunks, initial=start, desc=desc or name, disable=not progress, leave=False
    )
    try:
        for index in range(start, num_chunks):
            carry, out = chunk_fn(carry, index)
            out = jax.device_get(out)
            if on_chunk is not None:
                on_chunk(index, carry, out)
            if store is not None:
                store.save_arrays(f"{name}/chunk_{index:05d}", **tree_to_arrays(out))
                done = np.asarray(index + 1)
                store.save_arrays(f"{name}/carry", __num_done__=done, **tree_to_arrays(carry))
            outputs.append(out)
            bar.update(1)
    finally:
        bar.close()
    return carry, outputs


def concatenate_chunks(outputs: list[PyTree], axis: int = 0) -> PyTree:
    """Joins per-chunk outputs along the step axis."""
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=axis), *outputs)


__all__ = ["run_chunked", "concatenate_chunks", "tree_to_arrays", "arrays_to_tree"]
