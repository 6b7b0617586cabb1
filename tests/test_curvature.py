"""Curvature probes against a quadratic loss with a known Hessian: Hutchinson's trace within its
Monte Carlo error, Lanczos' top eigenvalue, the free energy by perturbation against σ² tr H / 2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmsjax.transitions import curvature

DIM = 40


def _hessian(seed=0):
    # A symmetric matrix with a known spectrum (top eigenvalue 10, well separated from the next, 4)
    # and off-diagonal mass (a diagonal H would make Hutchinson exact with Rademacher probes).
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    spectrum = np.concatenate([[10.0, 4.0], np.linspace(-1.0, 3.0, DIM - 2)])
    return (basis * spectrum) @ basis.T, spectrum


def _quadratic(params, data):
    # L(w) = ½ (w - c)ᵀ H (w - c) on a two-leaf pytree (the probes ravel pytrees themselves).
    hessian, centre = data
    w = jnp.concatenate([params["a"], params["b"].reshape(-1)]) - centre
    return 0.5 * w @ hessian @ w


def _point():
    values = jnp.linspace(-1.0, 1.0, DIM)
    return {"a": values[:10], "b": values[10:].reshape(5, 6)}


def _data(hessian):
    return jnp.asarray(hessian, jnp.float32), jnp.full(DIM, 0.3)


def test_hessian_vector_product_equals_the_matrix(key):
    hessian, _ = _hessian()
    vector = jax.tree.map(lambda x: jnp.ones_like(x), _point())
    product = curvature.hessian_vector_product(_quadratic, _point(), _data(hessian), vector)
    flat = np.concatenate([np.asarray(product["a"]), np.asarray(product["b"]).reshape(-1)])
    np.testing.assert_allclose(flat, hessian @ np.ones(DIM), rtol=1e-4, atol=1e-4)


def test_hutchinson_trace_within_its_monte_carlo_error(key):
    hessian, spectrum = _hessian()
    num_probes = 64
    estimate = float(
        curvature.hutchinson_trace(key, _quadratic, _point(), _data(hessian), num_probes)
    )
    # Rademacher probes: Var(vᵀHv) = 2 Σ_{j≠k} H_jk²; four standard errors.
    variance = 2 * (np.sum(hessian**2) - np.sum(np.diag(hessian) ** 2))
    assert abs(estimate - spectrum.sum()) < 4 * np.sqrt(variance / num_probes)


def test_lanczos_top_eigenvalue(key):
    hessian, spectrum = _hessian()
    data = _data(hessian)
    # k = d is exact (up to float32); 20 steps already resolve a gap 10 vs 4 to 1e-3.
    exact = float(curvature.top_eigenvalue(key, _quadratic, _point(), data, num_iterations=DIM))
    np.testing.assert_allclose(exact, spectrum.max(), rtol=1e-4)
    short = float(curvature.top_eigenvalue(key, _quadratic, _point(), data, num_iterations=20))
    assert short <= spectrum.max() * (1 + 1e-5) and short > spectrum.max() * (1 - 1e-3)


def test_free_energy_by_perturbation_is_sigma_squared_trace_over_two(key):
    hessian, spectrum = _hessian()
    sigma, num_samples = 0.1, 256
    estimate = float(
        curvature.perturbation_free_energy(
            key, _quadratic, _point(), _data(hessian), sigma=sigma, num_samples=num_samples
        )
    )
    # Antithetic pairs of a quadratic: ½σ² ξᵀHξ exactly, variance σ⁴ ‖H‖_F² / 2 per pair.
    standard_error = np.sqrt(sigma**4 * np.sum(hessian**2) / 2 / num_samples)
    assert abs(estimate - sigma**2 * spectrum.sum() / 2) < 4 * standard_error


def test_sigma_is_traced_a_new_sigma_does_not_recompile(key):
    hessian, _ = _hessian()
    data = _data(hessian)
    compiled = curvature._perturbation_jit._cache_size()
    values = [
        float(curvature.perturbation_free_energy(key, _quadratic, _point(), data, sigma=s))
        for s in (0.1, 0.2)
    ]
    # Same key, same ξ: a quadratic's pair mean is ½σ²ξᵀHξ, so doubling σ quadruples it exactly.
    np.testing.assert_allclose(values[1], 4 * values[0], rtol=1e-4)
    assert curvature._perturbation_jit._cache_size() <= compiled + 1


def test_along_training_matches_one_checkpoint_and_takes_per_run_data(key):
    hessian, spectrum = _hessian()
    data = _data(hessian)
    # 2 runs × 3 checkpoints of the same point; run 1 sees twice the Hessian.
    checkpoints = jax.tree.map(lambda x: jnp.broadcast_to(x, (2, 3, *x.shape)), _point())
    per_run = (jnp.stack([data[0], 2 * data[0]]), jnp.stack([data[1], data[1]]))
    values = curvature.curvature_along_training(
        key, _quadratic, checkpoints, per_run, data_per_run=True, num_iterations=DIM, cell_batch=4
    )
    assert values.top_eigenvalue.shape == (2, 3)
    np.testing.assert_allclose(values.top_eigenvalue[0], spectrum.max(), rtol=1e-3)
    np.testing.assert_allclose(values.top_eigenvalue[1], 2 * spectrum.max(), rtol=1e-3)
    assert np.all(np.isfinite(np.asarray(values.trace))) and np.all(
        np.asarray(values.free_energy) > 0
    )


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda k: curvature.hutchinson_trace(k, _quadratic, _point(), None, 0), "num_probes"),
        (lambda k: curvature.top_eigenvalue(k, _quadratic, _point(), None, 0), "num_iterations"),
        (
            lambda k: curvature.perturbation_free_energy(k, _quadratic, _point(), None, sigma=0.0),
            "sigma",
        ),
        (
            lambda k: curvature.perturbation_free_energy(
                k, _quadratic, _point(), None, sigma=float("inf")
            ),
            "sigma",
        ),
        (lambda k: curvature.hutchinson_trace(k, _quadratic, {"a": jnp.arange(3)}, None), "params"),
        (
            lambda k: curvature.curvature_along_training(k, _quadratic, _point(), None),
            "checkpoints",
        ),
    ],
)
def test_bad_inputs_raise_value_error(key, call, name):
    with pytest.raises(ValueError, match=name):
        call(key)
