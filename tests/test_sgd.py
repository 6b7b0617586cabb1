"""TMS SGD ensembles: known answers, vmap == loop, one compile for all n, bounded memory."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tmsjax.results import ResultStore
from tmsjax.tms.data import Dataset, make_dataset, nested_datasets, sample_sparse_limit
from tmsjax.tms.model import TMSParams, init_near_kgon
from tmsjax.tms.model import loss as tms_loss
from tmsjax.tms.potential import population_loss
from tmsjax.tms.sgd import (
    SGDRun,
    default_optimizer,
    init_kgon_ensemble,
    init_sgd_state,
    sgd_step_and_record,
    train,
)
from tmsjax.training.engine import chunk_program
from tmsjax.training.schedule import checkpoint_schedule, plan_segments

# Shared shapes (runs, n_max, segments per chunk): tests that reuse them reuse one compiled program,
# which keeps this file fast on a 2-core CPU (compiling the chunk program takes seconds there).
RUNS, N_MAX, PER_CHUNK = 4, 100, 4


def _setup(key, num_runs=RUNS):
    key_data, key_init, key_runs = jax.random.split(key, 3)
    x = sample_sparse_limit(key_data, N_MAX, 6)
    return jax.random.split(key_runs, num_runs), init_kgon_ensemble(key_init, num_runs), x


def test_chunk_memory_is_bounded_for_ten_thousand_runs():
    """Device output of one chunk is checkpoints_per_chunk × runs records, whatever the schedule."""
    num_runs, per_chunk = 10_000, 16
    step, record = sgd_step_and_record(
        default_optimizer(), tms_loss, population_loss, 20, "empirical", "replacement"
    )
    program = chunk_program(step, record)
    params = TMSParams(
        jax.ShapeDtypeStruct((num_runs, 2, 6), jnp.float32),
        jax.ShapeDtypeStruct((num_runs, 6), jnp.float32),
    )
    state = jax.eval_shape(jax.vmap(lambda p: init_sgd_state(p, default_optimizer())), params)
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), num_runs))
    index = jax.ShapeDtypeStruct((num_runs,), jnp.int32)
    data = Dataset(
        jax.ShapeDtypeStruct((1, 1000, 6), jnp.float32),
        jax.ShapeDtypeStruct((1, 1000), jnp.bool_),
    )
    lengths = jax.ShapeDtypeStruct((per_chunk,), jnp.int32)
    _, infos = jax.eval_shape(program, state, SGDRun(keys, index, index), data, lengths)
    num_bytes = sum(np.prod(leaf.shape) * leaf.dtype.itemsize for leaf in jax.tree.leaves(infos))
    assert infos.params.W.shape == (num_runs, per_chunk, 2, 6)
    assert num_bytes < 20e6  # 10⁴ runs × 16 × (18 params + 2 losses + flag): ~13 MB
    # 200 checkpoints of 225k steps take ceil((200 + 22) / 16) chunks of this one shape.
    plan = plan_segments(checkpoint_schedule(225_000, 200), checkpoints_per_chunk=per_chunk)
    assert plan.lengths.shape[1] == per_chunk


def _quadratic_loss(theta, x, mask=None):
    squared = jnp.sum((x - theta) ** 2, axis=-1)
    if mask is None:
        return jnp.mean(squared)
    return jnp.sum(squared * mask) / jnp.sum(mask)


def test_sgd_on_convex_loss_reaches_the_minimum_of_each_masked_dataset(key):
    """L(θ) = mean_k |x_k − θ|² has its minimum at the mean of the *real* rows of each dataset.

    With learning rate 1/(2(t+1)) the SGD iterate is exactly the running mean of all minibatch rows
    drawn so far (Robbins-Monro), so θ_T − mean ~ N(0, σ²/(T·B)) per coordinate: a 5σ tolerance.
    Data are offset by +3, so sampling a padding row (zeros) would be off by ~3/n, far outside it.
    """
    key_data, key_runs = jax.random.split(key)
    num_steps, batch_size, sizes = 400, 10, [40, 160]
    x = 3.0 + jax.random.normal(key_data, (200, 3))
    datasets = nested_datasets(x, sizes)
    optimizer = optax.sgd(lambda t: 0.5 / (t + 1.0))
    num_runs = 4
    result = train(
        jax.random.split(key_runs, num_runs),
        jnp.zeros((num_runs, 3)),
        datasets,
        num_steps=num_steps,
        dataset_index=np.array([0, 1, 0, 1]),
        optimizer=optimizer,
        batch_size=batch_size,
        loss_fn=_quadratic_loss,
        population_fn=None,
        num_checkpoints=5,
        progress=False,
    )
    final = result.params[:, -1]
    for run, size in enumerate([40, 160, 40, 160]):
        target = np.asarray(x[:size]).mean(axis=0)
        spread = np.asarray(x[:size]).std(axis=0) / np.sqrt(num_steps * batch_size)
        assert np.all(np.abs(final[run] - target) < 5 * spread + 1e-5), (run, final[run], target)
    assert np.all(np.isnan(result.population_loss)) and np.all(result.is_finite)


def test_gradient_descent_on_exact_convex_population_reaches_minimum(key):
    target = jnp.array([1.0, -2.0, 0.5])
    result = train(
        jax.random.split(key, 3),
        jax.random.normal(key, (3, 3)),
        num_steps=200,
        objective="population",
        learning_rate=0.1,
        loss_fn=_quadratic_loss,
        population_fn=lambda theta: jnp.sum((theta - target) ** 2),
        num_checkpoints=10,
        progress=False,
    )
    np.testing.assert_allclose(result.params[:, -1], np.broadcast_to(target, (3, 3)), atol=1e-6)
    # Gradient descent on a convex bowl never goes up.
    assert np.all(np.diff(result.population_loss, axis=1) <= 1e-7)
    np.testing.assert_array_equal(result.train_loss, result.population_loss)


def test_population_training_converges_to_the_4gon_level(key):
    """From near a 4-gon with negative biases, gradient descent on the exact potential sits at
    L(4) = (c − 4)/(3c)."""
    params = jax.vmap(lambda k: init_near_kgon(k, 4, 6, bias=-0.01))(jax.random.split(key, RUNS))
    result = train(
        jax.random.split(key, RUNS),
        params,
        num_steps=2_000,
        objective="population",
        learning_rate=0.05,
        num_checkpoints=20,
        checkpoints_per_chunk=PER_CHUNK,
        progress=False,
    )
    np.testing.assert_allclose(result.population_loss[:, -1], 2 / 18, atol=1e-5)


@pytest.mark.parametrize("sampling", ["replacement", pytest.param("epoch", marks=pytest.mark.slow)])
def test_vmapped_ensemble_equals_looped_runs(key, sampling):
    keys, params, x = _setup(key)
    datasets = nested_datasets(x, [40, 100])
    index = np.array([0, 1, 0, 1])
    common = dict(
        num_steps=300,
        num_checkpoints=12,
        sampling=sampling,
        progress=False,
        checkpoints_per_chunk=PER_CHUNK,
    )
    ensemble = train(keys, params, datasets, dataset_index=index, **common)
    for run in range(RUNS):
        single = train(
            keys[run : run + 1],
            jax.tree.map(lambda leaf: leaf[run : run + 1], params),
            datasets,
            dataset_index=index[run : run + 1],
            **common,
        )
        np.testing.assert_array_equal(single.steps, ensemble.steps)
        close = dict(rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(single.params.W[0], ensemble.params.W[run], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(single.train_loss[0], ensemble.train_loss[run], **close)
        population = ensemble.population_loss[run]
        np.testing.assert_allclose(single.population_loss[0], population, **close)


def test_one_compile_for_all_dataset_sizes_and_learning_rates(key, caplog):
    """n and the learning rate are data, not shape: any n (padded to one n_max), any learning rate
    and any schedule run in one compiled chunk program (0 new compiles if an earlier test built
    it)."""
    keys, params, x = _setup(key)
    calls = [
        ([30, 60, 100, 100], 0.005, 50, 8),
        ([7, 20, 50, 100], 0.01, 50, 8),
        ([5, 10, 90, 90], 0.003, 173, 30),
    ]
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        for sizes, learning_rate, num_steps, num_checkpoints in calls:
            result = train(
                keys,
                params,
                nested_datasets(x, sizes),
                num_steps=num_steps,
                learning_rate=learning_rate,
                num_checkpoints=num_checkpoints,
                checkpoints_per_chunk=PER_CHUNK,
                progress=False,
            )
            assert np.all(result.is_finite)
    messages = [r.getMessage() for r in caplog.records]
    compiles = [m[:80] for m in messages if "Compiling" in m and "run_chunk" in m]
    assert len(compiles) <= 1, compiles


def test_resume_from_store_gives_the_same_trajectory(key, tmp_path):
    keys, params, x = _setup(key)
    dataset = make_dataset(x)
    common = dict(
        num_steps=200, num_checkpoints=20, checkpoints_per_chunk=PER_CHUNK, progress=False
    )
    fresh = train(keys, params, dataset, **common)
    store = ResultStore(tmp_path)
    seen = []

    def stop_after_two(index, state, infos):
        seen.append(index)
        if index == 1:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        train(keys, params, dataset, store=store, on_chunk=stop_after_two, **common)
    resumed = train(
        keys, params, dataset, store=store, on_chunk=lambda i, s, o: seen.append(i), **common
    )
    assert seen[:3] == [0, 1, 1]  # chunk 0 was loaded from disk, chunk 1 re-run after the crash
    np.testing.assert_allclose(resumed.params.W, fresh.params.W, rtol=1e-6)
    np.testing.assert_allclose(resumed.train_loss, fresh.train_loss, rtol=1e-6)
    np.testing.assert_array_equal(resumed.steps, fresh.steps)
    # The same store with another schedule would relabel the saved chunks: refused.
    with pytest.raises(ValueError, match="other settings"):
        train(keys, params, dataset, store=store, **(common | {"num_steps": 400}))


def test_divergence_is_data_and_learning_rate_is_per_run(key):
    keys, params, x = _setup(key)
    result = train(
        keys,
        params,
        make_dataset(x),
        num_steps=300,
        learning_rate=np.array([0.005, 50.0, 0.005, 50.0]),
        num_checkpoints=10,
        checkpoints_per_chunk=PER_CHUNK,
        progress=False,
    )
    assert np.all(result.is_finite[[0, 2]])
    assert not np.any(result.is_finite[[1, 3], -1])
    assert np.all(result.is_finite[:, 0])


@pytest.mark.parametrize(
    "change, name",
    [
        ({"objective": "bayes"}, "objective"),
        ({"sampling": "stratified"}, "sampling"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": np.ones(3)}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"dataset_index": np.array([0, 5])}, "dataset_index"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"schedule": np.array([0, 5])}, "schedule"),
        ({"keys": np.zeros(2, np.uint32)}, "keys"),
        ({"init_params": TMSParams(jnp.zeros((3, 2, 6)), jnp.zeros((3, 6)))}, "init_params"),
        ({"datasets": Dataset(jnp.zeros((10, 6)), jnp.zeros(10, bool))}, "datasets"),
        ({"datasets": None}, "datasets"),
    ],
)
def test_train_rejects_bad_arguments(key, change, name):
    arguments = dict(
        keys=jax.random.split(key, 2),
        init_params=init_kgon_ensemble(key, 2),
        datasets=make_dataset(sample_sparse_limit(key, 20, 6)),
        num_steps=10,
        progress=False,
    )  # every case fails validation before anything compiles
    arguments.update(change)
    with pytest.raises(ValueError, match=name):
        train(**arguments)
