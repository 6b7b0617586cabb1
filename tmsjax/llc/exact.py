r"""Exact learning coefficients λ (real log canonical thresholds) and multiplicities m, to check λ̂.

Known answers for the estimator (:mod:`tmsjax.llc`): each function returns a
:class:`LearningCoefficient` with λ, its multiplicity m (the order of the pole of the zeta function
:math:`\zeta(z) = \int K(w)^z \varphi(w)\,dw` at :math:`z = -\lambda`; None where not known)
and, for deep linear networks, the index set Σ of Aoyagi's formula. The free energy is
:math:`F_n = nL_n(w_0) + \lambda\log n - (m - 1)\log\log n + O_p(1)` (Watanabe 2009).

- :func:`regular`: a regular model with d parameters, λ = d/2, m = 1.
- :func:`normal_crossing`: :math:`K = \prod_i w_i^{2k_i}`, prior :math:`\propto\prod_i |w_i|^{h_i}`.
- :func:`monomial_sum`: :math:`K = \sum_j \prod_i w_i^{2k_{ji}}`, via the Newton polyhedron.
- :func:`reduced_rank_regression`: y = BAx (Aoyagi & Watanabe 2005).
- :func:`deep_linear_network`: :math:`y = W_L\cdots W_1 x` (Aoyagi 2024).

The two network formulas assume input data with a positive-definite covariance and a prior
positive at the true parameters; λ is then the learning coefficient of the whole set of true
parameters, which is what an LLC estimate at a trained global minimum is compared to (Furman & Lau
2024). λ is exact in rational arithmetic and returned as a float, except for :func:`monomial_sum`,
which solves a linear programme (λ to about 1e-9).

References:
  Watanabe, "Algebraic Geometry and Statistical Learning Theory", Cambridge University Press (2009):
  regular models, normal crossings, λ ≤ d/2.
  Aoyagi & Watanabe, "Stochastic complexities of reduced rank regression in Bayesian estimation",
  Neural Networks 18(7):924-933 (2005), Main Theorem.
  Aoyagi, "Consideration on the learning efficiency of multiple-layered neural networks with linear
  units", Neural Networks 172:106132 (2024), Theorem 1 (Theorem 2 restates the RRR case).
  Furman & Lau, "Estimating the local learning coefficient at scale" (2024), arXiv:2402.03698,
  Theorem B.1 (Aoyagi's Theorem 1 restated; their code, ``true_dln_learning_coefficient`` in
  github.com/edmundlth/validating_lambdahat ``dln.py``, returns m = a(ℓ − a) + 1).
  Howald, "Multiplier ideals of monomial ideals", Trans. AMS 353:2665-2671 (2001), and Lin,
  "Algebraic methods for evaluating integrals in Bayesian statistics", PhD thesis, UC Berkeley
  (2011), Ch. 4: thresholds of monomial ideals from the Newton polyhedron (complex and real cases).
"""

import itertools
from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import scipy.optimize

from tmsjax.checks import check_nonnegative_int, check_positive_int, check_real_array

__all__ = [
    "LearningCoefficient",
    "deep_linear_network",
    "monomial_sum",
    "normal_crossing",
    "reduced_rank_regression",
    "regular",
]


class LearningCoefficient(NamedTuple):
    """An exact learning coefficient.

    Attributes:
      llc: the learning coefficient λ (the real log canonical threshold).
      multiplicity: its order m ≥ 1, or None where it is not known.
      sigma: for :func:`deep_linear_network`, the sorted 0-based indices into `widths` of the set
        Σ of Aoyagi's formula; None otherwise.
    """

    llc: float
    multiplicity: int | None
    sigma: tuple[int, ...] | None = None


# --------------------------------------------------------------------------------------------------
# Argument checks.
# --------------------------------------------------------------------------------------------------


