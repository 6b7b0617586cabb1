"""Benchmark: the paper-scale Bayesian sweep, and which sampler earns its occupancies cheapest.

Questions (issue #15, item 3):

1. How long does the paper-scale sweep take (c = 6, 20 dataset sizes n from 100 to 2000 × 64
   chains × 2000 draws, 500 warmup rounds) with the default occupancy sampler, replica exchange
   (:mod:`tmsjax.sampling.tempering`), and with tree-depth-capped NUTS (the baseline) on the same
   grid? Target: ≤ 10 minutes on 2 CPU cores.
2. Effective samples per gradient evaluation, replica exchange vs NUTS capped at depth 5, per n:
   of the 6-gon indicator (what an occupancy needs: the chains must cross between phases) and of
   the log likelihood (local mixing).
3. The occupancies of replica exchange next to NUTS and tempered SMC at a few n, with z-scores.
4. Replica exchange vs tempered SMC at equal error at n = 600 and 1000: seconds × se², the
   seconds each needs for a standard error of 0.01 on the 6-gon occupancy, with each sampler's
   error measured by independent replication (the spread of its independent chains or runs).

Method. One dataset draw, seed 9 (of the twelve draws in experiments.bayesian_transitions' crossing
study, one whose 5 → 6 competition is still open at n = 1000: the 6-gon holds ~0.8 there, where
NUTS chains no longer cross), its sufficient statistics as the likelihood, chains started near the
6-, 5⁺- and 5-gon in equal numbers, ladders as in the experiment (geometric from
β_min = min(1, 200/n)), K = 8 copies and L = 4 leapfrog steps per move (the paper preset's: its
smallest swap acceptance was 0.35, at n = 2000, where the CPU preset's K = 6 ladder already had
0.33 at n = 800). Every sampler runs one program over its
whole (n, chain) grid, compiled ahead of time: compile and run seconds are reported apart, and the
table's seconds are run × scale + compile. Replica exchange runs the full paper-scale grid; NUTS
runs 12 of its 64 chains per n and its run time is scaled by 64/12 (on CPU vmapped lanes share
two cores: the time per lane was flat from 320 to 2560 lanes, 14.8-16.6 µs per lane and round);
``--full`` runs NUTS on the full grid too, ``--quick`` a 4 n × 3 chain × 100 + 200 round slice of
both, extrapolated.

Gradient counts: replica exchange K · L per round (all copies move; one β = 1 draw per round);
NUTS the leapfrog steps each lane took (its mean; a vmapped NUTS step costs the longest trajectory
of the batch, so its lockstep efficiency is reported too); SMC the mutation's steps × moves ×
leapfrog steps per particle.

Typical result (cpu-2core, load average 2.3-4.3 from other jobs; jax 0.10.2, blackjax 1.7.1;
the bucket-table sufficient statistics of tmsjax.tms.data):

  paper-scale sweep, 20 n × 64 chains × 2000 draws (+500 warmup), c = 6:
    replica exchange (K = 8, L = 4, 32 gradients/draw)   461 s (452 run + 8 compile)   measured
    NUTS depth cap 5 (30.3 gradients/draw, lockstep 0.98) 557 s                        ×5.33
  6-gon indicator ESS per 1000 gradients, tempering vs NUTS:
    n = 100: 23 / 23, n = 200: 18 / 9.4, n = 300: 6.5 / 4.2, n = 600: 0.98 / 0.086,
    n = 1000: 0.34 / 0.0083 (from n = 1000 on half or more of the 12 NUTS chains never changed
    phase, 9 of 12 at n = 2000, where NUTS reads 0.48 ± 0.19 for the 6-gon and tempering and SMC
    read 1.000)
  log-likelihood ESS per 1000 gradients: tempering 18 → 3.3 (n = 100 → 1000), NUTS 7 → 6:
    hot copies cost local mixing at large n; they buy the crossings
  6-gon occupancy, tempering / NUTS / SMC (4 × 1000): n = 300 0.067 / 0.068 / 0.060 (z = +1.5),
    n = 600 0.784 / 0.886 / 0.772 (z = +0.9; NUTS z = +2.7), n = 1000 0.809 / 0.667 / 0.808
    (z = +0.06), n = 2000 1.000 / 0.480 / 1.000
  seconds for se 0.01 on the 6-gon occupancy, tempering vs SMC: n = 600 14 vs 26 s,
    n = 1000 9.6 vs 109 s (SMC spends 15-17 M gradients per 8 × 1000 particle run)
"""

