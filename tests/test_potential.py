"""The closed-form potential against an independent quadrature of its defining integral, and
against the Monte Carlo empirical loss."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

import tmsjax
from tmsjax import tms
from tmsjax.tms.model import TMSParams
from tmsjax.tms.potential import population_loss


def quadrature_loss(W, b):
    """L = (1/c) Σ_j ∫_0^1 Σ_i (μ δ_ij − ReLU(μ a_ij + b_i))² dμ by adaptive quadrature, with the
    kink at μ = −b_i/a_ij passed as a breakpoint."""
    gram = W.T @ W
    c = len(b)
    total = 0.0
    for i in range(c):
        for j in range(c):
            a, bias, target = gram[i, j], b[i], float(i == j)
            integrand = lambda mu: (mu * target - max(mu * a + bias, 0.0)) ** 2  # noqa: E731
            kink = -bias / a if a != 0 else -1.0
            points = [kink] if 0 < kink < 1 else None
            value, _ = integrate.quad(
                integrand, 0.0, 1.0, points=points, epsabs=0, epsrel=1e-13, limit=200
            )
            total += value
    return total / c


def random_points(rng, c, num):
    """Random (W, b) spanning every branch: scales so that a_ij and b_i are of comparable size,
    some dead columns, some exact zero biases and orthogonal columns."""
    for index in range(num):
        W = rng.normal(size=(2, c)) * rng.choice([0.3, 1.0, 2.0])
        b = rng.normal(size=c) * rng.choice([0.1, 0.5, 1.5])
        if index % 5 == 0:
            W[:, rng.integers(c)] = 0.0
        if index % 7 == 0:
            b[rng.integers(c)] = 0.0
        yield W, b


@pytest.mark.parametrize("c", [3, 4, 5, 6, 7, 8])
def test_potential_matches_quadrature(x64, c):
    rng = np.random.default_rng(c)
    potential = jax.jit(lambda W, b: population_loss(TMSParams(W, b)))
    errors = []
    for W, b in random_points(rng, c, 100):
        exact = float(potential(jnp.asarray(W), jnp.asarray(b)))
        errors.append(abs(exact - quadrature_loss(W, b)) / abs(exact))
    assert max(errors) < 1e-10


def test_potential_matches_empirical_loss_within_monte_carlo_error(key):
    rng = np.random.default_rng(0)
    W = jnp.asarray(rng.normal(size=(2, 6)), jnp.float32)
    b = jnp.asarray(0.3 * rng.normal(size=6), jnp.float32)
    x = tms.sample_sparse_limit(key, 400_000, 6)
    per_sample = jnp.sum((x - tms.reconstruct(TMSParams(W, b), x)) ** 2, axis=-1)
    mean, stderr = float(jnp.mean(per_sample)), float(jnp.std(per_sample) / np.sqrt(x.shape[0]))
    assert abs(mean - float(tms.empirical_loss(W, b, x))) < 1e-5 * mean
    assert abs(float(tmsjax.tms.potential(W, b)) - mean) < 4 * stderr


def test_known_values():
    c = 6
    dead = tmsjax.tms.potential(jnp.zeros((2, c)), -jnp.ones(c))
    assert float(dead) == pytest.approx(1 / 3, rel=1e-6)
    # One dead feature with positive bias β adds 1 − 3β + 3cβ², minimal at β = 1/(2c).
    for beta in [0.05, 1 / (2 * c), 0.2]:
        b = (-jnp.ones(c)).at[0].set(beta)
        expected = (c - 1 + 1 - 3 * beta + 3 * c * beta**2) / (3 * c)
        value = tmsjax.tms.potential(jnp.zeros((2, c)), b)
        assert float(value) == pytest.approx(expected, rel=1e-5)


def test_gradient_and_hessian_finite_everywhere(x64):
    c = 6
    flat_loss = lambda w: population_loss(TMSParams(w[: 2 * c].reshape(2, c), w[2 * c :]))  # noqa: E731
    angles = np.pi / 2 * np.arange(c)
    cases = [
        np.zeros(3 * c),  # every a_ij = 0 and every b_i = 0
        # a_ij ∈ {0, ±1}
        np.concatenate([np.stack([np.cos(angles), np.sin(angles)]).ravel(), np.zeros(c)]),
        np.concatenate([np.zeros(2 * c), -np.ones(c)]),  # dead columns
        np.concatenate([np.zeros(2 * c), np.full(c, 0.1)]),
    ]
    grad, hessian = jax.jit(jax.grad(flat_loss)), jax.jit(jax.hessian(flat_loss))
    for w in cases:
        w = jnp.asarray(w)
        chex.assert_tree_all_finite((grad(w), hessian(w)))


def test_dtype_general_r_and_vmap():
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(3, 5)), 0.2 * rng.normal(size=5)
    value32 = tmsjax.tms.potential(jnp.asarray(W, jnp.float32), jnp.asarray(b, jnp.float32))
    chex.assert_type(value32, jnp.float32)
    with jax.enable_x64(True):
        value64 = tmsjax.tms.potential(jnp.asarray(W), jnp.asarray(b))
        chex.assert_type(value64, jnp.float64)
    assert float(value32) == pytest.approx(float(value64), rel=1e-5)
    Ws = jnp.asarray(rng.normal(size=(7, 2, 6)), jnp.float32)
    bs = jnp.asarray(rng.normal(size=(7, 6)), jnp.float32)
    batched = jax.vmap(lambda W, b: population_loss(TMSParams(W, b)))(Ws, bs)
    chex.assert_shape(batched, (7,))
    singles = jnp.stack([tmsjax.tms.potential(Ws[i], bs[i]) for i in range(7)])
    chex.assert_trees_all_close(batched, singles, rtol=1e-6)


@pytest.mark.parametrize(
    "W, b, match",
    [
        (np.zeros((2, 6)), np.zeros(5), "columns"),
        (np.zeros(6), np.zeros(6), "W must have 2 dimensions"),
        (np.full((2, 6), np.nan), np.zeros(6), "W contains NaN"),
        (np.zeros((2, 6)), np.array([0, 0, 0, 0, 0, np.inf]), "b contains NaN"),
        (np.zeros((2, 6), dtype=complex), np.zeros(6), "floating dtype"),
    ],
)
def test_bad_input(W, b, match):
    with pytest.raises(ValueError, match=match):
        tmsjax.tms.potential(W, b)
