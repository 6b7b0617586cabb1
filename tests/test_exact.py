"""Exact learning coefficients (tmsjax.llc.exact) against known answers.

Each expected number says where it comes from: a paper's formula worked by hand, an independent
derivation (normal crossings, blow-ups, submersions), or a published threshold.
"""

import itertools
from fractions import Fraction

import pytest

from tmsjax.llc import exact


def small_widths(max_width=3, max_len=5):
    """Every width tuple of length 2..max_len with entries 1..max_width, with every valid rank."""
    for length in range(2, max_len + 1):
        for widths in itertools.product(range(1, max_width + 1), repeat=length):
            for r in range(min(widths) + 1):
                yield widths, r


def num_params(widths):
    return sum(a * b for a, b in itertools.pairwise(widths))


# --- Reduced-rank regression --------------------------------------------------------------------


@pytest.mark.parametrize(
    "N, H, M, r, lam, m",
    [
        # First case, N + M + H + r odd: [2(H+r)(M+N) - (M-N)^2 - (H+r)^2 + 1]/8, m = 2.
        (2, 2, 2, 1, 2.0, 2),  # [2*3*4 - 0 - 9 + 1]/8 = 16/8
        (3, 2, 3, 1, 3.5, 2),  # [2*3*6 - 0 - 9 + 1]/8 = 28/8
        (5, 5, 5, 2, 11.5, 2),  # [2*7*10 - 0 - 49 + 1]/8 = 92/8
        # First case, even: (3, 2, 3), r = 0: [2*2*6 - 0 - 4]/8 = 20/8, m = 1.
        (3, 2, 3, 0, 2.5, 1),
        # M + H < N + r (3 + 2 < 6 + 1): (HM - Hr + Nr)/2 = (6 - 2 + 6)/2.
        (6, 2, 3, 1, 5.0, 1),
        # N + H < M + r (3 + 2 < 6 + 1): (HN - Hr + Mr)/2 = (6 - 2 + 6)/2.
        (3, 2, 6, 1, 5.0, 1),
        # M + N < H + r (2 + 2 < 5 + 1): MN/2 = 2.
        (2, 5, 2, 1, 2.0, 1),
    ],
)
def test_rrr_hand_cases(N, H, M, r, lam, m):
    assert exact.reduced_rank_regression(N, H, M, r) == (lam, m, None)


def test_rrr_scalar_product_is_a_normal_crossing():
    # N = H = M = 1, r = 0: K = (ab)^2 = a^2 b^2, a normal crossing with k = (1, 1): λ = 1/2, m = 2.
    # The formula: odd sum 3, [2*1*2 - 0 - 1 + 1]/8 = 1/2.
    assert exact.reduced_rank_regression(1, 1, 1, 0) == (0.5, 2, None)
    assert exact.normal_crossing([1, 1]) == (0.5, 2, None)


def test_rrr_product_of_two_norms():
    # (N, H, M) = (5, 1, 2), r = 0: BA = b a^T with a in R^5, b in R^2, so K ∝ |a|^2 |b|^2. Polar
    # coordinates in each factor give ρ_a^2 ρ_b^2 with Jacobian ρ_a^4 ρ_b^1: poles 5/2 and 2/2, so
    # λ = 1, m = 1. Branch M + H < N + r: (HM - Hr + Nr)/2 = 2/2.
    assert exact.reduced_rank_regression(5, 1, 2, 0) == (1.0, 1, None)


# --- Deep linear networks -----------------------------------------------------------------------


def test_dln_two_layers_is_rrr_exhaustive():
    # Aoyagi (2024) Thm 2: with three widths, Thm 1 reduces to Aoyagi & Watanabe (2005), the
    # independent branch formulas of reduced_rank_regression; λ and m must agree everywhere.
    for N, H, M in itertools.product(range(1, 7), repeat=3):
        for r in range(min(N, H, M) + 1):
            dln = exact.deep_linear_network((N, H, M), r)
            rrr = exact.reduced_rank_regression(N, H, M, r)
            assert (dln.llc, dln.multiplicity) == (rrr.llc, rrr.multiplicity), (N, H, M, r)


def test_dln_one_layer_is_regular():
    # One weight matrix H2 x H1: y = Wx is a regular model with d = H1 H2 at any rank: λ = d/2.
    for h1, h2 in itertools.product(range(1, 7), repeat=2):
        for r in range(min(h1, h2) + 1):
            lc = exact.deep_linear_network([h1, h2], r)
            assert (lc.llc, lc.multiplicity) == (h1 * h2 / 2, 1)
            assert lc.sigma == (0, 1)
            assert lc.llc == exact.regular(h1 * h2).llc


