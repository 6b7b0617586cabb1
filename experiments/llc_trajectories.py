r"""λ̂ along SGD training: do loss and complexity move in opposite directions ("opposing
staircases")?

Question: along SGD trajectories of the TMS (c = 6, r = 2) started near a 4-gon, does every
transition between critical points lower the loss and raise the local learning coefficient, as the
Bayesian Antecedent Hypothesis (BAH) of Chen et al. (2023, §6) expects?

Method:

- **Trajectories**: the paper-protocol ensemble of :mod:`experiments.sgd_plateaus` (n = 1000, batch
  20, learning rate 0.005, 225 000 steps, 200 log-spaced checkpoints; 64 runs on CPU), either
  trained here with the same code and seed, or read from an existing sgd_plateaus output
  (``--from DIR``: its ``trajectory.npz``; the dataset is rebuilt from its ``config.json`` and
  checked against the recorded train losses).
- **Plateaus and transitions**: :func:`tmsjax.tms.plateaus.analyse_runs` on the exact potential (the
  same detector and thresholds as sgd_plateaus). An *observed transition* is a pair of consecutive
  plateaus of one run; the initial phase (the level nearest the loss at step 0) is no plateau and no
  critical point, so moves out of it are not BAH rows.
- **Which runs get λ̂** (a rule fixed before any λ̂ is seen, no seed search): every run with at least
  one observed transition, plus the same number of runs without one (the first by run index; at
  least 2), so the figure and table also show λ̂ on plateaus that SGD never leaves. ``--all-runs``
  takes every run.
- **Which checkpoints**: every checkpoint at step ≥ ``--min-step`` (default 500, the plateau
  detector's ``min_step``: before it no plateau can exist and λ̂ of a non-critical point means
  little), every ``--checkpoint-stride``-th of them, plus the last.
- **λ̂**: the paper's SGLD protocol at every chosen (run, checkpoint) in one compiled call
  (:func:`tmsjax.llc.llc_along_training`): full batch, ε = 1e-3, γ = 1, 4 chains × 500 steps, no
  burn-in, nβ = n / log n, on the dataset the runs trained on (as its exact sufficient statistics,
  :func:`tmsjax.tms.data.sparse_limit_stats`: the same loss, 4.6× faster). ``--llc-budget S``
  replaces the hand-set ε, γ and chain length by the library's calibration: one
  :func:`tmsjax.llc.auto_settings` per chosen run at its last checkpoint, the smallest ε of them
  for every checkpoint (one compiled program), and each λ̂ less its own estimated step bias
  (:func:`tmsjax.llc.corrected_llc`). The default stays the paper's protocol, which the figure
  reproduces. Measured on the CPU preset (``--llc-budget 4000``, 7 min on 2 cores): on the
  5-gon and 5⁺ plateaus λ̂ = 7.33 ± 0.11 and 8.23 ± 0.16 (exact 7 and 8.5; the paper's protocol
  gives 6.61 and 7.57 at this n = 1000), but 86% of the checkpoints escape, nearly all of those on
  4-gon plateaus, which SGD itself leaves: 4000 steps at γ = 1 find their exits where 500 do not,
  and 10 of 16 transitions read ΔL < 0 with Δλ̂ > 0 (16 of 16 with the paper's protocol).
- **BAH table**: for each observed transition, ΔL = (mean L_n over the later plateau) − (over the
  earlier) and Δλ̂ likewise from the plateaus' mean λ̂. A plateau's mean λ̂ uses its usable
  checkpoints (:func:`tmsjax.llc.usable`: no chain blew up or escaped; an escaped chain measures a
  lower phase, not this one; counts are reported); its error bar is the larger of the spread over
  those checkpoints / √count and the root-mean-square per-checkpoint standard error / √count.
  "Δλ̂ > 0 significant" means Δλ̂ > 2σ.

Outputs (``--out DIR``): config.json; summary.json (BAH table, λ̂ per plateau label versus theory,
verdict counts, escaped checkpoints, chosen runs); llc.npz (``steps``, ``llc`` (runs, T) and
``stderr`` at the chosen checkpoints, ``runs``: their indices in the ensemble, plus losses,
per-chain λ̂ (raw; ``llc`` and ``stderr`` are corrected under ``--llc-budget``), the per-chain
diagnostics (booleans ``non_finite``, ``escaped``, ``drifting``, ``low_acceptance`` and their
numbers) and ``usable``: what
``experiments.developmental_stages --llc DIR`` reads);
trajectory.npz (sgd_plateaus layout) when trained here; opposing_staircases.png;
loss_vs_complexity.png.

References:
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301, §6, Fig. 1 and 6.
  Lau et al. (2023), arXiv:2308.12108.

Usage:
  python -m experiments.llc_trajectories --out results/llc_trajectories               # trains (CPU)
  python -m experiments.llc_trajectories --out results/llc_trajectories --from results/sgd_plateaus
  python -m experiments.llc_trajectories --out results/llc_auto --from results/sgd_plateaus \
      --llc-budget 20000                                              # the library's calibration
"""

