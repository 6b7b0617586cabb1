"""The training engine and its schedule: closed-form answers, chunking, resume, one compile."""

import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmsjax.results import ResultStore
from tmsjax.sharding import grid_mesh
from tmsjax.training.engine import (
    chunk_program,
    init_train_state,
    optimizer_step,
    run_ensemble,
    set_learning_rate,
    sgd_optimizer,
)
from tmsjax.training.schedule import checkpoint_schedule, plan_segments

# ---------------------------------------------------------------------------------------------
# Schedules


def test_checkpoint_schedule_known_values():
    # log: 0 plus round(geomspace(1, T, m - 1)); without the start, round(geomspace(1, T, m)).
    np.testing.assert_array_equal(checkpoint_schedule(1000, 4), [0, 1, 32, 1000])
    np.testing.assert_array_equal(
        checkpoint_schedule(1000, 4, include_start=False), [1, 10, 100, 1000]
    )
    # The task families' schedule, as it was before the merge (values from the old log_schedule).
    np.testing.assert_array_equal(
        checkpoint_schedule(3000, 12, include_start=False),
        [1, 2, 4, 9, 18, 38, 79, 163, 338, 700, 1449, 3000],
    )
    np.testing.assert_array_equal(
        checkpoint_schedule(3000, 12), [0, 1, 2, 5, 11, 25, 55, 122, 272, 605, 1347, 3000]
    )
    np.testing.assert_array_equal(checkpoint_schedule(1000, 11, "linear"), np.arange(0, 1001, 100))
    np.testing.assert_array_equal(
        checkpoint_schedule(1000, 10, "linear", include_start=False), np.arange(100, 1001, 100)
    )
    np.testing.assert_array_equal(
        checkpoint_schedule(1000, 4, "both", include_start=False), [1, 10, 100, 250, 500, 750, 1000]
    )


def test_checkpoint_schedule_log_is_geometric():
    log = checkpoint_schedule(225_000, 200)
    assert log[0] == 0 and log[-1] == 225_000 and np.all(np.diff(log) > 0)
    assert 150 <= len(log) <= 200  # rounding merges duplicates among the first steps
    ratios = log[-50:][1:] / log[-50:][:-1]
    # Geometric where rounding is negligible.
    np.testing.assert_allclose(ratios, ratios.mean(), rtol=1e-3)
    both = checkpoint_schedule(1000, 11, "both")
    assert set(checkpoint_schedule(1000, 11, "linear")) <= set(both)
    assert set(checkpoint_schedule(1000, 11)) <= set(both)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_steps": 0}, "num_steps"),
        ({"num_steps": 10, "num_checkpoints": 1}, "num_checkpoints"),
        ({"num_steps": 10, "num_checkpoints": 1, "include_start": False}, "num_checkpoints"),
        ({"num_steps": 10, "spacing": "cubic"}, "spacing"),
    ],
)
def test_checkpoint_schedule_rejects(kwargs, name):
    with pytest.raises(ValueError, match=name):
        checkpoint_schedule(**kwargs)


def test_plan_segments_covers_schedule_with_bounded_segments():
    schedule = checkpoint_schedule(50_000, 60)
    plan = plan_segments(schedule, checkpoints_per_chunk=8, max_segment_steps=3_000)
    assert plan.lengths.shape[1] == 8
    assert plan.lengths.max() <= 3_000
    assert plan.lengths.sum() == 50_000
    np.testing.assert_array_equal(plan.ends[plan.record], schedule)
    np.testing.assert_array_equal(np.cumsum(plan.lengths.reshape(-1)), plan.ends.reshape(-1))
    # A schedule from 0: a first segment of length 0 records the initial state.
    small = plan_segments([0, 3, 10], checkpoints_per_chunk=2, max_segment_steps=4)
    np.testing.assert_array_equal(small.lengths, [[0, 3], [1, 4], [2, 0]])
    np.testing.assert_array_equal(small.record, [[True, True], [False, False], [True, False]])


@pytest.mark.parametrize(
    "schedule, kwargs, name",
    [
        ([5, 3], {}, "schedule"),
        ([-1, 3], {}, "schedule"),
        ([], {}, "schedule"),
        ([0.5, 3], {}, "schedule"),
        ([1, 3], {"checkpoints_per_chunk": 0}, "checkpoints_per_chunk"),
        ([1, 3], {"max_segment_steps": 0}, "max_segment_steps"),
    ],
)
def test_plan_segments_rejects(schedule, kwargs, name):
    with pytest.raises(ValueError, match=name):
        plan_segments(schedule, **kwargs)