def _prior_exponents(h, d: int) -> np.ndarray:
    """The prior exponents h (zeros when None): shape (d,), each > -1 so the prior is integrable."""
    if h is None:
        return np.zeros(d)
    h = check_real_array("h", h, ndim=1)
    if h.shape != (d,):
        raise ValueError(f"h must have one entry per parameter ({d}), got shape {h.shape}")
    if np.any(h <= -1):
        raise ValueError(f"h must be > -1 (an integrable prior |w|^h), got {h.tolist()}")
    return h


# --------------------------------------------------------------------------------------------------
# Regular models and normal crossings.
# --------------------------------------------------------------------------------------------------


def regular(d: int) -> LearningCoefficient:
    """The learning coefficient of a regular model: λ = d/2, m = 1 (Watanabe 2009).

    Args:
      d: the number of parameters (the rank of the Fisher information at the true parameter).

    Returns:
      LearningCoefficient(d/2, 1).
    """
    d = check_positive_int("d", d)
    return LearningCoefficient(d / 2, 1)


def normal_crossing(k, h=None) -> LearningCoefficient:
    r"""λ and m of a normal crossing :math:`K = \prod_i w_i^{2k_i}`, prior :math:`\prod|w_i|^{h_i}`.

    Near the origin :math:`\zeta(z) = \prod_i \int_{-1}^1 |w_i|^{2k_i z + h_i} dw_i` has poles at
    :math:`z = -(h_i + 1)/(2k_i)` (Watanabe 2009), so

    .. math:: \lambda = \min_{i:\,k_i > 0} \frac{h_i + 1}{2k_i}, \qquad
              m = \#\{i : k_i > 0,\ (h_i + 1)/(2k_i) = \lambda\}.

    Coordinates with :math:`k_i = 0` do not enter. Ties are found in exact rational arithmetic on
    the given floats, so e.g. k = (1, 2), h = (0, 1) gives m = 2.

    Args:
      k: (d,) non-negative exponents, at least one positive.
      h: (d,) prior exponents, each > -1; None for a flat prior (h = 0).

    Returns:
      LearningCoefficient(λ, m).
    """
    k = check_real_array("k", k, ndim=1)
    if np.any(k < 0) or not np.any(k > 0):
        raise ValueError(f"k must be non-negative with a positive entry, got {k.tolist()}")
    h = _prior_exponents(h, k.size)
    # Fraction(float) is exact, so equal ratios tie exactly rather than up to round-off.
    ratios = [
        (Fraction(float(hi)) + 1) / (2 * Fraction(float(ki))) for ki, hi in zip(k, h) if ki > 0
    ]
    lam = min(ratios)
    return LearningCoefficient(float(lam), ratios.count(lam))


# --------------------------------------------------------------------------------------------------
# Sums of squared monomials: the Newton polyhedron.
# --------------------------------------------------------------------------------------------------


def _linprog(c, A_ub, b_ub, A_eq, b_eq) -> scipy.optimize.OptimizeResult:
    result = scipy.optimize.linprog(
        c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs"
    )
    if result.status != 0:
        raise RuntimeError(f"linear programme failed: {result.message}")
    return result


