r"""Automatic calibration of the SGLD hyperparameters (ε, γ, nβ) of a λ̂ estimate.

One call, :func:`calibrate`, runs the grid ε × γ × nβ for the user's loss, centre and data in one
compiled program (:func:`~tmsjax.llc.llc_grid`), finds the *stable region* and returns recommended
:class:`~tmsjax.llc.LLCSettings` with the evidence (the grid, the stable cells, a sentence saying
why), so that choosing ε, γ and nβ is no longer the user's burden. A cheaper call without a grid,
:func:`auto_calibrate` (:func:`auto_settings` its open-loop half), sets ε from the curvature at the
centre and γ from a step budget, and reruns at a smaller ε while the run's own estimated step bias
is above target (below, "The cheap calibration").

**Why a grid, and what goes wrong off the stable region.** The estimate

.. math:: \hat\lambda = n\beta\,\big(\mathbb{E}_w[L_n(w)] - L_n(w^*)\big), \quad
          p(w) \propto e^{-n\beta L_n(w) - \frac\gamma2\lVert w - w^*\rVert^2}

is exact only for an exact sampler of :math:`p`. SGLD is its Euler discretisation: along a
direction of curvature :math:`k = n\beta a + \gamma` (a the loss's curvature) the chain's variance
is :math:`1/(k(1 - \epsilon k/4))` instead of :math:`1/k`, so **too large an ε biases λ̂ upward**
(by about εk/4 of that direction's share) and beyond εk = 4 the chain blows up. A chain relaxes in
about :math:`2/(\epsilon k)` steps along each direction, so **too small an ε does not equilibrate**
within ``num_steps`` along the softest directions, and λ̂ comes out low and drifting (the chains
start at :math:`w^*`, the bottom of the loss). **Too small a γ lets chains escape** the basin of
:math:`w^*` (or wander far along flat valleys of a singular loss, where the curvature across the
valley grows and ε becomes too large there), while **a larger γ biases λ̂ downward**: for a
quadratic :math:`K = \frac12 w^\top A w` the localized expectation is
:math:`\frac12\sum_i n\beta a_i/(n\beta a_i + \gamma)` instead of :math:`d/2`.

**The stable region.** A cell :math:`i` of the grid is *stable* when it and its two ε neighbours
at the same (γ, nβ) are

1. :func:`~tmsjax.llc.all_clear`: no chain blew up, escaped, drifted or had a mean MALA
   acceptance below :data:`~tmsjax.llc.MIN_ACCEPTANCE` (warnings included), and
2. flat in ε: each pair of the three agrees within :data:`FLAT_Z` combined standard errors,
   :math:`|\hat\lambda_a - \hat\lambda_b| \le z\sqrt{s_a^2 + s_b^2}` for
   :math:`(a, b) \in \{(i-1, i), (i, i+1), (i-1, i+1)\}`.

Why these three comparisons. Both biases move λ̂ the same way along ε: the discretisation bias
:math:`b(\epsilon) \approx c\,\epsilon` grows with ε and the relaxation deficit :math:`d(\epsilon)`
shrinks, so :math:`\hat\lambda_{i+1} - \hat\lambda_i = [b_{i+1} - b_i] + [d_i - d_{i+1}]` is a sum
of two non-negative terms plus noise, and agreement bounds each:

- *with the larger neighbour*: :math:`b_{i+1} - b_i = (r - 1)\,b_i` (:math:`r` the grid ratio), so
  the cell's own discretisation bias is at most :math:`z\sigma/(r - 1)`, about 0.9 combined
  standard errors on the default grid (:math:`r = 10^{1/2}`, z = 2). Agreement with a smaller
  neighbour alone would only give :math:`(r - 1)\,b_i/r \le z\sigma`: up to
  :math:`z\sigma\,r/(r-1) \approx 3\sigma` unseen, which is why the top cell of a plateau is not
  stable;
- *with the smaller neighbour*: λ̂ has stopped rising as ε grows towards the cell (the deficit
  left at :math:`\epsilon_{i-1}` is within the noise);
- *across the pair* (a factor :math:`r^2` in ε): a slow trend, each step hidden in the noise of
  its neighbours, still shows. Measured: in the singular valley of ``tests/test_calibrate.py``,
  chains of 4000 steps at γ = 1 give a λ̂ that creeps up with ε over two decades; a rule with the
  upper neighbour only picked cells 12-50% below the equilibrium value in 5 of 40 seeds, this rule
  in none.

3. relaxed: the chain spans its slowest relaxation time, :math:`1/(\epsilon\gamma) \le N`
   (:data:`RELAXATION_LIMIT` × ``num_steps``): a direction held only by the localization spreads
   (its variance reaches :math:`1 - e^{-1}` of the equilibrium :math:`1/\gamma`) within the chain.
   Without it a grid of small ε can be flat and wrong: every cell's soft directions are frozen at
   :math:`w^*` alike (measured: the TMS 5-gon on the exact potential at nβ = 10⁴, ε = 5e-7 gave
   λ̂ = 6.22 against 7, every check passed; ``tests/test_calibrate.py`` has a quadratic whose soft
   direction is held by γ, where every flat cell is 33% low). Such cells are named "not relaxed".

So a stable region needs three consecutive healthy cells, and the grid's smallest and largest ε
are never stable. The diagnostics catch the gross failures (blow-ups, low acceptance, visible
drift); the flatness test catches the bias they miss (a mean acceptance above 0.9 still allows
several percent of discretisation bias: about 10% at :math:`\epsilon k_{max} \approx 1` on the
quadratic of the tests, with every chain's acceptance above 0.9).

**The recommendation.** Among the stable cells:

- nβ: the grid value closest (in log) to the reference nβ (the settings' nβ, else n / log n) that
  has a stable cell; without a reference, the largest (nβ sets *what* is estimated, the finite-
  temperature λ̂; it is not a sampler knob, so the calibration keeps the user's choice where it can);
- γ: the **smallest** γ with a stable cell at that nβ: the least localization bias;
- ε: the **largest** stable ε at that (γ, nβ): the fastest mixing whose bias is bounded as above,
  one grid step below the top of the plateau (the top mixes :math:`r` times faster, but its bias is
  bounded only by about three standard errors, not one).

**The default grid.** ε is log-spaced over :data:`STEP_SIZE_DECADES` decades
(:data:`NUM_STEP_SIZES` values) down from :math:`\epsilon_{top} = c/k_{max}`, :data:`EPS_TOP` = c,
with :math:`k_{max} = n\beta_{max}\,|h|_{max} + \gamma_{max}` and :math:`|h|_{max}` the largest
absolute eigenvalue of :math:`\nabla^2 L_n(w^*)` from :data:`POWER_ITERATIONS` Hessian-vector
products (power iteration). At the top :math:`\epsilon k_{max} = 2` the stiffest direction's
variance is doubled, so the grid starts past the upper edge of the stable region and shows it;
three decades down every direction relaxes a thousand times more slowly, so the grid usually shows
the lower edge too. The curvature at :math:`w^*` understates the curvature the chains meet in
a singular model's valleys; the span of the grid absorbs that. γ defaults to
:data:`LOCALIZATION_FACTORS` × the settings' γ (1, 10, 100 for the default γ = 1: the values of
the paper protocol and of ``experiments/llc_grid.py``), nβ to the settings' nβ, else n / log n.

**The cheap calibration**, :func:`auto_settings` and :func:`auto_calibrate`: no grid, a rule and
a closed loop on the run itself. With :math:`k^*` the largest Hessian eigenvalue of :math:`L_n` at
:math:`w^*` (power iteration) and a step budget S (the steps the caller can afford per run):

- :math:`\epsilon = c/(n\beta k^* + \gamma_{min})`, c = :data:`STEP_FRACTION` = 0.2: the
  stiffest direction at :math:`w^*` moves a fifth of its posterior width per step (Euler variance
  inflation :math:`\epsilon k/4 = 5\%` there, removed by the correction below);
- :math:`\gamma = \max(\gamma_{min}, 1/(\epsilon S))`: the smallest localization whose relaxation
  time :math:`1/(\epsilon\gamma)` fits the budget (the least localization bias affordable);
  where γ is at its floor and the budget is longer than :math:`1/(\epsilon\gamma_{min})`, ε is
  lowered to :math:`1/(\gamma_{min}S)` (the rest of the budget buys a smaller step bias);
- :math:`N = 1/(\epsilon\gamma)` steps (rounded up to :data:`STEP_ROUNDING`, at least
  :data:`MIN_STEPS`), the first half burn-in, thinned to at most :data:`MAX_DRAWS` draws per chain.

The curvature at :math:`w^*` understates the curvature the chains meet: at small γ they spread
along a singular loss's flat directions into regions up to ~10× stiffer (measured on deep linear
networks), and λ̂ comes out high. :func:`auto_calibrate` therefore reads the run's own estimate of
its discretisation bias, :math:`b = (\epsilon/8)\,\mathbb{E}[\nabla(n\beta L_n)\cdot\nabla U]`
with its covariance and minibatch-noise terms (:mod:`tmsjax.llc.health`; first order in ε, exact
for a Gaussian at any stable ε), and returns
:math:`\hat\lambda - b` (:func:`corrected_llc`): a Richardson extrapolation to ε = 0 whose slope
comes from the same draws. Where b exceeds :data:`MAX_CORRECTION` of λ̂ (first order no longer
trusted) it reruns at a smaller ε, γ again from the budget, with the same number of steps: the same
compiled program (ε and γ are traced).

Ways of closing the loop, measured on the 32 deep-linear-network cases of
``benchmarks/llc_accuracy.py`` (the same step budgets):

- none (the raw λ̂, c = 0.1): median |error| 4.7%, max 23% (a 3-layer network at its singular
  point, +22% with b = 20%);
- rerun at :math:`\epsilon\cdot 0.05/b` while b > 5% (c = 0.1; γ from the budget, so larger):
  median 4.3%, max 19%, on a 5-layer network whose γ rose from 2.3 to 8.5 (localization bias,
  which the diagnostics do not see there: it was called "ok"), and a second run on 14 of 32
  cases. A smaller ε at a fixed budget trades discretisation bias for localization bias;
- the correction, c = 0.1, b from its first term only: median 4.9%, max 14% (what remains is the
  localization bias of the deep networks, downward);
- the correction with b's covariance term, c = 0.2 (a larger ε buys a smaller γ): population
  median 2.8%, max 9.2%; finite data median 5.8%, max 9.9% (minibatch gradient noise, which b did
  not see then, added 1-8% there); one run per case;
- the same with b's minibatch-noise term, a budget beyond the relaxation time spent on a smaller
  ε, and no minibatch acceptance estimate (the default): median 3.7% / 3.3% (population / finite
  data), max 10.0% / 13.3%, on a second draw of the suite 4.0% / 5.9%, max 12.6% / 10.5%; what
  is left is mostly the finite-nβ offset
  :math:`-(m-1)/\log n\beta` of the rank-1 networks (multiplicity m = 2, 3), which an exact
  sampler shows too.

A pilot run at a larger γ to rescale ε (tried first) sees fewer stiff regions than the real run
and under-corrects.

References:
  Lau, Furman, Wang, Murfet, Wei (2023), arXiv:2308.12108 (SGLD hyperparameters, localization).
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301, App. K.
"""

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from tmsjax.checks import check_positive_int
from tmsjax.llc.api import (
    DEFAULT_CELL_BATCH,
    LLCError,
    LLCGrid,
    _check_common,
    _check_loss,
    _check_nonnegative,
    _check_positive_values,
    _resolve_nbeta,
    _sampled,
    estimate_llc,
    llc_grid,
)
from tmsjax.llc.core import LLCResult, LossFn, default_minibatch
from tmsjax.llc.health import (
    all_clear,
    grid_verdicts,
    problem_counts,
    usable,
    verdict,
)
from tmsjax.llc.settings import LLCSettings
from tmsjax.sampling.sgld import SGLD
from tmsjax.types import PRNGKey, PyTree

