r"""Modular-addition grokking: a + b mod p with an embedding + MLP, AdamW with weight decay and the
Omnigrok initial weight scale α (all initial weights × α).

Truth: the first checkpoint where test accuracy passes 0.5 *after* train accuracy passed 0.9 (the
delayed jump). Null runs have random labels (nothing to generalise).

References:
  Power et al. (2022), arXiv:2201.02177 (grokking). Liu, Michaud, Tegmark, "Omnigrok" (2023),
  arXiv:2210.01117 (initial weight scale α).
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
    scale_arrays,
    softmax_cross_entropy,
    stack_modules,
    train_runs,
)
from tmsjax.types import PRNGKey


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


_GROKKING_LOSSES = {"cross_entropy": softmax_cross_entropy, "mse": _mse_one_hot}


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
    num_null = check_num_null(num_null)
    num_steps = check_positive_int("num_steps", num_steps)
    window = check_window(window, num_steps)
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

    arrays, static = stack_modules(lambda k: EmbedMLP(modulus, embed_dim, hidden, key=k), jax.random.split(key_model, total))
    arrays = scale_arrays(arrays, alpha)
    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)

    def step_fn(state: RunState) -> RunState:
        data = state.config[:2]
        return optimizer_step(optimizer, state, lambda p: loss_of(eqx.combine(p, static), data))

    def eval_fn(state: RunState):
        model = eqx.combine(state.params, static)
        x_train, y_train, x_test, y_test = state.config
        train_accuracy = jnp.mean(jnp.argmax(jax.vmap(model)(x_train), -1) == y_train)
        test_accuracy = jnp.mean(jnp.argmax(jax.vmap(model)(x_test), -1) == y_test)
        return state.params, loss_of(model, (x_train, y_train)), train_accuracy, test_accuracy

    states = RunState(
        arrays, jax.vmap(optimizer.init)(arrays), jnp.zeros(total, jnp.int32), jax.random.split(key, total),
        (train_pairs, train_labels, test_pairs, test_labels),
    )
    schedule = log_schedule(num_steps, num_checkpoints)
    params, train_loss, train_accuracy, test_accuracy = train_runs(step_fn, eval_fn, states, schedule)
    memorised, grokked, transitions = [], [], []
    for run in range(total):
        memorised_at = first_crossing(schedule, train_accuracy[run], 0.9)
        grokked_at = first_crossing(schedule, test_accuracy[run], 0.5, after=memorised_at) if np.isfinite(memorised_at) else float("nan")
        if run >= num_runs:
            grokked_at = float("nan")  # random labels: any "jump" is chance, never a transition
        memorised.append(in_window([memorised_at], window))
        grokked.append(in_window([grokked_at], window))
        transitions.append(grokked[-1])
    loss_fn = PartitionedLoss(loss_of, static)
    return TaskRuns(
        "grokking", schedule, params, np.asarray(train_loss), np.asarray(test_accuracy), tuple(transitions),
        {"memorised": tuple(memorised), "grokked": tuple(grokked)}, np.arange(total) >= num_runs, window,
        loss_fn, (train_pairs, train_labels), num_train, True,
    )


__all__ = [
    "EmbedMLP",
    "grokking_runs",
]
