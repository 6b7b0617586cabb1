"""The transformer family: a causal model, repeating data, behaviour against closed forms, and a
real (tiny) training run whose live runs form induction heads and whose null runs do not."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmsjax.transitions.tasks import FAMILIES
from tmsjax.transitions.tasks.transformer import (
    AttentionOnlyTransformer,
    induction_batch,
    induction_behaviour,
    transformer_runs,
)

# The smoke preset (see transformer_runs): a few runs, long enough for every live run to pass
# the unigram plateau and form an induction head (at the CPU preset all 64 of 64 live runs did by
# step 367). ~65 s on 2 cores at load 13, so slow-only; the fast suite trains a tiny model instead.
SMOKE = dict(num_steps=400, num_checkpoints=24, window=(10, 400), num_eval=32)
TINY = dict(
    vocab_size=8,
    length=8,
    min_period=2,
    max_period=4,
    model_dim=8,
    num_heads=1,
    num_layers=1,
    batch_size=4,
    num_steps=20,
    num_checkpoints=6,
    window=(2, 20),
    num_eval=4,
)


def test_forward_is_causal():
    model = AttentionOnlyTransformer(16, 12, 16, 2, key=jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (12,), 0, 16)
    changed = tokens.at[7].set((tokens[7] + 1) % 16)
    before, after = eqx.filter_jit(jax.vmap(model))(jnp.stack([tokens, changed]))
    assert before.shape == (12, 16)
    # Positions before the change see the same prefix: identical logits; from it on they differ.
    np.testing.assert_array_equal(before[:7], after[:7])
    assert np.all(np.max(np.abs(before[7:] - after[7:]), -1) > 1e-4)


def test_model_rejects_sequences_longer_than_its_positions():
    model = AttentionOnlyTransformer(16, 8, 16, 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="max_length"):
        model(jnp.zeros(9, jnp.int32))


def test_induction_batch_repeats_with_its_period():
    key = jax.random.key(2)
    tokens, periods = induction_batch(key, 64, 16, 32, 3, 7)
    plain, plain_periods = induction_batch(key, 64, 16, 32, 3, 7, repeat=False)
    tokens, periods, plain = map(np.asarray, (tokens, periods, plain))
    assert tokens.shape == (64, 16) and periods.shape == (64,)
    assert tokens.min() >= 0 and tokens.max() < 32
    assert periods.min() >= 3 and periods.max() <= 7
    np.testing.assert_array_equal(periods, plain_periods)
    for row, p, base in zip(tokens, periods, plain):
        np.testing.assert_array_equal(row[p:], row[:-p])  # x_t = x_{t-p}
        np.testing.assert_array_equal(row[:p], base[:p])  # the block: the unrepeated draws
    # Unrepeated sequences do not repeat (a period-p match of all 16 - p tokens has chance 32^-9).
    assert not any(np.array_equal(b[p:], b[:-p]) for b, p in zip(plain, periods))


def test_behaviour_of_the_uniform_predictor_is_known_in_closed_form():
    vocab = 8
    tokens, periods = induction_batch(jax.random.key(3), 128, 12, vocab, 2, 5)
    behaviour = jax.jit(induction_behaviour, static_argnums=0)(
        lambda x: jnp.zeros((x.shape[0], vocab)), tokens, periods
    )
    tokens, periods = np.asarray(tokens), np.asarray(periods)
    positions = np.arange(1, 12)
    repeated = positions[None, :] >= periods[:, None]
    targets = tokens[:, 1:]
    # argmax of equal logits is token 0; every loss is log V; the mass on seen tokens is the share
    # of the vocabulary seen so far.
    np.testing.assert_allclose(behaviour.repeat_accuracy, np.mean(targets[repeated] == 0), 1e-6)
    np.testing.assert_allclose(behaviour.repeat_loss, np.log(vocab), 1e-6)
    np.testing.assert_allclose(behaviour.fresh_loss, np.log(vocab), 1e-6)
    seen = [[len(set(row[: t + 1])) / vocab for t in range(11)] for row in tokens]
    np.testing.assert_allclose(behaviour.context_mass, np.mean(seen), 1e-6)


def test_behaviour_of_a_copier_is_perfect_on_repeats():
    vocab, period = 8, 3
    tokens, periods = induction_batch(jax.random.key(4), 64, 12, vocab, period, period)

    def copier(x):  # logits 30 on the token one period back
        back = x[jnp.maximum(jnp.arange(x.shape[0]) + 1 - period, 0)]
        return 30.0 * jax.nn.one_hot(back, vocab)

    behaviour = jax.jit(induction_behaviour, static_argnums=0)(copier, tokens, periods)
    assert float(behaviour.repeat_accuracy) == 1.0
    assert float(behaviour.repeat_loss) < 1e-10
    assert float(behaviour.fresh_loss) > 1.0  # the first occurrences are not predictable


def test_task_runs_have_the_shapes_and_losses_of_their_training():
    assert FAMILIES["transformer"] is transformer_runs
    task = transformer_runs(jax.random.key(1), 2, 1, **TINY)
    num_checkpoints = task.steps.size
    assert task.family == "transformer" and task.num_runs == 3 and task.window == (2, 20)
    assert task.steps[0] >= 1 and np.all(np.diff(task.steps) > 0) and task.steps[-1] == 20
    for leaf in jax.tree.leaves(task.params):
        assert leaf.shape[:2] == (3, num_checkpoints)
    assert task.train_loss.shape == task.metric.shape == (3, num_checkpoints)
    np.testing.assert_array_equal(task.is_null, [False, False, True])
    assert task.data_per_run and task.data.shape == (3, 4, 8) and task.num_data == 4
    assert set(task.events) == {"context", "induction"} and task.transitions[2].size == 0
    # The recorded loss is the λ̂ loss on the run's own λ̂ data; live runs' data repeat, the null
    # run's do not.
    for run in range(3):
        params = jax.tree.map(lambda leaf: jnp.asarray(leaf[run, -1]), task.params)
        loss = eqx.filter_jit(task.loss_fn)(params, jnp.asarray(task.data[run]))
        np.testing.assert_allclose(loss, task.train_loss[run, -1], rtol=1e-5)
        periodic = [any(np.array_equal(t[p:], t[:-p]) for p in (2, 3, 4)) for t in task.data[run]]
        assert all(periodic) == (run < 2)  # iid tokens: period ≤ 4 by chance has odds ≤ 8^-4
    # Reproducible from the key, in the same compiled programs (the loss compares equal too).
    again = transformer_runs(jax.random.key(1), 2, 1, **TINY)
    np.testing.assert_array_equal(again.train_loss, task.train_loss)
    np.testing.assert_array_equal(again.metric, task.metric)
    assert again.loss_fn == task.loss_fn and hash(again.loss_fn) == hash(task.loss_fn)


@pytest.mark.slow
def test_live_runs_form_induction_heads_and_null_runs_do_not():
    task = transformer_runs(jax.random.key(0), 2, 1, **SMOKE)
    num_checkpoints = task.steps.size
    assert task.family == "transformer" and task.num_runs == 3
    assert task.steps[0] >= 1 and np.all(np.diff(task.steps) > 0) and task.steps[-1] == 400
    for leaf in jax.tree.leaves(task.params):
        assert leaf.shape[:2] == (3, num_checkpoints)
    assert task.train_loss.shape == task.metric.shape == (3, num_checkpoints)
    np.testing.assert_array_equal(task.is_null, [False, False, True])
    assert task.data_per_run and task.data.shape == (3, 32, 16) and task.num_data == 32
    # Behavioural ground truth: every live run jumps past 0.5 repeat accuracy inside the window and
    # ends far above the unigram plateau; the null run stays near chance (1/32) and has no event.
    for run in (0, 1):
        (step,) = task.transitions[run]
        assert SMOKE["window"][0] <= step <= SMOKE["window"][1]
        assert task.metric[run, -1] > 0.7
        assert task.events["context"][run].size == 1
    assert task.transitions[2].size == 0 and task.events["context"][2].size == 0
    assert task.metric[2].max() < 0.2
    # The recorded train loss is the λ̂ loss on the run's own λ̂ data.
    run, index = 1, num_checkpoints - 1
    params = jax.tree.map(lambda leaf: jnp.asarray(leaf[run, index]), task.params)
    np.testing.assert_allclose(
        task.loss_fn(params, jnp.asarray(task.data[run])), task.train_loss[run, index], rtol=1e-4
    )
    # Live data repeat; null data do not (their loss stays at log V).
    assert task.train_loss[2, -1] > np.log(32) - 0.1 > 1.5 > task.train_loss[0, -1]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(window=(0, 400)), "window"),
        (dict(min_period=1), "min_period"),
        (dict(max_period=16), "min_period"),
        (dict(model_dim=30, num_heads=4), "model_dim"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(induction_threshold=1.5), "induction_threshold"),
        (dict(num_null=-1), "num_null"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_input_names_the_argument(kwargs, name):
    settings = dict(num_runs=1, num_null=1, num_steps=400, window=(10, 400)) | kwargs
    with pytest.raises(ValueError, match=name):
        transformer_runs(jax.random.key(0), **settings)
