r"""Induction heads: a two-layer attention-only transformer on sequences that repeat themselves.

Each live sequence repeats a random block: tokens :math:`b_1, \dots, b_p` drawn uniformly from a
vocabulary of V, the period :math:`p` drawn per sequence from ``[min_period, max_period]``, and
:math:`x_t = b_{t \bmod p}`. From position p on every next token is predictable *in context* and
only in context: find the previous occurrence of the current token, copy the token that followed
it. The period varies, so no fixed positional offset does it; the network needs an induction head
(a previous-token head in layer 1 composed with a copying head in layer 2; Olsson et al. 2022).
Null runs train on sequences of independent uniform tokens: nothing is predictable, the best model
is the uniform one, and no induction head can form by construction.

Behaviour, measured on one shared probe set of repeating sequences for every run (live and null):

- **induction**: top-1 accuracy on the repeated tokens (:math:`t \ge p`), the metric. Chance is
  1/V; predicting a token seen in the context ("in-context unigram", the stage before) gives about
  :math:`\mathbb{E}[1/p]`; copying gives 1 up to ambiguous blocks (a token twice in one block).
- **context**: the mean softmax mass on tokens already in the context, over all positions (uniform
  prediction: :math:`\mathbb{E}[\#\text{distinct}/V]`). It rises first, when the network learns
  to bet on tokens it has seen, before it knows which one.

Stages measured at the CPU preset (64 live + 32 null runs, key 0: V = 32, 16 tokens, periods
4-8, d = 32, two heads per layer, batch 16, Adam 1e-2; see :func:`transformer_runs`; the curves
below from a 600-step build, the crossings also from the 500-step default):

1. *in-context unigram* (steps ≈ 10-150, gradual): repeat accuracy creeps from 1/V to 0.32-0.50
   (median 0.44 at the checkpoint before the jump), the context mass from 0.14 (the uniform
   predictor's) to ≈ 0.3, and the first-occurrence loss *rises* from log V = 3.47 to ≈ 3.7: the
   network bets on tokens it has seen, not yet on which one comes next;
2. *induction* (sharp): repeat accuracy jumps to ≈ 0.85 and the repeat loss falls from ≈ 2.5 to
   ≈ 0.8 within a few checkpoints; from 0.4 to 0.75 takes a median 0.14 decades (90 % within
   0.36), at a step that varies from seed to seed (standard deviation 0.13 decades).

Truth: the first checkpoint where the probe's repeat accuracy reaches ``induction_threshold`` =
0.5, above the unigram plateau and below the copying level, so the crossing falls inside the jump
(64 of 64 live runs cross, at checkpoints 119-426 of the 500-step default, median 192; 116-367
at 600 steps). Event "context": the context mass reaching ``context_threshold`` = 0.25, midway
through the gradual first stage (checkpoints 54-74; a gradual stage, not a change point to
score). Null runs' probe accuracy stays at chance (at most 0.062 over all checkpoints of 32 null
runs; 1/V = 0.031) and their context mass at 0.14, the uniform predictor's.

References:
  Olsson et al., "In-context learning and induction heads" (2022), arXiv:2209.11895.
  Hoogland et al., "The developmental landscape of in-context learning" (2024), arXiv:2402.02364
  (stage LM4 of a two-layer attention-only language model forms induction heads).
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
)
from tmsjax.types import Array, Bool, Float, Int, PRNGKey

# One optimiser object per learning rate: equal step functions across calls, so one compile.
_adam = functools.cache(optax.adam)


class AttentionOnlyTransformer(eqx.Module):
    r"""A causal attention-only transformer: token + learned position embeddings, pre-norm causal
    self-attention blocks with residual connections, a final layer norm and an unembedding.

    .. math:: h^{(0)}_t = E x_t + P_t, \qquad
              h^{(l)} = h^{(l-1)} + \mathrm{Attn}_l(\mathrm{LN}_l(h^{(l-1)});\ \text{causal}),
              \qquad \mathrm{logits}_t = U\,\mathrm{LN}(h^{(L)}_t).

    No MLPs, as the two-layer attention-only models where induction heads were found (Olsson et
    al. 2022; Hoogland et al. 2024).
    """

    token_embedding: eqx.nn.Embedding
    position_embedding: eqx.nn.Embedding
    norms: tuple
    attention: tuple
    final_norm: eqx.nn.LayerNorm
    unembedding: eqx.nn.Linear

    def __init__(
        self,
        vocab_size: int,
        max_length: int,
        model_dim: int,
        num_heads: int,
        num_layers: int = 2,
        *,
        key: PRNGKey,
    ):
        keys = jax.random.split(key, 3 + num_layers)
        self.token_embedding = eqx.nn.Embedding(vocab_size, model_dim, key=keys[0])
        self.position_embedding = eqx.nn.Embedding(max_length, model_dim, key=keys[1])
        self.unembedding = eqx.nn.Linear(model_dim, vocab_size, use_bias=False, key=keys[2])
        self.norms = tuple(eqx.nn.LayerNorm(model_dim) for _ in range(num_layers))
        self.attention = tuple(
            eqx.nn.MultiheadAttention(num_heads, model_dim, key=k) for k in keys[3:]
        )
        self.final_norm = eqx.nn.LayerNorm(model_dim)

    def __call__(self, tokens: Int[Array, " seq"]) -> Float[Array, "seq vocab"]:
        length = tokens.shape[0]
        if length > self.position_embedding.num_embeddings:
            # An out-of-range index would silently reuse the last position's embedding.
            raise ValueError(
                f"tokens must have at most max_length={self.position_embedding.num_embeddings} "
                f"positions, got {length}"
            )
        h = jax.vmap(self.token_embedding)(tokens)
        h = h + jax.vmap(self.position_embedding)(jnp.arange(length))
        causal = jnp.tril(jnp.ones((length, length), bool))
        for norm, attention in zip(self.norms, self.attention):
            x = jax.vmap(norm)(h)
            h = h + attention(x, x, x, mask=causal)
        return jax.vmap(self.unembedding)(jax.vmap(self.final_norm)(h))


def induction_batch(
    key: PRNGKey,
    num_sequences: int,
    length: int,
    vocab_size: int,
    min_period: int,
    max_period: int,
    repeat=True,
) -> tuple[Int[Array, "n length"], Int[Array, " n"]]:
    r"""Sequences of `length` tokens (inputs and the next-token targets: ``length - 1`` each).

    With `repeat`, token t is :math:`b_{t \bmod p}` for a uniform block b of p tokens, p uniform in
    ``[min_period, max_period]`` per sequence; without, all tokens are independent and uniform (the
    same draws, unrepeated). `repeat` may be traced (one program for live and null runs).

    Returns:
      (tokens, periods): the sequences (n, length) and their periods (n,) (the period a repeating
      sequence would have; targets at positions ≥ p are the repeated ones).
    """
    key_tokens, key_period = jax.random.split(key)
    tokens = jax.random.randint(key_tokens, (num_sequences, length), 0, vocab_size)
    periods = jax.random.randint(key_period, (num_sequences,), min_period, max_period + 1)
    positions = jnp.arange(length)
    repeated = jnp.take_along_axis(tokens, positions[None, :] % periods[:, None], axis=1)
    return jnp.where(repeat, repeated, tokens), periods


def next_token_losses(model, tokens: Int[Array, "n length"]) -> Float[Array, "n length-1"]:
    """Cross-entropy of each next-token prediction, tokens[:, t + 1] from tokens[:, : t + 1]."""
    logits = jax.vmap(model)(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])


def induction_loss(model, tokens: Int[Array, "n length"]) -> Float[Array, ""]:
    """The mean next-token cross-entropy over all positions of all sequences (the training loss,
    and the λ̂ loss of the family)."""
    return jnp.mean(next_token_losses(model, tokens))


class InductionBehaviour(NamedTuple):
    """What a model does on repeating sequences.

    Attributes:
      repeat_accuracy: top-1 accuracy on the repeated targets (position ≥ period).
      repeat_loss: mean cross-entropy on the repeated targets.
      fresh_loss: mean cross-entropy on the first occurrences (position < period; log V at best).
      context_mass: mean softmax mass on tokens already in the context, over all positions.
    """

    repeat_accuracy: Float[Array, ""]
    repeat_loss: Float[Array, ""]
    fresh_loss: Float[Array, ""]
    context_mass: Float[Array, ""]


def induction_behaviour(
    model, tokens: Int[Array, "n length"], periods: Int[Array, " n"]
) -> InductionBehaviour:
    """The behaviour metrics of `model` on repeating sequences (see :class:`InductionBehaviour`)."""
    return _behaviour_of_logits(jax.vmap(model)(tokens[:, :-1]), tokens, periods)


def _behaviour_of_logits(logits, tokens, periods) -> InductionBehaviour:
    targets = tokens[:, 1:]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    repeated = jnp.arange(1, tokens.shape[1])[None, :] >= periods[:, None]
    correct = jnp.argmax(logits, -1) == targets
    count = jnp.maximum(jnp.sum(repeated), 1)
    # seen[n, t, v]: token v occurs among tokens[n, : t + 1], the context of prediction t.
    one_hot = jax.nn.one_hot(tokens[:, :-1], logits.shape[-1], dtype=bool)
    seen = jax.lax.cummax(one_hot.astype(jnp.int32), axis=1).astype(bool)
    mass = jnp.sum(jnp.where(seen, jax.nn.softmax(logits, -1), 0.0), -1)
    return InductionBehaviour(
        jnp.sum(correct & repeated) / count,
        jnp.sum(jnp.where(repeated, losses, 0.0)) / count,
        jnp.sum(jnp.where(repeated, 0.0, losses)) / jnp.maximum(jnp.sum(~repeated), 1),
        jnp.mean(mass),
    )


class _InductionRun(NamedTuple):
    """What one run reads (leading run axis): its minibatch key, whether its data repeat, and its
    λ̂ set (sequences from its own training distribution)."""

    key: PRNGKey
    repeat: Bool[Array, ""]
    tokens: Int[Array, "n length"]


class _Probe(NamedTuple):
    """The shared probe of behaviour: repeating sequences every run is measured on."""

    tokens: Int[Array, "n length"]
    periods: Int[Array, " n"]


@dataclasses.dataclass(frozen=True)
class _InductionStep:
    """One Adam step on a fresh minibatch of the run's distribution (hashable: one program per
    setting)."""

    static: Any
    optimizer: optax.GradientTransformation
    batch_size: int
    length: int
    vocab_size: int
    min_period: int
    max_period: int

    def __call__(self, state: TrainState, run: _InductionRun, shared) -> TrainState:
        tokens, _ = induction_batch(
            jax.random.fold_in(run.key, state.step),
            self.batch_size,
            self.length,
            self.vocab_size,
            self.min_period,
            self.max_period,
            run.repeat,
        )

        def loss(params):
            return induction_loss(eqx.combine(params, self.static), tokens)

        return optimizer_step(self.optimizer, state, loss)


@dataclasses.dataclass(frozen=True)
class _InductionRecord:
    """Checkpoint: parameters, loss on the run's λ̂ set, behaviour on the shared probe."""

    static: Any

    def __call__(self, state: TrainState, run: _InductionRun, probe: _Probe):
        model = eqx.combine(state.params, self.static)
        # One forward over probe and λ̂ set together: half the program to compile.
        tokens = jnp.concatenate([probe.tokens, run.tokens])
        logits = jax.vmap(model)(tokens[:, :-1])
        num_probe = probe.tokens.shape[0]
        behaviour = _behaviour_of_logits(logits[:num_probe], probe.tokens, probe.periods)
        losses = optax.softmax_cross_entropy_with_integer_labels(
            logits[num_probe:], run.tokens[:, 1:]
        )
        return state.params, jnp.mean(losses), behaviour


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _setup(key, num_runs, num_null, num_eval, shape):
    """The model key, the shared probe and each run's inputs, as one program (run eagerly, every
    random primitive would compile on its own)."""
    key_model, key_data, key_probe, key_eval = jax.random.split(key, 4)
    repeat = jnp.arange(num_runs + num_null) < num_runs
    eval_tokens, _ = jax.vmap(lambda k, r: induction_batch(k, num_eval, *shape, r))(
        jax.random.split(key_eval, num_runs + num_null), repeat
    )
    probe = _Probe(*induction_batch(key_probe, num_eval, *shape))
    runs = _InductionRun(jax.random.split(key_data, num_runs + num_null), repeat, eval_tokens)
    return key_model, probe, runs


