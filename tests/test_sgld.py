"""The localized tempered SGLD kernel: the update formula, the stationary law of the Euler chain on
a Gaussian (known in closed form), the MALA acceptance estimate, minibatch mode, blow-ups as
data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.sgmcmc.diffusions import generate_gaussian_noise

from tmsjax.sampling import sgld


def quadratic(w, data):
    """L(w) = Σ w² / 2: the log density -nβ L - γ/2 |w|² has curvature k = nβ + γ."""
    del data
    return 0.5 * jnp.sum(w**2)


def test_one_step_matches_the_formula(key):
    kernel = sgld.build_kernel(quadratic)
    center = jnp.array([0.3, -0.2])
    position = jnp.array([1.0, 2.0])
    state = sgld.init(position, quadratic, None)
    nbeta, step_size, localization = 50.0, 1e-3, 2.0
    new_state, info = kernel(key, state, None, center, nbeta, step_size, localization)
    noise = generate_gaussian_noise(key, position)
    expected = (
        position
        + 0.5 * step_size * (-nbeta * position - localization * (position - center))
        + jnp.sqrt(step_size) * noise
    )
    np.testing.assert_allclose(new_state.position, expected, rtol=1e-6)
    np.testing.assert_allclose(info.loss, quadratic(expected, None), rtol=1e-6)
    np.testing.assert_allclose(info.batch_loss, quadratic(position, None), rtol=1e-6)
    np.testing.assert_allclose(new_state.grad, expected, rtol=1e-6)
    assert bool(info.is_finite)


def test_acceptance_is_the_mala_ratio(key, x64):
    kernel = sgld.build_kernel(quadratic)
    position, center = jnp.array([0.4]), jnp.array([0.0])
    nbeta, step_size, localization = 10.0, 0.05, 1.0
    new_state, info = kernel(
        key, sgld.init(position, quadratic, None), None, center, nbeta, step_size, localization
    )
    k = nbeta + localization
    w, w_new = float(position[0]), float(new_state.position[0])

    def log_p(v):
        return -0.5 * k * v**2

    def log_q(to, frm):
        return -((to - frm - 0.5 * step_size * (-k * frm)) ** 2) / (2 * step_size)

    log_ratio = log_p(w_new) - log_p(w) + log_q(w, w_new) - log_q(w_new, w)
    np.testing.assert_allclose(float(info.acceptance), min(1.0, np.exp(log_ratio)), rtol=1e-10)


@pytest.mark.parametrize("step_fraction", [0.05, 0.5])
def test_stationary_variance_of_the_euler_chain(key, step_fraction):
    r"""On a Gaussian of curvature k the Euler chain w' = (1 - εk/2) w + √ε η is an AR(1) whose
    stationary variance is exactly 1 / (k (1 - εk/4)): the upward bias of a large ε, in closed
    form."""
    nbeta, localization = 99.0, 1.0
    k = nbeta + localization
    step_size = step_fraction / k
    num_chains, num_steps, num_burnin = 256, 600, 200
    kernel = jax.vmap(sgld.build_kernel(quadratic), in_axes=(0, 0, None, None, None, None, None))
    init = jax.vmap(sgld.init, in_axes=(0, None, None))(jnp.zeros((num_chains, 1)), quadratic, None)

    @jax.jit
    def run(key):
        def step(state, step_key):
            state, info = kernel(
                jax.random.split(step_key, num_chains),
                state,
                None,
                jnp.zeros(1),
                nbeta,
                step_size,
                localization,
            )
            return state, state.position[:, 0]

        return jax.lax.scan(step, init, jax.random.split(key, num_steps))[1]

    draws = np.asarray(run(key))[num_burnin:]
    expected = 1.0 / (k * (1 - step_size * k / 4))
    estimate = np.mean(draws**2)
    # Chains are independent: the per-chain means of w² give an honest standard error.
    stderr = np.std(np.mean(draws**2, axis=0), ddof=1) / np.sqrt(num_chains)
    assert abs(estimate - expected) < 4 * stderr, (estimate, expected, stderr)


def test_minibatch_mode_equals_full_batch_on_the_full_batch(key):
    data = jnp.linspace(-1.0, 1.0, 7)

    def loss_fn(w, x):
        return jnp.mean((x * w[0] - 0.5 * x) ** 2) + 0.1 * w[1] ** 2

    center = jnp.array([0.5, 0.0])
    full = sgld.build_kernel(loss_fn, full_batch=True)
    mini = sgld.build_kernel(loss_fn, full_batch=False)
    state_full = sgld.init(center, loss_fn, data)
    state_mini = sgld.SGLDState(center, jnp.zeros(()), center)
    for step_key in jax.random.split(key, 5):
        state_full, info_full = full(step_key, state_full, data, center, 100.0, 1e-3, 1.0)
        state_mini, info_mini = mini(step_key, state_mini, data, center, 100.0, 1e-3, 1.0)
        np.testing.assert_allclose(state_full.position, state_mini.position, rtol=1e-6)
        np.testing.assert_allclose(info_full.acceptance, info_mini.acceptance, rtol=1e-5)


def test_minibatch_mode_without_acceptance_skips_it(key):
    kernel = sgld.build_kernel(quadratic, full_batch=False, estimate_acceptance=False)
    state = sgld.SGLDState(jnp.ones(2), jnp.zeros(()), jnp.ones(2))
    _, info = kernel(key, state, None, jnp.zeros(2), 10.0, 1e-3, 1.0)
    assert np.isnan(info.acceptance) and np.isnan(info.loss)
    assert bool(info.is_finite)


def test_a_blown_up_chain_is_reported_not_raised(key):
    # εk = 1e4 ≫ 4: the Euler map multiplies w by |1 - εk/2| ≫ 1 and overflows within a few steps.
    kernel = jax.jit(sgld.build_kernel(quadratic))
    state = sgld.init(jnp.ones(3), quadratic, None)
    infos = []
    for step_key in jax.random.split(key, 30):
        state, info = kernel(step_key, state, None, jnp.zeros(3), 1e4, 1.0, 1.0)
        infos.append(info)
    assert not bool(infos[-1].is_finite)
    assert float(infos[-1].acceptance) == 0.0


def test_the_sampler_object_steps_as_the_kernel_and_starts_minibatch_chains_with_placeholders(key):
    sampler = sgld.SGLD()
    center, data = jnp.array([0.3, -0.2]), None
    state = sampler.init(jnp.array([1.0, 2.0]), data, loss_fn=quadratic)
    expected_state = sgld.init(jnp.array([1.0, 2.0]), quadratic, data)
    jax.tree.map(np.testing.assert_array_equal, state, expected_state)
    stepped, info = sampler.step(key, state, data, center, 50.0, 1e-3, 2.0, loss_fn=quadratic)
    kernel = sgld.build_kernel(quadratic)
    expected, expected_info = kernel(key, state, data, center, 50.0, 1e-3, 2.0)
    np.testing.assert_array_equal(stepped.position, expected.position)
    np.testing.assert_array_equal(info.acceptance, expected_info.acceptance)
    # Minibatch mode evaluates nothing at init: a zero loss of the loss's dtype, position as grad.
    placeholder = sampler.init(jnp.ones(2, jnp.float32), data, loss_fn=quadratic, full_batch=False)
    assert placeholder.loss.dtype == jnp.float32 and float(placeholder.loss) == 0.0
    quiet_sampler = sgld.SGLD(estimate_acceptance=False)
    _, quiet = quiet_sampler.step(
        key, placeholder, data, center, 10.0, 1e-3, 1.0, loss_fn=quadratic, full_batch=False
    )
    assert np.isnan(quiet.acceptance)


def test_samplers_compare_by_class_and_options():
    # They are static jit arguments: equal options share a program, other options never do.
    assert sgld.SGLD() == sgld.SGLD(True) and hash(sgld.SGLD()) == hash(sgld.SGLD(True))
    assert sgld.SGLD(False) != sgld.SGLD(True)
    with pytest.raises(ValueError, match="estimate_acceptance"):
        sgld.SGLD(estimate_acceptance="yes")
