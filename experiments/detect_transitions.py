"""Can phase transitions be detected from the weights alone? A scored benchmark with ground truth.

Question: Hoogland et al.'s hackathon seed ("Detecting phase transitions", 2023) stopped at "not yet"
for lack of tasks with known transitions. Here four task families come with ground truth
(:mod:`tmsjax.tasks`: TMS phase changes, graduated digits, modular-addition grokking with Omnigrok's α,
bounded Legendre polynomials) and null runs without transitions. Every weight-only probe
(:mod:`tmsjax.probes`: weight norm, log product of top singular values, stable rank, mean top singular
value, checkpoint speed, λ̂) is turned into transition steps by each detector (:mod:`tmsjax.detect`:
PELT on the rate, binary segmentation on the level, the slope-sign rule), and scored by one-to-one
matched F1 within a tolerance in decades of steps, with false positives on null runs, against the
loss-only, evenly spaced and random baselines on the same runs.

Run: ``python -m experiments.detect_transitions --out results/detect`` (CPU, a few minutes);
``--preset large`` for a GPU; ``--smoke`` for a seconds-long check. Writes config.json,
summary.json (the table), scores.npz (F1 curves), probes_<family>.npz and figures:
probes_<family>.png (probes of one run with true and detected transitions marked),
f1_curves.png, weight_histogram.png (the seed's weight-value animation as an image over time).
"""

import argparse
import os
import time

import jax
import numpy as np

PRESETS = {
    # (num_runs, num_null, per-family overrides); λ̂ settings.
    "smoke": dict(
        num_runs=2, num_null=1, llc=True, llc_checkpoints=8, llc_steps=30, llc_chains=1,
        families=dict(
            tms=dict(num_steps=2000, num_checkpoints=40, window=(30, 2000)),
            digits=dict(num_steps=300, num_checkpoints=40, window=(20, 300)),
            grokking=dict(num_steps=300, num_checkpoints=40, window=(10, 300)),
            legendre=dict(num_steps=300, num_checkpoints=40, window=(10, 300)),
        ),
    ),
    "default": dict(num_runs=6, num_null=2, llc=True, llc_checkpoints=30, llc_steps=100, llc_chains=2, families={}),
    "large": dict(
        num_runs=32, num_null=8, llc=True, llc_checkpoints=100, llc_steps=300, llc_chains=4,
        families=dict(
            tms=dict(num_steps=100_000, num_checkpoints=200, window=(100, 100_000)),
            digits=dict(num_steps=10_000, num_checkpoints=200, window=(100, 10_000), num_arrivals=5),
            grokking=dict(num_steps=30_000, num_checkpoints=200, window=(30, 30_000)),
            legendre=dict(num_steps=30_000, num_checkpoints=200, window=(30, 30_000)),
        ),
    ),
}
TOLERANCES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
REFERENCE_TOLERANCE = 0.2  # decades: a transition found within a factor 10^0.2 ≈ 1.6 of its step
LLC_DATA = 256  # λ̂ uses at most this many training examples (cost: a probe, not a converged estimate)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--smoke", action="store_true", help="tiny settings (seconds), for tests")
    parser.add_argument("--families", default="tms,digits,grokking,legendre", help="comma-separated task families")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-llc", action="store_true", help="skip the λ̂ probe (the costly one)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.preset = "smoke"
    return args


def _subset(data, size):
    return jax.tree.map(lambda x: x[:size], data)


