r"""SGD plateaus at k-gons: do training runs of the TMS stall at the catalogue's energy levels, and
which phase-to-phase transitions does SGD make?

Question: Chen et al. (2023, §6) train the TMS (r = 2, c = 6) with SGD from near a 4-gon and see the
loss descend in a staircase whose treads sit at critical energy levels, with dynamical transitions
such as 4 → 4⁺ → 5 (never 5 → 6). Do we see the same, and how often?

Method:

- an ensemble of runs in one jitted, vmapped program (:func:`tmsjax.tms.sgd.train`): each run its
  own initialisation near a 4-gon (radius U[0.9, 1], random rotation and feature order, N(0, 0.01²)
  noise, biases U[−0.01, 0.01]) and its own minibatch stream, all on one dataset of n = 1000 draws
  from the high-sparsity-limit distribution; plain SGD, batch 20, learning rate 0.005, 225 000 steps
  (4500 epochs); checkpoints on a log-spaced schedule (parameters, L_n, exact potential L);
- every checkpoint classified by :func:`tmsjax.tms.phases.classify_batch` (geometry);
- plateaus found from the exact potential alone, then compared with the catalogue levels, and paths,
  the transition graph and final phases assembled by :mod:`tmsjax.tms.plateaus` (thresholds there);
- ``--objective population`` trains on the exact potential (the n → ∞ limit) instead.

Writes ``DIR/config.json``, ``DIR/trajectory.npz`` (steps, W, b, train and exact losses, phase ids:
the layout the LLC engine and ``experiments.developmental_stages`` read), ``DIR/summary.json``
(paths, transition counts, plateau losses vs catalogue losses, final phases),
``DIR/loss_curves.png`` and ``DIR/transition_graph.png``.

References:
  Chen, Lau, Mendel, Wei, Murfet (2023), "Dynamical versus Bayesian phase transitions in a toy model
  of superposition", arXiv:2310.06301, §6, Fig. 6–7.

Usage:
  python -m experiments.sgd_plateaus --out results/sgd              # CPU default: 64 runs, ~1 min
  python -m experiments.sgd_plateaus --out results/sgd --preset paper   # GPU: 10 000 runs
"""

import sys
import time

import jax
import numpy as np

from experiments import common
from tmsjax.results import ResultStore
from tmsjax.sharding import grid_mesh
from tmsjax.tms.critical import critical_points
from tmsjax.tms.data import Dataset, make_dataset, sample_sparse_limit
from tmsjax.tms.phases import classify_batch
from tmsjax.tms.plateaus import analyse_runs
from tmsjax.tms.plotting import draw_energy_levels, phase_colors, pretty_label
from tmsjax.tms.sgd import init_kgon_ensemble, train

PRESETS = {
    "smoke": {"num_runs": 6, "num_steps": 1_000, "num_checkpoints": 30},
    "cpu": {"num_runs": 64, "num_steps": 225_000, "num_checkpoints": 200},
    "paper": {"num_runs": 10_000, "num_steps": 225_000, "num_checkpoints": 200},
}


def add_arguments(parser):
    parser.add_argument("--num-runs", type=int, default=None, help="number of SGD runs (preset)")
    parser.add_argument("--num-steps", type=int, default=None, help="SGD steps per run (preset)")
    parser.add_argument(
        "--num-checkpoints", type=int, default=None, help="log-spaced checkpoints per run (preset)"
    )
    parser.add_argument("--num-data", type=int, default=1000, help="dataset size n")
    parser.add_argument("--num-features", type=int, default=6, help="number of features c")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument(
        "--learning-rate", type=float, default=0.005, help="learning rate of plain SGD"
    )
    parser.add_argument("--objective", choices=["empirical", "population"], default="empirical")
    parser.add_argument("--sampling", choices=["replacement", "epoch"], default="replacement")


def check(args):
    for name in ("num_runs", "num_steps", "num_checkpoints", "num_data", "batch_size"):
        if getattr(args, name) <= 0:
            raise ValueError(
                f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}"
            )
    if args.num_features < 4:
        raise ValueError("--num-features must be at least 4 (the k-gon catalogue starts at 4-gons)")


def _keys(seed: int):
    """(dataset, initialisations, minibatch streams): the one key schedule of the ensemble."""
    return jax.random.split(jax.random.key(seed), 3)


def ensemble_dataset(settings: dict) -> Dataset:
    """The dataset the ensemble with these settings trains on (``args`` as a dict, or its
    config.json)."""
    key_data, _, _ = _keys(settings["seed"])
    return make_dataset(
        sample_sparse_limit(key_data, settings["num_data"], settings["num_features"])
    )


