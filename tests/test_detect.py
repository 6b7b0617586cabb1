"""Change-point detection finds injected transitions; the matched scorer counts hand-made cases
right."""

import jax
import numpy as np
import pytest

from tmsjax.transitions import changepoints

STEPS = np.unique(np.round(np.geomspace(1, 1e4, 150)))
U = np.log10(STEPS)


def _sigmoid(center, width=0.03):
    return 1.0 / (1.0 + np.exp(-(U - center) / width))


@pytest.mark.parametrize(
    "method, signal", [("pelt", "rate"), ("pelt", "level"), ("binseg", "level")]
)
def test_finds_an_injected_step_on_a_drift(method, signal):
    rng = np.random.default_rng(0)
    series = _sigmoid(2.5) + 0.1 * U + 0.01 * rng.normal(size=U.size)
    found = changepoints.detect_changepoints(
        STEPS, series, method=method, signal=signal, window=(10, 1e4)
    )
    assert found.steps.size >= 1
    nearest = np.min(np.abs(np.log10(found.steps) - 2.5))
    assert nearest < 0.1
    assert np.all((found.confidence > 0) & (found.confidence <= 1))


def test_rate_detector_finds_two_steps_and_nothing_on_a_drift():
    rng = np.random.default_rng(1)
    two = _sigmoid(1.5) + _sigmoid(3.0, 0.05) + 0.02 * rng.normal(size=U.size)
    found = changepoints.detect_changepoints(STEPS, two, window=(10, 1e4))
    np.testing.assert_allclose(np.log10(found.steps), [1.5, 3.0], atol=0.1)
    drift = 0.3 * U + 0.02 * rng.normal(size=U.size)
    assert changepoints.detect_changepoints(STEPS, drift, window=(10, 1e4)).steps.size == 0


@pytest.mark.parametrize("window", [None, (10, 1e4), (30, 3000)])
@pytest.mark.parametrize("method, signal", [("pelt", "rate"), ("binseg", "rate")])
def test_series_linear_in_log_step_gives_no_detection(window, method, signal):
    # A straight line in log-step has a constant rate: no transition anywhere, window edges included
    # (smoothing on the window alone bends the line at its edges and used to fire there).
    line = 2.0 - 0.7 * U
    assert (
        changepoints.detect_changepoints(
            STEPS, line, window=window, method=method, signal=signal
        ).steps.size
        == 0
    )
    assert changepoints.detect_slope_sign_changes(STEPS, line, window=window).steps.size == 0


def test_slope_sign_rule_finds_the_peak_of_a_bump():
    bump = np.exp(-((U - 2.0) ** 2) / (2 * 0.3**2))
    found = changepoints.detect_slope_sign_changes(STEPS, bump)
    np.testing.assert_allclose(np.log10(found.steps), [2.0], atol=0.05)
    assert (
        changepoints.detect_slope_sign_changes(STEPS, U).steps.size == 0
    )  # monotone: no stage boundary


@pytest.mark.parametrize(
    "detected, true, tolerance, matched",
    [
        ([100, 1000], [110, 1000], 0.05, 2),
        ([100], [100, 105], 0.1, 1),  # one-to-one: one detection matches one truth
        ([100, 105], [100], 0.1, 1),
        ([100], [200], 0.2, 0),  # log10(2) = 0.30 > 0.2
        ([100], [200], 0.31, 1),
        ([90, 110], [100, 120], 0.06, 2),
        # log10: detections 2.000, 2.114; truths 2.079, 2.204. The closest pair is 130–120 (0.035):
        # a nearest-pair-first greedy takes it and strands 100 (0.204 from 160) for 1 match; the
        # maximum matching is 100–120 (0.079) and 130–160 (0.090), 2 matches.
        ([100, 130], [120, 160], 0.1, 2),
        ([], [100], 0.5, 0),
    ],
)
def test_match_events_hand_made(detected, true, tolerance, matched):
    assert changepoints.match_events(detected, true, tolerance) == matched