import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common, sgd_plateaus
from tmsjax import llc
from tmsjax.llc import LLCDiagnostics, LLCSettings
from tmsjax.llc.calibrate import MIN_STEPS
from tmsjax.results import ResultStore
from tmsjax.tms import losses
from tmsjax.tms.critical import critical_points
from tmsjax.tms.data import sparse_limit_stats
from tmsjax.tms.model import TMSParams
from tmsjax.tms.plateaus import analyse_runs
from tmsjax.tms.plotting import phase_colors, pretty_label

PRESETS = {
    # The ensemble itself follows sgd_plateaus' preset of the same name.
    "smoke": dict(min_step=0, checkpoint_stride=2, num_chains=2, llc_steps=20),
    "cpu": dict(min_step=500, checkpoint_stride=1, num_chains=4, llc_steps=500),
    "paper": dict(min_step=500, checkpoint_stride=1, num_chains=4, llc_steps=500),
}
#: A Δλ̂ counts as a significant increase above this many standard errors.
SIGNIFICANCE = 2.0


def add_arguments(parser):
    parser.add_argument(
        "--from",
        dest="source",
        default=None,
        help="an experiments.sgd_plateaus output folder: reuse its trajectory.npz instead of "
        "training",
    )
    parser.add_argument(
        "--num-runs", type=int, help="SGD runs when training here (default: sgd_plateaus' preset)"
    )
    parser.add_argument("--num-steps", type=int, help="SGD steps per run when training here")
    parser.add_argument(
        "--num-checkpoints", type=int, help="log-spaced checkpoints when training here"
    )
    parser.add_argument(
        "--all-runs",
        action="store_true",
        help="λ̂ on every run, not the transitions + controls rule",
    )
    parser.add_argument("--min-step", type=int, help="first SGD step with a λ̂ (preset)")
    parser.add_argument("--checkpoint-stride", type=int, help="λ̂ at every k-th checkpoint (preset)")
    parser.add_argument("--num-chains", type=int, help="SGLD chains per estimate (preset)")
    parser.add_argument("--llc-steps", type=int, help="SGLD steps per estimate (preset)")
    parser.add_argument("--step-size", type=float, default=1e-3, help="SGLD ε")
    parser.add_argument("--localization", type=float, default=1.0, help="SGLD γ")
    parser.add_argument("--llc-seed", type=int, default=1, help="seed of the SGLD chains")
    parser.add_argument(
        "--llc-budget",
        type=int,
        default=None,
        help="instead of --step-size, --localization and --llc-steps: tmsjax.llc.auto_settings "
        "at this many steps per chain, and λ̂ less its estimated step bias",
    )


def llc_settings(args) -> LLCSettings:
    """The λ̂ protocol: full batch, no burn-in, nβ = n / log n; ε, γ, chains, steps from flags."""
    return LLCSettings(
        step_size=args.step_size,
        localization=args.localization,
        num_chains=args.num_chains,
        num_steps=args.llc_steps,
    )


def auto_protocol(args, centers, stats) -> LLCSettings:
    """:func:`tmsjax.llc.auto_settings` at each chosen run's last checkpoint (the most developed,
    stiffest point of a run), keeping the smallest ε: one program for every checkpoint, whose step
    is safe at the stiffest of them; full batch, nβ = n / log n."""
    last = jax.tree.map(lambda x: x[:, -1], centers)
    base = LLCSettings(num_chains=args.num_chains)
    key = jax.random.key(args.llc_seed)
    candidates = [
        llc.auto_settings(
            key,
            losses.stats_loss,
            jax.tree.map(lambda x, i=run: x[i], last),
            stats,
            base,
            step_budget=args.llc_budget,
        )
        for run in range(last.W.shape[0])
    ]
    return min(candidates, key=lambda settings: settings.step_size)