#: Two ε cells agree when |Δλ̂| ≤ FLAT_Z × their combined standard error. With a handful of chains
#: the standard errors are themselves noisy (t-like tails): two equal cells then disagree in
#: roughly 5-10% of pairs, so a plateau cell (three comparisons) is lost now and then, which only
#: shrinks the region; a larger z would let more bias through (the bound zσ/(r − 1) of the module
#: docstring).
FLAT_Z = 2.0
#: The default ε grid: values, decades spanned, and εk at its top (k the stiffest curvature).
NUM_STEP_SIZES = 7
STEP_SIZE_DECADES = 3.0
EPS_TOP = 2.0
#: The default γ grid, as multiples of the settings' γ (of 1 when the settings' γ is 0).
LOCALIZATION_FACTORS = (1.0, 10.0, 100.0)
#: Problems the stable region does not count: a localization-limited cell can be flat in ε, and
#: the rule already takes the smallest stable γ; its verdict (and the reason) still says so.
STABILITY_IGNORES = ("localization_limited",)
#: Hessian-vector products of the power iteration for the largest curvature at the centre.
POWER_ITERATIONS = 20
#: A cell is relaxed when 1/(εγ) ≤ RELAXATION_LIMIT × num_steps: the slowest direction (held only by
#: γ) spreads within the chain. Not the post-burn-in length: on deep linear networks the directions
#: γ holds are symmetry orbits of the loss (λ is the same along them), and requiring them relaxed
#: after burn-in doubles γ at a fixed budget, which biased λ̂ from −11% to −18% (8-8-8-8-8-8
#: generic).
RELAXATION_LIMIT = 1.0

