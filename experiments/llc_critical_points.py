"""λ̂ at every TMS critical point, for a range of n, next to the theoretical λ (Chen et al.
Table K.1).

Question: how close is the SGLD estimate λ̂ to the exact learning coefficient at the k^{σ+,σ−}-gons
of the c = 6 TMS, at finite n (the paper's Table K.1 uses n = 5000 and reports 7.71 / 9.91 / 9.03
for the 5-gon / 5⁺ / 6-gon, overshooting the exact 7 / 8.5 / 8.5) and in the n → ∞ limit?

Method: for each n, one compiled call (:func:`tmsjax.llc.llc_along_training` with "checkpoints" =
the catalogue points) estimates λ̂ with the empirical loss on the first n points of one draw (nested
datasets), γ = 1, nβ = n / log n. Each n gets its own unpadded dataset (one compile per n, ~2 s):
padding every n to the largest would triple the cost on CPU. A second call uses the exact potential
(:func:`tmsjax.tms.losses.potential_loss`) at large nβ. Theory: λ = (3k − 1)/2 + 3σ⁺/2 for
5 ≤ k ≤ 6; unknown for 4-gons.

**Step size.** The discretisation bias of SGLD grows with εk, k ≈ nβ × (Hessian eigenvalue), so a
fixed ε that is healthy at n = 1000 is not at n = 5000 (nβ 4× larger): the engine's verdict there is
"step size too large" (MALA acceptance < 0.9 at the 6-gon). By default ε(n) = ε₀ · min(1, nβ(n₀) /
nβ(n)) with ε₀ = ``--step-size`` = 1e-3 at n₀ = 1000 (the paper's setting), i.e. ε·nβ is held at its
n = 1000 value (0.145) for larger n and the exact-potential run (ε = 1.45e-5 at nβ = 1e4);
``--fixed-step-size`` uses ε₀ everywhere. Chains are 4000 steps (1000 burn-in) so that the smaller ε
still covers the Langevin time of the paper's 1000 steps at ε = 1e-3.

**Calibration** (the default; ``--no-calibrate`` for the hand-set rule alone). The hand-set rule
above is the paper's protocol. By default the experiment instead calibrates (ε, γ) twice at the
6-gon with :func:`tmsjax.llc.calibrate` (its default grid: 7 ε over 3 decades × γ ∈ {1, 10, 100}
× the settings' γ): once on the first ``--reference-n`` rows (nβ = n₀ / log n₀), whose ε then
scales with nβ like the rule's ε₀ and whose γ applies at every n, and once on the exact potential at
``--population-nbeta``. Should no cell be stable, that run keeps the hand-set settings and says so.
summary.json records both: ``settings`` (what was used), ``paper_settings`` (the hand-set rule) and
``calibration`` (each calibration's choice, reason and λ̂ at the 6-gon).

**Escapes.** With γ = 1 the localizing Gaussian reaches lower phases from several points: the
5-gon's dead bias (−1) diffuses across 0 into the 5⁺ basin, the 5⁺'s dead column grows towards the
6-gon, and 4-gons leave along their dead biases. Long chains find these exits (the verdict says
"escaped"); the table gives λ̂ over all chains (the estimator) and over the chains that did not
escape, with the verdict next to both.

Outputs (``--out DIR``): config.json, summary.json (table rows: label, loss, λ, λ̂(n) ± se, ε(n),
verdicts, usable), llc_critical_points.npz, llc_critical_points.png (hollow markers: estimates
that are not usable by :func:`tmsjax.llc.usable`, i.e. a chain escaped or blew up).

References:
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301, §4 and App. K.
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
    "smoke": dict(sizes=[50, 100], num_chains=2, num_steps=30, num_burnin=10, max_points=3),
    "cpu": dict(
        sizes=[100, 500, 1000, 5000], num_chains=4, num_steps=4000, num_burnin=1000, max_points=18
    ),
    "paper": dict(
        sizes=[100, 200, 500, 1000, 2000, 5000],
        num_chains=8,
        num_steps=8000,
        num_burnin=2000,
        max_points=18,
    ),
}


def add_arguments(parser):
    parser.add_argument("--num-features", type=int, default=6)
    parser.add_argument("--sizes", type=int, nargs="+", help="dataset sizes n (preset)")
    parser.add_argument("--num-chains", type=int, help="chains per estimate (preset)")
    parser.add_argument("--num-steps", type=int, help="steps per chain (preset)")
    parser.add_argument("--num-burnin", type=int, help="burn-in steps (preset)")
    parser.add_argument("--max-points", type=int, help="first N catalogue points by loss (preset)")
    parser.add_argument(
        "--step-size", type=float, default=1e-3, help="ε at n = --reference-n (1000)"
    )
    parser.add_argument("--reference-n", type=int, default=1000, help="n at which ε = --step-size")
    parser.add_argument(
        "--fixed-step-size", action="store_true", help="the same ε at every n (no nβ scaling)"
    )
    parser.add_argument("--localization", type=float, default=1.0)
    parser.add_argument(
        "--population-nbeta", type=float, default=1e4, help="nβ on the exact potential"
    )
    parser.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="the hand-set ε rule and --localization (the paper's protocol) instead of calibrate",
    )


def check(args):
    chain_settings(args).replace(nbeta=args.population_nbeta)  # a ValueError names the bad field
    if min(args.sizes) <= 1 or args.reference_n <= 1:
        raise ValueError("--sizes and --reference-n must exceed 1 (nβ = n / log n)")


def scaled_step_size(step_size: float, reference_n: int, nbeta: float) -> float:
    """ε(nβ) = ε₀ · min(1, nβ₀ / nβ), nβ₀ = n₀/log n₀: ε·nβ held at its reference value above n₀."""
    return step_size * min(1.0, float(llc.default_nbeta(reference_n)) / nbeta)


def step_size_for(nbeta: float, args) -> float:
    """The step size at one n: scaled with nβ unless --fixed-step-size."""
    return (
        args.step_size
        if args.fixed_step_size
        else scaled_step_size(args.step_size, args.reference_n, nbeta)
    )


def chain_settings(args) -> LLCSettings:
    """The chains' settings at ε = --step-size (each n replaces ε, the exact potential also nβ)."""
    return LLCSettings(
        step_size=args.step_size,
        localization=args.localization,
        num_chains=args.num_chains,
        num_steps=args.num_steps,
        num_burnin=args.num_burnin,
    )


