"""Model, empirical loss, data samplers and padded datasets."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmsjax import tms
from tmsjax.tms.data import epoch_permutation, sample_minibatch
from tmsjax.tms.model import TMSParams, loss


def test_empirical_loss_definition(key):
    x = tms.sample_sparse_limit(key, 50, 6)
    params = tms.init_params(jax.random.key(1), 6, bias_scale=0.1)
    output = np.maximum(np.asarray(x) @ params.W.T @ params.W + params.b, 0)
    manual = np.mean(np.sum((np.asarray(x) - output) ** 2, 1))
    assert float(tms.empirical_loss(params.W, params.b, x)) == pytest.approx(manual, rel=1e-5)


def test_empty_dataset():
    W, b = jnp.ones((2, 3)), jnp.zeros(3)
    # The checked entry point refuses: there is no data to average over.
    with pytest.raises(ValueError, match="x has no rows"):
        tms.empirical_loss(W, b, np.zeros((0, 3)))
    with pytest.raises(ValueError, match="x has no rows"):
        jax.jit(tms.empirical_loss)(W, b, jnp.zeros((0, 3)))  # a shape: checked at trace time
    with pytest.raises(ValueError, match="mask selects no data"):
        tms.empirical_loss(W, b, np.ones((4, 3)), np.zeros(4, bool))
    # The jit-able loss checks nothing (under jit failures become data): NaN, as documented.
    params = TMSParams(W, b)
    assert np.isnan(float(loss(params, jnp.zeros((0, 3)))))
    assert np.isnan(float(jax.jit(loss)(params, jnp.ones((4, 3)), jnp.zeros(4, bool))))


def test_sparse_limit_data_shape(key):
    x = np.asarray(tms.sample_sparse_limit(key, 10_000, 6))
    assert x.shape == (10_000, 6)
    assert np.all(np.sum(x > 0, axis=1) <= 1) and np.all((x >= 0) & (x <= 1))
    counts = np.bincount(np.argmax(x, 1), minlength=6)
    assert np.all(np.abs(counts - 10_000 / 6) < 5 * np.sqrt(10_000 / 6))


def test_sparse_data_feature_probability(key):
    p = np.array([0.05, 0.1, 0.2, 0.5])
    x = np.asarray(tms.sample_sparse(key, 20_000, 4, p))
    observed = np.mean(x > 0, axis=0)
    assert np.all(np.abs(observed - p) < 5 * np.sqrt(p * (1 - p) / 20_000))
    with pytest.raises(ValueError, match="feature_probability"):
        tms.sample_sparse(key, 10, 4, 1.5)


def test_masked_loss_equals_loss_on_prefix(key):
    x = tms.sample_sparse_limit(key, 300, 6)
    params = tms.init_near_kgon(jax.random.key(2), 4, 6)
    datasets = tms.nested_datasets(x, [10, 100, 300])
    chex.assert_shape([datasets.x], (3, 300, 6))
    chex.assert_shape([datasets.mask], (3, 300))
    losses = jax.vmap(lambda d: loss(params, d.x, d.mask))(datasets)
    for n, value in zip([10, 100, 300], losses):
        assert float(value) == pytest.approx(float(loss(params, x[:n])), rel=1e-5)
    padded = tms.make_dataset(x[:100], n_max=300)
    assert float(loss(params, padded.x, padded.mask)) == pytest.approx(float(losses[1]), rel=1e-6)


def test_nested_datasets_grow():
    x = jnp.arange(10.0).reshape(5, 2)
    # A repeated size is allowed: it pads a block of sizes to a fixed length.
    datasets = tms.nested_datasets(x, [1, 3, 3])
    chex.assert_trees_all_equal(datasets.num_data, jnp.array([1, 3, 3]))
    chex.assert_trees_all_equal(datasets.mask[1], jnp.array([True, True, True, False, False]))
    with pytest.raises(ValueError, match="sizes must be nondecreasing"):
        tms.nested_datasets(x, [3, 1])
    with pytest.raises(ValueError, match="sizes must be nondecreasing"):
        tms.nested_datasets(x, [1, 4, 2])


def test_importance_weights(key):
    x = tms.sample_sparse_limit(key, 100, 3)
    params = TMSParams(jnp.zeros((2, 3)), jnp.zeros(3))
    weighted = loss(params, x, importance=jnp.array([1.0, 0.0, 0.0]))
    assert float(weighted) == pytest.approx(float(jnp.mean(x[:, 0] ** 2)))


def test_minibatches_respect_mask(key):
    x = jnp.arange(40.0).reshape(20, 2)
    dataset = tms.make_dataset(x[:7], n_max=20)
    batch = sample_minibatch(key, dataset, 1000)
    assert set(np.unique(np.asarray(batch[:, 0]))) == set(np.asarray(x[:7, 0]).tolist())
    order = np.asarray(epoch_permutation(key, dataset))
    assert sorted(order[:7]) == list(range(7))


def test_init_near_kgon_is_near_kgon(key):
    params = tms.init_near_kgon(key, 4, 6, radius=1.0, noise=0.0, bias=0.0)
    norms = np.linalg.norm(np.asarray(params.W), axis=0)
    assert np.sum(norms > 0.5) == 4 and np.allclose(norms[norms > 0.5], 1.0, atol=1e-6)
    assert tms.classify(params.W, params.b).label == "4"


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: tms.sample_sparse_limit(jax.random.key(0), 0, 6), "num_data"),
        (lambda: tms.nested_datasets(np.zeros((5, 3)), [2, 0]), "sizes"),
        (lambda: tms.nested_datasets(np.zeros((5, 3)), [2, 9]), "exceed"),
        (lambda: tms.empirical_loss(np.zeros((2, 3)), np.zeros(3), np.zeros((4, 5))), "features"),
        (
            lambda: tms.empirical_loss(
                np.zeros((2, 3)), np.zeros(3), np.ones((4, 3)), np.zeros(4, bool)
            ),
            "no data",
        ),
        (lambda: tms.init_near_kgon(jax.random.key(0), 7, 6), "k=7"),
        (lambda: tms.init_near_kgon(jax.random.key(0), 4, 6, radius=np.nan), "radius"),
        (lambda: tms.init_near_kgon(jax.random.key(0), 4, 6, radius=(1.0, 0.5)), "radius"),
        (lambda: tms.init_params(jax.random.key(0), 6, scale=np.nan), "scale"),
        (lambda: tms.sample_sparse(jax.random.key(0), 10, 4, np.nan), "feature_probability"),
        (
            lambda: tms.empirical_loss(
                np.zeros((2, 3)), np.zeros(3), np.zeros((4, 3)), np.arange(4)
            ),
            "boolean",
        ),
        (
            lambda: tms.empirical_loss(np.zeros((2, 3)), np.zeros(3), np.full((4, 3), np.nan)),
            "x contains NaN",
        ),
        (lambda: tms.make_dataset(np.full((4, 3), np.nan)), "x contains NaN"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