#: auto_settings: c in ε = c / (nβ k* + γ_min) (module docstring). 0.2 rather than 0.1: with the
#: bias removed (auto_calibrate), a larger ε buys a smaller γ at the same budget, and so less
#: localization bias (deep linear networks, 32 cases: max |error| 9.9% at 0.2, 14% at 0.1).
STEP_FRACTION = 0.2
#: auto_settings: γ never below this (in units where the weights are of order 1).
MIN_LOCALIZATION = 1.0
#: auto_settings: chains at least this long, their length rounded up to a multiple of STEP_ROUNDING
#: (so that centres of similar curvature share one compiled program).
MIN_STEPS = 2_000
STEP_ROUNDING = 1_000
#: auto_settings: the leading fraction of the steps discarded as burn-in.
BURNIN_FRACTION = 0.5
#: auto_settings: at most this many draws per chain (thinned): the health checks' FFTs stay cheap.
MAX_DRAWS = 1_000
#: auto_settings: power-iteration steps for k* (converged to ~1% on the deep linear networks).
AUTO_POWER_ITERATIONS = 50
#: auto_calibrate: at most this many runs (the first and up to two reruns at a smaller ε).
MAX_ROUNDS = 3
#: auto_calibrate: estimated step biases up to this fraction of λ̂ are removed at first order;
#: above it the run is repeated at a smaller ε. Measured on the deep linear networks
#: (benchmarks/llc_accuracy.py, minibatch noise included, two draws of the suite): corrections of
#: 20-33% left errors of −6% to +7%; a rerun at the same budget raises γ (12-16-16-16-16-12 finite
#: singular: b = 31.5% corrected to −0.1%, the rerun at 0.3 gave −7.5% at 2.1× the γ and twice
#: the time).
MAX_CORRECTION = 0.35


class CalibrationError(ValueError):
    """No cell of the calibration grid is stable; the message names the problems and their counts.

    Attributes:
      grid: the :class:`~tmsjax.llc.LLCGrid` that was run (the evidence, to plot or inspect).
    """

    def __init__(self, message: str, grid: LLCGrid | None = None):
        super().__init__(message)
        self.grid = grid


class Calibration(NamedTuple):
    r"""Recommended λ̂ settings and the evidence they rest on (:func:`calibrate`).

    Attributes:
      settings: the recommended :class:`~tmsjax.llc.LLCSettings`: the chosen ε, γ and nβ (explicit),
        everything else (chains, steps, burn-in, batch size, sampler) as given. Pass it on:
        ``estimate_llc(key, loss_fn, center, data, calibration.settings)``.
      grid: the :class:`~tmsjax.llc.LLCGrid` that was run, axes (ε, γ, nβ) sorted ascending.
      stable: bool, (len(ε), len(γ), len(nβ)): the stable region (module docstring).
      index: the chosen cell (i_ε, i_γ, i_nβ).
      curvature: :math:`|h|_{max}`, the largest absolute eigenvalue of :math:`\nabla^2 L_n(w^*)`
        (power iteration; a lower bound), from which the default ε grid was scaled.
      reason: one readable line: what was chosen and why.
    """

    settings: LLCSettings
    grid: LLCGrid
    stable: np.ndarray
    index: tuple[int, int, int]
    curvature: float
    reason: str

    @property
    def chosen(self) -> LLCResult:
        """The chosen cell's :class:`~tmsjax.llc.LLCResult` (its λ̂, standard error, diagnostics)."""
        return jax.tree.map(lambda x: x[self.index], self.grid.result)

    def figure(self, reference: float | None = None):
        """λ̂ ± se against ε, one line per γ and one panel per nβ; filled markers on stable cells,
        hollow elsewhere, the chosen cell ringed; `reference` (e.g. an exact λ) as a dashed line.

        Returns:
          A matplotlib Figure (matplotlib is imported here only: plotting is not numerics).
        """
        import matplotlib.pyplot as plt

        grid = self.grid
        value = np.asarray(grid.result.llc)
        error = np.asarray(grid.result.stderr)
        num_panels = len(grid.nbetas)
        figure, axes = plt.subplots(
            1, num_panels, figsize=(6.5 * num_panels, 4.5), squeeze=False, sharey=True
        )
        for m, axis in enumerate(axes[0]):
            for j, gamma in enumerate(grid.localizations):
                line = axis.errorbar(
                    grid.step_sizes,
                    value[:, j, m],
                    yerr=error[:, j, m],
                    capsize=3,
                    lw=1.2,
                    label=f"γ = {gamma:g}",
                )
                color = line[0].get_color()
                stable = self.stable[:, j, m]
                axis.scatter(
                    grid.step_sizes[stable], value[stable, j, m], color=color, s=40, zorder=3
                )
                axis.scatter(
                    grid.step_sizes[~stable],
                    value[~stable, j, m],
                    facecolor="white",
                    edgecolor=color,
                    s=40,
                    zorder=3,
                )
            if m == self.index[2]:
                i, j, _ = self.index
                axis.scatter(
                    grid.step_sizes[i],
                    value[i, j, m],
                    s=220,
                    facecolor="none",
                    edgecolor="k",
                    lw=2,
                    zorder=4,
                    label="chosen",
                )
            if reference is not None:
                label = f"reference {reference:.4g}"
                axis.axhline(reference, color="k", ls="--", lw=1, label=label)
            axis.set_xscale("log")
            axis.set_xlabel(f"{type(self.settings.sampler).__name__} step size ε")
            axis.set_title(f"nβ = {grid.nbetas[m]:.4g} (filled: stable)")
            axis.legend(fontsize=8)
        axes[0][0].set_ylabel(r"$\hat\lambda$")
        figure.tight_layout()
        return figure


# ----------------------------------------------------------------------------------------------
# The curvature at the centre


@functools.partial(jax.jit, static_argnames=("loss_fn", "num_iterations"))
def _curvature_jit(key, center, data, *, loss_fn, num_iterations):
    r"""(:math:`L(w^*)`, whether :math:`\nabla L(w^*)` is finite, :math:`|h|_{max}`).

    Power iteration :math:`v \leftarrow Hv/\lVert Hv\rVert` from a random unit vector; the returned
    :math:`\lVert Hv\rVert` of the last unit v is a lower bound on the largest |eigenvalue| that
    converges to it (a rough value suffices: the grid spans decades).
    """
    flat, unravel = ravel_pytree(center)

    def loss_of(x):
        return loss_fn(unravel(x), data)

    loss, grad = jax.value_and_grad(loss_of)(flat)

    def hvp(v):
        return jax.jvp(jax.grad(loss_of), (flat,), (v,))[1]

    def normalized(v):
        norm = jnp.linalg.norm(v)
        return v / jnp.where(norm > 0, norm, 1.0)  # a zero Hessian leaves v = 0 (curvature 0)

    start = normalized(jax.random.normal(key, flat.shape, flat.dtype))

    def power_step(v, _):
        return normalized(hvp(v)), None

    v, _ = jax.lax.scan(power_step, start, None, length=num_iterations)
    return loss, jnp.all(jnp.isfinite(grad)), jnp.linalg.norm(hvp(v))