def calibrated(
    key, loss_fn, center, data, settings, fallback: LLCSettings
) -> tuple[LLCSettings, dict]:
    """(settings, record): :func:`tmsjax.llc.calibrate`'s choice at `center`, or `fallback` (the
    hand-set settings) when no cell of its grid is stable; the record says which, and why."""
    try:
        found = llc.calibrate(key, loss_fn, center, data, settings)
    except llc.CalibrationError as error:
        record = {"calibrated": False, "reason": str(error)}
        return fallback, record | {
            "step_size": fallback.step_size,
            "localization": fallback.localization,
        }
    chosen = found.chosen
    record = {
        "calibrated": True,
        "step_size": found.settings.step_size,
        "localization": found.settings.localization,
        "nbeta": found.settings.nbeta,
        "reason": found.reason,
        "llc": float(chosen.llc),
        "stderr": float(chosen.stderr),
        "verdict": llc.verdict(chosen),
    }
    return found.settings, record


def _healthy_chain_llc(result, index) -> tuple[float, float, int]:
    """λ̂ (mean of per-chain estimates) over the usable chains (:func:`tmsjax.llc.usable_chains`:
    neither escaped nor blown up), a reported extra beside the pooled estimate."""
    keep = np.asarray(llc.usable_chains(result))[index]
    per_chain = np.asarray(result.llc_per_chain)[index]
    if not keep.any():
        return float("nan"), float("nan"), 0
    values = per_chain[keep]
    error = (
        float(np.std(values, ddof=1) / np.sqrt(values.size)) if values.size > 1 else float("nan")
    )
    return float(values.mean()), error, int(keep.sum())


