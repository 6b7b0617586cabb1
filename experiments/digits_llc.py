r"""λ̂ along the training of a real network: an MLP on scikit-learn's digits, next to its loss.

Question: how does the local learning coefficient of a small MLP (64 → hidden → 10, ReLU,
cross-entropy) on real data move while it trains, against its train and test loss, and which of
those estimates can be trusted (the health verdict of each)?

Method: scikit-learn's bundled 8×8 digits (1797 images, no download), split 70/30 by a fixed
permutation (:func:`tmsjax.transitions.tasks.digits.load_digits_split`). ``--num-runs`` seeds train
at once on the training engine (one vmapped program, :func:`tmsjax.training.engine.run_ensemble`)
with Adam, recording the parameters, train/test loss and accuracy at log-spaced steps. The λ̂
settings are calibrated once, at the last checkpoint of the first run
(:func:`tmsjax.llc.calibrate`: a grid ε × γ at nβ = n / log n, n the training set, and its stable
region); λ̂ is then estimated with those settings at ``--num-llc-checkpoints`` of the checkpoints
of every run in one compiled call (:func:`tmsjax.llc.llc_along_training`). The default sampler is
MALA: exact for any ε, so along ε the grid shows only relaxation (too small an ε drifts) and
acceptance (too large an ε stops moving), not SGLD's discretisation bias.

Why the presets pass their own ε grid. At γ = 100 this network's λ̂ is flat (about 4) over ε from
about 5e-5 to 1e-3, but the stable-region rule needs three consecutive all-clear cells that agree
pairwise. Chains of a thousand or two steps have not quite settled at the small-ε end, so on
calibrate's default grid (7 values over 3 decades, 2-3 cells on the plateau) λ̂ can still creep up
across the three cells: measured on the docs example (1000 MALA steps, hidden 32, 2000 Adam
steps), seeds 0 and 2 calibrate and seed 1 finds no stable cell (at γ = 100: 3.36, 3.95, 4.06,
4.23 over ε 5e-5..5e-4; no cell drifting). 9 values over 1.5 decades leave 5-7 cells on the
plateau. (An earlier drift test, batch means of a short second half, also called some of these
chains "drifting": their autocorrelation, about 1/(εγ) steps, was longer than its batches. The
drift test now uses an autocorrelation-aware standard error, :mod:`tmsjax.llc.health`.) At γ = 10
λ̂ is near 18-20 and the verdicts say "localization-limited": λ̂ depends strongly on γ on this
network, and the calibration takes the smallest stable γ. Should no cell be stable, the run says so
in the summary and falls back to ``--step-size`` and ``--localization``.

Outputs (``--out DIR``): config.json; summary.json (the calibration's ε, γ, nβ and reason; per λ̂
checkpoint and run: λ̂, standard error, verdict, usable, and the losses; timings); digits_llc.npz
(every array); llc_along_training.png (λ̂ ± se and the train/test loss against the step, log x;
estimates with warnings hollow, unusable ones crossed); calibration.png (the ε × γ grid, stable
cells filled, the chosen one ringed).

References:
  Lau, Furman, Wang, Murfet, Wei (2023), arXiv:2308.12108 (λ̂, localization, SGLD settings).
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301 (λ̂ along training).
"""

import dataclasses
import sys
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from tmsjax import llc
from tmsjax.llc import MALA, SGLD, LLCSettings
from tmsjax.results import ResultStore
from tmsjax.training.engine import init_train_state, optimizer_step, run_ensemble
from tmsjax.training.schedule import checkpoint_schedule
from tmsjax.transitions.tasks.base import softmax_cross_entropy, stack_modules
from tmsjax.transitions.tasks.digits import load_digits_split

