"""Can phase transitions be detected from the weights alone, cheaply? Detectors chosen on training
seeds and scored on held-out seeds, with bootstrap intervals.

Question: Hoogland et al.'s hackathon seed ("Detecting phase transitions", 2023) stopped at "not
yet" for lack of tasks with known transitions. Here every task family of
:data:`tmsjax.transitions.tasks.FAMILIES` (graduated digits, modular-addition grokking with
Omnigrok's α, bounded Legendre polynomials, and the transformer when registered) plus the TMS
(:mod:`tmsjax.tms.task`) comes with ground truth from behaviour and with null runs without
transitions. Probes per checkpoint:

- weight-only (:mod:`tmsjax.transitions.probes`): weight norm, log product of top singular values,
  stable rank, mean top singular value, checkpoint speed; they need no data;
- curvature (:mod:`tmsjax.transitions.curvature`, loss and a data subset): Hutchinson's Hessian
  trace, Lanczos' top eigenvalue, the free energy by perturbation (a cheap λ̂ proxy);
- λ̂ (:mod:`tmsjax.llc`) in the smoke and paper presets;
- two multivariate probes: the five weight-only series at once, and all of them with curvature.

Each probe is turned into transition steps by PELT on its rate, PELT on its level and the slope-sign
rule (:mod:`tmsjax.transitions.changepoints`), over a small grid of penalties and smoothings. Honest
selection (:mod:`tmsjax.transitions.scoring`): the live and the null runs are halved at random into
training and held-out seeds; each detector's settings, and the overall detector (probe × method),
are chosen on the training seeds only (:func:`~tmsjax.transitions.scoring.selection_score`: F1 at
0.2 decades, minus false alarms per null run beyond 0.2); every row is then scored on the held-out
seeds with percentile bootstrap 95% intervals (runs resampled): matched F1 within 0.2 decades,
precision, recall, TCPDBench's covering, false alarms per null run. The loss-only detectors (train
loss and its log, chosen the same way), evenly spaced and random guesses (as many as the training
seeds' mean number of transitions) are scored the same way.

The cpu preset runs 64 live + 32 null runs per family with λ̂ off: at 96 runs × 20 checkpoints ×
300 SGLD steps λ̂ costs ~8 min per MLP family on 2 cores (measured at 12 runs: 67-87 s), so its cheap
proxy, the free energy by perturbation, and the Hessian probes stand in for it (16 checkpoints per
run, a 256-example subset, 4 Hutchinson probes, 8 Lanczos steps, 4 antithetic pairs). Measured on
tms, digits, grokking and legendre: 235 CPU-seconds (user + sys), 11 min 40 s of wall clock on 2
cores shared at load ~12 (the process got 27% of them); on 2 idle cores that is 2 min if the work
spread over both, 4 min if it ran on one. The transformer adds 177 CPU-seconds (6 min of wall clock
at load ~10; its training is 114 of them), so the five families take ~400 CPU-seconds: 3.3 to 6.6
min on 2 idle cores.

Run: ``python -m experiments.detect_transitions --out results/detect`` (cpu preset); ``--preset
paper`` for a GPU; ``--smoke`` for a short check. Writes config.json, summary.json (``table``: the
held-out point values; ``heldout``: every row with intervals, its settings chosen on training seeds
and its training scores; ``selected``: the detector chosen per family; ``verdicts``: a
plain-language paragraph per family; ``cost``: probe seconds per checkpoint against a training
step; λ̂ health; seconds per stage), scores.npz (held-out F1 curves over tolerances),
probes_<family>.npz and figures: probes_<family>.png (one run's probes with true and detected
transitions), heldout.png (held-out F1 and false alarms with intervals per family),
f1_curves.png, weight_histogram.png.
"""

import os
import sys
import time

import jax
import numpy as np

from experiments import common
from tmsjax import llc
from tmsjax.results import ResultStore
from tmsjax.tms.task import tms_runs
from tmsjax.transitions import changepoints, curvature, probes, scoring
from tmsjax.transitions.tasks import FAMILIES as GENERIC_FAMILIES

# λ̂ settings of the MLP families (digits, grokking, legendre), picked by an llc_grid check rather
# than guessed: ε ∈ {1e-5, 3e-5, 1e-4} × γ ∈ {300, 1000, 3000} at nβ = n/log n (n = 256), 2 chains ×
# 300 steps (burn-in 75), at an early, a middle and the last checkpoint of one live run per family.
# ε = 3e-5, γ = 1000 was the only cell "ok" (no flag on any chain) at every checkpoint of legendre
# and at two of three of grokking (the third: one chain drifting); larger ε or γ fail on acceptance
# (< 0.9, "step size too large"), smaller ones drift (the localization relaxes over 2/(εγ) ≈ 70
# steps, so 100-step chains, the previous setting with ε = 1e-4, γ = 100, drifted at every
# checkpoint).
# Digits: before a live run's last class arrives its λ̂ data hold classes it has not trained on, and
# every cell escapes there (a default run excluded 188 of 240 estimates), so λ̂ skips digits.
# TMS keeps Chen et al.'s ε = 1e-3, γ = 1 on its full dataset.
LLC_MLP = dict(step_size=3e-5, localization=1000.0)
LLC_TMS = dict(step_size=1e-3, localization=1.0)
LLC_SKIP_REASON = (
    "λ̂ not computed: its data are each run's own classes, and before a live run's last class "
    "arrives they include classes the network has not trained on, so the loss is far from any "
    "minimum and the chains escape (a default run excluded 188 of 240 estimates, 8 of 12 runs left "
    "without a λ̂ series); estimates are healthy only once a run has seen all its classes"
)
LLC_OFF_REASON = (
    "λ̂ off in this preset: 96 runs × 20 checkpoints × 300 SGLD steps cost ~8 min per MLP family "
    "on 2 cores; the free energy by perturbation (a cheap λ̂ proxy) and the Hessian probes stand in"
)

