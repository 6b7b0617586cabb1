r"""Plateaus and transitions of training runs, read against the catalogue of critical energy levels.

SGD on the TMS loss lingers near critical points (k-gons) and moves between them in short jumps, so
a loss curve against log(step) is a staircase whose treads sit at the energy levels
:math:`L(k^{\sigma^+, \sigma^-})` of :mod:`tmsjax.tms.critical` (Chen et al. 2023, §6). This module
finds the treads *without* looking at the catalogue, then compares them with it, so "the plateaus
lie on catalogue levels" is a measured fact and not true by construction.

**Detection** (per run, on the exact potential :math:`L(w_t)` at log-spaced checkpoints; the exact
potential rather than the train loss because the catalogue levels are values of L, and L_n at the
same point differs from L by O(n^{-1/2}) sampling error, ≈ 3e-3 at n = 1000):

1. *Smooth*: a running median over ``smoothing_window`` = 5 checkpoints removes single-checkpoint
   SGD spikes (on a plateau L fluctuates by ≈ 1e-4 with rare spikes of ≈ 5e-4 at lr 0.005,
   batch 20).
2. *Flat*: checkpoint t is flat when the smoothed loss changes by at most ``flat_tolerance`` = 3e-4
   between checkpoints t − ``flat_lag`` and t + ``flat_lag`` (lag 3: ≈ 40% more steps at 200 log
   checkpoints over 2·10⁵ steps). The tolerance sits above the plateau noise and below the drift of
   a slow approach (≈ 5e-4 over such a window when a 4-gon grows from radius 0.9 to 1).
3. *Long enough*: a plateau is a maximal run of flat checkpoints at steps ≥ ``min_step`` = 500 (10
   epochs: before that SGD has barely left its initialisation and every log-spaced curve looks
   flat), with at least ``min_checkpoints`` = 5 checkpoints spanning a factor
   ``min_span_ratio`` = 1.25 in steps (≈ 4 checkpoints at the default density: short enough to
   catch a phase reached late in training).
4. *Merge*: neighbouring plateaus whose median losses differ by less than ``merge_tolerance`` = 1e-3
   are one plateau broken by a noise burst (distinct catalogue levels at c = 6 are ≥ 1/144 ≈ 7e-3
   apart).

**Comparison.** A plateau's loss is the median of L over it; its level is the nearest catalogue
loss, and it is *on level* when within ``level_tolerance`` = 1e-3. Its label is that level's name
(the energy label), and, when phase ids from :mod:`tmsjax.tms.phases` are given, also the majority
geometric label over the plateau (the two are reported side by side; they can differ, e.g. a dead
bias of +0.005 makes the classifier say σ⁺ while the energy still sits on the σ⁺ = 0 level).

**Paths.** A run's plateau path is the sequence of its plateau labels with repeats collapsed; its
path prepends the initial phase, the nearest level of the loss at step 0 (the initialisations are
built near a k-gon, so this is where the run starts even though it is no plateau). Transitions are
consecutive pairs of a path; the transition graph counts them over runs.

References:
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301, §6 and Fig. 6 (SGD plateaus at k-gons).
"""

from collections import Counter
from typing import NamedTuple

import numpy as np

from tmsjax.tms.critical import critical_points

UNKNOWN = "unknown"
DIVERGED = "diverged"


class PlateauThresholds(NamedTuple):
    """Detection thresholds (see the module docstring for why each value)."""

    smoothing_window: int = 5
    flat_lag: int = 3
    flat_tolerance: float = 3e-4
    min_step: int = 500
    min_checkpoints: int = 5
    min_span_ratio: float = 1.25
    merge_tolerance: float = 1e-3
    level_tolerance: float = 1e-3


class Plateau(NamedTuple):
    """One plateau of one run.

    Attributes:
      start, stop: checkpoint indices [start, stop).
      start_step, stop_step: the steps of its first and last checkpoint.
      loss: median exact potential over the plateau.
      level_label, level_loss, level_distance: nearest catalogue level and |loss − level_loss|.
      on_level: level_distance ≤ level_tolerance.
      label: level_label when on level, else "unknown".
      phase_label: majority classifier label over the plateau (None when no phase ids were given).
      phase_fraction: fraction of the plateau's checkpoints carrying phase_label.
    """

    start: int
    stop: int
    start_step: int
    stop_step: int
    loss: float
    level_label: str
    level_loss: float
    level_distance: float
    on_level: bool
    label: str
    phase_label: str | None
    phase_fraction: float | None


