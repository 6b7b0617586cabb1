"""Task families produce ground truth reproducibly from their key (tiny settings)."""

import logging

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmsjax.tms.task import phase_change_steps, tms_runs
from tmsjax.transitions import tasks
from tmsjax.transitions.tasks.digits import _arrival_steps

FAMILIES = {"tms": tms_runs, **tasks.FAMILIES}


def make_task(family, key, **kwargs):
    return FAMILIES[family](key, **kwargs)


TINY = {
    "digits": dict(
        num_runs=2, num_null=1, num_steps=200, num_checkpoints=30, window=(10, 200), hidden=16
    ),
    # The slow families run at their default lengths: shorter runs have no transition to check (a
    # network groks, or learns a degree, only after ~10³ steps). TMS runs change phase at random, so
    # six live runs make "none of them moves" a ~1e-3 event rather than a coin flip.
    "grokking": dict(num_runs=2, num_null=1, num_checkpoints=40),
    "legendre": dict(num_runs=2, num_null=1, num_checkpoints=40),
    "tms": dict(num_runs=6, num_null=1, num_checkpoints=40),
}


# Compile-dominated (one build of each family's program, reused by the second run): digits stays in
# the fast suite, the rest (~30-60 s each on 2 loaded cores) are marked slow.
@pytest.mark.parametrize(
    "family",
    ["digits", *(pytest.param(f, marks=pytest.mark.slow) for f in ("grokking", "legendre", "tms"))],
)
def test_ground_truth_is_reproducible(family, caplog):
    first = make_task(family, jax.random.key(3), **TINY[family])
    # The second build reuses the first one's compiled training chunk: the step and record functions
    # are equal across builds and the data are arguments, not constants.
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        second = make_task(family, jax.random.key(3), **TINY[family])
    messages = [r.getMessage() for r in caplog.records]
    compiles = [m[:80] for m in messages if "Compiling" in m and "run_chunk" in m]
    assert not compiles, compiles
    assert first.num_runs == TINY[family]["num_runs"] + TINY[family]["num_null"]
    for a, b in zip(first.transitions, second.transitions):
        np.testing.assert_array_equal(a, b)
    for name in first.events:
        for a, b in zip(first.events[name], second.events[name]):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(first.train_loss, second.train_loss)
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(second.params)):
        np.testing.assert_array_equal(a, b)
    leaf = jax.tree.leaves(first.params)[0]
    assert leaf.shape[:2] == (first.num_runs, first.steps.size)
    assert first.steps[0] >= 1 and np.all(np.diff(first.steps) > 0)  # no step-0 checkpoint
    # Live runs have ground truth to find and null runs none (TMS: at least one live run moves,
    # since whether a given run changes phase inside the window is random).
    live = [first.transitions[run].size for run in np.flatnonzero(~first.is_null)]
    assert (max(live) if family == "tms" else min(live)) >= 1
    assert all(first.transitions[run].size == 0 for run in np.flatnonzero(first.is_null))
    # The λ̂ loss is the same object across builds: one compiled λ̂ program, not one per build.
    assert first.loss_fn == second.loss_fn and hash(first.loss_fn) == hash(second.loss_fn)
    _check_truth_against_metric(first)
    if first.data_per_run:  # each run its own λ̂ data (its split, classes or degrees)
        for leaf in jax.tree.leaves(first.data):
            assert leaf.shape[:2] == (first.num_runs, first.num_data)


def _per_class_accuracy(task, run, index, x, y):
    params = jax.tree.map(lambda leaf: leaf[run, index], task.params)
    model = eqx.combine(params, task.loss_fn.static)
    correct = np.asarray(jnp.argmax(jax.vmap(model)(jnp.asarray(x)), -1)) == y
    return np.array([correct[y == c].mean() for c in range(10)])


