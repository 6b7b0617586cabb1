r"""Task families with known transitions (and null runs without), to score weight-only detectors.

Every family trains many seeds at once (one jitted, vmapped program; checkpoints at log-spaced steps)
and returns a :class:`TaskRuns`: stacked checkpoints, losses, a task metric, the ground-truth
transition steps of each run inside a scoring window, and which runs are null (no transition in the
window by construction). All data are offline.

- **tms** (:func:`tms_runs`): SGD on the TMS (c = 6, r = 2) from small random weights, as Chen et al. (2023),
  through :func:`tmsjax.sgd.train`; truth: the checkpoints where the k-gon classifier's phase
  (:mod:`tmsjax.phases`) changes. Null runs start near the 6-gon, the global minimum, and stay there.
- **digits** (:func:`graduated_digits_runs`): graduated training of an MLP (equinox) on scikit-learn's
  bundled 8×8 digits: a few classes from the start, one new class arriving at each of a few random
  log-uniform steps; truth: the arrival steps and the steps each new class is learned (train accuracy
  on it ≥ 0.9). Null runs see all classes from the start.
- **grokking** (:func:`grokking_runs`): modular addition a + b mod p with an embedding + MLP, AdamW
  with weight decay and the Omnigrok initial weight scale α (all initial weights × α); truth: the first
  checkpoint where test accuracy passes 0.5 *after* the train accuracy passed 0.9 (the delayed
  jump). Null runs have random labels (nothing to generalise).
- **legendre** (:func:`legendre_runs`): the seed's bounded-polynomial task: input
  :math:`(x\,e_i,\ e_i)` (value in slot i plus a one-hot positional code for degree i), target
  :math:`P_i(x)\,e_i`; truth: the step each degree ≥ 2 is learned (its mean squared error drops below
  10 % of :math:`\mathrm{Var}\,P_i = 1/(2i+1)`). Null runs fit degrees 0 and 1 only.

References:
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301 (TMS dynamics).
  Hoogland et al., "Detecting phase transitions" (2023, hackathon report; graduated training,
  bounded Legendre polynomials). Power et al. (2022), arXiv:2201.02177 (grokking). Liu, Michaud,
  Tegmark, "Omnigrok" (2023), arXiv:2210.01117 (initial weight scale α).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tmsjax._checks import check_positive_int
from tmsjax.probes import _PartitionedLoss
from tmsjax.types import Array, Float, PRNGKey, PyTree

FAMILIES = ("tms", "digits", "grokking", "legendre")


class TaskRuns(NamedTuple):
    """Checkpointed runs of one task family with their ground truth.

    Attributes:
      family: the family name.
      steps: checkpoint steps (num_checkpoints,), all ≥ 1.
      params: checkpoints, a pytree of arrays with leading axes (num_runs, num_checkpoints) (for
        equinox models: the array part of ``eqx.partition``).
      train_loss: loss on the data seen so far at each checkpoint (num_runs, num_checkpoints).
      metric: the family's progress measure at each checkpoint (test accuracy; for TMS the exact
        potential; for Legendre the mean per-degree error), (num_runs, num_checkpoints).
      transitions: per run, the true transition steps inside `window` (the primary ground truth).
      events: named kinds of ground truth, each per run (e.g. digits' "arrival" and "learned").
      is_null: which runs are null runs (num_runs,).
      window: (low, high) steps where transitions are scored.
      loss_fn: ``loss_fn(params, data)`` of one checkpoint, for λ̂.
      data: the dataset `loss_fn` takes for λ̂: one shared set (TMS), or with `data_per_run` one set per
        run (a leading run axis on every leaf) covering only what that run trains on (digits: its
        classes; grokking: its split and labels; Legendre: its degrees).
      num_data: its size n per run (for nβ = n / log n).
      data_per_run: whether `data` has a leading run axis.
    """

    family: str
    steps: np.ndarray
    params: PyTree
    train_loss: np.ndarray
    metric: np.ndarray
    transitions: tuple
    events: dict
    is_null: np.ndarray
    window: tuple
    loss_fn: Callable
    data: Any
    num_data: int
    data_per_run: bool = False

    @property
    def num_runs(self) -> int:
        return int(self.is_null.shape[0])

    def run_params(self, run: int) -> PyTree:
        """The checkpoints of one run (leading axis: checkpoints)."""
        return jax.tree.map(lambda x: x[run], self.params)


def log_schedule(num_steps: int, num_checkpoints: int) -> np.ndarray:
    """Distinct checkpoint steps from 1 to `num_steps`, about uniform in log-step."""
    num_steps = check_positive_int("num_steps", num_steps)
    num_checkpoints = check_positive_int("num_checkpoints", num_checkpoints)
    return np.unique(np.round(np.geomspace(1, num_steps, num_checkpoints)).astype(np.int64))


def first_crossing(steps, series, threshold: float, *, after=None, above: bool = True) -> float:
    """The first checkpoint step (after `after`, if given) where `series` crosses `threshold`; NaN if never."""
    steps = np.asarray(steps)
    series = np.asarray(series)
    if steps.ndim != 1 or series.shape != steps.shape:
        raise ValueError(f"series must have one value per step, got shapes steps {steps.shape} and series {series.shape}")
    hit = series >= threshold if above else series <= threshold
    if after is not None:
        hit &= steps >= after
    index = np.flatnonzero(hit)
    return float(steps[index[0]]) if index.size else float("nan")


def _check_num_null(num_null) -> int:
    if isinstance(num_null, bool) or int(num_null) != num_null or int(num_null) < 0:
        raise ValueError(f"num_null must be a non-negative integer, got {num_null!r}")
    return int(num_null)


def _check_window(window, num_steps: int) -> tuple:
    if window is None or len(window) != 2 or not (1 <= window[0] < window[1] <= num_steps):
        raise ValueError(f"window must be a (low, high) pair with 1 <= low < high <= num_steps={num_steps}, got {window!r}")
    return tuple(window)


def _in_window(values, window) -> np.ndarray:
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    return np.sort(values[(values >= window[0]) & (values <= window[1])])


# ----------------------------------------------------------------------------------------------
# One training engine for the non-TMS families: vmapped runs, a scan over checkpoint segments.


class _RunState(NamedTuple):
    params: PyTree
    opt_state: PyTree
    step: Array
    key: Array
    config: PyTree  # per-run settings that the step reads (arrival steps, class order, ...)


def _train(step_fn, eval_fn, states: _RunState, schedule: np.ndarray):
    """Trains every run (leading axis of `states`) and evaluates at the `schedule` steps.

    A segment between checkpoints is a ``fori_loop`` whose trip count is data, so the whole run is
    one ``lax.scan`` over segments and compiles once whatever the spacing.
    """
    lengths = jnp.asarray(np.diff(np.concatenate([[0], schedule])), jnp.int32)

    @jax.jit
    def run(states, lengths):
        def one_run(state):
            def segment(state, length):
                state = jax.lax.fori_loop(0, length, lambda _, s: step_fn(s), state)
                return state, eval_fn(state)

            return jax.lax.scan(segment, state, lengths)[1]

        return jax.vmap(one_run)(states)

    return jax.device_get(run(states, lengths))


def _stack_modules(make: Callable[[PRNGKey], eqx.Module], keys) -> tuple[PyTree, PyTree]:
    """Initialises one module per key; returns the stacked array part and the shared static part.

    Jitted: run eagerly, every initialiser primitive would compile on its own (dozens of small
    compiles, seconds on a loaded CPU); one program instead."""
    stacked = eqx.filter_jit(eqx.filter_vmap(make))(keys)
    return eqx.partition(stacked, eqx.is_inexact_array)


def _scale(arrays: PyTree, alpha) -> PyTree:
    return jax.tree.map(lambda x: alpha * x, arrays)


def _optimizer_step(optimizer, state: _RunState, loss_of_params: Callable[[PyTree], Array]) -> _RunState:
    """One optimizer step on ``loss_of_params(state.params)``: the update every family's step shares."""
    grads = jax.grad(loss_of_params)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return state._replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state, step=state.step + 1)


