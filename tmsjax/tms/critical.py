r"""The catalogue of TMS critical points: regular k-gons labelled
:math:`k^{\sigma^+,\sigma^-}` (r = 2).

A :math:`k^{\sigma^+,\sigma^-}`-gon has k live columns of length :math:`l^*` at angles 2πj/k, all
with bias :math:`b^*`; the other c − k columns are zero ("dead") with bias ≤ 0, σ⁺ of which instead
carry the bias :math:`b^+ = 1/(2c)` that minimises a dead output's cost :math:`1 - 3b + 3cb^2`. For
4-gons (:math:`l^* = 1, b^* = 0`), σ⁻ of the live columns are *silenced*: their bias is so negative
(:math:`b_i \le -l_i^2`) that output i never fires, which costs +1 in H like a dead feature.

For k ≥ 5, :math:`(l^*, b^*)` minimise H over the symmetric ansatz (equivalently solve the two
equations of Chen et al. App. E.1); by symmetric criticality that point is a critical point of the
full potential, which we verify (‖∇L‖ < 1e-10 in float64). Losses follow
:math:`L = (h_k + c - k)/(3c) - \sigma^+/(4c^2)`, and the learning coefficient of the minimally
singular points (5 ≤ k ≤ c) is :math:`\lambda = (3k - 1)/2 + 3\sigma^+/2`, i.e. half the Hessian
rank. 4-gons are not minimally singular (H is only C¹ there), so their λ is left as None. Neither is
a σ⁺ point that also keeps negative-bias dead columns (c − k − σ⁺ > 0, possible from c = 7): the
positive dead bias couples two zero columns (∂²L/∂W_i∂W_j = b⁺·I/c), a saddle with two negative
Hessian directions, so its λ is None too; the Hessian of a 4-gon is one-sided (jax differentiates
the branch it is on).

Representatives use dead bias −1 and silenced bias −2 (strictly inside the critical set, so SGLD
chains centred there do not escape across the b = 0 boundary), while the free-energy constant
:math:`c_\alpha = \tfrac12\lVert w^*\rVert^2` takes the minimal-norm point of the critical set (dead
negative biases count as 0, silenced biases as :math:`-l^{*2}`).

References:
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301, §3–4, App. A and E.
"""

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from tmsjax.checks import check_positive_int
from tmsjax.tms.model import TMSParams
from tmsjax.tms.potential import population_loss, tms_potential_H

DEAD_BIAS = -1.0
SILENCED_BIAS = -2.0
# Relative threshold under which a Hessian eigenvalue counts as zero: the nonzero eigenvalues of the
# catalogue points are O(1e-2..1) while float64 round-off leaves zero modes at O(1e-15).
ZERO_EIGENVALUE_TOL = 1e-9


@dataclasses.dataclass(frozen=True)
class CriticalPoint:
    """One k^{σ+,σ−}-gon critical point of the TMS potential (float64 numpy arrays).

    Attributes:
      label: canonical label: k, then one "+" per σ⁺, then one "-" per σ⁻ ("6", "5+", "4++-").
      k, sigma_plus, sigma_minus: the polygon's vertex count and bias signatures.
      W, b: a representative (2, c) weight matrix and (c,) bias.
      radius, live_bias: the polygon's column length l* and live bias b*.
      loss: the population loss L = H/(3c).
      llc: the learning coefficient λ where known in closed form (minimally singular minima), else
        None.
      grad_norm: ‖∇L‖ at (W, b), float64.
      hessian_eigenvalues: eigenvalues of ∇²L over the 3c parameters (ascending).
      num_zero, num_negative: counts of zero and negative Hessian directions.
      constant: the free-energy constant ½‖w*‖² (minimal-norm point of the critical set).
    """

    label: str
    k: int
    sigma_plus: int
    sigma_minus: int
    W: np.ndarray
    b: np.ndarray
    radius: float
    live_bias: float
    loss: float
    llc: float | None
    grad_norm: float
    hessian_eigenvalues: np.ndarray
    num_zero: int
    num_negative: int
    constant: float

    @property
    def params(self) -> TMSParams:
        return TMSParams(self.W, self.b)

    @property
    def hessian_rank(self) -> int:
        return len(self.hessian_eigenvalues) - self.num_zero

    def as_dict(self) -> dict:
        """JSON-ready record (no arrays but the Hessian spectrum)."""
        return {
            "label": self.label,
            "k": self.k,
            "sigma_plus": self.sigma_plus,
            "sigma_minus": self.sigma_minus,
            "loss": self.loss,
            "llc": self.llc,
            "grad_norm": self.grad_norm,
            "hessian_num_zero": self.num_zero,
            "hessian_num_negative": self.num_negative,
            "hessian_rank": self.hessian_rank,
            "constant": self.constant,
            "radius": self.radius,
            "live_bias": self.live_bias,
        }


