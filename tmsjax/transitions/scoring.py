r"""Scoring transition detectors honestly: per-run counts, the covering metric, a train/held-out
split of seeds, selection on the training half, and bootstrap intervals on the held-out half.

Metrics, per family, on a set of runs (live runs have true transitions, null runs none):

- **F1 with a margin in log-steps**: detections and true transitions are matched one-to-one when
  :math:`|\log_{10}d - \log_{10}t| \le \tau` (:func:`tmsjax.transitions.changepoints.match_events`),
  and precision :math:`P = \sum_r M_r/\sum_r|D_r|`, recall :math:`R = \sum_r M_r/\sum_r|T_r|` and
  :math:`F_1 = 2PR/(P+R)` are pooled over live runs (micro-averaged). TCPDBench (van den Burg &
  Williams 2020) also counts the series' start as a change point in both sets, which gives a
  detector that finds nothing a precision of 1; here the start is not counted.
- **Covering** (TCPDBench; Arbelaez et al. 2011): the true change points cut the scoring window
  into segments :math:`\mathcal G`, the detected ones into :math:`\mathcal G'`, and

  .. math:: C(\mathcal G', \mathcal G) = \frac1{|W|}\sum_{A\in\mathcal G} |A|
            \max_{A'\in\mathcal G'} J(A, A'), \qquad J(A, A') = \frac{|A\cap A'|}{|A\cup A'|},

  with lengths :math:`|\cdot|` in decades of steps (the window in :math:`\log_{10}` step, where the
  detectors work). It is 1 for a perfect segmentation; on a null run (one true segment) it is the
  longest detected segment's share of the window, so false alarms lower it.
- **False alarms per null run**: every detection on a null run.

Honest selection: :func:`split_runs` halves the live and the null runs at random into training and
held-out seeds; a detector's settings (and the probe) are chosen by :func:`selection_score` on the
training half only, and :func:`bootstrap` gives percentile intervals on the held-out half by
resampling runs (live and null runs separately) with replacement.

References:
  van den Burg, Williams, "An evaluation of change point detection algorithms" (2020),
  arXiv:2003.06222 (TCPDBench: F1 with a margin and covering). Arbelaez, Maire, Fowlkes, Malik,
  "Contour detection and hierarchical image segmentation", TPAMI 2011 (covering). Efron, Tibshirani,
  "An introduction to the bootstrap" (1993) (percentile intervals).
"""

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from tmsjax.transitions.changepoints import Detection, match_events, pooled_f1

#: Metrics of :func:`summarise` and :func:`bootstrap`, in order.
METRICS = ("f1", "precision", "recall", "covering", "false_alarms_per_null_run")


class RunCounts(NamedTuple):
    """Per-run ingredients of every metric (one entry per run).

    Attributes:
      matched: matched pairs within the tolerance.
      detected: detections in the run.
      true: true transitions in the run.
      covering: :func:`covering` of the run.
    """

    matched: np.ndarray
    detected: np.ndarray
    true: np.ndarray
    covering: np.ndarray


def _steps_of(d) -> np.ndarray:
    return np.asarray(d.steps if isinstance(d, Detection) else d, dtype=float).reshape(-1)


def _check_window(window):
    if window is None or len(window) != 2 or not (0 < float(window[0]) < float(window[1])):
        raise ValueError(f"window must be a (low, high) pair with 0 < low < high, got {window!r}")
    return np.log10(float(window[0])), np.log10(float(window[1]))


def _segments(points: np.ndarray, low: float, high: float) -> np.ndarray:
    inside = np.sort(points[(points > low) & (points < high)])
    bounds = np.concatenate([[low], np.unique(inside), [high]])
    return np.stack([bounds[:-1], bounds[1:]], axis=1)


def covering(detected, true, window) -> float:
    r"""TCPDBench's covering of the true segmentation by the detected one, in log-step.

    .. math:: C = \frac1{|W|}\sum_{A\in\mathcal G}|A|\max_{A'\in\mathcal G'}
              \frac{|A\cap A'|}{|A\cup A'|}

    Args:
      detected: detected transition steps (array or :class:`Detection`).
      true: true transition steps.
      window: (low, high) steps; points outside it are ignored.

    Returns:
      C in [0, 1] (1: the detected segments are the true ones).

    Examples:
      >>> covering([100], [100], (10, 1000))
      1.0
      >>> covering([], [100], (10, 1000))  # one segment covering two halves: J = 1/2 each
      0.5
    """
    low, high = _check_window(window)
    truth = _segments(np.log10(_steps_of(true)), low, high)
    found = _segments(np.log10(_steps_of(detected)), low, high)
    overlap = np.clip(
        np.minimum(truth[:, None, 1], found[None, :, 1])
        - np.maximum(truth[:, None, 0], found[None, :, 0]),
        0.0,
        None,
    )
    lengths_true = truth[:, 1] - truth[:, 0]
    lengths_found = found[:, 1] - found[:, 0]
    union = lengths_true[:, None] + lengths_found[None, :] - overlap
    jaccard = overlap / union
    return float(np.sum(lengths_true * jaccard.max(axis=1)) / (high - low))


