r"""Automatic calibration (tmsjax.llc.calibrate) against known answers, with MC tolerances.

Known answers: for :math:`K = \frac12 w^\top A w` the localized expectation is
:math:`\frac12\sum_i n\beta a_i/(n\beta a_i + \gamma)` (λ = d/2 as γ → 0); for the singular
:math:`K = w_1^2 w_2^2 + w_3^2` (λ = 1: 1/2 from the normal crossing, multiplicity 2, plus 1/2 from
:math:`w_3`) the expectation at finite nβ and γ is a 1-d integral (computed here by quadrature).
Each test states its tolerance: 4 standard errors of a fresh estimate, plus the localization
correction (exact) or the calibration rule's own bound on the discretisation bias.

Every grid here vmaps all its cells at once (``cell_batch=None``): on CPU that compiles in about
half the time of the default ``lax.map`` groups, which only pay off for large models.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from tmsjax import llc
from tmsjax.llc import LLCDiagnostics, LLCGrid, LLCResult, LLCSettings, estimate_llc
from tmsjax.llc.calibrate import (
    EPS_TOP,
    FLAT_Z,
    MAX_CORRECTION,
    STEP_FRACTION,
    Calibration,
    CalibrationError,
    calibrate,
    choose_cell,
    corrected_llc,
    relaxed,
    stable_region,
)

CURVATURES = jnp.array([1.0, 3.0, 10.0, 30.0])  # anisotropic A: condition number 30
NBETA = 100.0
# 16000 steps with a quarter burn-in: long enough that the drift diagnostic rarely flags an
# equilibrated chain near the ε the calibration picks. Its false alarms grow when the draws span
# fewer than ~100 autocorrelation times (measured: 4-15% of chains at 20-40 times), and one flagged
# chain of eight takes a cell out of the stable region; with 4000 steps 10-20% of seeds found none.
SETTINGS = LLCSettings(nbeta=NBETA, num_chains=8, num_steps=16000, num_burnin=4000)


def quadratic(w, data):
    """K = ½ wᵀAw, A = diag(CURVATURES): λ = d/2 = 2."""
    del data
    return 0.5 * jnp.sum(CURVATURES * w**2)


def localized_quadratic(nbeta, localization):
    """E[nβ K] for the exact localized posterior of `quadratic`: ½ Σ nβ a_i / (nβ a_i + γ)."""
    a = np.asarray(CURVATURES)
    return 0.5 * float(np.sum(nbeta * a / (nbeta * a + localization)))


def crossing(w, data):
    """K = w1² w2² + w3²: λ = 1 (multiplicity 2 from the crossing)."""
    del data
    return w[0] ** 2 * w[1] ** 2 + w[2] ** 2


def localized_crossing(nbeta, localization):
    r"""E[nβ K] for `crossing` under :math:`e^{-n\beta K - \gamma\lVert w\rVert^2/2}`, exactly.

    Given w2, w1 is Gaussian with precision :math:`2n\beta w_2^2 + \gamma`, so
    :math:`E[n\beta w_1^2 w_2^2 \mid w_2] = n\beta w_2^2/(2n\beta w_2^2 + \gamma)` and w2 has
    density :math:`\propto e^{-\gamma w_2^2/2}(2n\beta w_2^2 + \gamma)^{-1/2}` (one quadrature);
    w3 is Gaussian with precision :math:`2n\beta + \gamma`: :math:`E[n\beta w_3^2] =
    n\beta/(2n\beta + \gamma)`.
    """

    def weight(u):
        return np.exp(-localization * u * u / 2) / np.sqrt(2 * nbeta * u * u + localization)

    def conditional(u):
        return weight(u) * nbeta * u * u / (2 * nbeta * u * u + localization)

    numerator = integrate.quad(conditional, -np.inf, np.inf, limit=400)[0]
    denominator = integrate.quad(weight, -np.inf, np.inf, limit=400)[0]
    return numerator / denominator + nbeta / (2 * nbeta + localization)


def test_quadratic_calibration_gives_half_the_dimension(key):
    key_calibrate, key_check = jax.random.split(key)
    # Deliberately wide: five decades, from ε k_max ≈ 0.003 (every soft direction frozen over the
    # chain) to ε k_max ≈ 300 (a blow-up).
    step_sizes = np.logspace(-7, -2, 11)
    calibration = calibrate(
        key_calibrate, quadratic, jnp.zeros(4), settings=SETTINGS, step_sizes=step_sizes,
        cell_batch=None,
    )  # fmt: skip
    assert isinstance(calibration, Calibration)
    i, j, m = calibration.index
    assert calibration.stable.shape == (11, 3, 1) and calibration.stable[i, j, m]
    # The largest ε is unstable (it blew up), and the chosen ε lies below it.
    clear = np.asarray(llc.all_clear(calibration.grid.result))
    assert not clear[-1, j, m] and i < len(step_sizes) - 1
    assert np.all(np.asarray(calibration.grid.result.diagnostics.non_finite)[-1])
    # Power iteration finds the stiffest curvature of K (30) from Hessian-vector products.
    assert abs(calibration.curvature - 30.0) < 0.3
    chosen = calibration.settings
    assert (chosen.num_chains, chosen.num_steps, chosen.num_burnin) == (8, 16000, 4000)
    assert chosen.nbeta == NBETA and chosen.step_size == calibration.grid.step_sizes[i]
    assert f"ε = {chosen.step_size:.3g}" in calibration.reason

    # The recommended ε, γ, nβ with twice the chains, for a tighter check.
    more_chains = chosen.replace(num_chains=16)
    result = estimate_llc(key_check, quadratic, jnp.zeros(4), settings=more_chains)
    stderr = float(result.stderr)
    correction = 2.0 - localized_quadratic(NBETA, chosen.localization)  # exact, ≥ 0
    assert abs(float(result.llc) - 2.0) < 4 * stderr + correction, (
        float(result.llc),
        stderr,
        calibration.reason,
    )
    assert 4 * stderr < 0.2 * 2.0  # the check has power


def test_singular_calibration_matches_the_exact_localized_expectation(key):
    key_calibrate, key_check = jax.random.split(key)
    calibration = calibrate(
        key_calibrate, crossing, jnp.zeros(3), settings=SETTINGS, cell_batch=None
    )
    # The default grid is scaled by the curvature at the centre: the Hessian is diag(0, 0, 2).
    assert abs(calibration.curvature - 2.0) < 0.02
    top = EPS_TOP / (NBETA * calibration.curvature + 100.0)  # default γ grid tops at 100
    np.testing.assert_allclose(calibration.grid.step_sizes[-1], top, rtol=1e-6)
    np.testing.assert_allclose(calibration.grid.localizations, [1.0, 10.0, 100.0])

    i, j, m = calibration.index
    chosen = calibration.settings
    exact = localized_crossing(NBETA, chosen.localization)
    # The finite-nβ, finite-γ expectation is what λ̂ estimates, not λ = 1: at nβ = 100 it is 0.85
    # for γ = 1 and 0.66 for γ = 10 (the (m − 1) log log n correction of a multiplicity-2 crossing
    # and the localization), so a fixed "within 25% of λ" would test the γ the grid happened to
    # pick, not the estimator. The tolerance: 4 standard errors of the fresh estimate plus the
    # rule's own bound on the chosen cell's discretisation bias, FLAT_Z σ / (r − 1) with σ the
    # combined standard error of the chosen cell and the next larger ε that vouched for it.
    grid = calibration.grid
    ratio = grid.step_sizes[i + 1] / grid.step_sizes[i]
    sigma = float(np.hypot(grid.result.stderr[i, j, m], grid.result.stderr[i + 1, j, m]))
    bias_bound = FLAT_Z * sigma / (ratio - 1)
    # The recommended ε, γ, nβ with twice the chains, for a tighter check.
    result = estimate_llc(key_check, crossing, jnp.zeros(3), settings=chosen.replace(num_chains=16))
    stderr = float(result.stderr)
    assert abs(float(result.llc) - exact) < 4 * stderr + bias_bound, (
        float(result.llc),
        exact,
        stderr,
        bias_bound,
        calibration.reason,
    )
    # The check has power: it would see a 30% error (the γ = 1 and γ = 10 values differ by 23%).
    assert 4 * stderr + bias_bound < 0.3 * exact


def test_every_step_size_far_too_large_is_named(key):
    settings = LLCSettings(nbeta=NBETA, num_chains=4, num_steps=100)
    with pytest.raises(CalibrationError, match="smaller step_sizes") as error:
        calibrate(
            key, quadratic, jnp.zeros(4), settings=settings, step_sizes=[0.1, 1.0, 10.0],
            cell_batch=None,
        )  # fmt: skip
    message = str(error.value)
    # ε k_max ≥ 300: every chain of every cell blows up, and the message counts them.
    assert "9/9 cells 'non-finite'" in message and "even the smallest ε is too large" in message
    assert isinstance(error.value, ValueError) and error.value.grid.result.llc.shape == (3, 3, 1)


def test_bad_input_raises_a_value_error_naming_it(key):
    def nan_at_center(w, data):
        return jnp.sum(w**2) + jnp.sqrt(w[0] - 1.0)

    def cone(w, data):  # finite at 0, but its gradient there is 0/0
        return jnp.sqrt(jnp.sum(w**2))

    settings = LLCSettings(nbeta=NBETA, num_steps=10)
    with pytest.raises(ValueError, match="is nan at the centre"):
        calibrate(key, nan_at_center, jnp.zeros(2), settings=settings)
    with pytest.raises(ValueError, match="gradient of loss_fn at the centre is not finite"):
        calibrate(key, cone, jnp.zeros(2), settings=settings)
    with pytest.raises(ValueError, match="num_chains must be >= 2"):
        calibrate(key, quadratic, jnp.zeros(4), settings=settings.replace(num_chains=1))
    with pytest.raises(ValueError, match="at least 3 distinct"):
        calibrate(key, quadratic, jnp.zeros(4), settings=settings, step_sizes=[1e-3, 1e-4, 1e-3])
    with pytest.raises(ValueError, match="no data tell n"):
        calibrate(key, quadratic, jnp.zeros(4))
    with pytest.raises(ValueError, match="no scale for the default step_sizes"):
        calibrate(key, lambda w, d: jnp.sum(w**4), jnp.zeros(2), settings=settings,
                  localizations=[0.0])  # fmt: skip


def test_the_grid_is_one_compiled_program_and_a_new_key_compiles_nothing(key):
    compiled = []

    class Recorder(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("Compiling "):
                compiled.append(record.getMessage().split(" with ")[0])

    def run(seed):
        try:  # compilation is the question here, not whether these short chains find a region
            calibrate(
                jax.random.fold_in(key, seed), quadratic, jnp.zeros(4), settings=settings,
                step_sizes=[1e-5, 1e-4, 1e-3], localizations=[1.0, 10.0],
            )  # fmt: skip
        except CalibrationError:
            pass

    settings = LLCSettings(nbeta=NBETA, num_chains=3, num_steps=120)  # shapes no other test uses
    handler, logger = Recorder(), logging.getLogger("jax")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.WARNING
    try:
        with jax.log_compiles(True):
            run(0)
            first = list(compiled)
            run(1)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert first.count("Compiling jit(_grid_jit)") == 1, first
    assert compiled == first, compiled[len(first) :]  # the second call compiled nothing


def _synthetic_grid(llc_values, stderr, clear, nbetas=(100.0,)):
    """An LLCGrid with given λ̂, standard errors and all-clear flags (drifting where not clear)."""
    llc_values = np.asarray(llc_values, dtype=float)
    shape = llc_values.shape
    chains = np.zeros((*shape, 2))
    drifting = np.broadcast_to(~np.asarray(clear, dtype=bool)[..., None], chains.shape)
    no = np.zeros(chains.shape, dtype=bool)
    diagnostics = LLCDiagnostics(no, no, drifting, no, chains, chains, chains, chains)
    result = LLCResult(
        llc_values, chains, np.asarray(stderr, dtype=float), np.zeros(shape),
        np.zeros(shape), chains, chains, diagnostics,
    )  # fmt: skip
    step_sizes = np.logspace(-6, -6 + 0.5 * (shape[0] - 1), shape[0])
    return LLCGrid(step_sizes, np.array([1.0, 10.0][: shape[1]]), np.asarray(nbetas), result)


def test_the_rule_takes_the_largest_checked_step_at_the_smallest_stable_gamma():
    # γ = 1: drifting, a flat stretch 1.00 / 1.05 / 1.10, a jump to 1.6 (ok: a bias the
    # diagnostics missed), then too large. γ = 10: a slow trend, each neighbour within 2 se
    # (0.12 < 2·√2·0.05 = 0.14) but not across two steps (0.24).
    value = np.array([[0.3, 0.2], [1.0, 1.0], [1.05, 1.12], [1.10, 1.24], [1.6, 1.36], [2.5, 2.6]])
    error = np.full_like(value, 0.05)
    clear = np.array([[0, 0], [1, 1], [1, 1], [1, 1], [1, 1], [0, 0]], dtype=bool)
    grid = _synthetic_grid(value[..., None], error[..., None], clear[..., None])
    stable = stable_region(grid)
    # 1.00 has a drifting neighbour below; 1.10, the top of the plateau, a disagreeing one above.
    np.testing.assert_array_equal(stable[:, 0, 0], [0, 0, 1, 0, 0, 0])
    assert not np.any(stable[:, 1, 0])
    assert choose_cell(grid, stable) == (2, 0, 0)

    # Two nβ: the reference nβ wins over a larger one; without a reference, the largest.
    both = np.stack([value, value], axis=-1)
    grid = _synthetic_grid(both, np.stack([error] * 2, -1), np.stack([clear] * 2, -1), (50, 200))
    assert choose_cell(grid, stable_region(grid), reference_nbeta=60.0) == (2, 0, 0)
    assert choose_cell(grid, stable_region(grid)) == (2, 0, 1)
    # Where only γ = 10 is stable, it is chosen.
    value[:, 1] = value[:, 0]
    value[2, 0] = 1.3
    grid = _synthetic_grid(value[..., None], error[..., None], clear[..., None])
    assert choose_cell(grid, stable_region(grid)) == (2, 1, 0)


def test_figure_marks_the_stable_cells_and_the_chosen_one():
    import matplotlib.pyplot as plt

    value = np.array([[0.3, 0.2], [1.0, 0.5], [1.05, 0.9], [1.10, 1.3]])[..., None]
    clear = np.array([[0, 0], [1, 1], [1, 1], [1, 1]], dtype=bool)[..., None]
    grid = _synthetic_grid(value, np.full_like(value, 0.05), clear)
    stable = stable_region(grid)
    index = choose_cell(grid, stable)
    calibration = Calibration(LLCSettings(), grid, stable, index, 1.0, "synthetic")
    assert float(calibration.chosen.llc) == 1.05
    figure = calibration.figure(reference=1.0)
    try:
        (axis,) = figure.axes
        assert len(axis.get_legend().get_texts()) == 4  # two γ, the chosen cell, the reference
    finally:
        plt.close(figure)


# ~80 s per calibration on 2 busy cores (21 cells × 4 chains × 4000 steps): slow suite.
@pytest.mark.slow
@pytest.mark.parametrize("loss", ["potential", "dataset"])
def test_calibration_finds_a_stable_cell_at_the_tms_six_gon(key, loss):
    """The TMS 6-gon (c = 6, r = 2) at n = 1000, γ = 1, 4 chains × 4000 steps: the settings where
    calibrate used to find no stable cell, with 3 of 7 cells at γ = 1 called "drifting" by the
    batch-means drift test (batches shorter than the 1/(εγ)-step autocorrelation of slow chains).
    With an autocorrelation-aware standard error no cell of a stationary chain drifts, and a stable
    cell exists; the chosen cell's chains are not drifting."""
    from tmsjax.tms import losses
    from tmsjax.tms.critical import critical_points
    from tmsjax.tms.data import make_dataset, sample_sparse_limit
    from tmsjax.tms.model import TMSParams

    point = next(p for p in critical_points(6) if p.label == "6")
    center = TMSParams(jnp.asarray(point.W, jnp.float32), jnp.asarray(point.b, jnp.float32))
    settings = LLCSettings(localization=1.0, num_chains=4, num_steps=4000, num_burnin=1000)
    key_data, key_run = jax.random.split(key)
    if loss == "potential":
        loss_fn, data, extra = losses.potential_loss, None, {"num_data": 1000}
    else:
        data = make_dataset(sample_sparse_limit(key_data, 1000, 6))
        loss_fn, extra = losses.row_loss, {}
    calibration = calibrate(key_run, loss_fn, center, data, settings, **extra)
    assert calibration.stable.any()
    assert not np.any(np.asarray(calibration.chosen.diagnostics.drifting))
    assert np.isfinite(float(calibration.chosen.llc)) and float(calibration.chosen.llc) > 0


