"""The TMS posterior: prior normalisation, likelihood = -n L_n / T, masking, validation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmsjax.tms import posterior
from tmsjax.tms.data import (
    count_at_most,
    make_dataset,
    nested_datasets,
    sample_sparse_limit,
    sparse_limit_stats,
)
from tmsjax.tms.model import TMSParams, loss


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


def test_sufficient_statistics_give_the_row_likelihood_and_gradient(key, x64):
    # Every branch of the piecewise formula: random (W, b) make outputs fire on prefixes, suffixes,
    # all or none of each feature's μ; a zero column and a zero bias add the a = 0 and t = 0 cases.
    key_x, key_w, key_b = jax.random.split(key, 3)
    x = sample_sparse_limit(key_x, 400, 6)
    x = x.at[7].set(0.0)  # a μ = 0 row: output j fires iff b_j > 0
    sizes = [5, 60, 400]
    stats = sparse_limit_stats(x, sizes, num_slots=120)
    logdensity = posterior.make_logdensity_fn(prior_std=1.5, temperature=2.0)
    for trial in range(8):
        W = jax.random.normal(jax.random.fold_in(key_w, trial), (2, 6))
        b = jax.random.normal(jax.random.fold_in(key_b, trial), (6,))
        W, b = W.at[:, trial % 6].set(0.0), b.at[(trial + 1) % 6].set(0.0)
        params = TMSParams(W, b)
        for index, n in enumerate(sizes):
            rows = lambda p: logdensity(p, make_dataset(x[:n]))  # noqa: E731
            fast = lambda p: logdensity(p, jax.tree.map(lambda a: a[index], stats))  # noqa: E731
            np.testing.assert_allclose(float(fast(params)), float(rows(params)), rtol=1e-11)
            for got, want in zip(
                jax.tree.leaves(jax.grad(fast)(params)), jax.tree.leaves(jax.grad(rows)(params))
            ):
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert [int(n) for n in stats.num_data] == sizes


def test_sufficient_statistics_validate(key):
    x = sample_sparse_limit(key, 30, 4)
    with pytest.raises(ValueError, match="one nonzero"):
        sparse_limit_stats(x.at[0, :2].set(0.5), [10])
    with pytest.raises(ValueError, match="one nonzero"):
        sparse_limit_stats(-x, [10])
    with pytest.raises(ValueError, match="exceed"):
        sparse_limit_stats(x, [31])
    with pytest.raises(ValueError, match="num_slots"):
        sparse_limit_stats(x, [30], num_slots=2)
    with pytest.raises(ValueError, match="sizes"):
        sparse_limit_stats(x, [0])


def test_bucket_counts_equal_brute_force_at_every_edge(key):
    # Thresholds exactly at data values, at bucket edges k/K, at 0 and 1 and outside [0, 1]: the
    # bucket table must count #{μ ≤ t} exactly as a comparison against every μ does.
    x = sample_sparse_limit(key, 500, 4)
    x = x.at[3].set(0.0).at[4, 1].set(1.0)  # μ = 0 and μ = 1 rows
    stats = jax.tree.map(lambda a: a[0], sparse_limit_stats(x, [500]))
    num_buckets = stats.bucket_start.shape[-1] - 1
    for i in range(4):
        mu = np.asarray(stats.mu[i])
        real = mu[: int(stats.counts[i])]
        edges = np.arange(num_buckets + 1) / num_buckets
        t = np.concatenate([real, edges, [-0.5, 0.0, 1.0, 1.5, 2.5]]).astype(mu.dtype)
        # (not next to 0: XLA on CPU flushes subnormals to zero, so ±1e-45 compare as 0 there)
        t = t[t != 0]
        t = np.concatenate([t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf), [0.0]])
        got = np.asarray(count_at_most(stats.bucket_start[i], stats.bucket_mu[i], jnp.asarray(t)))
        want = (real[None, :] <= t[:, None]).sum(axis=1)
        np.testing.assert_array_equal(got, want)
