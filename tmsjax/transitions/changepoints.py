r"""Change-point detection on probe time series over log training time, and its scoring.

Training transitions happen on a log-time scale (a plateau that lasts from step 10³ to 10⁴ is as
long as one from 10⁴ to 10⁵), so every series is first resampled onto a uniform grid in
:math:`u = \log_{10}(\mathrm{step})`. Smoothing and differentiation run over the whole checkpoint
range (extended past its ends by point reflection, which keeps a straight line straight), and only
then is the signal cropped to the scoring window, so the window's edges are not mistaken for the
series' ends (where a filter bends any trend). Two detectors then find transitions:

1. **Change points** (:func:`detect_changepoints`) with ruptures' PELT or binary segmentation and
   the least-squares ("l2") cost (PELT through ruptures' C kernel implementation with the linear
   kernel, the same cost) on the *rate* :math:`\mathrm{d}\,\mathrm{probe}/\mathrm{d}u` of the
   Gaussian-smoothed, standardised series (``signal="rate"``, the default) or on the series itself
   (``signal="level"``). On the rate a transition (a burst of change) is a raised segment and a
   steady drift costs nothing, while a piecewise-constant fit of the level would cut every drift
   into steps. Boundaries closer than ``min_separation`` decades are merged into one event (the
   start and end of a short burst are one transition, reported at the burst's centre). The penalty
   is BIC-like, :math:`\mathrm{pen} = \kappa\, d\,\log T` on the standardised signal (d dimensions,
   T grid points). The confidence of an event is :math:`1 - e^{-G/\mathrm{pen}}`, with G the drop in
   cost its boundary buys (the cost of the two adjacent segments merged minus their separate costs).
2. **The slope-sign rule** (:func:`detect_slope_sign_changes`) of Hoogland et al. (2024) for λ̂:
   stage boundaries are where the slope of the smoothed series against log-step changes sign. Sign
   flips between weak stretches (whose steepest slope is below ``min_slope`` × the steepest overall)
   are ignored; the confidence is the weaker side's steepest slope over the steepest overall.

Scoring (:func:`score_detections`) matches detected to true steps one-to-one when
:math:`|\log_{10} d - \log_{10} t| \le \tau` (greedy in sorted order, which is a maximum matching
for equal-width windows on a line), sums true positives over runs, and reports precision, recall and
F1 as curves over τ. Null runs (no true transitions) score by their false positives per run.
Baselines on the same windows: evenly spaced and random guesses (:func:`evenly_spaced`,
:func:`random_events`); the loss-only baseline is :func:`detect_changepoints` on the training loss.

References:
  Killick, Fearnhead, Eckley, "Optimal detection of changepoints with a linear computational cost"
  (PELT), JASA 2012. Truong, Oudre, Vayatis, "Selective review of offline change point detection
  methods" (ruptures), Signal Processing 2020.
  Hoogland, Wang, Farrugia-Roberts, Carroll, Wei, Murfet, "The developmental landscape of in-context
  learning" (2024), arXiv:2402.02364 (stage boundaries from the slope of λ̂).
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np
import ruptures
from scipy.ndimage import gaussian_filter1d

from tmsjax.types import PRNGKey

METHODS = ("pelt", "binseg")
SIGNALS = ("rate", "level")
#: Smallest noise scale assumed on a standardised series: a series that is smooth to machine
#: precision would otherwise make any bend "significant".
_MIN_SCALE = 1e-12


class Detection(NamedTuple):
    """Transitions found in one series.

    Attributes:
      steps: the training steps of the transitions, increasing (float: they lie between
        checkpoints).
      confidence: one number in [0, 1] per transition (larger is surer).
    """

    steps: np.ndarray
    confidence: np.ndarray


class Scores(NamedTuple):
    """Matched precision/recall/F1 over a range of tolerances (micro-averaged over runs).

    Attributes:
      tolerance: tolerances τ in decades of steps (log10 units).
      precision, recall, f1: one value per tolerance.
      true_positives: matched pairs summed over runs, per tolerance.
      num_detected: detections summed over runs.
      num_true: true transitions summed over runs.
    """

    tolerance: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    true_positives: np.ndarray
    num_detected: int
    num_true: int


def _check_series(steps, values, window):
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    if steps.ndim != 1 or steps.size < 4:
        raise ValueError(
            f"steps must be a 1-d array of at least 4 checkpoints, got shape {steps.shape}"
        )
    if np.any(steps <= 0) or np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be positive and strictly increasing (log time needs step > 0)")
    if values.ndim not in (1, 2) or values.shape[0] != steps.shape[0]:
        raise ValueError(
            "values must have shape (num_checkpoints,) or (num_checkpoints, dim) "
            f"with num_checkpoints={steps.size}, got {values.shape}"
        )
    if window is None:
        window = (steps[0], steps[-1])
    low, high = float(window[0]), float(window[1])
    if not (steps[0] <= low < high <= steps[-1]):
        raise ValueError(
            f"window must satisfy steps[0] <= low < high <= steps[-1], got {window} "
            f"for steps in [{steps[0]}, {steps[-1]}]"
        )
    values = values if values.ndim == 2 else values[:, None]
    finite = np.all(np.isfinite(values), axis=1)
    if finite.sum() < 4:
        raise ValueError("values has fewer than 4 finite checkpoints")
    return steps[finite], values[finite], (low, high)


def _check_num_points(num_points, minimum: int = 2) -> int:
    if isinstance(num_points, bool) or int(num_points) != num_points or int(num_points) < minimum:
        raise ValueError(f"num_points must be an integer of at least {minimum}, got {num_points!r}")
    return int(num_points)


def log_grid(steps, values, window=None, num_points: int = 128) -> tuple[np.ndarray, np.ndarray]:
    r"""Resamples a series onto `num_points` points uniform in :math:`\log_{10}` step within
    `window`.

    Args:
      steps: checkpoint steps (positive, increasing).
      values: (num_checkpoints,) or (num_checkpoints, dim); non-finite checkpoints are dropped.
      window: (low, high) steps; default the whole range.
      num_points: grid size (at least 2).

    Returns:
      The grid in log10 steps (num_points,) and the interpolated values (num_points, dim).
    """
    num_points = _check_num_points(num_points)
    steps, values, (low, high) = _check_series(steps, values, window)
    grid = np.linspace(np.log10(low), np.log10(high), num_points)
    log_steps = np.log10(steps)
    return grid, np.stack([np.interp(grid, log_steps, v) for v in values.T], axis=1)


def _smoothed_on_window(steps, values, window, num_points, smoothing, derivative):
    """The series (or its derivative in log10 step) on `num_points` log-grid points inside `window`,
    smoothed over the *whole* checkpoint range and only then cropped to the window.

    Smoothing or differentiating on the window alone treats the window's edges as the series' ends,
    where a Gaussian filter flattens any trend and one-sided differences change, so a smooth series
    gets change points at the edges. Here the grid (same spacing as the window's) covers every
    finite checkpoint, and beyond the last one the series is extended by point reflection
    (:math:`v(u_0 - t) = 2v(u_0) - v(u_0 + t)`), which keeps a straight line straight under the
    filter.
    """
    steps, values, (low, high) = _check_series(steps, values, window)
    log_low, log_high = np.log10(low), np.log10(high)
    spacing = (log_high - log_low) / (num_points - 1)
    first, last = np.log10(steps[0]), np.log10(steps[-1])
    before = int(np.floor((log_low - first) / spacing + 1e-9))
    after = int(np.floor((last - log_high) / spacing + 1e-9))
    grid = log_low + spacing * np.arange(-before, num_points + after)
    grid = np.clip(grid, first, last)  # rounding guard at the range ends
    log_steps = np.log10(steps)
    resampled = np.stack([np.interp(grid, log_steps, v) for v in values.T], axis=1)
    # `smoothing` is in decades, so results do not depend on T
    sigma = max(smoothing / spacing, 0.0)
    if sigma > 0:
        pad = min(int(np.ceil(4 * sigma)) + 1, resampled.shape[0] - 1)
        head = 2 * resampled[:1] - resampled[1 : pad + 1][::-1]
        tail = 2 * resampled[-1:] - resampled[-pad - 1 : -1][::-1]
        padded = np.concatenate([head, resampled, tail])
        resampled = gaussian_filter1d(padded, sigma, axis=0, mode="nearest")[
            pad : pad + resampled.shape[0]
        ]
    if derivative:
        resampled = np.gradient(resampled, spacing, axis=0)
    crop = slice(before, before + num_points)
    return grid[crop], resampled[crop]


def _standardise(signal: np.ndarray) -> np.ndarray:
    centred = signal - np.median(signal, axis=0)
    scale = np.std(centred, axis=0)
    return centred / np.maximum(scale, _MIN_SCALE)


def _segment_cost(signal: np.ndarray, start: int, end: int) -> float:
    part = signal[start:end]
    return float(np.sum((part - part.mean(axis=0)) ** 2))


def detect_changepoints(
    steps,
    values,
    *,
    method: str = "pelt",
    signal: str = "rate",
    window=None,
    num_points: int = 128,
    smoothing: float = 0.03,
    penalty: float = 4.0,
    min_size: int = 3,
    min_separation: float = 0.1,
) -> Detection:
    r"""Transitions in one probe series by change-point detection over log training time.

    Args:
      steps: checkpoint steps (num_checkpoints,), positive and increasing.
      values: the probe series (num_checkpoints,) or several at once (num_checkpoints, dim), e.g.
        per-layer norms: a boundary is then a change in any of them.
      method: "pelt" (exact penalised optimum, Killick et al.) or "binseg" (binary segmentation,
        greedy).
      signal: "rate" (segment d probe / d log10 step; default) or "level" (segment the series).
      window: (low, high) steps to search; default all checkpoints.
      num_points: size of the log-step grid.
      smoothing: Gaussian smoothing width in decades before differentiating (the noise of SGD
        checkpoints otherwise dominates a derivative); 0.03 is ~1.5 grid points at 128 points over
        3 decades.
      penalty: κ in pen = κ · dim · log T on the standardised signal. With unit-variance white noise
        BIC is κ = 2; smoothing correlates the noise over a few points, so the default is twice
        that.
      min_size: fewest grid points in a segment.
      min_separation: events closer than this (decades) merge into one at their mean position.

    Returns:
      A :class:`Detection` (steps inside the window, confidence in [0, 1]).

    Raises:
      ValueError: naming the bad argument.
    """
    return detect_changepoints_penalties(
        steps,
        values,
        (penalty,),
        method=method,
        signal=signal,
        window=window,
        num_points=num_points,
        smoothing=smoothing,
        min_size=min_size,
        min_separation=min_separation,
    )[0]


def detect_changepoints_penalties(
    steps,
    values,
    penalties,
    *,
    method: str = "pelt",
    signal: str = "rate",
    window=None,
    num_points: int = 128,
    smoothing: float = 0.03,
    min_size: int = 3,
    min_separation: float = 0.1,
) -> list[Detection]:
    r""":func:`detect_changepoints` at several penalties κ at once (one smoothing, one fit): what
    a hyperparameter search over κ needs.

    Args:
      penalties: the κ values (each positive); the other arguments as in
        :func:`detect_changepoints`.

    Returns:
      One :class:`Detection` per penalty, in order.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if signal not in SIGNALS:
        raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
    penalties = [float(p) for p in np.atleast_1d(np.asarray(penalties, dtype=float))]
    if not penalties or not all(p > 0 for p in penalties):
        raise ValueError(f"penalty must be positive (one or more values), got {penalties!r}")
    num_points = _check_num_points(num_points, minimum=8)
    if int(min_size) < 1:
        raise ValueError(f"min_size must be a positive integer, got {min_size!r}")
    if not (smoothing >= 0):
        raise ValueError(f"smoothing must be non-negative (decades), got {smoothing!r}")
    if not (min_separation >= 0):
        raise ValueError(f"min_separation must be non-negative (decades), got {min_separation!r}")
    grid, smooth = _smoothed_on_window(
        steps, values, window, num_points, smoothing, derivative=signal == "rate"
    )
    prepared = _standardise(smooth)
    num, dim = prepared.shape
    if np.all(np.ptp(prepared, axis=0) < 1e-9):
        return [Detection(np.zeros(0), np.zeros(0)) for _ in penalties]
    if method == "pelt":
        # ruptures' kernel PELT with the linear kernel has exactly the "l2" cost, sum |x - mean|²,
        # and runs in C: same breaks as ``ruptures.Pelt(model="l2", jump=1)`` (checked in
        # tests/test_detect.py) at ~0.2 ms instead of ~100 ms per 128-point series.
        algorithm = ruptures.KernelCPD(kernel="linear", min_size=int(min_size))
    else:
        algorithm = ruptures.Binseg(model="l2", min_size=int(min_size), jump=1)
    algorithm.fit(prepared)
    return [
        _events(
            prepared,
            grid,
            algorithm.predict(pen=penalty * dim * np.log(num)),
            penalty * dim * np.log(num),
            signal,
            min_separation,
        )
        for penalty in penalties
    ]


def _events(prepared, grid, breaks, pen, signal, min_separation) -> Detection:
    """Events from ruptures' breaks (boundaries of a level, bursts of a rate), merged and scored."""
    bounds = np.asarray([0, *breaks], dtype=int)  # ruptures ends with num
    # Confidence of each boundary from the cost it saves over merging its two neighbouring segments.
    gains = np.array(
        [
            _segment_cost(prepared, left, right)
            - _segment_cost(prepared, left, middle)
            - _segment_cost(prepared, middle, right)
            for left, middle, right in zip(bounds[:-2], bounds[1:-1], bounds[2:])
        ]
    )
    boundary_confidence = 1.0 - np.exp(-gains / pen)
    # A break at index m sits between grid points m-1 and m.
    boundary_position = np.array([0.5 * (grid[m - 1] + grid[m]) for m in bounds[1:-1]])
    if signal == "level" or boundary_position.size == 0:
        positions, confidence = boundary_position, boundary_confidence
    else:
        positions, confidence = _bursts(
            prepared, grid, bounds, boundary_position, boundary_confidence
        )
    positions, confidence = _merge(positions, confidence, min_separation)
    return Detection(10.0**positions, confidence)


def _bursts(prepared, grid, bounds, boundary_position, boundary_confidence):
    """Events of a segmented rate: one per burst of change, not one per boundary.

    A segment whose mean speed (norm of its mean rate) exceeds that of each neighbour is a burst. An
    interior burst is reported at its centre, since its two boundaries are the start and end of one
    transition; a burst at either end of the window (a lasting change of rate, a kink in the probe)
    at its inner boundary.
    """
    speed = np.array(
        [np.linalg.norm(prepared[a:b].mean(axis=0)) for a, b in zip(bounds[:-1], bounds[1:])]
    )
    num_segments = speed.size
    positions, confidence = [], []
    for k in range(num_segments):
        left_lower = k == 0 or speed[k] > speed[k - 1]
        right_lower = k == num_segments - 1 or speed[k] > speed[k + 1]
        if not (left_lower and right_lower):
            continue
        if 0 < k < num_segments - 1:
            positions.append(0.5 * (grid[bounds[k]] + grid[bounds[k + 1] - 1]))
            confidence.append(max(boundary_confidence[k - 1], boundary_confidence[k]))
        elif k == 0:
            positions.append(boundary_position[0])
            confidence.append(boundary_confidence[0])
        else:
            positions.append(boundary_position[-1])
            confidence.append(boundary_confidence[-1])
    return np.asarray(positions, dtype=float), np.asarray(confidence, dtype=float)


def _merge(positions: np.ndarray, confidence: np.ndarray, min_separation: float):
    """Merges runs of events spaced by less than `min_separation` into their mean (max
    confidence)."""
    if positions.size == 0:
        return positions, confidence
    groups = [[0]]
    for index in range(1, positions.size):
        if positions[index] - positions[groups[-1][-1]] < min_separation:
            groups[-1].append(index)
        else:
            groups.append([index])
    return (
        np.array([positions[g].mean() for g in groups]),
        np.array([confidence[g].max() for g in groups]),
    )


def detect_slope_sign_changes(
    steps,
    values,
    *,
    window=None,
    num_points: int = 128,
    smoothing: float = 0.1,
    min_slope: float = 0.2,
) -> Detection:
    r"""Stage boundaries where the slope of the smoothed series against log-step changes sign.

    The series (one-dimensional, e.g. λ̂) is resampled on the log grid and Gaussian-smoothed with
    width `smoothing` decades; its slope :math:`s(u) = \mathrm{d}\,\mathrm{probe}/\mathrm{d}u` is
    cut into stretches of constant sign. A stretch is *strong* when :math:`\max|s|` on it reaches
    `min_slope` × :math:`\max_u|s(u)|`; weak stretches (flicker of a flat series) are dropped, and a
    boundary is reported between consecutive strong stretches of opposite sign, at the mid-point of
    the gap between them.

    Args:
      steps: checkpoint steps, positive and increasing.
      values: the series (num_checkpoints,).
      window: (low, high) steps; default all.
      num_points: size of the log-step grid.
      smoothing: Gaussian width in decades (λ̂ from short chains is noisy; 0.1 decade ≈ 4 points
        at the default grid over 3 decades).
      min_slope: strength threshold, a fraction of the steepest slope.

    Returns:
      A :class:`Detection`; confidence = min(strength of the two sides) / steepest slope.
    """
    if np.ndim(values) != 1:
        raise ValueError(
            f"values must be one-dimensional for the slope-sign rule, got shape {np.shape(values)}"
        )
    if not (0 <= min_slope < 1):
        raise ValueError(f"min_slope must lie in [0, 1), got {min_slope!r}")
    if not (smoothing >= 0):
        raise ValueError(f"smoothing must be non-negative (decades), got {smoothing!r}")
    num_points = _check_num_points(num_points)
    grid, slope = _smoothed_on_window(steps, values, window, num_points, smoothing, derivative=True)
    slope = slope[:, 0]
    steepest = np.max(np.abs(slope))
    if not steepest > 0:
        return Detection(np.zeros(0), np.zeros(0))
    sign = np.sign(slope)
    # Stretches of constant sign: (start, end) index pairs, end exclusive.
    cuts = np.flatnonzero(np.diff(sign) != 0) + 1
    starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [slope.size]])
    strong = []
    for start, end in zip(starts, ends):
        strength = np.max(np.abs(slope[start:end]))
        if sign[start] != 0 and strength >= min_slope * steepest:
            strong.append((start, end, sign[start], strength))
    positions, confidence = [], []
    for (_, end, sign_a, strength_a), (start, _, sign_b, strength_b) in zip(
        strong[:-1], strong[1:]
    ):
        if sign_a != sign_b:
            positions.append(0.5 * (grid[end - 1] + grid[start]))
            confidence.append(min(strength_a, strength_b) / steepest)
    return Detection(
        10.0 ** np.asarray(positions, dtype=float), np.asarray(confidence, dtype=float)
    )


