"""Weight-only probes equal their formulas on hand-made pytrees, for NamedTuples and equinox
modules."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmsjax import llc as llc_engine
from tmsjax.llc import LLCSettings
from tmsjax.tms.model import TMSParams
from tmsjax.transitions import probes


def _hand_made():
    # Layer 1: diag(3, 4) has σ1 = 4, |W|_F = 5; layer 2: rank one [[1, 1]] has σ1 = √2 = |W|_F.
    return {
        "w1": jnp.array([[3.0, 0.0], [0.0, 4.0]]),
        "b1": jnp.array([1.0, 2.0]),
        "w2": jnp.array([[1.0, 1.0]]),
    }


def test_probes_equal_formulas_on_hand_made_pytree():
    params = _hand_made()
    p = probes.compute_probes(params)
    np.testing.assert_allclose(p.weight_norm, np.sqrt(9 + 16 + 1 + 4 + 1 + 1), rtol=1e-6)
    # dict leaves are sorted by key: b1 (bias, skipped), w1, w2.
    np.testing.assert_allclose(p.layer_norms, [5.0, np.sqrt(2)], rtol=1e-6)
    np.testing.assert_allclose(p.top_singular, [4.0, np.sqrt(2)], rtol=1e-6)
    np.testing.assert_allclose(p.log_spectral_product, np.log(4 * np.sqrt(2)), rtol=1e-6)
    np.testing.assert_allclose(p.stable_rank, [25 / 16, 1.0], rtol=1e-6)
    assert float(p.step_distance) == 0.0 and p.histogram.shape == (0,)


def test_checkpoint_distance_and_histogram():
    params = _hand_made()
    moved = jax.tree.map(lambda x: x + 0.5, params)
    # 2 + 4 + 2 = 8 entries each moved by 0.5: distance √(8 · 0.25) = √2.
    np.testing.assert_allclose(probes.checkpoint_distance(moved, params), np.sqrt(2.0), rtol=1e-6)
    counts = probes.weight_histogram(params, jnp.array([0.0, 1.5, 3.5, 5.0]))
    # values 3, 0, 0, 4, 1, 2, 1, 1 → [0,1.5): 0,0,1,1,1 ; [1.5,3.5): 3,2 ; [3.5,5]: 4
    np.testing.assert_array_equal(counts, [5, 2, 1])
    below = probes.weight_histogram({"w": -10.0 * jnp.ones((2, 2))}, jnp.array([0.0, 1.0, 2.0]))
    np.testing.assert_array_equal(below, [4, 0])  # outside values land in the end bins


def test_tms_params_and_equinox_module_share_the_interface(key):
    tms = TMSParams(jnp.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), jnp.zeros(3))
    np.testing.assert_allclose(probes.top_singular_values(tms), [2.0], rtol=1e-6)
    mlp = eqx.nn.MLP(4, 3, 5, 2, key=key)  # three Linear layers; activation fields are not arrays
    p = probes.compute_probes(mlp)
    assert p.top_singular.shape == (3,) and p.stable_rank.shape == (3,)
    expected = np.linalg.svd(np.asarray(mlp.layers[1].weight), compute_uv=False)[0]
    np.testing.assert_allclose(p.top_singular[1], expected, rtol=1e-5)


def test_probes_run_inside_a_jitted_scan():
    def body(params, scale):  # a stand-in training step: the probes see the new and previous params
        new = jax.tree.map(lambda x: scale * x, params)
        return new, probes.compute_probes(new, params, jnp.linspace(-5, 5, 11))

    params = _hand_made()
    _, out = jax.jit(lambda p: jax.lax.scan(body, p, jnp.array([1.0, 2.0, 2.0])))(params)
    norm = np.sqrt(32.0)  # 9 + 16 + 1 + 4 + 1 + 1
    np.testing.assert_allclose(out.weight_norm, [norm, 2 * norm, 4 * norm], rtol=1e-6)
    np.testing.assert_allclose(out.step_distance, [0.0, norm, 2 * norm], rtol=1e-6)
    assert out.histogram.shape == (3, 10)


def test_probe_trajectory_and_scalar_series():
    stacked = jax.tree.map(lambda x: jnp.stack([x, 2 * x, 4 * x]), _hand_made())
    traj = probes.probe_trajectory(stacked)
    norm = np.sqrt(32.0)
    np.testing.assert_allclose(traj.step_distance, [0.0, norm, 2 * norm], rtol=1e-6)
    series = probes.scalar_series(traj, steps=np.array([1, 10, 100]))
    np.testing.assert_allclose(
        series["step_distance"], [norm, norm, 2 * norm], rtol=1e-6
    )  # per decade
    assert set(series) == set(probes.SCALAR_PROBES)


def _quadratic_loss(params, data):
    return sum(jnp.sum(x**2) for x in jax.tree.leaves(params))


def test_llc_probe_on_quadratic_matches_its_closed_form(key):
    # L(w) = |w|² in d = 4 dims (two leaves), centre 0. The localized tempered posterior
    # exp(-nβ|w|² - γ/2 |w|²) is Gaussian with precision a = 2nβ + γ per coordinate, so
    # E[L] = d/a and λ̂ = nβ d / (2(nβ + γ/2)) (→ d/2 as nβ → ∞). The SGLD chain
    # w' = w - (ε/2) a w + √ε ξ is itself Gaussian with stationary variance 1/(a(1 - εa/4)): its
    # exact mean λ̂ is nβ d / (a(1 - εa/4)), 5 % above the continuum value at εa = 0.2; we test
    # against it.
    nbeta, gamma, step_size, dim = 100.0, 1.0, 1e-3, 4
    precision = 2 * nbeta + gamma
    continuum = nbeta * dim / (2 * (nbeta + gamma / 2))
    expected = continuum / (1 - step_size * precision / 4)
    center = {"a": jnp.zeros((1, 1, 2)), "b": jnp.zeros((1, 1, 2))}
    settings = LLCSettings(step_size, gamma, nbeta, num_chains=16, num_steps=2000, num_burnin=200)
    result = probes.llc_probe_result(key, _quadratic_loss, center, None, settings)
    llc = probes.llc_probe(key, _quadratic_loss, center, None, settings)
    assert llc.shape == (1, 1)
    per_chain = np.asarray(result.llc_per_chain[0, 0])
    stderr = per_chain.std(ddof=1) / np.sqrt(per_chain.size)
    # 4 standard errors (a false alarm about 1 in 16 000): the Monte Carlo error of 16 chains.
    assert abs(float(llc[0, 0]) - expected) < 4 * stderr
    assert stderr < 0.05 * continuum  # the test can tell the discretised value from a 5 % error


def _double_well(params, data):
    """(w² − 1)²: a local maximum at w = 0, minima at ±1."""
    return sum(jnp.sum((x**2 - 1) ** 2) for x in jax.tree.leaves(params))


def test_llc_probe_leaves_out_estimates_that_are_not_usable(key):
    # Checkpoint 0 sits on the double well's maximum: every chain slides into a well (escaped), so
    # the probe gives NaN there. Checkpoint 1 is a minimum: a finite λ̂ (1-d, regular: about 1/2).
    checkpoints = {"w": jnp.array([[[0.0], [1.0]]])}
    settings = probes.PROBE_SETTINGS.replace(nbeta=100.0)
    result = probes.llc_probe_result(key, _double_well, checkpoints, None, settings)
    np.testing.assert_array_equal(llc_engine.usable(result), [[False, True]])
    assert np.all(np.asarray(result.diagnostics.escaped[0, 0]))
    values = probes.llc_probe(key, _double_well, checkpoints, None, settings)
    # Harmonic well of curvature k = 8nβ + γ: λ̂ ≈ ½ / (1 − εk/4) = 0.62 for the Euler chain; two
    # 150-draw chains leave an error of about ±0.1, so a wide band (the test is about the NaN).
    assert np.isnan(values[0, 0]) and 0.2 < float(values[0, 1]) < 1.0


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: probes.compute_probes({"b": jnp.ones(3)}), "layer"),
        (lambda: probes.weight_norm({"f": "not an array"}), "floating"),
        (lambda: probes.checkpoint_distance(_hand_made(), {"w": jnp.ones(2)}), "previous"),
        (lambda: probes.weight_histogram(_hand_made(), jnp.array([1.0])), "edges"),
        (
            lambda: probes.scalar_series(
                probes.probe_trajectory(jax.tree.map(lambda x: jnp.stack([x, x]), _hand_made())),
                steps=[0, 1],
            ),
            "steps",
        ),
        (
            lambda: probes.scalar_series(
                probes.probe_trajectory(jax.tree.map(lambda x: jnp.stack([x, x]), _hand_made())),
                steps=[5, 5],
            ),
            "steps",
        ),
        (lambda: probes.weight_histogram(_hand_made(), jnp.array([0.0, 2.0, 1.0])), "edges"),
        (lambda: probes.weight_histogram(_hand_made(), jnp.array([0.0, jnp.nan, 1.0])), "edges"),
    ],
)
def test_bad_inputs_raise_value_error(call, name):
    with pytest.raises(ValueError, match=name):
        call()