def _curvature(
    key, arrays, loss, data, settings, minibatch_fn, num_iterations=POWER_ITERATIONS
) -> float:
    """|h|_max at the centre (on one minibatch in minibatch mode; settings None: the full data),
    after checking that the loss and its gradient are finite there."""
    batch = data
    if settings is not None and settings.batch_size is not None:
        batch = (minibatch_fn or default_minibatch)(key, data, settings.batch_size)
    value, grad_finite, top = _curvature_jit(
        key, arrays, batch, loss_fn=loss, num_iterations=num_iterations
    )
    if not np.isfinite(float(value)):
        raise ValueError(
            f"loss_fn(center, data) is {float(value)} at the centre: λ̂ needs a finite L_n(w*)"
        )
    if not bool(grad_finite):
        raise ValueError("the gradient of loss_fn at the centre is not finite: SGLD cannot start")
    top = float(top)
    if not np.isfinite(top):
        raise ValueError("the Hessian of loss_fn at the centre is not finite")
    return top


# ----------------------------------------------------------------------------------------------
# The rule


def _agree(grid: LLCGrid, gap: int, z: float) -> np.ndarray:
    """Whether ε cells i and i + gap (same γ, nβ) are both all clear and agree within z combined
    standard errors; (len(ε) − gap, len(γ), len(nβ)). NaN standard errors never agree."""
    value = np.asarray(grid.result.llc, dtype=float)
    error = np.asarray(grid.result.stderr, dtype=float)
    clear = np.asarray(all_clear(grid.result, ignore=STABILITY_IGNORES), dtype=bool)
    with np.errstate(invalid="ignore"):
        difference = np.abs(value[gap:] - value[:-gap])
        close = difference <= z * np.sqrt(error[gap:] ** 2 + error[:-gap] ** 2)
    return clear[gap:] & clear[:-gap] & close


def relaxed(grid: LLCGrid, settings: LLCSettings) -> np.ndarray:
    r"""The cells whose chains span their slowest relaxation time,
    :math:`1/(\epsilon\gamma) \le` :data:`RELAXATION_LIMIT` × ``settings.num_steps`` (module
    docstring); γ = 0 is not judged (no direction is held by the localization alone).

    Args:
      grid: an :class:`~tmsjax.llc.LLCGrid`.
      settings: the settings its chains ran with (their ``num_steps``).

    Returns:
      bool, (len(ε), len(γ), len(nβ)).
    """
    step_sizes = np.asarray(grid.step_sizes)[:, None, None]
    rate = step_sizes * np.asarray(grid.localizations)[None, :, None]
    # A relative tolerance: auto_settings puts 1/(εγ) exactly at num_steps when the budget binds.
    ok = (rate == 0) | (rate * RELAXATION_LIMIT * settings.num_steps >= 1 - 1e-9)
    return np.broadcast_to(ok, np.shape(grid.result.llc)).copy()


def stable_region(
    grid: LLCGrid, z: float = FLAT_Z, *, settings: LLCSettings | None = None
) -> np.ndarray:
    r"""The stable cells: cell i and its ε neighbours i − 1 and i + 1 (same γ, nβ) are all clear
    and agree pairwise within z combined standard errors,
    :math:`|\hat\lambda_a - \hat\lambda_b| \le z\sqrt{s_a^2 + s_b^2}` for each pair, and (given
    the settings) cell i is :func:`relaxed` (module docstring). The grid's smallest and largest ε
    are never stable.

    Args:
      grid: an :class:`~tmsjax.llc.LLCGrid` whose step sizes are sorted ascending.
      z: the agreement threshold (:data:`FLAT_Z`).
      settings: the settings the grid ran with; None skips the relaxation requirement (flatness
        and health only).

    Returns:
      bool, (len(ε), len(γ), len(nβ)).
    """
    stable = np.zeros(np.shape(grid.result.llc), dtype=bool)
    if len(grid.step_sizes) >= 3:
        neighbours = _agree(grid, 1, z)
        stable[1:-1] = neighbours[:-1] & neighbours[1:] & _agree(grid, 2, z)
    if settings is not None:
        stable &= relaxed(grid, settings)
    return stable


def choose_cell(
    grid: LLCGrid, stable: np.ndarray, reference_nbeta: float | None = None
) -> tuple[int, int, int]:
    """The recommended cell (i_ε, i_γ, i_nβ) of a grid with at least one stable cell: the nβ
    closest in log to `reference_nbeta` (None: the largest) among those with a stable cell, there
    the smallest γ with a stable cell, there the largest stable ε (module docstring).

    Args:
      grid: an :class:`~tmsjax.llc.LLCGrid` with every axis sorted ascending.
      stable: its stable region (:func:`stable_region`).
      reference_nbeta: the nβ to keep where the grid has it.
    """
    if not np.any(stable):
        raise ValueError("choose_cell needs at least one stable cell")
    candidates = np.flatnonzero(np.any(stable, axis=(0, 1)))
    if reference_nbeta is not None:
        distance = np.abs(np.log(grid.nbetas[candidates]) - np.log(reference_nbeta))
        m = int(candidates[np.argmin(distance)])
    else:
        m = int(candidates[-1])
    j = int(np.flatnonzero(np.any(stable[:, :, m], axis=0))[0])
    i = int(np.flatnonzero(stable[:, j, m])[-1])
    return i, j, m


def _no_stable_message(grid: LLCGrid, settings: LLCSettings) -> str:
    """Names the problems over the grid with their counts, and what to try."""
    counts = problem_counts(grid.result)
    total = counts["total"]
    is_relaxed = relaxed(grid, settings)
    counts["not relaxed"] = int(np.sum(~is_relaxed))
    names = ("non-finite", "step size too large", "drifting", "escaped", "not relaxed")
    found = sorted(((counts[name], name) for name in names if counts[name]), key=lambda c: -c[0])
    parts = [f"{count}/{total} cells '{name}'" for count, name in found]
    if counts["not relaxed"]:
        parts[[name for _, name in found].index("not relaxed")] += (
            f" (1/(εγ) above {RELAXATION_LIMIT:g} × num_steps = "
            f"{RELAXATION_LIMIT * settings.num_steps:g}: directions held by γ alone never spread)"
        )
    flat = stable_region(grid)
    if np.any(flat & ~is_relaxed):
        parts.append(
            f"{int(np.sum(flat & ~is_relaxed))} cells flat in ε and healthy but not relaxed "
            "(a flat λ̂ of frozen chains is not evidence)"
        )
    if counts["ok"]:
        parts.append(
            f"{counts['ok']}/{total} cells ok, but none relaxed with both ε neighbours ok and the "
            f"three agreeing within {FLAT_Z:g} combined standard errors"
        )
    diagnostics = grid.result.diagnostics
    blown = np.asarray(diagnostics.non_finite) | np.asarray(diagnostics.low_acceptance)
    too_large = np.any(blown, axis=-1)
    advice = []
    if np.all(too_large[0]):  # even the smallest ε: the grid never reaches below the upper edge
        advice.append("smaller step_sizes (even the smallest ε is too large)")
    if counts["drifting"]:
        advice.append("longer chains (num_steps, num_burnin) for the drift")
        if np.all(np.any(np.asarray(diagnostics.drifting), -1)[-1]):
            advice.append("larger step_sizes (even the largest ε drifts)")
    if counts["escaped"]:
        advice.append("larger localizations, or check that the centre is a local minimum")
    if counts["not relaxed"]:
        advice.append("longer chains (num_steps), larger step_sizes or larger localizations")
    if counts["ok"]:
        advice.append("more num_chains (smaller standard errors) or a finer step_sizes grid")
    nbetas = ", ".join(f"{b:.4g}" for b in grid.nbetas)
    gammas = ", ".join(f"{g:g}" for g in grid.localizations)
    return (
        f"no stable cell in the grid (ε {grid.step_sizes[0]:.3g}..{grid.step_sizes[-1]:.3g}, "
        f"γ [{gammas}], nβ [{nbetas}]): " + "; ".join(parts) + ". Try " + "; ".join(advice)
    )