# ---------------------------------------------------------------------------------------------
# The engine on gradient descent on a quadratic, whose iterates are known in closed form:
# L(θ) = ½ a |θ − c|², θ_{t+1} = θ_t − η a (θ_t − c)  ⇒  θ_t = c + (1 − η a)^t (θ_0 − c).

CURVATURE = 2.0
LEARNING_RATES = np.array([0.01, 0.05, 0.1, 0.3])  # contraction 1 − ηa = 0.98, 0.9, 0.8, 0.4
NUM_STEPS = 200


class _Quadratic(NamedTuple):
    target: jax.Array  # c (dim,), shared by all runs


def _loss(theta, data: _Quadratic):
    return 0.5 * CURVATURE * jnp.sum((theta - data.target) ** 2)


def _step(state, run_inputs, data: _Quadratic):
    return optimizer_step(sgd_optimizer(), state, lambda theta: _loss(theta, data))


def _record(state, run_inputs, data: _Quadratic):
    return {"theta": state.params, "loss": _loss(state.params, data), "step": state.step}


def _initial_states(theta0):
    states = jax.vmap(lambda p: init_train_state(p, sgd_optimizer()))(jnp.asarray(theta0))
    return states._replace(opt_state=set_learning_rate(states.opt_state, LEARNING_RATES))


def _closed_form(theta0, target, steps):
    factor = (1.0 - LEARNING_RATES * CURVATURE)[:, None, None] ** np.asarray(steps)[None, :, None]
    return target + factor * (theta0 - target)[:, None, :]


def _theta0():
    return np.array([[1.0, -2.0], [3.0, 0.5], [-1.0, 4.0], [2.0, 2.0]], np.float32)


def _run_quadratic(theta0, target, schedule):
    """Gradient descent towards `target` from `theta0`, recorded at `schedule` (chunks of 4)."""
    shared = _Quadratic(jnp.asarray(target))
    return run_ensemble(
        _step,
        _record,
        _initial_states(theta0),
        schedule,
        shared=shared,
        progress=False,
        checkpoints_per_chunk=4,
    )


def test_gradient_descent_on_a_quadratic_matches_the_closed_form():
    theta0, target = _theta0(), np.array([0.5, -1.0], np.float32)
    schedule = checkpoint_schedule(NUM_STEPS, 12)
    result = _run_quadratic(theta0, target, schedule)
    np.testing.assert_array_equal(result.steps, schedule)
    assert result.records["theta"].shape == (4, schedule.size, 2)
    steps = np.broadcast_to(schedule, (4, schedule.size))
    np.testing.assert_array_equal(result.records["step"], steps)
    # Step 0: the initial state, as it was.
    np.testing.assert_array_equal(result.records["theta"][:, 0], theta0)
    expected = _closed_form(theta0, target, schedule)
    np.testing.assert_allclose(result.records["theta"], expected, rtol=1e-4, atol=1e-6)
    expected_loss = 0.5 * CURVATURE * np.sum((expected - target) ** 2, axis=-1)
    np.testing.assert_allclose(result.records["loss"], expected_loss, rtol=1e-3, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(result.final_state.step), np.full(4, NUM_STEPS))
    final = np.asarray(result.final_state.params)
    np.testing.assert_array_equal(final, result.records["theta"][:, -1])


def test_segment_splits_and_chunk_sizes_do_not_change_the_trajectory():
    theta0, data = _theta0(), _Quadratic(jnp.array([0.5, -1.0]))
    schedule = checkpoint_schedule(NUM_STEPS, 12)
    common = dict(shared=data, progress=False)
    one = run_ensemble(
        _step, _record, _initial_states(theta0), schedule, checkpoints_per_chunk=4, **common
    )
    split = run_ensemble(
        _step,
        _record,
        _initial_states(theta0),
        schedule,
        checkpoints_per_chunk=3,
        max_segment_steps=7,
        **common,
    )
    np.testing.assert_array_equal(split.steps, one.steps)
    np.testing.assert_array_equal(split.records["theta"], one.records["theta"])


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path):
    theta0, data = _theta0(), _Quadratic(jnp.array([0.5, -1.0]))
    schedule = checkpoint_schedule(NUM_STEPS, 20)
    common = dict(shared=data, progress=False, checkpoints_per_chunk=4, name="quadratic")
    fresh = run_ensemble(_step, _record, _initial_states(theta0), schedule, **common)
    store = ResultStore(tmp_path)
    seen = []

    def crash_at_chunk_two(index, state, records):
        seen.append(index)
        if index == 2:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        run_ensemble(
            _step,
            _record,
            _initial_states(theta0),
            schedule,
            store=store,
            on_chunk=crash_at_chunk_two,
            **common,
        )
    resumed = run_ensemble(
        _step,
        _record,
        _initial_states(theta0),
        schedule,
        store=store,
        on_chunk=lambda i, s, r: seen.append(i),
        **common,
    )
    assert seen[:4] == [0, 1, 2, 2]  # chunks 0, 1 loaded from disk; chunk 2 re-run after the crash
    np.testing.assert_array_equal(resumed.steps, fresh.steps)
    for name in ("theta", "loss", "step"):
        np.testing.assert_array_equal(resumed.records[name], fresh.records[name])
    np.testing.assert_array_equal(
        np.asarray(resumed.final_state.params), np.asarray(fresh.final_state.params)
    )
    # Another schedule, or a mismatched fingerprint, would relabel the saved chunks: refused.
    with pytest.raises(ValueError, match="other settings"):
        longer = checkpoint_schedule(2 * NUM_STEPS, 20)
        run_ensemble(_step, _record, _initial_states(theta0), longer, store=store, **common)
    with pytest.raises(ValueError, match="other settings"):
        run_ensemble(
            _step,
            _record,
            _initial_states(theta0),
            schedule,
            store=store,
            fingerprint={"a": 1},
            **common,
        )


