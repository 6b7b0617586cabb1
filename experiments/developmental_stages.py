r"""The Developmental Stages of TMS: an animation of one SGD run passing through several k-gon
phases.

Question: what does a dynamical transition look like in weight space? The "Growth and Form in a Toy
Model of Superposition" post animates one run that moves 4 → 4⁺ → 5: the columns of W (the features'
embeddings in the plane) rearrange from a square into a pentagon while the loss drops from one
energy level to the next.

Method: train an ensemble exactly as :mod:`experiments.sgd_plateaus` (or read its
``trajectory.npz`` with ``--from DIR``), find plateaus and paths with :mod:`tmsjax.tms.plateaus`,
and pick the run automatically: the most transitions on its path, ties broken by the most plateaus,
then the lowest final loss (``--run`` overrides; seeds are never searched). The GIF (matplotlib +
pillow) shows, per checkpoint,

- the columns :math:`W_i` as arrows in the plane with the convex hull of the present columns (those
  at least half as long as the longest, the classifier's rule),
- the biases :math:`b_i` as bars coloured by sign (positive: the output fires on every input),
- the exact potential against steps (log x) with the catalogue energy levels named and a moving
  marker,
- optionally the local learning coefficient :math:`\hat\lambda` along the trajectory, the "opposing
  staircases" of loss and complexity: ``--llc PATH`` with PATH an
  :mod:`experiments.llc_trajectories` output folder (its ``llc.npz`` is read) or any npz with
  ``steps`` and ``llc``: (T,) for the run named by ``--run`` (required for such a file), or
  (runs, T) with an optional ``runs`` array naming the ensemble run of each row (then the chosen run
  must be among them). ``--from DIR`` also picks up ``DIR/llc.npz`` when it is there
  (llc_trajectories writes both files when it trains). An ``llc.npz`` that carries the exact losses
  is checked against the trajectory, so λ̂ of another ensemble is refused rather than drawn.

Writes ``DIR/config.json``, ``DIR/developmental_stages.gif``, ``DIR/final_frame.png`` and
``DIR/summary.json`` (the chosen run, its path and plateaus).

References:
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301, §6; "Growth and Form in a Toy Model of
  Superposition" (seed document), the Developmental Stages animation.

Usage:
  python -m experiments.developmental_stages --out results/stages
  python -m experiments.developmental_stages --out results/stages --from results/sgd
  python -m experiments.developmental_stages --out results/stages --from results/sgd \
      --llc results/llc_trajectories
"""

import sys
from pathlib import Path

import numpy as np

from experiments import common, sgd_plateaus
from tmsjax.results import ResultStore
from tmsjax.tms.critical import critical_points
from tmsjax.tms.plateaus import analyse_runs
from tmsjax.tms.plotting import draw_energy_levels, pretty_label

# The ensemble trained here (no --from) follows sgd_plateaus' preset of the same name.
PRESETS = {"smoke": {"frames": 5}, "cpu": {"frames": 90}, "paper": {"frames": 90}}


def add_arguments(parser):
    parser.add_argument(
        "--from",
        dest="source",
        default=None,
        help="an experiments.sgd_plateaus output folder to read",
    )
    parser.add_argument(
        "--num-runs", type=int, default=None, help="number of SGD runs to choose from"
    )
    parser.add_argument("--num-steps", type=int, default=None, help="SGD steps per run")
    parser.add_argument(
        "--run", type=int, default=None, help="animate this run instead of choosing one"
    )
    parser.add_argument("--frames", type=int, default=None, help="at most this many frames")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument(
        "--llc",
        default=None,
        help="an llc_trajectories output folder, or an npz with `steps` and `llc` "
        "((T,) or (runs, T))",
    )


def check(args):
    if args.frames < 2:
        raise ValueError("--frames must be at least 2")


def choose_run(analysis, final_losses) -> int:
    """The run with the most transitions, then the most plateaus, then the lowest final loss."""
    scores = [
        (len(run.path) - 1, len(run.plateaus), -float(np.nan_to_num(loss, nan=np.inf)))
        for run, loss in zip(analysis.runs, final_losses)
    ]
    return int(max(range(len(scores)), key=lambda r: scores[r]))


def _hull(points):
    """Convex hull vertices (counter-clockwise) of 2-D points; fewer than 3 points are returned as
    is."""
    if len(points) < 3:
        return points
    from scipy.spatial import ConvexHull, QhullError

    try:
        return points[ConvexHull(points).vertices]
    except QhullError:  # collinear columns: no area to draw
        return points