def check(args):
    if args.checkpoint_stride < 1 or args.min_step < 0:
        raise ValueError("--checkpoint-stride must be positive and --min-step non-negative")
    if args.llc_budget is not None and args.llc_budget < MIN_STEPS:
        raise ValueError(f"--llc-budget must be at least {MIN_STEPS}, got {args.llc_budget}")
    llc_settings(args)  # a ValueError names the bad field


# ----------------------------------------------------------------------------------------------
# The ensemble: trained here or read from sgd_plateaus


def ensemble_args(args):
    """sgd_plateaus' arguments for the ensemble trained here (its preset, this seed and sizes)."""
    return common.configure(
        sgd_plateaus,
        args.out,
        preset=args.preset,
        seed=args.seed,
        no_progress=not args.progress,
        num_runs=args.num_runs,
        num_steps=args.num_steps,
        num_checkpoints=args.num_checkpoints,
    )


def load_or_train(args, store):
    """(ensemble settings, trajectory arrays dict, dataset, seconds spent training)."""
    if args.source is not None:
        source = Path(args.source)
        config = json.loads((source / "config.json").read_text())
        settings = config["settings"]
        if settings.get("objective", "empirical") != "empirical":
            raise ValueError(
                f"--from {source}: λ̂ needs a dataset, but that ensemble trained on the exact "
                "potential"
            )
        with np.load(source / "trajectory.npz") as data:
            arrays = {name: data[name] for name in data.files}
        return settings, arrays, sgd_plateaus.ensemble_dataset(settings), 0.0
    ensemble = ensemble_args(args)
    settings = common.settings(ensemble)
    if store.has("trajectory"):  # a re-run of this folder: reuse what was trained
        dataset = sgd_plateaus.ensemble_dataset(settings)
        return settings, store.load_arrays("trajectory"), dataset, 0.0
    start = time.perf_counter()
    trajectory, ids, table = sgd_plateaus.run_ensemble(ensemble)
    seconds = time.perf_counter() - start
    W, b = (np.asarray(x) for x in trajectory.params)
    arrays = dict(
        steps=np.asarray(trajectory.steps),
        W=W,
        b=b,
        train_loss=np.asarray(trajectory.train_loss),
        population_loss=np.asarray(trajectory.population_loss),
        is_finite=np.asarray(trajectory.is_finite),
        phase_ids=np.asarray(ids),
        phase_table=np.asarray(table),
    )
    store.save_arrays("trajectory", **arrays)
    return settings, arrays, sgd_plateaus.ensemble_dataset(settings), seconds


def check_dataset(arrays, dataset) -> float:
    """Largest |L_n recomputed − L_n recorded| at the last checkpoint: the rebuilt dataset must be
    the one trained on."""
    W, b, recorded = arrays["W"][:, -1], arrays["b"][:, -1], arrays["train_loss"][:, -1]
    finite = np.isfinite(recorded)
    if not finite.any():
        return 0.0
    recomputed = jax.vmap(losses.row_loss, in_axes=(0, None))(
        TMSParams(jnp.asarray(W[finite]), jnp.asarray(b[finite])), dataset
    )
    error = float(np.max(np.abs(np.asarray(recomputed) - recorded[finite])))
    if error > 1e-4 * max(1.0, float(np.max(np.abs(recorded[finite])))):
        raise ValueError(
            "the rebuilt dataset does not reproduce the recorded train losses "
            f"(max error {error:.2e}): "
            "the trajectory was not trained on sgd_plateaus' dataset for its seed"
        )
    return error


# ----------------------------------------------------------------------------------------------
# Choices made before any λ̂ is seen


def select_runs(analysis, is_finite, all_runs: bool = False) -> tuple[list[int], list[int]]:
    """(runs with ≥ 1 plateau-to-plateau transition, control runs without one), by run index.

    Controls: the first ``max(len(transitioning), 2)`` finite runs without a transition. Diverged
    runs are never chosen.
    """
    finite = [r for r in range(len(analysis.runs)) if bool(is_finite[r, -1])]
    moving = [r for r in finite if len(analysis.runs[r].plateau_path) >= 2]
    staying = [r for r in finite if r not in moving]
    if all_runs:
        return moving, staying
    return moving, staying[: max(len(moving), 2)]


def select_checkpoints(steps, min_step: int, stride: int) -> np.ndarray:
    """Indices of the checkpoints at step ≥ min_step, every `stride`-th, plus the last."""
    candidates = np.flatnonzero(np.asarray(steps) >= min_step)
    if candidates.size == 0:
        candidates = np.array([len(steps) - 1])
    return np.union1d(candidates[::stride], [len(steps) - 1])


# ----------------------------------------------------------------------------------------------
# Plateau means and the BAH table


