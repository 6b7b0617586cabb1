"""Benchmark: effective samples per second of the vmapped NUTS sweep vs numpyro NUTS looped over n.

Question: how much faster is one compiled (n, chain) NUTS sweep than the paper's precursor approach,
numpyro NUTS run separately for each dataset size n, on the same target (prior N(0, I), likelihood
exp(−n L_n)), with the same warmup, draws, tree-depth cap, initial step size, starting points and
chains per n? And how does the sweep's throughput grow with the number of chains?

Both sides are timed the same way: the first call (compile + run) and the best of repeated
steady-state calls, compile = first − steady, reported apart. The baselines:

- ``numpyro kernel``: numpyro's own NUTS (``numpyro.infer.hmc.hmc(..., algo="NUTS")``, the init /
  sample kernels ``MCMC(NUTS)`` runs, with its Stan window adaptation inside the sample kernel),
  chains vmapped (= ``chain_method="vectorized"``) and the whole warmup + sampling jitted once per
  n, so its steady state is a pure run. This is the fair kernel-to-kernel comparison.
- ``numpyro MCMC``: ``MCMC(NUTS(...), chain_method="vectorized", jit_model_args=True)`` exactly as a
  user runs it, one object per n, timed on a second full loop over n. In numpyro 0.22 a second
  ``.run()`` on a re-used vectorised MCMC object fails (its init vmaps the already vmapped sample
  function again), and even when that is patched around, the jitted sampling loop is recompiled on
  every ``.run()`` (``jax_log_compiles`` shows ``jit(_fori_collect_loop)`` compiled each time), so
  this row includes numpyro's per-run compilation: it is what a user pays, not a kernel speed.

Metric: ESS of ‖w‖² (rotation and permutation invariant, so it measures mixing within and between
phases rather than along the O(2) ring no-one measures), per chain with
tmsjax.sampling.diagnostics (blackjax's Geyer estimator; the same code for both sides), summed over
chains and n; the log density's ESS is reported too. ESS/s = that sum / steady-state seconds;
``ratio`` = baseline_s / tmsjax_s and ``ess_per_s_ratio`` = (tmsjax ESS/s) / (baseline ESS/s) =
speed-up at equal ESS.

Typical result (cpu-2core, machine idle; jax 0.10.2, blackjax 1.7.1, numpyro 0.22; n ∈ {200, 400,
600, 800}, 4 chains per n, 200 warmup + 300 draws, tree depth cap 5; full table in
benchmarks/README.md):

  tmsjax sweep           s (compile)  baseline                          s (compile)  ESS/s ratio
  sufficient statistics  1.10 (6.0)   numpyro MCMC(NUTS) per n, rows    20.1         20.1
  sufficient statistics  1.10         numpyro kernel per n, rows        1.81 (20.2)  1.92
  sufficient statistics  1.10         numpyro kernel per n, statistics  0.98 (4.8)   1.13
  rows, padded to n_max  3.73 (5.2)   numpyro kernel per n, rows        1.81         0.52

Reading: against the issue's baseline (``MCMC(NUTS)`` looped over n, as users run it) the sweep is
20x faster at equal ESS: one compilation instead of one per n, times the exact sufficient-statistics
likelihood (3.4x by itself). Kernel to kernel the two NUTS implementations are at parity on 2 CPU
cores: a vmapped lane is not parallel hardware there (throughput per chain is flat from 4 chains on,
on both sides), and lockstep costs only ~5% because 93% of draws hit the depth cap. The row sweep
pads every n to n_max, which the numpyro loop gains back. Many parallel lanes (a GPU, or a mesh of
devices) are where the one-program sweep should pull ahead kernel to kernel; not measured here.
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import report
from tmsjax.sampling import diagnostics
from tmsjax.sampling.nuts import lockstep_efficiency, make_nuts_sweep
from tmsjax.tms.data import Dataset, nested_datasets, sample_sparse_limit, sparse_limit_stats
from tmsjax.tms.model import TMSParams, loss, sum_squared_error_from_stats
from tmsjax.tms.posterior import make_logdensity_fn

NAME = "nuts_sweep"
NUM_FEATURES = 6
INITIAL_STEP_SIZE = 0.1  # tmsjax's default; given to numpyro too so both adapt from the same start


def _squared_norm(W, b) -> np.ndarray:
    """‖w‖² per draw: W (chains, draws, 2, c), b (chains, draws, c) -> (chains, draws)."""
    W, b = np.asarray(W, float), np.asarray(b, float)
    return (W**2).sum(axis=(-1, -2)) + (b**2).sum(axis=-1)


def _ess(scalar) -> float:
    """Per-chain ESS of a scalar (chains, draws), summed over chains (chains need not mix)."""
    return float(np.nansum(diagnostics.per_chain_ess(np.asarray(scalar, float)[..., None])))


def _timed(fn, repeat: int):
    """(first-call seconds, best steady-state seconds, last output); outputs blocked on."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return first, best, out


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _initial_positions(key, num_chains: int) -> TMSParams:
    W = 0.5 * jax.random.normal(key, (num_chains, 2, NUM_FEATURES))
    return TMSParams(W, -0.1 * jnp.ones((num_chains, NUM_FEATURES)))


