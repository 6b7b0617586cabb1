r"""Posteriors where users look at them: tmsjax results as ArviZ ``InferenceData``.

ArviZ's diagnostics and plots (``az.summary``, ``az.ess``, ``az.rhat``, ``az.plot_trace``,
``az.plot_rank``, ``az.plot_pair``) read an ``InferenceData``: groups of xarray datasets whose
variables lead with the dimensions ``(chain, draw)``. Each function here turns one tmsjax result
into one:

- :func:`sweep_to_inference_data`: a NUTS or ChEES :class:`~tmsjax.sampling.nuts.SweepResult`;
  ``posterior`` holds every leaf of the position pytree (``W``, ``b`` for ``TMSParams``),
  ``sample_stats`` the per-draw sampler statistics under ArviZ's names.
- :func:`smc_to_inference_data`: a tempered-SMC :class:`~tmsjax.sampling.smc.SMCResult`; the
  replicate runs play the chains and their particles the draws.
- :func:`llc_to_inference_data`: an :class:`~tmsjax.llc.LLCResult`; ``posterior`` holds the loss
  of every draw and its λ̂ contribution :math:`n\beta(L_n(w) - L_n(w^*))`, whose mean is λ̂.
- :func:`to_inference_data`: any of the above (and an :class:`~tmsjax.llc.LLCGrid`), by type.

Grids. A sweep runs many targets (dataset sizes n, say) in one program, and λ̂ comes batched
over runs × checkpoints or (ε, γ, nβ). One ``InferenceData`` holds them all: ``grid`` names the
leading grid axes and gives their coordinates, e.g. ``grid={"num_data": [200, 400, 800]}``, and
every variable gains those dimensions after ``(chain, draw)``. ArviZ's diagnostics treat each
grid cell as its own quantity (``az.rhat`` returns one R̂ per n and per parameter), and
``idata.sel(num_data=400)`` is the InferenceData of one posterior. Sweep and SMC grids are
flattened target-major, as :func:`~tmsjax.sampling.nuts.make_chees_sweep` returns them and the
experiments build them: grid element ``t · num_chains + j`` is chain ``j`` of target ``t``.

ArviZ is an optional dependency (``pip install tmsjax[arviz]``); ``import tmsjax`` never loads
this module.

References:
  Kumar, Carroll, Hartikainen, Martin (2019), "ArviZ a unified library for exploratory analysis
  of Bayesian models in Python", JOSS.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import jax
import numpy as np

import tmsjax
from tmsjax.llc.api import LLCGrid
from tmsjax.llc.core import LLCResult
from tmsjax.sampling.nuts import SweepResult
from tmsjax.sampling.smc import SMCResult
from tmsjax.sampling.tempering import TemperingResult
from tmsjax.types import PyTree

try:
    import arviz as az
except ImportError as error:  # an optional dependency: say how to get it
    raise ImportError(
        "tmsjax.arviz needs ArviZ: pip install tmsjax[arviz] (or pip install arviz)"
    ) from error

Grid = Mapping[str, Sequence] | None

#: ArviZ's sample_stats names (its schema, as PyMC and NumPyro write them) → DrawInfo's fields.
SAMPLE_STATS = {
    "acceptance_rate": "acceptance_rate",
    "diverging": "is_divergent",
    "tree_depth": "tree_depth",
    "n_steps": "num_integration_steps",
    "lp": "logdensity",
    "energy": "energy",
}


def sweep_to_inference_data(result: SweepResult, *, grid: Grid = None) -> az.InferenceData:
    """A NUTS / ChEES sweep as ArviZ ``InferenceData``.

    Args:
      result: the sweep's output; leaves (grid, num_samples, ...).
      grid: names and coordinates of the targets, outermost first, e.g.
        ``{"num_data": sizes}`` (module docstring). None: every grid element is a chain of one
        target. The chains per target are the grid size over the number of targets.

    Returns:
      InferenceData with groups

      - ``posterior``: one variable per position leaf, named by its path (``W``, ``b``;
        ``position`` for a bare array), dims ``(chain, draw, *grid, <name>_dim_0, ...)``;
      - ``sample_stats``: ``acceptance_rate``, ``diverging``, ``tree_depth`` (NUTS doublings; 0 for
        ChEES), ``n_steps`` (leapfrog steps), ``lp`` (log density), and the adapted ``step_size``
        repeated at every draw, dims ``(chain, draw, *grid)``.

    Raises:
      ValueError: if the grid size is not a multiple of the number of targets.
    """
    grid = _check_grid(grid)
    num_grid = _grid_size("result.positions", result.positions)
    num_chains = _chains_per_target(num_grid, grid)

    def per_draw(leaf):
        return _unflatten_grid(leaf, grid, num_chains, num_sample_axes=2)

    posterior = {name: per_draw(leaf) for name, leaf in _named_leaves(result.positions)}
    stats = {
        name: per_draw(getattr(result.info, field))
        for name, field in SAMPLE_STATS.items()
        if hasattr(result.info, field)
    }
    # The step size is adapted once per chain; ArviZ's schema (and PyMC, NumPyro) keep it per draw.
    step_size = np.asarray(result.step_size)[:, None]
    stats["step_size"] = per_draw(np.broadcast_to(step_size, np.shape(result.info.acceptance_rate)))
    return az.InferenceData(
        posterior=_dataset(posterior, grid, ("chain", "draw")),
        sample_stats=_dataset(stats, grid, ("chain", "draw")),
    )


def smc_to_inference_data(result: SMCResult, *, grid: Grid = None) -> az.InferenceData:
    """A tempered-SMC sweep as ArviZ ``InferenceData``: replicate runs are chains, particles draws.

    The particles of one run are equally weighted posterior draws but not a Markov chain (their
    order only groups resampled copies), so ESS along ``draw`` means little; R̂ across runs says
    whether independent runs agree.

    Args:
      result: the sweep's output, leaves (grid, num_particles, ...) and (grid, ...).
      grid: names and coordinates of the targets, outermost first (module docstring). None: every
        grid element is a replicate of one target.

    Returns:
      InferenceData with groups

      - ``posterior``: one variable per particle leaf, dims ``(chain, draw, *grid, ...)``;
      - ``sample_stats``, one value per run, dims ``(chain, *grid)``: ``log_marginal_likelihood``
        (the evidence estimate, PyMC's name for it) and ``num_stages`` (tempering steps taken);
        and per tempering step, dims ``(chain, *grid, stage)``, NaN past ``num_stages``:
        ``beta``, ``acceptance_rate``, ``step_size``.
    """
    grid = _check_grid(grid)
    num_grid = _grid_size("result.particles", result.particles)
    num_chains = _chains_per_target(num_grid, grid)

    def split(leaf, num_sample_axes):
        return _unflatten_grid(leaf, grid, num_chains, num_sample_axes)

    posterior = {name: split(leaf, 2) for name, leaf in _named_leaves(result.particles)}
    stats = {
        "log_marginal_likelihood": split(result.log_evidence, 1),
        "num_stages": split(result.num_steps, 1),
        "beta": split(result.tempering, 1),
        "acceptance_rate": split(result.acceptance_rate, 1),
        "step_size": split(result.step_size, 1),
    }
    extra = {name: ["stage"] for name in ("beta", "acceptance_rate", "step_size")}
    return az.InferenceData(
        posterior=_dataset(posterior, grid, ("chain", "draw")),
        sample_stats=_dataset(stats, grid, ("chain",), extra),
    )


def llc_to_inference_data(
    result: LLCResult, *, grid: Grid = None, losses: Literal["draws", "trace"] = "draws"
) -> az.InferenceData:
    r"""A λ̂ estimate's chains as ArviZ ``InferenceData``, so that ArviZ diagnoses its losses.

    The posterior expectation λ̂ estimates is that of :math:`n\beta(L_n(w) - L_n(w^*))`; exported
    per draw as ``llc``, its ``az.summary`` mean is λ̂ (with ``losses="draws"``), its
    ``mcse_mean`` an autocorrelation-aware error bar, and ``ess_bulk`` / ``r_hat`` say whether the
    chains mixed.

    Args:
      result: from :func:`~tmsjax.llc.estimate_llc` (no leading axes),
        :func:`~tmsjax.llc.llc_along_training` (runs, checkpoints) or a grid.
      grid: names and coordinates of the result's leading axes, outermost first, one per axis,
        e.g. ``{"run": range(4), "checkpoint": steps}``; None when there are none.
      losses: ``"draws"``: the losses λ̂ averages (burn-in removed, thinned); ``"trace"``: the loss
        after every step, burn-in included, to see the burn-in in ``az.plot_trace`` (with
        minibatches it is the step's minibatch loss; either way the ``llc`` mean is then not λ̂).

    Returns:
      InferenceData with groups

      - ``posterior``: ``loss`` (:math:`L_n(w)`) and ``llc`` (:math:`n\beta(L_n(w) - L_n(w^*))`),
        dims ``(chain, draw, *grid)``;
      - ``sample_stats``: the per-chain health of :class:`~tmsjax.llc.LLCDiagnostics`
        (``non_finite``, ``escaped``, ``drifting``, ``low_acceptance``, ``escape_fraction``,
        ``drift``, ``drift_z``, ``acceptance``), dims ``(chain, *grid)``;
      - ``constant_data``: ``nbeta`` and ``init_loss`` (:math:`L_n(w^*)`), dims ``grid`` (a grid
        over nβ, e.g. an :class:`~tmsjax.llc.LLCGrid`'s, carries nβ as its coordinate instead).

    Raises:
      ValueError: if `grid` does not match the result's leading axes, or `losses` is unknown.
    """
    grid = _check_grid(grid)
    if losses not in ("draws", "trace"):
        raise ValueError(f"losses must be 'draws' or 'trace', got {losses!r}")
    leading = np.shape(result.llc)
    if leading != _grid_shape(grid):
        raise ValueError(
            f"grid must name the result's leading axes {leading}, got sizes {_grid_shape(grid)}"
        )
    loss = np.asarray(result.draw_losses if losses == "draws" else result.loss_trace)
    # nβ and L(w*) per grid cell, broadcast over (chain, draw).
    nbeta = np.asarray(result.nbeta)[..., None, None]
    init_loss = np.asarray(result.init_loss)[..., None, None]
    posterior = {
        "loss": _chains_first(loss, len(grid), num_sample_axes=2),
        "llc": _chains_first(nbeta * (loss - init_loss), len(grid), num_sample_axes=2),
    }
    health = {
        name: _chains_first(np.asarray(value), len(grid), num_sample_axes=1)
        for name, value in result.diagnostics._asdict().items()
    }
    constants = {"nbeta": np.asarray(result.nbeta), "init_loss": np.asarray(result.init_loss)}
    constants = {name: value for name, value in constants.items() if name not in grid}
    return az.InferenceData(
        posterior=_dataset(posterior, grid, ("chain", "draw")),
        sample_stats=_dataset(health, grid, ("chain",)),
        constant_data=_dataset(constants, grid, ()),
    )


def tempering_to_inference_data(result: TemperingResult, *, grid: Grid = None) -> az.InferenceData:
    """A replica-exchange sweep's β = 1 draws as ArviZ ``InferenceData``.

    Args:
      result: the sweep's output (:func:`tmsjax.sampling.tempering.make_tempering_sweep`); leaves
        (grid, num_samples, ...).
      grid: as in :func:`sweep_to_inference_data`.

    Returns:
      InferenceData with ``posterior`` (one variable per position leaf, dims ``(chain, draw,
      *grid, ...)``) and ``sample_stats``: ``loglikelihood`` per draw, and per chain, repeated at
      every draw as ArviZ keeps chain constants, ``num_round_trips`` and the bottleneck
      ``min_swap_acceptance`` of the ladder.
    """
    grid = _check_grid(grid)
    num_grid = _grid_size("result.positions", result.positions)
    num_chains = _chains_per_target(num_grid, grid)

    def per_draw(leaf):
        return _unflatten_grid(leaf, grid, num_chains, num_sample_axes=2)

    draws = np.shape(result.loglikelihood)
    posterior = {name: per_draw(leaf) for name, leaf in _named_leaves(result.positions)}
    per_chain = {
        "num_round_trips": np.asarray(result.num_round_trips),
        "min_swap_acceptance": np.min(np.asarray(result.swap_acceptance), axis=-1),
    }
    stats = {"loglikelihood": per_draw(result.loglikelihood)} | {
        name: per_draw(np.broadcast_to(value[:, None], draws)) for name, value in per_chain.items()
    }
    return az.InferenceData(
        posterior=_dataset(posterior, grid, ("chain", "draw")),
        sample_stats=_dataset(stats, grid, ("chain", "draw")),
    )


def to_inference_data(result, **kwargs) -> az.InferenceData:
    """Any tmsjax result as ArviZ ``InferenceData``, by its type.

    An :class:`~tmsjax.llc.LLCGrid` gets its own coordinates: ``step_size``, ``localization``,
    ``nbeta``. `kwargs` go to the function for the type: :func:`sweep_to_inference_data`,
    :func:`smc_to_inference_data`, :func:`tempering_to_inference_data` or
    :func:`llc_to_inference_data`.
    """
    if isinstance(result, SweepResult):
        return sweep_to_inference_data(result, **kwargs)
    if isinstance(result, SMCResult):
        return smc_to_inference_data(result, **kwargs)
    if isinstance(result, TemperingResult):
        return tempering_to_inference_data(result, **kwargs)
    if isinstance(result, LLCResult):
        return llc_to_inference_data(result, **kwargs)
    if isinstance(result, LLCGrid):
        grid = {
            "step_size": result.step_sizes,
            "localization": result.localizations,
            "nbeta": result.nbetas,
        }
        return llc_to_inference_data(result.result, grid=grid, **kwargs)
    raise TypeError(
        "to_inference_data takes a SweepResult, SMCResult, TemperingResult, LLCResult or LLCGrid, "
        f"got {type(result).__name__}"
    )


# ----------------------------------------------------------------------------------------------
# Helpers


def _check_grid(grid: Grid) -> dict[str, np.ndarray]:
    grid = {} if grid is None else {name: np.asarray(values) for name, values in grid.items()}
    for name, values in grid.items():
        if name in ("chain", "draw"):
            raise ValueError(f"grid may not name a dimension {name!r}: ArviZ reserves it")
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"grid[{name!r}] must be a non-empty sequence, got {values!r}")
    return grid


def _grid_shape(grid: dict[str, np.ndarray]) -> tuple[int, ...]:
    return tuple(values.size for values in grid.values())


def _grid_size(name: str, tree: PyTree) -> int:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{name} has no arrays")
    return int(np.shape(leaves[0])[0])


def _chains_per_target(num_grid: int, grid: dict[str, np.ndarray]) -> int:
    num_targets = math.prod(_grid_shape(grid))
    if num_grid % num_targets:
        raise ValueError(
            f"the result's grid axis ({num_grid}) is not a multiple of the {num_targets} targets "
            f"of grid {_grid_shape(grid)}"
        )
    return num_grid // num_targets


def _unflatten_grid(leaf, grid, num_chains: int, num_sample_axes: int) -> np.ndarray:
    """A sweep's target-major grid axis (grid, [draw,] ...) -> (chain, [draw,] *grid, ...)."""
    leaf = np.asarray(leaf).reshape(*_grid_shape(grid), num_chains, *np.shape(leaf)[1:])
    return _chains_first(leaf, len(grid), num_sample_axes)


def _chains_first(array: np.ndarray, num_grid_axes: int, num_sample_axes: int) -> np.ndarray:
    """(*grid, chain[, draw], ...) -> (chain[, draw], *grid, ...): ArviZ wants the samples first."""
    sample_axes = range(num_grid_axes, num_grid_axes + num_sample_axes)
    return np.moveaxis(array, list(sample_axes), list(range(num_sample_axes)))


def _key_name(key) -> str:
    for attribute in ("name", "key", "idx"):  # GetAttrKey, DictKey / FlattenedIndexKey, SequenceKey
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _named_leaves(tree: PyTree, default: str = "position") -> list[tuple[str, np.ndarray]]:
    """(name, leaf) for every leaf: its path joined by dots (``W``, ``layers.0.weight``)."""
    named = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        name = ".".join(_key_name(key) for key in path)
        # A bare array has no path, and a bare tuple's would start with a digit.
        if not name or name[0].isdigit():
            name = f"{default}.{name}" if name else default
        named.append((name, np.asarray(leaf)))
    return named


def _dataset(
    variables: dict[str, np.ndarray],
    grid: dict[str, np.ndarray],
    sample_dims: tuple[str, ...],
    extra_dims: dict[str, list[str]] | None = None,
):
    """One ArviZ group: dims (*sample_dims, *grid, *shape), the shape's dims named by `extra_dims`
    or ArviZ's ``<name>_dim_<i>`` (numbered from 0 whatever the grid), and the grid's coords."""
    clash = sorted(set(grid) & set(variables))
    if clash:  # xarray would let the coordinate silently replace the variable
        raise ValueError(f"grid may not name a dimension after an exported variable: {clash}")
    extra_dims = extra_dims or {}
    dims = {}
    for name, value in variables.items():
        num_shape = value.ndim - len(sample_dims) - len(grid)
        extra = extra_dims.get(name, [f"{name}_dim_{axis}" for axis in range(num_shape)])
        # With default_dims=[] ArviZ takes every dim from here; "chain" and "draw" keep their
        # default coordinates 0, 1, ...
        dims[name] = [*sample_dims, *grid, *extra]
    dataset = az.dict_to_dataset(
        variables, library=tmsjax, coords=dict(grid), dims=dims, default_dims=[]
    )
    # ArviZ stores a 0-d value (nβ of a single estimate) as shape (1,) along `<name>_dim_0`.
    scalars = {f"{name}_dim_0": 0 for name, value in variables.items() if value.ndim == 0}
    return dataset.isel(scalars, drop=True)


__all__ = [
    "SAMPLE_STATS",
    "llc_to_inference_data",
    "smc_to_inference_data",
    "sweep_to_inference_data",
    "tempering_to_inference_data",
    "to_inference_data",
]
