"""Local free energies of the TMS phases (tmsjax.tms.free_energy) and their experiment."""

import math

import jax
import numpy as np
import pytest

from tmsjax.tms.free_energy import local_free_energies, occupancy_from_free_energies


def test_occupancy_is_a_softmax_with_delta_method_errors():
    F = np.array([[10.0, 11.0, 12.5, np.inf]])
    se = np.array([[0.05, 0.04, 0.03, np.nan]])
    p, p_se = occupancy_from_free_energies(F, se)
    weights = np.exp(-F[0, :3] + 10.0)
    assert np.allclose(p[0, :3], weights / weights.sum()) and p[0, 3] == 0 and p_se[0, 3] == 0
    # The delta method against the spread of the softmax of F drawn with those errors (small
    # errors: the linearisation is exact to O(se²); 20000 draws give the spread to ~1%).
    draws = np.random.default_rng(0).normal(F[0, :3], se[0, :3], size=(20000, 3))
    logits = -draws - (-draws).max(axis=1, keepdims=True)
    spread = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).std(axis=0)
    assert np.allclose(p_se[0, :3], spread, rtol=0.05)


def test_crossing_with_error_is_the_interpolated_zero_and_its_propagated_error():
    from experiments.laplace_crossing import crossing_with_error

    # log-odds (n − 450)/100: zero at 450 between the grid points 400 and 500, slope 1/100, so
    # an error of 0.2 nats there is 20 in n.
    sizes = [300, 400, 500, 600]
    odds = [(n - 450) / 100 for n in sizes]
    n_c, error, per_nat = crossing_with_error(sizes, odds, [0.2] * 4)
    assert (
        n_c == pytest.approx(450) and error == pytest.approx(20) and per_nat == pytest.approx(100)
    )
    assert all(math.isnan(v) for v in crossing_with_error(sizes, [-1.0] * 4, [0.1] * 4))


def test_occupancy_statistics_count_against_chance():
    from experiments.local_free_energy import occupancy_statistics

    rows = [dict(z=z, predicted_se=0.1, reference_se=0.1) for z in (0.0, 1.0, -2.5, 1.0)]
    rows.append(dict(z=0.0, predicted_se=0.0, reference_se=0.0))  # both empty: no information
    stats = occupancy_statistics(rows)
    assert stats["comparisons"] == 4 and stats["beyond_2se"] == 1
    assert stats["mean_z_squared"] == pytest.approx((1 + 6.25 + 1) / 4)
    assert stats["expected_beyond_2se_if_exact"] == pytest.approx(4 * 0.0455, rel=1e-2)
    assert stats["bonferroni_threshold"] == pytest.approx(2.4977, rel=1e-3)  # Φ⁻¹(1 − 0.025/4)


def test_bad_input_names_the_argument():
    x = np.eye(6)[np.arange(40) % 6] * 0.5
    with pytest.raises(ValueError, match="x must be"):
        local_free_energies(jax.random.key(0), x[0], [10])
    with pytest.raises(ValueError, match="freeze_size"):
        local_free_energies(jax.random.key(0), x, [10], freeze_size=0.0)
    with pytest.raises(ValueError, match="prior_std"):
        local_free_energies(jax.random.key(0), x, [10], prior_std=-1.0)
    with pytest.raises(ValueError, match="sizes"):
        local_free_energies(jax.random.key(0), x, [0])


@pytest.mark.slow
def test_frozen_phases_reproduce_the_reference_occupancies():
    """At n = 300 (5- and 6-gon both present) the softmax of the measured −F_α matches plain
    tempered SMC's occupancies within 3 combined standard errors, and freezing leaves the
    whole evidence where plain tempered SMC puts it."""
    from experiments.bayesian_transitions import dataset_rows
    from experiments.local_free_energy import reference_occupancy

    x = np.asarray(dataset_rows(0, 300, 6))
    result = local_free_energies(
        jax.random.key(1),
        x,
        [300, 300],
        freeze_size=[100.0, math.inf],
        num_particles=128,
        num_replicates=8,
    )
    p, p_se = occupancy_from_free_energies(result.free_energy[:1], result.standard_error[:1])
    ref, ref_se = reference_occupancy(result.evidence.share[1:])
    for label in ("6", "5"):
        a = result.labels.index(label)
        assert np.isfinite(result.free_energy[0, a])
        z = (p[0, a] - ref[0, a]) / math.hypot(p_se[0, a], ref_se[0, a])
        assert abs(z) < 3, (label, p[0, a], ref[0, a], p_se[0, a], ref_se[0, a])
    # Freezing the phases must not change the whole evidence: the frozen run's log Z against plain
    # tempered SMC's (independent replicates), within 3 combined standard errors.
    log_z, log_z_se = result.evidence.log_total, result.evidence.total_error
    z = (log_z[0] - log_z[1]) / math.hypot(log_z_se[0], log_z_se[1])
    assert abs(z) < 3, (log_z, log_z_se)


@pytest.mark.slow
def test_experiment_smoke(tmp_path):
    from experiments import common, local_free_energy

    args = common.configure(local_free_energy, tmp_path, preset="smoke", dead_draws=2000)
    summary = local_free_energy.main(args)
    assert summary["sizes"] == [300]
    terms = summary["decomposition"]["0"]
    for label in ("6", "5"):
        assert set(local_free_energy.TERMS) <= set(terms[label])
        assert np.isfinite(terms[label]["laplace"]).all()
    assert (tmp_path / "terms.png").exists() and (tmp_path / "occupancy.png").exists()