def _rows_loglik(params, xs):
    return -xs.shape[0] * loss(params, xs)


def _stats_loglik(params, stats):
    return -sum_squared_error_from_stats(params, stats)


def _numpyro_model(loglik=_rows_loglik):
    import numpyro
    import numpyro.distributions as dist

    def model(xs):
        W = numpyro.sample("W", dist.Normal(0, 1).expand([2, NUM_FEATURES]).to_event(2))
        b = numpyro.sample("b", dist.Normal(0, 1).expand([NUM_FEATURES]).to_event(1))
        numpyro.factor("loglik", loglik(TMSParams(W, b), xs))

    return model


def make_numpyro_kernel_run(
    x_example, *, num_warmup: int, num_samples: int, depth: int, loglik=_rows_loglik
):
    """numpyro's NUTS kernels, chains vmapped, warmup + sampling in one jit (compiled once per
    n)."""
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import initialize_model

    model_info = initialize_model(
        jax.random.key(0), _numpyro_model(loglik), model_args=(x_example,), dynamic_args=True
    )
    init_kernel, sample_kernel = hmc(potential_fn_gen=model_info.potential_fn, algo="NUTS")

    @jax.jit
    def run(keys, init_params, xs):
        def one_chain(key, init):
            state = init_kernel(
                init,
                num_warmup,
                step_size=INITIAL_STEP_SIZE,
                max_tree_depth=depth,
                target_accept_prob=0.8,
                model_args=(xs,),
                rng_key=key,
            )

            def step(state, _):
                state = sample_kernel(state, model_args=(xs,))
                return state, (state.z, -state.potential_energy, state.num_steps)

            state, _ = jax.lax.scan(
                step, state, None, length=num_warmup
            )  # adaptation runs while i < num_warmup
            _, draws = jax.lax.scan(step, state, None, length=num_samples)
            return draws

        return jax.vmap(one_chain)(keys, init_params)

    return run


def _numpyro_mcmc_loop(x, sizes, init, key, *, num_warmup, num_samples, depth):
    """numpyro MCMC(NUTS) as a user runs it, one MCMC object per n; (seconds, ESS of ‖w‖²)."""
    from numpyro.infer import MCMC, NUTS

    seconds, ess = 0.0, 0.0
    for n in sizes:
        mcmc = MCMC(
            NUTS(_numpyro_model(), max_tree_depth=depth, step_size=INITIAL_STEP_SIZE),
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=init.W.shape[0],
            chain_method="vectorized",
            progress_bar=False,
            jit_model_args=True,
        )
        start = time.perf_counter()
        mcmc.run(jax.random.fold_in(key, n), x[:n], init_params={"W": init.W, "b": init.b})
        samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        seconds += time.perf_counter() - start
        ess += _ess(_squared_norm(samples["W"], samples["b"]))
    return seconds, ess


