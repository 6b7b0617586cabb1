"""The TMS posterior: prior normalisation, likelihood = -n L_n / T, masking, validation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmsjax import posterior
from tmsjax.data import make_dataset, nested_datasets, sample_sparse_limit
from tmsjax.model import TMSParams, loss


def test_log_prior_is_normalised_gaussian(x64):
    params = TMSParams(jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([0.5, -0.5]))
    expected = -0.5 * (1 + 4 + 0.25 + 0.25) / 4 - 3 * math.log(2 * math.pi * 4)
    assert float(posterior.log_prior(params, prior_std=2.0)) == pytest.approx(expected)


def test_log_likelihood_is_minus_n_loss_over_temperature(key, x64):
    key_x, key_w = jax.random.split(key)
    x = sample_sparse_limit(key_x, 50, 6)
    params = TMSParams(jax.random.normal(key_w, (2, 6)), jnp.zeros(6))
    dataset = make_dataset(x)
    value = posterior.log_likelihood(params, dataset, temperature=2.0)
    assert float(value) == pytest.approx(-50 * float(loss(params, x)) / 2.0)


def test_masked_dataset_equals_truncated(key, x64):
    key_x, key_w = jax.random.split(key)
    x = sample_sparse_limit(key_x, 80, 6)
    params = TMSParams(jax.random.normal(key_w, (2, 6)), 0.1 * jnp.ones(6))
    stacked = nested_datasets(x, [30, 80])
    values = jax.vmap(posterior.make_logdensity_fn(), in_axes=(None, 0))(params, stacked)
    for index, n in enumerate([30, 80]):
        direct = posterior.log_density(params, make_dataset(x[:n]))
        assert float(values[index]) == pytest.approx(float(direct), rel=1e-12)


def test_public_wrapper_validates(key):
    x = sample_sparse_limit(key, 10, 6)
    W, b = np.zeros((2, 6)), np.zeros(6)
    with pytest.raises(ValueError, match="mask"):
        posterior.posterior_log_density(W, b, x, mask=np.zeros(10, bool))
    with pytest.raises(ValueError, match="prior_std"):
        posterior.posterior_log_density(W, b, x, prior_std=0.0)
    with pytest.raises(ValueError, match="temperature"):
        posterior.posterior_log_density(W, b, x, temperature=-1.0)
    with pytest.raises(ValueError, match="W"):
        posterior.posterior_log_density(np.full((2, 6), np.nan), b, x)
    assert np.isfinite(float(posterior.posterior_log_density(W, b, x)))
