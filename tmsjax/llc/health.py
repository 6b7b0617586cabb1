r"""The health of λ̂ estimates: per-chain diagnostics as boolean arrays, and one usability rule.

Each chain of an estimate gets five booleans (:class:`LLCDiagnostics`), computed inside the compiled
program so that they batch over grids and runs × checkpoints like λ̂ itself:

- ``non_finite``: a NaN/inf position, loss or per-chain λ̂ (the chain blew up; ε far too large).
- ``escaped``: more than :data:`ESCAPE_FRACTION` of the draws lie below :math:`L_n(w^*)`, or the
  chain's λ̂ is negative. At a local minimum the draws sit above :math:`L_n(w^*)` (for a regular
  minimum :math:`n\beta(L_n(w) - L_n(w^*))` is about Gamma(d/2)-distributed, so essentially never
  below 0); many draws below it mean the chain slid off a saddle or high-loss plateau into a lower
  phase, and λ̂ is no longer the LLC of :math:`w^*` (Chen et al. 2023 see negative λ̂ at high-loss
  points).
- ``drifting``: the draws are not stationary: the second-half mean of :math:`n\beta L_n` differs
  from the first-half mean by more than :data:`DRIFT_Z` standard errors *and* by more than
  :data:`DRIFT_RELATIVE` of the chain's λ̂ (at least 0.1), so that only drifts that matter are
  named. The standard error accounts for autocorrelation: the variance of a half's mean is
  :math:`\hat\sigma^2\hat\tau/N` with :math:`\hat\tau` the integrated autocorrelation time of the
  detrended second half (where the chain should be stationary) by Geyer's initial monotone
  sequence estimator (:func:`integrated_time`), or the variance of the second-half means across
  the (independent) chains where that is larger. Batch means of fixed count (the earlier test)
  were shorter than the autocorrelation time of a slow chain (about :math:`1/(\epsilon\gamma)`
  steps along directions held only by the localization) and called stationary-but-slow chains
  drifting.
  Usually: too short a burn-in, or a slow escape.
- ``low_acceptance`` (shown as "step size too large"): the discretisation bias of λ̂ is large.
  For plain SGLD with a full-data gradient at the draws it is *estimated*. The Euler chain
  :math:`w' = w - \frac\epsilon2\nabla U + \sqrt\epsilon\,\xi` samples, to first order in
  :math:`h = \epsilon/2`, the density :math:`\pi(1 + h(\frac14\lVert\nabla U\rVert^2 -
  \frac12\Delta U))` (the modified equation of Euler–Maruyama), so the bias of
  :math:`\mathbb{E}[f]`, :math:`f = n\beta L_n`, is
  :math:`h\,\mathrm{Cov}(f, \frac14\lVert\nabla U\rVert^2 - \frac12\Delta U)`; with
  :math:`\mathbb{E}[\nabla f\cdot\nabla U] = \mathrm{Cov}(f, \lVert\nabla U\rVert^2 - \Delta U)`
  (integration by parts) that is

  .. math:: b_\epsilon \approx \frac\epsilon8\Big(\mathbb{E}[\nabla(n\beta L_n)\cdot\nabla U]
            - \mathrm{Cov}\big(n\beta L_n, \Delta(n\beta L_n)\big)\Big),

  :math:`U = n\beta L_n + \frac\gamma2\lVert w - w^*\rVert^2`, averaged over the draws (the
  Laplacian by Hutchinson's estimator, one Hessian-vector product per draw), so it sees the
  curvature where the chain is, not only at :math:`w^*`. For a Gaussian the covariance vanishes
  and the first term is exact at any stable ε (along a direction of curvature
  :math:`k = n\beta a + \gamma` the Euler variance is :math:`1/(k(1 - \epsilon k/4))`); where the
  loss and its curvature grow together (a quartic, a singular valley) the first term alone
  overstates the bias (2× on :math:`w^4/4`, ``tests/test_llc.py``). The flag fires when the pooled
  :math:`b_\epsilon` (mean over chains) exceeds :data:`STEP_BIAS_RELATIVE` of the pooled λ̂ and
  2 standard errors of that mean (one chain's excursion into a stiff region is not evidence); it
  then marks every chain. First order in ε for any smooth U; the deep-linear-network suite
  (``benchmarks/llc_accuracy.py``) checks it on singular losses, where
  :func:`tmsjax.llc.auto_calibrate` subtracts it. Otherwise (other samplers,
  batch-loss draws) the mean MALA acceptance estimate below the sampler's ``min_acceptance``
  (:data:`MIN_ACCEPTANCE` for SGLD) raises it. The acceptance is a poor proxy for the bias: with
  many directions it falls while each one's bias stays small (an accurate 41.1 vs 42 estimate had
  acceptance < 0.9), and on a minibatch it reads near 1 whatever ε.

  On minibatches the step's gradient carries noise of covariance :math:`\Sigma_m` (a batch's
  gradient about the full one), which raises the diffusion from :math:`\epsilon I` to
  :math:`\epsilon(I + D)`, :math:`D = \frac\epsilon4 n\beta^2\Sigma_m`, per step; for a
  quadratic U the stationary :math:`\mathbb{E}[U]` grows by exactly half the trace of D
  (:math:`\mathrm{tr}(HC) = \mathrm{tr}(I + D)` for the Lyapunov covariance C), so the estimate
  adds

  .. math:: \frac\epsilon8\,n\beta^2\,\mathbb{E}\lVert\nabla L_m - \nabla L_n\rVert^2,

  one fresh batch's gradient beside the full one at each draw (unbiased for
  :math:`\mathrm{tr}\,\Sigma_m`, whatever the minibatch rule). Also first order in ε, so the
  correction of :func:`tmsjax.llc.auto_calibrate` removes it with the rest; on the deep linear
  networks it was the +1 to +8% by which finite-data λ̂ exceeded the population one.
- ``localization_limited``: λ̂ depends on γ. For the localized posterior
  :math:`p_\gamma \propto e^{-U}`,
  :math:`\frac{d}{d\gamma}\mathbb{E}_\gamma[n\beta L_n] = -\frac12\,
  \mathrm{Cov}_\gamma(n\beta L_n, \lVert w - w^*\rVert^2)`, so
  :math:`d\hat\lambda/d\log\gamma = -\frac\gamma2\mathrm{Cov}(n\beta L_n,
  \lVert w - w^*\rVert^2)` comes from the draws of the chains themselves. The estimated change of
  λ̂ when γ is halved, :math:`-\log 2\; d\hat\lambda/d\log\gamma`, as a fraction of λ̂ (pooled
  over the chains: per-chain covariances are noisy; each chain's draws detrended first, so that a
  chain still relaxing from :math:`w^*` does not pass its transient for a covariance) is
  ``localization_sensitivity``; above
  :data:`LOCALIZATION_RELATIVE` every chain is flagged. Measured on a 5-layer deep linear network
  (8-8-8-8-8-8, rank 3, generic point): at γ = 7.85, 3.92, 1.96 the estimate read +6%, +10%,
  +17% per halving where λ̂ moved by +9% and +13% and the error was −18%, −11%, 0%: the
  first-order value understates the change, and an error of 15% shows up as a sensitivity of
  5-10%. Localization bias is invisible to the other
  flags (the chains are stationary, inside the basin, accepted) and grows with γ and with depth
  in deep networks. It is a first-order (in log γ) estimate: the whole bias can be larger.

A blown-up chain has no other flag (its numbers mean nothing). :func:`usable` is the one rule that
decides whether an estimate may be used; the probes and every experiment apply it. Strings are for
people only: :func:`verdict`, :func:`grid_verdicts` and :func:`summarize` describe the booleans and
are never parsed.

References:
  Lau, Furman, Wang, Murfet, Wei (2023), arXiv:2308.12108.
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301, §5 and App. K.
"""