def test_dln_three_layers_by_hand():
    # Widths (2, 5, 3, 4), r = 1: M = (1, 4, 2, 3). Sorted 1, 2, 3, 4: the 3-prefix has S = 6 ≥ 2*3
    # and 6 < 2*4, so Σ = widths {2, 3, 4} (indices 0, 2, 3), ℓ = 2, M̄ = ⌈6/2⌉ - 1 = 2, a = 2.
    # λ = (-1 + 1*(2 + 4))/2 + 0 - (2*1/4)*3^2 + (1*2 + 1*3 + 2*3)/2 = 2.5 - 4.5 + 5.5 = 3.5, m = 1.
    # Cross-check: the wide layer is outside Σ, and the RRR (2, 3, 4), r = 1, is the even first
    # case: [2*4*6 - 4 - 16]/8 = 28/8 = 3.5.
    assert exact.deep_linear_network((2, 5, 3, 4), 1) == (3.5, 1, (0, 2, 3))
    assert exact.reduced_rank_regression(2, 3, 4, 1) == (3.5, 1, None)
    # Widths (2, 2, 2, 2), r = 1: M = (1, 1, 1, 1), Σ = all, ℓ = 3, S = 4, M̄ = 1, a = 1:
    # λ = 3/2 + 2/12 - (6/4)(4/3)^2 + 6/2 = 2, m = 1*2 + 1 = 3.
    assert exact.deep_linear_network((2, 2, 2, 2), 1) == (2.0, 3, (0, 1, 2, 3))


@pytest.mark.parametrize("num_layers", range(1, 7))
def test_dln_scalar_chain_is_a_normal_crossing(num_layers):
    # All widths 1, r = 0: K = (w_1 ... w_L)^2, the normal crossing with k = (1, ..., 1):
    # λ = 1/2, m = L. An independent check of λ and of m = a(ℓ - a) + 1 for ℓ up to 6.
    lc = exact.deep_linear_network([1] * (num_layers + 1), 0)
    assert (lc.llc, lc.multiplicity) == tuple(exact.normal_crossing([1] * num_layers)[:2])
    assert (lc.llc, lc.multiplicity) == (0.5, num_layers)


@pytest.mark.parametrize("hidden", range(1, 7))
def test_dln_scalar_through_a_hidden_layer(hidden):
    # Widths (1, n, 1), r = 0: K = q(a, b)^2 with q = a·b a non-degenerate quadratic form in 2n
    # variables. Blowing up the origin gives a pole at 2n/4; the smooth cone {q = 0} away from it
    # gives 1/2. So λ = min(n/2, 1/2) = 1/2, with m = 2 when they tie (n = 1) and 1 otherwise.
    lc = exact.deep_linear_network((1, hidden, 1), 0)
    assert (lc.llc, lc.multiplicity) == (0.5, 2 if hidden == 1 else 1)


def test_dln_full_rank_at_the_smaller_end_is_regular():
    # r = min(H_1, H_{L+1}) (≤ every width): say r = H_1. Then W_{L-1}...W_1 has full column rank
    # r, so dW_L (W_{L-1}...W_1) already fills all H_{L+1} x H_1 matrices: the product map is a
    # submersion on the whole true set, K is locally a sum of H_1 H_{L+1} squares, so
    # λ = H_1 H_{L+1}/2 and m = 1.
    checked = 0
    for widths, r in small_widths():
        if r == min(widths[0], widths[-1]):
            lc = exact.deep_linear_network(widths, r)
            assert (lc.llc, lc.multiplicity) == (widths[0] * widths[-1] / 2, 1), (widths, r)
            checked += 1
    assert checked > 100


def test_dln_at_most_half_the_parameter_count():
    # λ ≤ d/2 for any model (Watanabe 2009), with d = Σ H_j H_{j+1} parameters.
    for widths, r in small_widths():
        assert exact.deep_linear_network(widths, r).llc <= num_params(widths) / 2, (widths, r)


def test_dln_reversal_symmetry():
    # Transposing y = W_L...W_1 x gives the network with reversed widths and the same K up to
    # relabelling: same λ and m, Σ mirrored.
    for widths, r in small_widths():
        lc = exact.deep_linear_network(widths, r)
        back = exact.deep_linear_network(widths[::-1], r)
        n = len(widths)
        assert (back.llc, back.multiplicity) == (lc.llc, lc.multiplicity), (widths, r)
        assert back.sigma == tuple(sorted(n - 1 - j for j in lc.sigma))


