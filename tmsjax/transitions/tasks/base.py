r"""What every detector task family shares: the :class:`TaskRuns` record and ground-truth helpers.

A family trains many seeds at once on the training engine
(:func:`tmsjax.training.engine.run_ensemble`: one jitted, vmapped program; checkpoints at log-spaced
steps from :func:`~tmsjax.training.schedule.checkpoint_schedule` without step 0) and returns a
:class:`TaskRuns`: stacked checkpoints, losses, a task metric, the ground-truth transition steps of
each run inside a scoring window, and which runs are null (no transition in the window by
construction). The families live one per file beside this one (digits, grokking, legendre); the TMS
family lives in the TMS wing (:mod:`tmsjax.tms.task`). All data are offline.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tmsjax.types import PRNGKey, PyTree


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
      data: the dataset `loss_fn` takes for λ̂: one shared set (TMS), or with `data_per_run` one set
        per run (a leading run axis on every leaf) covering only what that run trains on (digits:
        its classes; grokking: its split and labels; Legendre: its degrees).
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


def first_crossing(steps, series, threshold: float, *, after=None, above: bool = True) -> float:
    """The first checkpoint step (after `after`, if given) where `series` crosses `threshold`;
    NaN if never."""
    steps = np.asarray(steps)
    series = np.asarray(series)
    if steps.ndim != 1 or series.shape != steps.shape:
        raise ValueError(
            "series must have one value per step, got shapes steps "
            f"{steps.shape} and series {series.shape}"
        )
    hit = series >= threshold if above else series <= threshold
    if after is not None:
        hit &= steps >= after
    index = np.flatnonzero(hit)
    return float(steps[index[0]]) if index.size else float("nan")


def check_num_null(num_null) -> int:
    if isinstance(num_null, bool) or int(num_null) != num_null or int(num_null) < 0:
        raise ValueError(f"num_null must be a non-negative integer, got {num_null!r}")
    return int(num_null)


def check_window(window, num_steps: int) -> tuple:
    if window is None or len(window) != 2 or not (1 <= window[0] < window[1] <= num_steps):
        raise ValueError(
            "window must be a (low, high) pair with 1 <= low < high <= "
            f"num_steps={num_steps}, got {window!r}"
        )
    return tuple(window)


def in_window(values, window) -> np.ndarray:
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    return np.sort(values[(values >= window[0]) & (values <= window[1])])


def stack_modules(make: Callable[[PRNGKey], eqx.Module], keys) -> tuple[PyTree, PyTree]:
    """Initialises one module per key; returns the stacked array part and the shared static part.

    Jitted: run eagerly, every initialiser primitive would compile on its own (dozens of small
    compiles, seconds on a loaded CPU); one program instead."""
    stacked = eqx.filter_jit(eqx.filter_vmap(make))(keys)
    return eqx.partition(stacked, eqx.is_inexact_array)


def scale_arrays(arrays: PyTree, alpha) -> PyTree:
    return jax.tree.map(lambda x: alpha * x, arrays)


def softmax_cross_entropy(model, data):
    x, y = data
    logits = jax.vmap(model)(x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


__all__ = [
    "TaskRuns",
    "check_num_null",
    "check_window",
    "first_crossing",
    "in_window",
    "scale_arrays",
    "softmax_cross_entropy",
    "stack_modules",
]
