"""λ̂ along SGD training: do loss and complexity move in opposite directions ("opposing staircases")?

Question: along SGD trajectories of the TMS (c = 6, r = 2) started near a 4-gon, does every transition
between critical points lower the loss and raise the local learning coefficient, as the Bayesian
Antecedent Hypothesis of Chen et al. (2023, §6) expects?

Method: train an ensemble with :func:`tmsjax.sgd.train` (the paper's protocol: n = 1000, batch 20,
learning rate 0.005; fewer steps by default on CPU), then estimate λ̂ at every checkpoint of every run in
one compiled call (:func:`tmsjax.llc.llc_along_training`, the paper's SGLD protocol: full batch,
ε = 1e-3, γ = 1, 500 steps, nβ = n / log n), classify every checkpoint into a k^{σ+,σ−}-gon phase
(:mod:`tmsjax.phases`), and for every observed phase change compare the plateau means before and after.

Outputs (``--out DIR``): config.json, summary.json (the BAH table: per transition ΔL, Δλ̂ with error
bars, whether ΔL < 0 and Δλ̂ > 0, plus verdict counts), trajectories.npz, opposing_staircases.png,
loss_vs_complexity.png.

References:
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301, §6, Fig. 1 and 6.
  Lau et al. (2023), arXiv:2308.12108.
"""

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from tmsjax import llc, sgd
from tmsjax.critical import critical_points
from tmsjax.data import make_dataset, sample_sparse_limit
from tmsjax.phases import classify_batch
from tmsjax.results import ResultStore