def test_dln_bounded_below_by_the_rank_r_matrices():
    # The true products near a rank-r truth fill the manifold of rank-r H_{L+1} x H_1 matrices, of
    # dimension r(H_1 + H_{L+1} - r); those directions are regular, so λ ≥ r(H_1 + H_{L+1} - r)/2.
    # In the formula the Σ terms are [a(ℓ-a)/ℓ + S²/ℓ - Σ M_j²]/4 ≥ 0 by condition (ii), and they
    # vanish exactly when some M_j = 0 (a width equals r): Aoyagi's Remark 1, with m = 1 there.
    for widths, r in small_widths():
        lc = exact.deep_linear_network(widths, r)
        floor = r * (widths[0] + widths[-1] - r) / 2
        if min(widths) == r:
            assert (lc.llc, lc.multiplicity) == (floor, 1), (widths, r)
        else:
            assert lc.llc > floor, (widths, r)


def test_dln_sigma_is_the_unique_subset():
    # Brute force over every subset: exactly one satisfies Aoyagi's three conditions (ties included,
    # e.g. all widths equal), and it is the prefix the module returns.
    for widths, r in small_widths():
        m = [w - r for w in widths]
        found = []
        for size in range(2, len(m) + 1):
            for subset in itertools.combinations(range(len(m)), size):
                rest = [m[j] for j in range(len(m)) if j not in subset]
                ell, total, top = size - 1, sum(m[j] for j in subset), max(m[j] for j in subset)
                if total >= ell * top and all(top < x and total < ell * x for x in rest):
                    found.append(subset)
        assert found == [exact.deep_linear_network(widths, r).sigma], (widths, r)


def test_dln_exact_rationals():
    # The ℓ = 3 term a(ℓ-a)/(4ℓ) has denominator 12: the float is the correctly rounded rational.
    # Widths (3, 3, 3, 3), r = 1: M = (2, 2, 2, 2), S = 8, M̄ = 2, a = 2:
    # λ = (-1 + 6)/2 + 2/12 - (6/4)(8/3)^2 + 6*4/2 = 5/2 + 1/6 - 32/3 + 12 = 4, m = 3.
    assert exact.deep_linear_network((3, 3, 3, 3), 1) == (4.0, 3, (0, 1, 2, 3))
    # Widths (2, 3, 3, 3), r = 0: M = (2, 3, 3, 3), S = 11, ℓ = 3, M̄ = 3, a = 2:
    # λ = 2/12 - (6/4)(11/3)^2 + (3*(2*3) + 3*(3*3))/2 = 1/6 - 121/6 + 45/2 = 5/2, m = 3.
    lam = Fraction(1, 6) - Fraction(121, 6) + Fraction(45, 2)
    assert exact.deep_linear_network((2, 3, 3, 3), 0) == (float(lam), 3, (0, 1, 2, 3))


# --- Normal crossings, monomial sums, regular models --------------------------------------------


def test_normal_crossing():
    # min over i of (h_i + 1)/(2 k_i); m counts the minimisers.
    assert exact.normal_crossing([1, 2]) == (0.25, 1, None)  # min(1/2, 1/4)
    assert exact.normal_crossing([2, 2, 2]) == (0.25, 3, None)  # all tie: m = d
    assert exact.normal_crossing([1, 2], h=[0, 1]) == (0.5, 2, None)  # 1/2 and 2/4 tie
    assert exact.normal_crossing([0, 1]) == (0.5, 1, None)  # w_1 absent from K: no pole
    assert exact.normal_crossing([1], h=[0.5]) == (0.75, 1, None)  # 1.5/2


def test_regular():
    assert exact.regular(7) == (3.5, 1, None)


