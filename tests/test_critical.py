"""The k^{σ+,σ−}-gon catalogue against docs/paper_numbers.md §3–5."""

import numpy as np
import pytest

import tmsjax
from tmsjax.tms.critical import critical_points, expected_loss, solve_kgon

# The 18 losses of the c = 6 catalogue as printed in Chen et al. (2023) (docs/paper_numbers.md §3).
PAPER_LOSSES_C6 = {
    "6": 0.04819, "5+": 0.06180, "5": 0.06874,
    "4++": 0.09722, "4+": 0.10417, "4": 0.11111,
    "4++-": 0.15278, "4+-": 0.15972, "4-": 0.16667,
    "4++--": 0.20833, "4+--": 0.21528, "4--": 0.22222,
    "4++---": 0.26389, "4+---": 0.27083, "4---": 0.27778,
    "4++----": 0.31944, "4+----": 0.32639, "4----": 0.33333,
}  # fmt: skip


def test_c6_catalogue_reproduces_the_paper():
    points = critical_points(6)
    assert len(points) == 18
    assert {p.label: round(p.loss, 5) for p in points} == PAPER_LOSSES_C6
    assert max(p.grad_norm for p in points) < 1e-10
    by_label = {p.label: p for p in points}
    for label, llc in [("5", 7.0), ("5+", 8.5), ("6", 8.5)]:
        assert by_label[label].llc == llc
        assert by_label[label].hessian_rank == 2 * llc
        assert by_label[label].num_negative == 0
    assert all(p.llc is None for p in points if p.k == 4)


def test_polygon_parameters_and_constants():
    for k, (radius, bias) in {
        5: (1.17046, -0.28230),
        6: (1.32053, -0.61814),
        7: (1.44839, -0.96691),
        8: (1.55045, -1.29119),
    }.items():
        l_star, b_star, _ = solve_kgon(k)
        assert (round(l_star, 5), round(b_star, 5)) == (radius, bias)
    constants = {p.label: p.constant for p in critical_points(6)}
    # docs/paper_numbers.md §5 (the notes' 6.37767 comes from rounded l*, b*; exact: 6.377638).
    for label, value in {"5": 3.62417, "5+": 3.62764, "4": 2.0, "4+": 2.00347}.items():
        assert constants[label] == pytest.approx(value, abs=5e-6)
    l6, b6, _ = solve_kgon(6)
    assert constants["6"] == pytest.approx(
        3 * (l6**2 + b6**2), rel=1e-12
    )  # ½‖w*‖², 6 columns and biases
    assert round(constants["6"], 5) == 6.37764  # the notes' 6.37767 uses l*, b* rounded to 5 digits


@pytest.mark.parametrize("c", [4, 5, 7, 8])
def test_other_feature_counts(c):
    points = critical_points(c)
    expected_count = 5 * (c - 3) + sum(c - k + 1 for k in range(5, c + 1))
    assert len(points) == expected_count
    assert max(p.grad_norm for p in points) < 1e-10
    for p in points:
        assert p.loss == pytest.approx(
            expected_loss(p.k, c, p.sigma_plus, p.sigma_minus), abs=1e-12
        )
        if p.llc is not None:
            assert p.hessian_rank == 2 * p.llc and p.num_negative == 0
        elif p.k >= 5:
            # σ⁺ with negative-bias dead columns left over: a saddle (see tmsjax.tms.critical).
            assert p.sigma_plus >= 1 and p.k + p.sigma_plus < c and p.num_negative == 2


def test_c8_seven_gon_beats_eight_gon():
    losses = {p.label: p.loss for p in critical_points(8)}
    assert round(losses["8"], 5) == 0.11555 and round(losses["7"], 5) == 0.11453


def test_dead_positive_bias_lowers_loss_by_quarter_c_squared():
    losses = {p.label: p.loss for p in critical_points(6)}
    assert losses["5"] - losses["5+"] == pytest.approx(1 / 144, abs=1e-12)
    assert losses["4+"] - losses["4++"] == pytest.approx(1 / 144, abs=1e-12)


def test_catalogue_points_are_consistent_with_potential():
    for p in critical_points(6):
        assert float(
            tmsjax.tms.potential(p.W.astype(np.float32), p.b.astype(np.float32))
        ) == pytest.approx(p.loss, rel=1e-5)


def test_expected_loss_and_solve_reject_impossible_polygons():
    with pytest.raises(ValueError, match="num_features"):
        expected_loss(5, 3)
    with pytest.raises(ValueError, match="sigma_minus"):
        expected_loss(5, 6, sigma_minus=1)
    with pytest.raises(ValueError, match="k"):
        solve_kgon(-1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_features": 6, "num_hidden": 3}, "num_hidden"),
        ({"num_features": 3}, "at least 4"),
        ({"num_features": 0}, "num_features"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        critical_points(**kwargs)