def _check_truth_against_metric(task):
    """Every reported transition is where its metric crosses its threshold (not just inside the
    window)."""
    steps = task.steps
    if task.family == "digits":
        # "learned": the first checkpoint after a class's arrival where its train accuracy reaches
        # 0.9, recomputed here from the stored checkpoints.
        (x_train, y_train), _ = tasks.load_digits_split()
        for run in np.flatnonzero(~task.is_null):
            arrivals = task.events["arrival"][run]
            # Three arrivals, at least the minimum separation apart.
            assert arrivals.size == 3 and np.all(np.diff(np.log10(arrivals)) >= 0.2 - 0.01)
            for step in task.transitions[run]:
                index = int(np.flatnonzero(steps == step)[0])
                now = _per_class_accuracy(task, run, index, x_train, y_train)
                before = _per_class_accuracy(task, run, index - 1, x_train, y_train)
                # a class crosses 0.9 here, or reached it between an arrival and this first
                # checkpoint after it
                just_arrived = np.any((steps[index - 1] < arrivals) & (arrivals <= step))
                arrived = [
                    c for c in range(10) if now[c] >= 0.9 and (before[c] < 0.9 or just_arrived)
                ]
                assert arrived, f"run {run}: no class reaches 0.9 train accuracy at step {step}"
    elif task.family == "grokking":
        for run in np.flatnonzero(~task.is_null):
            for step in task.transitions[run]:
                index = int(np.flatnonzero(steps == step)[0])
                assert task.metric[run, index] >= 0.5  # test accuracy passed 0.5 here
                assert np.all(step >= task.events["memorised"][run])  # ... after memorising
    elif task.family == "legendre":
        for run in np.flatnonzero(~task.is_null):
            learned = np.asarray(task.events["learned_by_degree"][run], dtype=float)[2:]
            inside = learned[(learned >= task.window[0]) & (learned <= task.window[1])]
            np.testing.assert_array_equal(task.transitions[run], np.sort(inside))
    elif task.family == "tms":
        for run in range(task.num_runs):
            labels = task.events["labels"][run]
            for step in task.transitions[run]:
                index = int(np.flatnonzero(steps == step)[0])
                known_before = [label for label in labels[:index] if label != "unknown"]
                assert labels[index] != "unknown" and known_before
                assert known_before[-1] != labels[index]


def test_phase_change_steps_reads_through_unknown():
    steps = np.array([1, 10, 100, 1000, 10000])
    labels = ["unknown", "4++", "unknown", "5+", "5+"]
    np.testing.assert_array_equal(phase_change_steps(steps, labels, (1, 1e4)), [1000.0])


def test_legendre_table_matches_numpy():
    x = np.linspace(-1, 1, 7)
    table = np.asarray(tasks.legendre_table(4, x))
    for degree in range(5):
        expected = np.polynomial.legendre.legval(x, np.eye(5)[degree])
        np.testing.assert_allclose(table[degree], expected, atol=1e-6)


def test_arrivals_are_log_uniform_with_only_a_minimum_separation():
    window = (100, 3000)
    arrivals = _arrival_steps(jax.random.key(0), 2000, 3, window, 0.2)
    gaps = np.diff(np.log10(arrivals), axis=1)
    assert np.all(gaps >= 0.2 - 0.01) and np.all((arrivals >= window[0]) & (arrivals <= window[1]))
    # Not one per equal log-bin: the first arrival often lies past the first third of the window
    # (bins would forbid it), and the spacing varies widely from run to run.
    thirds = np.log10(window[0]) + np.log10(window[1] / window[0]) * np.array([1, 2]) / 3
    assert np.mean(np.log10(arrivals[:, 0]) > thirds[0]) > 0.1
    assert np.std(gaps) > 0.1


ALL_FAMILIES = ("digits", "grokking", "legendre", "tms")


@pytest.mark.parametrize(
    "family, kwargs, name",
    [(family, dict(num_null=-1), "num_null") for family in ALL_FAMILIES]
    + [(family, dict(window=(0, 50), num_steps=100), "window") for family in ALL_FAMILIES]
    + [(family, dict(window=(10, 200), num_steps=100), "window") for family in ALL_FAMILIES]
    + [(family, dict(batch_size=0), "batch_size") for family in ("digits", "legendre", "tms")]
    + [
        ("legendre", dict(learned_fraction=0.0), "learned_fraction"),
        ("legendre", dict(learned_fraction=1.5), "learned_fraction"),
        ("digits", dict(min_separation=5.0), "min_separation"),
    ],
)
def test_bad_task_arguments_raise_before_training(family, kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_task(family, jax.random.key(0), **kwargs)


def test_first_crossing_checks_lengths():
    assert tasks.first_crossing([1, 10, 100], [0.1, 0.95, 0.99], 0.9) == 10.0
    with pytest.raises(ValueError, match="series"):
        tasks.first_crossing([1, 10, 100], [0.1, 0.95], 0.9)
