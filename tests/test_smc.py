"""Tempered SMC: a two-mode Gaussian mixture whose mode weights and evidence are known in closed
form.

Prior N(0, I₂) times the mixture likelihood Σ_k π_k N(w; m_k, s²I) is the mixture
Σ_k π_k N(m_k; 0, (1+s²)I) · N(w; m_k/(1+s²), s²/(1+s²) I): each mode's posterior mass and the
evidence Z = Σ_k π_k N(m_k; 0, (1+s²)I) are exact. The modes are ~6 posterior widths × 25 apart,
so HMC alone never crosses between them: only the tempering can get the masses right.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmsjax.sampling.smc import make_smc_sweep

MEANS = np.array([[-3.0, 0.0], [3.0, 0.5]])
WEIGHTS = np.array([0.6, 0.4])
S = 0.25
REPLICATES = (
    16  # enough runs for their spread to pin the standard error (8 gave se estimates off by 3x)
)
PARTICLES = 2000


def logprior(w):
    return -0.5 * jnp.sum(w**2) - math.log(2 * math.pi)


def loglikelihood(w, data):
    means, log_weights = data
    sq = jnp.sum((w - means) ** 2, axis=-1)
    return jax.nn.logsumexp(log_weights - sq / (2 * S**2) - math.log(2 * math.pi * S**2))


def exact():
    var = 1 + S**2
    log_mass = np.log(WEIGHTS) - np.sum(MEANS**2, -1) / (2 * var) - math.log(2 * math.pi * var)
    return np.exp(log_mass - np.logaddexp.reduce(log_mass)), float(np.logaddexp.reduce(log_mass))


@pytest.fixture(scope="module")
def result():
    sweep = make_smc_sweep(logprior, loglikelihood, num_mcmc_steps=5, num_integration_steps=8)
    keys = jax.random.split(jax.random.key(0), REPLICATES)
    particles = jax.random.normal(jax.random.key(1), (REPLICATES, PARTICLES, 2))
    data = (
        jnp.broadcast_to(MEANS, (REPLICATES, 2, 2)),
        jnp.broadcast_to(jnp.log(WEIGHTS), (REPLICATES, 2)),
    )
    return sweep(keys, particles, data)


def test_mode_masses_and_evidence_match_closed_form(result):
    mass, log_evidence = exact()
    particles = np.asarray(result.particles)
    centres = MEANS / (1 + S**2)
    nearest = np.argmin(np.sum((particles[:, :, None, :] - centres) ** 2, -1), -1)
    in_first = nearest == 0
    var = S**2 / (1 + S**2)
    # Per replicate: the mode's mass, the log evidence, and the first mode's mean and variance.
    # Replicates are independent runs, so their spread is the Monte Carlo error of their mean
    # (resampled particles are correlated within a run; across runs they are not).
    per_run = {
        "mass": (in_first.mean(axis=1), mass[0]),
        "log_evidence": (np.asarray(result.log_evidence), log_evidence),
        "mean_x": (np.array([p[m, 0].mean() for p, m in zip(particles, in_first)]), centres[0, 0]),
        "mean_y": (np.array([p[m, 1].mean() for p, m in zip(particles, in_first)]), centres[0, 1]),
        "var_x": (np.array([p[m, 0].var() for p, m in zip(particles, in_first)]), var),
    }
    for name, (values, exact_value) in per_run.items():
        se = values.std(ddof=1) / math.sqrt(REPLICATES)
        # 5 standard errors: |t| > 5 with 15 degrees of freedom has probability ~2e-4.
        assert abs(values.mean() - exact_value) < 5 * se, (name, values, exact_value)
    assert np.asarray(result.reached_target).all()
    steps = np.asarray(result.num_steps)
    betas = np.asarray(result.tempering)
    assert np.all(np.diff(betas[0, : steps[0]]) > 0) and betas[0, steps[0] - 1] == 1


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="target_ess"):
        make_smc_sweep(logprior, loglikelihood, target_ess=1.5)
    with pytest.raises(ValueError, match="num_mcmc_steps"):
        make_smc_sweep(logprior, loglikelihood, num_mcmc_steps=0)
    sweep = make_smc_sweep(
        logprior, loglikelihood, num_mcmc_steps=1, num_integration_steps=2, max_num_steps=2
    )
    data = (jnp.asarray(MEANS)[None], jnp.log(jnp.asarray(WEIGHTS))[None])
    particles = jax.random.normal(jax.random.key(1), (1, 200, 2))
    with pytest.raises(RuntimeError, match="max_num_steps=2"):
        sweep(jax.random.split(jax.random.key(0), 1), particles, data)
    with pytest.raises(ValueError, match="NaN"):
        sweep(jax.random.split(jax.random.key(0), 1), particles.at[0, 0, 0].set(jnp.nan), data)