import functools
import math
from typing import NamedTuple

import blackjax.diagnostics as blackjax_diagnostics
import jax
import jax.numpy as jnp
import numpy as np

from tmsjax.types import Array, Bool, Float

#: A chain escaped when more than this fraction of its draws lie below L_n(w*) (module docstring).
ESCAPE_FRACTION = 0.1
#: Drift needs a z-score above this. The standard error uses an estimated autocorrelation time,
#: itself noisy (and biased low when the chain's half is only a few autocorrelation times long),
#: so z has heavier tails than a normal's: 5 keeps false alarms rare (tests/test_llc.py measures
#: them on AR(1) chains with autocorrelation times up to a fifth of the half).
DRIFT_Z = 5.0
#: ...and a size above this fraction of the chain's λ̂ (or 0.1 absolute): drifts that matter.
DRIFT_RELATIVE = 0.1
#: Below this mean MALA acceptance the step is too large, where the bias is not estimated (module
#: docstring). At acceptance 0.9 the variance inflation εk/4 of the stiffest directions is a few
#: percent (measured on Gaussians in tests/test_llc.py).
MIN_ACCEPTANCE = 0.9
#: "Step size too large" when the estimated discretisation bias exceeds this fraction of λ̂.
STEP_BIAS_RELATIVE = 0.05
#: "Localization-limited" when halving γ is estimated to change λ̂ by more than this fraction.
LOCALIZATION_RELATIVE = 0.05

