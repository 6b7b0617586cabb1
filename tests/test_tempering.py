"""Replica exchange: a bimodal mixture with known mode masses that plain HMC cannot get right, and
a Gaussian with known moments; tolerances from the Monte Carlo error of the run itself.

Prior N(0, I₂) times the likelihood Σ_k π_k N(w; m_k, s²I) is the mixture
Σ_k π_k N(m_k; 0, (1+s²)I) · N(w; m_k/(1+s²), s²/(1+s²) I), so each mode's posterior mass is exact.
The modes sit ~24 posterior widths apart: an HMC chain at β = 1 never crosses, so its mode
fraction is 0 or 1 and the chains' average is whatever the starts made it. The weights π are
chosen so the exact masses are 0.3 / 0.7 while the chains start half in each mode.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmsjax import sharding
from tmsjax.sampling import diagnostics
from tmsjax.sampling.tempering import geometric_ladder, make_tempering_sweep

# Five standard errors: |t| > 5 has probability < 1e-4 even with 15 degrees of freedom.
NUM_SE = 5.0
MEANS = np.array([[-3.0, 0.0], [3.0, 0.5]])
S = 0.25
TARGET_MASS = np.array([0.3, 0.7])


def _mixture_weights() -> np.ndarray:
    """π with posterior masses TARGET_MASS: mass_k ∝ π_k exp(−|m_k|² / (2(1 + s²)))."""
    prior_factor = np.exp(-np.sum(MEANS**2, -1) / (2 * (1 + S**2)))
    weights = TARGET_MASS / prior_factor
    return weights / weights.sum()


def logprior(w):
    return -0.5 * jnp.sum(w**2)


def mixture_loglikelihood(w, data):
    means, log_weights = data
    squared = jnp.sum((w - means) ** 2, axis=-1)
    return jax.nn.logsumexp(log_weights - squared / (2 * S**2) - math.log(2 * math.pi * S**2))


def exact_mass() -> np.ndarray:
    log_mass = np.log(_mixture_weights()) - np.sum(MEANS**2, -1) / (2 * (1 + S**2))
    return np.exp(log_mass - np.logaddexp.reduce(log_mass))


def _run_mixture(key, num_temperatures: int, beta_min: float, num_chains: int = 16):
    sweep = make_tempering_sweep(logprior, mixture_loglikelihood, num_warmup=200, num_samples=600)
    centres = MEANS / (1 + S**2)
    starts = jnp.asarray(np.where((np.arange(num_chains) % 2 == 0)[:, None], *centres))
    positions = jnp.broadcast_to(starts[:, None], (num_chains, num_temperatures, 2))
    data = (
        jnp.broadcast_to(jnp.asarray(MEANS), (num_chains, 2, 2)),
        jnp.broadcast_to(jnp.log(jnp.asarray(_mixture_weights())), (num_chains, 2)),
    )
    betas = jnp.broadcast_to(
        geometric_ladder(beta_min, num_temperatures), (num_chains, num_temperatures)
    )
    result = sweep(jax.random.split(key, num_chains), positions, data, betas)
    in_first = np.asarray(result.positions)[..., 0] < 0  # the modes are split by x = 0
    return result, in_first


def test_exact_masses_are_the_intended_ones():
    np.testing.assert_allclose(exact_mass(), TARGET_MASS, rtol=1e-12)


@pytest.fixture(scope="module")
def mixture_runs():
    key = jax.random.key(0)
    return {
        "plain": _run_mixture(key, num_temperatures=1, beta_min=1.0),
        "tempered": _run_mixture(key, num_temperatures=6, beta_min=0.01),
    }


def test_plain_hmc_chains_stay_in_their_starting_mode(mixture_runs):
    result, in_first = mixture_runs["plain"]
    fractions = in_first.mean(axis=1)
    # Every chain stays where it started: the pooled estimate is the starts' 0.5, not 0.3.
    np.testing.assert_array_equal(fractions, (np.arange(len(fractions)) % 2 == 0).astype(float))
    assert int(np.asarray(result.num_round_trips).sum()) == 0


def test_tempering_recovers_mode_masses(mixture_runs):
    result, in_first = mixture_runs["tempered"]
    # Chains are independent runs: the spread of their mode fractions is the Monte Carlo error of
    # the pooled fraction (draws within a chain are correlated; across chains they are not).
    fractions = in_first.mean(axis=1)
    se = fractions.std(ddof=1) / math.sqrt(len(fractions))
    assert abs(fractions.mean() - exact_mass()[0]) < NUM_SE * se, (fractions.mean(), se)
    # Every chain visits both modes, swaps happen at every pair, copies travel the whole ladder.
    assert np.all((fractions > 0) & (fractions < 1))
    swap = np.asarray(result.swap_acceptance)
    assert swap.shape == (16, 5) and np.all((swap > 0.05) & (swap <= 1))
    assert np.all(np.asarray(result.num_round_trips) > 0)
    assert int(np.asarray(result.num_divergent).sum()) == 0
    betas = np.asarray(result.betas)
    assert betas[0, -1] == 1 and np.all(np.diff(betas, axis=1) > 0)
    # The β = 1 log likelihood is recorded per draw, for the draw itself.
    draws = jnp.asarray(np.asarray(result.positions)[0, :5])
    data = (jnp.asarray(MEANS), jnp.log(jnp.asarray(_mixture_weights())))
    expected = jax.vmap(lambda w: mixture_loglikelihood(w, data))(draws)
    np.testing.assert_allclose(np.asarray(result.loglikelihood)[0, :5], expected, rtol=1e-4)


def gaussian_loglikelihood(w, data):
    mean, std = data
    return -0.5 * jnp.sum(((w - mean) / std) ** 2)


def test_gaussian_moments(key):
    # Prior N(0, I) times N(w; μ, diag σ²) is Gaussian with precision 1 + 1/σ² and mean
    # (μ/σ²)/(1 + 1/σ²).
    mean = jnp.array([1.0, -2.0, 0.5])
    std = jnp.array([0.3, 1.0, 3.0])
    num_chains, num_temperatures, num_samples = 8, 3, 400
    sweep = make_tempering_sweep(
        logprior, gaussian_loglikelihood, num_warmup=200, num_samples=num_samples
    )
    data = (jnp.broadcast_to(mean, (num_chains, 3)), jnp.broadcast_to(std, (num_chains, 3)))
    betas = jnp.broadcast_to(geometric_ladder(0.2, num_temperatures), (num_chains, 3))
    start = jax.random.normal(key, (num_chains, num_temperatures, 3))
    result = sweep(jax.random.split(key, num_chains), start, data, betas)
    draws = np.asarray(result.positions, dtype=float)
    precision = 1 + 1 / np.asarray(std) ** 2
    exact_mean = np.asarray(mean) / np.asarray(std) ** 2 / precision
    exact_var = 1 / precision
    ess_x = diagnostics.effective_sample_size(draws)
    ess_x2 = diagnostics.effective_sample_size((draws - exact_mean) ** 2)
    np.testing.assert_array_less(
        np.abs(draws.mean(axis=(0, 1)) - exact_mean), NUM_SE * np.sqrt(exact_var / ess_x)
    )
    # Var of the squared deviation of a Gaussian is 2σ⁴.
    np.testing.assert_array_less(
        np.abs(draws.var(axis=(0, 1)) - exact_var), NUM_SE * np.sqrt(2 * exact_var**2 / ess_x2)
    )
    # Adapted per temperature: the hottest copy's mass matrix sees its wider target (exact
    # variances 0.31 vs 0.083 along the first axis).
    inverse_mass = np.asarray(result.inverse_mass_matrix)
    assert np.all(inverse_mass[:, 0, 0] > 2 * inverse_mass[:, -1, 0])


def test_geometric_ladder():
    np.testing.assert_allclose(geometric_ladder(0.01, 3), [0.01, 0.1, 1.0], rtol=1e-6)
    np.testing.assert_allclose(geometric_ladder(jnp.array([1.0, 0.25]), 3)[1], [0.25, 0.5, 1.0])
    assert geometric_ladder(0.5, 1).tolist() == [1.0]
    with pytest.raises(ValueError, match="num_temperatures"):
        geometric_ladder(0.1, 0)


def _small_sweep(**kwargs):
    return make_tempering_sweep(
        logprior, gaussian_loglikelihood, num_warmup=12, num_samples=10, **kwargs
    )


def _small_problem(key, grid=5, dtype=jnp.float64):
    mean = jnp.arange(grid * 3, dtype=dtype).reshape(grid, 3) / grid - 1.0
    std = jnp.broadcast_to(jnp.array([0.3, 1.0, 3.0], dtype), (grid, 3))
    start = jnp.zeros((grid, 3, 3), dtype)
    betas = jnp.broadcast_to(geometric_ladder(0.1, 3), (grid, 3))
    return jax.random.split(key, grid), start, (mean, std), betas


def test_sharded_sweep_equals_the_plain_sweep(key, x64):
    # float64: in float32 a different vectorisation changes the last bits, which MCMC amplifies.
    assert jax.device_count() == 8
    keys, start, (mean, std), betas = _small_problem(key)  # 5 chains on 8 devices: padding
    plain = _small_sweep()(keys, start, (mean, std), betas)
    sharded = _small_sweep(mesh=sharding.grid_mesh())(keys, start, (mean, std), betas)
    np.testing.assert_allclose(
        np.asarray(sharded.positions), np.asarray(plain.positions), rtol=1e-9, atol=1e-9
    )
    np.testing.assert_array_equal(
        np.asarray(sharded.num_round_trips), np.asarray(plain.num_round_trips)
    )


# Two more compilations; the TMS experiment passes per-lane sufficient statistics.
@pytest.mark.slow
def test_shared_data_sweep_equals_the_per_lane_sweep(key, x64):
    keys, start, (mean, std), betas = _small_problem(key)
    # data_axes (None, 0): the first chain's mean shared by every lane.
    shared_mean = (jnp.broadcast_to(mean[0], mean.shape), std)
    per_lane = _small_sweep()(keys, start, shared_mean, betas)
    shared = _small_sweep(data_axes=(None, 0))(keys, start, (mean[0], std), betas)
    np.testing.assert_allclose(
        np.asarray(shared.positions), np.asarray(per_lane.positions), rtol=1e-9, atol=1e-9
    )


def test_sweep_validates_its_inputs(key):
    keys, start, data, betas = _small_problem(key, dtype=jnp.float32)
    sweep = _small_sweep()
    with pytest.raises(ValueError, match="grid"):
        sweep(keys[:4], start, data, betas)
    with pytest.raises(ValueError, match="K=3"):
        sweep(keys, start[:, :2], data, betas)
    with pytest.raises(ValueError, match="betas"):
        sweep(keys, start, data, betas.at[:, -1].set(0.9))
    with pytest.raises(ValueError, match="betas"):
        sweep(keys, start, data, betas.at[:, 0].set(0.0))
    with pytest.raises(ValueError, match="NaN"):
        sweep(keys, start.at[0, 0, 0].set(jnp.nan), data, betas)
    with pytest.raises(ValueError, match="num_integration_steps"):
        make_tempering_sweep(
            logprior, gaussian_loglikelihood, num_warmup=1, num_samples=1, num_integration_steps=0
        )
    with pytest.raises(ValueError, match="target_acceptance_rate"):
        _small_sweep(target_acceptance_rate=1.5)