def make_label(k: int, sigma_plus: int = 0, sigma_minus: int = 0) -> str:
    return f"{k}{'+' * sigma_plus}{'-' * sigma_minus}"


def kgon_params(
    k: int,
    num_features: int,
    radius: float,
    bias: float,
    *,
    sigma_plus: int = 0,
    sigma_minus: int = 0,
    dead_bias: float = DEAD_BIAS,
    silenced_bias: float = SILENCED_BIAS,
) -> TMSParams:
    """A k^{σ+,σ−}-gon in feature order: live columns 0..k−1 (the last σ⁻ silenced), then σ⁺ dead
    columns with bias 1/(2c), then the remaining dead columns (numpy float64)."""
    if not 1 <= k <= num_features:
        raise ValueError(f"k must lie in 1..num_features={num_features}, got {k}")
    if not 0 <= sigma_plus <= num_features - k:
        raise ValueError(f"sigma_plus must lie in 0..{num_features - k}, got {sigma_plus}")
    if not 0 <= sigma_minus <= k:
        raise ValueError(f"sigma_minus must lie in 0..{k}, got {sigma_minus}")
    angles = 2 * np.pi * np.arange(k) / k
    W = np.zeros((2, num_features))
    W[:, :k] = radius * np.stack([np.cos(angles), np.sin(angles)])
    b = np.full(num_features, float(dead_bias))
    b[:k] = bias
    b[k - sigma_minus : k] = silenced_bias
    b[k : k + sigma_plus] = 1.0 / (2 * num_features)
    return TMSParams(W, b)


def _kgon_H(radius_bias, k):
    return tms_potential_H(*kgon_params_jax(k, radius_bias[0], radius_bias[1]))


_kgon_grad = jax.jit(jax.grad(_kgon_H), static_argnums=1)
_kgon_hessian = jax.jit(jax.hessian(_kgon_H), static_argnums=1)


def kgon_params_jax(k: int, radius, bias) -> TMSParams:
    """The k-gon at c = k as a differentiable function of (l, b)."""
    angles = 2 * jnp.pi * jnp.arange(k) / k
    W = radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)])
    return TMSParams(W, jnp.full(k, 1.0) * bias)


@functools.cache
def solve_kgon(k: int) -> tuple[float, float, float]:
    """Radius l*, bias b* and h_k = H(k-gon at c = k) of the regular k-gon critical point, k ≥ 4.

    Newton's method on ∇h(l, b) = 0 in float64 from a start that extrapolates the k = 5..8 values.
    docs/paper_numbers.md §3 says no regular k-gon critical point exists for 9 ≤ k ≤ 203 unless
    4 | k; the exact potential disagrees: from this start Newton converges for k = 9..13 to points
    with ‖∇L‖ ~ 1e-16 (confirmed against finite differences of the quadrature loss), the 9-gon
    (l = 1.61711, b = −1.54232, L = 0.14340 at c = 9) even with a positive semi-definite Hessian.
    They enter the catalogue only from c = 9, which no experiment here uses.

    Raises:
      ValueError: for k < 4, or if Newton does not converge to a point with l* > 0 and b* < 0.
    """
    k = check_positive_int("k", k)
    if k < 4:
        raise ValueError(f"k must be at least 4 for a regular k-gon critical point, got {k}")
    if k == 4:
        return 1.0, 0.0, 0.0
    with jax.enable_x64(True):
        x = np.array([0.55 + 0.13 * k, -0.31 * (k - 4)])
        for _ in range(100):
            g = np.asarray(_kgon_grad(jnp.asarray(x), k))
            if np.max(np.abs(g)) < 1e-14:
                break
            step = np.linalg.solve(np.asarray(_kgon_hessian(jnp.asarray(x), k)), g)
            x = x - step
        g = np.asarray(_kgon_grad(jnp.asarray(x), k))
        h = float(_kgon_H(jnp.asarray(x), k))
    if not (np.max(np.abs(g)) < 1e-12 and x[0] > 0 and x[1] < 0):
        raise ValueError(
            f"no regular {k}-gon critical point found "
            f"(l={x[0]:.4g}, b={x[1]:.4g}, |grad|={np.max(np.abs(g)):.2g})"
        )
    return float(x[0]), float(x[1]), h


@jax.jit
def _loss_grad_hessian(params: TMSParams):
    flat, unravel = ravel_pytree(params)
    loss_flat = lambda w: population_loss(unravel(w))  # noqa: E731
    return loss_flat(flat), jax.grad(loss_flat)(flat), jax.hessian(loss_flat)(flat)