#: The per-chain problems: field of :class:`LLCDiagnostics` → the words :func:`verdict` uses.
PROBLEMS = {
    "non_finite": "non-finite",
    "escaped": "escaped",
    "drifting": "drifting",
    "low_acceptance": "step size too large",
    "localization_limited": "localization-limited",
}


class LLCDiagnostics(NamedTuple):
    r"""Per-chain health of an estimate (leading axes of a grid or of runs × checkpoints first).

    Attributes:
      non_finite: the chain blew up (a NaN/inf position, loss or λ̂).
      escaped: the chain left the basin of :math:`w^*` (module docstring); False when non-finite.
      drifting: the draws are not stationary; False when non-finite.
      low_acceptance: "step size too large": the estimated discretisation bias exceeds
        :data:`STEP_BIAS_RELATIVE` of λ̂, or (where it is not estimated) the mean MALA acceptance is
        below the sampler's threshold; False when non-finite.
      escape_fraction: fraction of draws with :math:`L_n(w) < L_n(w^*)`.
      drift: :math:`n\beta` × (second-half mean − first-half mean) of the draws, in λ units.
      drift_z: that difference over its standard error (autocorrelation included).
      acceptance: mean MALA acceptance estimate over the post-burn-in steps (NaN if not estimated).
      localization_limited: halving γ is estimated to move the pooled λ̂ by more than
        :data:`LOCALIZATION_RELATIVE` (the same for every chain of an estimate); False when
        non-finite. None in diagnostics built by hand (read as False).
      step_bias: the estimated discretisation bias of the chain's λ̂, as a fraction of it (NaN
        where not estimated).
      localization_sensitivity: the estimated relative change of λ̂ when γ is halved,
        :math:`(\hat\lambda(\gamma/2) - \hat\lambda(\gamma))/\hat\lambda`, pooled over the chains.
    """

    non_finite: Bool[Array, "... num_chains"]
    escaped: Bool[Array, "... num_chains"]
    drifting: Bool[Array, "... num_chains"]
    low_acceptance: Bool[Array, "... num_chains"]
    escape_fraction: Float[Array, "... num_chains"]
    drift: Float[Array, "... num_chains"]
    drift_z: Float[Array, "... num_chains"]
    acceptance: Float[Array, "... num_chains"]
    localization_limited: Bool[Array, "... num_chains"] | None = None
    step_bias: Float[Array, "... num_chains"] | None = None
    localization_sensitivity: Float[Array, "... num_chains"] | None = None


