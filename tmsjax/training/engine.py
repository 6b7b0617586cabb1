r"""The training engine: an ensemble of runs as one jitted, vmapped, chunked program.

Every run r of an ensemble follows its own step function and is recorded at a schedule of steps:

.. math:: s^{(r)}_{t+1} = \mathrm{step}(s^{(r)}_t,\ u^{(r)},\ D), \qquad
          \text{record}(s^{(r)}_{t_k}, u^{(r)}, D) \text{ for } t_k \in \text{schedule},

where :math:`s` is the run's state (parameters, optimiser state, step counter, ...), :math:`u^{(r)}`
its *run inputs* (its PRNG key, which dataset it trains on, its learning rate: arrays with a leading
run axis, vmapped) and :math:`D` what all runs *share* (the datasets: passed unbatched as an
argument, so they are stored once however many runs read them, and a new dataset of the same shape
runs in the same compiled program; a dataset closed over would be baked into the program instead).

**Program.** The schedule is cut into *segments* that end at every checkpoint and at least every
``max_segment_steps`` steps (:func:`~tmsjax.training.schedule.plan_segments`). A segment is a
``fori_loop`` whose trip count is data; a *chunk* is a ``lax.scan`` over a fixed number of segments;
the ensemble is a ``vmap`` over runs of a chunk. Every chunk thus runs one compiled program whatever
the spacing of the checkpoints, and device memory per chunk is ``checkpoints_per_chunk × runs``
records whatever the total number of checkpoints. Programs are cached per (step, record) function
pair: equal functions (e.g. one cached per setting) reuse one compile.

**Chunks** go to the host (and to disk with a :class:`~tmsjax.results.ResultStore`) through
:func:`~tmsjax.training.loop.run_chunked`, which shows progress and resumes after a crash; the run
axis can be sharded over the devices of a mesh (:mod:`tmsjax.sharding`).

The optimiser step every family shares (:func:`optimizer_step`) and plain SGD whose learning rate is
data, one per run (:func:`sgd_optimizer`, :func:`set_learning_rate`), live here too.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from tmsjax.results import ResultStore
from tmsjax.sharding import shard_grid
from tmsjax.training.loop import concatenate_chunks, run_chunked
from tmsjax.training.schedule import plan_segments
from tmsjax.types import Array, Int, PyTree

#: ``step_fn(state, run_inputs, shared) -> state``: one step of one run.
StepFn = Callable[[Any, Any, Any], Any]
#: ``record_fn(state, run_inputs, shared) -> pytree``: what one run records at a checkpoint.
RecordFn = Callable[[Any, Any, Any], PyTree]


class TrainState(NamedTuple):
    """The state of one optimiser-driven run (leading run axis in an ensemble).

    Attributes:
      params: the parameters being trained.
      opt_state: the optax optimiser state.
      step: number of optimiser steps taken (int32), e.g. the fold-in index of a minibatch key.
    """

    params: PyTree
    opt_state: PyTree
    step: Int[Array, ""]


class Checkpoints(NamedTuple):
    """What :func:`run_ensemble` returns.

    Attributes:
      steps: the step of each checkpoint (num_checkpoints,), int64 numpy (the schedule).
      records: what `record_fn` returned, host numpy, leading axes (runs, checkpoints).
      final_state: the state after the last step (leading axis runs; device arrays), to continue.
    """

    steps: np.ndarray
    records: PyTree
    final_state: PyTree


def init_train_state(params: PyTree, optimizer: optax.GradientTransformation) -> TrainState:
    """The :class:`TrainState` of one run at step 0 (vmap it over an ensemble)."""
    return TrainState(params, optimizer.init(params), jnp.int32(0))


def optimizer_step(
    optimizer: optax.GradientTransformation, state, loss_of_params: Callable[[PyTree], Array]
):
    r"""One optimiser step :math:`w \leftarrow w + \mathrm{update}(\nabla_w L(w))` and ``step + 1``.

    Args:
      optimizer: the optax optimiser.
      state: any NamedTuple with fields ``params``, ``opt_state`` and ``step`` (a
        :class:`TrainState`, or a family's state with more fields, which are kept).
      loss_of_params: :math:`L`, the loss as a function of the parameters alone (the minibatch
        closed over).

    Returns:
      The state after the step.
    """
    grads = jax.grad(loss_of_params)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state._replace(params=params, opt_state=opt_state, step=state.step + 1)


@functools.cache
def sgd_optimizer(learning_rate: float = 1e-3) -> optax.GradientTransformation:
    """Plain SGD with the learning rate held in the optimiser *state* (``inject_hyperparams``).

    The learning rate is then data, not a compile-time constant: every learning rate runs in one
    compiled program, and it can differ per run (:func:`set_learning_rate`). Cached per initial
    value, so equal calls return one optimiser (and step functions built on it one program).
    """
    return optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)


def set_learning_rate(opt_state, learning_rate):
    """Writes learning rates into an ``inject_hyperparams`` state (broadcast to its shape).

    Args:
      opt_state: the state of :func:`sgd_optimizer` (or any ``inject_hyperparams`` optimiser), e.g.
        with a leading run axis.
      learning_rate: one number, or one per run (runs,) for a state with a leading run axis.
    """
    hyperparams = dict(opt_state.hyperparams)
    old = hyperparams["learning_rate"]
    new = jnp.broadcast_to(jnp.asarray(learning_rate, old.dtype), old.shape)
    hyperparams["learning_rate"] = new
    return opt_state._replace(hyperparams=hyperparams)


@functools.lru_cache(maxsize=64)
def chunk_program(step_fn: StepFn, record_fn: RecordFn):
    """The jitted chunk ``(state, run_inputs, shared, lengths) -> (state, records)``.

    A vmap over runs of a ``lax.scan`` over segments (``lengths``, one per segment) of a
    ``fori_loop`` over steps. Cached per (step_fn, record_fn): equal functions share one program
    (and jit compiles it once per shape). Bounded, since callers that build new closures per call
    would otherwise keep every program alive.
    """

    def run_one(state, run_inputs, shared, lengths):
        def step(_, state):
            return step_fn(state, run_inputs, shared)

        def segment(state, length):
            # The trip count is data, not shape: every segment length runs in this one program.
            state = jax.lax.fori_loop(0, length, step, state)
            return state, record_fn(state, run_inputs, shared)

        return jax.lax.scan(segment, state, lengths)

    @jax.jit
    def run_chunk(state, run_inputs, shared, lengths):
        return jax.vmap(run_one, in_axes=(0, 0, None, None))(state, run_inputs, shared, lengths)

    return run_chunk


def _num_runs(state, run_inputs) -> int:
    leaves = jax.tree.leaves(state)
    if not leaves:
        raise ValueError("state must be a pytree of arrays with a leading run axis, got no arrays")
    sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "state leaves must share one leading run axis, got leading sizes "
            f"{sorted(map(str, sizes))}"
        )
    num_runs = sizes.pop()
    for leaf in jax.tree.leaves(run_inputs):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] != num_runs:
            raise ValueError(
                f"run_inputs leaves must have a leading axis of num_runs={num_runs}, got a leaf of "
                f"shape {np.shape(leaf)}"
            )
    return num_runs


def run_ensemble(
    step_fn: StepFn,
    record_fn: RecordFn,
    state: PyTree,
    schedule,
    *,
    run_inputs: PyTree = None,
    shared: PyTree = None,
    store: ResultStore | None = None,
    name: str = "run",
    fingerprint: dict | None = None,
    progress: bool = True,
    desc: str | None = None,
    mesh: Mesh | None = None,
    on_chunk: Callable | None = None,
    checkpoints_per_chunk: int = 16,
    max_segment_steps: int = 10_000,
) -> Checkpoints:
    r"""Runs every run of an ensemble for ``schedule[-1]`` steps, recording at the `schedule`.

    .. math:: s^{(r)}_{t+1} = \mathrm{step\_fn}(s^{(r)}_t, u^{(r)}, D), \qquad
              \text{records}[r, k] = \mathrm{record\_fn}(s^{(r)}_{t_k}, u^{(r)}, D)

    Steps are counted from the given `state` (a schedule starting at 0 records it as it is). Each
    run's trajectory depends only on its own state and inputs, so the vmapped ensemble equals the
    same runs one by one, and a resumed run continues exactly where it stopped.

    Args:
      step_fn: ``step_fn(state, run_inputs, shared) -> state`` for one run (no run axis); pure.
      record_fn: ``record_fn(state, run_inputs, shared) -> pytree`` for one run, at a checkpoint.
      state: the initial states, every leaf with a leading run axis (e.g. a vmapped
        :func:`init_train_state`); a NamedTuple, so the carry has named fields.
      schedule: checkpoint steps, strictly increasing, ≥ 0 (e.g.
        :func:`~tmsjax.training.schedule.checkpoint_schedule`).
      run_inputs: per-run inputs that do not change (keys, dataset index, per-run settings), every
        leaf with a leading run axis; vmapped.
      shared: inputs all runs read (datasets), passed unbatched to every run; never copied per run.
      store: optional ResultStore: chunks are saved under ``name/`` and a re-run resumes.
      name: sub-folder of the store.
      fingerprint: JSON-able settings a resume must match (the segment lengths and the number of
        runs are always part of it).
      progress: show a progress bar (one tick per chunk).
      desc: its label (default: `name` and the number of runs).
      mesh: optional ``jax.sharding.Mesh`` with a "grid" axis: shards the runs (state and run
        inputs) over its devices; `shared` is replicated.
      on_chunk: optional callback ``(chunk_index, state, records)`` after each chunk (records of its
        segments, including unrecorded ones).
      checkpoints_per_chunk: segments per compiled chunk (bounds device memory).
      max_segment_steps: at most this many steps between two segment ends (bounds a chunk's
        time, so the progress bar moves and a crash loses little).

    Returns:
      :class:`Checkpoints`: the schedule, the records (runs, checkpoints, ...) and the final state.

    Raises:
      ValueError: naming the bad argument.
    """
    if not callable(step_fn):
        raise ValueError(f"step_fn must be callable, got {type(step_fn).__name__}")
    if not callable(record_fn):
        raise ValueError(f"record_fn must be callable, got {type(record_fn).__name__}")
    if mesh is not None and not isinstance(mesh, Mesh):
        raise ValueError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    num_runs = _num_runs(state, run_inputs)
    plan = plan_segments(
        schedule, checkpoints_per_chunk=checkpoints_per_chunk, max_segment_steps=max_segment_steps
    )
    run_chunk = chunk_program(step_fn, record_fn)
    size = num_runs
    if mesh is not None:
        (state, run_inputs), size = shard_grid((state, run_inputs), mesh)

    def chunk_fn(state, chunk_index):
        lengths = jnp.asarray(plan.lengths[chunk_index])
        return run_chunk(state, run_inputs, shared, lengths)

    # A resume must continue the same run: the segments and the number of runs are checked against
    # the store (the run inputs and data are the caller's to keep, as their config).
    settings = {"schedule": plan.lengths.tolist(), "num_runs": num_runs, **(fingerprint or {})}
    state, outputs = run_chunked(
        chunk_fn,
        state,
        len(plan.lengths),
        store=store,
        name=name,
        desc=desc or f"{name} ({num_runs} runs)",
        progress=progress,
        on_chunk=on_chunk,
        fingerprint=settings,
    )
    keep = plan.record.reshape(-1)
    records = jax.tree.map(
        lambda leaf: np.asarray(leaf)[:size, keep], concatenate_chunks(outputs, axis=1)
    )
    state = jax.tree.map(lambda leaf: leaf[:size], state)
    return Checkpoints(plan.ends.reshape(-1)[keep], records, state)


__all__ = [
    "Checkpoints",
    "RecordFn",
    "StepFn",
    "TrainState",
    "chunk_program",
    "init_train_state",
    "optimizer_step",
    "run_ensemble",
    "set_learning_rate",
    "sgd_optimizer",
]