SOFT = jnp.array([30.0, 0.01])  # nβ a = 3000 and 1 at nβ = 100: the soft one is held as much by γ


def soft_quadratic(w, data):
    """K = ½ Σ a_i w_i², a = (30, 0.01)."""
    del data
    return 0.5 * jnp.sum(SOFT * w**2)


def test_flat_cells_of_frozen_chains_are_not_relaxed_and_named(key):
    # ε ≤ 1.28e-4 and γ = 1: the soft direction (curvature nβa + γ = 2) relaxes in 1/(2ε) ≥ 3900
    # steps, the chain has 2000, so it stays near w* in every cell: λ̂ ≈ ½ from the stiff direction
    # (plus ≤ 0.07 of the soft one's ¼), flat in ε, against the exact ½(3000/3001 + 1/2) = 0.75.
    # The flatness test alone calls such cells stable; the relaxation requirement
    # (1/(εγ) ≤ num_steps: 7800 to 250,000 here, against 2000) does not.
    settings = LLCSettings(nbeta=NBETA, num_chains=16, num_steps=2000, num_burnin=500)
    step_sizes = 4e-6 * 2.0 ** np.arange(6)
    with pytest.raises(CalibrationError, match="not relaxed") as error:
        calibrate(
            key, soft_quadratic, jnp.zeros(2), settings=settings, step_sizes=step_sizes,
            localizations=[1.0], cell_batch=None,
        )  # fmt: skip
    grid = error.value.grid
    assert "6/6 cells 'not relaxed'" in str(error.value)
    exact = 0.5 * (3000 / 3001 + 0.5)
    flat = stable_region(grid)  # without the settings: flatness and health only
    assert np.any(flat), np.asarray(grid.result.llc).ravel()
    # What the rule without relaxation would have chosen is low by more than 3 standard errors.
    index = choose_cell(grid, flat)
    value, stderr = float(grid.result.llc[index]), float(grid.result.stderr[index])
    assert value + 3 * stderr < exact, (value, stderr)
    assert not np.any(stable_region(grid, settings=settings))
    assert not np.any(relaxed(grid, settings))