def integrated_time(draws: Float[Array, "... num"]) -> Float[Array, "..."]:
    r"""Integrated autocorrelation time of each row, by Geyer's initial monotone sequence estimator.

    .. math:: \hat\tau = -1 + 2\sum_{k=0}^{K} \tilde\Gamma_k, \qquad
              \Gamma_k = \hat\rho(2k) + \hat\rho(2k+1),

    with :math:`\hat\rho` the empirical autocorrelation, :math:`\tilde\Gamma_k` the running
    minimum of :math:`\Gamma_k` (monotone), and K the last index before the first non-positive
    :math:`\Gamma_k` (Geyer 1992, "Practical Markov chain Monte Carlo", Stat. Sci. 7): each row as
    one chain of :func:`blackjax.diagnostics.effective_sample_size`,
    :math:`\hat\tau = N/\mathrm{ESS}`. The variance of a row's mean is
    :math:`\hat\sigma^2\hat\tau/N`. Traceable, jit- and vmap-safe. Floored at 1 (an
    anticorrelated row is treated as independent: the conservative side for a drift test); 1 for a
    constant row.

    Args:
      draws: (..., num) rows of a chain's draws (num ≥ 2).

    Returns:
      (...,) the estimated τ of each row.
    """
    num = draws.shape[-1]
    rows = draws.reshape(-1, num)
    ess = jax.vmap(
        lambda row: blackjax_diagnostics.effective_sample_size(
            row[None], chain_axis=0, sample_axis=1
        )
    )(rows)
    # blackjax caps the ESS at N log10 N (Stan's rule for anticorrelated chains), a τ above 1
    # for N < 10: a capped row counts as independent, as the floor does for longer ones.
    capped = ess >= num * math.log10(num) * (1 - 1e-6)
    varies = (jnp.var(rows, axis=-1) > 0) & (ess > 0) & ~capped
    tau = jnp.where(varies, num / jnp.where(varies, ess, 1.0), 1.0)
    return jnp.maximum(tau, 1.0).reshape(draws.shape[:-1])


def _detrended(draws: Float[Array, "... num"]) -> Float[Array, "... num"]:
    """Each row minus its least-squares line (a trend is not autocorrelation)."""
    length = draws.shape[-1]
    time = jnp.arange(length, dtype=draws.dtype) - (length - 1) / 2
    centred = draws - jnp.mean(draws, axis=-1, keepdims=True)
    slope = jnp.sum(centred * time, axis=-1, keepdims=True) / jnp.sum(time**2)
    return centred - slope * time


def _mean_variance(draws: Float[Array, "num_chains num"]) -> Float[Array, " num_chains"]:
    r"""Variance of the mean of each chain's row, autocorrelation included: the larger of each
    chain's :math:`\hat\sigma^2\hat\tau/N` (on the detrended row, so that a drift does not pass
    for autocorrelation) and the variance of the row means across chains (independent chains: no
    autocorrelation to estimate, which guards against τ̂'s low bias on rows only a few τ long)."""
    num_chains, length = draws.shape[-2:]
    if length < 2:
        return jnp.zeros(draws.shape[:-1], draws.dtype)
    residual = _detrended(draws) if length > 2 else draws
    within = jnp.var(residual, axis=-1, ddof=min(2, length - 1)) * integrated_time(residual)
    within = within / length
    if num_chains < 2:
        return within
    between = jnp.var(jnp.mean(draws, axis=-1), axis=-1, ddof=1)
    return jnp.maximum(within, between)


