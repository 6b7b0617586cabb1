"""Roofline: how much of the machine do the SGLD, NUTS and SGD kernels use?

Both ceilings are measured in the same run, on the device the kernels run on:

- **peak FLOP/s**: a square float32 matrix product (2 m³ flops), the best of several calls;
- **peak bytes/s**: a stream kernel over a float32 array much larger than the last cache level (the
  faster of ``y = a·x + b``, 8 bytes per element, and a read-only sum, 4: see
  :func:`peak_bandwidth`).

Each kernel's work is counted by XLA's own cost model (``compiled.cost_analysis()``: flops and
bytes accessed of the fused program) for *one* step of the vmapped ensemble, then multiplied by the
number of steps the timed program ran. A row's ``baseline_s`` is the time the same flops would take
at the measured peak, so ``ratio`` (= baseline_s / tmsjax_s, as in every benchmark) is the fraction
of peak FLOP/s achieved; ``bandwidth_fraction`` is the same for bytes. XLA counts the bytes every
fused operation reads and writes, wherever they live: a kernel whose working set sits in cache (the
TMS kernels' data is 24 kB) can show a fraction above 1, which says it is not memory-bound. Kernels:

- ``sgld``: localized SGLD on the TMS row loss (n = 1000 full batch), vmapped over chains; one unit
  = one step of every chain (loss + gradient + Langevin update + the acceptance bookkeeping);
- ``sgd``: the TMS SGD ensemble (batch 20, the paper's protocol), vmapped over runs; one unit = one
  step of every run (minibatch gather + gradient + update);
- ``nuts``: the (n, chain) NUTS sweep on the TMS posterior (rows likelihood, nested datasets); one
  unit = one gradient of the log density of one lane. Counted as *useful* work: the gradients each
  lane's own trajectory asked for (``num_integration_steps``), so lanes idling in lockstep (a
  vmapped while loop runs until its longest lane stops) count as lost time, and
  ``lockstep_efficiency`` says how much.

Usage: python -m benchmarks.roofline [--quick]
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import block, report
from tmsjax.llc import SGLD
from tmsjax.sampling.nuts import lockstep_efficiency, make_nuts_sweep
from tmsjax.tms.critical import critical_points
from tmsjax.tms.data import Dataset, make_dataset, nested_datasets, sample_sparse_limit
from tmsjax.tms.losses import row_loss
from tmsjax.tms.model import TMSParams
from tmsjax.tms.model import loss as tms_loss
from tmsjax.tms.posterior import make_logdensity_fn
from tmsjax.tms.sgd import init_kgon_ensemble, train

NAME = "roofline"
NUM_FEATURES = 6


def _is_accelerator() -> bool:
    return jax.devices()[0].platform != "cpu"


def _best_seconds(fn, *args, repeat: int = 5) -> float:
    block(fn(*args))  # compile and warm up outside the timing
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        block(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def xla_cost(fn, *args) -> tuple[float, float]:
    """(flops, bytes accessed) of one call of ``jax.jit(fn)(*args)`` by XLA's cost model."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(cost, list | tuple):  # older jax: one dict per computation
        cost = cost[0]
    cost = cost or {}
    return float(cost.get("flops", np.nan)), float(cost.get("bytes accessed", np.nan))


