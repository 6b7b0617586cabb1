r"""SGD ensembles of the TMS (or any optax optimiser, any model) on the training engine.

Every run of an ensemble (seeds × dataset sizes × initialisations, stacked on one leading grid axis)
follows

.. math:: w_{t+1} = w_t - \eta\,\nabla_w \frac{1}{B}\sum_{k \in \mathcal{B}_t}
          \lVert x_k - f(x_k; w_t)\rVert^2

(plain SGD by default; any ``optax.GradientTransformation`` otherwise), with the minibatch
:math:`\mathcal{B}_t` drawn *inside* the scan from the run's padded dataset, so n is a traced value
and all dataset sizes share one compiled program. ``objective="population"`` trains on the exact
potential :math:`L = H/3c` instead (:mod:`tmsjax.tms.potential`), the n → ∞ limit: gradient descent
with no minibatch noise.

**Checkpoints.** Parameters, the full-batch train loss :math:`L_n` and the exact potential :math:`L`
are recorded at a schedule of steps (log-spaced by default,
:func:`~tmsjax.training.schedule.checkpoint_schedule`). The run itself is the generic engine
(:func:`tmsjax.training.engine.run_ensemble`): each segment between checkpoints a ``fori_loop``
whose trip count is data, chunks of segments one compiled ``lax.scan``, vmapped over runs, with a
progress bar, bounded device memory (``checkpoints_per_chunk × runs × (num_params + 3)`` numbers per
chunk: 10⁴ runs × 16 segments × 21 float32 ≈ 13 MB at c = 6), resume from a
:class:`~tmsjax.results.ResultStore` and sharding over a mesh. This module supplies the per-run step
(minibatch, gradient, optimiser update) and record; the datasets are the engine's *shared* input,
stored once however many runs read them.

**Randomness.** Run r's minibatch at step t uses ``fold_in(keys[r], t)``: a run's trajectory depends
only on its own key, so the vmapped ensemble equals the same runs trained one by one, and a resumed
run continues exactly where it stopped.

References:
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301, §6 (SGD protocol: n = 1000, batch 20,
  learning rate 0.005, 4500 epochs, initialised near a 4-gon).
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from tmsjax.checks import check_positive_int
from tmsjax.results import ResultStore
from tmsjax.tms.data import Dataset, minibatch_indices, shuffled_indices
from tmsjax.tms.model import TMSParams, init_near_kgon
from tmsjax.tms.model import loss as tms_loss
from tmsjax.tms.potential import population_loss as tms_population_loss
from tmsjax.training.engine import optimizer_step, run_ensemble, set_learning_rate, sgd_optimizer
from tmsjax.training.schedule import checkpoint_schedule
from tmsjax.types import Array, Bool, Float, Int, PRNGKey, PyTree

OBJECTIVES = ("empirical", "population")
SAMPLINGS = ("replacement", "epoch")
# The paper's protocol (Chen et al. 2023, §6).
PAPER_LEARNING_RATE = 0.005
PAPER_BATCH_SIZE = 20
PAPER_NUM_DATA = 1000
PAPER_NUM_STEPS = 225_000  # 4500 epochs of 1000 / 20 = 50 steps


class SGDState(NamedTuple):
    """State of one run (leading run axis in an ensemble): the engine's
    :class:`~tmsjax.training.engine.TrainState` fields and the epoch sampler's position.

    Attributes:
      params: the parameters being trained.
      opt_state: the optax optimiser state.
      step: number of optimiser steps taken (int32); also the fold-in index of the minibatch key.
      order: epoch sampling only: the current shuffled row order (n_max,); an empty array otherwise.
      position: epoch sampling only: rows of `order` already used this epoch.
    """

    params: PyTree
    opt_state: PyTree
    step: Int[Array, ""]
    order: Int[Array, " n_max"]
    position: Int[Array, ""]


class SGDRun(NamedTuple):
    """What a run reads but never changes (the engine's run inputs; leading run axis).

    Attributes:
      key: the run's PRNG key; step t's minibatch uses ``fold_in(key, t)``.
      dataset_index: which of the shared datasets the run trains on.
      num_data: that dataset's number of real rows n.
    """

    key: PRNGKey
    dataset_index: Int[Array, ""]
    num_data: Int[Array, ""]


class TrainInfo(NamedTuple):
    """What is recorded at each checkpoint of a run.

    Attributes:
      params: the parameters.
      train_loss: full-batch empirical loss L_n on the run's dataset (the exact potential when
        training on it).
      population_loss: the exact potential L (NaN when no `population_fn` is given).
      is_finite: False once any parameter or loss is NaN or inf (a diverged run; reported, not
        raised).
    """

    params: PyTree
    train_loss: Float[Array, ""]
    population_loss: Float[Array, ""]
    is_finite: Bool[Array, ""]


class Trajectory(NamedTuple):
    """Checkpoints of an ensemble: every field but `steps` has leading axes (runs, checkpoints).

    This is the plain stacked layout the LLC engine and the plateau detector consume.

    Attributes:
      steps: the step index of each checkpoint (num_checkpoints,), int64 numpy.
      params: stacked parameters, e.g. TMSParams(W (runs, T, r, c), b (runs, T, c)).
      train_loss: L_n at each checkpoint (runs, T).
      population_loss: the exact potential L at each checkpoint (runs, T).
      is_finite: (runs, T).
      final_state: the :class:`SGDState` after the last step (leading axis runs), to continue.
    """

    steps: np.ndarray
    params: PyTree
    train_loss: np.ndarray
    population_loss: np.ndarray
    is_finite: np.ndarray
    final_state: SGDState


def default_optimizer() -> optax.GradientTransformation:
    """Plain SGD at the paper's learning rate, held in the optimiser *state*
    (:func:`~tmsjax.training.engine.sgd_optimizer`): every learning rate, one per run if wanted,
    runs in one compiled program. One cached object, so every default :func:`train` shares it.
    """
    return sgd_optimizer(PAPER_LEARNING_RATE)


def _all_finite(tree) -> Bool[Array, ""]:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


@functools.cache
def sgd_step_and_record(
    optimizer: optax.GradientTransformation,
    loss_fn: Callable,
    population_fn: Callable | None,
    batch_size: int,
    objective: str,
    sampling: str,
) -> tuple[Callable, Callable]:
    """The engine's per-run step and record functions for one setting (cached: one program each).

    ``step(state: SGDState, run: SGDRun, datasets: Dataset) -> SGDState`` draws a minibatch of the
    run's dataset (or none, on the exact potential) and takes one optimiser step;
    ``record(state, run, datasets) -> TrainInfo``. Arguments as in :func:`train`.
    """

    def draw_batch(state: SGDState, key, datasets: Dataset, run: SGDRun):
        if sampling == "replacement":
            return minibatch_indices(key, run.num_data, batch_size), state
        # Epoch sampling: without replacement, reshuffling when fewer than a batch of unused real
        # rows remain (the last partial batch of an epoch is dropped, as PyTorch's drop_last=True).
        # Under vmap the reshuffle is a select, so the sort runs every step: use it when fidelity
        # to epochs matters more than speed.
        mask = datasets.mask[run.dataset_index]
        exhausted = state.position + batch_size > run.num_data
        fresh = shuffled_indices(key, mask)
        order = jnp.where(exhausted, fresh, state.order)
        position = jnp.where(exhausted, 0, state.position)
        rows = jax.lax.dynamic_slice(order, (position,), (batch_size,))
        return rows, state._replace(order=order, position=position + batch_size)

    def step(state: SGDState, run: SGDRun, datasets: Dataset) -> SGDState:
        if objective == "population":
            return optimizer_step(optimizer, state, population_fn)
        rows, state = draw_batch(state, jax.random.fold_in(run.key, state.step), datasets, run)
        # One gather of (dataset, row) pairs: the runs' datasets are never copied per run.
        batch = datasets.x[run.dataset_index, rows]
        return optimizer_step(optimizer, state, lambda params: loss_fn(params, batch))

    def record(state: SGDState, run: SGDRun, datasets: Dataset) -> TrainInfo:
        population = jnp.nan if population_fn is None else population_fn(state.params)
        if objective == "population":
            train = population
        else:
            index = run.dataset_index
            train = loss_fn(state.params, datasets.x[index], datasets.mask[index])
        population = jnp.asarray(population, dtype=jnp.result_type(train))
        finite = _all_finite(state.params) & jnp.isfinite(train)
        return TrainInfo(state.params, train, population, finite)

    return step, record


def init_sgd_state(
    params: PyTree, optimizer: optax.GradientTransformation | None = None, n_max: int = 0
) -> SGDState:
    """The state of one run at step 0 (vmap it over an ensemble; :func:`train` does).

    Args:
      params: initial parameters.
      optimizer: the optax optimiser (default :func:`default_optimizer`, the paper's learning rate).
      n_max: padded dataset length, for the epoch sampler's row order (0 when not needed).
    """
    optimizer = default_optimizer() if optimizer is None else optimizer
    # position = a huge value forces a shuffle on the first step of epoch sampling.
    return SGDState(
        params, optimizer.init(params), jnp.int32(0), jnp.zeros(n_max, jnp.int32), jnp.int32(2**30)
    )


@functools.cache
def _init_program(optimizer, n_max: int, with_learning_rate: bool):
    """Jitted, vmapped :func:`init_sgd_state` (cached: one compile per optimiser and shape)."""

    @jax.jit
    def init(params, learning_rate):
        state = jax.vmap(lambda p: init_sgd_state(p, optimizer, n_max))(params)
        if with_learning_rate:
            state = state._replace(opt_state=set_learning_rate(state.opt_state, learning_rate))
        return state

    return init


def init_kgon_ensemble(
    key: PRNGKey, num_runs: int, num_features: int = 6, k: int = 4, **kwargs
) -> TMSParams:
    """`num_runs` independent :func:`tmsjax.tms.model.init_near_kgon` draws, stacked (leading axis
    runs).

    Defaults follow the paper: near a 4-gon of radius U[0.9, 1], random rotation and feature order,
    N(0, 0.01²) noise, biases U[−0.01, 0.01].
    """
    num_runs = check_positive_int("num_runs", num_runs)
    init_near_kgon(key, k, num_features, **kwargs)  # validates the arguments outside jit
    draw = _kgon_draw(k, num_features, tuple(sorted(kwargs.items())))
    return draw(jax.random.split(key, num_runs))


@functools.cache
def _kgon_draw(k: int, num_features: int, kwargs: tuple):
    """One jitted, vmapped draw per setting (cached: a new jit per call would recompile)."""
    return jax.jit(jax.vmap(lambda key: init_near_kgon(key, k, num_features, **dict(kwargs))))


def _as_key_array(keys):
    keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
    if not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        raise ValueError(
            "keys must be a typed PRNG key array from jax.random.key / jax.random.split"
        )
    if keys.ndim != 1:
        raise ValueError(f"keys must have shape (num_runs,), got {keys.shape}")
    return keys


def _validate_datasets(datasets, dataset_index, num_runs, objective, batch_size, sampling):
    if datasets is None:
        if objective == "empirical":
            raise ValueError("datasets is required for objective='empirical'")
        # Training on the exact potential needs no data: a one-row dummy keeps one code path.
        datasets = Dataset(jnp.zeros((1, 1, 1)), jnp.ones((1, 1), bool))
    if not isinstance(datasets, Dataset):
        raise ValueError(
            f"datasets must be a tmsjax.tms.data.Dataset, got {type(datasets).__name__}"
        )
    x, mask = datasets.x, datasets.mask
    if np.ndim(x) == 2:
        x, mask = jnp.asarray(x)[None], jnp.asarray(mask)[None]
    x, mask = jnp.asarray(x), jnp.asarray(mask)
    if x.ndim != 3 or mask.shape != x.shape[:2]:
        raise ValueError(
            "datasets.x must be (n_max, c) or (num_datasets, n_max, c) with a matching mask, got "
            f"{x.shape} and {mask.shape}"
        )
    if not jnp.issubdtype(mask.dtype, jnp.bool_):
        raise ValueError(f"datasets.mask must be boolean, got {mask.dtype}")
    mask_host = np.asarray(mask)
    num_data = mask_host.sum(axis=1)
    if np.any(num_data == 0):
        raise ValueError("datasets has an empty mask: every dataset needs n > 0")
    if np.any(np.diff(mask_host.astype(int), axis=1) > 0):
        raise ValueError(
            "datasets.mask must mark the real rows first (as make_dataset/nested_datasets build it)"
        )
    if dataset_index is None:
        if x.shape[0] == 1:
            dataset_index = np.zeros(num_runs, np.int32)
        elif x.shape[0] == num_runs:
            dataset_index = np.arange(num_runs, dtype=np.int32)
        else:
            raise ValueError(
                f"datasets holds {x.shape[0]} datasets for {num_runs} runs: pass dataset_index"
            )
    dataset_index = np.asarray(dataset_index)
    if dataset_index.shape != (num_runs,) or not np.issubdtype(dataset_index.dtype, np.integer):
        raise ValueError(
            f"dataset_index must be integers of shape ({num_runs},), got {dataset_index.shape} "
            f"{dataset_index.dtype}"
        )
    if np.any(dataset_index < 0) or np.any(dataset_index >= x.shape[0]):
        raise ValueError(
            f"dataset_index must lie in [0, {x.shape[0]}), got range [{dataset_index.min()}, "
            f"{dataset_index.max()}]"
        )
    run_num_data = num_data[dataset_index]
    if objective == "empirical" and sampling == "epoch" and batch_size > run_num_data.min():
        raise ValueError(
            f"batch_size={batch_size} exceeds the smallest dataset (n={run_num_data.min()}) for "
            "epoch sampling"
        )
    index = jnp.asarray(dataset_index, jnp.int32)
    return Dataset(x, mask), index, jnp.asarray(run_num_data, jnp.int32)


def train(
    keys: PRNGKey,
    init_params: PyTree,
    datasets: Dataset | None = None,
    *,
    num_steps: int,
    dataset_index=None,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = PAPER_LEARNING_RATE,
    batch_size: int = PAPER_BATCH_SIZE,
    objective: str = "empirical",
    sampling: str = "replacement",
    schedule=None,
    num_checkpoints: int = 200,
    spacing: str = "log",
    loss_fn: Callable = tms_loss,
    population_fn: Callable | None = tms_population_loss,
    checkpoints_per_chunk: int = 16,
    max_segment_steps: int = 10_000,
    store: ResultStore | None = None,
    name: str = "sgd",
    progress: bool = True,
    mesh: Mesh | None = None,
    on_chunk: Callable | None = None,
) -> Trajectory:
    r"""Trains an ensemble of runs in one jitted, vmapped program and records checkpoints.

    .. math:: w^{(r)}_{t+1} = \mathrm{opt}\big(w^{(r)}_t,\
              \nabla_w L_{\mathcal{B}^{(r)}_t}(w^{(r)}_t)\big), \qquad
              \mathcal{B}^{(r)}_t \sim \text{batch\_size rows of dataset } d(r)
              \text{ drawn with } \mathrm{fold\_in}(\text{keys}[r], t)

    Args:
      keys: one PRNG key per run, shape (num_runs,) (``jax.random.split(key, num_runs)``).
      init_params: initial parameters with a leading axis num_runs (e.g.
        :func:`init_kgon_ensemble`).
      datasets: a :class:`~tmsjax.tms.data.Dataset`: one dataset shared by all runs (x (n_max, c)),
        or a stack (x (num_datasets, n_max, c)), e.g. :func:`~tmsjax.tms.data.nested_datasets` for a
        sweep over n. Not needed for ``objective="population"``.
      num_steps: optimiser steps per run.
      dataset_index: which dataset each run trains on (num_runs,) ints; default: the only one, or
        run r on dataset r. Datasets are stored once, however many runs share them.
      optimizer: any optax GradientTransformation; default plain SGD (:func:`default_optimizer`).
      learning_rate: learning rate of the default SGD, one number or one per run (num_runs,): it
        is data, so all learning rates share one compiled program (ignored when `optimizer` is
        given).
      batch_size: minibatch size B.
      objective: "empirical" (minibatch loss, the paper) or "population" (gradient descent on the
        exact potential L, the n → ∞ limit).
      sampling: "replacement" (B rows uniformly with replacement; cheap) or "epoch" (shuffled
        epochs without replacement, as a PyTorch DataLoader; costs a sort of n_max per step).
      schedule: explicit checkpoint steps (increasing, ending at `num_steps`); default
        ``checkpoint_schedule(num_steps, num_checkpoints, spacing)`` (step 0 included).
      num_checkpoints, spacing: see :func:`~tmsjax.training.schedule.checkpoint_schedule`.
      loss_fn: ``loss_fn(params, x, mask=None)``, mean loss over the (masked) rows; default the
        TMS loss. Any model works.
      population_fn: ``population_fn(params)``, the exact expected loss recorded at checkpoints
        (and trained on for ``objective="population"``); default the TMS potential; None records
        NaN.
      checkpoints_per_chunk: segments per compiled chunk (bounds device memory).
      max_segment_steps: at most this many steps between two segment ends (bounds a chunk's time,
        so the progress bar moves and a crash loses little).
      store: optional ResultStore: chunks are saved under ``name/`` and a re-run resumes.
      name: sub-folder of the store.
      progress: show a progress bar.
      mesh: optional ``jax.sharding.Mesh`` with a "grid" axis: shards the runs over its devices.
      on_chunk: optional callback ``(chunk_index, state, infos)`` after each chunk.

    Returns:
      A :class:`Trajectory` with leading axes (runs, checkpoints).

    Raises:
      ValueError: naming the bad argument (shapes, ranges, unknown options).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if objective == "population" and population_fn is None:
        raise ValueError("population_fn is required for objective='population'")
    num_steps = check_positive_int("num_steps", num_steps)
    batch_size = check_positive_int("batch_size", batch_size)
    default = optimizer is None
    if default:
        learning_rate = np.asarray(learning_rate, dtype=float)
        if (
            learning_rate.ndim > 1
            or not np.all(np.isfinite(learning_rate))
            or not np.all(learning_rate > 0)
        ):
            raise ValueError(
                f"learning_rate must be a positive number or one per run, got {learning_rate!r}"
            )
        optimizer = default_optimizer()
    elif not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}"
        )
    keys = _as_key_array(keys)
    num_runs = keys.shape[0]
    leaves = jax.tree.leaves(init_params)
    if not leaves or any(np.shape(leaf)[:1] != (num_runs,) for leaf in leaves):
        raise ValueError(
            f"init_params leaves must have a leading axis of num_runs={num_runs} (one per key)"
        )
    if not all(np.all(np.isfinite(np.asarray(leaf))) for leaf in leaves):
        raise ValueError("init_params contains NaN or inf values")
    datasets, dataset_index, num_data = _validate_datasets(
        datasets, dataset_index, num_runs, objective, batch_size, sampling
    )
    if schedule is None:
        schedule = checkpoint_schedule(num_steps, num_checkpoints, spacing)
    schedule = np.asarray(schedule)
    if schedule.ndim != 1 or schedule.size == 0 or schedule[-1] != num_steps:
        raise ValueError(
            f"schedule must be a 1-d sequence of steps ending at num_steps={num_steps}"
        )
    if default and learning_rate.ndim == 1 and learning_rate.shape != (num_runs,):
        raise ValueError(
            f"learning_rate must be a number or have shape ({num_runs},), got {learning_rate.shape}"
        )

    n_max = datasets.x.shape[1] if sampling == "epoch" else 0
    init_params = jax.tree.map(jnp.asarray, init_params)
    init = _init_program(optimizer, n_max, default)
    state = init(init_params, learning_rate if default else None)
    step, record = sgd_step_and_record(
        optimizer, loss_fn, population_fn, batch_size, objective, sampling
    )
    # The keys, data and learning rates are the caller's to keep for a resume, as their config.
    fingerprint = {"objective": objective, "sampling": sampling, "batch_size": int(batch_size)}
    result = run_ensemble(
        step,
        record,
        state,
        schedule,
        run_inputs=SGDRun(keys, dataset_index, num_data),
        shared=datasets,
        store=store,
        name=name,
        fingerprint=fingerprint,
        progress=progress,
        mesh=mesh,
        on_chunk=on_chunk,
        checkpoints_per_chunk=checkpoints_per_chunk,
        max_segment_steps=max_segment_steps,
    )
    infos: TrainInfo = result.records
    return Trajectory(
        result.steps,
        infos.params,
        infos.train_loss,
        infos.population_loss,
        infos.is_finite,
        result.final_state,
    )


__all__ = [
    "OBJECTIVES",
    "SAMPLINGS",
    "SGDRun",
    "SGDState",
    "TrainInfo",
    "Trajectory",
    "checkpoint_schedule",
    "default_optimizer",
    "init_kgon_ensemble",
    "init_sgd_state",
    "sgd_step_and_record",
    "train",
]