PRESETS = {
    "cpu": dict(num_runs=8, num_steps=100_000, num_checkpoints=40, num_chains=4, llc_steps=500),
    "paper": dict(num_runs=32, num_steps=sgd.PAPER_NUM_STEPS, num_checkpoints=100, num_chains=4, llc_steps=500),
    "smoke": dict(num_runs=2, num_steps=200, num_checkpoints=5, num_chains=2, llc_steps=20),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--preset", choices=["cpu", "paper"], default="cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests (seconds)")
    parser.add_argument("--num-features", type=int, default=6)
    parser.add_argument("--num-data", type=int, default=sgd.PAPER_NUM_DATA)
    parser.add_argument("--num-runs", type=int)
    parser.add_argument("--num-steps", type=int, help="SGD steps per run")
    parser.add_argument("--num-checkpoints", type=int)
    parser.add_argument("--num-chains", type=int)
    parser.add_argument("--llc-steps", type=int, help="SGLD steps per estimate")
    parser.add_argument("--step-size", type=float, default=1e-3, help="SGLD ε")
    parser.add_argument("--localization", type=float, default=1.0, help="SGLD γ")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    preset = PRESETS["smoke" if args.smoke else args.preset]
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def find_transitions(labels: np.ndarray, train_loss: np.ndarray, llc_hat: np.ndarray, stderr: np.ndarray, steps):
    """Phase changes along each run, with plateau means before and after.

    A plateau is a maximal stretch of checkpoints with one known label ("unknown" checkpoints are the
    transitions themselves and are skipped). ΔL and Δλ̂ compare consecutive plateaus; the error bar of
    a plateau's mean λ̂ combines the spread over its checkpoints and their own standard errors.
    """
    rows = []
    for run in range(labels.shape[0]):
        plateaus = []
        for index, label in enumerate(labels[run]):
            if label == "unknown":
                continue
            if plateaus and plateaus[-1]["label"] == label and plateaus[-1]["end"] == index - 1:
                plateaus[-1]["end"] = index
            elif plateaus and plateaus[-1]["label"] == label:
                plateaus[-1]["end"] = index
            else:
                plateaus.append({"label": label, "start": index, "end": index})

        def stats(p):
            sl = slice(p["start"], p["end"] + 1)
            values = llc_hat[run, sl]
            count = values.size
            spread = np.std(values, ddof=1) / np.sqrt(count) if count > 1 else 0.0
            error = np.sqrt(spread**2 + np.mean(stderr[run, sl] ** 2) / count)
            return float(np.mean(train_loss[run, sl])), float(np.mean(values)), float(error)

        for before, after in zip(plateaus[:-1], plateaus[1:]):
            loss_a, llc_a, err_a = stats(before)
            loss_b, llc_b, err_b = stats(after)
            delta_llc, delta_error = llc_b - llc_a, float(np.hypot(err_a, err_b))
            rows.append({
                "run": run, "from": before["label"], "to": after["label"],
                "step": int(steps[after["start"]]),
                "loss_before": loss_a, "loss_after": loss_b, "delta_loss": loss_b - loss_a,
                "llc_before": llc_a, "llc_after": llc_b, "delta_llc": delta_llc, "delta_llc_stderr": delta_error,
                "loss_decreases": bool(loss_b < loss_a),
                "llc_increases": bool(delta_llc > 0),
                "llc_increase_significant": bool(delta_llc > 2 * delta_error),
                "consistent_with_bah": bool(loss_b < loss_a and delta_llc > 0),
            })
    return rows


def plot_staircases(store, steps, train_loss, llc_hat, stderr, labels, runs, points):
    import matplotlib.pyplot as plt

    table = sorted({str(p.label) for p in points} | {"unknown"}, key=lambda s: (s == "unknown", s))
    cmap = plt.get_cmap("tab20")
    colors = {label: ("0.9" if label == "unknown" else cmap(i % 20)) for i, label in enumerate(table)}
    figure, axes = plt.subplots(len(runs), 1, figsize=(9, 2.6 * len(runs)), sharex=True, squeeze=False)
    x = np.maximum(steps, 1)
    for axis, run in zip(axes[:, 0], runs):
        edges = np.concatenate([[x[0]], np.sqrt(x[1:] * x[:-1]), [x[-1]]])
        for index, label in enumerate(labels[run]):
            axis.axvspan(edges[index], edges[index + 1], color=colors[label], alpha=0.35, lw=0)
        axis.plot(x, train_loss[run], color="C0", lw=2, label="loss $L_n$")
        axis.set_xscale("log")
        axis.set_ylabel("loss", color="C0")
        twin = axis.twinx()
        twin.errorbar(x, llc_hat[run], yerr=stderr[run], color="C3", lw=1.5, marker=".", capsize=2, label=r"$\hat\lambda$")
        twin.set_ylabel(r"$\hat\lambda$", color="C3")
        seen = dict.fromkeys(labels[run])
        axis.set_title(f"run {run}: " + " → ".join(label for label in seen if label != "unknown"), fontsize=10)
    axes[-1, 0].set_xlabel("SGD step")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[label], alpha=0.5) for label in table]
    figure.legend(handles, table, loc="upper right", fontsize=7, ncol=2, title="phase")
    figure.suptitle("Opposing staircases: loss falls, $\\hat\\lambda$ rises", fontsize=13)
    figure.tight_layout(rect=(0, 0, 0.88, 0.97))
    store.save_figure("opposing_staircases", figure)


def plot_loss_vs_complexity(store, points, transitions):
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 5))
    for point in points:
        if point.llc is not None:
            axis.scatter(point.llc, point.loss, color="k", zorder=3)
            axis.annotate(point.label, (point.llc, point.loss), textcoords="offset points", xytext=(5, 3), fontsize=9)
        else:
            axis.axhline(point.loss, color="0.8", lw=0.8, zorder=0)
            axis.annotate(f"{point.label} (λ unknown)", (0.0, point.loss), fontsize=7, color="0.5")
    for row in transitions:
        color = "C2" if row["consistent_with_bah"] else "C3"
        axis.annotate("", xy=(row["llc_after"], row["loss_after"]), xytext=(row["llc_before"], row["loss_before"]),
                      arrowprops=dict(arrowstyle="->", color=color, alpha=0.6, lw=1.5))
    axis.set_xlabel(r"local learning coefficient $\lambda$ (points: theory; arrows: $\hat\lambda$ plateaus)")
    axis.set_ylabel("loss")
    axis.set_title("Loss versus complexity: transitions go down and right (green: ΔL<0, Δλ̂>0)")
    store.save_figure("loss_vs_complexity", figure)


