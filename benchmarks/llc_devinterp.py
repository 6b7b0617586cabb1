"""How much faster is tmsjax's λ̂ than the incumbent, devinterp 1.3.2 (PyTorch), at identical
settings?

Workloads (Chen et al.'s protocol: n = 1000 full batch, ε = 1e-3, γ = 1, nβ = n / log n, 4 chains
× 500 SGLD steps, no burn-in):

1. one λ̂ at the TMS 6-gon: both libraries timed in this run, both estimates reported;
2. along training: 8 runs × 50 checkpoints = 400 estimates. tmsjax runs them as one compiled call;
   devinterp is extrapolated as 400 × its per-estimate time from workload 1 (it estimates one
   model at a time; running 400 would take minutes). Compile time is reported apart
   (``compile_s``).

devinterp is an optional extra (``pip install -e .[devinterp]``: devinterp==1.3.2,
torch==2.13.0), never a core dependency; without it the baseline columns read "unavailable".

Typical result (CPU, 2 cores, machine otherwise idle, full run, jax 0.10.2, devinterp 1.3.2 with
torch 2.13.0 on both cores):
  workload                                     tmsjax_s  baseline                  baseline_s  ratio
  single 6-gon estimate (n=1000, 4x500)        0.086     devinterp 1.3.2           9.43        109
  along training 8 runs x 50 ckpts (row loss)  18.9      devinterp (extrapolated)  3771        200
  along training, sufficient-statistics loss   2.59      devinterp (extrapolated)  3771        1457
  λ̂ at the 6-gon: tmsjax 6.81 ± 0.22, devinterp 7.62 (same settings, different random streams, a
  500-step chain with no burn-in: both below the exact 8.5). devinterp's best single estimate
  varies 7.3–9.4 s between runs (1130–1460x for the statistics path).
"""

import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import report, time_jax
from tmsjax import llc
from tmsjax.tms import losses
from tmsjax.tms.critical import critical_points
from tmsjax.tms.data import make_dataset, sample_sparse_limit, sparse_limit_stats
from tmsjax.tms.model import TMSParams, init_near_kgon

NAME = "llc_devinterp"
NUM_DATA, NUM_CHAINS, NUM_STEPS, STEP_SIZE, LOCALIZATION = 1000, 4, 500, 1e-3, 1.0
NUM_RUNS, NUM_CHECKPOINTS = 8, 50


def devinterp_estimate(W: np.ndarray, b: np.ndarray, x: np.ndarray, seed: int = 0) -> dict:
    """One λ̂ with devinterp's SGLD sampler at the same settings; returns the estimate and wall
    time."""
    import torch
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary

    # devinterp runs its chains one after another (cores=1); torch may use every core for each step,
    # as XLA does on the JAX side, so neither library is held to fewer threads than the other.
    torch.set_num_threads(os.cpu_count() or 1)

    class TorchTMS(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.W = torch.nn.Parameter(torch.tensor(W, dtype=torch.float32))
            self.b = torch.nn.Parameter(torch.tensor(b, dtype=torch.float32))

        def forward(self, inputs):
            return torch.relu(inputs @ self.W.T @ self.W + self.b)

    def evaluate(model, batch):
        inputs = batch[0]
        # Our loss: squared error summed over outputs, mean over samples (not torch's MSELoss).
        return ((inputs - model(inputs)) ** 2).sum(-1).mean()

    tensor = torch.tensor(np.asarray(x), dtype=torch.float32)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(tensor), batch_size=len(tensor), shuffle=False
    )
    start = time.perf_counter()
    summary = estimate_learning_coeff_with_summary(
        TorchTMS(),
        loader,
        evaluate=evaluate,
        sampling_method=SGLD,
        optimizer_kwargs=dict(
            lr=STEP_SIZE, localization=LOCALIZATION, nbeta=NUM_DATA / math.log(NUM_DATA)
        ),
        num_chains=NUM_CHAINS,
        num_draws=NUM_STEPS,
        num_burnin_steps=0,
        num_steps_bw_draws=1,
        device="cpu",
        verbose=False,
        seed=seed,
    )
    elapsed = time.perf_counter() - start
    return {
        "llc": float(summary["llc/mean"]),
        "llc_std": float(summary["llc/std"]),
        "seconds": elapsed,
    }