# num_runs live + num_null null runs per family, per-family overrides, probe settings; PRESETS below
# holds the part a flag can override (--num-runs).
SCALES = {
    "smoke": dict(
        num_runs=4,
        num_null=2,
        llc=True,
        llc_checkpoints=6,
        llc_steps=40,
        llc_chains=1,
        curvature_checkpoints=6,
        curvature=dict(num_probes=2, num_iterations=4, num_samples=2, sigma=1e-2),
        bootstrap=200,
        families=dict(
            tms=dict(num_steps=500, num_checkpoints=24, window=(20, 500)),
            digits=dict(num_steps=200, num_checkpoints=24, window=(20, 200), hidden=16),
            grokking=dict(
                num_steps=200, num_checkpoints=24, window=(10, 200), modulus=11, hidden=32
            ),
            legendre=dict(num_steps=200, num_checkpoints=24, window=(10, 200), hidden=32),
            transformer=dict(num_steps=400, num_checkpoints=24, window=(10, 400), num_eval=32),
        ),
    ),
    "cpu": dict(
        num_runs=64,
        num_null=32,
        llc=False,
        curvature_checkpoints=16,
        curvature=dict(num_probes=4, num_iterations=8, num_samples=4, sigma=1e-2),
        bootstrap=2000,
        # Sizes for 96 runs per family on 2 cores (CPU seconds of training, measured at load ~13):
        # grokking at its defaults (p = 23, hidden 64, 10⁴ full-batch steps) did not finish in
        # 9 min; p = 17, hidden 32, embedding 8 at lr 1e-2 for 3000 steps takes 33 CPU-s and 34 of
        # 64 live runs grok in the window. Legendre at hidden 32, batch 64: 32 CPU-s (every live
        # run learns ≥ 1 degree ≥ 2 in the window; 1.0 per run against 1.9 at hidden 64).
        families=dict(
            tms=dict(num_checkpoints=60),
            digits=dict(num_checkpoints=60),
            grokking=dict(
                num_checkpoints=60,
                modulus=17,
                hidden=32,
                embed_dim=8,
                learning_rate=1e-2,
                num_steps=3000,
                window=(10, 3000),
            ),
            legendre=dict(num_checkpoints=60, hidden=32, batch_size=64),
            transformer=dict(),  # its defaults are its CPU preset
        ),
        # The transformer's curvature at 16 checkpoints on its 64 probe sequences took 1018 s of
        # wall clock (most of 416 CPU-s) at load ~12, five times its training; 8 checkpoints on 16
        # sequences cut it about eightfold.
        curvature_family=dict(transformer=dict(checkpoints=8, data=16)),
    ),
    "paper": dict(
        num_runs=128,
        num_null=64,
        llc=True,
        llc_checkpoints=100,
        llc_steps=500,
        llc_chains=4,
        curvature_checkpoints=100,
        curvature=dict(num_probes=16, num_iterations=32, num_samples=16, sigma=1e-2),
        bootstrap=5000,
        families=dict(
            tms=dict(num_steps=100_000, num_checkpoints=200, window=(100, 100_000)),
            digits=dict(
                num_steps=10_000, num_checkpoints=200, window=(100, 10_000), num_arrivals=5
            ),
            grokking=dict(num_steps=30_000, num_checkpoints=200, window=(30, 30_000)),
            legendre=dict(num_steps=30_000, num_checkpoints=200, window=(30, 30_000)),
            transformer=dict(
                vocab_size=64,
                length=24,
                min_period=4,
                max_period=10,
                model_dim=64,
                num_heads=4,
                batch_size=32,
                learning_rate=5e-3,
                num_steps=3000,
                num_checkpoints=100,
                window=(20, 3000),
                num_eval=256,
            ),
        ),
    ),
}
PRESETS = {name: {"num_runs": scale["num_runs"]} for name, scale in SCALES.items()}
TOLERANCES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
REFERENCE_TOLERANCE = 0.2  # decades: a transition found within a factor 10^0.2 ≈ 1.6 of its step
GOAL = dict(f1=0.8, false_alarms_per_null_run=0.2)
LLC_DATA = 256  # λ̂ and curvature use at most this many training examples (a probe, not a fit)
SPLIT_SEED = 0  # the seed split and the bootstrap are statistics of the runs, seeded apart

