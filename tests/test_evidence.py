"""Local evidence (tmsjax.sampling.evidence) against a Gaussian mixture with a closed-form
normaliser per region."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm

from tmsjax.sampling import evidence

# Prior N(0, I) in d = 2; likelihood e^ℓ = Σ_k m_k N(w; μ_k, s² I), a mixture of sharp bumps (a
# posterior's shape at large n), one of them straddling the boundary w_0 = 0 between the regions.
MEANS = np.array([[1.5, 0.5], [-1.0, -1.0], [0.2, 1.2]])
MASSES = np.array([0.5, 0.3, 0.2])
SCALE = 0.15


def exact_log_evidence(scale):
    r"""log ∫_{w_0 > 0} and log ∫_{w_0 ≤ 0} of φ e^ℓ: for each bump,
    N(w; 0, I) N(w; μ, s²) = N(μ; 0, (1 + s²) I) N(w; μ/(1 + s²), s²/(1 + s²) I),
    whose mass in a half-plane is a normal CDF."""
    var = 1 + scale**2
    log_norm = -0.5 * (MEANS**2).sum(1) / var - math.log(2 * math.pi * var)
    centre, sd = MEANS[:, 0] / var, math.sqrt(scale**2 / var)
    return np.array(
        [
            logsumexp(log_norm + norm.logsf(centre / sd), b=MASSES),  # region 0: w_0 ≤ 0
            logsumexp(log_norm + norm.logcdf(centre / sd), b=MASSES),  # region 1: w_0 > 0
        ]
    )


def loglikelihood(w, data):
    scale = data  # one target: the bump width
    log_bumps = -0.5 * jnp.sum((w - MEANS) ** 2, axis=1) / scale**2 - jnp.log(2 * jnp.pi * scale**2)
    return jax.scipy.special.logsumexp(log_bumps, b=MASSES)


def logprior(w):
    return -0.5 * jnp.sum(w**2)


def region(w):
    return (w[0] > 0).astype(jnp.int32)


def sample_prior(key, num):
    return jax.random.normal(key, (num, 2))


def test_local_evidence_matches_the_mixture_within_its_error():
    """Regions frozen from the prior (β₀ = 0: no particle ever crosses w_0 = 0) or from β₀ = 0.3,
    against the closed form; two bump widths, all four targets in one compiled sweep."""
    scales = jnp.array([SCALE, 2 * SCALE, SCALE, 2 * SCALE])
    freeze_beta = np.array([0.0, 0.0, 0.3, 0.3])
    result = evidence.local_log_evidence(
        jax.random.key(0),
        sample_prior,
        logprior,
        loglikelihood,
        region,
        scales,
        [0, 1],
        freeze_beta,
        num_particles=100,
        num_replicates=16,
        num_mcmc_steps=4,
        num_integration_steps=4,
    )
    exact = np.stack([exact_log_evidence(float(s)) for s in scales])
    assert result.log_evidence.shape == (4, 2)
    se = result.standard_error
    assert np.all(np.isfinite(se)) and np.all(se < 0.2)  # the error bar is informative
    # 4 se: eight numbers tested at once, each error estimated from 16 replicates (Student t with
    # 15 dof: P(|t| > 4) ≈ 0.001 per number); a region that loses or gains its neighbour's mass
    # (≥ 0.4 nats here) fails.
    z = (result.log_evidence - exact) / se
    assert np.all(np.abs(z) < 4), (result.log_evidence, exact, se)
    total = logsumexp(exact, axis=1)
    assert np.all(np.abs(result.log_total - total) < 4 * result.total_error + 1e-9)


def test_combine_replicates_averages_in_z():
    log_mean, se = evidence.combine_replicates(np.log([[1.0, 3.0]]))
    assert np.allclose(log_mean, math.log(2.0))
    assert np.allclose(se, np.std([1.0, 3.0], ddof=1) / (math.sqrt(2) * 2.0))
    _, se_one = evidence.combine_replicates(np.zeros((1, 1)))
    assert np.isnan(se_one).all()
    empty, se_empty = evidence.combine_replicates(np.full((1, 3), -np.inf))
    assert empty[0] == -np.inf and np.isnan(se_empty[0])


def test_bad_input_names_the_argument():
    args = (jax.random.key(0), sample_prior, logprior, loglikelihood, region, jnp.ones(1))
    with pytest.raises(ValueError, match="freeze_beta"):
        evidence.local_log_evidence(*args, [0, 1], -1.0)
    with pytest.raises(ValueError, match="freeze_beta"):  # one per target, or one for all
        evidence.local_log_evidence(
            jax.random.key(0),
            sample_prior,
            logprior,
            loglikelihood,
            region,
            jnp.ones((2, 1)),
            [0, 1],
            [0.1, 0.2, 0.3],
        )
    with pytest.raises(ValueError, match="num_particles"):
        evidence.local_log_evidence(*args, [0], 0.0, num_particles=0)
    with pytest.raises(ValueError, match="regions"):
        evidence.local_log_evidence(*args, [], 0.0)