def _mean_and_error(values, errors) -> tuple[float, float]:
    """Mean of a plateau's checkpoint λ̂ and its error bar: the larger of spread/√count and
    rms(se)/√count."""
    count = values.size
    if count == 0:
        return float("nan"), float("nan")
    spread = float(np.std(values, ddof=1) / np.sqrt(count)) if count > 1 else 0.0
    chains = float(np.sqrt(np.nanmean(errors**2) / count)) if np.any(np.isfinite(errors)) else 0.0
    return float(np.mean(values)), max(spread, chains)


def plateau_stats(
    plateau, checkpoints, llc_hat, stderr, usable, train_loss, population_loss
) -> dict:
    """Mean L_n, L and λ̂ over the λ̂ checkpoints inside one plateau (indices into the full
    trajectory).

    `checkpoints` are the full-trajectory indices of the columns of `llc_hat` (one run's row).
    ``llc``: the mean over checkpoints whose chains neither escaped nor blew up (`usable`), the
    estimate that measures this phase; ``llc_all``: over every finite checkpoint (the paper's
    protocol, no filtering). Escaped chains slide into a lower-loss phase and lower λ̂, so
    ``llc_all`` is biased down on plateaus with an exit (4-gons), which would inflate a Δλ̂ out of
    them.
    """
    inside = (checkpoints >= plateau.start) & (checkpoints < plateau.stop)
    good = inside & usable
    finite = inside & np.isfinite(llc_hat)
    mean, error = _mean_and_error(llc_hat[good], stderr[good])
    mean_all, error_all = _mean_and_error(llc_hat[finite], stderr[finite])
    sl = slice(plateau.start, plateau.stop)
    return {
        "label": plateau.label,
        "start_step": int(plateau.start_step),
        "stop_step": int(plateau.stop_step),
        "train_loss": float(np.mean(train_loss[sl])),
        "population_loss": float(plateau.loss),
        "llc": mean,
        "llc_stderr": error,
        "llc_all": mean_all,
        "llc_all_stderr": error_all,
        "num_checkpoints": int(inside.sum()),
        "num_used": int(good.sum()),
        "num_escaped_or_nonfinite": int((inside & ~usable).sum()),
    }


def bah_rows(run: int, plateaus: list[dict]) -> list[dict]:
    """One BAH row per pair of consecutive plateaus of a run (plateaus as from
    :func:`plateau_stats`)."""
    rows = []
    for before, after in zip(plateaus[:-1], plateaus[1:]):
        if before["label"] == after["label"]:
            continue  # the detector split one level in two (a noise burst): no transition
        delta_loss = after["train_loss"] - before["train_loss"]
        delta_llc = after["llc"] - before["llc"]
        delta_error = float(np.hypot(before["llc_stderr"], after["llc_stderr"]))
        finite = bool(np.isfinite(delta_llc))
        rows.append(
            {
                "run": run,
                "from": before["label"],
                "to": after["label"],
                "step": int(after["start_step"]),
                "loss_before": before["train_loss"],
                "loss_after": after["train_loss"],
                "delta_loss": delta_loss,
                "population_loss_before": before["population_loss"],
                "population_loss_after": after["population_loss"],
                "delta_population_loss": after["population_loss"] - before["population_loss"],
                "llc_before": before["llc"],
                "llc_before_stderr": before["llc_stderr"],
                "llc_after": after["llc"],
                "llc_after_stderr": after["llc_stderr"],
                "delta_llc": delta_llc,
                "delta_llc_stderr": delta_error,
                "delta_llc_all": after["llc_all"] - before["llc_all"],
                "delta_llc_all_stderr": float(
                    np.hypot(before["llc_all_stderr"], after["llc_all_stderr"])
                ),
                "num_checkpoints_before": before["num_used"],
                "num_checkpoints_after": after["num_used"],
                "loss_decreases": bool(delta_loss < 0),
                "llc_increases": finite and bool(delta_llc > 0),
                "llc_increase_significant": finite and bool(delta_llc > SIGNIFICANCE * delta_error),
                "consistent_with_bah": finite and bool(delta_loss < 0 and delta_llc > 0),
                "consistent_with_bah_all_checkpoints": bool(
                    delta_loss < 0 and after["llc_all"] > before["llc_all"]
                ),
            }
        )
    return rows