def test_score_detections_precision_recall_f1():
    scores = changepoints.score_detections(
        [[100, 1000, 5000], []], [[100, 1000], [300]], tolerances=[0.01, 1.0]
    )
    # τ = 0.01: 2 matches of 3 detections and 3 truths; τ = 1: 5000 matches 300? no, 300 is in
    # run 2.
    np.testing.assert_allclose(scores.precision, [2 / 3, 2 / 3])
    np.testing.assert_allclose(scores.recall, [2 / 3, 2 / 3])
    np.testing.assert_allclose(scores.f1, [2 / 3, 2 / 3])
    empty = changepoints.score_detections([[]], [[100]], tolerances=[0.1])
    assert empty.precision[0] == 0 and empty.f1[0] == 0
    assert changepoints.false_positives_per_run([[10, 20], []]) == 1.0


def test_baselines(key):
    even = changepoints.evenly_spaced((10, 1e4), 2)
    np.testing.assert_allclose(np.log10(even.steps), [2.0, 3.0])
    random = changepoints.random_events(key, (10, 1e4), 5)
    assert random.steps.size == 5 and np.all((random.steps >= 10) & (random.steps <= 1e4))
    again = changepoints.random_events(key, (10, 1e4), 5)
    np.testing.assert_array_equal(random.steps, again.steps)
    assert (
        changepoints.random_events(jax.random.fold_in(key, 1), (10, 1e4), 5).steps[0]
        != random.steps[0]
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(steps=[0, 1, 2, 3, 4]), "steps"),
        (dict(values=np.ones(3)), "values"),
        (dict(window=(1, 1e6)), "window"),
        (dict(method="dynp"), "method"),
        (dict(signal="slope"), "signal"),
        (dict(penalty=-1.0), "penalty"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, name):
    arguments = dict(steps=STEPS, values=U)
    arguments.update({k: v for k, v in kwargs.items() if k in ("steps", "values")})
    options = {k: v for k, v in kwargs.items() if k not in ("steps", "values")}
    with pytest.raises(ValueError, match=name):
        changepoints.detect_changepoints(arguments["steps"], arguments["values"], **options)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: changepoints.detect_changepoints(STEPS, U, smoothing=-0.1), "smoothing"),
        (lambda: changepoints.detect_changepoints(STEPS, U, min_separation=-0.1), "min_separation"),
        (lambda: changepoints.detect_changepoints(STEPS, U, num_points=4), "num_points"),
        (lambda: changepoints.detect_slope_sign_changes(STEPS, U, num_points=1), "num_points"),
        (lambda: changepoints.detect_slope_sign_changes(STEPS, U, smoothing=-1.0), "smoothing"),
        (lambda: changepoints.log_grid(STEPS, U, num_points=1), "num_points"),
        (lambda: changepoints.evenly_spaced((10, 100), None), "count"),
        (lambda: changepoints.random_events(jax.random.key(0), (10, 100), None), "count"),
        (lambda: changepoints.evenly_spaced((10, 100), -1), "count"),
        (lambda: changepoints.evenly_spaced((100, 10), 2), "window"),
    ],
)
def test_bad_arguments_of_other_entry_points(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_pelt_matches_ruptures_l2_pelt():
    # The C kernel PELT with the linear kernel must give the breaks of ruptures.Pelt(model="l2").
    import ruptures

    rng = np.random.default_rng(2)
    for _ in range(5):
        signal = np.cumsum(rng.normal(size=(96, 2)), axis=0)
        signal = (signal - signal.mean(0)) / signal.std(0)
        pen = 4.0 * 2 * np.log(96)
        reference = ruptures.Pelt(model="l2", min_size=3, jump=1).fit(signal).predict(pen=pen)
        fast = ruptures.KernelCPD(kernel="linear", min_size=3).fit(signal).predict(pen=pen)
        assert [int(b) for b in fast] == reference


def test_penalty_path_equals_one_penalty_at_a_time():
    rng = np.random.default_rng(2)
    series = _sigmoid(1.5) + _sigmoid(3.0, 0.05) + 0.05 * rng.normal(size=U.size)
    both = np.stack([series, _sigmoid(2.2) + 0.05 * rng.normal(size=U.size)], axis=1)
    for values in (series, both):
        path = changepoints.detect_changepoints_penalties(
            STEPS, values, (1.0, 4.0, 64.0), window=(10, 1e4)
        )
        for penalty, found in zip((1.0, 4.0, 64.0), path):
            alone = changepoints.detect_changepoints(
                STEPS, values, penalty=penalty, window=(10, 1e4)
            )
            np.testing.assert_array_equal(found.steps, alone.steps)