def _softmax_cross_entropy(model, data):
    x, y = data
    logits = jax.vmap(model)(x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


# ----------------------------------------------------------------------------------------------
# Graduated digits


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
    num_null = _check_num_null(num_null)
    num_steps = check_positive_int("num_steps", num_steps)
    batch_size = check_positive_int("batch_size", batch_size)
    if num_initial + num_arrivals > 10 or num_initial < 2 or num_arrivals < 1:
        raise ValueError("need num_initial >= 2, num_arrivals >= 1 and num_initial + num_arrivals <= 10")
    window = _check_window(window, num_steps)
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
    arrays, static = _stack_modules(
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

    def step_fn(state: _RunState) -> _RunState:
        arrival, rank = state.config
        present = num_initial + jnp.sum(arrival <= state.step)
        key_class, key_example = jax.random.split(jax.random.fold_in(state.key, state.step))
        # A class uniform among the present ones, then an example of it: O(batch) per step, where a
        # categorical over the whole training set would cost O(batch × n).
        classes = jnp.argsort(rank)[jax.random.randint(key_class, (batch_size,), 0, present)]
        within = jnp.floor(jax.random.uniform(key_example, (batch_size,)) * class_counts[classes]).astype(jnp.int32)
        index = class_table[classes, within]
        batch = (x_train_j[index], y_train_j[index])
        return _optimizer_step(optimizer, state, lambda p: _softmax_cross_entropy(eqx.combine(p, static), batch))

    def eval_fn(state: _RunState):
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
    states = _RunState(
        arrays,
        jax.vmap(optimizer.init)(arrays),
        jnp.zeros(total, jnp.int32),
        jax.random.split(key_train, total),
        config,
    )
    schedule = log_schedule(num_steps, num_checkpoints)
    params, train_loss, test_accuracy, per_class = _train(step_fn, eval_fn, states, schedule)

    arrival_events, learned_events, transitions = [], [], []
    for run in range(total):
        if run >= num_runs:
            arrival_events.append(np.zeros(0))
            learned_events.append(np.zeros(0))
            transitions.append(np.zeros(0))
            continue
        arrived = _in_window(arrivals[run], window)
        learned = []
        for j in range(num_arrivals):
            new_class = orders[run, num_initial + j]
            learned.append(first_crossing(schedule, per_class[run, :, new_class], learned_accuracy, after=arrivals[run, j]))
        learned = _in_window(learned, window)
        arrival_events.append(arrived)
        learned_events.append(learned)
        transitions.append(learned)
    is_null = np.arange(total) >= num_runs
    loss_fn = _PartitionedLoss(_softmax_cross_entropy, static)
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


# ----------------------------------------------------------------------------------------------
# Modular-addition grokking


class EmbedMLP(eqx.Module):
    """a, b ↦ MLP([E_a, E_b]): a learned embedding of each residue, concatenated, then an MLP."""

    embedding: eqx.nn.Embedding
    mlp: eqx.nn.MLP

    def __init__(self, modulus: int, embed_dim: int, hidden: int, *, key: PRNGKey):
        key_embed, key_mlp = jax.random.split(key)
        self.embedding = eqx.nn.Embedding(modulus, embed_dim, key=key_embed)
        self.mlp = eqx.nn.MLP(2 * embed_dim, modulus, hidden, 1, activation=jax.nn.relu, key=key_mlp)

    def __call__(self, pair):
        return self.mlp(jnp.concatenate([self.embedding(pair[0]), self.embedding(pair[1])]))


def _mse_one_hot(model, data):
    pairs, labels = data
    outputs = jax.vmap(model)(pairs)
    return jnp.mean(jnp.sum((outputs - jax.nn.one_hot(labels, outputs.shape[-1])) ** 2, -1))


_GROKKING_LOSSES = {"cross_entropy": _softmax_cross_entropy, "mse": _mse_one_hot}


def grokking_runs(
    key: PRNGKey,
    num_runs: int = 4,
    num_null: int = 2,
    *,
    modulus: int = 23,
    train_fraction: float = 0.6,
    alpha: float = 2.0,
    embed_dim: int = 16,
    hidden: int = 64,
    learning_rate: float = 3e-3,
    weight_decay: float = 1.0,
    num_steps: int = 10_000,
    num_checkpoints: int = 100,
    window: tuple = (30, 10_000),
    loss: str = "cross_entropy",
) -> TaskRuns:
    r"""Modular addition a + b mod p with Omnigrok's initial weight scale α: delayed generalisation.

    Full-batch AdamW (cross-entropy, or Omnigrok's MSE to one-hot targets), all initial weights × α:
    a large α starts in a high-norm region full of memorising solutions, and weight decay slowly pulls
    the norm down to where generalising solutions live, so test accuracy jumps long after train
    accuracy (Liu et al. 2023). Each run draws its own train/test split.

    Truth: the first checkpoint where test accuracy reaches 0.5 after train accuracy reached 0.9
    (runs that never jump have no transition). Null runs train on random labels.

    Returns:
      :class:`TaskRuns` (metric: test accuracy; events "memorised" and "grokked").
    """
    num_runs = check_positive_int("num_runs", num_runs)
    num_null = _check_num_null(num_null)
    num_steps = check_positive_int("num_steps", num_steps)
    window = _check_window(window, num_steps)
    modulus = check_positive_int("modulus", modulus)
    if not (0 < train_fraction < 1):
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction!r}")
    if not (alpha > 0):
        raise ValueError(f"alpha must be positive, got {alpha!r}")
    if loss not in _GROKKING_LOSSES:
        raise ValueError(f"loss must be one of {tuple(_GROKKING_LOSSES)}, got {loss!r}")
    loss_of = _GROKKING_LOSSES[loss]
    total = num_runs + num_null
    pairs = np.stack(np.meshgrid(np.arange(modulus), np.arange(modulus), indexing="ij"), -1).reshape(-1, 2).astype(np.int32)
    labels = ((pairs[:, 0] + pairs[:, 1]) % modulus).astype(np.int32)
    num_train = int(round(train_fraction * len(labels)))
    key_model, key_split, key_labels = jax.random.split(key, 3)
    orders = np.stack([np.asarray(jax.random.permutation(k, len(labels))) for k in jax.random.split(key_split, total)])
    run_labels = np.tile(labels, (total, 1))
    random_labels = np.asarray(jax.random.randint(key_labels, (num_null, len(labels)), 0, modulus), np.int32)
    run_labels[num_runs:] = random_labels
    train_pairs = jnp.asarray(pairs[orders[:, :num_train]])
    train_labels = jnp.asarray(np.take_along_axis(run_labels, orders[:, :num_train], 1))
    test_pairs = jnp.asarray(pairs[orders[:, num_train:]])
    test_labels = jnp.asarray(np.take_along_axis(run_labels, orders[:, num_train:], 1))

    arrays, static = _stack_modules(lambda k: EmbedMLP(modulus, embed_dim, hidden, key=k), jax.random.split(key_model, total))
    arrays = _scale(arrays, alpha)
    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)

    def step_fn(state: _RunState) -> _RunState:
        data = state.config[:2]
        return _optimizer_step(optimizer, state, lambda p: loss_of(eqx.combine(p, static), data))

    def eval_fn(state: _RunState):
        model = eqx.combine(state.params, static)
        x_train, y_train, x_test, y_test = state.config
        train_accuracy = jnp.mean(jnp.argmax(jax.vmap(model)(x_train), -1) == y_train)
        test_accuracy = jnp.mean(jnp.argmax(jax.vmap(model)(x_test), -1) == y_test)
        return state.params, loss_of(model, (x_train, y_train)), train_accuracy, test_accuracy

    states = _RunState(
        arrays, jax.vmap(optimizer.init)(arrays), jnp.zeros(total, jnp.int32), jax.random.split(key, total),
        (train_pairs, train_labels, test_pairs, test_labels),
    )
    schedule = log_schedule(num_steps, num_checkpoints)
    params, train_loss, train_accuracy, test_accuracy = _train(step_fn, eval_fn, states, schedule)
    memorised, grokked, transitions = [], [], []
    for run in range(total):
        memorised_at = first_crossing(schedule, train_accuracy[run], 0.9)
        grokked_at = first_crossing(schedule, test_accuracy[run], 0.5, after=memorised_at) if np.isfinite(memorised_at) else float("nan")
        if run >= num_runs:
            grokked_at = float("nan")  # random labels: any "jump" is chance, never a transition
        memorised.append(_in_window([memorised_at], window))
        grokked.append(_in_window([grokked_at], window))
        transitions.append(grokked[-1])
    loss_fn = _PartitionedLoss(loss_of, static)
    return TaskRuns(
        "grokking", schedule, params, np.asarray(train_loss), np.asarray(test_accuracy), tuple(transitions),
        {"memorised": tuple(memorised), "grokked": tuple(grokked)}, np.arange(total) >= num_runs, window,
        loss_fn, (train_pairs, train_labels), num_train, True,
    )