def llc_by_label(plateaus_by_run: dict, points) -> dict:
    """λ̂ per plateau label over runs: mean of the plateaus' means, their spread, and theory."""
    theory = {p.label: p.llc for p in points}
    groups: dict[str, list] = {}
    for plateaus in plateaus_by_run.values():
        for p in plateaus:
            groups.setdefault(p["label"], []).append(p)
    table = {}
    for label, plateaus in sorted(groups.items(), key=lambda item: -theory_loss(item[0], points)):
        values = np.asarray([p["llc"] for p in plateaus])
        values = values[np.isfinite(values)]
        every = np.asarray([p["llc_all"] for p in plateaus])
        every = every[np.isfinite(every)]
        checkpoints = sum(p["num_checkpoints"] for p in plateaus)
        table[label] = {
            "num_plateaus": len(plateaus),
            "llc_theory": theory.get(label),
            "llc_mean": float(values.mean()) if values.size else None,
            "llc_std_over_runs": float(values.std(ddof=1)) if values.size > 1 else None,
            "llc_stderr": float(values.std(ddof=1) / np.sqrt(values.size))
            if values.size > 1
            else None,
            "llc_all_mean": float(every.mean()) if every.size else None,
            "llc_all_stderr": float(every.std(ddof=1) / np.sqrt(every.size))
            if every.size > 1
            else None,
            "fraction_checkpoints_escaped": (
                sum(p["num_escaped_or_nonfinite"] for p in plateaus) / checkpoints
            )
            if checkpoints
            else None,
        }
    return table


def theory_loss(label, points) -> float:
    return next((p.loss for p in points if p.label == label), float("nan"))


# ----------------------------------------------------------------------------------------------
# Figures


def runs_to_show(analysis, moving, controls, limit: int = 4) -> list[int]:
    """The first run (by index) of each distinct transition path, then the first control run."""
    shown, paths = [], set()
    for r in moving:
        path = analysis.runs[r].plateau_path
        if path not in paths and len(shown) < limit - 1:
            paths.add(path)
            shown.append(r)
    for r in moving:  # room left: more transitioning runs before the control
        if len(shown) >= limit - 1:
            break
        if r not in shown:
            shown.append(r)
    return shown + controls[:1]


