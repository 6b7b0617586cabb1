"""How much faster is one vmapped SGD ensemble than the same runs trained one after another?

Workload: the paper's SGD protocol (TMS r = 2, c = 6, n = 1000, batch 20, lr 0.005, init near a
4-gon), `runs` runs × `steps` steps with 20 log-spaced checkpoints. tmsjax: all runs in one jitted,
vmapped program (:func:`tmsjax.tms.sgd.train`). Baseline: the *same* runs (same keys, same initial
parameters, same data) trained one at a time in a Python loop, each a call of the same engine with
one run (compiled once, reused); for the largest ensemble the loop time is extrapolated from the
measured per-run time (marked in the row). Throughput is runs × steps / second. Compile time is
reported apart (first call minus steady call).

Typical result (cpu-2core shared with other jobs, load average ~3, so timings are noisy):
  workload                                    tmsjax_s  baseline_s   ratio  run-steps/s
  64 runs x 10000 steps (n=1000, batch 20)    1.10      4.48         4.1x   5.8e5
  1024 runs x 10000 steps (n=1000, batch 20)  20.5      101.5 (extr.) 4.9x  5.0e5
  (under load ~10 the same run gave 2.1x and 5.6x)
On a CPU a single run's program is already cheap (~7 µs/step), so the gain is the amortised
Python and dispatch overhead plus vectorisation; it grows with the number of runs. No GPU was
available when this was measured: run ``python -m benchmarks.sgd_ensemble`` there for its numbers.
"""

import sys
import time

import jax
import numpy as np

from benchmarks.common import block, report
from tmsjax.tms.data import make_dataset, sample_sparse_limit
from tmsjax.tms.sgd import init_kgon_ensemble, train

NAME = "sgd_ensemble"


def _setup(num_runs):
    key_data, key_init, key_runs = jax.random.split(jax.random.key(0), 3)
    dataset = make_dataset(sample_sparse_limit(key_data, 1000, 6))
    return jax.random.split(key_runs, num_runs), init_kgon_ensemble(key_init, num_runs), dataset


def _train(keys, params, dataset, num_steps):
    result = train(keys, params, dataset, num_steps=num_steps, num_checkpoints=20, progress=False)
    return block(result.params)


def _timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def run(quick: bool = False) -> list[dict]:
    cases = [(8, 1_000)] if quick else [(64, 10_000), (1024, 10_000)]
    rows = []
    for num_runs, num_steps in cases:
        keys, params, dataset = _setup(num_runs)
        first = _timed(_train, keys, params, dataset, num_steps)
        ensemble = min(_timed(_train, keys, params, dataset, num_steps) for _ in range(2))

        # Baseline: the same runs one at a time (same keys and inits), one compiled single-run
        # program.
        def one(r):
            run_params = jax.tree.map(lambda leaf: leaf[r : r + 1], params)
            return keys[r : r + 1], run_params, dataset, num_steps

        _train(*one(0))  # compile the single-run program outside the timing
        measured = min(num_runs, 64)
        loop = _timed(lambda: [_train(*one(r)) for r in range(measured)]) * num_runs / measured
        rows.append(
            {
                "workload": f"{num_runs} runs x {num_steps} steps (n=1000, batch 20)",
                "tmsjax_s": ensemble,
                "baseline": "python loop over runs"
                + (f" (extrapolated from {measured})" if measured < num_runs else ""),
                "baseline_s": loop,
                "ratio": loop / ensemble,
                "compile_s": max(first - ensemble, 0.0),
                "run_steps_per_s": num_runs * num_steps / ensemble,
                "baseline_run_steps_per_s": num_runs * num_steps / loop,
            }
        )
    return rows


if __name__ == "__main__":
    rows = run(quick="--quick" in sys.argv)
    report(NAME, rows)
    print(f"speed-ups: {[round(float(np.round(r['ratio'], 1)), 1) for r in rows]}")