QUADRATIC_A = jnp.array([10.0, 100.0])


def two_scale_quadratic(w, data):
    """K = ½(10 w₁² + 100 w₂²): λ = 1."""
    del data
    return 0.5 * jnp.sum(QUADRATIC_A * w**2)


def euler_expectation(nbeta, step_size, localization):
    """Exact E[nβK] of the Euler chain: Σ nβa/(2k(1 − εk/4)), k = nβa + γ (tests/test_llc.py)."""
    k = nbeta * np.asarray(QUADRATIC_A) + localization
    return float(np.sum(nbeta * np.asarray(QUADRATIC_A) / (2 * k * (1 - step_size * k / 4))))


def test_auto_settings_spends_the_budget_on_gamma_then_on_epsilon(key):
    # k* = 100, nβ = 100: ε₀ = 0.2/10001. A short budget S buys γ = 1/(ε₀S) > 1 and N = S; a long
    # one leaves γ at its floor 1 and lowers ε to 1/S (N = S); on minibatches with full-data
    # draws SGLD's acceptance estimate (a second gradient per step) is off.
    base = LLCSettings(nbeta=NBETA)
    eps0 = STEP_FRACTION / (NBETA * 100 + 1)
    short = llc.auto_settings(
        key, two_scale_quadratic, jnp.zeros(2), settings=base, step_budget=25_000
    )
    assert short.step_size == pytest.approx(eps0, rel=1e-3)
    assert short.localization == pytest.approx(1 / (eps0 * 25_000), rel=1e-3)
    assert short.num_steps == 25_000 and short.sampler == llc.SGLD()
    long = llc.auto_settings(
        key, two_scale_quadratic, jnp.zeros(2), settings=base, step_budget=80_000
    )
    assert long.localization == 1.0 and long.num_steps == 80_000
    assert long.step_size == pytest.approx(1 / 80_000) and long.step_size < eps0
    rows = jnp.zeros((100, 2))
    minibatch = llc.auto_settings(
        key, two_scale_quadratic, jnp.zeros(2), rows, base.replace(batch_size=10),
        step_budget=25_000,
    )  # fmt: skip
    assert minibatch.sampler == llc.SGLD(estimate_acceptance=False)
    assert minibatch.step_size == short.step_size