def _reason(grid: LLCGrid, index: tuple[int, int, int], settings: LLCSettings) -> str:
    """What was chosen and why, in one line (for people)."""
    i, j, m = index
    is_relaxed = relaxed(grid, settings)
    value = np.asarray(grid.result.llc)
    error = np.asarray(grid.result.stderr)
    eps = grid.step_sizes

    def gap(a, b):
        return (value[b] - value[a]) / np.hypot(error[a], error[b])

    below, above = (i - 1, j, m), (i + 1, j, m)
    text = (
        f"ε = {eps[i]:.3g}, γ = {grid.localizations[j]:g}, nβ = {grid.nbetas[m]:.4g}: "
        f"λ̂ = {value[index]:.4g} ± {error[index]:.2g}, the largest stable ε at the smallest stable "
        f"γ (λ̂ moves by {gap(below, index):+.1f} se from ε {eps[i - 1]:.3g} and "
        f"{gap(index, above):+.1f} se to ε {eps[i + 1]:.3g})"
    )
    if j > 0:
        smaller = ", ".join(f"{g:g}" for g in grid.localizations[:j])
        text += f"; γ = {smaller}: no stable cell"
        if not np.any(is_relaxed[:, :j, m]):
            text += " (not relaxed: 1/(εγ) above the chain's num_steps)"
    if i + 2 < len(eps):
        beyond = (i + 2, j, m)
        verdict = grid_verdicts(grid.result)[beyond]
        if verdict == "ok":
            verdict = (
                f"λ̂ moves by {gap(above, beyond):+.1f} se from ε {eps[i + 1]:.3g} and "
                f"{gap(index, beyond):+.1f} se from ε {eps[i]:.3g}"
            )
        text += f"; ε {eps[i + 1]:.3g} is not stable (at ε {eps[i + 2]:.3g}: {verdict})"
    else:
        text += f"; ε {eps[i + 1]:.3g} is the grid's largest (larger step_sizes may allow more)"
    return text


# ----------------------------------------------------------------------------------------------
# The entry point


def _sorted_values(name, values, check) -> np.ndarray:
    return np.unique(np.atleast_1d(check(name, values)))


def calibrate(
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
) -> Calibration:
    r"""Recommends ε, γ and nβ for λ̂ of `loss_fn` at `center`, from one compiled grid.

    Runs :func:`~tmsjax.llc.llc_grid` over ε × γ × nβ (the defaults scaled to the problem, see the
    module docstring), finds the stable region (all clear, λ̂ flat in ε, relaxed) and picks, at the
    reference nβ, the smallest stable γ (least localization bias) and there the largest stable ε
    (the fastest mixing whose λ̂ agrees with both ε neighbours, which bounds its bias).

    Args:
      key: PRNG key (split between the curvature estimate and the grid).
      loss_fn, center, data, num_data, minibatch_fn, cell_batch: as in
        :func:`~tmsjax.llc.llc_grid`.
      settings: chains, steps, burn-in, batch size and sampler of every cell, kept in the
        recommendation; its ε is unused, its γ scales the default γ grid, its nβ (else n / log n)
        is the default nβ. At least 2 chains (flatness compares standard errors); 8 or more make
        the standard errors, and so the flatness test, trustworthy.
      step_sizes: ε values (at least 3); default :data:`NUM_STEP_SIZES` values over
        :data:`STEP_SIZE_DECADES` decades down from :data:`EPS_TOP` / (nβ |h|_max + γ_max).
      localizations: γ values; default :data:`LOCALIZATION_FACTORS` × the settings' γ.
      nbetas: nβ values; default the settings' nβ, else n / log n.

    Returns:
      A :class:`Calibration`: ``settings`` to pass to :func:`~tmsjax.llc.estimate_llc`, the grid,
      the stable region, the chosen index, the curvature, a reason; ``figure()`` plots them.

    Raises:
      ValueError: naming the bad argument; a loss or gradient that is not finite at the centre; no
        scale for the default ε grid (zero curvature and γ = 0).
      CalibrationError: (a ValueError) no stable cell; the message counts each problem over the
        grid ("not relaxed" included) and says what to try, and ``error.grid`` holds the grid.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from tmsjax.llc import LLCSettings, estimate_llc
      >>> def loss_fn(w, data):                 # K = ‖w‖² in 2 dimensions: λ = 1
      ...     return jnp.sum(w**2)
      >>> settings = LLCSettings(nbeta=100.0, num_chains=8, num_steps=4000, num_burnin=1000)
      >>> calibration = calibrate(jax.random.key(0), loss_fn, jnp.zeros(2), settings=settings)
      >>> calibration.settings.nbeta, calibration.stable.shape     # 7 ε × 3 γ × 1 nβ
      (100.0, (7, 3, 1))
      >>> 0.8 < float(calibration.chosen.llc) < 1.2
      True
      >>> chosen = calibration.settings               # pass it on
      >>> result = estimate_llc(jax.random.key(1), loss_fn, jnp.zeros(2), settings=chosen)
    """
    _check_common(loss_fn, settings, data)
    if settings.num_chains < 2:
        raise ValueError(
            f"calibrate compares standard errors across chains: settings.num_chains must be >= 2 "
            f"(4-8 recommended), got {settings.num_chains}"
        )
    arrays, loss = _sampled(center, loss_fn, "center")
    _check_loss(loss, arrays, data, "center", settings.batch_size, minibatch_fn)
    reference_nbeta = None
    if nbetas is None:
        nbetas = _resolve_nbeta(settings.nbeta, num_data, data)
    else:
        try:  # the user's own nβ (or n / log n) is the one to keep, when the grid has it
            reference_nbeta = float(_resolve_nbeta(settings.nbeta, num_data, data))
        except (ValueError, TypeError):
            reference_nbeta = None
    nbetas = _sorted_values("nbetas", nbetas, _check_positive_values)
    if reference_nbeta is None and len(nbetas) == 1:
        reference_nbeta = float(nbetas[0])
    if localizations is None:
        scale = settings.localization if settings.localization > 0 else 1.0
        localizations = scale * np.asarray(LOCALIZATION_FACTORS)
    localizations = _sorted_values("localizations", localizations, _check_nonnegative)

    key_curvature, key_grid = jax.random.split(key)
    curvature = _curvature(key_curvature, arrays, loss, data, settings, minibatch_fn)
    if step_sizes is None:
        stiffest = float(nbetas[-1]) * curvature + float(localizations[-1])
        if not stiffest > 0:
            raise ValueError(
                "no scale for the default step_sizes: the Hessian of the loss at the centre is "
                "zero and every localization is 0; pass step_sizes (or a localization > 0)"
            )
        top = EPS_TOP / stiffest
        step_sizes = top * np.logspace(-STEP_SIZE_DECADES, 0.0, NUM_STEP_SIZES)
    step_sizes = _sorted_values("step_sizes", step_sizes, _check_positive_values)
    if len(step_sizes) < 3:
        raise ValueError(
            "step_sizes needs at least 3 distinct values (a cell is checked against both ε "
            f"neighbours), got {step_sizes}"
        )

    grid = llc_grid(
        key_grid,
        loss_fn,
        center,
        data,
        settings,
        step_sizes=step_sizes,
        localizations=localizations,
        nbetas=nbetas,
        num_data=num_data,
        minibatch_fn=minibatch_fn,
        cell_batch=cell_batch,
    )
    stable = stable_region(grid, settings=settings)
    if not np.any(stable):
        raise CalibrationError(_no_stable_message(grid, settings), grid)
    index = choose_cell(grid, stable, reference_nbeta)
    i, j, m = index
    chosen = settings.replace(
        step_size=float(grid.step_sizes[i]),
        localization=float(grid.localizations[j]),
        nbeta=float(grid.nbetas[m]),
    )
    return Calibration(chosen, grid, stable, index, curvature, _reason(grid, index, settings))