def run_ensemble(args, store=None):
    """Trains the ensemble described by `args`; returns (Trajectory, phase ids (runs, T),
    labels)."""
    _, key_init, key_runs = _keys(args.seed)
    dataset = ensemble_dataset(vars(args))
    params = init_kgon_ensemble(key_init, args.num_runs, args.num_features)
    mesh = grid_mesh() if jax.device_count() > 1 else None
    trajectory = train(
        jax.random.split(key_runs, args.num_runs),
        params,
        dataset,
        num_steps=args.num_steps,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        objective=args.objective,
        sampling=args.sampling,
        num_checkpoints=args.num_checkpoints,
        store=store,
        name="chunks",
        progress=args.progress,
        mesh=mesh,
    )
    W, b = trajectory.params
    runs, num_checkpoints = trajectory.train_loss.shape
    finite = np.isfinite(W).all(axis=(-1, -2)) & np.isfinite(b).all(axis=-1)
    # The classifier rejects NaN inputs; diverged checkpoints are classified as zeros and
    # relabelled.
    W_safe = np.where(finite[..., None, None], W, 0.0).reshape(-1, *W.shape[2:])
    b_safe = np.where(finite[..., None], b, -1.0).reshape(-1, b.shape[-1])
    result = classify_batch(W_safe, b_safe)
    unknown = len(result.table) - 1
    ids = np.where(finite, np.asarray(result.ids).reshape(runs, num_checkpoints), unknown)
    return trajectory, ids, result.table


def loss_figure(steps, losses, analysis, critical_points, title):
    """Loss curves against steps (log x), coloured by final phase, with the energy levels named."""
    import matplotlib.pyplot as plt

    finals = [run.final_label for run in analysis.runs]
    order = [p.label for p in critical_points] + ["unknown", "diverged"]
    present = sorted(
        set(finals), key=lambda label: order.index(label) if label in order else len(order)
    )
    # Phases of one k share a hue in phase_colors; a qualitative palette keeps the curves apart.
    palette = plt.get_cmap("tab10")
    colors = {label: palette(i % 10) for i, label in enumerate(present)} | {
        "unknown": (0.5, 0.5, 0.5, 1),
        "diverged": (0, 0, 0, 1),
    }
    fig, ax = plt.subplots(figsize=(9, 5.5))
    x = np.maximum(steps, 1)  # step 0 drawn at 1 on the log axis
    for label in present:
        members = [r for r, final in enumerate(finals) if final == label]
        for i, r in enumerate(members):
            ax.plot(
                x,
                losses[r],
                color=colors.get(label, "k"),
                lw=0.9,
                alpha=0.75,
                label=f"final phase {pretty_label(label)} ({len(members)} runs)"
                if i == 0
                else None,
            )
    plateau_losses = [p.loss for p in analysis.plateaus]
    finite = losses[np.isfinite(losses)]
    top = float(np.quantile(finite, 0.995)) + 0.004 if finite.size else 0.2
    bottom = min([float(finite.min())] + plateau_losses) - 0.006 if finite.size else 0.0
    draw_energy_levels(ax, [p for p in critical_points if bottom <= p.loss <= top])
    ax.set_xscale("log")
    ax.set_ylim(bottom, top)
    ax.set_xlabel("SGD step")
    ax.set_ylabel("population loss  L(w_t) = H / 3c")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8, frameon=True)
    ax.grid(alpha=0.25, which="both")
    fig.tight_layout()
    return fig