def plot_staircases(
    store, arrays, analysis, selected, checkpoints, llc_hat, stderr, usable, shown, points, settings
):
    import matplotlib.pyplot as plt

    steps = np.asarray(arrays["steps"])
    x = np.maximum(steps, 1)
    colors = phase_colors([p.label for p in points] + ["unknown"])
    theory = {p.label: p.llc for p in points}
    figure, axes = plt.subplots(
        len(shown), 1, figsize=(9.5, 2.7 * len(shown) + 0.6), sharex=True, squeeze=False
    )
    for axis, run in zip(axes[:, 0], shown):
        row = selected.index(run)
        labels_seen = []
        for plateau in analysis.runs[run].plateaus:
            lo = (
                x[plateau.start]
                if plateau.start == 0
                else np.sqrt(x[plateau.start] * x[plateau.start - 1])
            )
            hi = (
                x[plateau.stop - 1]
                if plateau.stop == len(x)
                else np.sqrt(x[plateau.stop - 1] * x[plateau.stop])
            )
            axis.axvspan(lo, hi, color=colors.get(plateau.label, "0.9"), alpha=0.45, lw=0)
            axis.text(
                np.sqrt(lo * hi),
                0.97,
                pretty_label(plateau.label),
                transform=axis.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=10,
            )
            labels_seen.append(plateau.label)
        axis.plot(x, arrays["train_loss"][run], color="C0", lw=2, label="train loss $L_n$")
        axis.set_xscale("log")
        axis.set_ylabel("loss $L_n$", color="C0")
        axis.tick_params(axis="y", colors="C0")
        twin = axis.twinx()
        ok = usable[row]
        xs = x[checkpoints]
        twin.errorbar(
            xs[ok],
            llc_hat[row, ok],
            yerr=stderr[row, ok],
            color="C3",
            lw=1.2,
            marker=".",
            ms=4,
            capsize=1.5,
            elinewidth=0.8,
            label=r"$\hat\lambda$",
        )
        if (~ok).any():
            twin.scatter(
                xs[~ok],
                llc_hat[row, ~ok],
                marker="x",
                color="k",
                s=18,
                zorder=4,
                label=r"$\hat\lambda$, chains escaped",
            )
        exact = [label for label in dict.fromkeys(labels_seen) if theory.get(label) is not None]
        for label in exact:
            twin.axhline(theory[label], color="C3", ls=":", lw=1)
        if exact:
            axis.set_title(
                "exact "
                + ", ".join(f"λ({pretty_label(label)}) = {theory[label]:g}" for label in exact),
                fontsize=9,
                loc="right",
                color="C3",
            )
        twin.set_ylabel(r"$\hat\lambda$", color="C3")
        twin.tick_params(axis="y", colors="C3")
        path = " → ".join(pretty_label(label) for label in analysis.runs[run].path)
        kind = "" if len(analysis.runs[run].plateau_path) >= 2 else "  (no transition: control)"
        axis.set_title(f"run {run}: {path}{kind}", fontsize=10, loc="left")
        axis.grid(alpha=0.3, which="major", axis="x")
    if checkpoints.size and steps[checkpoints[0]] > 10:
        # The λ̂ part starts at --min-step; a decade before it shows the approach to the first
        # plateau without spending half the width on the first steps.
        axes[-1, 0].set_xlim(steps[checkpoints[0]] / 10, x[-1] * 1.15)
    axes[-1, 0].set_xlabel("SGD step")
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="C0", lw=2),
        Line2D([], [], color="C3", marker=".", lw=1.2),
        Line2D([], [], color="C3", ls=":", lw=1),
        Line2D([], [], color="k", marker="x", lw=0),
    ]
    figure.legend(
        handles,
        [
            "train loss $L_n$ (left axis)",
            r"$\hat\lambda$ ± se (right axis)",
            "exact λ of the phase",
            "chains escaped (left out)",
        ],
        loc="lower center",
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    figure.suptitle(
        "Opposing staircases: the loss falls as $\\hat\\lambda$ rises "
        f"(n = {settings['num_data']}, batch "
        f"{settings['batch_size']}, lr {settings['learning_rate']}; shaded: loss plateaus)",
        fontsize=11,
    )
    figure.tight_layout(rect=(0, 0.04, 1, 0.97))
    store.save_figure("opposing_staircases", figure)


def plot_loss_vs_complexity(store, points, rows, by_label):
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5.5))
    visited = set(by_label)
    known = [p for p in points if p.llc is not None]
    top = max([p.loss for p in points if p.label in visited] + [p.loss for p in known]) + 0.008
    for point in known:
        axis.scatter(point.llc, point.loss, color="k", s=45, zorder=4)
        axis.annotate(
            f"{pretty_label(point.label)}  (λ = {point.llc:g})",
            (point.llc, point.loss),
            textcoords="offset points",
            xytext=(7, -3),
            fontsize=9,
        )
    for label, entry in by_label.items():
        if entry["llc_mean"] is None:
            continue
        loss = theory_loss(label, points)
        error = entry["llc_stderr"] or 0.0
        axis.errorbar(
            entry["llc_mean"],
            loss,
            xerr=error,
            marker="o",
            mfc="white",
            mec="C0",
            color="C0",
            ms=8,
            capsize=3,
            zorder=5,
        )
        axis.annotate(
            f"{pretty_label(label)}: "
            + r"$\hat\lambda$"
            + f" = {entry['llc_mean']:.2f} ({entry['num_plateaus']})",
            (entry["llc_mean"], loss),
            textcoords="offset points",
            xytext=(-8, 6),
            ha="right",
            fontsize=8,
            color="C0",
        )
    for point in points:  # levels with no known λ and never visited: named at the left edge
        if point.llc is None and point.label not in visited and point.loss <= top:
            axis.axhline(point.loss, color="0.85", lw=0.8, zorder=0)
            axis.annotate(
                f"{pretty_label(point.label)} (λ unknown)",
                (0.01, point.loss),
                xycoords=("axes fraction", "data"),
                fontsize=7,
                color="0.5",
                va="bottom",
            )
    for row in rows:
        if not (np.isfinite(row["llc_before"]) and np.isfinite(row["llc_after"])):
            continue
        color = "C2" if row["consistent_with_bah"] else "C3"
        axis.annotate(
            "",
            xy=(row["llc_after"], row["population_loss_after"]),
            xytext=(row["llc_before"], row["population_loss_before"]),
            arrowprops=dict(arrowstyle="->", color=color, alpha=0.45, lw=1.3),
            zorder=3,
        )
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="k", marker="o", lw=0),
        Line2D([], [], color="C0", marker="o", mfc="white", lw=0),
        Line2D([], [], color="C2", lw=1.3),
        Line2D([], [], color="C3", lw=1.3),
    ]
    axis.legend(
        handles,
        [
            "critical point at its exact λ",
            r"mean $\hat\lambda$ over plateaus at that level (count)",
            "observed transition, ΔL < 0 and Δλ̂ > 0",
            "observed transition, otherwise",
        ],
        fontsize=8,
        loc="upper right",
    )
    axis.set_xlabel(r"local learning coefficient $\lambda$ / $\hat\lambda$")
    axis.set_ylabel("population loss of the level")
    axis.set_ylim(min(p.loss for p in points) - 0.006, top)
    low = min(
        [e["llc_mean"] for e in by_label.values() if e["llc_mean"] is not None]
        + [p.llc for p in known]
    )
    axis.set_xlim(low - 0.8, max(p.llc for p in known) + 1.4)  # room for the names
    axis.set_title("Loss versus complexity: SGD transitions go down and to the right", fontsize=11)
    axis.grid(alpha=0.25)
    store.save_figure("loss_vs_complexity", figure)


