r"""The λ̂ entry points: one estimate, a grid over (ε, γ, nβ), and every checkpoint of many runs.

Each takes the loss, the model as the user holds it (any pytree: a dict of arrays, a NamedTuple, an
equinox module with activation functions), the data and one :class:`~tmsjax.llc.LLCSettings`; each
validates its arguments with a ValueError that names the bad one, splits the model into the arrays
to sample and a static rest (:func:`~tmsjax.llc.partition_model`), and runs one compiled program:
the core :func:`~tmsjax.llc.sample_llc`, vmapped over chains, and again over grid cells or over
(run, checkpoint) cells.

.. math:: \hat\lambda(w^*) = n\beta\,\big(\mathbb{E}_w[L_n(w)] - L_n(w^*)\big), \quad
          p(w) \propto e^{-n\beta L_n(w) - \frac\gamma2\lVert w - w^*\rVert^2}.
"""

import functools
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tmsjax import sharding
from tmsjax.checks import check_finite, check_positive_int
from tmsjax.llc.core import (
    LLCResult,
    LossFn,
    default_minibatch,
    default_nbeta,
    num_data_of,
    sample_llc,
)
from tmsjax.llc.health import usable, verdict
from tmsjax.llc.partition import partition_model
from tmsjax.llc.settings import LLCSettings
from tmsjax.types import PRNGKey, PyTree

#: Cells of a grid / along-training call vmapped together on CPU (benchmarks/llc_devinterp.py).
DEFAULT_CELL_BATCH = 8


# ----------------------------------------------------------------------------------------------
# Validation shared by the entry points


def _check_common(loss_fn, settings, data) -> None:
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if not isinstance(settings, LLCSettings):
        raise ValueError(f"settings must be an LLCSettings, got {type(settings).__name__}")
    if settings.batch_size is not None and data is None:
        raise ValueError("settings.batch_size needs data to draw minibatches from")


class LLCError(ValueError):
    """λ̂ could not be estimated: every way the estimate failed is named in the message."""


def _sampled(model: PyTree, loss_fn: LossFn, name: str):
    """(arrays to sample, loss of them): the model's floating arrays, checked finite."""
    arrays, loss = partition_model(model, loss_fn, name)
    for leaf in jax.tree.leaves(arrays):
        check_finite(name, leaf)
    return arrays, loss


def _check_loss(
    loss: LossFn,
    arrays: PyTree,
    data: Any,
    name: str,
    batch_size: int | None = None,
    minibatch_fn: Callable | None = None,
) -> None:
    """Traces the loss once on the model and what the sampler will give it (the data, and a
    minibatch of it in minibatch mode), without compiling, so that a model of the wrong structure
    or shapes, or a loss that is not a scalar, fails here with a message that says so instead of
    deep inside the sampler."""

    def evaluate(arrays):
        value = loss(arrays, data)  # L_n(w*) is always taken on the full data
        if batch_size is not None:
            draw = default_minibatch if minibatch_fn is None else minibatch_fn
            batch_value = loss(arrays, draw(jax.random.key(0), data, batch_size))
            value = jnp.asarray(value) + jnp.zeros_like(batch_value)  # both must be scalars
        return value

    try:
        value = jax.eval_shape(evaluate, arrays)
    except Exception as error:  # any tracing error: the user's loss does not fit this model/data
        raise ValueError(
            f"loss_fn({name}, data) fails on the {name} and data given "
            f"({type(error).__name__}: {error}); check that {name} has the structure and shapes "
            "loss_fn expects"
        ) from error
    if getattr(value, "shape", None) != () or not jnp.issubdtype(value.dtype, jnp.inexact):
        raise ValueError(
            f"loss_fn must return a floating scalar, got {getattr(value, 'dtype', type(value))} "
            f"of shape {getattr(value, 'shape', '?')} (average over the batch inside loss_fn)"
        )


def _check_positive_values(name: str, value) -> np.ndarray:
    array = np.asarray(value, dtype=float)
    if array.ndim > 1:
        raise ValueError(f"{name} must be a number or a 1-d sequence, got shape {array.shape}")
    if array.size == 0 or not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"{name} must be finite and positive, got {value!r}")
    return array


def _check_nonnegative(name: str, value) -> np.ndarray:
    """γ may be 0 (no localization), never negative."""
    array = np.asarray(value, dtype=float)
    if array.ndim > 1 or array.size == 0 or not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must be finite and >= 0 (number or 1-d sequence), got {value!r}")
    return array


