r"""Graduated digits: an MLP (equinox) on scikit-learn's bundled 8×8 digits, a few classes from the
start and one new class arriving at each of a few random log-uniform steps.

Truth: the steps each new class is learned (train accuracy on it ≥ 0.9), with the arrival steps as a
second kind of event. Null runs see all classes from the start.

References:
  Hoogland et al., "Detecting phase transitions" (2023, hackathon report; graduated training).
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tmsjax.checks import check_positive_int
from tmsjax.llc import PartitionedLoss
from tmsjax.training.engine import TrainState, optimizer_step, run_ensemble
from tmsjax.training.schedule import checkpoint_schedule
from tmsjax.transitions.tasks.base import (
    TaskRuns,
    check_num_null,
    check_window,
    first_crossing,
    in_window,
    softmax_cross_entropy,
    stack_modules,
)
from tmsjax.types import Array, PRNGKey

# One optimiser object per learning rate: equal step functions across calls, so one compile.
_adam = functools.cache(optax.adam)


def load_digits_split(test_fraction: float = 0.3):
    """scikit-learn's bundled 8×8 digits (1797 images, no download), scaled to [0, 1], split by a
    fixed permutation into train and test."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(y))  # a fixed split, independent of run keys
    num_test = int(round(test_fraction * len(y)))
    test, train = order[:num_test], order[num_test:]
    return (x[train], y[train]), (x[test], y[test])


def _arrival_steps(key, num_runs, num_arrivals, window, min_separation):
    r"""Arrival steps per run: `num_arrivals` sorted log-uniform steps in the window, conditioned
    only on consecutive ones being at least `min_separation` decades apart.

    Drawn exactly from that conditional law without rejection: sorted uniforms :math:`v_j` on
    :math:`[0, W - (k-1)s]` (W the window's width in decades, s the separation), then
    :math:`u_j = v_j + j s`. Nothing ties the arrivals to a fixed grid, so an evenly spaced guess
    gets no help (equal log-bins per arrival would hand it the answer).
    """
    low, high = np.log10(window[0]), np.log10(window[1])
    free = (high - low) - (num_arrivals - 1) * min_separation
    u = jax.random.uniform(key, (num_runs, num_arrivals), maxval=free)
    v = np.sort(np.asarray(u, dtype=float), axis=1)
    return np.round(10.0 ** (low + v + min_separation * np.arange(num_arrivals))).astype(np.int64)


class _DigitsRun(NamedTuple):
    """What one run reads (leading run axis): its minibatch key, arrival steps and class ranks."""

    key: PRNGKey
    arrival: Array  # (num_arrivals,) steps at which the next class of the run's order arrives
    rank: Array  # (10,) position of each class in the run's order


class _DigitsData(NamedTuple):
    """What all runs share: the digits split and, per class, its training rows."""

    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array
    class_table: Array  # (10, max count) training rows of each class, zero-padded
    class_counts: Array  # (10,) training examples per class


def _present(run: _DigitsRun, step, num_initial: int):
    """Which classes (10,) a run has seen by `step`: the first ``num_initial + arrived`` of its
    order."""
    return run.rank < num_initial + jnp.sum(run.arrival <= step)


@dataclasses.dataclass(frozen=True)
class _DigitsStep:
    """One Adam step on a minibatch of the present classes (hashable: one program per setting)."""

    static: Any
    optimizer: optax.GradientTransformation
    batch_size: int
    num_initial: int

    def __call__(self, state: TrainState, run: _DigitsRun, data: _DigitsData) -> TrainState:
        present = self.num_initial + jnp.sum(run.arrival <= state.step)
        key_class, key_example = jax.random.split(jax.random.fold_in(run.key, state.step))
        # A class uniform among the present ones, then an example of it: O(batch) per step, where a
        # categorical over the whole training set would cost O(batch × n).
        order = jnp.argsort(run.rank)
        classes = order[jax.random.randint(key_class, (self.batch_size,), 0, present)]
        uniform = jax.random.uniform(key_example, (self.batch_size,))
        within = jnp.floor(uniform * data.class_counts[classes]).astype(jnp.int32)
        index = data.class_table[classes, within]
        batch = (data.x_train[index], data.y_train[index])

        def loss(params):
            return softmax_cross_entropy(eqx.combine(params, self.static), batch)

        return optimizer_step(self.optimizer, state, loss)