def main(args):
    store = ResultStore(args.out)
    store.write_config(common.settings(args))
    points = critical_points(args.num_features)[: args.max_points]
    sizes = sorted(args.sizes)
    key_data, key_n, key_pop, key_cal = jax.random.split(jax.random.key(args.seed), 4)
    x = sample_sparse_limit(key_data, sizes[-1], args.num_features)
    W = jnp.asarray(np.stack([p.W for p in points]), jnp.float32)
    b = jnp.asarray(np.stack([p.b for p in points]), jnp.float32)
    centers = TMSParams(W[None], b[None])
    settings = chain_settings(args)
    nbeta = args.population_nbeta
    # The hand-set (paper) rule: ε(n) from ε₀ at n₀, γ = --localization; on the exact potential
    # ε·nβ at its reference value (≈ 0.145) so the discretisation bias εk/4 stays a few percent
    # (even with --fixed-step-size: ε = 1e-3 at nβ = 1e4 would blow up); steps scale up to cover
    # more Langevin time.
    paper_steps = {n: step_size_for(float(llc.default_nbeta(n)), args) for n in sizes}
    population_settings = settings.replace(
        nbeta=nbeta,
        step_size=scaled_step_size(args.step_size, args.reference_n, nbeta),
        num_steps=4 * args.num_steps,
        num_burnin=4 * args.num_burnin,
    )
    reference_n = min(args.reference_n, sizes[-1])
    localization, population_used = args.localization, population_settings
    calibration = {}
    if args.calibrate:
        six = next((i for i, p in enumerate(points) if p.label == "6"), 0)
        center = TMSParams(W[six], b[six])
        key_finite, key_population = jax.random.split(key_cal)
        reference_nbeta = float(llc.default_nbeta(reference_n))
        fallback = settings.replace(
            step_size=scaled_step_size(args.step_size, args.reference_n, reference_nbeta)
        )
        chosen, calibration["finite"] = calibrated(
            key_finite, losses.row_loss, center, make_dataset(x[:reference_n]), fallback, fallback
        )
        calibration["finite"] |= {"label": points[six].label, "n": reference_n}
        localization = chosen.localization
        # ε·nβ held at the calibrated value above n₀ (as the hand-set rule does with ε₀).
        calibrated_steps = {
            n: chosen.step_size * min(1.0, reference_nbeta / float(llc.default_nbeta(n)))
            for n in sizes
        }
        population_used, calibration["population"] = calibrated(
            key_population,
            losses.potential_loss,
            center,
            None,
            population_settings,
            population_settings,
        )
        calibration["population"] |= {"label": points[six].label}
    finite, step_sizes = [], []
    for n in sizes:
        step_sizes.append(calibrated_steps[n] if args.calibrate else paper_steps[n])
        # The first n rows of one draw: nested datasets, as a growing real dataset.
        finite.append(
            llc.llc_along_training(
                jax.random.fold_in(key_n, n),
                losses.row_loss,
                centers,
                make_dataset(x[:n]),
                settings.replace(step_size=step_sizes[-1], localization=localization),
            )
        )
    finite = jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *finite)  # (sizes, points, ...)
    step_size = population_used.step_size
    population = llc.llc_along_training(
        key_pop, losses.potential_loss, centers, None, population_used
    )
    finite_verdicts, population_verdicts = llc.grid_verdicts(finite), llc.grid_verdicts(population)
    finite_usable = np.asarray(llc.usable(finite))
    population_usable = np.asarray(llc.usable(population))
    rows = []
    for index, point in enumerate(points):
        row = {"label": point.label, "loss": point.loss, "llc_theory": point.llc}
        for s, n in enumerate(sizes):
            row[f"llc_n{n}"] = float(finite.llc[s, index])
            row[f"stderr_n{n}"] = float(finite.stderr[s, index])
            row[f"verdict_n{n}"] = str(finite_verdicts[s, index])
            row[f"usable_n{n}"] = bool(finite_usable[s, index])
            row[f"acceptance_n{n}"] = float(np.mean(finite.diagnostics.acceptance[s, index]))
            healthy, error, count = _healthy_chain_llc(finite, (s, index))
            (
                row[f"llc_healthy_chains_n{n}"],
                row[f"stderr_healthy_chains_n{n}"],
                row[f"num_healthy_chains_n{n}"],
            ) = healthy, error, count
        row["llc_population"] = float(population.llc[0, index])
        row["stderr_population"] = float(population.stderr[0, index])
        row["verdict_population"] = str(population_verdicts[0, index])
        row["usable_population"] = bool(population_usable[0, index])
        rows.append(row)
    store.save_arrays(
        "llc_critical_points",
        sizes=np.asarray(sizes),
        labels=np.asarray([p.label for p in points]),
        step_sizes=np.asarray(step_sizes),
        llc=np.asarray(finite.llc),
        stderr=np.asarray(finite.stderr),
        llc_per_chain=np.asarray(finite.llc_per_chain),
        llc_population=np.asarray(population.llc[0]),
        stderr_population=np.asarray(population.stderr[0]),
        usable=finite_usable,
        **{name: np.asarray(getattr(finite.diagnostics, name)) for name in llc.PROBLEMS},
        acceptance=np.asarray(finite.diagnostics.acceptance),
    )
    paper = {"5": 7.71, "5+": 9.91, "6": 9.03}
    rule = "fixed" if args.fixed_step_size else "eps * min(1, nbeta(reference_n) / nbeta(n))"
    if args.calibrate:
        rule = "calibrated eps at the reference n * min(1, nbeta(reference_n) / nbeta(n))"
    summary = {
        "question": (
            "λ̂ at each critical point versus theory, for several n and on the exact potential"
        ),
        "settings": {
            "step_size_reference": args.step_size,
            "reference_n": args.reference_n,
            "step_size_rule": rule,
            "step_sizes": dict(zip(map(str, sizes), step_sizes)),
            "localization": localization,
            "population_localization": population_used.localization,
            "calibrated": bool(args.calibrate),
            "nbeta": "n / log n",
            "num_chains": args.num_chains,
            "num_steps": args.num_steps,
            "num_burnin": args.num_burnin,
            "population_nbeta": nbeta,
            "population_step_size": step_size,
            "sampler": repr(settings.sampler),
        },
        "paper_settings": {
            "step_sizes": {str(n): paper_steps[n] for n in sizes},
            "localization": args.localization,
            "population_step_size": population_settings.step_size,
            "population_localization": population_settings.localization,
        },
        "calibration": calibration,
        "usable_rule": "no chain escaped or blew up (tmsjax.llc.usable)",
        "paper_table_k1_n5000": paper,
        "table": rows,
    }
    store.write_summary(summary)
    plot(store, points, sizes, finite, population)
    for row in rows:
        cells = "  ".join(f"n={n}: {row[f'llc_n{n}']:.2f}±{row[f'stderr_n{n}']:.2f}" for n in sizes)
        print(
            f"{row['label']:>8}  λ={row['llc_theory']}  {cells}  n=∞: {row['llc_population']:.2f}  "
            f"[n={sizes[-1]}: {row[f'verdict_n{sizes[-1]}']}; n=∞: {row['verdict_population']}]"
        )
    return summary


