r"""The health of λ̂ estimates: per-chain diagnostics as boolean arrays, and one usability rule.

Each chain of an estimate gets four booleans (:class:`LLCDiagnostics`), computed inside the compiled
program so that they batch over grids and runs × checkpoints like λ̂ itself:

- ``non_finite``: a NaN/inf position, loss or per-chain λ̂ (the chain blew up; ε far too large).
- ``escaped``: more than :data:`ESCAPE_FRACTION` of the draws lie below :math:`L_n(w^*)`, or the
  chain's λ̂ is negative. At a local minimum the draws sit above :math:`L_n(w^*)` (for a regular
  minimum :math:`n\beta(L_n(w) - L_n(w^*))` is about Gamma(d/2)-distributed, so essentially never
  below 0); many draws below it mean the chain slid off a saddle or high-loss plateau into a lower
  phase, and λ̂ is no longer the LLC of :math:`w^*` (Chen et al. 2023 see negative λ̂ at high-loss
  points).
- ``drifting``: the draws are not stationary: the second-half mean of :math:`n\beta L_n` differs
  from the first-half mean by more than :data:`DRIFT_Z` standard errors (batch means of the second
  half, where the chain should be stationary) *and* by more than :data:`DRIFT_RELATIVE` of the
  chain's λ̂ (at least 0.1), so that only drifts that matter are named. Usually: too short a
  burn-in, or a slow escape.
- ``low_acceptance``: the mean MALA acceptance estimate is below :data:`MIN_ACCEPTANCE`; too large
  an ε biases λ̂ upward (Euler discretisation inflates the variance by about εk/4 along a direction
  of curvature k). Shown as "step size too large".

A blown-up chain has no other flag (its numbers mean nothing). :func:`usable` is the one rule that
decides whether an estimate may be used; the probes and every experiment apply it. Strings are for
people only: :func:`verdict`, :func:`grid_verdicts` and :func:`summarize` describe the booleans and
are never parsed.

References:
  Lau, Furman, Wang, Murfet, Wei (2023), arXiv:2308.12108.
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301, §5 and App. K.
"""

import functools
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from tmsjax.types import Array, Bool, Float

#: A chain escaped when more than this fraction of its draws lie below L_n(w*) (module docstring).
ESCAPE_FRACTION = 0.1
#: Drift needs a z-score above this. The standard error comes from 20 batch means (19 degrees of
#: freedom), so z is t-distributed with heavy tails: 5 keeps false alarms near 1e-4 per stationary
#: chain (4 would give 3e-3, i.e. a few percent of 16-chain estimates)...
DRIFT_Z = 5.0
#: ...and a size above this fraction of the chain's λ̂ (or 0.1 absolute): drifts that matter.
DRIFT_RELATIVE = 0.1
#: Below this mean MALA acceptance the step is too large. At acceptance 0.9 the variance inflation
#: εk/4 of the stiffest directions is a few percent (measured on Gaussians in tests/test_llc.py).
MIN_ACCEPTANCE = 0.9

#: The per-chain problems: field of :class:`LLCDiagnostics` → the words :func:`verdict` uses.
PROBLEMS = {
    "non_finite": "non-finite",
    "escaped": "escaped",
    "drifting": "drifting",
    "low_acceptance": "step size too large",
}


class LLCDiagnostics(NamedTuple):
    r"""Per-chain health of an estimate (leading axes of a grid or of runs × checkpoints first).

    Attributes:
      non_finite: the chain blew up (a NaN/inf position, loss or λ̂).
      escaped: the chain left the basin of :math:`w^*` (module docstring); False when non-finite.
      drifting: the draws are not stationary; False when non-finite.
      low_acceptance: mean MALA acceptance below :data:`MIN_ACCEPTANCE`; False when non-finite or
        not estimated.
      escape_fraction: fraction of draws with :math:`L_n(w) < L_n(w^*)`.
      drift: :math:`n\beta` × (second-half mean − first-half mean) of the draws, in λ units.
      drift_z: that difference over its batch-means standard error.
      acceptance: mean MALA acceptance estimate over the post-burn-in steps (NaN if not estimated).
    """

    non_finite: Bool[Array, "... num_chains"]
    escaped: Bool[Array, "... num_chains"]
    drifting: Bool[Array, "... num_chains"]
    low_acceptance: Bool[Array, "... num_chains"]
    escape_fraction: Float[Array, "... num_chains"]
    drift: Float[Array, "... num_chains"]
    drift_z: Float[Array, "... num_chains"]
    acceptance: Float[Array, "... num_chains"]