import math
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import report
from experiments.bayesian_transitions import (
    block_data,
    dataset_rows,
    initial_positions,
    temperature_ladders,
)
from tmsjax.sampling import diagnostics
from tmsjax.sampling.nuts import build_nuts_chain, lockstep_efficiency
from tmsjax.sampling.smc import build_tempered_smc
from tmsjax.sampling.tempering import build_tempering_chain
from tmsjax.tms.model import TMSParams
from tmsjax.tms.phases import classify_batch, phase_labels
from tmsjax.tms.posterior import log_likelihood, log_prior, make_logdensity_fn

NAME = "bayes_sweep"
NUM_FEATURES = 6
SEED = 9
INIT_LABELS = ("6", "5+", "5")
PAPER_SIZES = [100, 150, 200, 250, 300, 350, 400, 450, 500, 550, 600, 700, 800, 900, 1000]
PAPER_SIZES += [1200, 1400, 1600, 1800, 2000]  # 20 sizes, the paper's range for c = 6
PAPER_CHAINS, PAPER_WARMUP, PAPER_DRAWS = 64, 500, 2000
NUTS_DEPTH = 5  # the experiment's CPU cap: 31 leapfrog steps
TEMPERING = dict(num_temperatures=8, hot_size=200.0, leapfrog_steps=4, temperature=1.0)
TARGET_SE = 0.01


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _compiled(chain, *args, in_axes=0):
    """jit(vmap(chain)) compiled ahead of time for `args`: (compile seconds, the executable)."""
    start = time.perf_counter()
    executable = jax.jit(jax.vmap(chain, in_axes=in_axes)).lower(*args).compile()
    return time.perf_counter() - start, executable


def _run(executable, *args):
    """(run seconds, output) of a compiled sweep, blocked on."""
    start = time.perf_counter()
    out = jax.block_until_ready(executable(*args))
    return time.perf_counter() - start, out


class Grid:
    """The (n, chain) grid of one dataset draw: likelihood data, starts and keys per lane."""

    def __init__(self, sizes, num_chains: int, seed: int = SEED):
        self.sizes, self.num_chains = list(sizes), num_chains
        self.x = dataset_rows(seed, max(PAPER_SIZES), NUM_FEATURES)  # one n_max: nested data
        stats = block_data(self.x, self.sizes, "stats")
        self.data = jax.tree.map(lambda a: jnp.repeat(a, num_chains, axis=0), stats)
        key = jax.random.key(seed)
        starts = [
            initial_positions(
                jax.random.fold_in(key, n), INIT_LABELS, NUM_FEATURES, "phases", num_chains
            )
            for n in self.sizes
        ]
        self.positions = jax.tree.map(lambda *xs: jnp.concatenate(xs), *starts)
        self.keys = jax.random.split(jax.random.fold_in(key, 1), len(self.sizes) * num_chains)

    def per_n(self, leaf) -> np.ndarray:
        """(grid, ...) -> (sizes, chains, ...)."""
        leaf = np.asarray(leaf)
        return leaf.reshape(len(self.sizes), self.num_chains, *leaf.shape[1:])


def _phase_ids(W, b) -> np.ndarray:
    """Phase ids of draws W (..., 2, c), b (..., c), shaped like the draws."""
    W, b = np.asarray(W), np.asarray(b)
    ids = classify_batch(W.reshape(-1, 2, NUM_FEATURES), b.reshape(-1, NUM_FEATURES))
    return np.asarray(ids.ids).reshape(W.shape[:-2])


def _classify_all(W, b) -> np.ndarray:
    W, b = np.asarray(W), np.asarray(b)
    ids = classify_batch(
        W.reshape(-1, 2, NUM_FEATURES), b.reshape(-1, NUM_FEATURES), max_distance=math.inf
    )
    return np.asarray(ids.ids).reshape(W.shape[:-2])


def _occupancy(ids: np.ndarray, label: str):
    """(p, ESS-based se, indicator ESS, se from the spread of independent chains)."""
    table = list(phase_labels(NUM_FEATURES))
    indicator = ids == table.index(label)
    p, se, ess = diagnostics.occupancy_with_error(indicator)
    per_chain = indicator.mean(axis=1)
    spread_se = float(per_chain.std(ddof=1) / math.sqrt(len(per_chain)))
    return p, se, ess, spread_se


def _loglik_ess(loglik) -> float:
    """Per-chain ESS of the log likelihood summed over chains (chains need not mix)."""
    return float(np.nansum(diagnostics.per_chain_ess(np.asarray(loglik, float)[..., None])))


class Timed(NamedTuple):
    compile_s: float
    run_s: float
    result: object
    ids: np.ndarray  # phase ids (sizes, chains, draws)


