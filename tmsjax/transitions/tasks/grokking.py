r"""Modular-addition grokking: a + b mod p with an embedding + MLP, AdamW with weight decay and the
Omnigrok initial weight scale α (all initial weights × α).

Truth: the first checkpoint where test accuracy passes 0.5 *after* train accuracy passed 0.9 (the
delayed jump). Null runs have random labels (nothing to generalise).

References:
  Power et al. (2022), arXiv:2201.02177 (grokking). Liu, Michaud, Tegmark, "Omnigrok" (2023),
  arXiv:2210.01117 (initial weight scale α).
"""

import dataclasses
import functools
from collections.abc import Callable
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
    scale_arrays,
    softmax_cross_entropy,
    stack_modules,
)
from tmsjax.types import Array, PRNGKey

# One optimiser object per setting: equal step functions across calls, so one compile.
_adamw = functools.cache(optax.adamw)


class EmbedMLP(eqx.Module):
    """a, b ↦ MLP([E_a, E_b]): a learned embedding of each residue, concatenated, then an MLP."""

    embedding: eqx.nn.Embedding
    mlp: eqx.nn.MLP

    def __init__(self, modulus: int, embed_dim: int, hidden: int, *, key: PRNGKey):
        key_embed, key_mlp = jax.random.split(key)
        self.embedding = eqx.nn.Embedding(modulus, embed_dim, key=key_embed)
        self.mlp = eqx.nn.MLP(
            2 * embed_dim, modulus, hidden, 1, activation=jax.nn.relu, key=key_mlp
        )

    def __call__(self, pair):
        return self.mlp(jnp.concatenate([self.embedding(pair[0]), self.embedding(pair[1])]))


def _mse_one_hot(model, data):
    pairs, labels = data
    outputs = jax.vmap(model)(pairs)
    return jnp.mean(jnp.sum((outputs - jax.nn.one_hot(labels, outputs.shape[-1])) ** 2, -1))


_GROKKING_LOSSES = {"cross_entropy": softmax_cross_entropy, "mse": _mse_one_hot}


class _GrokkingRun(NamedTuple):
    """What one run reads (leading run axis): its own train/test split and labels."""

    train_pairs: Array
    train_labels: Array
    test_pairs: Array
    test_labels: Array


@dataclasses.dataclass(frozen=True)
class _GrokkingStep:
    """One full-batch AdamW step (hashable: equal settings, one program)."""

    static: Any
    optimizer: optax.GradientTransformation
    loss_of: Callable

    def __call__(self, state: TrainState, run: _GrokkingRun, shared) -> TrainState:
        data = (run.train_pairs, run.train_labels)

        def loss(params):
            return self.loss_of(eqx.combine(params, self.static), data)

        return optimizer_step(self.optimizer, state, loss)


@dataclasses.dataclass(frozen=True)
class _GrokkingRecord:
    """Checkpoint: parameters, train loss, train accuracy and test accuracy."""

    static: Any
    loss_of: Callable

    def __call__(self, state: TrainState, run: _GrokkingRun, shared):
        model = eqx.combine(state.params, self.static)
        train_predictions = jnp.argmax(jax.vmap(model)(run.train_pairs), -1)
        test_predictions = jnp.argmax(jax.vmap(model)(run.test_pairs), -1)
        train_accuracy = jnp.mean(train_predictions == run.train_labels)
        test_accuracy = jnp.mean(test_predictions == run.test_labels)
        train_loss = self.loss_of(model, (run.train_pairs, run.train_labels))
        return state.params, train_loss, train_accuracy, test_accuracy


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
    r"""Modular addition a + b mod p with Omnigrok's initial weight scale α: late generalisation.

    Full-batch AdamW (cross-entropy, or Omnigrok's MSE to one-hot targets), all initial weights × α:
    a large α starts in a high-norm region full of memorising solutions, and weight decay slowly
    pulls the norm down to where generalising solutions live, so test accuracy jumps long after
    train accuracy (Liu et al. 2023). Each run draws its own train/test split.

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
    residues = np.arange(modulus)
    pairs = np.stack(np.meshgrid(residues, residues, indexing="ij"), -1).reshape(-1, 2)
    pairs = pairs.astype(np.int32)
    labels = ((pairs[:, 0] + pairs[:, 1]) % modulus).astype(np.int32)
    num_train = int(round(train_fraction * len(labels)))
    key_model, key_split, key_labels = jax.random.split(key, 3)
    split_keys = jax.random.split(key_split, total)
    orders = np.stack([np.asarray(jax.random.permutation(k, len(labels))) for k in split_keys])
    run_labels = np.tile(labels, (total, 1))
    random_labels = jax.random.randint(key_labels, (num_null, len(labels)), 0, modulus)
    random_labels = np.asarray(random_labels, np.int32)
    run_labels[num_runs:] = random_labels
    train_pairs = jnp.asarray(pairs[orders[:, :num_train]])
    train_labels = jnp.asarray(np.take_along_axis(run_labels, orders[:, :num_train], 1))
    test_pairs = jnp.asarray(pairs[orders[:, num_train:]])
    test_labels = jnp.asarray(np.take_along_axis(run_labels, orders[:, num_train:], 1))

    arrays, static = stack_modules(
        lambda k: EmbedMLP(modulus, embed_dim, hidden, key=k), jax.random.split(key_model, total)
    )
    arrays = scale_arrays(arrays, alpha)
    optimizer = _adamw(learning_rate, weight_decay=weight_decay)
    states = TrainState(arrays, jax.vmap(optimizer.init)(arrays), jnp.zeros(total, jnp.int32))
    runs = _GrokkingRun(train_pairs, train_labels, test_pairs, test_labels)
    schedule = checkpoint_schedule(num_steps, num_checkpoints, include_start=False)
    result = run_ensemble(
        _GrokkingStep(static, optimizer, loss_of),
        _GrokkingRecord(static, loss_of),
        states,
        schedule,
        run_inputs=runs,
        name="grokking",
        progress=False,
    )
    params, train_loss, train_accuracy, test_accuracy = result.records
    memorised, grokked, transitions = [], [], []
    for run in range(total):
        memorised_at = first_crossing(schedule, train_accuracy[run], 0.9)
        grokked_at = float("nan")
        if np.isfinite(memorised_at):
            grokked_at = first_crossing(schedule, test_accuracy[run], 0.5, after=memorised_at)
        if run >= num_runs:
            grokked_at = float("nan")  # random labels: any "jump" is chance, never a transition
        memorised.append(in_window([memorised_at], window))
        grokked.append(in_window([grokked_at], window))
        transitions.append(grokked[-1])
    loss_fn = PartitionedLoss(loss_of, static)
    return TaskRuns(
        "grokking",
        schedule,
        params,
        np.asarray(train_loss),
        np.asarray(test_accuracy),
        tuple(transitions),
        {"memorised": tuple(memorised), "grokked": tuple(grokked)},
        np.arange(total) >= num_runs,
        window,
        loss_fn,
        (train_pairs, train_labels),
        num_train,
        True,
    )


__all__ = [
    "EmbedMLP",
    "grokking_runs",
]