#: Probes that read only the weights; the others need the loss and data.
WEIGHT_ONLY = (*probes.SCALAR_PROBES, "multi_weights")
CURVATURE = ("hessian_trace", "top_eigenvalue", "free_energy")
LOSS_PROBES = ("loss", "log_loss")
# The detector grid: (method, fixed settings, penalties or None). PELT's penalties share one fit.
PENALTIES = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
GRID = (
    ("pelt_rate", dict(signal="rate", smoothing=0.03), PENALTIES),
    ("pelt_rate", dict(signal="rate", smoothing=0.1), PENALTIES),
    ("pelt_level", dict(signal="level", smoothing=0.03), PENALTIES),
    ("slope_sign", dict(smoothing=0.1, min_slope=0.2), None),
    ("slope_sign", dict(smoothing=0.1, min_slope=0.5), None),
    ("slope_sign", dict(smoothing=0.2, min_slope=0.2), None),
    ("slope_sign", dict(smoothing=0.2, min_slope=0.5), None),
)


def all_families() -> dict:
    return {"tms": tms_runs, **GENERIC_FAMILIES}


def add_arguments(parser):
    parser.add_argument(
        "--families",
        default=",".join(all_families()),
        help="comma-separated task families (default: every registered one)",
    )
    parser.add_argument("--no-llc", action="store_true", help="skip the λ̂ probe (the costly one)")
    parser.add_argument("--num-runs", type=int, default=None, help="live runs per family (preset)")


def check(args):
    if args.num_runs < 1:
        raise ValueError(f"--num-runs must be positive, got {args.num_runs}")


def _subset(data, size, axis):
    """At most `size` rows, evenly strided along `axis` (a legendre dataset is sorted by degree, so
    the first rows would drop the highest degrees)."""
    num_rows = jax.tree.leaves(data)[0].shape[axis]
    rows = np.unique(np.linspace(0, num_rows - 1, min(size, num_rows)).round().astype(int))
    return jax.tree.map(lambda x: np.take(np.asarray(x), rows, axis=axis), data), int(rows.size)


def llc_checkpoints(steps, window, count) -> np.ndarray:
    """Indices of the checkpoints that get λ̂ (or curvature): `count` - 1 spread evenly (in index,
    so about evenly in log-step) over the checkpoints inside the scoring window, plus the last one
    before it, so that the interpolated series covers the window and its first stretch has a left
    neighbour. Spacing them over the whole run would spend a third of the budget on steps that are
    never scored."""
    steps = np.asarray(steps)
    inside = np.flatnonzero((steps >= window[0]) & (steps <= window[1]))
    chosen = inside[
        np.unique(np.linspace(0, inside.size - 1, max(count - 1, 1)).round().astype(int))
    ]
    before = np.flatnonzero(steps < window[0])
    return np.concatenate([before[-1:], chosen]) if before.size else chosen


def _probe_all_runs(params, edges):
    return jax.vmap(lambda p: probes.probe_trajectory(p, edges))(params)


# One compiled program per parameter structure (eagerly, every probe primitive compiled on its own).
_probe_all_runs_jit = jax.jit(_probe_all_runs)


def _interpolate(steps, thin, values, keep=None, min_points=4):
    """Values at the thinned checkpoints back onto every checkpoint, linearly in log-step (one time
    axis for all probes); a run with fewer than `min_points` usable values gets NaN."""
    log_steps = np.log10(steps)
    rows = []
    for run in range(values.shape[0]):
        usable = np.isfinite(values[run]) if keep is None else keep[run] & np.isfinite(values[run])
        if usable.sum() >= min_points:
            rows.append(np.interp(log_steps, log_steps[thin][usable], values[run, usable]))
        else:
            rows.append(np.full(log_steps.shape, np.nan))
    return np.stack(rows)


def _symlog(values):
    """asinh(x / s) with s the run's median |x|: logarithmic for the orders of magnitude a Hessian
    spans over training, linear (and sign-keeping) near 0."""
    scale = np.nanmedian(np.abs(values), axis=-1, keepdims=True)
    return np.arcsinh(values / np.where(scale > 0, scale, 1.0))


def _probe_data(task, size=LLC_DATA):
    if task.family == "tms":
        return task.data, task.num_data
    return _subset(task.data, size, axis=1 if task.data_per_run else 0)