def main(args):
    store = ResultStore(args.out)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    store.write_config(settings)
    key = jax.random.key(args.seed)
    key_data, key_init, key_train, key_llc = jax.random.split(key, 4)
    dataset = make_dataset(sample_sparse_limit(key_data, args.num_data, args.num_features))
    init = sgd.init_kgon_ensemble(key_init, args.num_runs, args.num_features, k=4)
    # SGD checkpoints from the dynamics module (issue 3); λ̂ only consumes the stacked params.
    trajectory = sgd.train(
        jax.random.split(key_train, args.num_runs), init, dataset, num_steps=args.num_steps,
        num_checkpoints=args.num_checkpoints, store=store, name="sgd", progress=not args.smoke,
    )
    steps = np.asarray(trajectory.steps)
    result = llc.llc_along_training(
        key_llc, llc.tms_loss, trajectory.params, dataset, step_size=args.step_size,
        localization=args.localization, num_chains=args.num_chains, num_steps=args.llc_steps,
    )
    llc_hat, stderr = np.asarray(result.llc), np.asarray(result.stderr)
    verdicts = llc.grid_verdicts(result)
    W, b = np.asarray(trajectory.params.W), np.asarray(trajectory.params.b)
    classes = classify_batch(W.reshape(-1, *W.shape[2:]), b.reshape(-1, b.shape[-1]))
    labels = classes.labels.reshape(W.shape[:2]).astype(str)
    train_loss = np.asarray(trajectory.train_loss)
    store.save_arrays(
        "trajectories", steps=steps, train_loss=train_loss, population_loss=np.asarray(trajectory.population_loss),
        llc=llc_hat, stderr=stderr, llc_per_chain=np.asarray(result.llc_per_chain), labels=labels.astype("U16"),
        flags=np.asarray(result.diagnostics.flags), escape_fraction=np.asarray(result.diagnostics.escape_fraction),
        acceptance=np.asarray(result.diagnostics.acceptance),
    )
    points = critical_points(args.num_features)
    transitions = find_transitions(labels, train_loss, llc_hat, stderr, steps)
    verdict_counts: dict[str, int] = {}
    for text in verdicts.reshape(-1):
        for part in str(text).split("; "):
            name = part.split(" (")[0]
            verdict_counts[name] = verdict_counts.get(name, 0) + 1
    escaped = [
        {"run": int(r), "step": int(steps[c]), "label": labels[r, c], "llc": float(llc_hat[r, c]), "verdict": str(verdicts[r, c])}
        for r, c in zip(*np.nonzero(np.asarray(result.diagnostics.flags).any(-1) & (np.asarray(result.diagnostics.flags) & llc.ESCAPED).any(-1)))
    ]
    summary = {
        "question": "Does every SGD transition lower the loss and raise λ̂ (Bayesian Antecedent Hypothesis)?",
        "num_transitions": len(transitions),
        "num_consistent_with_bah": int(sum(t["consistent_with_bah"] for t in transitions)),
        "num_significant_llc_increase": int(sum(t["llc_increase_significant"] for t in transitions)),
        "bah_table": transitions,
        "verdict_counts": verdict_counts,
        "escaped_checkpoints": escaped[:50],
        "final_labels": labels[:, -1].tolist(),
        "final_llc": llc_hat[:, -1].tolist(),
        "final_llc_stderr": stderr[:, -1].tolist(),
        "theory_llc": {p.label: p.llc for p in points if p.llc is not None},
    }
    store.write_summary(summary)
    runs = list(range(min(4, args.num_runs)))
    plot_staircases(store, steps, train_loss, llc_hat, stderr, labels, runs, points)
    plot_loss_vs_complexity(store, points, transitions)
    print(f"{len(transitions)} transitions, {summary['num_consistent_with_bah']} with ΔL < 0 and Δλ̂ > 0; verdicts {verdict_counts}")
    return summary


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