@pytest.mark.parametrize(
    "exponents, h, lam, m",
    [
        # w1^2 + w2^2: P has facet x + y = 2, the ray t(1, 1) meets it at t = 1 inside the edge.
        ([[1, 0], [0, 1]], None, 1.0, 1),
        # w1^2 w2^2: the ray meets the vertex (2, 2) at t = 2 (codimension 2).
        ([[1, 1]], None, 0.5, 2),
        # w1^2 + w2^4: facet x/2 + y/4 = 1, t = 4/3; also additivity 1/2 + 1/4.
        ([[1, 0], [0, 2]], None, 0.75, 1),
        # w1^2 + w2^2 + w3^6 with h = (0, 1, 0): disjoint variables add, 1/2 + 2/2 + 1/6 = 5/3.
        ([[1, 0, 0], [0, 1, 0], [0, 0, 3]], [0, 1, 0], 5 / 3, 1),
        # Disjoint sum of two (1/2, m = 2) crossings w1²w2² + w3²w4²: λ adds, m = 2 + 2 - 1 = 3.
        ([[1, 1, 0, 0], [0, 0, 1, 1]], None, 1.0, 3),
        # w1^2 w2^2 + w1^4: the ray meets (2, 2), an end of the edge to (4, 0). By hand: blowing up
        # the origin, w2 = u w1 gives w1^4 (u^2 + 1) with Jacobian |w1| (pole 2/4), and w1 = v w2
        # gives v^2 w2^4 (1 + v^2) with Jacobian |w2| (poles 1/2 and 2/4): λ = 1/2, m = 2.
        ([[1, 1], [2, 0]], None, 0.5, 2),
        # w1^4 + w1^2 w2^2 + w2^4 ~ ρ^4 in polar coordinates (Jacobian ρ): λ = 2/4, m = 1; the
        # generator (2, 2) is then inside the edge from (4, 0) to (0, 4), not a vertex.
        ([[2, 0], [1, 1], [0, 2]], None, 0.5, 1),
        # Macaulay2 MultiplierIdeals docs (logCanonicalThreshold): lct <y^2, x^3> = 5/6; K is the
        # sum of the generators squared, whose threshold is half the ideal's: 5/12.
        ([[0, 2], [3, 0]], None, 5 / 12, 1),
        # Howald (2001), Example 7 (also in the Macaulay2 docs): lct <xy^4z^6, x^5y, y^7z, x^8z^8>
        # = 68/191, so λ = 34/191 (the ray meets one facet: m = 1).
        ([[1, 4, 6], [5, 1, 0], [0, 7, 1], [8, 0, 8]], None, 34 / 191, 1),
        # Macaulay2 MultiplierIdeals docs: <x^13, x^6y^4, y^9> with the monomial x^2 y has
        # threshold 1/2 on two facets, 4x + 7y = 52 and 5x + 6y = 54, which meet at the vertex
        # (6, 4): with prior |x|^2 |y|, λ = 1/4 and m = 2.
        ([[13, 0], [6, 4], [0, 9]], [2, 1], 0.25, 2),
    ],
)
def test_monomial_sum(exponents, h, lam, m):
    lc = exact.monomial_sum(exponents, h)
    assert lc.llc == pytest.approx(lam, rel=1e-9)
    assert lc.multiplicity == m


def test_single_monomial_is_a_normal_crossing():
    # One monomial: P is a translated orthant, so both functions must agree on λ and m.
    for k in itertools.product(range(3), repeat=3):
        if not any(k):
            continue
        for h in ([0, 0, 0], [1, 0, 2]):
            nc = exact.normal_crossing(k, h)
            ms = exact.monomial_sum([k], h)
            assert ms.llc == pytest.approx(nc.llc, rel=1e-9), (k, h)
            assert ms.multiplicity == nc.multiplicity, (k, h)


# --- Argument checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: exact.reduced_rank_regression(0, 2, 2, 0), "N"),
        (lambda: exact.reduced_rank_regression(2, 1.5, 2, 0), "H"),
        (lambda: exact.reduced_rank_regression(2, 2, True, 0), "M"),
        (lambda: exact.reduced_rank_regression(2, 2, 2, -1), "r"),
        (lambda: exact.reduced_rank_regression(2, 1, 2, 2), "r"),
        (lambda: exact.deep_linear_network([3], 0), "widths"),
        (lambda: exact.deep_linear_network([3, 0, 2], 0), "widths"),
        (lambda: exact.deep_linear_network([3, 2.5], 0), "widths"),
        (lambda: exact.deep_linear_network("32", 0), "widths"),
        (lambda: exact.deep_linear_network([[3, 2]], 0), "widths"),
        (lambda: exact.deep_linear_network([3, 2, 4], 3), "rank"),
        (lambda: exact.deep_linear_network([3, 2, 4], -1), "rank"),
        (lambda: exact.deep_linear_network([3, 2, 4], 0.5), "rank"),
        (lambda: exact.normal_crossing([0, 0]), "k"),
        (lambda: exact.normal_crossing([1, -1]), "k"),
        (lambda: exact.normal_crossing([1, float("nan")]), "k"),
        (lambda: exact.normal_crossing([1, 1], h=[0]), "h"),
        (lambda: exact.normal_crossing([1, 1], h=[0, -1]), "h"),
        (lambda: exact.monomial_sum([1, 1]), "exponents"),
        (lambda: exact.monomial_sum([[1, 0], [0, 0]]), "exponents"),
        (lambda: exact.monomial_sum([[1, 0.5]]), "exponents"),
        (lambda: exact.monomial_sum([[1, -1]]), "exponents"),
        (lambda: exact.monomial_sum([[1, 1]], h=[0, -2]), "h"),
        (lambda: exact.regular(0), "d"),
    ],
)
def test_bad_arguments_name_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()