class RunPath(NamedTuple):
    """A run's plateaus and phase paths.

    Attributes:
      plateaus: the detected plateaus in time order.
      initial_label: nearest level of the loss at the first checkpoint ("diverged" if non-finite).
      initial_distance: its distance to that level.
      plateau_path: plateau labels, repeats collapsed.
      path: initial_label followed by plateau_path, repeats collapsed.
      final_label: label of the final plateau when it reaches the last checkpoint, else the on-level
        nearest level of the final loss, else "unknown" ("diverged" if non-finite).
    """

    plateaus: list
    initial_label: str
    initial_distance: float
    plateau_path: tuple
    path: tuple
    final_label: str


class PlateauAnalysis(NamedTuple):
    """Plateaus, paths and transition counts of an ensemble.

    Attributes:
      runs: one RunPath per run.
      level_labels, level_losses: the catalogue levels used.
      thresholds: the PlateauThresholds used.
    """

    runs: list
    level_labels: tuple
    level_losses: np.ndarray
    thresholds: PlateauThresholds

    @property
    def plateaus(self) -> list:
        return [p for run in self.runs for p in run.plateaus]

    @property
    def fraction_on_level(self) -> float:
        """Fraction of detected plateaus whose loss lies within level_tolerance of a catalogue
        level."""
        plateaus = self.plateaus
        return float(np.mean([p.on_level for p in plateaus])) if plateaus else float("nan")

    def transition_counts(self, include_initial: bool = True) -> Counter:
        """Counts of (from, to) pairs over all runs' paths (or plateau paths)."""
        counts = Counter()
        for run in self.runs:
            path = run.path if include_initial else run.plateau_path
            counts.update(zip(path[:-1], path[1:]))
        return counts

    def path_counts(self, include_initial: bool = True) -> Counter:
        return Counter(
            " -> ".join(run.path if include_initial else run.plateau_path) for run in self.runs
        )

    def final_counts(self) -> Counter:
        return Counter(run.final_label for run in self.runs)

    def num_transitions(self, include_initial: bool = True) -> np.ndarray:
        return np.array(
            [len(run.path if include_initial else run.plateau_path) - 1 for run in self.runs]
        )

    def summary(self) -> dict:
        """A JSON-ready digest: thresholds, plateau losses vs levels, paths and transition
        graphs."""
        plateaus = self.plateaus
        per_level = {}
        for p in plateaus:
            entry = per_level.setdefault(p.level_label, {"level_loss": p.level_loss, "losses": []})
            entry["losses"].append(p.loss)
        level_table = {
            label: {
                "level_loss": entry["level_loss"],
                "num_plateaus": len(entry["losses"]),
                "median_loss": float(np.median(entry["losses"])),
                "max_abs_deviation": float(
                    np.max(np.abs(np.array(entry["losses"]) - entry["level_loss"]))
                ),
            }
            for label, entry in per_level.items()
        }
        agree = [
            p.phase_label == p.label for p in plateaus if p.phase_label is not None and p.on_level
        ]
        edge = lambda counts: {f"{a} -> {b}": n for (a, b), n in counts.most_common()}  # noqa: E731
        multi = self.num_transitions(True) >= 2
        multi_plateau = self.num_transitions(False) >= 2
        return {
            "thresholds": self.thresholds._asdict(),
            "num_runs": len(self.runs),
            "num_plateaus": len(plateaus),
            "fraction_plateaus_on_level": self.fraction_on_level,
            "plateaus_by_level": level_table,
            "off_level_plateau_losses": [p.loss for p in plateaus if not p.on_level],
            "classifier_agrees_with_level_label": float(np.mean(agree)) if agree else None,
            "path_counts": dict(self.path_counts(True).most_common()),
            "plateau_path_counts": dict(self.path_counts(False).most_common()),
            "transition_counts": edge(self.transition_counts(True)),
            "plateau_transition_counts": edge(self.transition_counts(False)),
            "final_phase_counts": dict(self.final_counts().most_common()),
            "num_runs_multi_step_path": int(multi.sum()),
            "num_runs_multi_step_plateau_path": int(multi_plateau.sum()),
        }


def energy_levels(num_features: int) -> tuple[tuple[str, ...], np.ndarray]:
    """Labels and losses of the catalogue of critical points, sorted by loss."""
    points = critical_points(num_features)
    return tuple(p.label for p in points), np.array([p.loss for p in points])