def transition_graph_figure(analysis, critical_points, title):
    """Phases as nodes at their energy level (one column per k), arrows weighted by transition
    counts."""
    import matplotlib.pyplot as plt

    counts = analysis.transition_counts(include_initial=True)
    visits = {}
    for run in analysis.runs:
        for label in set(run.path):
            visits[label] = visits.get(label, 0) + 1
    by_label = {p.label: p for p in critical_points}
    nodes = [label for label in visits if label in by_label]
    colors = phase_colors(list(by_label) + ["unknown"])

    def position(label):
        # One column per k (larger k to the left); within the 4-gons σ⁺ = 0, 1, 2 sit centre, left,
        # right, so an arrow 4 → 4⁺⁺ never runs through the 4⁺ node.
        p = by_label[label]
        shift = [0.0, -0.6, 0.6][min(p.sigma_plus, 2)] if p.k == 4 else 0.4 * p.sigma_plus
        return 2.0 * (max(p.k, 4) - 4) * -1 + 3.0 + shift + 0.15 * p.sigma_minus, p.loss

    fig, ax = plt.subplots(figsize=(7.5, 6))
    total = max(len(analysis.runs), 1)
    for (a, b), n in counts.items():
        if a not in by_label or b not in by_label:
            continue
        (x0, y0), (x1, y1) = position(a), position(b)
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            zorder=1,
            arrowprops=dict(
                arrowstyle="-|>",
                lw=0.8 + 6 * n / total,
                color="0.35",
                shrinkA=22,
                shrinkB=22,
                mutation_scale=16,
                connectionstyle="arc3,rad=0.12",
            ),
        )
        ax.text(
            (x0 + x1) / 2,
            (y0 + y1) / 2,
            f"{n}",
            fontsize=10,
            color="0.1",
            ha="center",
            va="center",
            bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.6"),
            zorder=3,
        )
    for label in nodes:
        x, y = position(label)
        size = 250 + 1500 * visits[label] / total
        ax.scatter([x], [y], s=size, color=colors[label], edgecolor="k", zorder=2)
        ax.annotate(
            f"{pretty_label(label)}  ({visits[label]} runs)",
            (x, y),
            xytext=(0, np.sqrt(size) / 2 + 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    off = sum(n for (a, b), n in counts.items() if a not in by_label or b not in by_label)
    if off:
        ax.text(
            0.01,
            0.01,
            f"{off} transitions to/from off-catalogue plateaus not drawn",
            transform=ax.transAxes,
            fontsize=8,
        )
    xs = [position(label)[0] for label in nodes] or [0]
    ys = [position(label)[1] for label in nodes] or [0]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 1.6)
    ax.set_ylim(min(ys) - 0.01, max(ys) + 0.01)
    columns = sorted({by_label[label].k for label in nodes})
    ax.set_xticks([3.0 - 2.0 * (k - 4) for k in columns], [f"{k}-gons" for k in columns])
    ax.set_ylabel("energy level (population loss of the critical point)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def main(args):
    store = ResultStore(args.out)
    store.write_config(common.settings(args))
    start = time.perf_counter()
    trajectory, ids, table = run_ensemble(args, store)
    elapsed = time.perf_counter() - start
    W, b = trajectory.params
    store.save_arrays(
        "trajectory",
        steps=trajectory.steps,
        W=W,
        b=b,
        train_loss=trajectory.train_loss,
        population_loss=trajectory.population_loss,
        is_finite=trajectory.is_finite,
        phase_ids=ids,
        phase_table=np.asarray(table),
    )
    labels = np.asarray(table, dtype=object)[ids]
    analysis = analyse_runs(
        trajectory.steps,
        trajectory.population_loss,
        num_features=args.num_features,
        phase_labels=labels,
    )
    points = critical_points(args.num_features)
    summary = analysis.summary()
    summary["transitions_per_run"] = np.bincount(analysis.num_transitions(True)).tolist()
    summary["classifier_final_phase_counts"] = dict(
        zip(*np.unique(labels[:, -1], return_counts=True))
    )
    summary["num_diverged_runs"] = int((~trajectory.is_finite[:, -1]).sum())
    # Wall time of this invocation (compilation, any chunks resumed from disk, classification):
    # throughput is measured in benchmarks/sgd_ensemble.py, not here.
    summary["ensemble_seconds"] = elapsed
    summary["catalogue"] = {p.label: p.loss for p in points}
    summary["runs"] = [
        {
            "path": " -> ".join(run.path),
            "plateaus": [
                [p.start_step, p.stop_step, p.loss, p.label, p.phase_label] for p in run.plateaus
            ],
        }
        for run in analysis.runs[:200]
    ]
    store.write_summary(summary)
    what = (
        f"c = {args.num_features}, n = {args.num_data}, batch {args.batch_size}, "
        f"lr {args.learning_rate}"
        if args.objective == "empirical"
        else f"c = {args.num_features}, exact potential, lr {args.learning_rate}"
    )
    title = f"SGD from near a 4-gon: {args.num_runs} runs ({what})"
    store.save_figure(
        "loss_curves",
        loss_figure(trajectory.steps, trajectory.population_loss, analysis, points, title),
    )
    store.save_figure(
        "transition_graph",
        transition_graph_figure(
            analysis,
            points,
            f"Dynamical transitions between energy levels ({args.num_runs} runs; "
            "edge: number of runs)",
        ),
    )
    print(
        f"{args.num_runs} runs × {args.num_steps} steps in {elapsed:.1f} s; "
        f"{summary['num_plateaus']} plateaus, "
        f"{100 * summary['fraction_plateaus_on_level']:.1f}% within 1e-3 of a catalogue level; "
        f"paths {summary['path_counts']}; wrote {args.out}"
    )
    return summary


if __name__ == "__main__":
    common.run_module(sys.modules[__name__])