def _check_cell_batch(cell_batch):
    return None if cell_batch is None else check_positive_int("cell_batch", cell_batch)


def _nbeta_from_n(num_data, data) -> np.ndarray:
    r"""The default :math:`n\beta = n/\log n`, with n from `num_data` or else from `data`."""
    if num_data is None:
        if data is None:
            raise ValueError(
                "settings.nbeta is None and no data tell n: pass num_data, or set nbeta"
            )
        num_data = num_data_of(data)
    array = np.asarray(num_data, dtype=float)
    if not np.all(np.isfinite(array)) or np.any(array <= 1):
        raise ValueError(f"num_data must be finite and > 1 for nbeta = n / log n, got {num_data!r}")
    return _check_positive_values("nbeta", default_nbeta(num_data))


def _resolve_nbeta(nbeta, num_data, data) -> np.ndarray:
    """An explicit nβ (checked), or n / log n."""
    if nbeta is None:
        return _nbeta_from_n(num_data, data)
    return _check_positive_values("nbeta", nbeta)


# ----------------------------------------------------------------------------------------------
# One estimate


@functools.partial(jax.jit, static_argnames=("loss_fn", "chains", "minibatch_fn"))
def _estimate_jit(
    key, center, data, nbeta, step_size, localization, *, loss_fn, chains, minibatch_fn
):
    return sample_llc(
        key,
        center,
        data,
        nbeta,
        step_size,
        localization,
        loss_fn=loss_fn,
        chains=chains,
        minibatch_fn=minibatch_fn,
    )


def estimate_llc(
    key: PRNGKey,
    loss_fn: LossFn,
    center: PyTree,
    data: Any = None,
    settings: LLCSettings = LLCSettings(),
    *,
    num_data: int | None = None,
    minibatch_fn: Callable | None = None,
    on_failure: str = "raise",
) -> LLCResult:
    r"""Estimates the local learning coefficient of `loss_fn` at `center`.

    .. math:: \hat\lambda(w^*) = n\beta\,\big(\mathbb{E}_w[L_n(w)] - L_n(w^*)\big), \quad
              p(w) \propto e^{-n\beta L_n(w) - \frac\gamma2\lVert w - w^*\rVert^2},

    sampled by ``settings.num_chains`` chains started at :math:`w^*`, vmapped inside one
    ``lax.scan`` and compiled once per (loss_fn, shapes, static settings); ε, γ and nβ are traced,
    so new values reuse the program. The default settings are the paper's protocol (full batch,
    ε = 1e-3, γ = 1, 4 chains × 500 steps, nβ = n / log n).

    Args:
      key: PRNG key.
      loss_fn: ``loss_fn(model, data) -> scalar`` (your model's loss; the TMS wing has
        :mod:`tmsjax.tms.losses`). Pass a module-level function: a new lambda each call recompiles.
      center: :math:`w^*`, the model as you hold it: any pytree (an equinox module included). Its
        floating arrays are sampled; other leaves (activation functions, integers) stay fixed, and
        `loss_fn` sees the whole model. The arrays' dtype sets the sampling precision.
      data: the full dataset, any pytree, or None (a potential). Data that defines ``num_data`` and
        ``minibatch(key, batch_size)`` (a padded dataset with a mask) is read through them.
      settings: an :class:`~tmsjax.llc.LLCSettings` (ε, γ, nβ, chains, steps, burn-in, thinning,
        batch size, draw loss, sampler).
      num_data: n for the default nβ = n / log n, when it cannot be read from `data`.
      minibatch_fn: ``(key, data, batch_size) -> batch``; default uniform rows with replacement.
      on_failure: ``"raise"`` (default): raise :class:`LLCError` when the estimate is not
        :func:`~tmsjax.llc.usable` (a chain blew up or escaped), so a diverged sampler never
        passes as a number; ``"return"``: return it for inspection (``verdict``, ``summarize``).
        Drift and low acceptance are warnings either way: read ``verdict(result)``.

    Returns:
      An :class:`~tmsjax.llc.LLCResult`; ``verdict(result)`` says "ok" or names the problem.

    Raises:
      ValueError: naming the bad argument (no n for nβ, a NaN centre, a centre `loss_fn` cannot
        evaluate, a loss that is not a scalar or not finite at the centre, minibatches without
        data).
      LLCError: (``on_failure="raise"``) when no usable estimate came out, with the verdict and
        what to change.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from tmsjax.llc import LLCSettings, estimate_llc, verdict
      >>> def loss_fn(w, data):          # a regular quadratic in 3 dimensions: λ = 3/2
      ...     return jnp.sum(w**2)
      >>> settings = LLCSettings(5e-4, nbeta=100.0, num_steps=2000, num_burnin=200)
      >>> result = estimate_llc(jax.random.key(0), loss_fn, jnp.zeros(3), settings=settings)
      >>> abs(float(result.llc) - 1.5) < 0.3, verdict(result)
      (True, 'ok')
    """
    _check_common(loss_fn, settings, data)
    if on_failure not in ("raise", "return"):
        raise ValueError(f"on_failure must be 'raise' or 'return', got {on_failure!r}")
    arrays, loss = _sampled(center, loss_fn, "center")
    _check_loss(loss, arrays, data, "center", settings.batch_size, minibatch_fn)
    nbeta = _resolve_nbeta(settings.nbeta, num_data, data)
    if nbeta.ndim != 0:
        raise ValueError(f"num_data must be a scalar here, got shape {nbeta.shape}")
    result = _estimate_jit(
        key,
        arrays,
        data,
        nbeta,
        settings.step_size,
        settings.localization,
        loss_fn=loss,
        chains=settings.chains,
        minibatch_fn=minibatch_fn,
    )
    init_loss = float(result.init_loss)
    if not np.isfinite(init_loss):
        raise ValueError(f"loss_fn(center, data) is {init_loss} at the centre; λ̂ needs it finite")
    if on_failure == "raise" and not bool(usable(result)):
        raise LLCError(
            f"no usable λ̂ ({verdict(result)}) at step_size={settings.step_size:g}, "
            f"localization={settings.localization:g}, nbeta={float(nbeta):g}: lower "
            "settings.step_size or raise settings.localization (tmsjax.llc.calibrate chooses "
            "them), or check that the centre is a local minimum (chains that find lower loss "
            "escape); on_failure='return' returns the result to inspect"
        )
    return result