def probe_series(task, preset, key, use_llc):
    """Scalar probe series (runs, checkpoints) per probe name, histograms over time of run 0, the
    bin edges, the λ̂ health (None without λ̂) and the seconds of each probe group."""
    seconds = {}
    start = time.perf_counter()
    params = task.params
    leaves = probes.parameter_leaves(jax.tree.map(lambda x: x[0], params))
    span = max(float(np.max(np.abs(np.asarray(leaf)))) for leaf in leaves)
    edges = np.linspace(-1.1 * span, 1.1 * span, 41)
    values = jax.block_until_ready(_probe_all_runs_jit(params, edges))
    series = probes.scalar_series(values, task.steps)
    histogram = np.asarray(values.histogram[0])
    seconds["weights"] = time.perf_counter() - start

    start = time.perf_counter()
    key_curvature, key_llc = jax.random.split(key)
    data, n = _probe_data(task)
    override = preset.get("curvature_family", {}).get(task.family, {})
    curvature_data = _probe_data(task, override["data"])[0] if "data" in override else data
    count = override.get("checkpoints", preset["curvature_checkpoints"])
    thin = llc_checkpoints(task.steps, task.window, count)
    thinned = jax.tree.map(lambda x: x[:, thin], params)
    values = curvature.curvature_along_training(
        key_curvature,
        task.loss_fn,
        thinned,
        curvature_data,
        data_per_run=task.data_per_run,
        **preset["curvature"],
    )
    for name, field in zip(CURVATURE, ("trace", "top_eigenvalue", "free_energy")):
        series[name] = _symlog(_interpolate(task.steps, thin, np.asarray(getattr(values, field))))
    seconds["curvature"] = time.perf_counter() - start
    seconds["curvature_cells"] = int(task.num_runs * thin.size)

    health = None
    if not use_llc:
        health = dict(skipped=LLC_OFF_REASON, seconds=0.0)
    elif task.family in preset.get("llc_skip", ("digits",)):
        health = dict(skipped=LLC_SKIP_REASON, seconds=0.0)
    else:
        start = time.perf_counter()
        thin = llc_checkpoints(task.steps, task.window, preset["llc_checkpoints"])
        thinned = jax.tree.map(lambda x: x[:, thin], params)
        settings = LLC_TMS if task.family == "tms" else LLC_MLP
        llc_settings = llc.LLCSettings(
            **settings,
            nbeta=n / np.log(n),
            num_chains=preset["llc_chains"],
            num_steps=preset["llc_steps"],
            num_burnin=preset["llc_steps"] // 4,
        )
        result = probes.llc_probe_result(
            key_llc,
            task.loss_fn,
            thinned,
            data,
            llc_settings,
            data_per_run=task.data_per_run,
            cell_batch=None if jax.default_backend() == "gpu" else 8,
        )
        usable, counts = np.asarray(llc.usable(result)), llc.problem_counts(result)
        # Excluded estimates are interpolated over; a run with < 4 usable ones has no λ̂ series.
        series["llc"] = _interpolate(
            task.steps, thin, np.asarray(result.llc, dtype=float), keep=usable
        )
        health = dict(
            settings=llc_settings.to_dict() | {"num_data": n},
            counts=counts,
            runs_without_series=int(np.isnan(series["llc"]).all(axis=1).sum()),
            seconds=time.perf_counter() - start,
        )
        seconds["llc"] = health["seconds"]
        seconds["llc_cells"] = int(task.num_runs * thin.size)
    weights = np.stack([series[name] for name in probes.SCALAR_PROBES], axis=-1)
    series["multi_weights"] = weights
    series["multi_all"] = np.concatenate(
        [weights, np.stack([series[name] for name in CURVATURE], axis=-1)], axis=-1
    )
    series["loss"] = np.asarray(task.train_loss, dtype=float)
    series["log_loss"] = np.log10(np.maximum(series["loss"], 1e-30))
    return series, histogram, edges, health, seconds


def detect_grid(steps, values, window, multivariate):
    """Detections of one series under every setting of :data:`GRID`: a list of
    ``(method, settings, Detection)``. A multivariate series gets the PELT rows only (the slope-sign
    rule reads one series)."""
    empty = changepoints.Detection(np.zeros(0), np.zeros(0))
    finite = np.all(np.isfinite(np.reshape(values, (len(steps), -1))), axis=1)
    out = []
    for method, fixed, penalties in GRID:
        if method == "slope_sign" and multivariate:
            continue
        if finite.sum() < 4:  # e.g. no usable λ̂ on this run: nothing to detect from
            found = [empty] * (len(penalties) if penalties else 1)
        elif penalties:
            found = changepoints.detect_changepoints_penalties(
                steps, values, penalties, method="pelt", window=window, **fixed
            )
        else:
            found = [changepoints.detect_slope_sign_changes(steps, values, window=window, **fixed)]
        for index, detection in enumerate(found):
            settings = dict(fixed, penalty=penalties[index]) if penalties else dict(fixed)
            out.append((method, settings, detection))
    return out


def _row_name(probe, method):
    return f"baseline_{probe}/{method}" if probe in LOSS_PROBES else f"{probe}/{method}"


def _subset_counts(counts, rows):
    return scoring.RunCounts(*(np.asarray(field)[rows] for field in counts))