def test_auto_calibrate_corrects_the_step_bias_and_reruns_in_the_same_program(key):
    # step_fraction 2.5: εk* = 2.5 at the stiff direction, an Euler bias (ε nβa/8)/(1 − εk/4) of
    # about half of λ̂, above MAX_CORRECTION: one rerun at ε·(MAX_CORRECTION/2)/b in the same
    # compiled program, whose corrected λ̂ is the exact (ε → 0) localized expectation: the
    # correction is exact for a Gaussian.
    compiled = []

    class Recorder(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("Compiling "):
                compiled.append(record.getMessage().split(" with ")[0])

    settings = LLCSettings(nbeta=NBETA, num_chains=16)
    handler, logger = Recorder(), logging.getLogger("jax")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.WARNING
    try:
        with jax.log_compiles(True):
            found = llc.auto_calibrate(
                key, two_scale_quadratic, jnp.zeros(2), settings=settings, step_budget=4000,
                step_fraction=2.5,
            )  # fmt: skip
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert compiled.count("Compiling jit(_estimate_jit)") == 1, compiled
    assert abs(found.curvature - 100.0) < 1.0
    first, last = found.rounds[0], found.rounds[-1]
    assert first["step_size"] == pytest.approx(2.5 / (NBETA * 100 + 1))
    assert len(found.rounds) == 2 and "after ε" in found.reason
    # The first run's estimated bias is the Euler chain's exact one (a Gaussian), within noise.
    exact_bias = euler_expectation(NBETA, first["step_size"], first["localization"]) - (
        euler_expectation(NBETA, 0.0, first["localization"])
    )
    assert first["step_bias"] > MAX_CORRECTION
    assert first["step_bias"] * first["llc"] == pytest.approx(exact_bias, rel=0.15)
    factor = 0.5 * MAX_CORRECTION / first["step_bias"]
    assert last["step_size"] == pytest.approx(first["step_size"] * factor)
    # γ = 1/(εS) = 1.0001 (a budget a hair short of 1/ε, so that ε keeps its rule's value):
    # 1/(εγ) = 4000 steps; the rerun keeps them.
    assert found.settings.num_steps == 4000
    # The corrected λ̂ is the exact ε → 0 expectation at the final γ; the raw one is not.
    chosen = found.settings
    expected = euler_expectation(NBETA, 0.0, chosen.localization)
    assert abs(found.llc - expected) < 4 * found.stderr and 4 * found.stderr < 0.15
    assert found.step_bias == last["step_bias"] and 0.05 < last["step_bias"] < MAX_CORRECTION
    assert found.verdict == "ok" and llc.verdict(found.result).startswith("step size too large")


def test_corrected_llc_of_a_batch_is_that_of_each_estimate():
    # Runs × checkpoints (2 × 3) of 4 chains; one estimate lacks a bias estimate (NaN: left raw).
    rng = np.random.default_rng(0)
    per_chain = rng.uniform(1.5, 10.0, (2, 3, 4))
    step_bias = rng.uniform(0.0, 0.2, (2, 3, 4))
    step_bias[1, 2, 0] = np.nan
    flags = np.zeros((2, 3, 4), bool)
    zeros = np.zeros((2, 3, 4))
    diagnostics = LLCDiagnostics(flags, flags, flags, flags, zeros, zeros, zeros, zeros,
                                 flags, step_bias, zeros)  # fmt: skip
    nan = np.full((2, 3), np.nan)
    result = LLCResult(per_chain.mean(-1), per_chain, nan, nan, nan, None, None, diagnostics)
    mean, error = corrected_llc(result)
    assert mean.shape == error.shape == (2, 3)
    for index in np.ndindex(2, 3):
        single = jax.tree.map(lambda x, i=index: x[i], result)
        assert corrected_llc(single) == pytest.approx((mean[index], error[index]))
    assert mean[1, 2] == pytest.approx(per_chain[1, 2].mean())  # raw where not estimated
    expected = (per_chain[0, 0] * (1 - step_bias[0, 0])).mean()  # λ̂_chain ≥ 1: relative bias
    assert mean[0, 0] == pytest.approx(expected)


def reduced_rank_loss(factors, target):
    """‖W₂W₁ − A₀‖²_F: the population loss of reduced-rank regression (x ~ N(0, I))."""
    w1, w2 = factors
    return jnp.sum((w2 @ w1 - target) ** 2)


@pytest.mark.slow
def test_auto_calibrate_matches_an_exact_sampler_on_reduced_rank_regression(key, x64):
    # Widths (3, 2, 3), true rank 1, centred at the zero-padded factorisation: λ = 3.5 with
    # multiplicity m = 2 (Aoyagi & Watanabe 2005). At a finite nβ the localized posterior's
    # E[nβK] is λ − (m−1)/log(nβ) + o(1/log nβ) (from Z(t) ∝ t^−λ (log t)^(m−1)): 3.36 at
    # nβ = 10⁴/log 10⁴, below λ whatever the sampler. The corrected SGLD λ̂ of auto_calibrate must
    # agree with MALA (exact for any ε) at the same nβ and γ, to 4 combined standard errors.
    nbeta = 1e4 / np.log(1e4)
    target = jnp.array([[0.8], [0.0], [0.6]]) @ jnp.array([[0.6, 0.8, 0.0]])  # A₀ = u vᵀ
    center = (
        jnp.array([[0.6, 0.8, 0.0], [0.0, 0.0, 0.0]]),
        jnp.array([[0.8, 0.0], [0.0, 0.0], [0.6, 0.0]]),
    )
    assert float(reduced_rank_loss(center, target)) == 0.0
    found = llc.auto_calibrate(
        key, reduced_rank_loss, center, target, LLCSettings(nbeta=nbeta, num_chains=8),
        step_budget=90_000,
    )  # fmt: skip
    exact = LLCSettings(
        0.5 / (nbeta * found.curvature), found.settings.localization, nbeta, num_chains=8,
        num_steps=200_000, num_burnin=40_000, thinning=20, sampler=llc.MALA(),
    )  # fmt: skip
    reference = llc.estimate_llc(
        jax.random.fold_in(key, 1), reduced_rank_loss, center, target, exact
    )
    assert float(np.mean(reference.diagnostics.acceptance)) > 0.5
    error = np.hypot(found.stderr, float(reference.stderr))
    assert abs(found.llc - float(reference.llc)) < 4 * error, (found.llc, float(reference.llc))
    # The finite-nβ offset is real, not the sampler's: at least half its first order is visible.
    assert float(reference.llc) < 3.5 - 0.5 / np.log(nbeta)