def _batch_means_variance(draws: Float[Array, "num_chains num"], num_batches: int = 20):
    """Variance of the mean of each row, from batch means (accounts for autocorrelation)."""
    length = draws.shape[-1]
    if length < 2 * num_batches:
        # Too few draws for batches: the naive iid variance (an underestimate when correlated).
        if length > 1:
            return jnp.var(draws, axis=-1, ddof=1) / length
        return jnp.zeros(draws.shape[:-1])
    size = length // num_batches
    means = draws[..., : size * num_batches].reshape(*draws.shape[:-1], num_batches, size).mean(-1)
    return jnp.var(means, axis=-1, ddof=1) / num_batches


def diagnose(
    draws, init_loss, nbeta, llc_per_chain, acceptance, is_finite, min_acceptance=MIN_ACCEPTANCE
) -> LLCDiagnostics:
    r"""The diagnostics of one estimate's chains (traceable; the core's last step).

    Args:
      draws: the draws' losses, (num_chains, num_draws).
      init_loss: :math:`L_n(w^*)`.
      nbeta: :math:`n\beta`.
      llc_per_chain: each chain's λ̂, (num_chains,).
      acceptance: each chain's mean acceptance estimate (NaN if not estimated), (num_chains,).
      is_finite: whether each chain's positions and losses stayed finite, (num_chains,).
      min_acceptance: the `low_acceptance` threshold (the sampler's ``min_acceptance`` where it
        defines one: an exact sampler's acceptance measures mixing, not bias).
    """
    num_draws = draws.shape[-1]
    escape_fraction = jnp.mean(draws < init_loss, axis=-1)
    half = num_draws // 2
    if half >= 1:
        first, second = draws[:, :half], draws[:, num_draws - half :]
        difference = jnp.mean(second, -1) - jnp.mean(first, -1)
        # Both half-means get the second half's batch-means variance: a trend inside the first half
        # would inflate its own batch means and hide the very drift we test for.
        error = jnp.sqrt(2 * _batch_means_variance(second))
        drift = nbeta * difference
        # A zero error with a zero difference (a frozen chain) is no evidence of drift.
        frozen = jnp.where(difference == 0, 0.0, jnp.inf)
        drift_z = jnp.where(error > 0, difference / jnp.where(error > 0, error, 1.0), frozen)
    else:
        drift = drift_z = jnp.zeros(draws.shape[:-1], draws.dtype)
    # A NaN λ̂ (say a non-finite L_n(w*)) would pass every other test: it counts as a blow-up.
    is_finite = is_finite & jnp.all(jnp.isfinite(draws), axis=-1) & jnp.isfinite(llc_per_chain)
    drifting = (jnp.abs(drift_z) > DRIFT_Z) & (
        jnp.abs(drift) > DRIFT_RELATIVE * jnp.maximum(jnp.abs(llc_per_chain), 1.0)
    )
    escaped = (escape_fraction > ESCAPE_FRACTION) | (llc_per_chain < 0)
    low_acceptance = acceptance < min_acceptance  # False for NaN (not estimated)
    return LLCDiagnostics(
        ~is_finite,
        is_finite & escaped,
        is_finite & drifting,
        is_finite & low_acceptance,
        escape_fraction,
        drift,
        drift_z,
        acceptance,
    )


def _diagnostics_of(result) -> LLCDiagnostics:
    return result if isinstance(result, LLCDiagnostics) else result.diagnostics


def usable_chains(result) -> Bool[Array, "... num_chains"]:
    """Per chain: neither blown up nor escaped (the chains whose draws measure the phase of w*).

    Args:
      result: an :class:`~tmsjax.llc.LLCResult` (any leading axes) or its :class:`LLCDiagnostics`.
    """
    diagnostics = _diagnostics_of(result)
    return ~(jnp.asarray(diagnostics.non_finite) | jnp.asarray(diagnostics.escaped))


def usable(result) -> Bool[Array, "..."]:
    r"""Whether each λ̂ estimate is usable: no chain blew up and no chain escaped.

    The one rule, shared by the probes and every experiment. Why this rule:

    - The pooled λ̂ is the mean over *all* chains, so one escaped chain (draws from a lower phase)
      or one non-finite chain contaminates it; a majority vote over chains would still pass the
      contaminated mean. Keeping only some chains is a different estimator (report it separately,
      with :func:`usable_chains`).
    - A usable estimate is finite and non-negative without a separate test: every chain's λ̂ is
      finite and ≥ 0 (a negative one counts as escaped), and the pooled λ̂ is their mean.
    - Drifting and low acceptance are not in the rule: they bias λ̂ (too short a chain, too large an
      ε) while it still measures the phase of :math:`w^*`, so they are warnings shown by
      :func:`verdict`, to be fixed by tuning (:func:`tmsjax.llc.llc_grid`) rather than by dropping.

    Args:
      result: an :class:`~tmsjax.llc.LLCResult` with any leading axes (a single estimate, a grid,
        runs × checkpoints), or its :class:`LLCDiagnostics`.

    Returns:
      A boolean array over the leading axes (a 0-d array for a single estimate).
    """
    return jnp.all(usable_chains(result), axis=-1)