def score_family(task, series, key, preset):
    """Every row (probe/method with its settings chosen on the training seeds, and the baselines)
    scored on the held-out seeds with intervals; the detector chosen overall; detections per row."""
    train = scoring.split_runs(task.is_null, seed=SPLIT_SEED)
    held = ~train
    true = [task.transitions[r] for r in range(task.num_runs)]
    # candidates[row] = list of (settings, detections per run)
    candidates = {}
    for probe, values in series.items():
        multivariate = np.ndim(values) == 3
        per_run = [
            detect_grid(task.steps, values[r], task.window, multivariate)
            for r in range(task.num_runs)
        ]
        for index, (method, settings, _) in enumerate(per_run[0]):
            found = [per_run[r][index][2] for r in range(task.num_runs)]
            candidates.setdefault(_row_name(probe, method), []).append((settings, found))
    live_train = train & ~task.is_null
    mean_true = (
        np.mean([true[r].size for r in np.flatnonzero(live_train)]) if live_train.any() else 0
    )
    count = max(int(round(mean_true)), 1)
    keys = jax.random.split(key, task.num_runs)
    candidates["baseline_evenly_spaced"] = [
        (dict(count=count), [changepoints.evenly_spaced(task.window, count)] * task.num_runs)
    ]
    candidates["baseline_random"] = [
        (
            dict(count=count),
            [changepoints.random_events(keys[r], task.window, count) for r in range(task.num_runs)],
        )
    ]

    def heldout_row(settings, found, score):
        counts = scoring.run_counts(found, true, task.window, REFERENCE_TOLERANCE)
        trained = scoring.summarise(_subset_counts(counts, train), task.is_null[train])
        heldout = scoring.bootstrap(
            _subset_counts(counts, held),
            task.is_null[held],
            seed=SPLIT_SEED,
            num_resamples=preset["bootstrap"],
        )
        curve = [
            scoring.summarise(
                scoring.run_counts(
                    [found[r] for r in np.flatnonzero(held)],
                    [true[r] for r in np.flatnonzero(held)],
                    task.window,
                    tau,
                ),
                task.is_null[held],
            )["f1"]
            for tau in TOLERANCES
        ]
        return dict(
            heldout=heldout, settings=settings, train=trained, selection_score=score, f1_curve=curve
        )

    rows, detections, greedy = {}, {}, {}
    for name, options in candidates.items():
        best = by_f1 = None
        for settings, found in options:
            counts = scoring.run_counts(
                found, true, task.window, REFERENCE_TOLERANCE, with_covering=False
            )
            trained = scoring.summarise(_subset_counts(counts, train), task.is_null[train])
            score = scoring.selection_score(trained)
            if best is None or score > best[0]:
                best = (score, settings, found)
            if by_f1 is None or trained["f1"] > by_f1[0]:
                by_f1 = (trained["f1"], settings, found, score)
        score, settings, found = best
        rows[name] = heldout_row(settings, found, score)
        detections[name] = found
        greedy[name] = by_f1
    detectors = {k: v for k, v in rows.items() if not k.startswith("baseline")}
    weight_only = {k: v for k, v in detectors.items() if k.split("/")[0] in WEIGHT_ONLY}
    loss = {k: v for k, v in rows.items() if k.startswith("baseline_") and "loss" in k}
    pick = lambda table: max(table, key=lambda k: table[k]["selection_score"])  # noqa: E731
    # The trade-off: the detector (probe, method and settings) training F1 alone would choose,
    # false alarms ignored, scored the same way under the name "<row>@f1_only".
    chosen_by_f1 = {}
    for kind, names in (("f1_only", list(detectors)), ("loss_f1_only", list(loss))):
        name = max(names, key=lambda k: greedy[k][0])
        _, settings, found, score = greedy[name]
        rows[f"{name}@f1_only"] = heldout_row(settings, found, score)
        detections[f"{name}@f1_only"] = found
        chosen_by_f1[kind] = f"{name}@f1_only"
    selected = dict(
        any=pick(detectors),
        weight_only=pick(weight_only),
        loss_only=pick(loss),
        **chosen_by_f1,
    )
    split = dict(
        train_live=int((train & ~task.is_null).sum()),
        train_null=int((train & task.is_null).sum()),
        heldout_live=int((held & ~task.is_null).sum()),
        heldout_null=int((held & task.is_null).sum()),
        heldout_true=int(sum(true[r].size for r in np.flatnonzero(held))),
        window_decades=float(np.log10(task.window[1] / task.window[0])),
        heldout_live_with_transition=int(sum(true[r].size > 0 for r in np.flatnonzero(held))),
    )
    return rows, detections, selected, split, count


