"""Can phase transitions be detected from the weights alone? A scored benchmark with ground truth.

Question: Hoogland et al.'s hackathon seed ("Detecting phase transitions", 2023) stopped at "not
yet" for lack of tasks with known transitions. Here four task families come with ground truth
(:mod:`tmsjax.transitions.tasks.base`: TMS phase changes, graduated digits, modular-addition
grokking with Omnigrok's α, bounded Legendre polynomials) and null runs without transitions. Every
weight-only probe (:mod:`tmsjax.transitions.probes`: weight norm, log product of top singular
values, stable rank, mean top singular value, checkpoint speed, λ̂) is turned into transition steps
by each detector (:mod:`tmsjax.transitions.changepoints`: PELT on the rate, binary segmentation on
the level, the slope-sign rule), and scored by one-to-one matched F1 within a tolerance in decades
of steps, with false positives on null runs, against the loss-only, evenly spaced and random
baselines on the same runs.

λ̂ health: every λ̂ estimate carries the LLC engine's per-chain diagnostics (:mod:`tmsjax.llc`);
estimates that are not usable (:func:`tmsjax.llc.usable`: a chain blew up or escaped) are excluded
before detection, and the problems counted in summary.json's ``llc_health``
(:func:`tmsjax.llc.problem_counts`). The SGLD settings of the MLP families come from an
``llc_grid`` check (see ``LLC_MLP`` below).

Run: ``python -m experiments.detect_transitions --out results/detect`` (CPU: about 3 min of wall
clock on 2 cores shared at load ~5, most of it compiling one training and one λ̂ program per family);
``--preset paper`` for a GPU; ``--smoke`` for a short check. Writes config.json,
summary.json (the table, λ̂ health, a ``findings`` paragraph, seconds per stage), scores.npz (F1
curves), probes_<family>.npz and figures: probes_<family>.png (probes of one run with true and
detected transitions marked), f1_curves.png, weight_histogram.png (the seed's weight-value animation
as an image over time).
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
from tmsjax.transitions import changepoints, probes
from tmsjax.transitions.tasks import FAMILIES as GENERIC_FAMILIES

# λ̂ settings of the MLP families (digits, grokking, legendre), picked by an llc_grid check rather
# than guessed: ε ∈ {1e-5, 3e-5, 1e-4} × γ ∈ {300, 1000, 3000} at nβ = n/log n (n = 256), 2 chains ×
# 300 steps (burn-in 75), at an early, a middle and the last checkpoint of one live run per family.
# ε = 3e-5, γ = 1000 was the only cell "ok" (no flag on any chain) at every checkpoint of legendre
# and at two of three of grokking (the third: one chain drifting); larger ε or γ fail on acceptance
# (< 0.9, "step size too large"), smaller ones drift (the localization relaxes over 2/(εγ) ≈ 70
# steps, so 100-step chains, the previous setting with ε = 1e-4, γ = 100, drifted at every
# checkpoint).
# Digits: λ̂ data were once the full 10-class set while each run trains on only its 6 classes, so
# the loss sat far from any minimum (cross-entropy 13-25 on the unseen classes) and all 27 cells
# escaped at every checkpoint. With per-run data (each run's own classes,
# tasks.graduated_digits_runs) the same grid is healthy where the run has seen all its classes: a
# null run has 7 of 9 cells ok or only drifting at its last checkpoint, a live run's last checkpoint
# 4 ok (ε = 3e-5, γ = 1000: λ̂ ≈ 0.2). But before a live run's last arrival its λ̂ data still hold
# classes it has not trained on (the engine takes one dataset per run, not per checkpoint), and
# every cell escapes there; a default run with per-run data excluded 188 of 240 estimates and left 8
# of 12 runs without a λ̂ series. So the default preset still skips digits' λ̂ (LLC_SKIP_REASON, in
# summary.json); smoke and large compute it.
# TMS keeps Chen et al.'s ε = 1e-3, γ = 1 on its full dataset.
LLC_MLP = dict(step_size=3e-5, localization=1000.0)
LLC_TMS = dict(step_size=1e-3, localization=1.0)
LLC_SKIP_REASON = (
    "λ̂ not computed: its data are each run's own classes, and before a live run's last class "
    "arrives they include classes the network has not trained on, so the loss is far from any "
    "minimum and the chains escape (a default run excluded 188 of 240 estimates, 8 of 12 runs left "
    "without a λ̂ series); estimates are healthy only once a run has seen all its classes"
)

# num_runs live + num_null null runs per family, per-family overrides, λ̂ chain settings; PRESETS
# below holds the part a flag can override (--num-runs).
SCALES = {
    "smoke": dict(
        num_runs=2,
        num_null=1,
        llc=True,
        llc_checkpoints=6,
        llc_steps=40,
        llc_chains=1,
        families=dict(
            tms=dict(num_steps=500, num_checkpoints=24, window=(20, 500)),
            digits=dict(num_steps=200, num_checkpoints=24, window=(20, 200), hidden=16),
            grokking=dict(
                num_steps=200, num_checkpoints=24, window=(10, 200), modulus=11, hidden=32
            ),
            legendre=dict(num_steps=200, num_checkpoints=24, window=(10, 200), hidden=32),
        ),
    ),
    "cpu": dict(
        num_runs=10,
        num_null=2,
        llc=True,
        llc_checkpoints=20,
        llc_steps=300,
        llc_chains=1,
        llc_skip=("digits",),
        families=dict(
            tms=dict(num_checkpoints=80),
            digits=dict(num_checkpoints=80),
            grokking=dict(num_checkpoints=80),
            legendre=dict(num_checkpoints=80),
        ),
    ),
    "paper": dict(
        num_runs=32,
        num_null=8,
        llc=True,
        llc_checkpoints=100,
        llc_steps=500,
        llc_chains=4,
        families=dict(
            tms=dict(num_steps=100_000, num_checkpoints=200, window=(100, 100_000)),
            digits=dict(
                num_steps=10_000, num_checkpoints=200, window=(100, 10_000), num_arrivals=5
            ),
            grokking=dict(num_steps=30_000, num_checkpoints=200, window=(30, 30_000)),
            legendre=dict(num_steps=30_000, num_checkpoints=200, window=(30, 30_000)),
        ),
    ),
}
PRESETS = {name: {"num_runs": scale["num_runs"]} for name, scale in SCALES.items()}
TOLERANCES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
REFERENCE_TOLERANCE = 0.2  # decades: a transition found within a factor 10^0.2 ≈ 1.6 of its step
LLC_DATA = (
    256  # λ̂ uses at most this many training examples (cost: a probe, not a converged estimate)
)


def add_arguments(parser):
    parser.add_argument(
        "--families", default="tms,digits,grokking,legendre", help="comma-separated task families"
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
    """Indices of the checkpoints that get λ̂: `count` - 1 spread evenly (in index, so about evenly
    in log-step) over the checkpoints inside the scoring window, plus the last one before it, so
    that the interpolated λ̂ series covers the window and its first stretch has a left neighbour.
    Spacing them over the whole run would spend a third of the budget on steps that are never
    scored."""
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


def probe_series(task, preset, key, use_llc):
    """Scalar probe series (runs, checkpoints) per probe name, histograms over time of run 0, the
    bin edges, and the λ̂ health (None without λ̂)."""
    params = task.params
    leaves = probes.parameter_leaves(jax.tree.map(lambda x: x[0], params))
    span = max(float(np.max(np.abs(np.asarray(leaf)))) for leaf in leaves)
    edges = np.linspace(-1.1 * span, 1.1 * span, 41)
    values = _probe_all_runs_jit(params, edges)
    series = probes.scalar_series(values, task.steps)
    histogram = np.asarray(values.histogram[0])
    health = None
    if use_llc and task.family in preset.get("llc_skip", ()):
        health = dict(skipped=LLC_SKIP_REASON, seconds=0.0)
    elif use_llc:
        start = time.perf_counter()
        thin = llc_checkpoints(task.steps, task.window, preset["llc_checkpoints"])
        thinned = jax.tree.map(lambda x: x[:, thin], params)
        if task.family == "tms":
            data, n, settings = task.data, task.num_data, LLC_TMS
        else:
            data, n = _subset(task.data, LLC_DATA, axis=1 if task.data_per_run else 0)
            settings = LLC_MLP
        llc_settings = llc.LLCSettings(
            **settings,
            nbeta=n / np.log(n),
            num_chains=preset["llc_chains"],
            num_steps=preset["llc_steps"],
            num_burnin=preset["llc_steps"] // 4,
        )
        result = probes.llc_probe_result(
            key,
            task.loss_fn,
            thinned,
            data,
            llc_settings,
            data_per_run=task.data_per_run,
            cell_batch=None if jax.default_backend() == "gpu" else 8,
        )
        usable, counts = np.asarray(llc.usable(result)), llc.problem_counts(result)
        llc_hat = np.asarray(result.llc, dtype=float)
        # Interpolate the usable estimates back onto every checkpoint in log-step so all probes
        # share one time axis; a run with fewer than 4 usable estimates gets no λ̂ series (NaN: no
        # detection).
        log_steps = np.log10(task.steps)
        rows = []
        for run in range(task.num_runs):
            keep = usable[run]
            if keep.sum() >= 4:
                rows.append(np.interp(log_steps, log_steps[thin][keep], llc_hat[run, keep]))
            else:
                rows.append(np.full(log_steps.shape, np.nan))
        series["llc"] = np.stack(rows)
        health = dict(
            settings=llc_settings.to_dict() | {"num_data": n},
            counts=counts,
            runs_without_series=int(sum(np.isnan(r).all() for r in rows)),
            seconds=time.perf_counter() - start,
        )
    series["loss"] = np.asarray(task.train_loss)
    return series, histogram, edges, health


def build_detectors(probe_names):
    """(name, probe, function(steps, values, window) -> Detection) for every probe × method."""
    detectors = []
    for probe in probe_names:
        detectors.append(
            (
                f"{probe}/pelt_rate",
                probe,
                lambda s, v, w: changepoints.detect_changepoints(s, v, window=w),
            )
        )
        detectors.append(
            (
                f"{probe}/binseg_level",
                probe,
                lambda s, v, w: changepoints.detect_changepoints(
                    s, v, window=w, method="binseg", signal="level"
                ),
            )
        )
        detectors.append(
            (
                f"{probe}/slope_sign",
                probe,
                lambda s, v, w: changepoints.detect_slope_sign_changes(s, v, window=w),
            )
        )
    return detectors


def score_family(task, series, key):
    detectors = build_detectors([name for name in series if name != "loss"])
    detectors += [
        (f"baseline_loss/{name.split('/')[1]}", "loss", fn)
        for name, _, fn in build_detectors(["loss"])
    ]
    live = ~task.is_null
    true = [task.transitions[r] for r in range(task.num_runs)]
    count = (
        int(round(np.mean([t.size for t, is_live in zip(true, live) if is_live])))
        if live.any()
        else 0
    )
    results, detections = {}, {}
    for name, probe, fn in detectors:
        found = []
        for run in range(task.num_runs):
            values = series[probe][run]
            if (
                np.sum(np.isfinite(values)) < 4
            ):  # e.g. no usable λ̂ on this run: nothing to detect from
                found.append(changepoints.Detection(np.zeros(0), np.zeros(0)))
            else:  # any other ValueError is a bug and must surface
                found.append(fn(task.steps, values, task.window))
        detections[name] = found
    keys = jax.random.split(key, task.num_runs)
    detections["baseline_evenly_spaced"] = [
        changepoints.evenly_spaced(task.window, count) for _ in range(task.num_runs)
    ]
    detections["baseline_random"] = [
        changepoints.random_events(keys[r], task.window, count) for r in range(task.num_runs)
    ]
    for name, found in detections.items():
        scores = changepoints.score_detections(
            [found[r] for r in np.flatnonzero(live)],
            [true[r] for r in np.flatnonzero(live)],
            TOLERANCES,
        )
        null_runs = [found[r] for r in np.flatnonzero(~live)]
        reference = list(TOLERANCES).index(REFERENCE_TOLERANCE)
        results[name] = dict(
            f1=float(scores.f1[reference]),
            precision=float(scores.precision[reference]),
            recall=float(scores.recall[reference]),
            f1_curve=scores.f1.tolist(),
            num_detected=scores.num_detected,
            num_true=scores.num_true,
            false_positives_per_null_run=changepoints.false_positives_per_run(null_runs)
            if null_runs
            else None,
        )
    return results, detections, count


def plot_family(store, task, series, detections, run):
    import matplotlib.pyplot as plt

    names = ["loss", "metric", *[n for n in series if n != "loss"]]
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.6 * len(names)), sharex=True)
    for ax, name in zip(axes, names):
        values = task.metric[run] if name == "metric" else series[name][run]
        ax.plot(task.steps, values, color="tab:blue", lw=1.5)
        ax.set_ylabel(name.replace("_", " "), fontsize=8)
        for step in task.transitions[run]:
            ax.axvline(step, color="black", ls="--", lw=1)
        key = "baseline_loss/pelt_rate" if name == "loss" else f"{name}/pelt_rate"
        for step in detections.get(key, [None] * (run + 1))[run].steps if key in detections else []:
            ax.axvline(step, color="tab:red", lw=1.5, alpha=0.7)
        ax.axvspan(task.steps[0], task.window[0], color="0.9")
    axes[-1].set_xscale("log")
    axes[-1].set_xlabel("training step")
    axes[0].set_title(
        f"{task.family}, run {run}: true transitions (black dashed), PELT detections (red); "
        "grey: outside the scored window",
        fontsize=9,
    )
    store.save_figure(f"probes_{task.family}", fig)


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


def plot_f1_curves(store, table):
    import matplotlib.pyplot as plt

    families = list(table)
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.6), squeeze=False)
    for ax, family in zip(axes[0], families):
        rows = table[family]
        best = sorted(
            (r for r in rows if not r.startswith("baseline")), key=lambda r: -rows[r]["f1"]
        )[:4]
        for name in best + ["baseline_loss/pelt_rate", "baseline_evenly_spaced", "baseline_random"]:
            style = "--" if name.startswith("baseline") else "-"
            ax.plot(TOLERANCES, rows[name]["f1_curve"], style, marker="o", ms=3, label=name)
        ax.set_title(family)
        ax.set_xlabel("tolerance (decades of steps)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("matched F1")
    store.save_figure("f1_curves", fig)


def main(args):
    FAMILIES = {"tms": tms_runs, **GENERIC_FAMILIES}
    preset = dict(SCALES[args.preset], num_runs=args.num_runs)
    families = [f for f in args.families.split(",") if f]
    for family in families:
        if family not in FAMILIES:
            raise ValueError(
                f"--families: unknown family {family!r}; choose from {tuple(FAMILIES)}"
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
            settings={k: v for k, v in preset.items()},
        )
    )
    key = jax.random.key(args.seed)
    table, timings, truth_summary, llc_health = {}, {}, {}, {}
    total_start = time.perf_counter()
    for index, family in enumerate(families):
        start = time.perf_counter()
        key_task, key_llc, key_score = jax.random.split(jax.random.fold_in(key, index), 3)
        task = FAMILIES[family](
            key_task,
            num_runs=preset["num_runs"],
            num_null=preset["num_null"],
            **preset["families"].get(family, {}),
        )
        stage = {"tasks": time.perf_counter() - start}
        series, histogram, edges, health = probe_series(task, preset, key_llc, use_llc)
        stage["llc"] = health["seconds"] if health else 0.0
        stage["probes"] = time.perf_counter() - start - stage["tasks"] - stage["llc"]
        mark = time.perf_counter()
        results, detections, count = score_family(task, series, key_score)
        stage["scoring"] = time.perf_counter() - mark
        table[family] = results
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
            f"probes_{family}", steps=task.steps, metric=task.metric, is_null=task.is_null, **series
        )
        live = np.flatnonzero(~task.is_null)
        run = int(live[np.argmax([task.transitions[r].size for r in live])]) if live.size else 0
        plot_family(store, task, series, detections, run)
        if family == families[0]:
            plot_histogram(store, task, histogram, edges)
        stage["total"] = time.perf_counter() - start
        timings[family] = stage
        print(
            f"[{family}] "
            + ", ".join(f"{k} {v:.1f}s" for k, v in stage.items())
            + f"; true transitions per run: {[t.size for t in task.transitions]}"
            + (
                f"; λ̂ excluded {health['counts']['excluded']}/{health['counts']['total']}"
                if health and "counts" in health
                else ""
            ),
            flush=True,
        )
    plot_f1_curves(store, table)
    store.save_arrays(
        "scores",
        tolerances=np.asarray(TOLERANCES),
        **{
            f"{f}__{d}".replace("/", "__"): np.asarray(r["f1_curve"])
            for f, rows in table.items()
            for d, r in rows.items()
        },
    )
    compact = {
        f: {
            d: {k: r[k] for k in ("f1", "precision", "recall", "false_positives_per_null_run")}
            for d, r in rows.items()
        }
        for f, rows in table.items()
    }
    timings["total"] = time.perf_counter() - total_start
    store.write_summary(
        dict(
            reference_tolerance_decades=REFERENCE_TOLERANCE,
            table=compact,
            truth=truth_summary,
            llc_health=llc_health,
            findings=findings(compact, llc_health, preset),
            seconds=timings,
        )
    )
    print(format_table(compact))
    return compact


def findings(compact, llc_health, preset) -> str:
    """A short paragraph, computed from the table, on which detector works where (at the reference
    tolerance) against the loss-only and evenly-spaced baselines, and on the λ̂ health."""
    parts = []
    for family, rows in compact.items():
        detectors = {k: v for k, v in rows.items() if not k.startswith("baseline")}
        best_name, best = max(detectors.items(), key=lambda item: item[1]["f1"])
        loss = max((v["f1"] for k, v in rows.items() if k.startswith("baseline_loss")), default=0.0)
        even = rows["baseline_evenly_spaced"]["f1"]
        reference = max(loss, even)
        margin = best["f1"] - reference
        if margin >= 0.15:
            verb = "clearly beats"
        elif margin > 0.05:
            verb = "is slightly above, within noise of,"
        elif margin >= -0.05:
            verb = "ties"
        else:
            verb = "loses to"
        fp = best["false_positives_per_null_run"]
        llc_best = max((v["f1"] for k, v in rows.items() if k.startswith("llc/")), default=None)
        parts.append(
            f"{family}: the best probe detector {best_name} (F1 {best['f1']:.2f}"
            + (f", {fp:.1f} false positives per null run" if fp is not None else "")
            + f") {verb} the best baseline (loss-only {loss:.2f}, evenly spaced {even:.2f})"
            + (
                ", but it fires that often on runs without any transition"
                if fp is not None and fp >= 2 and margin > 0.05
                else ""
            )
            + (f"; λ̂'s best F1 {llc_best:.2f}" if llc_best is not None else "")
        )
    text = "; ".join(parts) + "."
    text += (
        f" Each family has only {preset['num_runs']} live and {preset['num_null']} null runs, so an"
        " F1 difference below ~0.15 is within run-to-run noise, and the best of ~18 probe detectors"
        " is optimistically selected against 3 loss-only ones; nearly every detector fires about"
        " once per null run (null runs still train, so their probes still move)."
    )
    counted = {family: h for family, h in llc_health.items() if "counts" in h}
    if counted:
        text += (
            " λ̂ excluded (non-finite or escaped) "
            + ", ".join(
                f"{family} {h['counts']['excluded']}/{h['counts']['total']}"
                for family, h in counted.items()
            )
            + (
                " estimates; excluded checkpoints are interpolated over, and a run with < 4 usable"
                " estimates has no λ̂ detection."
            )
        )
    skipped = [family for family, h in llc_health.items() if "skipped" in h]
    if skipped:
        text += (
            f" λ̂ was not computed for {', '.join(skipped)} (its chains escape before a run has seen"
            " all its classes; see llc_health)."
        )
    return text


def format_table(compact) -> str:
    families = list(compact)
    detectors = list(dict.fromkeys(name for rows in compact.values() for name in rows))
    lines = [
        "| detector | " + " | ".join(f"{f} F1 (FP/null)" for f in families) + " |",
        "|---" * (len(families) + 1) + "|",
    ]
    for name in detectors:
        cells = []
        for f in families:
            row = compact[f].get(name)
            if row is None:  # e.g. λ̂ skipped for this family
                cells.append("-")
                continue
            fp = row["false_positives_per_null_run"]
            cells.append(f"{row['f1']:.2f} ({'-' if fp is None else f'{fp:.1f}'})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    common.run_module(sys.modules[__name__])