def all_clear(result) -> Bool[Array, "..."]:
    """Whether no chain of each estimate has any problem, warnings included (the boolean twin of a
    verdict of "ok"). Stricter than :func:`usable`: for choosing settings (a grid's stable region),
    not for deciding which estimates to keep.

    Args:
      result: an :class:`~tmsjax.llc.LLCResult` (any leading axes), or its :class:`LLCDiagnostics`.
    """
    diagnostics = _diagnostics_of(result)
    problems = [jnp.any(jnp.asarray(getattr(diagnostics, name)), axis=-1) for name in PROBLEMS]
    return ~functools.reduce(jnp.logical_or, problems)


def _problem_masks(result) -> dict[str, np.ndarray]:
    diagnostics = _diagnostics_of(result)
    return {name: np.asarray(getattr(diagnostics, name), dtype=bool) for name in PROBLEMS}


def problem_counts(result) -> dict[str, int]:
    """How many estimates of a batch have each problem (an estimate counts once one chain has it).

    Returns:
      ``{"total", "ok" (no problem in any chain), "non-finite", "escaped", "drifting",
      "step size too large", "usable", "excluded" (not usable)}``, JSON-ready ints.
    """
    masks = {name: np.any(mask, axis=-1) for name, mask in _problem_masks(result).items()}
    is_usable = np.asarray(usable(result))
    counts = {"total": int(is_usable.size), "ok": int(np.sum(np.asarray(all_clear(result))))}
    counts.update({PROBLEMS[name]: int(np.sum(mask)) for name, mask in masks.items()})
    counts.update(usable=int(np.sum(is_usable)), excluded=int(np.sum(~is_usable)))
    return counts


def _verdict_of(masks: dict[str, np.ndarray]) -> str:
    parts = []
    for name, mask in masks.items():
        count = int(np.sum(mask))
        if count:
            parts.append(f"{PROBLEMS[name]} ({count}/{mask.size} chains)")
    return "ok" if not parts else "; ".join(parts)


def verdict(result) -> str:
    """One readable line for a single estimate: "ok", or the problems and how many chains have them.

    For people, not programs: decide with :func:`usable` (or the booleans of
    :class:`LLCDiagnostics`). Examples: ``"ok"``, ``"escaped (3/4 chains); drifting (1/4 chains)"``.
    """
    masks = _problem_masks(result)
    shape = masks["non_finite"].shape
    if len(shape) != 1:
        raise ValueError(f"verdict takes one estimate; for a batch use grid_verdicts ({shape})")
    return _verdict_of(masks)


def grid_verdicts(result) -> np.ndarray:
    """Verdict strings (object array) for every estimate of a batch (a grid, runs × checkpoints)."""
    masks = _problem_masks(result)
    leading = masks["non_finite"].shape[:-1]
    out = np.empty(leading, dtype=object)
    for index in np.ndindex(leading):
        out[index] = _verdict_of({name: mask[index] for name, mask in masks.items()})
    return out


def summarize(result) -> dict:
    """A small JSON-ready summary of a single estimate."""
    diagnostics = result.diagnostics
    return {
        "llc": float(result.llc),
        "stderr": float(result.stderr),
        "llc_per_chain": np.asarray(result.llc_per_chain).tolist(),
        "init_loss": float(result.init_loss),
        "nbeta": float(result.nbeta),
        "escape_fraction": np.asarray(diagnostics.escape_fraction).tolist(),
        "drift": np.asarray(diagnostics.drift).tolist(),
        "acceptance": np.asarray(diagnostics.acceptance).tolist(),
        "usable": bool(usable(result)),
        "verdict": verdict(result),
    }


__all__ = [
    "DRIFT_RELATIVE",
    "DRIFT_Z",
    "ESCAPE_FRACTION",
    "LLCDiagnostics",
    "MIN_ACCEPTANCE",
    "PROBLEMS",
    "all_clear",
    "diagnose",
    "grid_verdicts",
    "problem_counts",
    "summarize",
    "usable",
    "usable_chains",
    "verdict",
]