def verdict(family, rows, selected, split, cost) -> str:
    """A plain-language paragraph: what was chosen on training seeds, how it did on held-out seeds
    against the goal and the baselines, why, and at what cost."""

    def show(name, metric="f1"):
        h = rows[name]["heldout"][metric]
        return f"{h['value']:.2f} [{h['low']:.2f}, {h['high']:.2f}]"

    best, weights, loss = selected["any"], selected["weight_only"], selected["loss_only"]
    h = rows[best]["heldout"]
    f1, alarms = h["f1"], h["false_alarms_per_null_run"]
    met_f1 = f1["value"] >= GOAL["f1"]
    met_fa = (
        not np.isfinite(alarms["value"]) or alarms["value"] <= GOAL["false_alarms_per_null_run"]
    )
    text = (
        f"{family} (held out: {split['heldout_live']} live runs, "
        f"{split['heldout_live_with_transition']} of them with a transition in the window, and "
        f"{split['heldout_null']} null runs): "
        f"chosen on training seeds, {best} ({_settings_text(rows[best]['settings'])}) scores "
        f"held-out F1 {show(best)} at {REFERENCE_TOLERANCE} decades (precision "
        f"{h['precision']['value']:.2f}, recall {h['recall']['value']:.2f}, covering "
        f"{show(best, 'covering')}) with {show(best, 'false_alarms_per_null_run')} false "
        "alarms per null run. "
    )
    if split["heldout_true"] == 0:
        text += "The held-out runs have no true transition in the window, so F1 says nothing. "
    elif met_f1 and met_fa:
        text += "The goal (F1 ≥ 0.8, ≤ 0.2 false alarms) is met. "
    else:
        reasons = []
        if not met_f1:
            low = "recall" if h["recall"]["value"] < h["precision"]["value"] else "precision"
            reasons.append(
                f"F1 below 0.8 ({low} is the weaker side: "
                + (
                    "transitions are missed or found more than 0.2 decades away"
                    if low == "recall"
                    else "detections fire where nothing changes in the behaviour"
                )
                + ")"
            )
        if not met_fa:
            reasons.append(
                "null runs still train (their weights and losses move), and the detector reads "
                "that movement as transitions"
            )
        text += "The goal is not met: " + "; ".join(reasons) + ". "
    if weights != best:
        text += f"The best weight-only detector, {weights}, scores F1 {show(weights)}. "
    for kind, label in (("f1_only", "detector"), ("loss_f1_only", "loss-only detector")):
        greedy = selected[kind]
        text += (
            f"Chosen on training F1 alone (false alarms ignored), the {label} "
            f"{greedy.removesuffix('@f1_only')} ({_settings_text(rows[greedy]['settings'])}) "
            "scores "
            f"F1 {show(greedy)} with {show(greedy, 'false_alarms_per_null_run')} false alarms per "
            "null run. "
        )
    even, rand = "baseline_evenly_spaced", "baseline_random"
    text += (
        f"Baselines: loss-only {loss} F1 {show(loss)} ({show(loss, 'false_alarms_per_null_run')} "
        f"false alarms), evenly spaced {show(even)}, random {show(rand)}. "
    )
    if rows[even]["heldout"]["f1"]["value"] >= f1["value"] and split["heldout_true"] > 0:
        text += (
            f"Evenly spaced guesses do at least as well: {split['window_decades']:.1f} decades of "
            f"window hold {split['heldout_true'] / max(split['heldout_live'], 1):.1f} transitions "
            f"per live run, so ±{REFERENCE_TOLERANCE} decades around a few even guesses already "
            "covers most of where transitions can be (see the tighter tolerances in "
            "f1_curves.png). "
        )
    margin = f1["low"] - rows[loss]["heldout"]["f1"]["high"]
    behind = rows[loss]["heldout"]["f1"]["low"] - f1["high"]
    text += (
        "The chosen detector beats the loss with non-overlapping intervals. "
        if margin > 0
        else "The loss does better, with non-overlapping intervals. "
        if behind > 0
        else "Its interval overlaps the loss-only one: no clear difference. "
    )
    probe = best.split("/")[0]
    if probe in WEIGHT_ONLY:
        text += "Cost: weight-only, no data; " + cost["weights_text"] + "."
    else:
        text += "Cost: needs the loss on a data subset; " + cost["curvature_text"] + "."
    return text


def _settings_text(settings):
    return ", ".join(f"{k} {v}" for k, v in settings.items())


def plot_family(store, task, series, rows, detections, run):
    import matplotlib.pyplot as plt

    names = ["loss", "metric", *[n for n in series if n not in LOSS_PROBES and "multi" not in n]]
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.4 * len(names)), sharex=True)
    for ax, name in zip(axes, names):
        values = task.metric[run] if name == "metric" else series[name][run]
        ax.plot(task.steps, values, color="tab:blue", lw=1.5)
        ax.set_ylabel(name.replace("_", " "), fontsize=7)
        for step in task.transitions[run]:
            ax.axvline(step, color="black", ls="--", lw=1)
        candidates = [r for r in rows if r.split("/")[0] in (name, f"baseline_{name}")]
        if candidates:  # the method chosen on training seeds for this probe
            chosen = max(candidates, key=lambda r: rows[r]["selection_score"])
            for step in detections[chosen][run].steps:
                ax.axvline(step, color="tab:red", lw=1.5, alpha=0.7)
        ax.axvspan(task.steps[0], task.window[0], color="0.9")
    axes[-1].set_xscale("log")
    axes[-1].set_xlabel("training step")
    axes[0].set_title(
        f"{task.family}, run {run}: true transitions (black dashed), detections of each probe's "
        "detector chosen on training seeds (red); grey: outside the scored window",
        fontsize=8,
    )
    store.save_figure(f"probes_{task.family}", fig)