def monomial_sum(exponents, h=None) -> LearningCoefficient:
    r"""λ and m of a sum of squared monomials :math:`K(w) = \sum_j \prod_i w_i^{2k_{ji}}` at w = 0.

    K generates the monomial ideal :math:`\langle w^{k_1}, \ldots, w^{k_J}\rangle`, whose threshold
    is read off its Newton polyhedron (Howald 2001 over ℂ; Lin 2011, Ch. 4, over ℝ: monomials stay
    monomials in every chart of the toric resolution, so the real and complex answers agree). With
    the Newton polyhedron of K itself, :math:`P = \mathrm{conv}\{2k_j\} + \mathbb{R}^d_{\ge 0}`, and
    prior :math:`\prod_i |w_i|^{h_i}`,

    .. math:: \lambda = 1/t^*, \qquad t^* = \min\{t : t\,(h + 1) \in P\},

    and m is the codimension of the smallest face of P containing :math:`p = t^*(h + 1)`. (Every
    face polynomial of K is a sum of squares with no zero on the torus, so K is non-degenerate.)

    :math:`t^*` is a linear programme over convex weights μ:
    :math:`\min t` s.t. :math:`\sum_j \mu_j 2k_j \le t(h + 1)`. For the face, a vertex :math:`2k_j`
    (direction :math:`e_i`) lies in it iff some representation :math:`p = \sum_j \mu_j 2k_j + \nu`,
    ν ≥ 0, gives it positive weight μ_j (ν_i): one small LP per generator, a positive weight meaning
    above 1e-6 of the scale of p. m = d − dim(face), the dimension being the rank of the in-face
    vertex differences and directions. This is reliable for small integer exponents and simple
    rational h (the weights that matter are then far above the tolerance); with large or irrational
    data treat m with care.

    Args:
      exponents: (J, d) non-negative integers, row j the exponent vector :math:`k_j` of the j-th
        monomial (K uses :math:`2k_j`); no row may be all zero (K must vanish at the origin).
      h: (d,) prior exponents, each > -1; None for a flat prior.

    Returns:
      LearningCoefficient(λ, m).
    """
    k = check_real_array("exponents", exponents, ndim=2)
    if np.any(k < 0) or np.any(k != np.round(k)):
        raise ValueError("exponents must be non-negative integers")
    if np.any(np.all(k == 0, axis=1)):
        raise ValueError("exponents has an all-zero row (a constant term): K must vanish at 0")
    num_monomials, d = k.shape
    h = _prior_exponents(h, d)
    vertices = 2.0 * k  # (J, d): the Newton polyhedron of K, not of the ideal
    direction = h + 1.0

    # Variables (t, μ_1..μ_J): minimise t with V^T μ − t (h + 1) ≤ 0 and Σ μ = 1.
    a_ub = np.hstack([-direction[:, None], vertices.T])
    a_eq = np.concatenate([[0.0], np.ones(num_monomials)])[None, :]
    result = _linprog(np.eye(num_monomials + 1)[0], a_ub, np.zeros(d), a_eq, [1.0])
    t_star = result.x[0]
    p = t_star * direction

    # Which generators can carry positive weight in p = V^T μ + ν: over Q = {μ in the simplex,
    # V^T μ ≤ p}, maximise μ_j (vertex j), or minimise (V^T μ)_i, leaving slack ν_i (direction i).
    tol = 1e-6 * max(1.0, float(np.max(p)))
    ones = np.ones((1, num_monomials))
    in_face_vertices = [
        j
        for j in range(num_monomials)
        if -_linprog(-np.eye(num_monomials)[j], vertices.T, p, ones, [1.0]).fun > tol
    ]
    in_face_directions = [
        i for i in range(d) if p[i] - _linprog(vertices[:, i], vertices.T, p, ones, [1.0]).fun > tol
    ]
    spanning = [vertices[j] - vertices[in_face_vertices[0]] for j in in_face_vertices[1:]]
    spanning += [np.eye(d)[i] for i in in_face_directions]
    face_dim = int(np.linalg.matrix_rank(np.array(spanning))) if spanning else 0
    return LearningCoefficient(float(1.0 / t_star), d - face_dim)


# --------------------------------------------------------------------------------------------------
# Reduced-rank regression and deep linear networks.
# --------------------------------------------------------------------------------------------------