# ----------------------------------------------------------------------------------------------
# Hyperparameter grids


class LLCGrid(NamedTuple):
    """A sweep over (ε, γ, nβ): `result` leads with axes (step_sizes, localizations, nbetas)."""

    step_sizes: np.ndarray
    localizations: np.ndarray
    nbetas: np.ndarray
    result: LLCResult


def _map_cells(fn, xs, cell_batch):
    """vmap `fn` over the leading axis of `xs` in groups of `cell_batch` cells (``lax.map``).

    All cells at once would keep (cells × chains × n) activations live per step and fall out of
    the CPU caches; groups keep the working set small while each group still runs vmapped.
    """
    num_cells = jax.tree.leaves(xs)[0].shape[0]
    if cell_batch is None or cell_batch >= num_cells:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=cell_batch)


@functools.partial(jax.jit, static_argnames=("loss_fn", "chains", "minibatch_fn", "cell_batch"))
def _grid_jit(
    keys,
    center,
    data,
    nbetas,
    step_sizes,
    localizations,
    *,
    loss_fn,
    chains,
    minibatch_fn,
    cell_batch,
):
    core = functools.partial(sample_llc, loss_fn=loss_fn, chains=chains, minibatch_fn=minibatch_fn)

    def cell(inputs):
        key, nbeta, step_size, localization = inputs
        return core(key, center, data, nbeta, step_size, localization)

    return _map_cells(cell, (keys, nbetas, step_sizes, localizations), cell_batch)


