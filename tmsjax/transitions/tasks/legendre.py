r"""Bounded Legendre polynomials (the seed's task): one network fits :math:`P_0, \dots, P_D`.

Input :math:`(x\,e_i,\ e_i)` (value in slot i plus a one-hot positional code for degree i), target
:math:`P_i(x)\,e_i`; truth: the step each degree ≥ 2 is learned (its mean squared error drops below
10 % of :math:`\mathrm{Var}\,P_i = 1/(2i+1)`). Null runs fit degrees 0 and 1 only.

References:
  Hoogland et al., "Detecting phase transitions" (2023, hackathon report; bounded Legendre
  polynomials).
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
    stack_modules,
)
from tmsjax.types import Array, Float, PRNGKey

# One optimiser object per learning rate: equal step functions across calls, so one compile.
_adam = functools.cache(optax.adam)


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


class _LegendreRun(NamedTuple):
    """What one run reads (leading run axis): its minibatch key and the highest degree it fits."""

    key: PRNGKey
    top_degree: Array


class _LegendreGrid(NamedTuple):
    """What all runs share: the evaluation grid, P_i on it (slots, 64) and Var P_i (slots,)."""

    x: Array
    table: Array
    variance: Array


@dataclasses.dataclass(frozen=True)
class _LegendreStep:
    """One Adam step on a fresh minibatch of (degree, x) (hashable: equal settings, one program)."""

    static: Any
    optimizer: optax.GradientTransformation
    batch_size: int
    max_degree: int

    def __call__(self, state: TrainState, run: _LegendreRun, grid: _LegendreGrid) -> TrainState:
        slots = self.max_degree + 1
        key_degree, key_x = jax.random.split(jax.random.fold_in(run.key, state.step))
        degree = jax.random.randint(key_degree, (self.batch_size,), 0, run.top_degree + 1)
        x = jax.random.uniform(key_x, (self.batch_size,), minval=-1.0, maxval=1.0)
        values = jnp.take_along_axis(legendre_table(self.max_degree, x), degree[None], 0)[0]
        targets = jax.nn.one_hot(degree, slots) * values[:, None]
        data = (_legendre_inputs(degree, x, slots), targets)

        def loss(params):
            return _legendre_loss(eqx.combine(params, self.static), data)

        return optimizer_step(self.optimizer, state, loss)


@dataclasses.dataclass(frozen=True)
class _LegendreRecord:
    """Checkpoint: parameters, loss and relative error over the run's degrees, error per degree."""

    static: Any
    max_degree: int

    def __call__(self, state: TrainState, run: _LegendreRun, grid: _LegendreGrid):
        slots = self.max_degree + 1
        model = eqx.combine(state.params, self.static)

        def degree_error(i):
            inputs = _legendre_inputs(jnp.full(grid.x.shape, i), grid.x, slots)
            targets = jax.nn.one_hot(jnp.full(grid.x.shape, i), slots) * grid.table[i][:, None]
            return jnp.mean(jnp.sum((jax.vmap(model)(inputs) - targets) ** 2, -1))

        errors = jax.vmap(degree_error)(jnp.arange(slots))
        used = jnp.arange(slots) <= run.top_degree
        relative = errors / grid.variance
        loss = jnp.sum(errors * used) / jnp.sum(used)
        return state.params, loss, jnp.sum(relative * used) / jnp.sum(used), errors


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

    An input is :math:`(x\,e_i, e_i)` for a degree i uniform in {0..D} and x ~ U[−1, 1]; the target
    is :math:`P_i(x)\,e_i` (D + 1 outputs). Higher degrees are harder and should be learned later.
    Degree i is *learned* at the first checkpoint where its mean squared error (on 64 fixed points)
    drops below `learned_fraction` × Var P_i = `learned_fraction`/(2i + 1); the truth is those steps
    for i ≥ 2. Null runs fit degrees 0 and 1 only (max_degree 1 on the same network shape).

    λ̂ data (one set per run): (D + 1) × 64 points on a grid of x, split equally among the degrees
    the run fits (0..D for live runs, 0..1 for null runs), sorted by degree: a null run is never
    asked about degrees it does not train on.

    Returns:
      :class:`TaskRuns` (metric: mean over degrees of error / Var P_i).
    """
    num_runs = check_positive_int("num_runs", num_runs)
    num_null = check_num_null(num_null)
    num_steps = check_positive_int("num_steps", num_steps)
    batch_size = check_positive_int("batch_size", batch_size)
    window = check_window(window, num_steps)
    max_degree = check_positive_int("max_degree", max_degree)
    if max_degree < 2:
        raise ValueError(
            f"max_degree must be at least 2 (degrees 0, 1 are the null task), got {max_degree}"
        )
    if not (0 < learned_fraction <= 1):
        raise ValueError(f"learned_fraction must lie in (0, 1], got {learned_fraction!r}")
    total = num_runs + num_null
    slots = max_degree + 1
    key_model, key_train = jax.random.split(key)
    arrays, static = stack_modules(
        lambda k: eqx.nn.MLP(2 * slots, slots, hidden, 2, activation=jnp.tanh, key=k),
        jax.random.split(key_model, total),
    )
    optimizer = _adam(learning_rate)
    degrees_per_run = jnp.asarray(np.where(np.arange(total) < num_runs, max_degree, 1), jnp.int32)
    points = jnp.linspace(-1.0, 1.0, 64)
    variance = 1.0 / (2 * jnp.arange(slots) + 1.0)
    grid = _LegendreGrid(points, legendre_table(max_degree, points), variance)
    states = TrainState(arrays, jax.vmap(optimizer.init)(arrays), jnp.zeros(total, jnp.int32))
    runs = _LegendreRun(jax.random.split(key_train, total), degrees_per_run)
    schedule = checkpoint_schedule(num_steps, num_checkpoints, include_start=False)
    result = run_ensemble(
        _LegendreStep(static, optimizer, batch_size, max_degree),
        _LegendreRecord(static, max_degree),
        states,
        schedule,
        run_inputs=runs,
        shared=grid,
        name="legendre",
        progress=False,
    )
    params, train_loss, metric, errors = result.records
    learned_steps, transitions = [], []
    variance_np = np.asarray(grid.variance)
    for run in range(total):
        top = max_degree if run < num_runs else 1
        learned = []
        for i in range(top + 1):
            threshold = learned_fraction * variance_np[i]
            learned.append(first_crossing(schedule, errors[run, :, i], threshold, above=False))
        learned_steps.append(np.asarray(learned))
        transitions.append(in_window(learned[2:], window) if run < num_runs else np.zeros(0))
    num_rows = slots * points.size
    inputs, targets = [], []
    for top in np.asarray(degrees_per_run):
        # Equal blocks of rows, sorted by degree.
        degree = (np.arange(num_rows) * (top + 1)) // num_rows
        blocks = [np.linspace(-1.0, 1.0, np.sum(degree == i)) for i in range(top + 1)]
        x = np.concatenate(blocks).astype(np.float32)
        degree_j, x_j = jnp.asarray(degree), jnp.asarray(x)
        inputs.append(_legendre_inputs(degree_j, x_j, slots))
        values = jnp.take_along_axis(legendre_table(max_degree, x_j), degree_j[None], 0)[0]
        targets.append(jax.nn.one_hot(degree_j, slots) * values[:, None])
    return TaskRuns(
        "legendre",
        schedule,
        params,
        np.asarray(train_loss),
        np.asarray(metric),
        tuple(transitions),
        {"learned_by_degree": tuple(learned_steps)},
        np.arange(total) >= num_runs,
        window,
        PartitionedLoss(_legendre_loss, static),
        (jnp.stack(inputs), jnp.stack(targets)),
        num_rows,
        True,
    )


__all__ = [
    "legendre_table",
    "legendre_runs",
]
