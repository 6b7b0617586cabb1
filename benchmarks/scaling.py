"""How the cost of SGLD λ̂ chains grows with the number of chains (1 to 10⁴) and with n.

Question: how does throughput (chain-steps per second) grow when more chains are vmapped into one
program, and how does the cost per chain-step grow with the dataset size n, for the generic
row-by-row loss and for the TMS loss from the exact sufficient statistics of one-hot data
(:func:`tmsjax.tms.losses.stats_loss`)? Baselines: the single-chain program (chains rows: ratio =
throughput gain over one chain) and the row loss at the same n (n rows: ratio = the statistics
path's speed-up), each measured in the same run. Compile
time is reported apart from run time, and achieved FLOP/s from an analytic count: the full-batch TMS
loss and gradient cost ≈ 3 × (4 r c + 4 c) flops per sample per step (forward ≈ 2rc + 2rc + 2c,
backward ≈ 2 × forward), so a chain-step over n samples costs ≈ 3·n·(4rc + 4c) flops.

Typical result: see benchmarks/results/scaling-<device>.json.

Usage: python -m benchmarks.scaling [--quick]
"""

import functools
import sys

import jax
import jax.numpy as jnp

from benchmarks.common import report, time_jax
from tmsjax.llc import SGLD, LLCSettings, default_nbeta, sample_llc
from tmsjax.tms.critical import critical_points
from tmsjax.tms.data import make_dataset, sample_sparse_limit, sparse_limit_stats
from tmsjax.tms.losses import row_loss, stats_loss
from tmsjax.tms.model import TMSParams

NAME = "scaling"
NUM_FEATURES, NUM_HIDDEN = 6, 2


@functools.partial(jax.jit, static_argnames=("num_chains", "num_steps", "loss_fn"))
def _run(key, center, data, *, num_chains, num_steps, loss_fn=row_loss):
    sampler = SGLD(estimate_acceptance=False)
    chains = LLCSettings(num_chains=num_chains, num_steps=num_steps, sampler=sampler).chains
    nbeta = default_nbeta(data.num_data)
    return sample_llc(key, center, data, nbeta, 1e-3, 1.0, loss_fn=loss_fn, chains=chains).llc


def _flops_per_chain_step(num_data):
    return 3 * num_data * (4 * NUM_HIDDEN * NUM_FEATURES + 4 * NUM_FEATURES)


def run(quick: bool = False) -> list[dict]:
    six = critical_points(NUM_FEATURES)[0]
    center = TMSParams(jnp.asarray(six.W, jnp.float32), jnp.asarray(six.b, jnp.float32))
    key = jax.random.key(0)
    num_steps = 100

    def measure(num_chains, num_data, path="rows"):
        """Times one program; returns (row without baseline, seconds per chain-step per sample)."""
        x = sample_sparse_limit(jax.random.key(1), num_data, NUM_FEATURES)
        if path == "rows":
            data, loss_fn = make_dataset(x), row_loss
        else:
            data = jax.tree.map(lambda a: a[0], sparse_limit_stats(x, [num_data]))
            loss_fn = stats_loss
        run_one = functools.partial(
            _run, num_chains=num_chains, num_steps=num_steps, loss_fn=loss_fn
        )
        first, steady = time_jax(run_one, key, center, data, repeat=2)
        per_step = steady / (num_chains * num_steps)
        row = {
            "workload": f"SGLD chains={num_chains}, n={num_data}, {num_steps} steps ({path})",
            "path": path,
            "seconds_per_chain_step": per_step,
            "tmsjax_s": steady,
            "compile_s": max(first - steady, 0.0),
            "chain_steps_per_s": 1 / per_step,
            # the analytic count is the row loss's; the statistics path does other work
            "gflops": _flops_per_chain_step(num_data) / per_step / 1e9 if path == "rows" else None,
        }
        return row, per_step / num_data

    rows = []
    # Throughput vs chains at n = 100 (10⁴ chains × full-batch steps stay inside a CPU minute); the
    # baseline is the single-chain cost per chain-step, scaled to the same work.
    base = None
    for num_chains in [1, 10, 100, 1000] if quick else [1, 10, 100, 1000, 10_000]:
        row, cost = measure(num_chains, 100)
        base = cost if base is None else base
        rows.append(
            row
            | {
                "baseline": "1 chain, same program (per chain-step, scaled)",
                "baseline_s": base * row["tmsjax_s"] / cost,
                "ratio": base / cost,
            }
        )
    # Cost per chain-step vs n at 16 chains, for the row-by-row loss (any data) and the TMS
    # sufficient-statistics loss (one-hot data only); the baseline is the row path at the same n.
    for num_data in [100, 1000, 10_000] if quick else [100, 1000, 10_000, 100_000]:
        rows_row, _ = measure(16, num_data, "rows")
        stats_row, _ = measure(16, num_data, "stats")
        rows.append(rows_row | {"baseline": "(reference)", "baseline_s": rows_row["tmsjax_s"]})
        rows[-1]["ratio"] = 1.0
        rows.append(
            stats_row
            | {
                "baseline": "row loss at the same n",
                "baseline_s": rows_row["tmsjax_s"],
                "ratio": rows_row["tmsjax_s"] / stats_row["tmsjax_s"],
            }
        )
    return rows


if __name__ == "__main__":
    report(NAME, run(quick="--quick" in sys.argv))