def probe_series(task, preset, key, use_llc):
    """Scalar probe series (runs, checkpoints) per probe name, plus histograms over time of run 0."""
    from tmsjax import probes

    params = task.params
    leaves = probes.parameter_leaves(jax.tree.map(lambda x: x[0], params))
    span = max(float(np.max(np.abs(np.asarray(leaf)))) for leaf in leaves)
    edges = np.linspace(-1.1 * span, 1.1 * span, 41)
    values = jax.vmap(lambda p: probes.probe_trajectory(p, edges))(params)
    series = probes.scalar_series(values, task.steps)
    histogram = np.asarray(values.histogram[0])
    if use_llc:
        thin = np.unique(np.linspace(0, task.steps.size - 1, preset["llc_checkpoints"]).round().astype(int))
        thinned = jax.tree.map(lambda x: x[:, thin], params)
        if task.family == "tms":
            data, n = task.data, task.num_data
        else:
            data = _subset(task.data, LLC_DATA)
            n = int(jax.tree.leaves(data)[0].shape[0])
        llc = np.asarray(
            probes.llc_probe(
                key, task.loss_fn, thinned, data, nbeta=n / np.log(n), step_size=1e-4 if task.family != "tms" else 1e-3,
                localization=100.0 if task.family != "tms" else 1.0, num_chains=preset["llc_chains"],
                num_steps=preset["llc_steps"], num_burnin=preset["llc_steps"] // 4,
            )
        )
        # Interpolate back onto every checkpoint in log-step so all probes share one time axis.
        log_steps = np.log10(task.steps)
        series["llc"] = np.stack([np.interp(log_steps, log_steps[thin], row) for row in llc])
    series["loss"] = np.asarray(task.train_loss)
    return series, histogram, edges


def build_detectors(probe_names):
    """(name, probe, function(steps, values, window) -> Detection) for every probe × method."""
    from tmsjax import detect

    detectors = []
    for probe in probe_names:
        detectors.append((f"{probe}/pelt_rate", probe, lambda s, v, w: detect.detect_changepoints(s, v, window=w)))
        detectors.append((f"{probe}/binseg_level", probe, lambda s, v, w: detect.detect_changepoints(s, v, window=w, method="binseg", signal="level")))
        detectors.append((f"{probe}/slope_sign", probe, lambda s, v, w: detect.detect_slope_sign_changes(s, v, window=w)))
    return detectors


