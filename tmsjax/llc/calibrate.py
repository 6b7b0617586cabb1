r"""Automatic calibration of the SGLD hyperparameters (ε, γ, nβ) of a λ̂ estimate.

One call, :func:`calibrate`, runs the grid ε × γ × nβ for the user's loss, centre and data in one
compiled program (:func:`~tmsjax.llc.llc_grid`), finds the *stable region* and returns recommended
:class:`~tmsjax.llc.LLCSettings` with the evidence (the grid, the stable cells, a sentence saying
why), so that choosing ε, γ and nβ is no longer the user's burden.

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

References:
  Lau, Furman, Wang, Murfet, Wei (2023), arXiv:2308.12108 (SGLD hyperparameters, localization).
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301, App. K.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from tmsjax.llc.api import (
    DEFAULT_CELL_BATCH,
    LLCGrid,
    _check_common,
    _check_loss,
    _check_nonnegative,
    _check_positive_values,
    _resolve_nbeta,
    _sampled,
    llc_grid,
)
from tmsjax.llc.core import LLCResult, LossFn, default_minibatch
from tmsjax.llc.health import all_clear, grid_verdicts, problem_counts
from tmsjax.llc.settings import LLCSettings
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


def _curvature(key, arrays, loss, data, settings, minibatch_fn) -> float:
    """|h|_max at the centre (on one minibatch in minibatch mode), after checking that the loss and
    its gradient are finite there."""
    batch = data
    if settings.batch_size is not None:
        batch = (minibatch_fn or default_minibatch)(key, data, settings.batch_size)
    value, grad_finite, top = _curvature_jit(
        key, arrays, batch, loss_fn=loss, num_iterations=POWER_ITERATIONS
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


def stable_region(grid: LLCGrid, z: float = FLAT_Z) -> np.ndarray:
    r"""The stable cells: cell i and its ε neighbours i − 1 and i + 1 (same γ, nβ) are all clear
    and agree pairwise within z combined standard errors,
    :math:`|\hat\lambda_a - \hat\lambda_b| \le z\sqrt{s_a^2 + s_b^2}` for each pair (module
    docstring). The grid's smallest and largest ε are never stable.

    Args:
      grid: an :class:`~tmsjax.llc.LLCGrid` whose step sizes are sorted ascending.
      z: the agreement threshold (:data:`FLAT_Z`).

    Returns:
      bool, (len(ε), len(γ), len(nβ)).
    """
    stable = np.zeros(np.shape(grid.result.llc), dtype=bool)
    if len(grid.step_sizes) >= 3:
        neighbours = _agree(grid, 1, z)
        stable[1:-1] = neighbours[:-1] & neighbours[1:] & _agree(grid, 2, z)
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


def _no_stable_message(grid: LLCGrid) -> str:
    """Names the problems over the grid with their counts, and what to try."""
    counts = problem_counts(grid.result)
    total = counts["total"]
    names = ("non-finite", "step size too large", "drifting", "escaped")
    found = sorted(((counts[name], name) for name in names if counts[name]), key=lambda c: -c[0])
    parts = [f"{count}/{total} cells '{name}'" for count, name in found]
    if counts["ok"]:
        parts.append(
            f"{counts['ok']}/{total} cells ok, but none with both ε neighbours ok and the three "
            f"agreeing within {FLAT_Z:g} combined standard errors"
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
    if counts["ok"]:
        advice.append("more num_chains (smaller standard errors) or a finer step_sizes grid")
    nbetas = ", ".join(f"{b:.4g}" for b in grid.nbetas)
    gammas = ", ".join(f"{g:g}" for g in grid.localizations)
    return (
        f"no stable cell in the grid (ε {grid.step_sizes[0]:.3g}..{grid.step_sizes[-1]:.3g}, "
        f"γ [{gammas}], nβ [{nbetas}]): " + "; ".join(parts) + ". Try " + "; ".join(advice)
    )


def _reason(grid: LLCGrid, index: tuple[int, int, int]) -> str:
    """What was chosen and why, in one line (for people)."""
    i, j, m = index
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
    module docstring), finds the stable region (all clear and λ̂ flat in ε) and picks, at the
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
        grid and says what to try, and ``error.grid`` holds the grid.

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
    stable = stable_region(grid)
    if not np.any(stable):
        raise CalibrationError(_no_stable_message(grid), grid)
    index = choose_cell(grid, stable, reference_nbeta)
    i, j, m = index
    chosen = settings.replace(
        step_size=float(grid.step_sizes[i]),
        localization=float(grid.localizations[j]),
        nbeta=float(grid.nbetas[m]),
    )
    return Calibration(chosen, grid, stable, index, curvature, _reason(grid, index))


__all__ = [
    "EPS_TOP",
    "FLAT_Z",
    "LOCALIZATION_FACTORS",
    "NUM_STEP_SIZES",
    "POWER_ITERATIONS",
    "STEP_SIZE_DECADES",
    "Calibration",
    "CalibrationError",
    "calibrate",
    "choose_cell",
    "stable_region",
]