def peak_flops(size: int, dtype=jnp.float32) -> tuple[float, float]:
    """(FLOP/s, seconds) of an m × m matrix product, best of several (random operands)."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (size, size), dtype)
    b = jax.random.normal(kb, (size, size), dtype)
    seconds = _best_seconds(jax.jit(jnp.matmul), a, b)
    return 2 * size**3 / seconds, seconds


def peak_bandwidth(num_elements: int) -> tuple[float, float, str]:
    """(bytes/s, seconds, kernel) of the faster of two stream kernels over float32 x: a read and
    write ``y = 1.0001·x + 1`` (8 bytes/element) and a read-only sum (4 bytes/element). On CPU, XLA
    gives each call's output fresh pages, so the write kernel measures page faults more than DRAM
    (5.7 GB/s against numpy's 14 GB/s copy on the 2-core machine); the read-only sum does not."""
    x = jax.random.normal(jax.random.key(1), (num_elements,), jnp.float32)
    write = _best_seconds(jax.jit(lambda x: 1.0001 * x + 1.0), x)
    read = _best_seconds(jax.jit(jnp.sum), x)
    if 8 / write >= 4 / read:
        return 8 * num_elements / write, write, "y = a x + b"
    return 4 * num_elements / read, read, "sum(x)"


def _hexagon_centres(num: int) -> TMSParams:
    six = critical_points(NUM_FEATURES)[0]
    W = jnp.broadcast_to(jnp.asarray(six.W, jnp.float32), (num, *six.W.shape))
    b = jnp.broadcast_to(jnp.asarray(six.b, jnp.float32), (num, *six.b.shape))
    return TMSParams(W, b)


def sgld_kernel(num_chains: int, num_steps: int) -> dict:
    """Full-batch SGLD on the TMS row loss, vmapped over chains, scanned over steps."""
    data = make_dataset(sample_sparse_limit(jax.random.key(2), 1000, NUM_FEATURES))
    sampler = SGLD()
    nbeta, step_size, localization = 1000 / np.log(1000), 1e-3, 1.0
    centres = _hexagon_centres(num_chains)
    states = jax.vmap(lambda c: sampler.init(c, data, loss_fn=row_loss))(centres)

    def one_step(keys, states):
        def chain(key, state, centre):
            return sampler.step(
                key, state, data, centre, nbeta, step_size, localization, loss_fn=row_loss
            )

        return jax.vmap(chain)(keys, states, centres)

    @jax.jit
    def program(key, states):
        def body(states, key):
            states, info = one_step(jax.random.split(key, num_chains), states)
            return states, info.loss

        return jax.lax.scan(body, states, jax.random.split(key, num_steps))

    flops, nbytes = xla_cost(one_step, jax.random.split(jax.random.key(3), num_chains), states)
    seconds = _best_seconds(program, jax.random.key(4), states, repeat=3)
    return {
        "workload": f"sgld: {num_chains} chains x {num_steps} steps (TMS rows, n=1000)",
        "seconds": seconds,
        "flops": flops * num_steps,
        "bytes": nbytes * num_steps,
        "units_per_s": num_chains * num_steps / seconds,
        "unit": "chain-steps",
    }


def sgd_kernel(num_runs: int, num_steps: int) -> dict:
    """The TMS SGD ensemble (batch 20) as the experiments run it (tms.sgd.train)."""
    key_data, key_init, key_runs = jax.random.split(jax.random.key(5), 3)
    dataset = make_dataset(sample_sparse_limit(key_data, 1000, NUM_FEATURES))
    keys = jax.random.split(key_runs, num_runs)
    params = init_kgon_ensemble(key_init, num_runs)

    def program(keys, params):
        out = train(keys, params, dataset, num_steps=num_steps, num_checkpoints=4, progress=False)
        return out.params

    # One step of every run: a batch of 20 rows per run, the gradient, the SGD update.
    batches = jax.random.uniform(jax.random.key(6), (num_runs, 20, NUM_FEATURES))

    def one_step(params, batches):
        grads = jax.vmap(jax.grad(tms_loss))(params, batches)
        return jax.tree.map(lambda w, g: w - 0.005 * g, params, grads)

    flops, nbytes = xla_cost(one_step, params, batches)
    seconds = _best_seconds(program, keys, params, repeat=2)
    return {
        "workload": f"sgd: {num_runs} runs x {num_steps} steps (TMS, batch 20)",
        "seconds": seconds,
        "flops": flops * num_steps,
        "bytes": nbytes * num_steps,
        "units_per_s": num_runs * num_steps / seconds,
        "unit": "run-steps",
    }


def nuts_kernel(num_chains: int, num_warmup: int, num_samples: int) -> dict:
    """The NUTS sweep over 4 nested dataset sizes × chains (rows likelihood, tree depth cap 5)."""
    sizes = [200, 400, 600, 800]
    x = sample_sparse_limit(jax.random.key(7), max(sizes), NUM_FEATURES)
    grid = len(sizes) * num_chains
    mask = jnp.repeat(nested_datasets(x, sizes).mask, num_chains, 0)
    logdensity = make_logdensity_fn()
    sweep = make_nuts_sweep(
        logdensity,
        num_warmup=num_warmup,
        num_samples=num_samples,
        max_num_doublings=5,
        data_axes=Dataset(x=None, mask=0),
    )
    W = 0.5 * jax.random.normal(jax.random.key(8), (grid, 2, NUM_FEATURES))
    positions = TMSParams(W, -0.1 * jnp.ones((grid, NUM_FEATURES)))
    keys = jax.random.split(jax.random.key(9), grid)
    data = Dataset(x, mask)

    start = time.perf_counter()
    result = block(sweep(keys, positions, data))
    first = time.perf_counter() - start
    start = time.perf_counter()
    result = block(sweep(keys, positions, data))
    seconds = time.perf_counter() - start

    def gradients(positions, mask):
        grad = jax.vmap(jax.grad(logdensity), in_axes=(0, Dataset(None, 0)))
        return grad(positions, Dataset(x, mask))

    flops, nbytes = xla_cost(gradients, positions, mask)  # one gradient of every lane
    steps = np.asarray(result.info.num_integration_steps)
    # Warmup trajectories are not recorded; count them at the sampling phase's mean length.
    per_lane = steps.sum(axis=1) * (num_warmup + num_samples) / num_samples
    useful = float(per_lane.sum()) / grid  # gradients per lane, both phases
    return {
        "workload": f"nuts: 4 sizes x {num_chains} chains x {num_warmup}+{num_samples} draws",
        "seconds": seconds,
        "compile_s": max(first - seconds, 0.0),
        "flops": flops * useful,
        "bytes": nbytes * useful,
        "units_per_s": grid * useful / seconds,
        "unit": "lane-gradients",
        "lockstep_efficiency": lockstep_efficiency(steps),
    }


def run(quick: bool = False) -> list[dict]:
    gpu = _is_accelerator()
    matmul = 8192 if gpu else (1024 if quick else 2048)
    stream = (1 << 28) if gpu else (1 << 24 if quick else 1 << 26)
    flops_peak, flops_s = peak_flops(matmul)
    bytes_peak, bytes_s, stream_kernel = peak_bandwidth(stream)
    rows = [
        {
            "workload": f"peak: float32 matmul {matmul}^3",
            "tmsjax_s": flops_s,
            "baseline": "(ceiling)",
            "baseline_s": flops_s,
            "ratio": 1.0,
            "gflops": flops_peak / 1e9,
        },
        {
            "workload": f"peak: stream {stream_kernel}, {stream * 4 / 2**20:.0f} MiB",
            "tmsjax_s": bytes_s,
            "baseline": "(ceiling)",
            "baseline_s": bytes_s,
            "ratio": 1.0,
            "gbytes_per_s": bytes_peak / 1e9,
        },
    ]
    if gpu:
        bf16_peak, bf16_s = peak_flops(matmul, jnp.bfloat16)
        rows.append(
            {
                "workload": f"peak: bfloat16 matmul {matmul}^3 (not used by the kernels)",
                "tmsjax_s": bf16_s,
                "baseline": "(ceiling)",
                "baseline_s": bf16_s,
                "ratio": 1.0,
                "gflops": bf16_peak / 1e9,
            }
        )
    scale = 32 if gpu else 1
    kernels = [
        sgld_kernel(num_chains=256 * scale, num_steps=100 if quick else 300),
        sgd_kernel(num_runs=64 * scale, num_steps=1000 if quick else 5000),
        nuts_kernel(num_chains=8 * scale, num_warmup=50, num_samples=50 if quick else 150),
    ]
    for kernel in kernels:
        seconds = kernel.pop("seconds")
        rows.append(
            {
                "workload": kernel.pop("workload"),
                "tmsjax_s": seconds,
                "baseline": "same flops at peak FLOP/s",
                "baseline_s": kernel["flops"] / flops_peak,
                "ratio": kernel["flops"] / flops_peak / seconds,
                "gflops": kernel["flops"] / seconds / 1e9,
                "gbytes_per_s": kernel["bytes"] / seconds / 1e9,
                "bandwidth_fraction": kernel["bytes"] / seconds / bytes_peak,
                **kernel,
            }
        )
    return rows


if __name__ == "__main__":
    rows = run(quick="--quick" in sys.argv)
    report(NAME, rows)
    for row in rows:
        print(
            f"{row['workload']}: {row.get('gflops', float('nan')):.3g} GFLOP/s "
            f"({row['ratio']:.2%} of peak), {row.get('gbytes_per_s', float('nan')):.3g} GB/s "
            f"({row.get('bandwidth_fraction', 1.0):.2%} of peak)"
        )