def plot_heldout(store, heldout, selected):
    import matplotlib.pyplot as plt

    families = list(heldout)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    kinds = [
        ("chosen", lambda f: selected[f]["any"]),
        ("weight-only", lambda f: selected[f]["weight_only"]),
        ("on F1 alone", lambda f: selected[f]["f1_only"]),
        ("loss-only", lambda f: selected[f]["loss_only"]),
        ("evenly spaced", lambda f: "baseline_evenly_spaced"),
        ("random", lambda f: "baseline_random"),
    ]
    width = 0.13
    for ax, metric, title in (
        (axes[0], "f1", f"held-out F1 at {REFERENCE_TOLERANCE} decades (95% bootstrap)"),
        (axes[1], "false_alarms_per_null_run", "held-out false alarms per null run"),
    ):
        for k, (label, row_of) in enumerate(kinds):
            h = [heldout[f][row_of(f)]["heldout"][metric] for f in families]
            value = np.array([x["value"] for x in h])
            err = np.array([[x["value"] - x["low"], x["high"] - x["value"]] for x in h]).T
            ax.bar(
                np.arange(len(families)) + (k - 2.5) * width,
                value,
                width,
                yerr=err,
                label=label,
                capsize=2,
            )
        ax.set_xticks(np.arange(len(families)), families)
        ax.set_title(title, fontsize=9)
    axes[0].axhline(GOAL["f1"], color="black", ls=":", lw=1)
    axes[1].axhline(GOAL["false_alarms_per_null_run"], color="black", ls=":", lw=1)
    axes[0].set_ylim(0, 1.05)
    axes[0].legend(fontsize=7)
    store.save_figure("heldout", fig)