def run_counts(
    detected: Sequence, true: Sequence, window, tolerance: float, *, with_covering: bool = True
) -> RunCounts:
    """Matched pairs, detections, true transitions and covering of every run.

    Args:
      detected: per run, detected steps (arrays or :class:`Detection`).
      true: per run, true transition steps (empty on null runs).
      window: the scoring window (low, high) in steps.
      tolerance: the margin τ in decades.
      with_covering: False leaves covering NaN (a selection over many candidates needs only F1
        and false alarms, and covering is the costly part).
    """
    if len(detected) != len(true):
        raise ValueError(
            f"detected and true must have one entry per run, got {len(detected)} and {len(true)}"
        )
    if not (tolerance >= 0):
        raise ValueError(f"tolerance must be non-negative (decades), got {tolerance!r}")
    _check_window(window)
    found = [_steps_of(d) for d in detected]
    truth = [_steps_of(t) for t in true]
    return RunCounts(
        np.array([match_events(d, t, tolerance) for d, t in zip(found, truth)], dtype=float),
        np.array([d.size for d in found], dtype=float),
        np.array([t.size for t in truth], dtype=float),
        np.array(
            [covering(d, t, window) if with_covering else np.nan for d, t in zip(found, truth)],
            dtype=float,
        ),
    )


def _metrics(matched, detected, true, cover, null_detected) -> np.ndarray:
    """Every metric from pooled sums; the leading axes of the inputs (resamples) are kept."""
    precision, recall, f1 = pooled_f1(matched.sum(-1), detected.sum(-1), true.sum(-1))
    cover = cover.mean(-1) if cover.shape[-1] else np.full(f1.shape, np.nan)
    alarms = null_detected.mean(-1) if null_detected.shape[-1] else np.full(f1.shape, np.nan)
    return np.stack([f1, precision, recall, cover, alarms], axis=-1)


def _split_live(counts: RunCounts, is_null):
    is_null = np.asarray(is_null, dtype=bool)
    if is_null.shape != counts.matched.shape:
        raise ValueError(
            f"is_null must have one entry per run ({counts.matched.size}), got {is_null.shape}"
        )
    live = ~is_null
    return live, is_null


def summarise(counts: RunCounts, is_null) -> dict:
    """Every metric of :data:`METRICS` on these runs (NaN where a metric has no runs: false alarms
    without null runs)."""
    live, null = _split_live(counts, is_null)
    values = _metrics(
        counts.matched[live],
        counts.detected[live],
        counts.true[live],
        counts.covering[live],
        counts.detected[null],
    )
    return {name: float(v) for name, v in zip(METRICS, values)}


def bootstrap(
    counts: RunCounts, is_null, seed: int = 0, num_resamples: int = 2000, level: float = 0.95
) -> dict:
    """Point estimate and percentile interval of every metric, resampling runs with replacement
    (live and null runs separately, so every resample keeps the same numbers of each).

    Args:
      counts: :func:`run_counts` of the scored (held-out) runs.
      is_null: which runs are null.
      seed: seed of the resampling (numpy; the interval is a statistic, not a model input).
      num_resamples: bootstrap resamples.
      level: interval coverage.

    Returns:
      ``{metric: {"value": v, "low": a, "high": b}}`` for every metric of :data:`METRICS`.
    """
    if not (0 < level < 1):
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if (
        isinstance(num_resamples, bool)
        or int(num_resamples) != num_resamples
        or int(num_resamples) < 10
    ):
        raise ValueError(f"num_resamples must be an integer of at least 10, got {num_resamples!r}")
    num_resamples = int(num_resamples)
    live, null = _split_live(counts, is_null)
    rng = np.random.default_rng(seed)
    live_rows = np.flatnonzero(live)
    null_rows = np.flatnonzero(null)
    pick_live = live_rows[rng.integers(0, max(live_rows.size, 1), (num_resamples, live_rows.size))]
    pick_null = null_rows[rng.integers(0, max(null_rows.size, 1), (num_resamples, null_rows.size))]
    samples = _metrics(
        counts.matched[pick_live],
        counts.detected[pick_live],
        counts.true[pick_live],
        counts.covering[pick_live],
        counts.detected[pick_null],
    )
    point = summarise(counts, is_null)
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():  # an all-NaN column (no null runs) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(samples, [tail, 100 - tail], axis=0)
    return {
        name: {"value": point[name], "low": float(low[i]), "high": float(high[i])}
        for i, name in enumerate(METRICS)
    }


def split_runs(is_null, seed: int = 0, fraction: float = 0.5) -> np.ndarray:
    """A random training half of the seeds: `fraction` of the live and of the null runs (rounded
    down, at least one of each kind that exists); the rest are held out.

    Returns:
      A boolean mask, True on training runs.
    """
    if not (0 < fraction < 1):
        raise ValueError(f"fraction must lie in (0, 1), got {fraction!r}")
    is_null = np.asarray(is_null, dtype=bool)
    rng = np.random.default_rng(seed)
    train = np.zeros(is_null.shape, dtype=bool)
    for kind in (False, True):
        rows = rng.permutation(np.flatnonzero(is_null == kind))
        if rows.size:
            train[rows[: max(int(fraction * rows.size), 1)]] = True
    return train


#: The selection's false-alarm budget per null run (the goal's bound).
MAX_FALSE_ALARMS = 0.2


def selection_score(metrics: dict, max_false_alarms: float = MAX_FALSE_ALARMS) -> float:
    """What the selection maximises on the training seeds: F1 when false alarms per null run stay
    within `max_false_alarms`, otherwise F1 minus the excess (so a detector that fires on null runs
    must buy it back in F1, and with no null runs F1 alone counts).

    Args:
      metrics: a :func:`summarise` dict.
    """
    alarms = metrics["false_alarms_per_null_run"]
    excess = 0.0 if not np.isfinite(alarms) else max(alarms - max_false_alarms, 0.0)
    return float(metrics["f1"] - excess)


__all__ = [
    "MAX_FALSE_ALARMS",
    "METRICS",
    "RunCounts",
    "bootstrap",
    "covering",
    "run_counts",
    "selection_score",
    "split_runs",
    "summarise",
]