# ----------------------------------------------------------------------------------------------
# The cheap calibration: a rule from the curvature and a step budget, and a closed loop on the run


def _auto_rule(
    step_size: float, nbeta: float, budget: int, min_localization: float, settings: LLCSettings
) -> LLCSettings:
    """γ from the budget and the chain from the relaxation time, at a given ε, which a budget
    beyond that relaxation time lowers (module docstring)."""
    localization = max(min_localization, 1.0 / (step_size * budget))
    # γ at its floor with steps to spare: a smaller ε in the same budget, less bias to correct.
    step_size = min(step_size, 1.0 / (localization * budget))
    relaxation = 1.0 / (step_size * localization)
    # Rounded up (a hair of slack for float error), so that centres of similar curvature share one
    # compiled program; never past the budget, never below MIN_STEPS.
    rounded = math.ceil(relaxation / STEP_ROUNDING - 1e-6) * STEP_ROUNDING
    num_steps = max(MIN_STEPS, min(budget, rounded))
    num_burnin = int(num_steps * BURNIN_FRACTION)
    thinning = max(1, (num_steps - num_burnin) // MAX_DRAWS)
    sampler = settings.sampler
    estimated = settings.batch_size is not None and settings.draw_loss == "full"
    if isinstance(sampler, SGLD) and estimated:
        # The step bias is estimated at the draws (full data), so the acceptance estimate, a second
        # minibatch gradient every step, would judge nothing: off, the step costs half.
        sampler = dataclasses.replace(sampler, estimate_acceptance=False)
    return settings.replace(
        sampler=sampler,
        step_size=step_size,
        localization=localization,
        nbeta=nbeta,
        num_steps=num_steps,
        num_burnin=num_burnin,
        thinning=thinning,
        trace_curvature=True,  # the step-bias estimate's covariance term, for the correction
    )


def _auto_start(
    key, loss_fn, center, data, settings, step_budget, num_data, step_fraction, min_localization
):
    """(settings, k*) of :func:`auto_settings`, its arguments checked."""
    _check_common(loss_fn, settings, data)
    budget = check_positive_int("step_budget", step_budget)
    if budget < MIN_STEPS:
        raise ValueError(f"step_budget must be at least MIN_STEPS = {MIN_STEPS}, got {budget}")
    step_fraction = float(_check_positive_values("step_fraction", step_fraction))
    min_localization = float(_check_positive_values("min_localization", min_localization))
    arrays, loss = _sampled(center, loss_fn, "center")
    _check_loss(loss, arrays, data, "center")
    nbeta = float(_resolve_nbeta(settings.nbeta, num_data, data))
    # The full data's Hessian (not a minibatch's): the curvature of the nβ L_n the chains sample.
    curvature = _curvature(
        key, arrays, loss, data, None, None, num_iterations=AUTO_POWER_ITERATIONS
    )
    step_size = step_fraction / (nbeta * curvature + min_localization)
    return _auto_rule(step_size, nbeta, budget, min_localization, settings), curvature


def auto_settings(
    key: PRNGKey,
    loss_fn: LossFn,
    center: PyTree,
    data: Any = None,
    settings: LLCSettings = LLCSettings(),
    *,
    step_budget: int,
    num_data: int | None = None,
    step_fraction: float = STEP_FRACTION,
    min_localization: float = MIN_LOCALIZATION,
) -> LLCSettings:
    r"""Settings for λ̂ from the curvature at the centre and a step budget (no sampling).

    With :math:`k^*` the largest Hessian eigenvalue of :math:`L_n` at :math:`w^*`
    (:data:`AUTO_POWER_ITERATIONS` Hessian-vector products on the full data) and S the budget:

    .. math:: \epsilon_0 = \frac{c}{n\beta k^* + \gamma_{min}}, \quad
              \gamma = \max\Big(\gamma_{min}, \frac{1}{\epsilon_0 S}\Big), \quad
              \epsilon = \min\Big(\epsilon_0, \frac{1}{\gamma S}\Big), \quad
              N = \Big\lceil \frac{1}{\epsilon\gamma} \Big\rceil,

    N rounded up to :data:`STEP_ROUNDING` and kept in [:data:`MIN_STEPS`, S], the first
    :data:`BURNIN_FRACTION` burn-in, thinned to at most :data:`MAX_DRAWS` draws per chain. The
    open-loop half of :func:`auto_calibrate`, which also checks the run's discretisation bias.

    Args:
      key: PRNG key (the power iteration's start).
      loss_fn, center, data, num_data: as in :func:`~tmsjax.llc.estimate_llc`.
      settings: chains, batch size, draw loss and sampler, kept; its nβ (else n / log n) is kept
        explicit; ε, γ, steps, burn-in and thinning are replaced, and ``trace_curvature`` set
        (the full step-bias estimate, which :func:`auto_calibrate` subtracts). On minibatches
        with full-data draws, SGLD's acceptance estimate is switched off (the estimated step bias
        judges the step there; the acceptance would cost a second gradient every step).
      step_budget: the most steps per chain the caller affords (≥ :data:`MIN_STEPS`): a larger
        budget buys a smaller γ (less localization bias), and once γ is at its floor a smaller ε
        (less step bias).
      step_fraction: c (:data:`STEP_FRACTION`).
      min_localization: :math:`\gamma_{min}` (:data:`MIN_LOCALIZATION`).

    Returns:
      :class:`~tmsjax.llc.LLCSettings` to pass to :func:`~tmsjax.llc.estimate_llc`.

    Raises:
      ValueError: naming the bad argument; a loss or gradient that is not finite at the centre.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> def loss_fn(w, data):                 # K = ½(w₁² + 100 w₂²): k* = 100
      ...     return 0.5 * (w[0] ** 2 + 100 * w[1] ** 2)
      >>> settings = auto_settings(jax.random.key(0), loss_fn, jnp.zeros(2),
      ...                          settings=LLCSettings(nbeta=10.0), step_budget=10_000)
      >>> round(settings.step_size * 1001, 3), settings.localization, settings.num_steps
      (0.1, 1.0, 10000)
    """
    chosen, _ = _auto_start(
        key, loss_fn, center, data, settings, step_budget, num_data, step_fraction,
        min_localization,
    )  # fmt: skip
    return chosen


class AutoCalibration(NamedTuple):
    r"""The automatic calibration's answer (:func:`auto_calibrate`): the estimate, the settings and
    run it came from, and the evidence.

    Attributes:
      llc: λ̂ less its estimated discretisation bias (:func:`corrected_llc`): the estimate to use.
      stderr: its standard error (spread of the per-chain corrected estimates).
      step_bias: the estimated bias that was removed, as a fraction of the raw λ̂ (NaN where the
        sampler does not estimate it: then ``llc`` is the raw λ̂).
      settings: the settings of the last run (pass them to :func:`~tmsjax.llc.estimate_llc` to
        repeat it).
      result: that run's raw :class:`~tmsjax.llc.LLCResult` (its ``llc`` is not corrected).
      curvature: :math:`k^*`, the largest Hessian eigenvalue of :math:`L_n` at the centre.
      rounds: one dict per run: ``step_size``, ``localization``, ``llc`` (raw), ``stderr``,
        ``step_bias`` (pooled, :func:`pooled_step_bias`) and ``step_bias_stderr``.
      reason: one readable line: what was run and why it stopped.
      max_correction: the largest estimated bias a correction is trusted with (see ``verdict``).
    """

    llc: float
    stderr: float
    step_bias: float
    settings: LLCSettings
    result: LLCResult
    curvature: float
    rounds: tuple[dict, ...]
    reason: str
    max_correction: float = MAX_CORRECTION

    @property
    def verdict(self) -> str:
        """The verdict of the corrected estimate: the run's problems, except that "step size too
        large" means an estimated bias above ``max_correction`` (too large to remove at first
        order), not above :data:`~tmsjax.llc.STEP_BIAS_RELATIVE` (removed by the correction)."""
        diagnostics = self.result.diagnostics
        if np.isfinite(self.step_bias):
            too_large = jnp.full(
                jnp.shape(diagnostics.non_finite), self.step_bias > self.max_correction
            )
            diagnostics = diagnostics._replace(low_acceptance=too_large & ~diagnostics.non_finite)
        return verdict(diagnostics)


def pooled_step_bias(result: LLCResult) -> tuple[float, float]:
    r"""The estimated discretisation bias of the pooled λ̂, as a fraction of it, and its standard
    error: :math:`\frac{\epsilon}{8}\,\overline{\mathbb{E}[\nabla(n\beta L_n)\cdot\nabla U]}
    / \hat\lambda` averaged over the chains (:mod:`tmsjax.llc.health`); NaN where not estimated.
    """
    absolute = _absolute_bias(result)
    if absolute.ndim != 1 or not np.all(np.isfinite(absolute)):
        return float("nan"), float("nan")
    scale = max(abs(float(np.mean(np.asarray(result.llc_per_chain)))), 1.0)
    error = np.std(absolute, ddof=1) / np.sqrt(len(absolute)) if len(absolute) > 1 else np.nan
    return float(np.mean(absolute) / scale), float(error / scale)


def _absolute_bias(result: LLCResult) -> np.ndarray:
    """Each chain's estimated bias in λ units (leading axes kept); NaN where not estimated."""
    per_chain = np.asarray(result.diagnostics.step_bias, dtype=float)
    # health.diagnose divides each chain's bias by max(|λ̂_chain|, 1): undo it.
    return per_chain * np.maximum(np.abs(np.asarray(result.llc_per_chain, dtype=float)), 1.0)


def corrected_llc(result: LLCResult) -> tuple[Any, Any]:
    r"""λ̂ less its estimated discretisation bias, and its standard error.

    .. math:: \hat\lambda_c = \hat\lambda - \frac{\epsilon}{8}\Big(
              \mathbb{E}\big[\nabla(n\beta L_n)\cdot\nabla U\big]
              - \mathrm{Cov}\big(n\beta L_n, \Delta(n\beta L_n)\big)
              + n\beta^2\,\mathbb{E}\lVert\nabla L_m - \nabla L_n\rVert^2\Big),
              \qquad U = n\beta L_n + \frac\gamma2\lVert w - w^*\rVert^2,

    per chain (over its draws, full-data gradients, the Laplacian by Hutchinson), pooled over
    chains; the standard error is the spread of the per-chain :math:`\hat\lambda_c`. The bias term
    is the first order in ε of the Euler chain's invariant measure (:mod:`tmsjax.llc.health`): a
    Richardson extrapolation to ε = 0 whose slope comes from the run itself instead of a second
    run at ε/2. For a Gaussian posterior it is exact at any stable ε: along a direction of
    curvature :math:`k = n\beta a + \gamma` the Euler chain's variance is
    :math:`v = 1/(k(1 - \epsilon k/4))`, so the bias of :math:`\mathbb{E}[n\beta a w^2/2]` is
    :math:`\frac{n\beta a}{2}(v - \frac1k) = \frac{\epsilon n\beta a}{8(1 - \epsilon k/4)}`, and the
    estimate is :math:`\frac\epsilon8 n\beta a\,k\,v`, the same number. Beyond Gaussians it leaves
    an O(ε²) remainder (``tests/test_llc.py``: a quartic). The last term is the minibatch
    gradient noise's bias (L_m a batch's loss; zero on the full batch; :mod:`tmsjax.llc.health`),
    exact to first order on a quadratic (``tests/test_llc.py``). One
    Hutchinson probe per draw makes the covariance term noisy in many dimensions (the standard
    error, which includes it, was ±4-5% of λ̂ on a 10⁴-parameter network, ±1.3% with the first term
    alone). The raw λ̂ (NaN bias) where the sampler does not estimate the bias (not plain SGLD, or
    batch-loss draws).

    Args:
      result: an :class:`~tmsjax.llc.LLCResult`, single or with leading axes (a grid, runs ×
        checkpoints from :func:`~tmsjax.llc.llc_along_training`); each estimate is corrected
        where all its chains carry a bias estimate, else left raw.

    Returns:
      (λ̂_c, its standard error): floats for a single estimate, else arrays over the leading axes.
    """
    per_chain = np.asarray(result.llc_per_chain, dtype=float)
    absolute = _absolute_bias(result)
    estimated = np.all(np.isfinite(absolute), axis=-1, keepdims=True)
    per_chain = per_chain - np.where(estimated, absolute, 0.0)
    num_chains = per_chain.shape[-1]
    mean = np.mean(per_chain, axis=-1)
    if num_chains > 1:
        error = np.std(per_chain, axis=-1, ddof=1) / np.sqrt(num_chains)
    else:
        error = np.full(mean.shape, np.nan)
    if mean.ndim == 0:
        return float(mean), float(error)
    return mean, error


def auto_calibrate(
    key: PRNGKey,
    loss_fn: LossFn,
    center: PyTree,
    data: Any = None,
    settings: LLCSettings = LLCSettings(),
    *,
    step_budget: int,
    num_data: int | None = None,
    minibatch_fn: Callable | None = None,
    max_correction: float = MAX_CORRECTION,
    max_rounds: int = MAX_ROUNDS,
    step_fraction: float = STEP_FRACTION,
    min_localization: float = MIN_LOCALIZATION,
) -> AutoCalibration:
    r"""λ̂ at automatically chosen settings, corrected for its estimated discretisation bias.

    Starts from :func:`auto_settings`, runs :func:`~tmsjax.llc.estimate_llc` and removes the run's
    own estimate of its discretisation bias (:func:`corrected_llc`). The correction is first order
    in ε: while the estimated bias b (:func:`pooled_step_bias`) exceeds `max_correction` (and two
    of its standard errors), and fewer than `max_rounds` runs were made, it runs again at

    .. math:: \epsilon \leftarrow \epsilon\,\frac{b_{max}/2}{b}, \qquad
              \gamma \leftarrow \max\Big(\gamma_{min}, \frac{1}{\epsilon N}\Big)

    with the same N, burn-in and thinning (the same compiled program: ε and γ are traced). A run
    that is not usable (a chain blew up or escaped) is rerun at a quarter of its ε.

    Why correct rather than shrink ε until the bias is small: at a fixed step budget a smaller ε
    needs a larger γ, whose localization bias the diagnostics do not see on deep networks. Measured
    on the deep linear networks (``benchmarks/llc_accuracy.py``, 32 cases): shrinking ε until
    b ≤ 5% left a maximum |error| of 19% (a 5-layer network at γ = 8.5, called "ok") and cost a
    second run on 14 cases; the correction, one run on 31 cases, a maximum of 9.9% (module
    docstring).

    Args:
      key: PRNG key (split between the power iteration and the runs).
      loss_fn, center, data, num_data, minibatch_fn: as in :func:`~tmsjax.llc.estimate_llc`.
      settings, step_budget, step_fraction, min_localization: as in :func:`auto_settings`.
      max_correction: the largest estimated bias, as a fraction of λ̂, that is removed without a
        rerun (:data:`MAX_CORRECTION`); above it the verdict says "step size too large".
      max_rounds: at most this many runs (:data:`MAX_ROUNDS`); each costs one run of N steps.

    Returns:
      An :class:`AutoCalibration`: ``llc`` ± ``stderr`` the corrected estimate, ``verdict`` its
      health, ``result`` and ``settings`` the last run.

    Raises:
      ValueError: naming the bad argument; a loss or gradient that is not finite at the centre.
      LLCError: no usable run within `max_rounds`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> def loss_fn(w, data):                 # K = ½(w₁² + 100 w₂²): λ = 1
      ...     return 0.5 * (w[0] ** 2 + 100 * w[1] ** 2)
      >>> found = auto_calibrate(jax.random.key(0), loss_fn, jnp.zeros(2),
      ...                        settings=LLCSettings(nbeta=1000.0), step_budget=20_000)
      >>> abs(found.llc - 1.0) < 0.1, found.verdict, len(found.rounds)
      (True, 'ok', 1)
    """
    max_rounds = check_positive_int("max_rounds", max_rounds)
    max_correction = float(_check_positive_values("max_correction", max_correction))
    key_curvature, key_runs = jax.random.split(key)
    current, curvature = _auto_start(
        key_curvature, loss_fn, center, data, settings, step_budget, num_data, step_fraction,
        min_localization,
    )  # fmt: skip
    rounds = []
    for round_index in range(max_rounds):
        result = estimate_llc(
            jax.random.fold_in(key_runs, round_index),
            loss_fn,
            center,
            data,
            current,
            num_data=num_data,
            minibatch_fn=minibatch_fn,
            on_failure="return",
        )
        bias, bias_error = pooled_step_bias(result)
        rounds.append(
            dict(
                step_size=current.step_size,
                localization=current.localization,
                llc=float(result.llc),
                stderr=float(result.stderr),
                step_bias=bias,
                step_bias_stderr=bias_error,
            )
        )
        if not bool(usable(result)):
            factor = 0.25
        elif np.isfinite(bias) and bias > max_correction and not bias <= 2 * bias_error:
            factor = 0.5 * max_correction / bias
        else:
            break
        if round_index + 1 == max_rounds:
            break
        # Same num_steps (the same program); γ again from the chain length, at least γ_min.
        step_size = current.step_size * factor
        localization = max(min_localization, 1.0 / (step_size * current.num_steps))
        current = current.replace(step_size=step_size, localization=localization)
    if not bool(usable(result)):
        raise LLCError(
            f"auto_calibrate: no usable λ̂ in {len(rounds)} runs (last: {verdict(result)} at "
            f"step_size={current.step_size:g}, localization={current.localization:g}); check "
            "that the centre is a local minimum, or raise step_budget"
        )
    llc, stderr = corrected_llc(result)
    bias = rounds[-1]["step_bias"]
    reason = (
        f"k* = {curvature:.4g}; ε = {current.step_size:.3g}, γ = {current.localization:.3g}, "
        f"{current.num_steps} steps: λ̂ = {rounds[-1]['llc']:.4g}"
    )
    if np.isfinite(bias):
        reason += f", less its estimated step bias {100 * bias:+.1f}%: {llc:.4g} ± {stderr:.2g}"
    if len(rounds) > 1:
        history = ", ".join(
            f"ε {r['step_size']:.3g} → λ̂ {r['llc']:.4g} (bias {100 * r['step_bias']:+.1f}%)"
            for r in rounds[:-1]
        )
        reason += f"; after {history}"
    return AutoCalibration(
        llc, stderr, bias, current, result, curvature, tuple(rounds), reason, max_correction
    )


__all__ = [
    "AUTO_POWER_ITERATIONS",
    "BURNIN_FRACTION",
    "EPS_TOP",
    "FLAT_Z",
    "LOCALIZATION_FACTORS",
    "MAX_DRAWS",
    "MAX_CORRECTION",
    "MAX_ROUNDS",
    "MIN_LOCALIZATION",
    "MIN_STEPS",
    "NUM_STEP_SIZES",
    "POWER_ITERATIONS",
    "RELAXATION_LIMIT",
    "STEP_FRACTION",
    "STEP_ROUNDING",
    "STEP_SIZE_DECADES",
    "AutoCalibration",
    "Calibration",
    "CalibrationError",
    "auto_calibrate",
    "auto_settings",
    "calibrate",
    "choose_cell",
    "corrected_llc",
    "pooled_step_bias",
    "relaxed",
    "stable_region",
]
