"""Task families produce ground truth reproducibly from their key (tiny settings)."""

import jax
import numpy as np
import pytest

from tmsjax import tasks

TINY = {
    "digits": dict(num_runs=2, num_null=1, num_steps=200, num_checkpoints=30, window=(10, 200), hidden=16),
    "grokking": dict(num_runs=1, num_null=1, num_steps=100, num_checkpoints=20, window=(5, 100), modulus=7, hidden=16),
    "legendre": dict(num_runs=1, num_null=1, num_steps=100, num_checkpoints=20, window=(5, 100), max_degree=3, hidden=16),
    "tms": dict(num_runs=2, num_null=1, num_steps=500, num_checkpoints=20, window=(10, 500)),
}


# Compile-dominated (two builds of each family's program): digits stays in the fast suite, the rest
# (~30-60 s each on 2 loaded cores) are marked slow.
@pytest.mark.parametrize(
    "family", ["digits", *(pytest.param(f, marks=pytest.mark.slow) for f in ("grokking", "legendre", "tms"))]
)
def test_ground_truth_is_reproducible(family):
    first = tasks.make_task(family, jax.random.key(3), **TINY[family])
    second = tasks.make_task(family, jax.random.key(3), **TINY[family])
    assert first.num_runs == TINY[family]["num_runs"] + TINY[family]["num_null"]
    for a, b in zip(first.transitions, second.transitions):
        np.testing.assert_array_equal(a, b)
    for name in first.events:
        for a, b in zip(first.events[name], second.events[name]):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(first.train_loss, second.train_loss, rtol=1e-5)
    leaf = jax.tree.leaves(first.params)[0]
    assert leaf.shape[:2] == (first.num_runs, first.steps.size)
    for run in np.flatnonzero(first.is_null):
        if family != "tms":
            assert first.transitions[run].size == 0
    for t in first.transitions:
        assert np.all((t >= first.window[0]) & (t <= first.window[1]))
    if family == "digits":  # three arrivals per live run, increasing; each class learned after its arrival
        for run in np.flatnonzero(~first.is_null):
            arrivals = first.events["arrival"][run]
            assert arrivals.size == 3 and np.all(np.diff(arrivals) > 0)
            assert np.all(first.events["learned"][run] >= arrivals.min())
    if first.data_per_run:  # grokking: each run its own split (and random labels for null runs)
        for leaf in jax.tree.leaves(first.data):
            assert leaf.shape[:2] == (first.num_runs, first.num_data)


def test_phase_change_steps_reads_through_unknown():
    steps = np.array([1, 10, 100, 1000, 10000])
    labels = ["unknown", "4++", "unknown", "5+", "5+"]
    np.testing.assert_array_equal(tasks.phase_change_steps(steps, labels, (1, 1e4)), [1000.0])


def test_legendre_table_matches_numpy():
    x = np.linspace(-1, 1, 7)
    table = np.asarray(tasks.legendre_table(4, x))
    for degree in range(5):
        expected = np.polynomial.legendre.legval(x, np.eye(5)[degree])
        np.testing.assert_allclose(table[degree], expected, atol=1e-6)


def test_bad_family_raises():
    with pytest.raises(ValueError, match="family"):
        tasks.make_task("mnist", jax.random.key(0))