def reduced_rank_regression(N: int, H: int, M: int, r: int) -> LearningCoefficient:
    r"""λ and m of reduced-rank regression y = BAx at a true BA of rank r (Aoyagi & Watanabe 2005).

    Input dimension N, hidden H, output M (A is H×N, B is M×H); d = H(N + M) parameters. Exactly one
    case holds (two of the strict inequalities together would force H < r):

    - N + r ≤ M + H, M + r ≤ N + H and H + r ≤ M + N: with N + M + H + r even,
      :math:`\lambda = [2(H + r)(M + N) - (M - N)^2 - (H + r)^2]/8`, m = 1; with it odd,
      :math:`\lambda = [2(H + r)(M + N) - (M - N)^2 - (H + r)^2 + 1]/8`, m = 2;
    - M + H < N + r: λ = (HM − Hr + Nr)/2, m = 1;
    - N + H < M + r: λ = (HN − Hr + Mr)/2, m = 1;
    - M + N < H + r: λ = MN/2, m = 1.

    The formulas are symmetric under N ↔ M (transposing the model), so the paper's labelling of
    input and output does not matter. The multiplicities (m = 2 only in the odd case) are the Main
    Theorem's as restated in Aoyagi (2024), Theorem 2; they agree with m = a(ℓ − a) + 1 of
    :func:`deep_linear_network` at ℓ = 2 (a = 2 for an even sum, 1 for an odd one).

    Args:
      N: input dimension.
      H: hidden dimension.
      M: output dimension.
      r: rank of the true matrix, 0 ≤ r ≤ min(N, H, M).

    Returns:
      LearningCoefficient(λ, m).
    """
    N, H, M = check_positive_int("N", N), check_positive_int("H", H), check_positive_int("M", M)
    r = check_nonnegative_int("r", r)
    if r > min(N, H, M):
        raise ValueError(f"r must be at most min(N, H, M) = {min(N, H, M)}, got {r}")
    if N + r <= M + H and M + r <= N + H and H + r <= M + N:
        numerator = 2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2
        if (N + M + H + r) % 2 == 0:
            return LearningCoefficient(float(Fraction(numerator, 8)), 1)
        return LearningCoefficient(float(Fraction(numerator + 1, 8)), 2)
    if M + H < N + r:
        return LearningCoefficient(float(Fraction(H * M - H * r + N * r, 2)), 1)
    if N + H < M + r:
        return LearningCoefficient(float(Fraction(H * N - H * r + M * r, 2)), 1)
    return LearningCoefficient(float(Fraction(M * N, 2)), 1)  # M + N < H + r


def _aoyagi_sigma(m: Sequence[int]) -> list[int]:
    r"""The unique Σ of Aoyagi (2024), Theorem 1, for the excesses :math:`M_j = H_j - r \ge 0`.

    Conditions, with ℓ = |Σ| − 1: (i) :math:`\max_\Sigma M < \min_{\Sigma^c} M`;
    (ii) :math:`\sum_\Sigma M \ge \ell\max_\Sigma M`;
    (iii) :math:`\sum_\Sigma M < \ell\min_{\Sigma^c} M`.

    (i) makes Σ the k smallest M for some k, cut between distinct values. Sort
    :math:`M_{(1)} \le \ldots \le M_{(n)}`, let :math:`S_k = \sum_{i \le k} M_{(i)}` and
    :math:`f(k) = S_k - (k - 1)M_{(k)}`, so that (ii) for the k-prefix reads f(k) ≥ 0. Then
    f(2) = M_(1) ≥ 0 and :math:`f(k+1) - f(k) = (k - 1)(M_{(k)} - M_{(k+1)}) \le 0`; and (iii) for
    the k-prefix is :math:`S_{k+1} - M_{(k+1)} < (k-1)M_{(k+1)}`, i.e. f(k + 1) < 0. So Σ is the
    prefix of the largest k ≥ 2 with f(k) ≥ 0 (k = n satisfies (iii) vacuously). That k is always
    cut between distinct values: if :math:`M_{(k)} = M_{(k+1)}` then f(k + 1) = f(k) ≥ 0, against
    maximality, so ties (e.g. all widths equal) are never split. Hence Σ exists, is unique, and has
    ℓ ≥ 1 (no one-element Σ can satisfy (iii) with n ≥ 2).

    Returns:
      The sorted indices of Σ.
    """
    order = sorted(range(len(m)), key=lambda j: m[j])
    size = max(
        k for k in range(2, len(m) + 1) if sum(m[j] for j in order[:k]) >= (k - 1) * m[order[k - 1]]
    )
    sigma, rest = order[:size], order[size:]
    # The argument above says this cannot fail; check the theorem's conditions rather than trust it.
    ell, total = size - 1, sum(m[j] for j in sigma)
    ok = total >= ell * max(m[j] for j in sigma)
    if rest:
        ok = ok and max(m[j] for j in sigma) < min(m[j] for j in rest)
        ok = ok and total < ell * min(m[j] for j in rest)
    if not ok:
        raise RuntimeError(f"no index set satisfies Aoyagi's conditions for M = {list(m)}")
    return sorted(sigma)