def animate(
    steps,
    W,
    b,
    losses,
    critical_points,
    *,
    llc=None,
    llc_steps=None,
    llc_stderr=None,
    labels=None,
    max_frames=90,
    title="",
):
    """A matplotlib FuncAnimation of one trajectory.

    Args:
      steps: checkpoint steps (T,).
      W: weights (T, 2, c); b: biases (T, c); losses: exact potential (T,).
      critical_points: the catalogue (energy levels drawn on the loss panel).
      llc: optional λ̂ along the trajectory (at `llc_steps`, default `steps`): adds a panel, with the
        exact λ of the catalogue points the run visits as dotted lines.
      llc_stderr: optional standard errors of `llc` (a shaded band).
      labels: optional phase label per checkpoint, shown in the title.
      max_frames: frames are spread evenly over the (log-spaced) checkpoints.
      title: figure title.

    Returns:
      (figure, animation).
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    steps, W, b, losses = (np.asarray(v) for v in (steps, W, b, losses))
    num_features = W.shape[-1]
    frames = np.unique(
        np.round(np.linspace(0, len(steps) - 1, min(max_frames, len(steps)))).astype(int)
    )
    x = np.maximum(steps, 1)
    fig = plt.figure(figsize=(11, 8))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.15, 1])
    ax_w, ax_b = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_loss = fig.add_subplot(grid[1, :] if llc is None else grid[1, 0])
    ax_llc = None if llc is None else fig.add_subplot(grid[1, 1])

    finite = losses[np.isfinite(losses)]
    low, high = float(finite.min()) - 0.006, float(finite.max()) + 0.004
    draw_energy_levels(ax_loss, [p for p in critical_points if low <= p.loss <= high])
    ax_loss.plot(x, losses, color="C0", lw=1.5)
    (marker,) = ax_loss.plot([], [], "o", color="C3", ms=8, zorder=5)
    ax_loss.set(
        xscale="log",
        ylim=(low, high),
        xlim=(x[0], x[-1] * 1.2),
        xlabel="SGD step",
        ylabel="population loss L(w_t)",
    )
    ax_loss.set_title("loss: a staircase of critical energy levels", fontsize=10)
    ax_loss.grid(alpha=0.25, which="both")
    llc_marker = None
    if ax_llc is not None:
        llc = np.asarray(llc, dtype=float)
        llc_x = np.maximum(np.asarray(steps if llc_steps is None else llc_steps), 1)
        if llc_stderr is not None:
            error = np.asarray(llc_stderr, dtype=float)
            ax_llc.fill_between(
                llc_x, llc - 2 * error, llc + 2 * error, color="C2", alpha=0.2, lw=0, label="± 2 se"
            )
        ax_llc.plot(llc_x, llc, color="C2", lw=1.5, marker=".", ms=3, label=r"$\hat\lambda$ (SGLD)")
        (llc_marker,) = ax_llc.plot([], [], "o", color="C3", ms=8, zorder=5)
        visited = {str(label) for label in labels} if labels is not None else set()
        exact = [
            p for p in critical_points if p.llc is not None and (p.label in visited or not visited)
        ]
        for point in exact:
            ax_llc.axhline(point.llc, color="0.4", lw=0.8, ls=":")
            ax_llc.annotate(
                f"λ({pretty_label(point.label)}) = {point.llc:g}",
                xy=(0.01, point.llc),
                xycoords=("axes fraction", "data"),
                xytext=(0, 2),
                textcoords="offset points",
                fontsize=7,
                color="0.3",
                va="bottom",
            )
        finite_llc = llc[np.isfinite(llc)]
        if finite_llc.size:
            top = max([float(finite_llc.max())] + [p.llc for p in exact])
            ax_llc.set_ylim(min(0.0, float(finite_llc.min())) - 0.3, top + 1.0)
        # The loss panel's step range, so the two staircases line up.
        ax_llc.set(
            xscale="log",
            xlim=(x[0], x[-1] * 1.2),
            xlabel="SGD step",
            ylabel=r"$\hat\lambda$ (local learning coefficient)",
        )
        ax_llc.set_title("complexity rises as the loss falls", fontsize=10)
        ax_llc.legend(loc="lower right", fontsize=7)
        ax_llc.grid(alpha=0.25, which="major")

    radius = 1.1 * float(np.nanmax(np.linalg.norm(W, axis=-2)))
    bias_limit = 1.1 * float(np.nanmax(np.abs(b)))
    colors = [plt.get_cmap("tab10")(i) for i in range(num_features)]

    def draw(t):
        columns = W[t].T
        ax_w.clear()
        norms = np.linalg.norm(columns, axis=-1)
        present = columns[norms >= 0.5 * norms.max()] if norms.max() > 0 else columns[:0]
        hull = _hull(present)
        if len(hull) >= 3:
            ax_w.fill(hull[:, 0], hull[:, 1], color="0.85", zorder=0)
            ax_w.plot(*np.vstack([hull, hull[:1]]).T, color="0.5", lw=1, zorder=1)
        for i, (u, v) in enumerate(columns):
            ax_w.annotate(
                "",
                xy=(u, v),
                xytext=(0, 0),
                arrowprops=dict(arrowstyle="-|>", color=colors[i], lw=2),
            )
            ax_w.text(
                1.08 * u,
                1.08 * v,
                f"{i + 1}",
                color=colors[i],
                fontsize=9,
                ha="center",
                va="center",
            )
        ax_w.set(
            xlim=(-radius, radius),
            ylim=(-radius, radius),
            aspect="equal",
            xlabel="hidden unit 1",
            ylabel="hidden unit 2",
        )
        ax_w.set_title("columns $W_i$ and their convex hull", fontsize=10)
        ax_w.grid(alpha=0.2)
        ax_b.clear()
        ax_b.bar(np.arange(1, num_features + 1), b[t], color=np.where(b[t] > 0, "C3", "C0"))
        ax_b.axhline(0, color="k", lw=0.8)
        ax_b.axhline(1 / (2 * num_features), color="C3", lw=0.8, ls=":", label=r"$b^+ = 1/2c$")
        ax_b.set(ylim=(-bias_limit, bias_limit), xlabel="feature i", ylabel="bias $b_i$")
        ax_b.set_title("biases $b_i$ (red: positive, blue: negative)", fontsize=10)
        ax_b.legend(loc="lower right", fontsize=8)
        marker.set_data([x[t]], [losses[t]])
        if llc_marker is not None:
            # The latest λ̂ checkpoint at or before this step (none before the first one).
            near = int(np.searchsorted(llc_x, x[t], side="right")) - 1
            llc_marker.set_data(([llc_x[near]], [llc[near]]) if near >= 0 else ([], []))
        phase = f" · phase {pretty_label(str(labels[t]))}" if labels is not None else ""
        fig.suptitle(f"{title}\nstep {steps[t]:,} · L = {losses[t]:.5f}{phase}", fontsize=11)
        return []

    fig.tight_layout(rect=(0, 0, 1, 0.9))
    # Frames redraw the axes after this layout: leave room between the rows for their labels.
    fig.subplots_adjust(hspace=0.32)
    animation = FuncAnimation(
        fig, draw, frames=list(frames) + [frames[-1]] * 6, blit=False
    )  # hold the last frame
    animation.draw_tms_frame = draw  # a handle to redraw any checkpoint, e.g. for a still image
    return fig, animation


def _load_or_train(args):
    """(steps, W, b, population_loss, phase labels (runs, T), ensemble settings) from --from or a
    fresh ensemble."""
    if args.source is not None:
        with np.load(Path(args.source) / "trajectory.npz") as data:
            table = np.asarray(data["phase_table"], dtype=object)
            return (
                data["steps"],
                data["W"],
                data["b"],
                data["population_loss"],
                table[data["phase_ids"]],
                None,
            )
    ensemble_args = common.configure(
        sgd_plateaus,
        args.out,
        preset=args.preset,
        seed=args.seed,
        no_progress=True,
        num_runs=args.num_runs,
        num_steps=args.num_steps,
    )
    trajectory, ids, table = sgd_plateaus.run_ensemble(ensemble_args)
    W, b = trajectory.params
    labels = np.asarray(table, dtype=object)[ids]
    losses = trajectory.population_loss
    return trajectory.steps, W, b, losses, labels, common.settings(ensemble_args)


def llc_file(args) -> Path | None:
    """The λ̂ file to draw: --llc (a folder means its llc.npz), else --from's llc.npz if present."""
    if args.llc is not None:
        path = Path(args.llc)
        path = path / "llc.npz" if path.is_dir() else path
        if not path.exists():
            raise ValueError(f"--llc {args.llc}: no such file (a folder must hold llc.npz)")
        return path
    if args.source is not None and (Path(args.source) / "llc.npz").exists():
        return Path(args.source) / "llc.npz"
    return None