def score_family(task, series, key):
    from tmsjax import detect

    detectors = build_detectors([name for name in series if name != "loss"])
    detectors += [(f"baseline_loss/{name.split('/')[1]}", "loss", fn) for name, _, fn in build_detectors(["loss"])]
    live = ~task.is_null
    true = [task.transitions[r] for r in range(task.num_runs)]
    count = int(round(np.mean([t.size for t, is_live in zip(true, live) if is_live]))) if live.any() else 0
    results, detections = {}, {}
    for name, probe, fn in detectors:
        found = []
        for run in range(task.num_runs):
            values = series[probe][run]
            try:
                found.append(fn(task.steps, values, task.window))
            except ValueError:  # e.g. λ̂ all NaN on a blown-up run: nothing detected
                found.append(detect.Detection(np.zeros(0), np.zeros(0)))
        detections[name] = found
    keys = jax.random.split(key, task.num_runs)
    detections["baseline_evenly_spaced"] = [detect.evenly_spaced(task.window, count) for _ in range(task.num_runs)]
    detections["baseline_random"] = [detect.random_events(keys[r], task.window, count) for r in range(task.num_runs)]
    for name, found in detections.items():
        scores = detect.score_detections([found[r] for r in np.flatnonzero(live)], [true[r] for r in np.flatnonzero(live)], TOLERANCES)
        null_runs = [found[r] for r in np.flatnonzero(~live)]
        reference = list(TOLERANCES).index(REFERENCE_TOLERANCE)
        results[name] = dict(
            f1=float(scores.f1[reference]), precision=float(scores.precision[reference]), recall=float(scores.recall[reference]),
            f1_curve=scores.f1.tolist(), num_detected=scores.num_detected, num_true=scores.num_true,
            false_positives_per_null_run=detect.false_positives_per_run(null_runs) if null_runs else None,
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
        key = f"baseline_loss/pelt_rate" if name == "loss" else f"{name}/pelt_rate"
        for step in detections.get(key, [None] * (run + 1))[run].steps if key in detections else []:
            ax.axvline(step, color="tab:red", lw=1.5, alpha=0.7)
        ax.axvspan(task.steps[0], task.window[0], color="0.9")
    axes[-1].set_xscale("log")
    axes[-1].set_xlabel("training step")
    axes[0].set_title(f"{task.family}, run {run}: true transitions (black dashed), PELT detections (red); grey: outside the scored window", fontsize=9)
    store.save_figure(f"probes_{task.family}", fig)


def plot_histogram(store, task, histogram, edges):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    image = np.log1p(histogram.T)
    ax.pcolormesh(task.steps, 0.5 * (edges[1:] + edges[:-1]), image, shading="nearest", cmap="magma")
    for step in task.transitions[0]:
        ax.axvline(step, color="cyan", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("weight value")
    ax.set_title(f"{task.family}, run 0: histogram of all weight values over training (log counts); cyan: true transitions", fontsize=9)
    store.save_figure("weight_histogram", fig)


def plot_f1_curves(store, table):
    import matplotlib.pyplot as plt

    families = list(table)
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.6), squeeze=False)
    for ax, family in zip(axes[0], families):
        rows = table[family]
        best = sorted((r for r in rows if not r.startswith("baseline")), key=lambda r: -rows[r]["f1"])[:4]
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
    from tmsjax.results import ResultStore
    from tmsjax.tasks import FAMILIES, make_task

    preset = PRESETS[args.preset]
    families = [f for f in args.families.split(",") if f]
    for family in families:
        if family not in FAMILIES:
            raise ValueError(f"--families: unknown family {family!r}; choose from {FAMILIES}")
    use_llc = preset["llc"] and not args.no_llc
    store = ResultStore(args.out)
    store.write_config(dict(preset=args.preset, families=families, seed=args.seed, llc=use_llc, tolerances=TOLERANCES,
                            reference_tolerance=REFERENCE_TOLERANCE, settings={k: v for k, v in preset.items()}))
    key = jax.random.key(args.seed)
    table, timings, truth_summary = {}, {}, {}
    for index, family in enumerate(families):
        start = time.perf_counter()
        key_task, key_llc, key_score = jax.random.split(jax.random.fold_in(key, index), 3)
        task = make_task(family, key_task, num_runs=preset["num_runs"], num_null=preset["num_null"], **preset["families"].get(family, {}))
        series, histogram, edges = probe_series(task, preset, key_llc, use_llc)
        results, detections, count = score_family(task, series, key_score)
        table[family] = results
        truth_summary[family] = dict(
            window=task.window, transitions_per_run=[np.asarray(t).tolist() for t in task.transitions],
            is_null=task.is_null.tolist(), baseline_count=count,
            events={k: [np.asarray(v, dtype=float).tolist() for v in runs] for k, runs in task.events.items() if k != "labels"},
        )
        store.save_arrays(f"probes_{family}", steps=task.steps, metric=task.metric, is_null=task.is_null, **series)
        live = np.flatnonzero(~task.is_null)
        run = int(live[np.argmax([task.transitions[r].size for r in live])]) if live.size else 0
        plot_family(store, task, series, detections, run)
        if family == families[0]:
            plot_histogram(store, task, histogram, edges)
        timings[family] = time.perf_counter() - start
        print(f"[{family}] {timings[family]:.1f}s, true transitions per live run: {[t.size for t in task.transitions]}")
    plot_f1_curves(store, table)
    store.save_arrays("scores", tolerances=np.asarray(TOLERANCES),
                      **{f"{f}__{d}".replace("/", "__"): np.asarray(r["f1_curve"]) for f, rows in table.items() for d, r in rows.items()})
    compact = {f: {d: {k: r[k] for k in ("f1", "precision", "recall", "false_positives_per_null_run")} for d, r in rows.items()} for f, rows in table.items()}
    store.write_summary(dict(reference_tolerance_decades=REFERENCE_TOLERANCE, table=compact, truth=truth_summary, seconds=timings))
    print(format_table(compact))
    return compact


def format_table(compact) -> str:
    families = list(compact)
    detectors = list(next(iter(compact.values()))) if compact else []
    lines = ["| detector | " + " | ".join(f"{f} F1 (FP/null)" for f in families) + " |", "|---" * (len(families) + 1) + "|"]
    for name in detectors:
        cells = []
        for f in families:
            row = compact[f].get(name)
            fp = row["false_positives_per_null_run"]
            cells.append(f"{row['f1']:.2f} ({'-' if fp is None else f'{fp:.1f}'})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    main(parse_args())