def diagnose(
    draws,
    init_loss,
    nbeta,
    llc_per_chain,
    acceptance,
    is_finite,
    min_acceptance=MIN_ACCEPTANCE,
    *,
    distances=None,
    gradient_products=None,
    step_size=None,
    localization=None,
    curvature_traces=None,
) -> LLCDiagnostics:
    r"""The diagnostics of one estimate's chains (traceable; the core's last step).

    Args:
      draws: the draws' losses, (num_chains, num_draws).
      init_loss: :math:`L_n(w^*)`.
      nbeta: :math:`n\beta`.
      llc_per_chain: each chain's λ̂, (num_chains,).
      acceptance: each chain's mean acceptance estimate (NaN if not estimated), (num_chains,).
      is_finite: whether each chain's positions and losses stayed finite, (num_chains,).
      min_acceptance: the acceptance threshold where the bias is not estimated (the sampler's
        ``min_acceptance`` where it defines one: an exact sampler's acceptance measures mixing).
      distances: :math:`\lVert w - w^*\rVert^2` at each draw, (num_chains, num_draws); None: no
        localization check.
      gradient_products: :math:`\nabla(n\beta L_n)\cdot\nabla U` at each draw (full-data
        gradient), plus :math:`n\beta^2\lVert\nabla L_m - \nabla L_n\rVert^2` on minibatches,
        (num_chains, num_draws), for the SGLD discretisation-bias estimate; None (or NaN) where it
        does not apply: the acceptance rule decides then.
      step_size: ε (with `gradient_products`).
      localization: γ (with `distances`).
      curvature_traces: unbiased estimates of :math:`\Delta(n\beta L_n)` at each draw
        (Hutchinson; NaN at draws not traced), (num_chains, num_draws), for the non-Gaussian term
        of the bias estimate; None: that term is left out (exact for Gaussian posteriors only).
    """
    num_chains, num_draws = draws.shape[-2:]
    escape_fraction = jnp.mean(draws < init_loss, axis=-1)
    half = num_draws // 2
    if half >= 1:
        first, second = draws[:, :half], draws[:, num_draws - half :]
        difference = jnp.mean(second, -1) - jnp.mean(first, -1)
        # Both half-means get the second half's variance: a trend inside the first half would
        # inflate its own autocorrelation estimate and hide the very drift we test for.
        error = jnp.sqrt(2 * _mean_variance(second))
        drift = nbeta * difference
        # A zero error with a zero difference (a frozen chain) is no evidence of drift.
        frozen = jnp.where(difference == 0, 0.0, jnp.inf)
        drift_z = jnp.where(error > 0, difference / jnp.where(error > 0, error, 1.0), frozen)
    else:
        drift = drift_z = jnp.zeros(draws.shape[:-1], draws.dtype)
    # A NaN λ̂ (say a non-finite L_n(w*)) would pass every other test: it counts as a blow-up.
    is_finite = is_finite & jnp.all(jnp.isfinite(draws), axis=-1) & jnp.isfinite(llc_per_chain)
    scale = jnp.maximum(jnp.abs(llc_per_chain), 1.0)
    drifting = (jnp.abs(drift_z) > DRIFT_Z) & (jnp.abs(drift) > DRIFT_RELATIVE * scale)
    escaped = (escape_fraction > ESCAPE_FRACTION) | (llc_per_chain < 0)

    nan = jnp.full((num_chains,), jnp.nan, draws.dtype)
    # Both biases are judged on the pooled estimate (the mean over chains, whose standard error
    # comes from their spread): one chain's excursion into a stiff region, or its noisy covariance,
    # is not evidence. A flag needs the pooled value above the threshold and 2 standard errors
    # from 0; it then marks every chain (the estimate has the problem, not one chain).
    pooled_llc = jnp.maximum(jnp.abs(jnp.mean(llc_per_chain)), 1.0)

    def significant(per_chain, threshold):
        mean = jnp.mean(per_chain)
        if num_chains > 1:
            error = jnp.std(per_chain, ddof=1) / jnp.sqrt(num_chains)
            clear = jnp.abs(mean) > 2 * error
        else:
            clear = True
        return jnp.broadcast_to((jnp.abs(mean) > threshold) & clear, (num_chains,))

    step_bias = nan
    if gradient_products is not None and step_size is not None:
        # (ε/8)(E[∇f·∇U] − Cov(f, ΔU)), f = nβL_n (module docstring): the Cov term is ΔU's part;
        # the γ d in ΔU is a constant, so the trace of ∇²(nβL_n) stands for it.
        slope = jnp.mean(gradient_products, axis=-1)
        if curvature_traces is not None:
            # Over the draws where the trace was measured (NaN elsewhere: a dense chain traces
            # every k-th draw only, core.TRACE_FRACTION).
            traced = jnp.isfinite(curvature_traces)
            count = jnp.maximum(jnp.sum(traced, axis=-1, keepdims=True), 1)

            def traced_mean(x):
                return jnp.sum(jnp.where(traced, x, 0.0), axis=-1, keepdims=True) / count

            loss_dev = nbeta * (draws - traced_mean(draws))
            trace_dev = curvature_traces - traced_mean(curvature_traces)
            slope = slope - traced_mean(jnp.where(traced, loss_dev * trace_dev, 0.0))[..., 0]
        step_bias = step_size / 8 * slope / scale
        pooled_bias = step_size / 8 * slope / pooled_llc
        too_large = significant(pooled_bias, STEP_BIAS_RELATIVE)
    low_acceptance = jnp.where(
        jnp.isnan(step_bias),
        acceptance < min_acceptance,  # False for NaN (not estimated)
        too_large if gradient_products is not None and step_size is not None else False,
    )

    sensitivity = nan
    localization_limited = jnp.zeros((num_chains,), bool)
    if distances is not None and localization is not None and num_draws > 1:
        # Within-chain covariances (cross-chain differences of the means are not γ-effects), of
        # the detrended draws: a chain still relaxing from w* raises its loss and its distance
        # together, a covariance of the transient rather than of the posterior.
        loss_dev = nbeta * _detrended(draws)
        dist_dev = _detrended(distances)
        covariance = jnp.mean(loss_dev * dist_dev, axis=-1)
        # λ̂(γ/2) − λ̂(γ) ≈ −log 2 · dλ̂/dlog γ = log 2 · (γ/2) Cov, over the pooled λ̂.
        change = jnp.log(2.0) * 0.5 * localization * covariance / pooled_llc
        sensitivity = jnp.broadcast_to(jnp.mean(change), (num_chains,)).astype(draws.dtype)
        # No significance test here: the first-order value understates the bias (on the deep
        # linear networks λ̂(γ/2) − λ̂(γ) came out 1.3-1.6× it, and the error at γ 2-3× it), and the
        # per-chain covariances of 4 chains are too noisy to certify it.
        localization_limited = jnp.abs(sensitivity) > LOCALIZATION_RELATIVE
    return LLCDiagnostics(
        ~is_finite,
        is_finite & escaped,
        is_finite & drifting,
        is_finite & low_acceptance,
        escape_fraction,
        drift,
        drift_z,
        acceptance,
        is_finite & localization_limited,
        step_bias,
        sensitivity,
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
    - Drifting, a large step and localization-limited are not in the rule: they bias λ̂ (too short
      a chain, too large an ε, too large a γ) while it still measures the phase of :math:`w^*`,
      so they are warnings shown by :func:`verdict`, to be fixed by tuning
      (:func:`tmsjax.llc.calibrate`, :func:`tmsjax.llc.llc_grid`) rather than by dropping.

    Args:
      result: an :class:`~tmsjax.llc.LLCResult` with any leading axes (a single estimate, a grid,
        runs × checkpoints), or its :class:`LLCDiagnostics`.

    Returns:
      A boolean array over the leading axes (a 0-d array for a single estimate).
    """
    return jnp.all(usable_chains(result), axis=-1)


def all_clear(result, *, ignore: tuple[str, ...] = ()) -> Bool[Array, "..."]:
    """Whether no chain of each estimate has any problem, warnings included (the boolean twin of a
    verdict of "ok"). Stricter than :func:`usable`: for choosing settings (a grid's stable region),
    not for deciding which estimates to keep.

    Args:
      result: an :class:`~tmsjax.llc.LLCResult` (any leading axes), or its :class:`LLCDiagnostics`.
      ignore: fields of :data:`PROBLEMS` not to count (the calibration's stable region ignores
        ``"localization_limited"``: it picks the smallest stable γ anyway, and a γ-dependent λ̂ can
        still be flat in ε).
    """
    diagnostics = _diagnostics_of(result)
    unknown = set(ignore) - set(PROBLEMS)
    if unknown:
        raise ValueError(f"ignore: unknown problems {sorted(unknown)}; known: {list(PROBLEMS)}")
    names = [name for name in PROBLEMS if name not in ignore]
    problems = [jnp.any(_flag(diagnostics, name), axis=-1) for name in names]
    return ~functools.reduce(jnp.logical_or, problems)


def _flag(diagnostics: LLCDiagnostics, name: str):
    """A problem's booleans; a field left None (diagnostics built by hand) reads as all False."""
    value = getattr(diagnostics, name)
    if value is None:
        return jnp.zeros(jnp.shape(diagnostics.non_finite), bool)
    return jnp.asarray(value)


def _problem_masks(result) -> dict[str, np.ndarray]:
    diagnostics = _diagnostics_of(result)
    return {name: np.asarray(_flag(diagnostics, name), dtype=bool) for name in PROBLEMS}


def _amounts(result) -> dict[str, np.ndarray]:
    """The sizes verdicts quote: the estimated step bias and the change per halving of γ."""
    diagnostics = _diagnostics_of(result)
    shape = np.shape(diagnostics.non_finite)
    out = {}
    for flag, field in (
        ("low_acceptance", "step_bias"),
        ("localization_limited", "localization_sensitivity"),
    ):
        value = getattr(diagnostics, field)
        out[flag] = np.full(shape, np.nan) if value is None else np.asarray(value, dtype=float)
    return out


def problem_counts(result) -> dict[str, int]:
    """How many estimates of a batch have each problem (an estimate counts once one chain has it).

    Returns:
      ``{"total", "ok" (no problem in any chain), "non-finite", "escaped", "drifting",
      "step size too large", "localization-limited", "usable", "excluded" (not usable)}``,
      JSON-ready ints.
    """
    masks = {name: np.any(mask, axis=-1) for name, mask in _problem_masks(result).items()}
    is_usable = np.asarray(usable(result))
    counts = {"total": int(is_usable.size), "ok": int(np.sum(np.asarray(all_clear(result))))}
    counts.update({PROBLEMS[name]: int(np.sum(mask)) for name, mask in masks.items()})
    counts.update(usable=int(np.sum(is_usable)), excluded=int(np.sum(~is_usable)))
    return counts


def _verdict_of(masks: dict[str, np.ndarray], amounts: dict[str, np.ndarray]) -> str:
    parts = []
    for name, mask in masks.items():
        count = int(np.sum(mask))
        if not count:
            continue
        amount = amounts.get(name)
        flagged = amount[mask] if amount is not None else np.array([])
        flagged = flagged[np.isfinite(flagged)]
        if name == "localization_limited" and flagged.size:
            # The same pooled number for every chain: quote it once.
            parts.append(f"{PROBLEMS[name]} (λ̂ {100 * flagged[0]:+.0f}% per halving of γ)")
        elif name == "low_acceptance" and flagged.size:
            bias = 100 * float(np.mean(flagged))
            parts.append(f"{PROBLEMS[name]} (λ̂ biased about {bias:+.0f}%)")
        else:
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
    return _verdict_of(masks, _amounts(result))


def grid_verdicts(result) -> np.ndarray:
    """Verdict strings (object array) for every estimate of a batch (a grid, runs × checkpoints)."""
    masks = _problem_masks(result)
    amounts = _amounts(result)
    leading = masks["non_finite"].shape[:-1]
    out = np.empty(leading, dtype=object)
    for index in np.ndindex(leading):
        out[index] = _verdict_of(
            {name: mask[index] for name, mask in masks.items()},
            {name: amount[index] for name, amount in amounts.items()},
        )
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
        "step_bias": None
        if diagnostics.step_bias is None
        else np.asarray(diagnostics.step_bias).tolist(),
        "localization_sensitivity": None
        if diagnostics.localization_sensitivity is None
        else float(np.asarray(diagnostics.localization_sensitivity)[0]),
        "usable": bool(usable(result)),
        "verdict": verdict(result),
    }


__all__ = [
    "DRIFT_RELATIVE",
    "DRIFT_Z",
    "ESCAPE_FRACTION",
    "LLCDiagnostics",
    "LOCALIZATION_RELATIVE",
    "MIN_ACCEPTANCE",
    "STEP_BIAS_RELATIVE",
    "PROBLEMS",
    "all_clear",
    "diagnose",
    "grid_verdicts",
    "integrated_time",
    "problem_counts",
    "summarize",
    "usable",
    "usable_chains",
    "verdict",
]