def test_new_shared_data_of_the_same_shape_runs_without_recompiling(caplog):
    """Shared data are arguments, not constants: a new target reuses the compiled chunk."""
    theta0 = _theta0()
    schedule = checkpoint_schedule(NUM_STEPS, 12)
    run_ensemble(
        _step,
        _record,
        _initial_states(theta0),
        schedule,
        shared=_Quadratic(jnp.zeros(2)),
        progress=False,
        checkpoints_per_chunk=4,
    )
    target = np.array([-3.0, 7.0], np.float32)
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        result = _run_quadratic(theta0, target, schedule)
    messages = [r.getMessage() for r in caplog.records]
    compiles = [m[:80] for m in messages if "Compiling" in m and "run_chunk" in m]
    assert not compiles, compiles
    expected = _closed_form(theta0, target, schedule)
    np.testing.assert_allclose(result.records["theta"], expected, rtol=1e-4, atol=1e-5)


def test_per_run_inputs_are_vmapped_and_a_mesh_changes_nothing():
    """Run inputs (here a per-run learning rate, used directly) reach their own run only."""

    def step(theta, learning_rate, data):
        return theta - learning_rate * jax.grad(_loss)(theta, data)

    def record(theta, learning_rate, data):
        return theta

    theta0, target = _theta0(), np.array([0.5, -1.0], np.float32)
    schedule = checkpoint_schedule(50, 6, include_start=False)
    common = dict(
        run_inputs=jnp.asarray(LEARNING_RATES, jnp.float32),
        shared=_Quadratic(jnp.asarray(target)),
        progress=False,
    )
    plain = run_ensemble(step, record, jnp.asarray(theta0), schedule, **common)
    expected = _closed_form(theta0, target, schedule)
    np.testing.assert_allclose(plain.records, expected, rtol=1e-4, atol=1e-6)
    sharded = run_ensemble(step, record, jnp.asarray(theta0), schedule, mesh=grid_mesh(), **common)
    np.testing.assert_array_equal(sharded.records, plain.records)
    assert sharded.records.shape == (4, schedule.size, 2)


def test_chunk_program_is_cached_per_step_and_record_function():
    assert chunk_program(_step, _record) is chunk_program(_step, _record)
    assert chunk_program(_step, _record) is not chunk_program(_step, lambda s, r, d: s.params)


@pytest.mark.parametrize(
    "change, name",
    [
        ({"state": {"a": jnp.zeros(3), "b": jnp.zeros(4)}}, "state"),
        ({"state": jnp.zeros(())}, "state"),
        ({"run_inputs": jnp.zeros(5)}, "run_inputs"),
        ({"schedule": [3, 2]}, "schedule"),
        ({"step_fn": "step"}, "step_fn"),
        ({"record_fn": None}, "record_fn"),
        ({"checkpoints_per_chunk": 0}, "checkpoints_per_chunk"),
        ({"mesh": "all"}, "mesh"),
    ],
)
def test_run_ensemble_rejects_bad_arguments(change, name):
    arguments = dict(
        step_fn=lambda s, r, d: s,
        record_fn=lambda s, r, d: s,
        state=jnp.zeros((4, 2)),
        schedule=[1, 2],
        run_inputs=jnp.zeros(4),
        progress=False,
    )
    arguments.update(change)
    with pytest.raises(ValueError, match=name):
        run_ensemble(**arguments)