def run(quick: bool = False) -> list[dict]:
    key = jax.random.key(0)
    x = sample_sparse_limit(key, NUM_DATA, 6)
    dataset = make_dataset(x)
    hexagon = critical_points(6)[0]
    center = TMSParams(jnp.asarray(hexagon.W, jnp.float32), jnp.asarray(hexagon.b, jnp.float32))
    repeat = 2 if quick else 5

    settings = llc.LLCSettings(
        step_size=STEP_SIZE, localization=LOCALIZATION, num_chains=NUM_CHAINS, num_steps=NUM_STEPS
    )

    def single(key):
        return llc.estimate_llc(key, losses.row_loss, center, dataset, settings)

    first, steady = time_jax(single, jax.random.key(1), repeat=repeat)
    ours = single(jax.random.key(1))

    # Checkpoint-like centres: noisy 4-, 5- and 6-gons (what an SGD trajectory passes through).
    keys = jax.random.split(jax.random.key(2), NUM_RUNS * NUM_CHECKPOINTS)
    ks = np.resize([4, 5, 6], NUM_RUNS * NUM_CHECKPOINTS)
    centres = [init_near_kgon(k_, int(k), 6, radius=1.0, noise=0.05) for k_, k in zip(keys, ks)]
    params = jax.tree.map(
        lambda *leaves: jnp.stack(leaves).reshape(NUM_RUNS, NUM_CHECKPOINTS, *leaves[0].shape),
        *centres,
    )

    def along(key, loss_fn=losses.row_loss, data=dataset, cell_batch=llc.DEFAULT_CELL_BATCH):
        return llc.llc_along_training(key, loss_fn, params, data, settings, cell_batch=cell_batch)

    along_first, along_steady = time_jax(along, jax.random.key(3), repeat=1 if quick else 3)
    # The same 400 estimates from the exact sufficient statistics of the one-hot data (the TMS
    # wing's full-batch option): the same losses to float rounding, O(c²) work per gradient
    # instead of O(n c r). Its per-cell state is small, so all 400 cells run as one program
    # (cell_batch=None: 2.55 s against 4.2 s in groups of 8 on 2 idle cores; the row loss is the
    # other way round, 19 s in groups of 8 against 28-33 s all at once).
    stats = jax.tree.map(lambda a: a[0], sparse_limit_stats(np.asarray(x), [NUM_DATA]))
    stats_first, stats_steady = time_jax(
        along, jax.random.key(3), losses.stats_loss, stats, None, repeat=1 if quick else 3
    )
    stats_difference = float(
        np.max(
            np.abs(
                along(jax.random.key(3)).llc
                - along(jax.random.key(3), losses.stats_loss, stats).llc
            )
        )
    )

    try:
        baselines = [
            devinterp_estimate(hexagon.W, hexagon.b, np.asarray(x), seed=s)
            for s in range(1 if quick else 3)
        ]
        baseline_s = min(b["seconds"] for b in baselines)
        baseline_llc = float(np.mean([b["llc"] for b in baselines]))
        baseline_name = "devinterp 1.3.2"
    except ImportError as error:
        print(
            f"devinterp unavailable ({error}); install with pip install -e .[devinterp]",
            file=sys.stderr,
        )
        baseline_s, baseline_llc, baseline_name = (
            float("nan"),
            float("nan"),
            "devinterp (unavailable)",
        )

    num_estimates = NUM_RUNS * NUM_CHECKPOINTS
    return [
        {
            "workload": "single 6-gon estimate (n=1000, 4x500)",
            "tmsjax_s": steady,
            "compile_s": first - steady,
            "baseline": baseline_name,
            "baseline_s": baseline_s,
            "ratio": baseline_s / steady,
            "llc_tmsjax": float(ours.llc),
            "stderr_tmsjax": float(ours.stderr),
            "llc_baseline": baseline_llc,
            "verdict_tmsjax": llc.verdict(ours),
        },
        {
            "workload": f"along training {NUM_RUNS} runs x {NUM_CHECKPOINTS} ckpts",
            "tmsjax_s": along_steady,
            "compile_s": along_first - along_steady,
            "baseline": baseline_name + " (extrapolated)",
            "baseline_s": num_estimates * baseline_s,
            "ratio": num_estimates * baseline_s / along_steady,
        },
        {
            "workload": f"along training {NUM_RUNS} runs x {NUM_CHECKPOINTS} ckpts (stats loss)",
            "tmsjax_s": stats_steady,
            "compile_s": stats_first - stats_steady,
            "baseline": baseline_name + " (extrapolated)",
            "baseline_s": num_estimates * baseline_s,
            "ratio": num_estimates * baseline_s / stats_steady,
            "max_llc_difference_vs_rows": stats_difference,
        },
    ]


if __name__ == "__main__":
    rows = run(quick="--quick" in sys.argv)
    report(NAME, rows)
    for row in rows:
        extras = {
            k: v
            for k, v in row.items()
            if k not in ("workload", "tmsjax_s", "baseline", "baseline_s", "ratio", "device")
        }
        print(row["workload"], extras)