def load_llc(path: Path, run: int, steps, population_loss, *, run_given: bool = True):
    """(llc (T',), steps (T',), stderr or None, note) of ensemble run `run`; llc None when it has
    no λ̂.

    Rows of a (runs, T') file are ensemble runs named by its ``runs`` array (default 0..runs-1). A
    (T',) file names no run, so it is accepted only for a run chosen with ``--run`` (`run_given`),
    never for one picked automatically. When the file carries ``population_loss`` at its steps
    ((T',) or (runs, T') like ``llc``), it must match this trajectory's for that run.
    """
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    llc, llc_steps = np.asarray(arrays["llc"], dtype=float), np.asarray(arrays["steps"])
    stderr = arrays.get("stderr")
    if llc.ndim == 1:
        if not run_given:
            raise ValueError(
                f"{path}: a 1-d λ̂ file names no run; pass --run to say which run it belongs to"
            )
        row = None
    elif llc.ndim == 2:
        runs = np.asarray(arrays.get("runs", np.arange(llc.shape[0])))
        matches = np.flatnonzero(runs == run)
        if matches.size == 0:
            return None, None, None, f"run {run} has no λ̂ in {path} (runs {runs.tolist()})"
        row = int(matches[0])
        llc = llc[row]
        stderr = None if stderr is None else np.asarray(stderr)[row]
    else:
        raise ValueError(f"{path}: llc must have shape (T,) or (runs, T), got {llc.shape}")
    if llc.shape != llc_steps.shape:
        raise ValueError(f"{path}: llc {llc.shape} and steps {llc_steps.shape} disagree")
    if "population_loss" in arrays:
        index = np.searchsorted(steps, llc_steps)
        if np.any(index >= len(steps)) or np.any(
            np.asarray(steps)[np.minimum(index, len(steps) - 1)] != llc_steps
        ):
            raise ValueError(f"{path}: its steps are not checkpoints of this trajectory")
        recorded = np.asarray(arrays["population_loss"])
        recorded = recorded if row is None else recorded[row]
        if recorded.shape != llc_steps.shape:
            raise ValueError(
                f"{path}: population_loss {recorded.shape} does not match llc's steps "
                f"{llc_steps.shape}"
            )
        expected = np.asarray(population_loss[run])[index]
        if not np.allclose(expected, recorded, rtol=1e-5, atol=1e-7, equal_nan=True):
            raise ValueError(
                f"{path}: its losses differ from this trajectory's: λ̂ of another ensemble"
            )
    return llc, llc_steps, stderr, f"λ̂ of run {run} from {path}"


