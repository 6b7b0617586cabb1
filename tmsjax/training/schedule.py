r"""When to record checkpoints, and how a run is cut into segments and chunks.

A training run records its state at a *schedule* of steps (:func:`checkpoint_schedule`; log-spaced
by default, since the plateaus and transitions of SGD are spread over decades of steps). The engine
(:mod:`tmsjax.training.engine`) runs it as *segments* that end at every checkpoint and at least
every ``max_segment_steps`` steps, grouped a fixed number to a *chunk* (:func:`plan_segments`):
every chunk then has one shape, so one compiled program runs them all whatever the spacing.
"""

from typing import NamedTuple

import numpy as np

from tmsjax.checks import check_positive_int

SPACINGS = ("log", "linear", "both")


def checkpoint_schedule(
    num_steps: int, num_checkpoints: int = 200, spacing: str = "log", *, include_start: bool = True
) -> np.ndarray:
    r"""Step indices at which to record checkpoints, always ending at `num_steps`.

    With :math:`T` = `num_steps`, :math:`m` = `num_checkpoints` and :math:`s` = `include_start`
    (1 when step 0, the initial state, is a checkpoint):

    - ``"log"``: :math:`\{0\}^{s} \cup \mathrm{round}(\mathrm{geomspace}(1, T, m - s))`, so each
      decade of training gets the same number of checkpoints;
    - ``"linear"``: :math:`\mathrm{round}(\mathrm{linspace}(0, T, m + 1 - s))`, without 0 unless
      `s`;
    - ``"both"``: the union of the two.

    Rounding merges duplicates among the first log steps, so there can be fewer than `m` entries per
    spacing. ``include_start=False`` gives the schedules of the detector task families (all steps
    ≥ 1); the default, those of the SGD ensembles.

    Args:
      num_steps: total number of training steps T.
      num_checkpoints: at most this many checkpoints per spacing (≥ 2: the first and the last).
      spacing: "log", "linear" or "both".
      include_start: whether step 0 (the initial state) is a checkpoint.

    Returns:
      Sorted unique int64 steps in [0, num_steps] ([1, num_steps] without the start).

    Raises:
      ValueError: naming `num_steps`, `num_checkpoints` or `spacing`.
    """
    num_steps = check_positive_int("num_steps", num_steps)
    num_checkpoints = check_positive_int("num_checkpoints", num_checkpoints)
    if num_checkpoints < 2:
        raise ValueError(
            f"num_checkpoints must be at least 2 (the first and the last), got {num_checkpoints}"
        )
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    start = int(bool(include_start))
    parts = [np.array([0, num_steps])[1 - start :]]
    if spacing in ("log", "both"):
        parts.append(np.round(np.geomspace(1, num_steps, num_checkpoints - start)))
    if spacing in ("linear", "both"):
        parts.append(np.round(np.linspace(0, num_steps, num_checkpoints + 1 - start))[1 - start :])
    return np.unique(np.concatenate(parts).astype(np.int64))


class SegmentPlan(NamedTuple):
    """How a run is cut into chunks of segments (host numpy arrays, shape (num_chunks, per_chunk)).

    Attributes:
      lengths: steps in each segment (int32; 0 for padding).
      ends: the step at the end of each segment (int64).
      record: whether that end is a requested checkpoint (segment ends added only to bound a
        segment's length, and padding, are dropped from the output).
    """

    lengths: np.ndarray
    ends: np.ndarray
    record: np.ndarray


def check_schedule(schedule) -> np.ndarray:
    """The schedule as int64 steps; raises unless it is non-empty, strictly increasing and ≥ 0."""
    schedule = np.asarray(schedule)
    if schedule.dtype.kind not in "iu" and not (
        schedule.dtype.kind == "f" and np.all(np.isfinite(schedule)) and np.all(schedule % 1 == 0)
    ):
        raise ValueError(f"schedule must hold integer steps, got dtype {schedule.dtype}")
    schedule = schedule.astype(np.int64)
    if (
        schedule.ndim != 1
        or schedule.size == 0
        or np.any(np.diff(schedule) <= 0)
        or schedule[0] < 0
    ):
        raise ValueError("schedule must be a non-empty strictly increasing sequence of steps >= 0")
    return schedule


def plan_segments(
    schedule, *, checkpoints_per_chunk: int = 16, max_segment_steps: int = 10_000
) -> SegmentPlan:
    """Cuts [0, schedule[-1]] into segments ending at each checkpoint and every `max_segment_steps`.

    A schedule that starts at 0 gives a first segment of length 0: the initial state is a
    checkpoint. Segments are grouped `checkpoints_per_chunk` to a chunk, the last one padded with
    zero-length segments, so all chunks have one shape (one compile) and bounded output.

    Args:
      schedule: checkpoint steps, strictly increasing, ≥ 0 (e.g. :func:`checkpoint_schedule`).
      checkpoints_per_chunk: segments per chunk (bounds a chunk's output).
      max_segment_steps: at most this many steps between two segment ends (bounds a chunk's time).

    Returns:
      A :class:`SegmentPlan` with ``ends[record] == schedule``.

    Raises:
      ValueError: naming `schedule`, `checkpoints_per_chunk` or `max_segment_steps`.
    """
    schedule = check_schedule(schedule)
    per_chunk = check_positive_int("checkpoints_per_chunk", checkpoints_per_chunk)
    max_segment_steps = check_positive_int("max_segment_steps", max_segment_steps)
    num_steps = int(schedule[-1])
    splits = np.arange(max_segment_steps, num_steps, max_segment_steps, dtype=np.int64)
    ends = np.union1d(schedule, splits)
    lengths = np.diff(np.concatenate([[0], ends]))
    record = np.isin(ends, schedule)
    pad = -len(ends) % per_chunk
    ends = np.concatenate([ends, np.full(pad, num_steps)])
    lengths = np.concatenate([lengths, np.zeros(pad, np.int64)])
    record = np.concatenate([record, np.zeros(pad, bool)])
    shape = (-1, per_chunk)
    return SegmentPlan(
        lengths.reshape(shape).astype(np.int32), ends.reshape(shape), record.reshape(shape)
    )


__all__ = ["SPACINGS", "SegmentPlan", "checkpoint_schedule", "check_schedule", "plan_segments"]