def tempering_args(grid: Grid, settings=TEMPERING):
    copies = settings["num_temperatures"]
    positions = jax.tree.map(lambda a: jnp.repeat(a[:, None], copies, axis=1), grid.positions)
    betas = np.repeat(temperature_ladders(grid.sizes, settings), grid.num_chains, axis=0)
    return grid.keys, positions, grid.data, jnp.asarray(betas)


def tempering_chain(num_warmup: int, num_samples: int, settings=TEMPERING):
    return build_tempering_chain(
        log_prior,
        log_likelihood,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_integration_steps=settings["leapfrog_steps"],
    )


def run_tempering(grid: Grid, num_warmup: int, num_samples: int, settings=TEMPERING) -> Timed:
    args = tempering_args(grid, settings)
    compile_s, executable = _compiled(tempering_chain(num_warmup, num_samples, settings), *args)
    run_s, result = _run(executable, *args)
    ids = grid.per_n(_classify_all(result.positions.W, result.positions.b))
    return Timed(compile_s, run_s, result, ids)


def run_nuts(grid: Grid, num_warmup: int, num_samples: int) -> Timed:
    chain = build_nuts_chain(
        make_logdensity_fn(),
        num_warmup=num_warmup,
        num_samples=num_samples,
        max_num_doublings=NUTS_DEPTH,
    )
    args = (grid.keys, grid.positions, grid.data)
    compile_s, executable = _compiled(chain, *args)
    run_s, result = _run(executable, *args)
    ids = grid.per_n(_classify_all(result.positions.W, result.positions.b))
    return Timed(compile_s, run_s, result, ids)


def run_smc(sizes, replicates: int, particles: int, seed: int = SEED) -> dict:
    """Tempered SMC from the prior, each n in its own call of one compiled program:
    {n: dict(seconds, ids (replicates, particles), gradients)}, compile time under "compile_s"."""
    x = dataset_rows(seed, max(PAPER_SIZES), NUM_FEATURES)
    chain = build_tempered_smc(log_prior, log_likelihood)

    def args_at(n):
        stats = block_data(x, [n], "stats")  # one shape for every n (num_slots from all of x)
        data = jax.tree.map(lambda a: jnp.repeat(a, replicates, axis=0), stats)
        key_init, key_run = jax.random.split(jax.random.fold_in(jax.random.key(seed), n))
        key_w, key_b = jax.random.split(key_init)
        start = TMSParams(
            jax.random.normal(key_w, (replicates, particles, 2, NUM_FEATURES)),
            jax.random.normal(key_b, (replicates, particles, NUM_FEATURES)),
        )
        return jax.random.split(key_run, replicates), start, data

    compile_s, executable = _compiled(chain, *args_at(sizes[0]))
    out = {"compile_s": compile_s}
    for n in sizes:
        seconds, result = _run(executable, *args_at(n))
        if not np.asarray(result.reached_target).all():
            raise RuntimeError(f"SMC did not reach beta = 1 at n = {n}")
        ids = _classify_all(result.particles.W, result.particles.b)
        # tempering steps × 10 HMC moves × 10 leapfrog steps per particle (the defaults)
        gradients = float(np.asarray(result.num_steps).sum()) * 100 * particles
        out[n] = dict(seconds=seconds, ids=ids, gradients=gradients)
    return out


def _row(workload: str, tmsjax_s, baseline: str, baseline_s, **extra) -> dict:
    ratio = baseline_s / tmsjax_s if tmsjax_s and np.isfinite(baseline_s) else float("nan")
    return {
        "workload": workload,
        "tmsjax_s": tmsjax_s,
        "baseline": baseline,
        "baseline_s": baseline_s,
        "ratio": ratio,
        **extra,
    }


