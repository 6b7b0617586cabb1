r"""Graduated digits: an MLP (equinox) on scikit-learn's bundled 8×8 digits, a few classes from the
start and one new class arriving at each of a few random log-uniform steps.

Truth: the steps each new class is learned (train accuracy on it ≥ 0.9), with the arrival steps as a
second kind of event. Null runs see all classes from the start.

References:
  Hoogland et al., "Detecting phase transitions" (2023, hackathon report; graduated training).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tmsjax.checks import check_positive_int
from tmsjax.transitions.probes import PartitionedLoss
from tmsjax.transitions.tasks.base import (
    RunState,
    TaskRuns,
    check_num_null,
    check_window,
    first_crossing,
    in_window,
    log_schedule,
    optimizer_step,
    softmax_cross_entropy,
    stack_modules,
    train_runs,
)
from tmsjax.types import PRNGKey


def load_digits_split(test_fraction: float = 0.3):
    """scikit-learn's bundled 8×8 digits (1797 images, no download), scaled to [0, 1], split by a fixed
    permutation into train and test."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(y))  # a fixed split, independent of run keys
    num_test = int(round(test_fraction * len(y)))
    test, train = order[:num_test], order[num_test:]
    return (x[train], y[train]), (x[test], y[test])


def _arrival_steps(key, num_runs, num_arrivals, window, min_separation):
    r"""Arrival steps per run: `num_arrivals` sorted log-uniform steps in the window, conditioned only
    on consecutive ones being at least `min_separation` decades apart.

    Drawn exactly from that conditional law without rejection: sorted uniforms :math:`v_j` on
    :math:`[0, W - (k-1)s]` (W the window's width in decades, s the separation), then
    :math:`u_j = v_j + j s`. Nothing ties the arrivals to a fixed grid, so an evenly spaced guess
    gets no help (equal log-bins per arrival would hand it the answer).
    """
    low, high = np.log10(window[0]), np.log10(window[1])
    free = (high - low) - (num_arrivals - 1) * min_separation
    v = np.sort(np.asarray(jax.random.uniform(key, (num_runs, num_arrivals), maxval=free), dtype=float), axis=1)
    return np.round(10.0 ** (low + v + min_separation * np.arange(num_arrivals))).astype(np.int64)


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
    ``num_initial + j`` classes of its order; classes beyond the last arrival are never used. Null runs
    see all ``num_initial + num_arrivals`` classes from step 0.

    λ̂ data (``TaskRuns.data``, one set per run): the same number of training examples from each of the
    ``num_initial + num_arrivals`` classes the run has seen by the end of training, sorted by class.
    The network is never trained on the other classes, so a loss that includes them is far from any
    minimum (their cross-entropy grows with training) and every λ̂ chain escapes. Checkpoints before
    the last arrival are still measured on classes not yet seen (an honest compromise: the engine takes
    one dataset per run, not per checkpoint); their λ̂ is read with that in mind.

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
        raise ValueError("need num_initial >= 2, num_arrivals >= 1 and num_initial + num_arrivals <= 10")
    window = check_window(window, num_steps)
    if not (min_separation >= 0) or (num_arrivals - 1) * min_separation >= np.log10(window[1] / window[0]):
        raise ValueError(
            f"min_separation must be non-negative and leave room for {num_arrivals} arrivals in the window, got {min_separation!r}"
        )
    if not (0 < learned_accuracy <= 1):
        raise ValueError(f"learned_accuracy must lie in (0, 1], got {learned_accuracy!r}")
    total = num_runs + num_null
    (x_train, y_train), (x_test, y_test) = load_digits_split()
    key_model, key_order, key_arrival, key_train = jax.random.split(key, 4)
    arrivals = np.concatenate([
        _arrival_steps(key_arrival, num_runs, num_arrivals, window, min_separation),
        np.zeros((num_null, num_arrivals), np.int64),  # null: everything present at step 0
    ])
    # rank[c] = position of class c in the run's order; classes at rank >= num_initial + num_arrivals never appear.
    orders = np.stack([np.asarray(jax.random.permutation(k, 10)) for k in jax.random.split(key_order, total)])
    ranks = np.argsort(orders, axis=1).astype(np.int32)
    arrays, static = stack_modules(
        lambda k: eqx.nn.MLP(64, 10, hidden, 2, activation=jax.nn.relu, key=k), jax.random.split(key_model, total)
    )
    optimizer = optax.adam(learning_rate)
    x_train_j, y_train_j = jnp.asarray(x_train), jnp.asarray(y_train)
    x_test_j, y_test_j = jnp.asarray(x_test), jnp.asarray(y_test)
    num_used = num_initial + num_arrivals
    counts = np.bincount(y_train, minlength=10)
    table = np.zeros((10, counts.max()), np.int32)
    for c in range(10):
        table[c, : counts[c]] = np.flatnonzero(y_train == c)
    class_table, class_counts = jnp.asarray(table), jnp.asarray(counts)

    def available(config, step):
        arrival, rank = config
        present = num_initial + jnp.sum(arrival <= step)
        return rank < present  # (10,) bool per class

    def step_fn(state: RunState) -> RunState:
        arrival, rank = state.config
        present = num_initial + jnp.sum(arrival <= state.step)
        key_class, key_example = jax.random.split(jax.random.fold_in(state.key, state.step))
        # A class uniform among the present ones, then an example of it: O(batch) per step, where a
        # categorical over the whole training set would cost O(batch × n).
        classes = jnp.argsort(rank)[jax.random.randint(key_class, (batch_size,), 0, present)]
        within = jnp.floor(jax.random.uniform(key_example, (batch_size,)) * class_counts[classes]).astype(jnp.int32)
        index = class_table[classes, within]
        batch = (x_train_j[index], y_train_j[index])
        return optimizer_step(optimizer, state, lambda p: softmax_cross_entropy(eqx.combine(p, static), batch))

    def eval_fn(state: RunState):
        model = eqx.combine(state.params, static)
        present = available(state.config, state.step - 1)
        logits_train = jax.vmap(model)(x_train_j)
        weight = present[y_train_j].astype(logits_train.dtype)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits_train, y_train_j)
        correct = (jnp.argmax(logits_train, -1) == y_train_j).astype(logits_train.dtype)
        per_class = jax.ops.segment_sum(correct, y_train_j, 10) / jax.ops.segment_sum(jnp.ones_like(correct), y_train_j, 10)
        used_test = (state.config[1] < num_used)[y_test_j]
        test_correct = jnp.argmax(jax.vmap(model)(x_test_j), -1) == y_test_j
        test_accuracy = jnp.sum(test_correct & used_test) / jnp.sum(used_test)
        return state.params, jnp.sum(losses * weight) / jnp.sum(weight), test_accuracy, per_class

    config = (jnp.asarray(arrivals, jnp.int32), jnp.asarray(ranks))
    states = RunState(
        arrays,
        jax.vmap(optimizer.init)(arrays),
        jnp.zeros(total, jnp.int32),
        jax.random.split(key_train, total),
        config,
    )
    schedule = log_schedule(num_steps, num_checkpoints)
    params, train_loss, test_accuracy, per_class = train_runs(step_fn, eval_fn, states, schedule)

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
            learned.append(first_crossing(schedule, per_class[run, :, new_class], learned_accuracy, after=arrivals[run, j]))
        learned = in_window(learned, window)
        arrival_events.append(arrived)
        learned_events.append(learned)
        transitions.append(learned)
    is_null = np.arange(total) >= num_runs
    loss_fn = PartitionedLoss(softmax_cross_entropy, static)
    # λ̂ data per run: the first `per_class` training examples of each class the run has used, by class.
    per_class = int(counts.min())
    seen = np.sort(orders[:, :num_used], axis=1)  # (total, num_used) class ids
    rows = table[seen, :per_class].reshape(total, -1)  # (total, num_used * per_class) indices
    llc_data = (jnp.asarray(x_train[rows]), jnp.asarray(y_train[rows]))
    return TaskRuns(
        "digits", schedule, params, np.asarray(train_loss), np.asarray(test_accuracy), tuple(transitions),
        {"arrival": tuple(arrival_events), "learned": tuple(learned_events)}, is_null, window, loss_fn,
        llc_data, int(rows.shape[1]), True,
    )


__all__ = [
    "load_digits_split",
    "graduated_digits_runs",
]