def evenly_spaced(window, count: int) -> Detection:
    r"""Baseline: `count` guesses evenly spaced in log-step strictly inside `window`
    (confidence 0.5)."""
    low, high = _check_window(window)
    count = _check_count(count)
    fractions = np.arange(1, int(count) + 1) / (int(count) + 1)
    return Detection(
        10.0 ** (np.log10(low) + fractions * np.log10(high / low)), np.full(int(count), 0.5)
    )


def random_events(key: PRNGKey, window, count: int) -> Detection:
    r"""Baseline: `count` guesses uniform in log-step inside `window` (confidence 0.5)."""
    low, high = _check_window(window)
    count = _check_count(count)
    u = np.sort(np.asarray(jax.random.uniform(key, (int(count),)), dtype=float))
    return Detection(10.0 ** (np.log10(low) + u * np.log10(high / low)), np.full(int(count), 0.5))


def _check_count(count) -> int:
    integral = (
        isinstance(count, (int, np.integer, float, np.floating)) and float(count).is_integer()
    )
    if isinstance(count, bool) or not integral or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    return int(count)


def _check_window(window):
    if window is None or len(window) != 2:
        raise ValueError(f"window must be a (low, high) pair of steps, got {window!r}")
    low, high = float(window[0]), float(window[1])
    if not (0 < low < high):
        raise ValueError(f"window must satisfy 0 < low < high, got {window!r}")
    return low, high