def nearest_level(loss: float, level_labels, level_losses) -> tuple[str, float, float]:
    """(label, level loss, distance) of the catalogue level nearest to `loss`."""
    index = int(np.argmin(np.abs(np.asarray(level_losses) - loss)))
    return level_labels[index], float(level_losses[index]), float(abs(level_losses[index] - loss))


def _running_median(values: np.ndarray, window: int) -> np.ndarray:
    half = window // 2
    padded = np.pad(values, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    return np.median(windows, axis=-1)


def _collapse(labels) -> tuple:
    path = []
    for label in labels:
        if not path or path[-1] != label:
            path.append(label)
    return tuple(path)


def _validate(steps, losses, thresholds):
    steps = np.asarray(steps)
    losses = np.asarray(losses, dtype=float)
    if steps.ndim != 1 or steps.size < 2 or np.any(np.diff(steps) <= 0):
        raise ValueError(
            "steps must be a strictly increasing 1-d sequence of at least 2 checkpoints"
        )
    if losses.shape[-1] != steps.size:
        raise ValueError(
            f"losses must have {steps.size} checkpoints on its last axis, got shape {losses.shape}"
        )
    if not isinstance(thresholds, PlateauThresholds):
        raise ValueError(f"thresholds must be a PlateauThresholds, got {type(thresholds).__name__}")
    for name in ("smoothing_window", "flat_lag", "min_checkpoints"):
        if getattr(thresholds, name) < 1:
            raise ValueError(f"thresholds.{name} must be at least 1")
    for name in ("flat_tolerance", "merge_tolerance", "level_tolerance"):
        if not getattr(thresholds, name) > 0:
            raise ValueError(f"thresholds.{name} must be positive")
    return steps, losses


def find_plateaus(
    steps,
    losses,
    level_labels,
    level_losses,
    *,
    phase_labels=None,
    thresholds: PlateauThresholds = PlateauThresholds(),
) -> list[Plateau]:
    """Plateaus of one run's loss curve (see the module docstring for the rules).

    Args:
      steps: checkpoint steps (T,), strictly increasing.
      losses: the exact potential at each checkpoint (T,); non-finite values are never flat.
      level_labels, level_losses: the catalogue levels (:func:`energy_levels`).
      phase_labels: optional classifier labels per checkpoint (T,) strings.
      thresholds: detection thresholds.

    Returns:
      The plateaus in time order.
    """
    steps, losses = _validate(steps, losses, thresholds)
    th = thresholds
    finite = np.isfinite(losses)
    smooth = _running_median(np.where(finite, losses, np.inf), th.smoothing_window)
    lag = th.flat_lag
    num = losses.size
    # The window shrinks to one side at the ends, so a plateau reaching the last checkpoint counts.
    index = np.arange(num)
    change = np.abs(smooth[np.minimum(index + lag, num - 1)] - smooth[np.maximum(index - lag, 0)])
    flat = (change <= th.flat_tolerance) & finite & (steps >= th.min_step)

    # Maximal runs of flat checkpoints, each grown outwards while the smoothed loss stays within
    # flat_tolerance of its median: the lagged test cannot call the first `lag` checkpoints after a
    # jump flat, and a short final plateau would otherwise be lost.
    usable = finite & (steps >= th.min_step)
    grown = []
    edges = np.diff(np.concatenate([[0], flat.astype(int), [0]]))
    for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        level = np.median(losses[start:stop])
        while (
            start > 0 and usable[start - 1] and abs(smooth[start - 1] - level) <= th.flat_tolerance
        ):
            start -= 1
        while stop < num and usable[stop] and abs(smooth[stop] - level) <= th.flat_tolerance:
            stop += 1
        if grown and start <= grown[-1][1] and abs(level - grown[-1][2]) < th.merge_tolerance:
            grown[-1][1] = max(grown[-1][1], int(stop))
        else:
            # Grown into the previous plateau at another level: the overlap belongs to that one.
            start = max(start, grown[-1][1]) if grown else start
            grown.append([int(start), int(stop), level])
    runs = [
        [start, stop]
        for start, stop, _ in grown
        if stop - start >= th.min_checkpoints
        and steps[stop - 1] >= th.min_span_ratio * steps[start]
    ]

    # Merge neighbours on the same level (a noise burst between them is no transition).
    merged = []
    for start, stop in runs:
        if (
            merged
            and abs(
                np.median(losses[start:stop]) - np.median(losses[merged[-1][0] : merged[-1][1]])
            )
            < th.merge_tolerance
        ):
            merged[-1][1] = stop
        else:
            merged.append([start, stop])

    plateaus = []
    for start, stop in merged:
        loss = float(np.median(losses[start:stop]))
        level_label, level_loss, distance = nearest_level(loss, level_labels, level_losses)
        on_level = distance <= th.level_tolerance
        phase_label = phase_fraction = None
        if phase_labels is not None:
            labels, counts = np.unique(np.asarray(phase_labels)[start:stop], return_counts=True)
            phase_label = str(labels[np.argmax(counts)])
            phase_fraction = float(counts.max() / counts.sum())
        plateaus.append(
            Plateau(
                start,
                stop,
                int(steps[start]),
                int(steps[stop - 1]),
                loss,
                level_label,
                level_loss,
                distance,
                bool(on_level),
                level_label if on_level else UNKNOWN,
                phase_label,
                phase_fraction,
            )
        )
    return plateaus


def run_path(
    steps, losses, level_labels, level_losses, *, phase_labels=None, thresholds=PlateauThresholds()
) -> RunPath:
    """Plateaus, initial phase, paths and final phase of one run (arguments as
    :func:`find_plateaus`)."""
    plateaus = find_plateaus(
        steps, losses, level_labels, level_losses, phase_labels=phase_labels, thresholds=thresholds
    )
    losses = np.asarray(losses, dtype=float)
    if np.isfinite(losses[0]):
        initial_label, _, initial_distance = nearest_level(losses[0], level_labels, level_losses)
    else:
        initial_label, initial_distance = DIVERGED, float("nan")
    plateau_path = _collapse(p.label for p in plateaus)
    path = _collapse((initial_label, *plateau_path))
    if not np.isfinite(losses[-1]):
        final_label = DIVERGED
    elif plateaus and plateaus[-1].stop == losses.size:
        final_label = plateaus[-1].label
    else:
        label, _, distance = nearest_level(losses[-1], level_labels, level_losses)
        final_label = label if distance <= thresholds.level_tolerance else UNKNOWN
    return RunPath(plateaus, initial_label, initial_distance, plateau_path, path, final_label)


def analyse_runs(
    steps,
    losses,
    *,
    num_features: int | None = None,
    levels: tuple | None = None,
    phase_labels=None,
    thresholds: PlateauThresholds = PlateauThresholds(),
) -> PlateauAnalysis:
    """Plateaus, paths, transition graph and final phases of an ensemble.

    Args:
      steps: checkpoint steps (T,).
      losses: exact potential per run and checkpoint (runs, T) (``Trajectory.population_loss``).
      num_features: c, to take the levels from the catalogue; or pass `levels`.
      levels: (labels, losses) of the energy levels, e.g. :func:`energy_levels`.
      phase_labels: optional classifier labels (runs, T) (e.g. ``classify_batch(...).labels``).
      thresholds: detection thresholds.

    Returns:
      A :class:`PlateauAnalysis`.

    Raises:
      ValueError: on inconsistent shapes, missing levels or bad thresholds.
    """
    steps, losses = _validate(steps, losses, thresholds)
    if losses.ndim != 2:
        raise ValueError(f"losses must have shape (runs, checkpoints), got {losses.shape}")
    if levels is None:
        if num_features is None:
            raise ValueError("pass num_features or levels")
        levels = energy_levels(num_features)
    level_labels, level_losses = tuple(levels[0]), np.asarray(levels[1], dtype=float)
    if len(level_labels) != level_losses.size or level_losses.size == 0:
        raise ValueError("levels must be (labels, losses) of equal non-zero length")
    if phase_labels is not None:
        phase_labels = np.asarray(phase_labels)
        if phase_labels.shape != losses.shape:
            raise ValueError(
                f"phase_labels must have the shape of losses {losses.shape}, "
                f"got {phase_labels.shape}"
            )
    runs = [
        run_path(
            steps,
            losses[r],
            level_labels,
            level_losses,
            phase_labels=None if phase_labels is None else phase_labels[r],
            thresholds=thresholds,
        )
        for r in range(losses.shape[0])
    ]
    return PlateauAnalysis(runs, level_labels, level_losses, thresholds)


__all__ = [
    "PlateauThresholds",
    "Plateau",
    "RunPath",
    "PlateauAnalysis",
    "energy_levels",
    "nearest_level",
    "find_plateaus",
    "run_path",
    "analyse_runs",
    "UNKNOWN",
    "DIVERGED",
]