# ----------------------------------------------------------------------------------------------
# Bounded Legendre polynomials


def legendre_table(max_degree: int, x: Float[Array, " m"]) -> Float[Array, "degree m"]:
    r"""Legendre polynomials :math:`P_0..P_D` at x by Bonnet's recursion
    :math:`(k+1)P_{k+1} = (2k+1)xP_k - kP_{k-1}`; all are bounded by 1 on [−1, 1]."""
    values = [jnp.ones_like(x), x]
    for k in range(1, max_degree):
        values.append(((2 * k + 1) * x * values[k] - k * values[k - 1]) / (k + 1))
    return jnp.stack(values[: max_degree + 1])


def _legendre_inputs(degree, x, num_slots):
    """(x e_i, e_i): the value in slot i and a one-hot positional code of the degree."""
    one_hot = jax.nn.one_hot(degree, num_slots, dtype=x.dtype)
    return jnp.concatenate([one_hot * x[:, None], one_hot], axis=-1)


def _legendre_loss(model, data):
    inputs, targets = data
    return jnp.mean(jnp.sum((jax.vmap(model)(inputs) - targets) ** 2, -1))


def legendre_runs(
    key: PRNGKey,
    num_runs: int = 4,
    num_null: int = 2,
    *,
    max_degree: int = 5,
    hidden: int = 64,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    num_steps: int = 4000,
    num_checkpoints: int = 100,
    window: tuple = (30, 4000),
    learned_fraction: float = 0.1,
) -> TaskRuns:
    r"""The seed's bounded-polynomial task: one network fits :math:`P_0, \dots, P_D` on [−1, 1].

    An input is :math:`(x\,e_i, e_i)` for a degree i uniform in {0..D} and x ~ U[−1, 1]; the target is
    :math:`P_i(x)\,e_i` (D + 1 outputs). Higher degrees are harder and should be learned later. Degree
    i is *learned* at the first checkpoint where its mean squared error (on 64 fixed points) drops below
    `learned_fraction` × Var P_i = `learned_fraction`/(2i + 1); the truth is those steps for i ≥ 2.
    Null runs fit degrees 0 and 1 only (max_degree 1 on the same network shape).

    λ̂ data (one set per run): (D + 1) × 64 points on a grid of x, split equally among the degrees the
    run fits (0..D for live runs, 0..1 for null runs), sorted by degree: a null run is never asked
    about degrees it does not train on.

    Returns:
      :class:`TaskRuns` (metric: mean over degrees of error / Var P_i).
    """
    num_runs = check_positive_int("num_runs", num_runs)
    num_null = _check_num_null(num_null)
    num_steps = check_positive_int("num_steps", num_steps)
    batch_size = check_positive_int("batch_size", batch_size)
    window = _check_window(window, num_steps)
    max_degree = check_positive_int("max_degree", max_degree)
    if max_degree < 2:
        raise ValueError(f"max_degree must be at least 2 (degrees 0, 1 are the null task), got {max_degree}")
    if not (0 < learned_fraction <= 1):
        raise ValueError(f"learned_fraction must lie in (0, 1], got {learned_fraction!r}")
    total = num_runs + num_null
    slots = max_degree + 1
    key_model, key_train = jax.random.split(key)
    arrays, static = _stack_modules(
        lambda k: eqx.nn.MLP(2 * slots, slots, hidden, 2, activation=jnp.tanh, key=k), jax.random.split(key_model, total)
    )
    optimizer = optax.adam(learning_rate)
    degrees_per_run = jnp.asarray(np.where(np.arange(total) < num_runs, max_degree, 1), jnp.int32)
    grid = jnp.linspace(-1.0, 1.0, 64)
    table = legendre_table(max_degree, grid)  # (slots, 64)
    variance = 1.0 / (2 * jnp.arange(slots) + 1.0)

    def step_fn(state: _RunState) -> _RunState:
        key_step = jax.random.fold_in(state.key, state.step)
        key_degree, key_x = jax.random.split(key_step)
        degree = jax.random.randint(key_degree, (batch_size,), 0, state.config + 1)
        x = jax.random.uniform(key_x, (batch_size,), minval=-1.0, maxval=1.0)
        targets = jax.nn.one_hot(degree, slots) * jnp.take_along_axis(legendre_table(max_degree, x), degree[None], 0)[0][:, None]
        data = (_legendre_inputs(degree, x, slots), targets)
        return _optimizer_step(optimizer, state, lambda p: _legendre_loss(eqx.combine(p, static), data))

    def eval_fn(state: _RunState):
        model = eqx.combine(state.params, static)

        def degree_error(i):
            inputs = _legendre_inputs(jnp.full(grid.shape, i), grid, slots)
            targets = jax.nn.one_hot(jnp.full(grid.shape, i), slots) * table[i][:, None]
            return jnp.mean(jnp.sum((jax.vmap(model)(inputs) - targets) ** 2, -1))

        errors = jax.vmap(degree_error)(jnp.arange(slots))
        used = jnp.arange(slots) <= state.config
        relative = errors / variance
        return state.params, jnp.sum(errors * used) / jnp.sum(used), jnp.sum(relative * used) / jnp.sum(used), errors

    states = _RunState(arrays, jax.vmap(optimizer.init)(arrays), jnp.zeros(total, jnp.int32), jax.random.split(key_train, total), degrees_per_run)
    schedule = log_schedule(num_steps, num_checkpoints)
    params, train_loss, metric, errors = _train(step_fn, eval_fn, states, schedule)
    learned_steps, transitions = [], []
    variance_np = np.asarray(variance)
    for run in range(total):
        top = max_degree if run < num_runs else 1
        learned = [first_crossing(schedule, errors[run, :, i], learned_fraction * variance_np[i], above=False) for i in range(top + 1)]
        learned_steps.append(np.asarray(learned))
        transitions.append(_in_window(learned[2:], window) if run < num_runs else np.zeros(0))
    num_rows = slots * grid.size
    inputs, targets = [], []
    for top in np.asarray(degrees_per_run):
        degree = (np.arange(num_rows) * (top + 1)) // num_rows  # equal blocks of rows, sorted by degree
        x = np.concatenate([np.linspace(-1.0, 1.0, np.sum(degree == i)) for i in range(top + 1)]).astype(np.float32)
        degree_j, x_j = jnp.asarray(degree), jnp.asarray(x)
        inputs.append(_legendre_inputs(degree_j, x_j, slots))
        values = jnp.take_along_axis(legendre_table(max_degree, x_j), degree_j[None], 0)[0]
        targets.append(jax.nn.one_hot(degree_j, slots) * values[:, None])
    return TaskRuns(
        "legendre", schedule, params, np.asarray(train_loss), np.asarray(metric), tuple(transitions),
        {"learned_by_degree": tuple(learned_steps)}, np.arange(total) >= num_runs, window,
        _PartitionedLoss(_legendre_loss, static), (jnp.stack(inputs), jnp.stack(targets)), num_rows, True,
    )