def match_events(detected, true, tolerance: float) -> int:
    r"""Size of a maximum one-to-one matching of detected to true steps with
    :math:`|\log_{10} d - \log_{10} t| \le \tau`.

    Greedy over both lists in sorted order: when the earliest unmatched pair is within τ match it,
    otherwise drop the earlier of the two. For windows of equal width on a line this is optimal.
    """
    detected = np.sort(np.log10(np.asarray(detected, dtype=float).reshape(-1)))
    true = np.sort(np.log10(np.asarray(true, dtype=float).reshape(-1)))
    if not (tolerance >= 0):
        raise ValueError(f"tolerance must be non-negative, got {tolerance!r}")
    i = j = matched = 0
    while i < detected.size and j < true.size:
        if abs(detected[i] - true[j]) <= tolerance + 1e-12:
            matched, i, j = matched + 1, i + 1, j + 1
        elif detected[i] < true[j]:
            i += 1
        else:
            j += 1
    return matched


def score_detections(
    detected: Sequence, true: Sequence, tolerances=(0.05, 0.1, 0.2, 0.3, 0.5)
) -> Scores:
    r"""Matched precision, recall and F1 of detections against ground truth, as curves over τ.

    .. math:: P = \frac{\sum_r M_r(\tau)}{\sum_r |D_r|},
              \quad R = \frac{\sum_r M_r(\tau)}{\sum_r |T_r|},
              \quad F_1 = \frac{2PR}{P + R},

    with :math:`M_r(\tau)` the matched pairs of run r (:func:`match_events`). With no detections
    precision is 0 (there is nothing right), with no true events recall is 0.

    Args:
      detected: per run, detected steps (arrays or :class:`Detection`).
      true: per run, true transition steps.
      tolerances: τ values in decades.

    Returns:
      :class:`Scores`.
    """
    if len(detected) != len(true):
        raise ValueError(
            f"detected and true must have one entry per run, got {len(detected)} and {len(true)}"
        )
    detected = [
        np.asarray(d.steps if isinstance(d, Detection) else d, dtype=float).reshape(-1)
        for d in detected
    ]
    true = [np.asarray(t, dtype=float).reshape(-1) for t in true]
    tolerances = np.atleast_1d(np.asarray(tolerances, dtype=float))
    num_detected = int(sum(d.size for d in detected))
    num_true = int(sum(t.size for t in true))
    matched = np.array(
        [sum(match_events(d, t, tau) for d, t in zip(detected, true)) for tau in tolerances],
        dtype=float,
    )
    precision, recall, f1 = pooled_f1(matched, num_detected, num_true)
    return Scores(tolerances, precision, recall, f1, matched, num_detected, num_true)