def plot(store, points, sizes, finite, population):
    import matplotlib.pyplot as plt

    healthy = np.asarray(llc.usable(finite))  # (sizes, points)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for index, point in enumerate(points):
        if point.llc is None and index >= 6:
            continue  # keep the figure readable: all known-λ points plus the lowest 4-gons
        line = left.errorbar(
            sizes,
            finite.llc[:, index],
            yerr=finite.stderr[:, index],
            marker="o",
            capsize=3,
            label=point.label,
        )
        color = line[0].get_color()
        bad = ~healthy[:, index]
        left.scatter(
            np.asarray(sizes)[bad],
            np.asarray(finite.llc[bad, index]),
            s=60,
            facecolor="white",
            edgecolor=color,
            zorder=4,
        )
        if point.llc is not None:
            left.axhline(point.llc, color=color, ls="--", lw=1)
    left.set_xscale("log")
    left.set_xlabel("n (nβ = n / log n)")
    left.set_ylabel(r"$\hat\lambda$")
    left.set_title("λ̂ versus n (dashed: exact λ; hollow: not usable, a chain escaped)")
    left.legend(fontsize=8, ncol=2)
    x = np.arange(len(points))
    values = {
        "exact potential": np.asarray(population.llc[0]),
        f"n = {sizes[-1]}": np.asarray(finite.llc[-1]),
    }
    errors = {
        "exact potential": np.asarray(population.stderr[0]),
        f"n = {sizes[-1]}": np.asarray(finite.stderr[-1]),
    }
    # Escaped chains at the σ⁻ saddles give λ̂ of −10² to −10³: clip the axis to the meaningful range
    # and print the clipped values, rather than let them flatten the bars that matter.
    floor = -6.0
    for offset, name in ((-0.2, "exact potential"), (0.2, f"n = {sizes[-1]}")):
        right.bar(
            x + offset,
            np.maximum(values[name], floor),
            0.4,
            yerr=np.where(values[name] > floor, errors[name], 0),
            label=f"λ̂, {name}",
            capsize=2,
        )
        for i in np.flatnonzero(values[name] <= floor):
            right.annotate(
                f"{values[name][i]:.0f}",
                (x[i] + offset, floor),
                xytext=(0, 2),
                textcoords="offset points",
                rotation=90,
                fontsize=6,
                ha="center",
                va="bottom",
            )
    theory = [p.llc if p.llc is not None else np.nan for p in points]
    right.scatter(x, theory, color="k", marker="_", s=400, zorder=3, label="exact λ")
    right.axhline(0, color="k", lw=0.6)
    right.set_ylim(floor - 0.5, max(12.0, float(np.nanmax(list(values.values()))) + 1.5))
    right.set_xticks(x, [p.label for p in points], rotation=60, fontsize=8)
    right.set_ylabel(r"$\lambda$")
    right.set_title("Every catalogue point (sorted by loss; negative: chains escaped, clipped)")
    right.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    store.save_figure("llc_critical_points", figure)


if __name__ == "__main__":
    common.run_module(sys.modules[__name__])