# ----------------------------------------------------------------------------------------------
# TMS


def _tms_loss(params, data):
    from tmsjax.model import loss

    return loss(params, data.x, data.mask)


def phase_change_steps(steps, labels, window) -> np.ndarray:
    """Steps where the classified phase changes, reading through "unknown" checkpoints.

    A change is counted at the first checkpoint of the new known phase (unknown checkpoints between
    two known phases are the crossing itself, not phases of their own).
    """
    changes, current = [], None
    for step, label in zip(np.asarray(steps), labels):
        if label == "unknown":
            continue
        if current is not None and label != current:
            changes.append(float(step))
        current = label
    return _in_window(changes, window)


def tms_runs(
    key: PRNGKey,
    num_runs: int = 6,
    num_null: int = 2,
    *,
    num_features: int = 6,
    num_data: int = 1000,
    num_steps: int = 20_000,
    num_checkpoints: int = 100,
    learning_rate: float = 0.01,
    batch_size: int = 20,
    window: tuple = (100, 20_000),
    init_scale: float = 0.3,
) -> TaskRuns:
    r"""SGD on the TMS (Chen et al.'s data and minibatch, a shorter run at a larger learning rate) from
    small random weights N(0, init_scale²), with the phase classifier's changes as ground truth; null
    runs start near the 6-gon (c = 6), the global minimum, and stay there.

    Uses :func:`tmsjax.sgd.train` and :func:`tmsjax.phases.classify_batch`. Whether a run transitions
    inside the window is random; :attr:`TaskRuns.is_null` marks runs *initialised* as null, and runs
    whose phase never changes simply have no true transitions.

    Returns:
      :class:`TaskRuns` (metric: the exact potential L; events "labels": the phase label per checkpoint).
    """
    from tmsjax import phases, sgd
    from tmsjax.data import make_dataset, sample_sparse_limit
    from tmsjax.model import init_near_kgon, init_params

    num_runs = check_positive_int("num_runs", num_runs)
    num_null = _check_num_null(num_null)
    num_steps = check_positive_int("num_steps", num_steps)
    batch_size = check_positive_int("batch_size", batch_size)
    window = _check_window(window, num_steps)
    total = num_runs + num_null
    key_data, key_init, key_null, key_train = jax.random.split(key, 4)

    @jax.jit  # one program for the setup (run eagerly, each sampler primitive compiles on its own)
    def setup(key_data, key_init, key_null):
        x = sample_sparse_limit(key_data, num_data, num_features)
        # Small random weights (scale 0.3): runs pass through several k-gon phases within ~10⁴ steps
        # (4⁺⁺ → 4⁺ → 5 → 5⁺ ...), where runs started at a 4-gon mostly stay there for 10⁵ steps.
        init = jax.vmap(lambda k: init_params(k, num_features, 2, scale=init_scale))(jax.random.split(key_init, num_runs))
        if num_null:
            null = jax.vmap(lambda k: init_near_kgon(k, num_features, num_features, radius=1.32, bias=-0.6))(
                jax.random.split(key_null, num_null)
            )
            init = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), init, null)
        return x, init

    x, init = setup(key_data, key_init, key_null)
    dataset = make_dataset(x)
    schedule = log_schedule(num_steps, num_checkpoints)
    trajectory = sgd.train(
        jax.random.split(key_train, total), init, dataset, num_steps=num_steps, learning_rate=learning_rate,
        batch_size=batch_size, schedule=schedule, progress=False,
    )
    params = jax.tree.map(np.asarray, trajectory.params)
    flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), params)
    labels = phases.classify_batch(flat.W, flat.b).labels.reshape(total, -1)
    transitions = tuple(phase_change_steps(schedule, labels[run], window) for run in range(total))
    return TaskRuns(
        "tms", schedule, params, np.asarray(trajectory.train_loss), np.asarray(trajectory.population_loss),
        transitions, {"labels": tuple(tuple(row) for row in labels)}, np.arange(total) >= num_runs, window,
        _tms_loss, dataset, int(num_data),
    )


def make_task(family: str, key: PRNGKey, **kwargs) -> TaskRuns:
    """Builds the runs of one family by name (see :data:`FAMILIES`)."""
    builders = {"tms": tms_runs, "digits": graduated_digits_runs, "grokking": grokking_runs, "legendre": legendre_runs}
    if family not in builders:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return builders[family](key, **kwargs)


__all__ = [
    "FAMILIES",
    "TaskRuns",
    "EmbedMLP",
    "log_schedule",
    "first_crossing",
    "load_digits_split",
    "legendre_table",
    "phase_change_steps",
    "graduated_digits_runs",
    "grokking_runs",
    "legendre_runs",
    "tms_runs",
    "make_task",
]