@functools.cache
def _init_models(*settings):
    """One jitted, vmapped initialiser per model setting, kept: the shared ``stack_modules`` takes
    a fresh closure per call, so every build of the family would compile it again."""
    return eqx.filter_jit(eqx.filter_vmap(lambda k: AttentionOnlyTransformer(*settings, key=k)))


@functools.partial(jax.jit, static_argnums=0)
def _init_states(optimizer, arrays):
    return jax.vmap(optimizer.init)(arrays)


def transformer_runs(
    key: PRNGKey,
    num_runs: int = 64,
    num_null: int = 32,
    *,
    vocab_size: int = 32,
    length: int = 16,
    min_period: int = 4,
    max_period: int = 8,
    model_dim: int = 32,
    num_heads: int = 2,
    num_layers: int = 2,
    batch_size: int = 16,
    learning_rate: float = 1e-2,
    num_steps: int = 500,
    num_checkpoints: int = 40,
    window: tuple = (20, 500),
    num_eval: int = 64,
    induction_threshold: float = 0.5,
    context_threshold: float = 0.25,
) -> TaskRuns:
    r"""Induction-head formation in a small attention-only transformer, vmapped over seeds.

    Live runs train on repeating sequences (:func:`induction_batch`), null runs on unrepeated ones:
    Adam on next-token cross-entropy, a fresh minibatch every step (each run its own key stream).
    All runs are measured on one probe of `num_eval` repeating sequences
    (:func:`induction_behaviour`).

    Truth: the first checkpoint where the probe's repeat accuracy reaches `induction_threshold`
    (event "induction", the primary transition); event "context": where the context mass first
    reaches `context_threshold` (the in-context unigram stage before). Null runs have none.

    Presets (the detector experiment's ``SCALES``; ``num_runs=64, num_null=32`` at cpu):

    - smoke (tests, a few runs): ``num_steps=400, num_checkpoints=24, window=(10, 400),
      num_eval=32``;
    - cpu (the defaults): ``num_steps=500, num_checkpoints=40, window=(20, 500)``: 96 runs in
      ≈ 110-130 CPU-seconds (one vmapped program; see the module docstring for the stages);
    - paper (GPU): ``vocab_size=64, length=24, min_period=4, max_period=10, model_dim=64,
      num_heads=4, batch_size=32, learning_rate=5e-3, num_steps=3000, num_checkpoints=100,
      window=(20, 3000), num_eval=256``. Checked on CPU with 4 live and 2 null runs for 1000
      steps (75 CPU-s): every live run crossed at steps 100-119 (repeat accuracy 0.36 → 0.85 in
      three checkpoints, ≈ 0.15 decades), null runs stayed ≤ 0.03 (1/V = 0.016).

    Args:
      key: PRNG key (models, data streams, probe and λ̂ sets).
      num_runs, num_null: live and null runs.
      vocab_size, length: tokens per vocabulary and per sequence (``length - 1`` predictions).
      min_period, max_period: the range of block lengths p (≥ 2, ``max_period < length``).
      model_dim, num_heads, num_layers: the transformer (:class:`AttentionOnlyTransformer`).
      batch_size, learning_rate: Adam on minibatches of this many sequences.
      num_steps, num_checkpoints, window: training length, log-spaced checkpoints, scoring window.
      num_eval: sequences in the shared probe and in each run's λ̂ set.
      induction_threshold, context_threshold: the behaviour levels that define the events.

    Returns:
      :class:`TaskRuns` (metric: probe repeat accuracy; events "context" and "induction";
      ``data``: each run's λ̂ set of sequences, (runs, num_eval, length); ``num_data`` = num_eval).

    Raises:
      ValueError: naming the bad argument.
    """
    num_runs = check_positive_int("num_runs", num_runs)
    num_null = check_num_null(num_null)
    num_steps = check_positive_int("num_steps", num_steps)
    window = check_window(window, num_steps)
    vocab_size = check_positive_int("vocab_size", vocab_size)
    length = check_positive_int("length", length)
    for name, value in [
        ("model_dim", model_dim),
        ("num_heads", num_heads),
        ("num_layers", num_layers),
        ("batch_size", batch_size),
        ("num_eval", num_eval),
    ]:
        check_positive_int(name, value)
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size!r}")
    if not (2 <= min_period <= max_period < length):
        raise ValueError(
            "min_period and max_period must satisfy 2 <= min_period <= max_period < length="
            f"{length}, got {min_period!r} and {max_period!r}"
        )
    if model_dim % num_heads:
        raise ValueError(f"model_dim={model_dim} must be a multiple of num_heads, got {num_heads}")
    if not (learning_rate > 0):
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    for name, value in [
        ("induction_threshold", induction_threshold),
        ("context_threshold", context_threshold),
    ]:
        if not (0 < value < 1):
            raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
    total = num_runs + num_null
    # induction_batch's shape arguments after the number of sequences, in its order.
    shape = (length, vocab_size, min_period, max_period)
    key_model, probe, runs = _setup(key, num_runs, num_null, num_eval, shape)
    models = _init_models(vocab_size, length - 1, model_dim, num_heads, num_layers)
    arrays, static = eqx.partition(models(jax.random.split(key_model, total)), eqx.is_inexact_array)
    optimizer = _adam(learning_rate)
    states = TrainState(arrays, _init_states(optimizer, arrays), jnp.zeros(total, jnp.int32))
    schedule = checkpoint_schedule(num_steps, num_checkpoints, include_start=False)
    result = run_ensemble(
        _InductionStep(static, optimizer, batch_size, *shape),
        _InductionRecord(static),
        states,
        schedule,
        run_inputs=runs,
        shared=probe,
        name="transformer",
        progress=False,
    )
    params, train_loss, behaviour = result.records
    context, induction = [], []
    for run in range(total):
        context_at = first_crossing(schedule, behaviour.context_mass[run], context_threshold)
        induction_at = first_crossing(schedule, behaviour.repeat_accuracy[run], induction_threshold)
        if run >= num_runs:
            # Unrepeated data: nothing in context to learn, so no stage by construction.
            context_at = induction_at = float("nan")
        context.append(in_window([context_at], window))
        induction.append(in_window([induction_at], window))
    return TaskRuns(
        "transformer",
        schedule,
        params,
        np.asarray(train_loss),
        np.asarray(behaviour.repeat_accuracy),
        tuple(induction),
        {"context": tuple(context), "induction": tuple(induction)},
        np.arange(total) >= num_runs,
        window,
        PartitionedLoss(induction_loss, static),
        runs.tokens,
        num_eval,
        True,
    )


__all__ = [
    "AttentionOnlyTransformer",
    "InductionBehaviour",
    "induction_batch",
    "induction_behaviour",
    "induction_loss",
    "next_token_losses",
    "transformer_runs",
]