def deep_linear_network(widths: Sequence[int], rank: int) -> LearningCoefficient:
    r"""λ and m of a deep linear network :math:`y = W_L \cdots W_1 x` at a true product of rank r.

    Aoyagi (2024), Theorem 1; restated as Furman & Lau (2024), Theorem B.1. Widths
    :math:`H_1` (input), …, :math:`H_{L+1}` (output), :math:`W_j` is :math:`H_{j+1} \times H_j`,
    :math:`M_j = H_j - r`. With the unique Σ ⊂ {1..L+1} of :func:`_aoyagi_sigma`, ℓ = |Σ| − 1,
    :math:`S = \sum_{\sigma\in\Sigma} M_\sigma`, :math:`\bar M = \lceil S/\ell\rceil - 1` and
    :math:`a = S - \ell\bar M \in \{1, \ldots, \ell\}`:

    .. math:: \lambda = \frac{-r^2 + r(H_1 + H_{L+1})}{2} + \frac{a(\ell - a)}{4\ell}
              - \frac{\ell(\ell - 1)}{4}\Big(\frac{S}{\ell}\Big)^2
              + \frac12\sum_{i < j \in \Sigma} M_i M_j, \qquad m = a(\ell - a) + 1.

    m is as in Aoyagi's theorem (returned by Furman & Lau's code); at ℓ = 2 it reproduces
    Aoyagi & Watanabe's m for reduced-rank regression, and for all widths 1 at r = 0 (K = Π w_j²) it
    gives L, the normal-crossing count. Special cases: one layer (two widths) gives Σ = both,
    ℓ = 1, λ = H_1 H_2/2 (regular); λ is symmetric under reversing the widths (transposition); a
    width equal to r (some :math:`M_j = 0`, Aoyagi's Remark 1) gives m = 1 and
    :math:`\lambda = r(H_1 + H_{L+1} - r)/2`, half the dimension of the rank-r matrices; otherwise
    λ is strictly larger, since by
    (ii) the Σ terms equal :math:`[a(\ell-a)/\ell + S^2/\ell - \sum_\Sigma M_j^2]/4` with
    :math:`\sum_\Sigma M_j^2 \le S\max_\Sigma M \le S^2/\ell`.

    Args:
      widths: layer widths :math:`(H_1, \ldots, H_{L+1})`, input first, at least two, positive ints.
      rank: rank r of the true product, an integer with 0 ≤ r ≤ min(widths).

    Returns:
      LearningCoefficient(λ, m, Σ) with Σ as sorted 0-based indices into `widths`.
    """
    if isinstance(widths, str | bytes) or np.ndim(widths) != 1:
        raise ValueError(f"widths must be a 1-d sequence of positive integers, got {widths!r}")
    widths = [check_positive_int("widths", w) for w in widths]
    if len(widths) < 2:
        raise ValueError(f"widths must have at least two entries (input and output), got {widths}")
    r = check_nonnegative_int("rank", rank)
    if r > min(widths):
        raise ValueError(f"rank must be at most min(widths) = {min(widths)}, got {r}")
    m = [w - r for w in widths]
    sigma = _aoyagi_sigma(m)
    ell = len(sigma) - 1
    total = sum(m[j] for j in sigma)
    m_bar = -(-total // ell) - 1  # ⌈S/ℓ⌉ − 1 in integers
    a = total - ell * m_bar
    lam = (
        Fraction(r * (widths[0] + widths[-1]) - r * r, 2)
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction(ell * (ell - 1), 4) * Fraction(total, ell) ** 2
        + Fraction(sum(m[i] * m[j] for i, j in itertools.combinations(sigma, 2)), 2)
    )
    return LearningCoefficient(float(lam), a * (ell - a) + 1, tuple(sigma))