def plot_histogram(store, task, histogram, edges):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    image = np.log1p(histogram.T)
    ax.pcolormesh(
        task.steps, 0.5 * (edges[1:] + edges[:-1]), image, shading="nearest", cmap="magma"
    )
    for step in task.transitions[0]:
        ax.axvline(step, color="cyan", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("weight value")
    ax.set_title(
        f"{task.family}, run 0: histogram of all weight values over training (log counts); "
        "cyan: true transitions",
        fontsize=9,
    )
    store.save_figure("weight_histogram", fig)


def plot_f1_curves(store, heldout, selected):
    import matplotlib.pyplot as plt

    families = list(heldout)
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.6), squeeze=False)
    for ax, family in zip(axes[0], families):
        rows = heldout[family]
        chosen = dict.fromkeys(
            [
                selected[family]["any"],
                selected[family]["weight_only"],
                selected[family]["loss_only"],
                "baseline_evenly_spaced",
                "baseline_random",
            ]
        )
        for name in chosen:
            style = "--" if name.startswith("baseline") else "-"
            ax.plot(TOLERANCES, rows[name]["f1_curve"], style, marker="o", ms=3, label=name)
        ax.set_title(f"{family} (held-out seeds)")
        ax.set_xlabel("tolerance (decades of steps)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("matched F1")
    store.save_figure("f1_curves", fig)


# Steady-state cost per checkpoint in training steps of the same model and data (full batch),
# measured by benchmarks/probe_cost.py on 2 cores at load ~14 (ratios, so the load mostly cancels):
# TMS (18 parameters) and a digits MLP (2410 parameters).
STEADY_COST = dict(
    weights=(0.2, 2.1),  # the five weight-only probes (one SVD per layer)
    curvature=(6.3, 7.6),  # trace, top eigenvalue and free energy at the cpu settings (4 / 8 / 4)
    llc=(255.0, 730.0),  # λ̂ with one chain of 300 SGLD steps
)


def _cost(task, seconds, training_seconds):
    """Wall-clock seconds per (run, checkpoint) of each probe group against one training step of
    one run (both include compilation, which dominates at small sizes; benchmarks/probe_cost.py
    has the steady-state ratios)."""
    per_step = training_seconds / (task.num_runs * float(task.steps[-1]))
    cells = task.num_runs * task.steps.size
    weights = seconds["weights"] / cells
    curvature_cell = seconds["curvature"] / seconds["curvature_cells"]
    cost = dict(
        training_seconds_per_run_step=per_step,
        weights_seconds_per_checkpoint=weights,
        curvature_seconds_per_checkpoint=curvature_cell,
        weights_over_training_step=weights / per_step,
        curvature_over_training_step=curvature_cell / per_step,
    )
    if "llc" in seconds:
        cost["llc_seconds_per_checkpoint"] = seconds["llc"] / seconds["llc_cells"]
        cost["llc_over_training_step"] = cost["llc_seconds_per_checkpoint"] / per_step
    low, high = STEADY_COST["weights"]
    cost["weights_text"] = (
        f"{low}-{high} training steps per checkpoint in steady state (benchmarks/probe_cost.py); "
        f"here {weights * 1e3:.2f} ms per checkpoint and run, wall clock incl. compilation"
    )
    low, high = STEADY_COST["curvature"]
    llc_low, llc_high = STEADY_COST["llc"]
    cost["curvature_text"] = (
        f"{low}-{high} training steps per checkpoint in steady state (λ̂ with one 300-step chain: "
        f"{llc_low:.0f}-{llc_high:.0f}; benchmarks/probe_cost.py); here "
        f"{curvature_cell * 1e3:.1f} ms per checkpoint and run, wall clock incl. compilation"
    )
    cost["steady_state_training_steps"] = STEADY_COST
    return cost


def main(args):
    families_available = all_families()
    preset = dict(SCALES[args.preset], num_runs=args.num_runs)
    families = [f for f in args.families.split(",") if f]
    for family in families:
        if family not in families_available:
            raise ValueError(
                f"--families: unknown family {family!r}; choose from {tuple(families_available)}"
            )
    use_llc = preset["llc"] and not args.no_llc
    store = ResultStore(args.out)
    store.write_config(
        dict(
            preset=args.preset,
            families=families,
            seed=args.seed,
            llc=use_llc,
            tolerances=TOLERANCES,
            reference_tolerance=REFERENCE_TOLERANCE,
            grid=[[m, s, p] for m, s, p in GRID],
            settings={k: v for k, v in preset.items()},
        )
    )
    key = jax.random.key(args.seed)
    heldout, table, selected_all, verdicts, costs = {}, {}, {}, {}, {}
    timings, truth_summary, llc_health, splits = {}, {}, {}, {}
    total_start = time.perf_counter()
    for index, family in enumerate(families):
        start = time.perf_counter()
        key_task, key_probe, key_score = jax.random.split(jax.random.fold_in(key, index), 3)
        task = families_available[family](
            key_task,
            num_runs=preset["num_runs"],
            num_null=preset["num_null"],
            **preset["families"].get(family, {}),
        )
        stage = {"tasks": time.perf_counter() - start}
        series, histogram, edges, health, probe_seconds = probe_series(
            task, preset, key_probe, use_llc
        )
        stage.update({k: v for k, v in probe_seconds.items() if not k.endswith("_cells")})
        mark = time.perf_counter()
        rows, detections, selected, split, count = score_family(task, series, key_score, preset)
        stage["scoring"] = time.perf_counter() - mark
        costs[family] = _cost(task, probe_seconds, stage["tasks"])
        heldout[family] = rows
        selected_all[family] = selected
        splits[family] = split
        table[family] = {
            name: {
                "f1": r["heldout"]["f1"]["value"],
                "precision": r["heldout"]["precision"]["value"],
                "recall": r["heldout"]["recall"]["value"],
                "covering": r["heldout"]["covering"]["value"],
                "false_positives_per_null_run": r["heldout"]["false_alarms_per_null_run"]["value"],
            }
            for name, r in rows.items()
        }
        verdicts[family] = verdict(family, rows, selected, split, costs[family])
        if health:
            llc_health[family] = health
        truth_summary[family] = dict(
            window=task.window,
            transitions_per_run=[np.asarray(t).tolist() for t in task.transitions],
            is_null=task.is_null.tolist(),
            baseline_count=count,
            events={
                k: [np.asarray(v, dtype=float).tolist() for v in runs]
                for k, runs in task.events.items()
                if k != "labels"
            },
        )
        store.save_arrays(
            f"probes_{family}",
            steps=task.steps,
            metric=task.metric,
            is_null=task.is_null,
            **{k: v for k, v in series.items()},
        )
        live = np.flatnonzero(~task.is_null)
        run = int(live[np.argmax([task.transitions[r].size for r in live])]) if live.size else 0
        plot_family(store, task, series, rows, detections, run)
        if family == families[0]:
            plot_histogram(store, task, histogram, edges)
        stage["total"] = time.perf_counter() - start
        timings[family] = stage
        print(
            f"[{family}] "
            + ", ".join(f"{k} {v:.1f}s" for k, v in stage.items())
            + f"; live runs with a transition: "
            f"{sum(task.transitions[r].size > 0 for r in live)}/{live.size}",
            flush=True,
        )
        print(verdicts[family], flush=True)
    plot_heldout(store, heldout, selected_all)
    plot_f1_curves(store, heldout, selected_all)
    store.save_arrays(
        "scores",
        tolerances=np.asarray(TOLERANCES),
        **{
            f"{f}__{d}".replace("/", "__"): np.asarray(r["f1_curve"])
            for f, rows in heldout.items()
            for d, r in rows.items()
        },
    )
    timings["total"] = time.perf_counter() - total_start
    store.write_summary(
        dict(
            reference_tolerance_decades=REFERENCE_TOLERANCE,
            goal=GOAL,
            table=table,
            heldout=heldout,
            selected=selected_all,
            split=splits,
            verdicts=verdicts,
            findings=" ".join(verdicts.values()),
            cost=costs,
            truth=truth_summary,
            llc_health=llc_health,
            seconds=timings,
        )
    )
    print(format_table(heldout, selected_all))
    return table


def format_table(heldout, selected) -> str:
    """Markdown: per family, the chosen detectors and the baselines with held-out intervals."""
    lines = [
        "| family | row | chosen on training as | held-out F1 [95%] | false alarms/null [95%] | "
        "covering |",
        "|---|---|---|---|---|---|",
    ]
    for family, rows in heldout.items():
        picks = selected[family]
        named = [
            (picks["any"], "chosen detector"),
            (picks["weight_only"], "best weight-only"),
            (picks["f1_only"], "chosen on F1 alone"),
            (picks["loss_only"], "loss-only baseline"),
            (picks["loss_f1_only"], "loss-only on F1 alone"),
            ("baseline_evenly_spaced", "evenly spaced"),
            ("baseline_random", "random"),
        ]
        for name, role in named:
            h = rows[name]["heldout"]

            def cell(metric):
                return f"{h[metric]['value']:.2f} [{h[metric]['low']:.2f}, {h[metric]['high']:.2f}]"

            lines.append(
                f"| {family} | {name} | {role} | {cell('f1')} | "
                f"{cell('false_alarms_per_null_run')} | {h['covering']['value']:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    common.run_module(sys.modules[__name__])