def run(quick: bool = False, full: bool = False) -> list[dict]:
    """Quick: 4 n × 3 chains × 100 + 200 rounds, both samplers, extrapolated. Default: replica
    exchange on the full paper-scale grid, measured; NUTS on 12 of its 64 chains per n,
    extrapolated (`full`: NUTS on the full grid too)."""
    sizes = [300, 600, 1000, 2000] if quick else PAPER_SIZES
    chains = 3 if quick else PAPER_CHAINS  # multiples of the 3 starting phases
    nuts_chains = chains if (quick or full) else 12
    num_warmup, num_samples = (100, 200) if quick else (PAPER_WARMUP, PAPER_DRAWS)
    rows = []
    paper_rounds = len(PAPER_SIZES) * PAPER_CHAINS * (PAPER_WARMUP + PAPER_DRAWS)
    copies, leapfrog = TEMPERING["num_temperatures"], TEMPERING["leapfrog_steps"]
    gradients_per_draw = copies * leapfrog

    _log(f"replica exchange: {len(sizes)} n × {chains} chains × {num_warmup}+{num_samples}")
    grid = Grid(sizes, chains)
    tempering = run_tempering(grid, num_warmup, num_samples)
    _log(f"NUTS depth {NUTS_DEPTH}: {len(sizes)} n × {nuts_chains} chains")
    nuts_grid = grid if nuts_chains == chains else Grid(sizes, nuts_chains)
    nuts = run_nuts(nuts_grid, num_warmup, num_samples)
    nuts_steps = nuts_grid.per_n(nuts.result.info.num_integration_steps)  # (sizes, chains, draws)
    swap = np.asarray(tempering.result.swap_acceptance)
    paper = (
        f"{len(PAPER_SIZES)} n (100..2000) × {PAPER_CHAINS} chains × {PAPER_DRAWS} draws "
        f"(+{PAPER_WARMUP} warmup), c = 6"
    )

    def grid_text(num_chains):
        return f"{len(sizes)} n × {num_chains} chains × {num_samples} draws (+{num_warmup} warmup)"

    scale = paper_rounds / (len(sizes) * chains * (num_warmup + num_samples))
    nuts_scale = paper_rounds / (len(sizes) * nuts_chains * (num_warmup + num_samples))
    rows.append(
        _row(
            f"paper-scale sweep {paper}, replica exchange K = {copies}, L = {leapfrog}: "
            + ("measured" if scale == 1 else f"extrapolated ×{scale:.3g} from {grid_text(chains)}"),
            tempering.run_s * scale + tempering.compile_s,
            f"NUTS depth cap {NUTS_DEPTH}, same grid"
            + (
                ""
                if nuts_scale == 1
                else f" (extrapolated ×{nuts_scale:.3g} from {grid_text(nuts_chains)})"
            ),
            nuts.run_s * nuts_scale + nuts.compile_s,
            tmsjax_run_s=tempering.run_s,
            baseline_run_s=nuts.run_s,
            tmsjax_compile_s=tempering.compile_s,
            baseline_compile_s=nuts.compile_s,
            target_s=600.0,
            tmsjax_gradients_per_draw=gradients_per_draw,
            baseline_mean_gradients_per_draw=float(nuts_steps.mean()),
            baseline_lockstep_efficiency=lockstep_efficiency(
                np.asarray(nuts.result.info.num_integration_steps)
            ),
            tmsjax_gradients_per_s=len(sizes)
            * chains
            * (num_warmup + num_samples)
            * gradients_per_draw
            / tempering.run_s,
            tmsjax_us_per_chain_round=tempering.run_s
            / (len(sizes) * chains * (num_warmup + num_samples))
            * 1e6,
            baseline_us_per_chain_draw=nuts.run_s
            / (len(sizes) * nuts_chains * (num_warmup + num_samples))
            * 1e6,
            tempering_lanes=len(sizes) * chains * copies,
            min_swap_acceptance=float(swap.min()) if swap.size else float("nan"),
        )
    )

    # ESS per gradient, per n: the sampling phase's draws and gradients only.
    t_loglik = grid.per_n(tempering.result.loglikelihood)
    n_loglik = nuts_grid.per_n(nuts.result.info.logdensity)
    trips = grid.per_n(tempering.result.num_round_trips)
    for index, n in enumerate(sizes):
        t_p, t_se, t_ess, _ = _occupancy(tempering.ids[index], "6")
        n_p, n_se, n_ess, _ = _occupancy(nuts.ids[index], "6")
        t_gradients = chains * num_samples * gradients_per_draw  # all copies move every round
        n_gradients = float(nuts_steps[index].sum())
        switched = np.any(nuts.ids[index][:, 1:] != nuts.ids[index][:, :-1], axis=1)
        rows.append(
            _row(
                f"ESS per 1000 gradients, 6-gon indicator, n = {n}",
                t_ess / t_gradients * 1e3,
                f"NUTS depth cap {NUTS_DEPTH}",
                n_ess / n_gradients * 1e3,
                note="ratio = NUTS / tempering here: < 1 means tempering earns more per gradient"
                + (
                    ""
                    if min(t_p, 1 - t_p, n_p, 1 - n_p) >= 0.01
                    else "; an occupancy within 0.01 of 0 or 1: its indicator ESS means little"
                ),
                tmsjax_ess=t_ess,
                baseline_ess=n_ess,
                tmsjax_loglik_ess_per_1000_gradients=_loglik_ess(t_loglik[index])
                / t_gradients
                * 1e3,
                baseline_logdensity_ess_per_1000_gradients=_loglik_ess(n_loglik[index])
                / n_gradients
                * 1e3,
                tmsjax_occupancy_6=t_p,
                tmsjax_se_6=t_se,
                baseline_occupancy_6=n_p,
                baseline_se_6=n_se,
                baseline_chains_that_switched=int(switched.sum()),
                tmsjax_round_trips_per_chain=float(trips[index].mean()),
            )
        )

    # Occupancies next to NUTS and SMC at a few n.
    check_sizes = [300, 600, 1000] if quick else [300, 600, 1000, 2000]
    replicates, particles = (2, 256) if quick else (4, 1000)
    _log(f"SMC {replicates} × {particles} particles at n = {check_sizes}")
    smc = run_smc(check_sizes, replicates, particles)
    for n in check_sizes:
        index = sizes.index(n)
        line = {}
        for label in INIT_LABELS:
            t_p, t_se, *_ = _occupancy(tempering.ids[index], label)
            n_p, n_se, *_ = _occupancy(nuts.ids[index], label)
            s_p, s_se, *_ = _occupancy(smc[n]["ids"], label)
            line[f"tempering_{label}"] = f"{t_p:.3f} ± {t_se:.3f}"
            line[f"nuts_{label}"] = f"{n_p:.3f} ± {n_se:.3f}"
            line[f"smc_{label}"] = f"{s_p:.3f} ± {s_se:.3f}"
            line[f"z_tempering_vs_smc_{label}"] = (t_p - s_p) / math.hypot(t_se, s_se)
            line[f"z_nuts_vs_smc_{label}"] = (n_p - s_p) / math.hypot(n_se, s_se)
        rows.append(
            _row(
                f"occupancies at n = {n}: tempering vs NUTS vs SMC ({replicates}×{particles})",
                float("nan"),
                "",
                float("nan"),
                **line,
            )
        )

    # Equal-error cost, tempering vs SMC, at n = 600 and 1000: each sampler's error from the
    # spread of its independent chains (tempering) or runs (SMC), each n in its own call of one
    # compiled program, compile time excluded.
    cost_chains, cost_replicates = (6, 2) if quick else (24, 8)
    cost_warmup, cost_samples = (100, 200) if quick else (300, 1000)
    _log(f"equal-error cost: SMC {cost_replicates} runs, tempering {cost_chains} chains")
    smc_cost = run_smc([600, 1000], cost_replicates, particles)
    chain = tempering_chain(cost_warmup, cost_samples)
    compile_s, executable = _compiled(chain, *tempering_args(Grid([600], cost_chains)))
    six = list(phase_labels(NUM_FEATURES)).index("6")
    for n in (600, 1000):
        cost_grid = Grid([n], cost_chains)
        seconds, result = _run(executable, *tempering_args(cost_grid))
        ids = cost_grid.per_n(_classify_all(result.positions.W, result.positions.b))[0]
        p, se_ess, _, se_spread = _occupancy(ids, "6")
        per_run = (smc_cost[n]["ids"] == six).mean(axis=1)
        s_p = float(per_run.mean())
        s_se = float(per_run.std(ddof=1) / math.sqrt(len(per_run)))
        s_seconds = smc_cost[n]["seconds"]
        rows.append(
            _row(
                f"seconds for se {TARGET_SE} on the 6-gon occupancy at n = {n} "
                "(run seconds × (se / 0.01)², se from independent chains / runs)",
                seconds * max(se_spread, 1e-4) ** 2 / TARGET_SE**2,
                f"tempered SMC, {cost_replicates} runs × {particles} particles",
                s_seconds * max(s_se, 1e-4) ** 2 / TARGET_SE**2,
                tmsjax_occupancy_6=p,
                tmsjax_se_spread=se_spread,
                tmsjax_se_ess=se_ess,
                tmsjax_run_s=seconds,
                tmsjax_compile_s=compile_s,
                tmsjax_gradients=cost_chains * (cost_warmup + cost_samples) * gradients_per_draw,
                tmsjax_grid=f"{cost_chains} chains × {cost_samples} draws (+{cost_warmup})",
                baseline_occupancy_6=s_p,
                baseline_se_spread=s_se,
                baseline_run_s=s_seconds,
                baseline_compile_s=smc_cost["compile_s"],
                baseline_gradients=smc_cost[n]["gradients"],
                z=(p - s_p) / math.hypot(se_spread, s_se),
            )
        )
    return rows


if __name__ == "__main__":
    report(NAME, run(quick="--quick" in sys.argv, full="--full" in sys.argv))
