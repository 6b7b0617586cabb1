r"""Free-energy theory of Bayesian phase transitions over the k-gon catalogue.

For a phase α around the critical point :math:`w^*_\alpha` (Watanabe's asymptotics, Chen et al.
2023 §5),

.. math::
    F_n(\alpha) \approx n_\beta L(w^*_\alpha) + \lambda_\alpha \log n_\beta + c_\alpha,
    \qquad n_\beta = n / T,\qquad c_\alpha = \frac{\lVert w^*_\alpha\rVert^2}{2\sigma^2},

with L the population loss, λ the learning coefficient and :math:`c_\alpha` the prior term (T the
likelihood scale and σ the prior width of :mod:`tmsjax.tms.posterior`; T = σ = 1 in the paper).
The posterior mass of phase α is :math:`\propto e^{-F_n(\alpha)}` (the log-sum-exp approximation),
so the theoretical occupancy is a softmax of :math:`-F_n` over the phases considered, and the
crossing :math:`n_c` of two phases solves

.. math:: n_\beta\,\Delta L = \Delta\lambda\,\log n_\beta + \Delta c .

Catalogue numbers give 5 → 6 at n ≈ 601 (≈ 445 without the constant) and 5⁺ → 6 at n ≈ 202.
Permutation multiplicities of the phases (e.g. 60 orbits for the 6-gon vs 72 for the 5-gon at c = 6)
shift F by O(0.2) and are ignored, as in the paper. λ is exact for 5 ≤ k ≤ c; 4-gons need estimates
(pass them in `llc_estimates`, e.g. from :mod:`tmsjax.llc`), otherwise they are left out.

References:
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301, §5 and Fig. 4.
  Watanabe, "Algebraic Geometry and Statistical Learning Theory" (2009).
"""

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import optimize

from tmsjax.checks import check_positive_int
from tmsjax.tms.critical import critical_points


class TheoryPhase(NamedTuple):
    """The three numbers of the free energy formula for one phase."""

    label: str
    loss: float
    llc: float
    constant: float


def catalogue_phases(
    num_features: int,
    llc_estimates: Mapping[str, float] | None = None,
    labels: Sequence[str] | None = None,
) -> list[TheoryPhase]:
    """The catalogue phases usable in the free energy formula, sorted by loss.

    Args:
      num_features: c.
      llc_estimates: optional λ for phases without a closed form (4-gons), e.g. ``{"4": 5.1}``; an
        estimate also overrides a closed form if given for such a label.
      labels: restrict to these labels (error if one is unknown or lacks λ).

    Returns:
      Every catalogue point with a known or estimated λ (or exactly `labels`).
    """
    num_features = check_positive_int("num_features", num_features)
    estimates = dict(llc_estimates or {})
    points = {p.label: p for p in critical_points(num_features)}
    unknown = sorted(set(estimates) - set(points))
    if unknown:
        raise ValueError(
            f"llc_estimates has labels {unknown} not in the c={num_features} catalogue"
        )
    if labels is not None:
        missing = [label for label in labels if label not in points]
        if missing:
            raise ValueError(f"labels {missing} are not in the c={num_features} catalogue")
    phases = []
    for point in points.values():
        if labels is not None and point.label not in labels:
            continue
        llc = estimates.get(point.label, point.llc)
        if llc is None:
            if labels is not None:
                raise ValueError(
                    f"labels: phase {point.label!r} has no closed-form λ; pass llc_estimates"
                )
            continue
        phase = TheoryPhase(point.label, float(point.loss), float(llc), float(point.constant))
        phases.append(phase)
    return sorted(phases, key=lambda p: p.loss)