def run(quick: bool = False) -> list[dict]:
    c = NUM_FEATURES
    sizes = [300, 600] if quick else [200, 400, 600, 800]
    num_chains = 2 if quick else 4
    num_warmup, num_samples, depth = (50, 50, 4) if quick else (200, 300, 5)
    repeat = 1 if quick else 2
    chain_counts = [1, 4] if quick else [1, 4, 16, 64]  # 256 chains took ~4 min on 2 busy cores
    numpyro_chain_counts = [1, 4] if quick else [1, 4, 16, 64]
    x = sample_sparse_limit(jax.random.key(0), max(sizes), c)
    key_init, key = jax.random.split(jax.random.key(1))
    grid = len(sizes) * num_chains
    init_one = _initial_positions(
        key_init, num_chains
    )  # the same starts for every n, on both sides
    init = jax.tree.map(lambda a: jnp.tile(a, (len(sizes),) + (1,) * (a.ndim - 1)), init_one)
    settings = f"{num_chains} chains/n, {num_warmup}+{num_samples} steps, depth cap {depth}"

    # tmsjax: one program for the whole (n, chain) grid (datasets padded to max(sizes) and masked).
    # Nested datasets share their rows: x is passed once (data_axes None), only the masks per lane.
    sweep = make_nuts_sweep(
        make_logdensity_fn(),
        num_warmup=num_warmup,
        num_samples=num_samples,
        max_num_doublings=depth,
        initial_step_size=INITIAL_STEP_SIZE,
        data_axes=Dataset(x=None, mask=0),
    )
    data = Dataset(x, jnp.repeat(nested_datasets(x, sizes).mask, num_chains, 0))
    keys = jax.random.split(key, grid)
    _log("tmsjax sweep")
    first, tmsjax_s, result = _timed(lambda: sweep(keys, init, data), repeat)
    sq = _squared_norm(result.positions.W, result.positions.b)
    tmsjax_ess = _ess(sq)
    tmsjax_ess_logdensity = _ess(result.info.logdensity)
    steps = np.asarray(result.info.num_integration_steps)
    lockstep_grid = lockstep_efficiency(steps)
    lockstep_within_n = float(
        np.mean([lockstep_efficiency(s) for s in steps.reshape(len(sizes), num_chains, -1)])
    )
    tree_depth = float(np.mean(result.info.tree_depth))
    at_cap = float(np.mean(np.asarray(result.info.tree_depth) >= depth))

    # numpyro kernel: jitted per n, looped over n; steady state = a second full loop.
    kernel_run = make_numpyro_kernel_run(
        x[: sizes[0]], num_warmup=num_warmup, num_samples=num_samples, depth=depth
    )
    init_dict = {"W": init_one.W, "b": init_one.b}
    chain_keys = {n: jax.random.split(jax.random.fold_in(key, n), num_chains) for n in sizes}

    def numpyro_loop():
        return [kernel_run(chain_keys[n], init_dict, x[:n]) for n in sizes]

    _log("numpyro kernel loop")
    kernel_first, kernel_s, kernel_out = _timed(numpyro_loop, repeat)
    kernel_ess = sum(_ess(_squared_norm(z["W"], z["b"])) for z, _, _ in kernel_out)
    kernel_ess_logdensity = sum(_ess(logdensity) for _, logdensity, _ in kernel_out)
    kernel_steps = np.concatenate([np.asarray(s) for _, _, s in kernel_out])

    # numpyro MCMC as a user runs it: first loop, then the timed second loop (still recompiles).
    _log("numpyro MCMC loops")
    mcmc_first, _ = _numpyro_mcmc_loop(
        x, sizes, init_one, key, num_warmup=num_warmup, num_samples=num_samples, depth=depth
    )
    mcmc_s, mcmc_ess = _numpyro_mcmc_loop(
        x, sizes, init_one, key, num_warmup=num_warmup, num_samples=num_samples, depth=depth
    )

    tmsjax_rate = tmsjax_ess / tmsjax_s
    workload = f"TMS c={c} NUTS sweep, n in {sizes}, {settings}"
    rows = [
        {
            "workload": workload,
            "tmsjax_s": tmsjax_s,
            "tmsjax_compile_s": first - tmsjax_s,
            "baseline": "numpyro NUTS kernel, vmapped chains, jitted, looped over n",
            "baseline_s": kernel_s,
            "baseline_compile_s": kernel_first - kernel_s,
            "ratio": kernel_s / tmsjax_s,
            "tmsjax_ess_sq_norm": tmsjax_ess,
            "baseline_ess_sq_norm": kernel_ess,
            "tmsjax_ess_logdensity": tmsjax_ess_logdensity,
            "baseline_ess_logdensity": kernel_ess_logdensity,
            "tmsjax_ess_per_s": tmsjax_rate,
            "baseline_ess_per_s": kernel_ess / kernel_s,
            "ess_per_s_ratio": tmsjax_rate / max(kernel_ess / kernel_s, 1e-12),
            "tmsjax_mean_leapfrog_per_draw": float(steps.mean()),
            "baseline_mean_leapfrog_per_draw": float(kernel_steps.mean()),
            "tmsjax_mean_tree_depth": tree_depth,
            "tmsjax_fraction_at_depth_cap": at_cap,
            "lockstep_efficiency_whole_grid": lockstep_grid,
            "lockstep_efficiency_within_n": lockstep_within_n,
            "first_call_ratio_with_compile": kernel_first / first,
        },
        {
            "workload": workload,
            "tmsjax_s": tmsjax_s,
            "tmsjax_compile_s": first - tmsjax_s,
            "baseline": "numpyro MCMC(NUTS) vectorized, one object per n (recompiles every run)",
            "baseline_s": mcmc_s,
            "baseline_first_loop_s": mcmc_first,
            "ratio": mcmc_s / tmsjax_s,
            "tmsjax_ess_sq_norm": tmsjax_ess,
            "baseline_ess_sq_norm": mcmc_ess,
            "tmsjax_ess_per_s": tmsjax_rate,
            "baseline_ess_per_s": mcmc_ess / mcmc_s,
            "ess_per_s_ratio": tmsjax_rate / max(mcmc_ess / mcmc_s, 1e-12),
        },
    ]

    # The same sweep on the data's sufficient statistics (exact same target, O(c²) per
    # gradient), against the same numpyro loops and against numpyro given that likelihood too, so
    # the table separates what the likelihood buys from what the sweep buys.
    stats_sweep = make_nuts_sweep(
        make_logdensity_fn(),
        num_warmup=num_warmup,
        num_samples=num_samples,
        max_num_doublings=depth,
        initial_step_size=INITIAL_STEP_SIZE,
    )
    stats = sparse_limit_stats(x, sizes)
    stats_data = jax.tree.map(lambda a: jnp.repeat(a, num_chains, 0), stats)
    _log("tmsjax sweep, sufficient statistics")
    stats_first, stats_s, stats_result = _timed(lambda: stats_sweep(keys, init, stats_data), repeat)
    stats_ess = _ess(_squared_norm(stats_result.positions.W, stats_result.positions.b))
    stats_kernel = make_numpyro_kernel_run(
        jax.tree.map(lambda a: a[0], stats),
        num_warmup=num_warmup,
        num_samples=num_samples,
        depth=depth,
        loglik=_stats_loglik,
    )
    stats_per_n = [jax.tree.map(lambda a: a[i], stats) for i in range(len(sizes))]
    _log("numpyro kernel loop, sufficient statistics")
    stats_kernel_first, stats_kernel_s, stats_kernel_out = _timed(
        lambda: [stats_kernel(chain_keys[n], init_dict, st) for n, st in zip(sizes, stats_per_n)],
        repeat,
    )
    stats_kernel_ess = sum(_ess(_squared_norm(z["W"], z["b"])) for z, _, _ in stats_kernel_out)
    stats_rate = stats_ess / stats_s
    stats_workload = f"{workload}, sufficient-statistics likelihood"
    for baseline, baseline_s, baseline_ess in [
        ("numpyro NUTS kernel, row likelihood, jitted, looped over n", kernel_s, kernel_ess),
        (
            "numpyro NUTS kernel, sufficient statistics too, jitted, looped over n",
            stats_kernel_s,
            stats_kernel_ess,
        ),
        (
            "numpyro MCMC(NUTS) vectorized, row likelihood, one object per n "
            "(recompiles every run)",
            mcmc_s,
            mcmc_ess,
        ),
    ]:
        rows.append(
            {
                "workload": stats_workload,
                "tmsjax_s": stats_s,
                "tmsjax_compile_s": stats_first - stats_s,
                "baseline": baseline,
                "baseline_s": baseline_s,
                "ratio": baseline_s / stats_s,
                "tmsjax_ess_sq_norm": stats_ess,
                "baseline_ess_sq_norm": baseline_ess,
                "tmsjax_ess_per_s": stats_rate,
                "baseline_ess_per_s": baseline_ess / baseline_s,
                "ess_per_s_ratio": stats_rate / max(baseline_ess / baseline_s, 1e-12),
                **(
                    {"baseline_compile_s": stats_kernel_first - stats_kernel_s}
                    if "statistics too" in baseline
                    else {}
                ),
            }
        )

    # Throughput vs number of chains, one n, both sides steady state.
    n = max(sizes)
    kernel_run_n = make_numpyro_kernel_run(
        x[:n], num_warmup=num_warmup, num_samples=num_samples, depth=depth
    )
    for chains in chain_counts:
        _log(f"throughput, {chains} chains")
        init_c = _initial_positions(jax.random.fold_in(key, chains), chains)
        keys_c = jax.random.split(jax.random.fold_in(key, 10_000 + chains), chains)
        data_c = Dataset(x, jnp.ones((chains, x.shape[0]), bool))
        first_c, seconds, out = _timed(lambda: sweep(keys_c, init_c, data_c), 1)
        ess_c = _ess(_squared_norm(out.positions.W, out.positions.b))
        row = {
            "workload": f"throughput vs chains: {chains} chains at n={n}",
            "chains": chains,
            "tmsjax_s": seconds,
            "tmsjax_compile_s": first_c - seconds,
            "tmsjax_draws_per_s": chains * (num_warmup + num_samples) / seconds,
            "tmsjax_ess_per_s": ess_c / seconds,
            "lockstep_efficiency": lockstep_efficiency(np.asarray(out.info.num_integration_steps))
            if chains > 1
            else 1.0,
            "baseline": "",
            "baseline_s": float("nan"),
            "ratio": float("nan"),
        }
        if chains in numpyro_chain_counts:
            init_d = {"W": init_c.W, "b": init_c.b}
            _, baseline_c, out_np = _timed(lambda: kernel_run_n(keys_c, init_d, x[:n]), 1)
            row.update(
                baseline="numpyro NUTS kernel (vmapped chains)",
                baseline_s=baseline_c,
                ratio=baseline_c / seconds,
                baseline_draws_per_s=chains * (num_warmup + num_samples) / baseline_c,
                baseline_ess_per_s=_ess(_squared_norm(out_np[0]["W"], out_np[0]["b"])) / baseline_c,
            )
        rows.append(row)
    return rows


if __name__ == "__main__":
    report(NAME, run(quick="--quick" in sys.argv))