PRESETS = {
    "smoke": dict(
        num_runs=1,
        hidden=8,
        num_steps=60,
        num_checkpoints=6,
        num_llc_checkpoints=3,
        llc_from_step=1,
        num_chains=2,
        llc_steps=60,
        llc_burnin=20,
        localizations=[100.0],
        step_sizes=np.geomspace(3e-5, 1e-3, 3).tolist(),
    ),
    # About 65 s on two CPU cores under a load of 3 (time python -m experiments.digits_llc): the
    # calibration (9 cells) and λ̂ along training (12 cells) are each ~60k full-batch MALA steps.
    "cpu": dict(
        num_runs=2,
        hidden=32,
        num_steps=2000,
        num_checkpoints=40,
        num_llc_checkpoints=6,
        llc_from_step=50,
        num_chains=4,
        llc_steps=1500,
        llc_burnin=500,
        localizations=[100.0],
        step_sizes=np.geomspace(3e-5, 1e-3, 9).tolist(),
    ),
    "paper": dict(
        num_runs=8,
        hidden=64,
        num_steps=10_000,
        num_checkpoints=100,
        num_llc_checkpoints=20,
        llc_from_step=100,
        num_chains=8,
        llc_steps=4000,
        llc_burnin=1000,
        localizations=[1.0, 10.0, 100.0],
        step_sizes=np.geomspace(1e-5, 3e-3, 13).tolist(),
    ),
}

SAMPLERS = {"mala": MALA(), "sgld": SGLD()}


def add_arguments(parser):
    parser.add_argument("--num-runs", type=int, help="seeds trained at once (preset)")
    parser.add_argument("--hidden", type=int, help="width of the hidden layer (preset)")
    parser.add_argument("--num-steps", type=int, help="Adam steps (preset)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--batch-size", type=int, default=128, help="training minibatch; 0 for full batch"
    )
    parser.add_argument(
        "--num-checkpoints", type=int, help="log-spaced checkpoints of the loss (preset)"
    )
    parser.add_argument(
        "--num-llc-checkpoints", type=int, help="of those, how many get a λ̂ (preset)"
    )
    parser.add_argument(
        "--llc-from-step", type=int, help="λ̂ only at checkpoints from this step on (preset)"
    )
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), default="mala")
    parser.add_argument("--num-chains", type=int, help="chains per estimate (preset)")
    parser.add_argument("--llc-steps", type=int, help="steps per chain, burn-in included (preset)")
    parser.add_argument("--llc-burnin", type=int, help="burn-in steps per chain (preset)")
    parser.add_argument(
        "--localizations", type=float, nargs="+", help="calibration's γ grid (preset)"
    )
    parser.add_argument(
        "--step-sizes", type=float, nargs="+", help="calibration's ε grid, ascending (preset)"
    )
    parser.add_argument(
        "--step-size", type=float, default=1e-4, help="ε if no calibration cell is stable"
    )
    parser.add_argument(
        "--localization", type=float, default=100.0, help="γ if no calibration cell is stable"
    )


def llc_settings(args) -> LLCSettings:
    """The chain settings of every estimate; the calibration chooses ε and γ (nβ = n / log n)."""
    return LLCSettings(
        step_size=args.step_size,
        localization=args.localization,
        num_chains=args.num_chains,
        num_steps=args.llc_steps,
        num_burnin=args.llc_burnin,
        sampler=SAMPLERS[args.sampler],
    )


