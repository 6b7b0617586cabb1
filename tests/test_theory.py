"""Free-energy theory: crossings from the catalogue numbers (Chen et al. 2023, §5), occupancy
algebra."""

import numpy as np
import pytest

from tmsjax.tms import theory


def test_five_to_six_crossing_near_601():
    assert theory.crossing_by_label(6, "5", "6") == pytest.approx(601, abs=1.0)


def test_five_plus_to_six_crossing_near_202():
    assert theory.crossing_by_label(6, "5+", "6") == pytest.approx(202, abs=1.0)


def test_crossing_without_constant_near_445():
    n_c = theory.crossing_by_label(6, "5", "6", include_constant=False)
    assert n_c == pytest.approx(445, abs=1.0)


def test_likelihood_scale_rescales_n():
    base = theory.crossing_by_label(6, "5", "6")
    n_c = theory.crossing_by_label(6, "5", "6", temperature=2.0)
    assert n_c == pytest.approx(2 * base, rel=1e-6)


def test_wider_prior_moves_crossing_down():
    wide = theory.crossing_by_label(6, "5", "6", prior_std=3.0)
    assert wide < theory.crossing_by_label(6, "5", "6")


def test_crossing_solves_the_equation():
    phases = {p.label: p for p in theory.catalogue_phases(6)}
    n_c = theory.crossing(phases["5"], phases["6"])
    f5 = theory.free_energy(n_c, *phases["5"][1:])
    f6 = theory.free_energy(n_c, *phases["6"][1:])
    assert f5 == pytest.approx(f6, abs=1e-8)


def test_occupancy_is_a_distribution_and_switches():
    phases = theory.catalogue_phases(6)
    by_label = {p.label: p for p in phases}
    n_c = theory.crossing(by_label["5"], by_label["6"])
    occupancy = theory.theoretical_occupancy([100, n_c, 5000], phases)
    np.testing.assert_allclose(occupancy.sum(axis=1), 1.0)
    labels = [p.label for p in phases]
    assert occupancy[0, labels.index("5")] > 0.99
    five, six = labels.index("5"), labels.index("6")
    assert occupancy[1, five] == pytest.approx(occupancy[1, six], rel=1e-6)
    assert occupancy[2, labels.index("6")] > 0.999


def test_four_gons_need_estimates():
    assert [p.label for p in theory.catalogue_phases(6)] == ["6", "5+", "5"]
    with_four = theory.catalogue_phases(6, llc_estimates={"4": 5.0})
    assert "4" in [p.label for p in with_four]
    with pytest.raises(ValueError, match="labels"):
        theory.catalogue_phases(6, labels=["4", "6"])
    with pytest.raises(ValueError, match="llc_estimates"):
        theory.catalogue_phases(6, llc_estimates={"9": 1.0})


def test_free_energy_rejects_nonpositive_n():
    with pytest.raises(ValueError, match="n must be positive"):
        theory.free_energy(0, 0.1, 7.0, 3.0)


def test_a_phase_has_no_crossing_with_itself():
    phases = {p.label: p for p in theory.catalogue_phases(6)}
    with pytest.raises(ValueError, match="same phase '5'"):
        theory.crossing(phases["5"], phases["5"])
    with pytest.raises(ValueError, match="label_from and label_to are both '6'"):
        theory.crossing_by_label(6, "6", "6")
    with pytest.raises(ValueError, match=r"same phase more than once: \['5'\]"):
        theory.all_crossings([phases["5"], phases["6"], phases["5"]])
    # Two labels with one free energy (a copy under another name) are the same phase to the formula.
    twin = phases["5"]._replace(label="5 again")
    with pytest.raises(ValueError, match="free energies are equal at every n"):
        theory.crossing(phases["5"], twin)
    # Without the constant, phases that differ only in it are the same to the formula too.
    shifted = twin._replace(constant=twin.constant + 1.0)
    # Parallel free energies (ΔF = 1 at every n) never cross.
    assert np.isnan(theory.crossing(phases["5"], shifted, n_range=(1.0, 1e4)))
    with pytest.raises(ValueError, match=r"equal loss, llc\)"):
        theory.crossing(phases["5"], shifted, include_constant=False)
    # Distinct phases still cross where they did.
    assert theory.all_crossings([phases["5"], phases["6"]]) == {"5->6": pytest.approx(601, abs=1.0)}


def test_empirical_crossing_interpolates_on_log_n():
    n = [100, 400]
    assert theory.empirical_crossing(n, [0.75, 0.25], [0.25, 0.75]) == pytest.approx(200.0)
    assert np.isnan(theory.empirical_crossing(n, [0.9, 0.8], [0.1, 0.2]))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: theory.crossing_by_label(6, "5", "6", temperature=-1), "temperature"),
        (lambda: theory.crossing_by_label(6, "5", "6", prior_std=0), "prior_std"),
        (lambda: theory.crossing_by_label(6, "5", "6", n_range=(10, 1)), "n_range"),
        (
            lambda: theory.empirical_crossing([100, 200, 400], [0.9, 0.1], [0.1, 0.9, 1.0]),
            "one length",
        ),
        (lambda: theory.free_energy(np.nan, 0.1, 7, 3), "n must be"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_laplace_crossing_experiment_runs_and_agrees_with_the_formula(tmp_path):
    from experiments import common, laplace_crossing

    args = common.parse_args(laplace_crossing, ["--out", str(tmp_path), "--sizes", "300"])
    summary = laplace_crossing.main(args)
    phases = {p.label: p for p in theory.catalogue_phases(6)}
    F = theory.free_energies(300, [phases["5"], phases["6"]])
    odds = summary["log_odds_6_vs_5"]
    assert odds["leading_order"][0] == pytest.approx(float(F[0, 0] - F[0, 1]), rel=1e-9)
    # The dead column's weighted volume is below 1 (a prior expectation of e^{-n ΔL} over a region
    # where ΔL is mostly ≥ 0) and above the prior mass of its exactly flat part (≈ 0.014).
    assert np.log(0.012) < odds["dead_column_log_volume"][0] < 0
    assert np.isfinite(odds["laplace"][0]) and np.isfinite(odds["leading_order_data"][0])
    assert (tmp_path / "log_odds.png").exists()