def llc_grid(
    key: PRNGKey,
    loss_fn: LossFn,
    center: PyTree,
    data: Any = None,
    settings: LLCSettings = LLCSettings(),
    *,
    step_sizes=None,
    localizations=None,
    nbetas=None,
    num_data: int | None = None,
    minibatch_fn: Callable | None = None,
    cell_batch: int | None = DEFAULT_CELL_BATCH,
) -> LLCGrid:
    r"""λ̂ and diagnostics for every cell of the product grid ε × γ × nβ, in one compiled call.

    The product is flattened to one leading axis and :func:`~tmsjax.llc.sample_llc` vmapped over
    it (every cell gets its own key), then reshaped to (len(step_sizes), len(localizations),
    len(nbetas)). The stable region is where λ̂ is flat in ε and the estimates are usable without
    warnings; :func:`~tmsjax.llc.grid_verdicts` names each cell's problems, and
    :func:`~tmsjax.llc.calibrate` runs such a grid and picks the settings for you.

    Args:
      step_sizes, localizations, nbetas: 1-d sequences (or scalars) of the grid's values; each
        overrides the settings' value, and None keeps it (a single value; for nβ the settings'
        nβ, else n / log n).
      settings: everything else (chains, steps, burn-in, ..., sampler), as in :func:`estimate_llc`.
      cell_batch: cells vmapped together; groups of them run one after another (``lax.map``) so the
        working set stays in cache on CPU. None vmaps all cells at once (best on a GPU).
      The rest as in :func:`estimate_llc`.

    Returns:
      An :class:`LLCGrid`.
    """
    _check_common(loss_fn, settings, data)
    arrays, loss = _sampled(center, loss_fn, "center")
    _check_loss(loss, arrays, data, "center", settings.batch_size, minibatch_fn)
    step_sizes = settings.step_size if step_sizes is None else step_sizes
    localizations = settings.localization if localizations is None else localizations
    step_sizes = np.atleast_1d(_check_positive_values("step_sizes", step_sizes))
    localizations = np.atleast_1d(_check_nonnegative("localizations", localizations))
    nbetas = settings.nbeta if nbetas is None else nbetas
    nbetas = np.atleast_1d(_resolve_nbeta(nbetas, num_data, data))
    cells = np.array(list(itertools.product(step_sizes, localizations, nbetas)))
    shape = (len(step_sizes), len(localizations), len(nbetas))
    keys = jax.random.split(key, len(cells))
    flat = _grid_jit(
        keys,
        arrays,
        data,
        cells[:, 2],
        cells[:, 0],
        cells[:, 1],
        loss_fn=loss,
        chains=settings.chains,
        minibatch_fn=minibatch_fn,
        cell_batch=_check_cell_batch(cell_batch),
    )
    result = jax.tree.map(lambda x: x.reshape(*shape, *x.shape[1:]), flat)
    return LLCGrid(step_sizes, localizations, nbetas, result)


# ----------------------------------------------------------------------------------------------
# Along training: runs × checkpoints × chains in one call


@functools.partial(
    jax.jit,
    static_argnames=(
        "loss_fn",
        "chains",
        "minibatch_fn",
        "data_per_run",
        "cell_batch",
        "mesh",
    ),
)
def _along_jit(
    keys,
    centers,
    run_index,
    data,
    nbeta,
    step_size,
    localization,
    *,
    loss_fn,
    chains,
    minibatch_fn,
    data_per_run,
    cell_batch,
    mesh,
):
    core = functools.partial(sample_llc, loss_fn=loss_fn, chains=chains, minibatch_fn=minibatch_fn)

    def cells(keys, centers, run_index, data, nbeta, step_size, localization):
        def cell(inputs):
            key, center, run = inputs
            if data_per_run:
                # Index the run's dataset inside the cell instead of repeating it per checkpoint.
                run_data = jax.tree.map(lambda x: x[run], data)
                return core(key, center, run_data, nbeta[run], step_size, localization)
            return core(key, center, data, nbeta, step_size, localization)

        return _map_cells(cell, (keys, centers, run_index), cell_batch)

    args = (keys, centers, run_index, data, nbeta, step_size, localization)
    if mesh is None:
        return cells(*args)
    # Each device runs its own cells (groups of cell_batch), never a group split across devices.
    return sharding.map_grid(cells, mesh, num_grid_args=3)(*args)