def main(args):
    from matplotlib.animation import PillowWriter

    store = ResultStore(args.out)
    store.write_config(common.settings(args))
    steps, W, b, losses, labels, ensemble = _load_or_train(args)
    num_features = W.shape[-1]
    analysis = analyse_runs(steps, losses, num_features=num_features, phase_labels=labels)
    run = choose_run(analysis, losses[:, -1]) if args.run is None else args.run
    if not 0 <= run < W.shape[0]:
        raise ValueError(f"--run must lie in [0, {W.shape[0]}), got {run}")
    llc = llc_steps = llc_stderr = None
    llc_path, llc_note = llc_file(args), None
    if llc_path is not None:
        llc, llc_steps, llc_stderr, llc_note = load_llc(
            llc_path, run, steps, losses, run_given=args.run is not None
        )
        print(llc_note)
    path = " → ".join(pretty_label(label) for label in analysis.runs[run].path)
    title = f"Developmental stages of TMS (c = {num_features}): run {run}, path {path}"
    fig, animation = animate(
        steps,
        W[run],
        b[run],
        losses[run],
        critical_points(num_features),
        llc=llc,
        llc_steps=llc_steps,
        llc_stderr=llc_stderr,
        labels=labels[run],
        max_frames=args.frames,
        title=title,
    )
    gif = store.path("developmental_stages.gif")
    animation.save(gif, writer=PillowWriter(fps=args.fps), dpi=80)
    animation.draw_tms_frame(len(steps) - 1)
    store.save_figure("final_frame", fig)
    summary = {
        "run": run,
        "path": list(analysis.runs[run].path),
        "num_transitions": len(analysis.runs[run].path) - 1,
        "plateaus": [p._asdict() for p in analysis.runs[run].plateaus],
        "num_runs_considered": W.shape[0],
        "runs_with_this_many_transitions": int(
            np.sum(analysis.num_transitions(True) == len(analysis.runs[run].path) - 1)
        ),
        "source": args.source,
        "ensemble_settings": ensemble,
        "llc": None if llc_path is None else str(llc_path),
        "llc_note": llc_note,
        "llc_panel": llc is not None,
    }
    store.write_summary(summary)
    print(f"run {run}: {' -> '.join(analysis.runs[run].path)}; wrote {gif}")
    return summary


if __name__ == "__main__":
    common.run_module(sys.modules[__name__])