def _check_scales(temperature, prior_std) -> None:
    for name, value in (("temperature", temperature), ("prior_std", prior_std)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite, got {value!r}")


def free_energy(n, loss, llc, constant, *, temperature: float = 1.0, prior_std: float = 1.0):
    r""":math:`F_n = (n/T) L + \lambda \log(n/T) + c/\sigma^2` (`constant` is ½‖w*‖² at σ = 1);
    broadcasts."""
    _check_scales(temperature, prior_std)
    n = np.asarray(n, dtype=float)
    if not np.all(np.isfinite(n)) or np.any(n <= 0):
        raise ValueError(f"n must be positive and finite, got {n}")
    nbeta = n / temperature
    return nbeta * loss + llc * np.log(nbeta) + constant / prior_std**2


def free_energies(
    n, phases: Sequence[TheoryPhase], *, temperature: float = 1.0, prior_std: float = 1.0
):
    """F_n of every phase: array (len(n), len(phases))."""
    n = np.atleast_1d(np.asarray(n, dtype=float))
    scales = dict(temperature=temperature, prior_std=prior_std)
    return np.stack([free_energy(n, p.loss, p.llc, p.constant, **scales) for p in phases], axis=-1)


def theoretical_occupancy(
    n, phases: Sequence[TheoryPhase], *, temperature: float = 1.0, prior_std: float = 1.0
):
    r"""Posterior mass of each phase, :math:`\propto e^{-F_n}` normalised over `phases`:
    (len(n), P)."""
    if len(phases) == 0:
        raise ValueError("phases must not be empty")
    energies = free_energies(n, phases, temperature=temperature, prior_std=prior_std)
    logits = -energies - np.max(-energies, axis=-1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=-1, keepdims=True)


def _check_distinct(phase_from: TheoryPhase, phase_to: TheoryPhase, include_constant: bool) -> None:
    # Without this the gap is 0 at every n: no sign change, and crossing() would return NaN, which
    # reads as "these phases never cross" instead of "you passed one phase twice".
    if phase_from.label == phase_to.label:
        raise ValueError(
            f"phase_from and phase_to are the same phase {phase_from.label!r}: a phase has no "
            "crossing with itself"
        )
    same_constant = phase_from.constant == phase_to.constant or not include_constant
    if phase_from.loss == phase_to.loss and phase_from.llc == phase_to.llc and same_constant:
        equal = "equal loss, llc and constant" if include_constant else "equal loss, llc"
        raise ValueError(
            f"phase_from {phase_from.label!r} and phase_to {phase_to.label!r} are the same phase "
            f"to the free energy formula ({equal}): their free energies are equal at every n, so "
            "there is no crossing"
        )


def crossing(
    phase_from: TheoryPhase,
    phase_to: TheoryPhase,
    *,
    temperature: float = 1.0,
    prior_std: float = 1.0,
    include_constant: bool = True,
    n_range: tuple[float, float] = (1.0, 1e9),
) -> float:
    r"""The n at which `phase_to` overtakes `phase_from`: :math:`F_n(\text{from}) = F_n(\text{to})`.

    Solves :math:`n_\beta\Delta L = \Delta\lambda\log n_\beta + \Delta c` (Δ = to − from reversed
    so that the lower-loss phase wins at large n) by bracketing on log n.

    Returns:
      n_c (the largest crossing in `n_range`), or NaN when the free energies do not cross inside
      `n_range` (e.g. the lower-loss phase also has the lower λ and constant, so it dominates at
      every n).

    Raises:
      ValueError: if the two phases are the same (one label, or the same loss, λ and constant: free
        energies equal at every n, so there is no crossing to find), or on a bad scale or range.
    """
    _check_distinct(phase_from, phase_to, include_constant)
    _check_scales(temperature, prior_std)
    low, high = n_range
    if not (np.isfinite(low) and np.isfinite(high) and 0 < low < high):
        raise ValueError(f"n_range must be (low, high) with 0 < low < high, got {n_range!r}")
    scale = 1.0 if include_constant else 0.0

    def gap(log_n):
        n = np.exp(log_n)
        f_from = free_energy(
            n,
            phase_from.loss,
            phase_from.llc,
            scale * phase_from.constant,
            temperature=temperature,
            prior_std=prior_std,
        )
        f_to = free_energy(
            n,
            phase_to.loss,
            phase_to.llc,
            scale * phase_to.constant,
            temperature=temperature,
            prior_std=prior_std,
        )
        return float(f_to - f_from)

    grid = np.linspace(np.log(n_range[0]), np.log(n_range[1]), 400)
    values = np.array([gap(g) for g in grid])
    sign_change = np.nonzero(np.sign(values[:-1]) != np.sign(values[1:]))[0]
    if sign_change.size == 0:
        return float("nan")
    # The last sign change is the one after which the lower-loss phase wins for good; another one
    # can sit at n ~ 1 where log n < 0 and the formula means nothing.
    index = sign_change[-1]
    return float(np.exp(optimize.brentq(gap, grid[index], grid[index + 1], xtol=1e-12)))


def crossing_by_label(
    num_features: int,
    label_from: str,
    label_to: str,
    llc_estimates: Mapping[str, float] | None = None,
    **kwargs,
) -> float:
    """:func:`crossing` between two catalogue phases named by label, e.g. ``("5", "6")`` → ≈ 601.

    Raises:
      ValueError: if `label_from` and `label_to` name the same phase, or a label is not in the
        catalogue or lacks λ.
    """
    if label_from == label_to:
        raise ValueError(
            f"label_from and label_to are both {label_from!r}: the same phase has no crossing "
            "with itself"
        )
    pair = catalogue_phases(num_features, llc_estimates, labels=[label_from, label_to])
    phases = {p.label: p for p in pair}
    return crossing(phases[label_from], phases[label_to], **kwargs)


def all_crossings(phases: Sequence[TheoryPhase], **kwargs) -> dict[str, float]:
    """n_c for every ordered pair (higher-loss → lower-loss) that crosses: ``{"5->6": 601.3, ...}``.

    Raises:
      ValueError: if `phases` lists one phase (label) twice; its results would share a key.
    """
    labels = [p.label for p in phases]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"phases lists the same phase more than once: {repeated}")
    out = {}
    for high in phases:
        for low in phases:
            if low.loss < high.loss:
                n_c = crossing(high, low, **kwargs)
                if np.isfinite(n_c):
                    out[f"{high.label}->{low.label}"] = n_c
    return out


def empirical_crossing(n, occupancy_from, occupancy_to) -> float:
    """Where an empirical occupancy difference changes sign, by log-linear interpolation between the
    grid points bracketing the first sign change from `from`-dominant to `to`-dominant; NaN if
    none."""
    n = np.asarray(n, dtype=float)
    occupancy_from = np.asarray(occupancy_from, dtype=float)
    occupancy_to = np.asarray(occupancy_to, dtype=float)
    if not (n.ndim == 1 and occupancy_from.shape == n.shape == occupancy_to.shape):
        raise ValueError(
            f"n, occupancy_from and occupancy_to must be 1-d of one length, got {n.shape}, "
            f"{occupancy_from.shape}, {occupancy_to.shape}"
        )
    diff = occupancy_to - occupancy_from
    order = np.argsort(n)
    n, diff = n[order], diff[order]
    for i in range(len(n) - 1):
        if diff[i] < 0 <= diff[i + 1]:
            t = -diff[i] / (diff[i + 1] - diff[i])
            return float(np.exp(np.log(n[i]) + t * (np.log(n[i + 1]) - np.log(n[i]))))
    return float("nan")


__all__ = [
    "TheoryPhase",
    "catalogue_phases",
    "free_energy",
    "free_energies",
    "theoretical_occupancy",
    "crossing",
    "crossing_by_label",
    "all_crossings",
    "empirical_crossing",
]