def llc_along_training(
    key: PRNGKey,
    loss_fn: LossFn,
    params: PyTree,
    data: Any,
    settings: LLCSettings = LLCSettings(),
    *,
    data_per_run: bool = False,
    num_data=None,
    minibatch_fn: Callable | None = None,
    cell_batch: int | None = DEFAULT_CELL_BATCH,
    mesh: jax.sharding.Mesh | None = None,
) -> LLCResult:
    r"""λ̂ at every checkpoint of many training runs, in one compiled call (runs × checkpoints).

    The default settings are Chen et al.'s protocol: full batch, ε = 1e-3, γ = 1, 4 chains × 500
    steps, nβ = n / log n.

    Args:
      key: PRNG key (each (run, checkpoint) cell gets its own).
      loss_fn: ``loss_fn(model, data) -> scalar``.
      params: the checkpoints as you hold them: a pytree (an equinox module included) whose floating
        arrays have leading axes (num_runs, num_checkpoints), e.g. the stacked checkpoints of a
        training ensemble; other leaves are shared by every checkpoint.
      data: the dataset every run trained on, or with `data_per_run` one per run (leading axis
        num_runs on every leaf, e.g. stacked padded datasets).
      settings: an :class:`~tmsjax.llc.LLCSettings`; with `data_per_run` and ``nbeta=None`` each run
        gets the n / log n of its own dataset.
      data_per_run: whether `data` has a leading run axis.
      num_data: n for the default nβ when it cannot be read from `data` (one per run with
        `data_per_run`).
      cell_batch: (run, checkpoint) cells vmapped together, groups run one after another; None for
        all at once (best on a GPU).
      minibatch_fn: as in :func:`estimate_llc`.
      mesh: a mesh with a "grid" axis (:func:`tmsjax.sharding.grid_mesh`, on many hosts after
        ``jax.distributed.initialize``; docs/multihost.md). The (run, checkpoint) cells are padded
        and sharded over its devices, each device running its own cells in groups of
        `cell_batch`. Every cell keeps its key (split from `key` before padding), so the result
        does not depend on the device count, and every process gets all of it (gathered).

    Returns:
      An :class:`~tmsjax.llc.LLCResult` whose fields have leading axes (num_runs, num_checkpoints).
    """
    _check_common(loss_fn, settings, data)
    arrays, loss = _sampled(params, loss_fn, "params")
    leaves = jax.tree.leaves(arrays)
    if any(jnp.ndim(leaf) < 2 for leaf in leaves):
        raise ValueError("params' arrays must have leading axes (num_runs, num_checkpoints)")
    num_runs, num_checkpoints = jnp.shape(leaves[0])[:2]
    if any(jnp.shape(leaf)[:2] != (num_runs, num_checkpoints) for leaf in leaves):
        raise ValueError("params' arrays must share the leading axes (num_runs, num_checkpoints)")
    first_data = jax.tree.map(lambda x: x[0], data) if data_per_run else data
    first = jax.tree.map(lambda x: x[0, 0], arrays)
    _check_loss(loss, first, first_data, "params", settings.batch_size, minibatch_fn)
    if data_per_run:
        data_leaves = jax.tree.leaves(data)
        if not data_leaves or any(jnp.shape(x)[0] != num_runs for x in data_leaves):
            raise ValueError(f"data_per_run=True needs a leading axis num_runs={num_runs} in data")
        if settings.nbeta is None:
            if num_data is None:
                if not hasattr(data, "num_data"):
                    raise ValueError("data_per_run, no data.num_data: pass num_data, or set nbeta")
                num_data = np.asarray(data.num_data)
            nbeta = _nbeta_from_n(num_data, None)
        else:
            nbeta = _check_positive_values("nbeta", settings.nbeta)
        nbeta = jnp.broadcast_to(jnp.asarray(nbeta), (num_runs,))
    else:
        nbeta = _resolve_nbeta(settings.nbeta, num_data, data)
        if np.ndim(nbeta) != 0:
            raise ValueError(f"num_data must be a scalar for shared data, got {np.shape(nbeta)}")
    num_cells = num_runs * num_checkpoints
    centers = jax.tree.map(lambda x: jnp.reshape(x, (num_cells, *jnp.shape(x)[2:])), arrays)
    # One key per cell, split before any padding: a sharded run samples the same cells.
    keys = jax.random.split(key, num_cells)
    run_index = np.arange(num_cells) // int(num_checkpoints)
    grid, shared = (keys, centers, run_index), (data, nbeta)
    if mesh is not None:
        grid, size = sharding.shard_grid(grid, mesh)
        shared = sharding.replicate(shared, mesh)
    flat = _along_jit(
        *grid,
        *shared,
        settings.step_size,
        settings.localization,
        loss_fn=loss,
        chains=settings.chains,
        minibatch_fn=minibatch_fn,
        data_per_run=data_per_run,
        cell_batch=_check_cell_batch(cell_batch),
        mesh=mesh,
    )
    if mesh is not None:
        # Gather first, then unpad and reshape on the host: on device, slicing off the padding and
        # regrouping cells that straddle devices would be a collective for a few numbers (and
        # every process gets the whole result to write, as the unsharded call gives it).
        flat = jax.tree.map(jnp.asarray, sharding.unpad(sharding.gather(flat), size))
    return jax.tree.map(lambda x: x.reshape(num_runs, num_checkpoints, *x.shape[1:]), flat)


__all__ = ["DEFAULT_CELL_BATCH", "LLCGrid", "estimate_llc", "llc_along_training", "llc_grid"]