def check(args):
    settings = llc_settings(args)  # a ValueError names the bad field
    if settings.num_chains < 2:
        raise ValueError("--num-chains must be at least 2 (calibration compares standard errors)")
    names = ("num_runs", "hidden", "num_steps", "num_checkpoints", "num_llc_checkpoints")
    for name in (*names, "llc_from_step"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    if args.num_llc_checkpoints > args.num_checkpoints:
        raise ValueError("--num-llc-checkpoints cannot exceed --num-checkpoints")
    if len(args.step_sizes) < 3:
        raise ValueError("--step-sizes needs at least 3 values (each cell has two ε neighbours)")
    if args.batch_size < 0:
        raise ValueError(f"--batch-size must be >= 0 (0: full batch), got {args.batch_size}")
    if not args.learning_rate > 0:
        raise ValueError(f"--learning-rate must be positive, got {args.learning_rate}")


# ----------------------------------------------------------------------------------------------
# Training: hashable step and record functions, so the engine compiles them once per setting


@dataclasses.dataclass(frozen=True)
class _Step:
    """One Adam step on a minibatch (or the full training set when batch_size is 0)."""

    static: Any
    optimizer: optax.GradientTransformation
    batch_size: int

    def __call__(self, state, key, data):
        x_train, y_train, _, _ = data
        batch = (x_train, y_train)
        if self.batch_size:
            index = jax.random.randint(
                jax.random.fold_in(key, state.step), (self.batch_size,), 0, x_train.shape[0]
            )
            batch = (x_train[index], y_train[index])

        def loss(params):
            return softmax_cross_entropy(eqx.combine(params, self.static), batch)

        return optimizer_step(self.optimizer, state, loss)


@dataclasses.dataclass(frozen=True)
class _Record:
    """Checkpoint: the parameters, and loss and accuracy on the training and the test set."""

    static: Any

    def __call__(self, state, key, data):
        model = eqx.combine(state.params, self.static)
        x_train, y_train, x_test, y_test = data

        def loss_and_accuracy(x, y):
            logits = jax.vmap(model)(x)
            loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
            return loss, jnp.mean(jnp.argmax(logits, -1) == y)

        return (
            state.params,
            *loss_and_accuracy(x_train, y_train),
            *loss_and_accuracy(x_test, y_test),
        )


def llc_indices(steps: np.ndarray, num_llc: int, from_step: int) -> np.ndarray:
    """Which checkpoints get a λ̂: `num_llc` of those at or after `from_step`, evenly spread over
    them (so log-spaced in the step, as the checkpoints are), always the last (where the settings
    were calibrated). Before the loss starts to fall the model is nowhere near a minimum and every
    chain escapes: a few such checkpoints show the verdict at work, more would only cost time."""
    candidates = np.flatnonzero(steps >= from_step)
    if len(candidates) == 0:
        candidates = np.array([len(steps) - 1])
    # From the last backwards, so that one checkpoint is the last one.
    index = np.round(np.linspace(len(candidates) - 1, 0, num_llc)).astype(int)
    return candidates[np.unique(index)]


def even_cell_batch(num_cells: int, most: int = llc.DEFAULT_CELL_BATCH) -> int:
    """A cell batch of at most `most` that splits `num_cells` into equal groups: ``lax.map`` runs a
    remainder group as a second compiled program, which on CPU costs more than it saves."""
    groups = -(-num_cells // most)
    return -(-num_cells // groups)


def _fallback_calibration(error: llc.CalibrationError, settings: LLCSettings) -> llc.Calibration:
    """The evidence of a failed calibration as a :class:`~tmsjax.llc.Calibration` (to plot and
    summarise the same way), holding the fallback settings; the ringed cell is the grid cell
    nearest to them (in log ε, then γ)."""
    grid = error.grid
    i = int(np.argmin(np.abs(np.log(grid.step_sizes / settings.step_size))))
    j = int(np.argmin(np.abs(grid.localizations - settings.localization)))
    stable = np.zeros(np.shape(grid.result.llc), dtype=bool)
    nbeta = float(grid.nbetas[0])
    reason = f"no stable cell ({error}); fell back to --step-size and --localization"
    return llc.Calibration(settings.replace(nbeta=nbeta), grid, stable, (i, j, 0), np.nan, reason)


def main(args):
    store = ResultStore(args.out)
    store.write_config(common.settings(args))
    timings = {}
    key_model, key_train, key_calibrate, key_llc = jax.random.split(jax.random.key(args.seed), 4)

    # -- training ------------------------------------------------------------------------------
    start = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_digits_split()
    data = tuple(map(jnp.asarray, (x_train, y_train, x_test, y_test)))
    arrays, static = stack_modules(
        lambda k: eqx.nn.MLP(64, 10, args.hidden, 1, activation=jax.nn.relu, key=k),
        jax.random.split(key_model, args.num_runs),
    )
    optimizer = optax.adam(args.learning_rate)
    states = jax.vmap(init_train_state, in_axes=(0, None))(arrays, optimizer)
    schedule = checkpoint_schedule(args.num_steps, args.num_checkpoints, include_start=False)
    trained = run_ensemble(
        _Step(static, optimizer, args.batch_size),
        _Record(static),
        states,
        schedule,
        run_inputs=jax.random.split(key_train, args.num_runs),
        shared=data,
        name="digits",
        progress=args.progress,
    )
    params, train_loss, train_accuracy, test_loss, test_accuracy = trained.records
    timings["train_s"] = time.perf_counter() - start
    num_parameters = sum(int(np.prod(np.shape(x)[2:])) for x in jax.tree.leaves(params))

    # -- calibration at the last checkpoint of the first run ----------------------------------
    start = time.perf_counter()
    train_data = (data[0], data[1])
    settings = llc_settings(args)
    center = eqx.combine(jax.tree.map(lambda x: jnp.asarray(x[0, -1]), params), static)
    try:
        calibration = llc.calibrate(
            key_calibrate,
            softmax_cross_entropy,
            center,
            train_data,
            settings,
            step_sizes=args.step_sizes,
            localizations=args.localizations,
            cell_batch=even_cell_batch(len(args.step_sizes) * len(args.localizations)),
        )
        calibrated = True
    except llc.CalibrationError as error:
        calibration = _fallback_calibration(error, settings)
        calibrated = False
    timings["calibrate_s"] = time.perf_counter() - start

    # -- λ̂ along training ------------------------------------------------------------------
    start = time.perf_counter()
    chosen = llc_indices(trained.steps, args.num_llc_checkpoints, args.llc_from_step)
    checkpoints = eqx.combine(jax.tree.map(lambda x: jnp.asarray(x[:, chosen]), params), static)
    result = llc.llc_along_training(
        key_llc,
        softmax_cross_entropy,
        checkpoints,
        train_data,
        calibration.settings,
        cell_batch=even_cell_batch(args.num_runs * len(chosen)),
    )
    value = np.asarray(result.llc)
    error = np.asarray(result.stderr)
    timings["llc_s"] = time.perf_counter() - start
    verdicts = llc.grid_verdicts(result)
    usable = np.asarray(llc.usable(result))
    clear = np.asarray(llc.all_clear(result))
    llc_steps = trained.steps[chosen]

    store.save_arrays(
        "digits_llc",
        steps=trained.steps,
        train_loss=train_loss,
        test_loss=test_loss,
        train_accuracy=train_accuracy,
        test_accuracy=test_accuracy,
        llc_steps=llc_steps,
        llc=value,
        stderr=error,
        llc_per_chain=np.asarray(result.llc_per_chain),
        init_loss=np.asarray(result.init_loss),
        usable=usable,
        all_clear=clear,
        acceptance=np.asarray(result.diagnostics.acceptance),
        calibration_step_sizes=calibration.grid.step_sizes,
        calibration_localizations=calibration.grid.localizations,
        calibration_llc=np.asarray(calibration.grid.result.llc),
        calibration_stderr=np.asarray(calibration.grid.result.stderr),
        calibration_stable=calibration.stable,
    )
    chosen_settings = calibration.settings
    summary = {
        "question": "λ̂ along training of an MLP on real data (digits), next to the loss",
        "num_train": int(len(y_train)),
        "num_test": int(len(y_test)),
        "num_parameters": num_parameters,
        "half_num_parameters": num_parameters / 2,
        "calibration": {
            "calibrated": calibrated,
            "step_size": chosen_settings.step_size,
            "localization": chosen_settings.localization,
            "nbeta": chosen_settings.nbeta,
            "sampler": repr(chosen_settings.sampler),
            "num_chains": chosen_settings.num_chains,
            "num_steps": chosen_settings.num_steps,
            "num_burnin": chosen_settings.num_burnin,
            "grid_step_sizes": calibration.grid.step_sizes,
            "grid_localizations": calibration.grid.localizations,
            "stable_cells": int(np.sum(calibration.stable)),
            "index": list(calibration.index),
            "chosen_is_stable": bool(calibration.stable[calibration.index]),
            # The chosen cell's own estimate at the centre (run 0's last checkpoint): the
            # along-training estimate there repeats it with fresh chains.
            "llc": float(calibration.chosen.llc),
            "stderr": float(calibration.chosen.stderr),
            "verdict": llc.verdict(calibration.chosen),
            "reason": calibration.reason,
        },
        "checkpoints": [
            {
                "step": int(step),
                "llc": value[:, k],
                "stderr": error[:, k],
                "verdict": [str(v) for v in verdicts[:, k]],
                "usable": usable[:, k],
                "train_loss": train_loss[:, chosen[k]],
                "test_loss": test_loss[:, chosen[k]],
                "test_accuracy": test_accuracy[:, chosen[k]],
            }
            for k, step in enumerate(llc_steps)
        ],
        "final": {
            "llc": value[:, -1],
            "stderr": error[:, -1],
            "verdict": [str(v) for v in verdicts[:, -1]],
            "train_loss": train_loss[:, -1],
            "test_loss": test_loss[:, -1],
            "test_accuracy": test_accuracy[:, -1],
        },
        "problem_counts": llc.problem_counts(result),
        "timings": timings,
    }
    store.write_summary(summary)
    title = (
        f"MLP 64→{args.hidden}→10 on digits (n = {len(y_train)}, d = {num_parameters}); λ̂ by "
        f"{type(chosen_settings.sampler).__name__}, ε = {chosen_settings.step_size:.2g}, "
        f"γ = {chosen_settings.localization:g}, nβ = {chosen_settings.nbeta:.4g}"
        + ("" if calibrated else " (calibration failed: fallback)")
    )
    store.save_figure(
        "llc_along_training",
        plot(
            trained.steps,
            train_loss,
            test_loss,
            test_accuracy,
            llc_steps,
            value,
            error,
            usable,
            clear,
            verdicts,
            title,
        ),
    )
    figure = calibration.figure()
    if not calibrated:
        figure.suptitle("calibration failed: no stable cell; ringed: the fallback's nearest cell")
    store.save_figure("calibration", figure)

    print(calibration.reason)
    for k, step in enumerate(llc_steps):
        cells = "  ".join(
            f"{value[r, k]:7.2f} ± {error[r, k]:.2f} [{verdicts[r, k]}]" for r in range(len(value))
        )
        print(f"step {step:6d}  train loss {np.mean(train_loss[:, chosen[k]]):.3f}  λ̂ {cells}")
    print("timings:", {name: round(seconds, 1) for name, seconds in timings.items()})
    return summary


# ----------------------------------------------------------------------------------------------
# The figure


def plot(
    steps,
    train_loss,
    test_loss,
    test_accuracy,
    llc_steps,
    value,
    error,
    usable,
    clear,
    verdicts,
    title,
):
    """λ̂ ± se (top) and the train/test loss with the test accuracy (bottom) against the step.

    One colour per run. λ̂ markers: filled when every chain is all clear, hollow when usable with
    warnings (drifting, step size too large), a cross when unusable (a chain escaped or blew up);
    unusable values off the usable range sit on the lower edge, since an escaped chain's λ̂ is not
    a number to read off the axis.
    """
    import matplotlib.pyplot as plt

    num_runs = value.shape[0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    figure, (axis_llc, axis_loss) = plt.subplots(
        2, 1, figsize=(8.5, 7.5), sharex=True, gridspec_kw=dict(height_ratios=[1.3, 1])
    )
    if np.any(usable):
        low = float(np.min((value - error)[usable]))
        high = float(np.max((value + error)[usable]))
    else:
        low, high = float(np.nanmin(value)), float(np.nanmax(value))
    pad = 0.08 * max(high - low, 1e-3)
    ylim = (min(0.0, low - pad), high + pad)
    shift = np.exp(0.015 * (np.arange(num_runs) - (num_runs - 1) / 2))  # runs side by side
    for r in range(num_runs):
        color = colors[r % len(colors)]
        x = llc_steps * shift[r]
        good = usable[r]
        axis_llc.plot(x[good], value[r, good], color=color, lw=1.2, alpha=0.8)
        axis_llc.errorbar(
            x[good], value[r, good], yerr=error[r, good], fmt="none", ecolor=color, capsize=3
        )
        ok = good & clear[r]
        warn = good & ~clear[r]
        axis_llc.scatter(x[ok], value[r, ok], color=color, s=45, zorder=3)
        axis_llc.scatter(
            x[warn], value[r, warn], facecolor="white", edgecolor=color, s=45, lw=1.5, zorder=3
        )
        bad = ~good
        shown = np.clip(value[r, bad], ylim[0] + pad / 2, ylim[1] - pad / 2)
        axis_llc.scatter(x[bad], shown, color="crimson", marker="x", s=60, lw=2, zorder=3)
        axis_loss.plot(steps, train_loss[r], color=color, lw=1.5)
        axis_loss.plot(steps, test_loss[r], color=color, lw=1.5, ls="--")
    # The λ̂ checkpoints, drawn across both panels: which loss each estimate belongs to.
    for step in llc_steps:
        for axis in (axis_llc, axis_loss):
            axis.axvline(step, color="0.6", lw=0.8, ls=":", zorder=0)
    # Legends by marker and line style (the colours are runs).
    handles = [
        axis_llc.scatter([], [], color="k", s=45, label="λ̂ ± se, all chains ok"),
        axis_llc.scatter([], [], facecolor="white", edgecolor="k", s=45, label="usable, warning"),
        axis_llc.scatter([], [], color="crimson", marker="x", s=60, label="unusable (escaped)"),
    ]
    handles += [
        axis_llc.plot([], [], color=colors[r % len(colors)], label=f"seed {r}")[0]
        for r in range(num_runs)
    ]
    axis_llc.legend(handles=handles, fontsize=8, loc="upper left")
    for r in range(num_runs):
        for k in np.flatnonzero(~usable[r]):
            if r == 0:  # one label per checkpoint is enough to say why
                axis_llc.annotate(
                    str(verdicts[r, k]).split(" (")[0],
                    (llc_steps[k], ylim[0] + pad / 2),
                    textcoords="offset points",
                    xytext=(0, 8),
                    ha="center",
                    fontsize=7,
                    color="crimson",
                )
    axis_llc.set_ylim(*ylim)
    axis_llc.set_ylabel(r"$\hat\lambda$")
    axis_llc.set_title(title, fontsize=9)
    axis_llc.grid(alpha=0.3)
    axis_loss.set_yscale("log")
    axis_loss.set_xscale("log")
    axis_loss.set_xlim(0.7 * steps[0], 1.4 * steps[-1])
    axis_loss.set_xlabel("training step")
    axis_loss.set_ylabel("cross-entropy (solid: train, dashed: test)")
    axis_loss.grid(alpha=0.3)
    accuracy_axis = axis_loss.twinx()
    for r in range(num_runs):
        accuracy_axis.plot(steps, test_accuracy[r], color=colors[r % len(colors)], lw=0.8, ls=":")
    accuracy_axis.set_ylim(0, 1.02)
    accuracy_axis.set_ylabel("test accuracy (dotted)")
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    common.run_module(sys.modules[__name__])
