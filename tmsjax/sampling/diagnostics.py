r"""MCMC diagnostics: ESS and R-hat (from :mod:`blackjax.diagnostics`), divergence and NaN counts.

Conventions: draws are arrays with a chain axis and a draw axis, ``(num_chains, num_draws, ...)``;
trailing axes are treated as separate scalar quantities. ESS follows Geyer's initial monotone
sequence estimator as implemented by blackjax (Stan's definition); R-hat is the split-free
Gelman–Rubin potential scale reduction.

References:
  Vehtari, Gelman, Simpson, Carpenter, Bürkner (2021), "Rank-normalization, folding, and
  localization: an improved R-hat for assessing convergence of MCMC", Bayesian Analysis.
"""

import functools

import jax
import numpy as np
from blackjax import diagnostics as _bjd

from tmsjax.types import PyTree


def _as_draws(name: str, draws, min_draws: int = 4) -> np.ndarray:
    draws = np.asarray(draws, dtype=float)
    if draws.ndim < 2:
        raise ValueError(f"{name} must have shape (num_chains, num_draws, ...), got {draws.shape}")
    if draws.shape[1] < min_draws:
        raise ValueError(f"{name} needs at least {min_draws} draws per chain, got {draws.shape[1]}")
    return draws


# Jitted once per input shape: blackjax's estimator run op by op dispatches (and compiles) dozens of
# small ops per call, seconds per new shape on CPU; one fused program is ~10x cheaper.
_jit_ess = jax.jit(functools.partial(_bjd.effective_sample_size, chain_axis=0, sample_axis=1))
_jit_rhat = jax.jit(functools.partial(_bjd.potential_scale_reduction, chain_axis=0, sample_axis=1))


def effective_sample_size(draws) -> np.ndarray:
    """Multi-chain ESS of each trailing component of ``draws`` (num_chains, num_draws, ...)."""
    draws = _as_draws("draws", draws)
    return np.asarray(_jit_ess(draws), dtype=float)


def per_chain_ess(draws) -> np.ndarray:
    """ESS of every chain on its own: shape (num_chains, ...)."""
    draws = _as_draws("draws", draws)
    return np.stack([effective_sample_size(draws[i : i + 1]) for i in range(draws.shape[0])])


def rhat(draws) -> np.ndarray:
    """Potential scale reduction R-hat of each trailing component (needs ≥ 2 chains)."""
    draws = _as_draws("draws", draws)
    if draws.shape[0] < 2:
        raise ValueError(f"draws needs at least 2 chains for R-hat, got {draws.shape[0]}")
    return np.asarray(_jit_rhat(draws), dtype=float)


def indicator_ess(indicator) -> float:
    """ESS of a 0/1 indicator (e.g. "sample is in phase α"), (num_chains, num_draws).

    The multi-chain ESS (rank-normalised, from within- and between-chain variance): chains that mix
    but disagree about how often they visit the phase shrink it, as they should. When no chain's
    indicator varies there is no autocorrelation to estimate, and each chain counts once.
    """
    indicator = _as_draws("indicator", indicator).astype(float)
    num_chains, num_draws = indicator.shape[:2]
    if not np.any(np.std(indicator, axis=1) > 0):
        return float(num_chains)
    ess = float(np.asarray(effective_sample_size(indicator)).reshape(-1)[0])
    return float(np.clip(np.nan_to_num(ess, nan=1.0), 1.0, num_chains * num_draws))


def occupancy_with_error(indicator) -> tuple[float, float, float]:
    """Occupancy p̂ of a 0/1 indicator (num_chains, num_draws) with its ESS-based binomial error.

    .. math:: \\mathrm{se} = \\sqrt{\\hat p(1-\\hat p)/\\mathrm{ESS}},\\ \\text{floored at}\\
              \\tfrac12/\\mathrm{ESS}\\ \\text{so a 0 or 1 estimate still carries an error}

    The ESS is :func:`indicator_ess`; with fewer than 4 draws per chain there is no autocorrelation
    estimate and each chain counts once.

    Returns:
      (p̂, standard error, ESS used).
    """
    indicator = _as_draws("indicator", indicator, min_draws=1).astype(float)
    num_chains = indicator.shape[0]
    p = float(np.mean(indicator))
    ess = indicator_ess(indicator) if indicator.shape[1] >= 4 else float(num_chains)
    se = max(np.sqrt(p * (1 - p) / ess), 0.5 / ess)
    return p, float(se), ess


def count_divergences(is_divergent) -> np.ndarray:
    """Divergent transitions per chain (sums every axis after the first)."""
    is_divergent = np.asarray(is_divergent)
    return is_divergent.reshape(is_divergent.shape[0], -1).sum(axis=1)


def count_nonfinite(tree: PyTree) -> int:
    """Number of NaN or inf entries over all leaves of a pytree (e.g. sampled positions)."""
    import jax

    return int(sum(np.sum(~np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(tree)))


def summarize_chains(
    positions: PyTree, is_divergent=None, tree_depth=None, acceptance_rate=None
) -> dict:
    """A small JSON-ready summary: worst ESS and R-hat over all parameters, divergences, NaNs.

    Args:
      positions: pytree with leaves (num_chains, num_draws, ...).
      is_divergent, tree_depth, acceptance_rate: optional per-draw sampler info
        (num_chains, num_draws).
    """
    import jax

    flat = np.concatenate(
        [np.asarray(leaf).reshape(*np.shape(leaf)[:2], -1) for leaf in jax.tree.leaves(positions)],
        axis=-1,
    )
    summary = {
        "num_chains": int(flat.shape[0]),
        "num_draws": int(flat.shape[1]),
        "num_nonfinite": count_nonfinite(positions),
    }
    if flat.shape[1] >= 4 and np.all(np.isfinite(flat)):
        ess = effective_sample_size(flat)
        summary["min_ess"] = float(np.nanmin(ess))
        summary["median_ess"] = float(np.nanmedian(ess))
        if flat.shape[0] >= 2:
            summary["max_rhat"] = float(np.nanmax(rhat(flat)))
    if is_divergent is not None:
        summary["num_divergent"] = int(np.sum(is_divergent))
    if tree_depth is not None:
        summary["mean_tree_depth"] = float(np.mean(tree_depth))
        summary["max_tree_depth"] = int(np.max(tree_depth))
    if acceptance_rate is not None:
        summary["mean_acceptance"] = float(np.mean(acceptance_rate))
    return summary


__all__ = [
    "effective_sample_size",
    "per_chain_ess",
    "rhat",
    "indicator_ess",
    "occupancy_with_error",
    "count_divergences",
    "count_nonfinite",
    "summarize_chains",
]