@dataclasses.dataclass(frozen=True)
class _DigitsRecord:
    """Checkpoint: parameters, loss on the present classes, test accuracy on the used classes, and
    train accuracy per class."""

    static: Any
    num_initial: int
    num_used: int

    def __call__(self, state: TrainState, run: _DigitsRun, data: _DigitsData):
        model = eqx.combine(state.params, self.static)
        present = _present(run, state.step - 1, self.num_initial)
        logits_train = jax.vmap(model)(data.x_train)
        weight = present[data.y_train].astype(logits_train.dtype)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits_train, data.y_train)
        correct = (jnp.argmax(logits_train, -1) == data.y_train).astype(logits_train.dtype)
        ones = jnp.ones_like(correct)
        per_class = jax.ops.segment_sum(correct, data.y_train, 10) / jax.ops.segment_sum(
            ones, data.y_train, 10
        )
        used_test = (run.rank < self.num_used)[data.y_test]
        test_correct = jnp.argmax(jax.vmap(model)(data.x_test), -1) == data.y_test
        test_accuracy = jnp.sum(test_correct & used_test) / jnp.sum(used_test)
        return state.params, jnp.sum(losses * weight) / jnp.sum(weight), test_accuracy, per_class


def graduated_digits_runs(
    key: PRNGKey,
    num_runs: int = 4,
    num_null: int = 2,
    *,
    num_initial: int = 3,
    num_arrivals: int = 3,
    num_steps: int = 3000,
    num_checkpoints: int = 100,
    hidden: int = 32,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    window: tuple = (100, 3000),
    learned_accuracy: float = 0.9,
    min_separation: float = 0.2,
) -> TaskRuns:
    r"""Graduated training of an MLP on the bundled digits: a class arrives at each of a few steps.

    Each run draws its own class order and arrival steps (sorted log-uniform in the window, at least
    `min_separation` decades apart). Until the j-th arrival, minibatches come from the first
    ``num_initial + j`` classes of its order; classes beyond the last arrival are never used. Null
    runs see all ``num_initial + num_arrivals`` classes from step 0.

    λ̂ data (``TaskRuns.data``, one set per run): the same number of training examples from each of
    the ``num_initial + num_arrivals`` classes the run has seen by the end of training, sorted by
    class. The network is never trained on the other classes, so a loss that includes them is far
    from any minimum (their cross-entropy grows with training) and every λ̂ chain escapes.
    Checkpoints before the last arrival are still measured on classes not yet seen (an honest
    compromise: the engine takes one dataset per run, not per checkpoint); their λ̂ is read with
    that in mind.

    Args:
      key: PRNG key (everything, truth included, is a function of it).
      num_runs: graduated runs; num_null: null runs (appended after them).
      num_initial: classes present from the start; num_arrivals: classes added later.
      num_steps, num_checkpoints: training length and log-spaced checkpoints.
      hidden: width of the two hidden layers; batch_size, learning_rate: Adam settings.
      window: the scoring window; arrivals are drawn inside it.
      learned_accuracy: a class counts as learned at the first checkpoint where its train
        accuracy reaches this.
      min_separation: smallest gap between consecutive arrivals, in decades of steps.

    Returns:
      :class:`TaskRuns` with events "arrival" and "learned"; the primary truth is "learned" (the two
      are often closer than the scoring tolerance, so one detection cannot be credited with both).
    """
    num_runs = check_positive_int("num_runs", num_runs)
    num_null = check_num_null(num_null)
    num_steps = check_positive_int("num_steps", num_steps)
    batch_size = check_positive_int("batch_size", batch_size)
    if num_initial + num_arrivals > 10 or num_initial < 2 or num_arrivals < 1:
        raise ValueError(
            "need num_initial >= 2, num_arrivals >= 1 and num_initial + num_arrivals <= 10"
        )
    window = check_window(window, num_steps)
    decades = np.log10(window[1] / window[0])
    if not (min_separation >= 0) or (num_arrivals - 1) * min_separation >= decades:
        raise ValueError(
            f"min_separation must be non-negative and leave room for {num_arrivals} arrivals in "
            f"the window, got {min_separation!r}"
        )
    if not (0 < learned_accuracy <= 1):
        raise ValueError(f"learned_accuracy must lie in (0, 1], got {learned_accuracy!r}")
    total = num_runs + num_null
    (x_train, y_train), (x_test, y_test) = load_digits_split()
    key_model, key_order, key_arrival, key_train = jax.random.split(key, 4)
    arrivals = np.concatenate(
        [
            _arrival_steps(key_arrival, num_runs, num_arrivals, window, min_separation),
            np.zeros((num_null, num_arrivals), np.int64),  # null: everything present at step 0
        ]
    )
    # rank[c] = position of class c in the run's order; classes at rank >= num_initial +
    # num_arrivals never appear.
    orders = np.stack(
        [np.asarray(jax.random.permutation(k, 10)) for k in jax.random.split(key_order, total)]
    )
    ranks = np.argsort(orders, axis=1).astype(np.int32)
    arrays, static = stack_modules(
        lambda k: eqx.nn.MLP(64, 10, hidden, 2, activation=jax.nn.relu, key=k),
        jax.random.split(key_model, total),
    )
    optimizer = _adam(learning_rate)
    num_used = num_initial + num_arrivals
    counts = np.bincount(y_train, minlength=10)
    table = np.zeros((10, counts.max()), np.int32)
    for c in range(10):
        table[c, : counts[c]] = np.flatnonzero(y_train == c)
    data = _DigitsData(
        jnp.asarray(x_train),
        jnp.asarray(y_train),
        jnp.asarray(x_test),
        jnp.asarray(y_test),
        jnp.asarray(table),
        jnp.asarray(counts),
    )
    runs = _DigitsRun(
        jax.random.split(key_train, total), jnp.asarray(arrivals, jnp.int32), jnp.asarray(ranks)
    )
    states = TrainState(arrays, jax.vmap(optimizer.init)(arrays), jnp.zeros(total, jnp.int32))
    schedule = checkpoint_schedule(num_steps, num_checkpoints, include_start=False)
    result = run_ensemble(
        _DigitsStep(static, optimizer, batch_size, num_initial),
        _DigitsRecord(static, num_initial, num_used),
        states,
        schedule,
        run_inputs=runs,
        shared=data,
        name="digits",
        progress=False,
    )
    params, train_loss, test_accuracy, per_class = result.records

    arrival_events, learned_events, transitions = [], [], []
    for run in range(total):
        if run >= num_runs:
            arrival_events.append(np.zeros(0))
            learned_events.append(np.zeros(0))
            transitions.append(np.zeros(0))
            continue
        arrived = in_window(arrivals[run], window)
        learned = []
        for j in range(num_arrivals):
            new_class = orders[run, num_initial + j]
            accuracy = per_class[run, :, new_class]
            after = arrivals[run, j]
            learned.append(first_crossing(schedule, accuracy, learned_accuracy, after=after))
        learned = in_window(learned, window)
        arrival_events.append(arrived)
        learned_events.append(learned)
        transitions.append(learned)
    is_null = np.arange(total) >= num_runs
    loss_fn = PartitionedLoss(softmax_cross_entropy, static)
    # λ̂ data per run: the first `per_class` training examples of each class the run has used, by
    # class.
    per_class = int(counts.min())
    seen = np.sort(orders[:, :num_used], axis=1)  # (total, num_used) class ids
    rows = table[seen, :per_class].reshape(total, -1)  # (total, num_used * per_class) indices
    llc_data = (jnp.asarray(x_train[rows]), jnp.asarray(y_train[rows]))
    return TaskRuns(
        "digits",
        schedule,
        params,
        np.asarray(train_loss),
        np.asarray(test_accuracy),
        tuple(transitions),
        {"arrival": tuple(arrival_events), "learned": tuple(learned_events)},
        is_null,
        window,
        loss_fn,
        llc_data,
        int(rows.shape[1]),
        True,
    )


__all__ = [
    "load_digits_split",
    "graduated_digits_runs",
]
