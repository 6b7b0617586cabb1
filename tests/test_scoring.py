"""Scoring: TCPDBench's covering on hand-computed cases, pooled F1 and false alarms, bootstrap
intervals against the normal approximation of a proportion, the seed split, the selection rule."""

import numpy as np
import pytest

from tmsjax.transitions import scoring

WINDOW = (1.0, 1e4)  # four decades: segment lengths below are in decades


@pytest.mark.parametrize(
    "detected, true, expected",
    [
        ([100], [100], 1.0),
        ([], [], 1.0),
        # one detected segment [0, 4] against true [0, 2], [2, 4]: J = 1/2 each
        ([], [100], 0.5),
        # a null run with one false alarm: the longest detected segment's share
        ([100], [], 0.5),
        ([10], [], 0.75),
        # true [0,1], [1,3], [3,4] against detected [0,2], [2,4]:
        # (1 · 1/2 + 2 · 1/3 + 1 · 1/2) / 4
        ([100], [10, 1000], (0.5 + 2 / 3 + 0.5) / 4),
        # points outside the window and duplicates change nothing
        ([100, 100, 1e5, 0.5], [100], 1.0),
    ],
)
def test_covering_hand_made(detected, true, expected):
    assert scoring.covering(detected, true, WINDOW) == pytest.approx(expected)


def test_covering_is_symmetric_only_in_its_perfect_case():
    # C(G', G) weights by the true segments: one true cut covered by two detected ones near it
    # differs from the reverse.
    a = scoring.covering([90, 110], [100], WINDOW)
    b = scoring.covering([100], [90, 110], WINDOW)
    assert 0 < a < 1 and 0 < b < 1 and a != pytest.approx(b)


def test_summarise_pools_live_runs_and_counts_null_alarms():
    detected = [[100], [100, 3000], [], [50, 500]]
    true = [[110], [1000], [10], []]
    counts = scoring.run_counts(detected, true, WINDOW, tolerance=0.2)
    np.testing.assert_array_equal(counts.matched, [1, 0, 0, 0])
    metrics = scoring.summarise(counts, is_null=[False, False, False, True])
    # live: 1 matched of 3 detections and 3 true transitions
    assert metrics["precision"] == pytest.approx(1 / 3) and metrics["recall"] == pytest.approx(
        1 / 3
    )
    assert metrics["f1"] == pytest.approx(1 / 3)
    assert metrics["false_alarms_per_null_run"] == 2.0
    assert metrics["covering"] == pytest.approx(np.mean(counts.covering[:3]))
    cheap = scoring.run_counts(detected, true, WINDOW, tolerance=0.2, with_covering=False)
    np.testing.assert_array_equal(cheap.matched, counts.matched)
    assert np.all(np.isnan(cheap.covering))


def test_bootstrap_interval_of_a_proportion():
    # Each live run: one true transition, one detection, matched with probability 1/2, so F1 is the
    # matched fraction p̂; its 95% interval is ≈ p̂ ± 1.96 √(p̂(1-p̂)/n). The percentile bootstrap's
    # own Monte Carlo error at 2000 resamples is a few percent of the width.
    n = 400
    matched = np.tile([1.0, 0.0], n // 2)
    ones = np.ones(n)
    counts = scoring.RunCounts(matched, ones, ones, ones)
    result = scoring.bootstrap(counts, np.zeros(n, bool), seed=1)
    half_width = 1.96 * np.sqrt(0.25 / n)
    assert result["f1"]["value"] == pytest.approx(0.5)
    assert result["f1"]["low"] == pytest.approx(0.5 - half_width, abs=0.15 * half_width)
    assert result["f1"]["high"] == pytest.approx(0.5 + half_width, abs=0.15 * half_width)
    assert np.isnan(result["false_alarms_per_null_run"]["value"])  # no null runs


def test_bootstrap_of_identical_runs_has_no_width():
    counts = scoring.run_counts([[100]] * 5 + [[30]] * 3, [[100]] * 5 + [[]] * 3, WINDOW, 0.1)
    result = scoring.bootstrap(counts, [False] * 5 + [True] * 3)
    for name in scoring.METRICS:
        assert result[name]["low"] == pytest.approx(result[name]["value"])
        assert result[name]["high"] == pytest.approx(result[name]["value"])
    assert result["false_alarms_per_null_run"]["value"] == 1.0


def test_split_runs_halves_live_and_null_runs():
    is_null = np.array([False] * 10 + [True] * 5)
    train = scoring.split_runs(is_null, seed=3)
    assert train[:10].sum() == 5 and train[10:].sum() == 2
    np.testing.assert_array_equal(train, scoring.split_runs(is_null, seed=3))


def test_selection_score_charges_false_alarms_beyond_the_budget():
    quiet = {"f1": 0.7, "false_alarms_per_null_run": 0.1}
    noisy = {"f1": 0.9, "false_alarms_per_null_run": 1.2}
    assert scoring.selection_score(quiet) == pytest.approx(0.7)
    assert scoring.selection_score(noisy) == pytest.approx(0.9 - 1.0)
    assert scoring.selection_score({"f1": 0.5, "false_alarms_per_null_run": float("nan")}) == 0.5


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: scoring.covering([1], [1], (10, 1)), "window"),
        (lambda: scoring.run_counts([[1]], [], WINDOW, 0.1), "one entry per run"),
        (lambda: scoring.run_counts([[1]], [[1]], WINDOW, -1.0), "tolerance"),
        (lambda: scoring.split_runs([False, True], fraction=1.0), "fraction"),
        (
            lambda: scoring.bootstrap(scoring.run_counts([[1]], [[1]], WINDOW, 0.1), [0], level=2),
            "level",
        ),
        (
            lambda: scoring.bootstrap(
                scoring.run_counts([[1]], [[1]], WINDOW, 0.1), [0], num_resamples=2000.5
            ),
            "num_resamples",
        ),
    ],
)
def test_bad_inputs_raise_value_error(call, name):
    with pytest.raises(ValueError, match=name):
        call()