def pooled_f1(matched, num_detected, num_true) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Precision :math:`M/|D|`, recall :math:`M/|T|` and :math:`F_1 = 2PR/(P + R)` from pooled
    counts (arrays broadcast); 0 where a denominator is 0 (no detections: nothing is right)."""
    matched = np.asarray(matched, dtype=float)
    num_detected = np.asarray(num_detected, dtype=float)
    num_true = np.asarray(num_true, dtype=float)
    precision = np.where(num_detected > 0, matched / np.maximum(num_detected, 1), 0.0)
    recall = np.where(num_true > 0, matched / np.maximum(num_true, 1), 0.0)
    total = precision + recall
    f1 = np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1.0), 0.0)
    return precision, recall, f1


def false_positives_per_run(detected: Sequence) -> float:
    """Mean number of detections per null run (every detection on a null run is a false
    positive)."""
    if len(detected) == 0:
        raise ValueError("detected must hold at least one null run")
    return float(np.mean([np.size(d.steps if isinstance(d, Detection) else d) for d in detected]))


__all__ = [
    "Detection",
    "Scores",
    "METHODS",
    "SIGNALS",
    "log_grid",
    "detect_changepoints",
    "detect_changepoints_penalties",
    "detect_slope_sign_changes",
    "evenly_spaced",
    "pooled_f1",
    "random_events",
    "match_events",
    "score_detections",
    "false_positives_per_run",
]