# ----------------------------------------------------------------------------------------------


def main(args):
    store = ResultStore(args.out)
    store.write_config(common.settings(args))
    settings, arrays, dataset, train_seconds = load_or_train(args, store)
    dataset_error = check_dataset(arrays, dataset)
    steps = np.asarray(arrays["steps"])
    num_features = arrays["W"].shape[-1]
    points = critical_points(num_features)
    table = np.asarray(arrays["phase_table"], dtype=object)
    analysis = analyse_runs(
        steps,
        arrays["population_loss"],
        num_features=num_features,
        phase_labels=table[arrays["phase_ids"]],
    )
    moving, controls = select_runs(analysis, arrays["is_finite"], args.all_runs)
    selected = sorted(moving + controls)
    checkpoints = select_checkpoints(steps, args.min_step, args.checkpoint_stride)

    start = time.perf_counter()
    centers = TMSParams(
        jnp.asarray(arrays["W"][selected][:, checkpoints]),
        jnp.asarray(arrays["b"][selected][:, checkpoints]),
    )
    # The rows' exact sufficient statistics: the same L_n (λ̂ equal to ~1e-4) at O(c²) per
    # evaluation instead of O(cn): 4.6× faster here (benchmarks/llc_devinterp.py measures it).
    rows = np.asarray(dataset.x)[np.asarray(dataset.mask)]
    stats = jax.tree.map(lambda leaf: leaf[0], sparse_limit_stats(rows, [len(rows)]))
    auto = args.llc_budget is not None
    protocol = auto_protocol(args, centers, stats) if auto else llc_settings(args)
    cached = store.load_arrays("llc")
    reuse = (
        cached is not None
        and np.array_equal(cached["runs"], selected)
        and np.array_equal(cached["checkpoint_index"], checkpoints)
        and set(LLCDiagnostics._fields) <= set(cached)  # an llc.npz of the per-chain booleans
    )
    if reuse:
        llc_hat, stderr, per_chain = cached["llc"], cached["stderr"], cached["llc_per_chain"]
        compile_and_run = None
        diagnostics = LLCDiagnostics(*(cached[name] for name in LLCDiagnostics._fields))
    else:
        key = jax.random.key(args.llc_seed)
        result = llc.llc_along_training(key, losses.stats_loss, centers, stats, protocol)
        if auto:
            llc_hat, stderr = llc.corrected_llc(result)
        else:
            llc_hat, stderr = np.asarray(result.llc), np.asarray(result.stderr)
        per_chain = np.asarray(result.llc_per_chain)
        diagnostics = LLCDiagnostics(*(np.asarray(x) for x in result.diagnostics))
        compile_and_run = time.perf_counter() - start
        store.save_arrays(
            "llc",
            steps=steps[checkpoints],
            llc=llc_hat,
            stderr=stderr,
            runs=np.asarray(selected, dtype=np.int64),
            checkpoint_index=checkpoints,
            train_loss=arrays["train_loss"][selected][:, checkpoints],
            population_loss=arrays["population_loss"][selected][:, checkpoints],
            llc_per_chain=per_chain,
            usable=np.asarray(llc.usable(diagnostics)),
            **diagnostics._asdict(),
        )
    usable = np.asarray(llc.usable(diagnostics))
    verdicts = llc.grid_verdicts(diagnostics)

    plateaus_by_run, rows = {}, []
    for row, run in enumerate(selected):
        plateaus = [
            plateau_stats(
                p,
                checkpoints,
                llc_hat[row],
                stderr[row],
                usable[row],
                arrays["train_loss"][run],
                arrays["population_loss"][run],
            )
            for p in analysis.runs[run].plateaus
        ]
        plateaus_by_run[run] = plateaus
        rows += bah_rows(run, plateaus)
    by_label = llc_by_label(plateaus_by_run, points)

    verdict_counts = llc.problem_counts(diagnostics)
    escaped = [
        {
            "run": int(selected[r]),
            "step": int(steps[checkpoints[c]]),
            "llc": float(llc_hat[r, c]),
            "verdict": str(verdicts[r, c]),
            "on_plateau": next(
                (
                    p.label
                    for p in analysis.runs[selected[r]].plateaus
                    if p.start <= checkpoints[c] < p.stop
                ),
                None,
            ),
        }
        for r, c in zip(*np.nonzero(~usable))
    ]
    transition_counts: dict[str, int] = {}
    for r in rows:
        name = f"{r['from']} -> {r['to']}"
        transition_counts[name] = transition_counts.get(name, 0) + 1
    summary = {
        "question": (
            "Does every SGD transition lower the loss and raise λ̂ (Bayesian Antecedent Hypothesis)?"
        ),
        "source": args.source or "trained here (experiments.sgd_plateaus.run_ensemble)",
        "ensemble": settings,
        "dataset_check_max_error": dataset_error,
        "llc_protocol": {
            "rule": (
                f"tmsjax.llc.auto_settings at a budget of {args.llc_budget} steps, the smallest ε "
                "over the chosen runs' last checkpoints; λ̂ less its estimated step bias"
                if auto
                else "the paper's (Chen et al. 2023, App. K)"
            ),
            "step_size": protocol.step_size,
            "localization": protocol.localization,
            "num_chains": protocol.num_chains,
            "num_steps": protocol.num_steps,
            "num_burnin": protocol.num_burnin,
            "thinning": protocol.thinning,
            "batch": "full",
            "num_data": int(settings["num_data"]),
            "nbeta": float(llc.default_nbeta(settings["num_data"])),
            "sampler": repr(protocol.sampler),
            "usable_rule": "no chain escaped or blew up (tmsjax.llc.usable)",
        },
        "run_rule": (
            "every run with >= 1 plateau-to-plateau transition, plus as many without "
            "(first by index, at least 2)"
            if not args.all_runs
            else "every finite run"
        ),
        "num_runs_in_ensemble": len(analysis.runs),
        "runs_transitioning": moving,
        "runs_control": controls,
        "num_checkpoints_per_run": int(checkpoints.size),
        "checkpoint_steps": [int(steps[checkpoints[0]]), int(steps[checkpoints[-1]])],
        "num_estimates": int(llc_hat.size),
        "llc_seconds": compile_and_run,
        "train_seconds": train_seconds,
        "num_transitions": len(rows),
        "transition_counts": transition_counts,
        "num_loss_decreases": int(sum(r["loss_decreases"] for r in rows)),
        "num_llc_increases": int(sum(r["llc_increases"] for r in rows)),
        "num_consistent_with_bah": int(sum(r["consistent_with_bah"] for r in rows)),
        "num_consistent_with_bah_all_checkpoints": int(
            sum(r["consistent_with_bah_all_checkpoints"] for r in rows)
        ),
        "num_significant_llc_increase": int(sum(r["llc_increase_significant"] for r in rows)),
        "bah_table": rows,
        "llc_by_plateau_label": by_label,
        "plateaus": {str(run): plateaus for run, plateaus in plateaus_by_run.items()},
        "verdict_counts": verdict_counts,
        "num_escaped_or_nonfinite_checkpoints": len(escaped),
        "escaped_checkpoints": escaped[:100],
    }
    store.write_summary(summary)
    shown = runs_to_show(analysis, moving, controls)
    plot_staircases(
        store,
        arrays,
        analysis,
        selected,
        checkpoints,
        llc_hat,
        stderr,
        usable,
        shown,
        points,
        settings,
    )
    plot_loss_vs_complexity(store, points, rows, by_label)
    timing = "reused llc.npz" if compile_and_run is None else f"{compile_and_run:.1f} s"
    print(
        f"λ̂ at {llc_hat.size} checkpoints ({len(selected)} runs × {checkpoints.size}; {timing}); "
        f"{len(rows)} transitions, {summary['num_consistent_with_bah']} with ΔL < 0 and Δλ̂ > 0 "
        f"({summary['num_significant_llc_increase']} significant); λ̂ by plateau: "
        + ", ".join(
            f"{k}: {v['llc_mean']:.2f}" for k, v in by_label.items() if v["llc_mean"] is not None
        )
    )
    return summary


if __name__ == "__main__":
    common.run_module(sys.modules[__name__])