def _describe(k, sigma_plus, sigma_minus, num_features) -> CriticalPoint:
    radius, bias, h_k = solve_kgon(k)
    params = kgon_params(
        k, num_features, radius, bias, sigma_plus=sigma_plus, sigma_minus=sigma_minus
    )
    with jax.enable_x64(True):
        loss, grad, hessian = _loss_grad_hessian(jax.tree.map(jnp.asarray, params))
        loss, grad_norm, hessian = float(loss), float(jnp.linalg.norm(grad)), np.asarray(hessian)
    eigenvalues = np.linalg.eigvalsh((hessian + hessian.T) / 2)
    tol = ZERO_EIGENVALUE_TOL * max(1.0, np.max(np.abs(eigenvalues)))
    live_norm2 = (k - sigma_minus) * (radius**2 + bias**2) + sigma_minus * (radius**2 + radius**4)
    constant = 0.5 * (live_norm2 + sigma_plus / (2 * num_features) ** 2)
    num_negative = int(np.sum(eigenvalues < -tol))
    minimally_singular = k >= 5 and num_negative == 0
    llc = (3 * k - 1) / 2 + 1.5 * sigma_plus if minimally_singular else None
    W, b = (np.asarray(v) for v in params)
    for array in (W, b, eigenvalues):
        array.flags.writeable = False
    return CriticalPoint(
        label=make_label(k, sigma_plus, sigma_minus),
        k=k,
        sigma_plus=sigma_plus,
        sigma_minus=sigma_minus,
        W=W,
        b=b,
        radius=radius,
        live_bias=bias,
        loss=loss,
        llc=llc,
        grad_norm=grad_norm,
        hessian_eigenvalues=eigenvalues,
        num_zero=int(np.sum(np.abs(eigenvalues) <= tol)),
        num_negative=num_negative,
        constant=float(constant),
    )


@functools.cache
def _catalogue(num_features: int) -> tuple[CriticalPoint, ...]:
    points = []
    for k in range(4, num_features + 1):
        try:
            solve_kgon(k)
        except ValueError as error:
            warnings.warn(str(error), stacklevel=3)
            continue
        minus_range = range(k + 1) if k == 4 else range(1)
        for sigma_plus in range(num_features - k + 1):
            for sigma_minus in minus_range:
                points.append(_describe(k, sigma_plus, sigma_minus, num_features))
    return tuple(sorted(points, key=lambda p: p.loss))


def critical_points(num_features: int, num_hidden: int = 2) -> list[CriticalPoint]:
    r"""The catalogue of :math:`k^{\sigma^+,\sigma^-}`-gon critical points for c features, sorted by
    loss.

    For c = 6 this is the paper's 18 points: {6}, {5, 5⁺}, {4^{σ+,σ−}: σ⁺ ∈ 0..2, σ⁻ ∈ 0..4}.
    Each is refined in float64 to ‖∇L‖ < 1e-10 and carries its Hessian spectrum.

    Args:
      num_features: c ≥ 4.
      num_hidden: r; the k-gon family lives in the plane, so it must be 2.

    Returns:
      A list of :class:`CriticalPoint` (cached; arrays are read-only).

    Examples:
      >>> [(p.label, round(p.loss, 5), p.llc) for p in critical_points(6)[:3]]
      [('6', 0.04819, 8.5), ('5+', 0.0618, 8.5), ('5', 0.06874, 7.0)]
    """
    num_features = check_positive_int("num_features", num_features)
    num_hidden = check_positive_int("num_hidden", num_hidden)
    if num_hidden != 2:
        raise ValueError(
            "num_hidden must be 2 for the k-gon catalogue (polygons in the plane), "
            f"got {num_hidden}"
        )
    if num_features < 4:
        raise ValueError(
            f"num_features must be at least 4 for the k-gon catalogue, got {num_features}"
        )
    return list(_catalogue(num_features))


def expected_loss(k: int, num_features: int, sigma_plus: int = 0, sigma_minus: int = 0) -> float:
    """L of a k^{σ+,σ−}-gon from h_k alone: (h_k + c − k + σ⁻)/(3c) − σ⁺/(4c²)."""
    if not (check_positive_int("num_features", num_features) >= k):
        raise ValueError(f"num_features={num_features} must be at least k={k}")
    if not (0 <= sigma_plus <= num_features - k and 0 <= sigma_minus <= (k if k == 4 else 0)):
        raise ValueError(
            f"no {k}-gon with sigma_plus={sigma_plus}, sigma_minus={sigma_minus} "
            f"at num_features={num_features}"
        )
    _, _, h_k = solve_kgon(k)
    c = num_features
    return (h_k + c - k + sigma_minus) / (3 * c) - sigma_plus / (4 * c**2)


__all__ = [
    "CriticalPoint",
    "critical_points",
    "kgon_params",
    "make_label",
    "solve_kgon",
    "expected_loss",
    "DEAD_BIAS",
    "SILENCED_BIAS",
]
