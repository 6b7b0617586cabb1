"""Where is λ̂ stable in the SGLD hyperparameters? λ̂ versus ε for several γ at the TMS 6-gon.

Question: for which step sizes ε and localizations γ does the estimate stop depending on them (the
"stable region"), and do the health verdicts flag the rest? "Too large an ε biases λ̂ upward"; too
small an ε does not equilibrate in a fixed number of steps (drift), and small γ lets chains wander.

Method: one compiled call (:func:`tmsjax.llc.llc_grid`) over the product ε × γ at nβ = n / log n,
n = 1000, full batch, at the 6-gon (exact λ = 8.5); each cell has its own chains and verdict.

Outputs (``--out DIR``): config.json, summary.json (every cell: λ̂, se, verdict, usable; the ok
cells: no problem in any chain, :func:`tmsjax.llc.all_clear`), llc_grid.npz, llc_vs_step_size.png
(λ̂ vs ε per γ; hollow markers where some chain has a problem).

References:
  Lau et al. (2023), arXiv:2308.12108, App. on SGLD hyperparameters; Chen et al. (2023),
  arXiv:2310.06301.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from tmsjax import llc
from tmsjax.llc import LLCSettings
from tmsjax.results import ResultStore
from tmsjax.tms import losses
from tmsjax.tms.critical import critical_points
from tmsjax.tms.data import make_dataset, sample_sparse_limit
from tmsjax.tms.model import TMSParams

PRESETS = {
    "smoke": dict(
        step_sizes=[1e-4, 1e-3], localizations=[1.0], num_chains=2, num_steps=40, num_burnin=10
    ),
    "cpu": dict(
        step_sizes=np.logspace(-5, -1.5, 8).tolist(),
        localizations=[1.0, 10.0, 100.0],
        num_chains=4,
        num_steps=2000,
        num_burnin=500,
    ),
    "paper": dict(
        step_sizes=np.logspace(-6, -1, 16).tolist(),
        localizations=[0.1, 1.0, 10.0, 100.0, 1000.0],
        num_chains=8,
        num_steps=5000,
        num_burnin=1000,
    ),
}


def add_arguments(parser):
    parser.add_argument("--num-data", type=int, default=1000)
    parser.add_argument("--label", default="6", help="catalogue point to centre on")
    parser.add_argument("--step-sizes", type=float, nargs="+", help="SGLD ε values (preset)")
    parser.add_argument("--localizations", type=float, nargs="+", help="γ values (preset)")
    parser.add_argument("--num-chains", type=int, help="chains per cell (preset)")
    parser.add_argument("--num-steps", type=int, help="steps per chain (preset)")
    parser.add_argument("--num-burnin", type=int, help="burn-in steps (preset)")


def chain_settings(args) -> LLCSettings:
    """The settings every cell shares (the grid sets ε and γ; nβ = n / log n)."""
    return LLCSettings(
        num_chains=args.num_chains, num_steps=args.num_steps, num_burnin=args.num_burnin
    )


def check(args):
    chain_settings(args)  # a ValueError names the bad flag's field
    if args.num_data <= 1:
        raise ValueError(f"--num-data must exceed 1, got {args.num_data}")


def main(args):
    store = ResultStore(args.out)
    store.write_config(common.settings(args))
    points = {p.label: p for p in critical_points(6)}
    if args.label not in points:
        raise ValueError(
            f"--label must name a c = 6 critical point {sorted(points)}, got {args.label!r}"
        )
    point = points[args.label]
    key_data, key_grid = jax.random.split(jax.random.key(args.seed))
    dataset = make_dataset(sample_sparse_limit(key_data, args.num_data, 6))
    center = TMSParams(jnp.asarray(point.W, jnp.float32), jnp.asarray(point.b, jnp.float32))
    settings = chain_settings(args)
    grid = llc.llc_grid(
        key_grid,
        losses.row_loss,
        center,
        dataset,
        settings,
        step_sizes=args.step_sizes,
        localizations=args.localizations,
    )
    value, error = np.asarray(grid.result.llc[..., 0]), np.asarray(grid.result.stderr[..., 0])
    verdicts = llc.grid_verdicts(grid.result)[..., 0]
    usable = np.asarray(llc.usable(grid.result))[..., 0]
    clear = np.asarray(llc.all_clear(grid.result))[..., 0]
    acceptance = np.asarray(grid.result.diagnostics.acceptance[..., 0, :]).mean(-1)
    store.save_arrays(
        "llc_grid",
        step_sizes=grid.step_sizes,
        localizations=grid.localizations,
        llc=value,
        stderr=error,
        acceptance=acceptance,
        usable=usable,
        all_clear=clear,
        **{
            name: np.asarray(getattr(grid.result.diagnostics, name))[..., 0, :]
            for name in llc.PROBLEMS
        },
    )
    cells = [
        {
            "step_size": float(e),
            "localization": float(g),
            "llc": float(value[i, j]),
            "stderr": float(error[i, j]),
            "acceptance": float(acceptance[i, j]),
            "verdict": str(verdicts[i, j]),
            "usable": bool(usable[i, j]),
            "all_clear": bool(clear[i, j]),
        }
        for i, e in enumerate(grid.step_sizes)
        for j, g in enumerate(grid.localizations)
    ]
    ok = [c for c in cells if c["all_clear"]]
    summary = {
        "question": "λ̂ versus (ε, γ) at a critical point: where is it stable?",
        "label": point.label,
        "llc_theory": point.llc,
        "nbeta": float(grid.nbetas[0]),
        "sampler": repr(settings.sampler),
        "cells": cells,
        "ok_cells": len(ok),
        "usable_cells": int(usable.sum()),
        "ok_llc_range": [min(c["llc"] for c in ok), max(c["llc"] for c in ok)] if ok else None,
    }
    store.write_summary(summary)
    plot(store, grid, value, error, clear, point)
    for c in cells:
        print(
            f"ε={c['step_size']:.1e} γ={c['localization']:g}: λ̂={c['llc']:.2f}±{c['stderr']:.2f} "
            f"acc={c['acceptance']:.3f} [{c['verdict']}]"
        )
    return summary


def plot(store, grid, value, error, clear, point):
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 5))
    for j, gamma in enumerate(grid.localizations):
        line = axis.errorbar(
            grid.step_sizes,
            value[:, j],
            yerr=error[:, j],
            capsize=3,
            lw=1.5,
            label=f"γ = {gamma:g}",
        )
        color = line[0].get_color()
        ok = clear[:, j]
        axis.scatter(grid.step_sizes[ok], value[ok, j], color=color, zorder=3, s=40)
        axis.scatter(
            grid.step_sizes[~ok], value[~ok, j], facecolor="white", edgecolor=color, zorder=3, s=40
        )
    if point.llc is not None:
        axis.axhline(point.llc, color="k", ls="--", lw=1, label=f"exact λ = {point.llc}")
    axis.set_xscale("log")
    axis.set_xlabel("SGLD step size ε")
    axis.set_ylabel(r"$\hat\lambda$")
    axis.set_title(f"λ̂ vs ε at the {point.label}-gon, nβ = n/log n (hollow: verdict not ok)")
    axis.legend(fontsize=9)
    store.save_figure("llc_vs_step_size", figure)


if __name__ == "__main__":
    common.run_module(sys.modules[__name__])
