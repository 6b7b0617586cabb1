"""NUTS / ChEES sweeps: Gaussian targets with known moments, tolerances from the Monte Carlo
error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmsjax import sharding
from tmsjax.sampling import diagnostics
from tmsjax.sampling.nuts import lockstep_efficiency, make_chees_sweep, make_nuts_sweep

# Five standard errors: a false alarm rate of ~6e-7 per component, so no seed hunting is needed.
NUM_SE = 5.0


def gaussian_logdensity(position, data):
    mean, std = data
    return -0.5 * jnp.sum(((position - mean) / std) ** 2)


def _targets(num_targets):
    mean = jnp.arange(num_targets * 3, dtype=jnp.float32).reshape(num_targets, 3) - 2.0
    std = jnp.broadcast_to(jnp.array([0.3, 1.0, 3.0]), (num_targets, 3))
    return mean, std


def _check_moments(draws, mean, std):
    """draws (chains, samples, 3) of one target: mean and variance within NUM_SE standard errors."""
    draws = np.asarray(draws, dtype=float)
    ess_x = diagnostics.effective_sample_size(draws)
    ess_x2 = diagnostics.effective_sample_size((draws - np.asarray(mean)) ** 2)
    sample_mean = draws.mean(axis=(0, 1))
    sample_var = draws.var(axis=(0, 1))
    var = np.asarray(std) ** 2
    np.testing.assert_array_less(np.abs(sample_mean - mean), NUM_SE * np.sqrt(var / ess_x))
    # Var of the squared deviation of a Gaussian is 2σ⁴.
    np.testing.assert_array_less(
        np.abs(sample_var - var), NUM_SE * np.sqrt(2 * var**2 / ess_x2) + 1e-6
    )


def test_nuts_recovers_gaussian_mean_and_variance(key):
    mean, std = _targets(2)
    num_chains = 4
    data = (jnp.repeat(mean, num_chains, 0), jnp.repeat(std, num_chains, 0))
    sweep = make_nuts_sweep(gaussian_logdensity, num_warmup=200, num_samples=500)
    keys = jax.random.split(key, 2 * num_chains)
    result = sweep(keys, jnp.zeros((2 * num_chains, 3)), data)
    assert int(result.info.is_divergent.sum()) == 0
    draws = np.asarray(result.positions).reshape(2, num_chains, 500, 3)
    for target in range(2):
        _check_moments(draws[target], mean[target], std[target])
    assert np.all(np.asarray(diagnostics.rhat(draws[0])) < 1.05)
    assert 0 < lockstep_efficiency(np.asarray(result.info.num_integration_steps)) <= 1


@pytest.mark.slow
def test_chees_recovers_gaussian_mean_and_variance(key):
    mean, std = _targets(2)
    num_chains = 8
    sweep = make_chees_sweep(
        gaussian_logdensity, num_chains=num_chains, num_warmup=200, num_samples=300
    )
    start = jax.random.normal(key, (2, num_chains, 3))
    result = sweep(jax.random.split(key, 2), start, (mean, std))
    assert np.asarray(result.positions).shape == (2 * num_chains, 300, 3)
    draws = np.asarray(result.positions).reshape(2, num_chains, 300, 3)
    for target in range(2):
        _check_moments(draws[target], mean[target], std[target])


def test_sharded_sweep_equals_unsharded(key, x64):
    # float64: in float32 the sharded program's different vectorisation changes the last bits, and
    # MCMC amplifies them chaotically within a few dozen steps; in float64 they stay negligible.
    assert jax.device_count() == 8
    mean, std = jax.tree.map(
        lambda a: a.astype(jnp.float64), _targets(5)
    )  # 5 grid elements over 8 devices: padding is exercised
    keys = jax.random.split(key, 5)
    start = jnp.zeros((5, 3), jnp.float64)
    kwargs = dict(num_warmup=30, num_samples=20)
    plain = make_nuts_sweep(gaussian_logdensity, **kwargs)(keys, start, (mean, std))
    sharded = make_nuts_sweep(gaussian_logdensity, mesh=sharding.grid_mesh(), **kwargs)(
        keys, start, (mean, std)
    )
    np.testing.assert_allclose(
        np.asarray(sharded.positions), np.asarray(plain.positions), rtol=1e-9, atol=1e-9
    )
    np.testing.assert_array_equal(
        np.asarray(sharded.info.num_integration_steps), np.asarray(plain.info.num_integration_steps)
    )


def test_shared_data_equals_per_lane_data(key, x64):
    # data_axes=(None, 0): the mean is shared by every lane, the std is per lane; the result must be
    # that of the sweep with the mean copied to every lane.
    mean, std = jax.tree.map(lambda a: a.astype(jnp.float64), _targets(5))
    keys = jax.random.split(key, 5)
    start = jnp.zeros((5, 3), jnp.float64)
    kwargs = dict(num_warmup=30, num_samples=20)
    plain = make_nuts_sweep(gaussian_logdensity, **kwargs)(
        keys, start, (jnp.broadcast_to(mean[0], (5, 3)), std)
    )
    shared = make_nuts_sweep(gaussian_logdensity, data_axes=(None, 0), **kwargs)(
        keys, start, (mean[0], std)
    )
    np.testing.assert_allclose(
        np.asarray(shared.positions), np.asarray(plain.positions), rtol=1e-9, atol=1e-9
    )


# A second sharded compilation; the fast suite keeps test_sharded_sweep_equals_unsharded.
@pytest.mark.slow
def test_shared_data_sharded_equals_unsharded(key, x64):
    mean, std = jax.tree.map(lambda a: a.astype(jnp.float64), _targets(5))
    keys = jax.random.split(key, 5)
    start = jnp.zeros((5, 3), jnp.float64)
    kwargs = dict(num_warmup=30, num_samples=20, data_axes=(None, 0))
    plain = make_nuts_sweep(gaussian_logdensity, **kwargs)(keys, start, (mean[0], std))
    sharded = make_nuts_sweep(gaussian_logdensity, mesh=sharding.grid_mesh(), **kwargs)(
        keys, start, (mean[0], std)
    )
    np.testing.assert_allclose(
        np.asarray(sharded.positions), np.asarray(plain.positions), rtol=1e-9, atol=1e-9
    )


def test_sweep_validates_grid_and_counts(key):
    mean, std = _targets(2)
    sweep = make_nuts_sweep(gaussian_logdensity, num_warmup=5, num_samples=5)
    with pytest.raises(ValueError, match="grid"):
        sweep(jax.random.split(key, 3), jnp.zeros((2, 3)), (mean, std))
    with pytest.raises(ValueError, match="NaN"):
        sweep(jax.random.split(key, 2), jnp.full((2, 3), jnp.nan), (mean, std))
    with pytest.raises(ValueError, match="num_samples"):
        make_nuts_sweep(gaussian_logdensity, num_warmup=5, num_samples=0)


def test_lockstep_efficiency():
    assert lockstep_efficiency(np.array([[1, 3], [3, 3]])) == pytest.approx((2 + 3) / (3 + 3))


# ChEES and SMC vs NUTS on the TMS posterior where chains mix (n = 350, 450; 5- and 6-gons compete
# there): the samplers must give the same phase occupancies within their (ESS-based) errors.
CHEES_SIZES = (350, 450)


def _occupancies(tmp_path, sampler):
    import json
    import subprocess
    import sys

    out = tmp_path / sampler
    subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.bayesian_transitions",
            "--out",
            str(out),
            "--sampler",
            sampler,
            "--sizes",
            ",".join(map(str, CHEES_SIZES)),
            "--num-warmup",
            "300",
            "--num-samples",
            "400",
            "--block-sizes",
            "2",
            "--tsne-points",
            "0",
            "--no-progress",
        ],
        check=True,
        capture_output=True,
    )
    summary = json.loads((out / "summary.json").read_text())
    return summary["occupancy"], summary["occupancy_stderr"]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["chees", "smc"])
def test_other_samplers_match_nuts_phase_occupancy_on_tms(tmp_path, sampler):
    # SMC starts from the prior and never needs a chain to cross between phases: agreement with NUTS
    # here says the NUTS occupancies are the posterior's, not the memory of where chains started.
    nuts, nuts_se = _occupancies(tmp_path, "nuts")
    other, other_se = _occupancies(tmp_path, sampler)
    print({"nuts": nuts, "nuts_se": nuts_se, sampler: other, f"{sampler}_se": other_se})
    for label in ("6", "5+", "5"):
        for i, n in enumerate(CHEES_SIZES):
            difference = abs(nuts[label][i] - other[label][i])
            # Four combined standard errors: the errors are ESS-based and already conservative.
            tolerance = 4 * float(np.hypot(nuts_se[label][i], other_se[label][i]))
            assert difference < tolerance, (label, n, nuts[label][i], other[label][i], tolerance)


def test_occupancy_error_matches_independent_draws():
    # iid 0/1 draws: the ESS is the number of draws, so se ≈ sqrt(p(1 − p)/N); 5 × 4 × 2000 draws
    # give the estimated ESS a relative spread of a few percent.
    rng = np.random.default_rng(0)
    for p in [0.05, 0.3]:
        indicator = rng.random((4, 2000)) < p
        p_hat, se, ess = diagnostics.occupancy_with_error(indicator)
        assert 0.8 * 8000 < ess <= 8000  # the multi-chain ESS may exceed N slightly; clipped at N
        assert se == pytest.approx(np.sqrt(p_hat * (1 - p_hat) / 8000), rel=0.15)


def test_occupancy_error_of_sticky_and_frozen_chains():
    # A two-state Markov chain that switches with probability q per draw has ESS ≈ N q / (1 − q) at
    # p = ½; chains that never switch count once each.
    rng = np.random.default_rng(1)
    q, num_draws = 0.02, 20_000
    flips = rng.random((4, num_draws)) < q
    sticky = (np.cumsum(flips, axis=1) % 2).astype(float)
    _, _, ess = diagnostics.occupancy_with_error(sticky)
    expected = 4 * num_draws * q / (1 - q)
    assert 0.6 * expected < ess < 1.6 * expected
    # Chains that mix but disagree (two visit the phase 90% of the time, two 50%): the pooled
    # estimate must not be trusted as if 1600 draws agreed.
    disagree = np.concatenate([rng.random((2, 400)) < 0.9, rng.random((2, 400)) < 0.5]).astype(
        float
    )
    assert diagnostics.occupancy_with_error(disagree)[2] < 50
    frozen = np.zeros((5, 100))
    frozen[:2] = 1.0
    p_hat, se, ess = diagnostics.occupancy_with_error(frozen)
    assert ess == 5 and p_hat == pytest.approx(0.4) and se == pytest.approx(np.sqrt(0.24 / 5))


def test_fully_shared_data_and_bad_settings(key):
    # One target shared by every chain: no data leaf carries the grid axis.
    mean, std = _targets(1)
    sweep = make_nuts_sweep(
        gaussian_logdensity, num_warmup=100, num_samples=200, data_axes=(None, None)
    )
    result = sweep(jax.random.split(key, 4), jnp.zeros((4, 3)), (mean[0], std[0]))
    _check_moments(np.asarray(result.positions).reshape(4, 200, 3), mean[0], std[0])
    with pytest.raises(ValueError, match="target_acceptance_rate"):
        make_nuts_sweep(
            gaussian_logdensity, num_warmup=10, num_samples=10, target_acceptance_rate=80
        )
    with pytest.raises(ValueError, match="learning_rate"):
        make_chees_sweep(
            gaussian_logdensity, num_chains=2, num_warmup=10, num_samples=10, learning_rate=-1.0
        )
    with pytest.raises(ValueError, match="num_warmup"):
        make_nuts_sweep(gaussian_logdensity, num_warmup=None, num_samples=10)
