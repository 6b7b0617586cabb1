"""Benchmark: effective samples per second of the vmapped NUTS sweep vs numpyro MCMC(NUTS) looped over n.

Question: how much faster is one compiled (n, chain) NUTS sweep than the paper's precursor approach,
numpyro ``MCMC(NUTS)`` run separately for each dataset size n (same target: prior N(0, I),
likelihood exp(−n L_n), same warmup and draws, same tree-depth cap)? And how does the sweep's
throughput grow with the number of chains (vmapped lanes run in lockstep)?

Metric: ESS/s = (min over parameters of the multi-chain ESS, summed over n) / wall seconds of the
steady-state run (compile reported apart). Timings on a shared 2-core CPU are noisy.

Typical result: not yet measured (written at the end of the session; run it).
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import report
from tmsjax import diagnostics
from tmsjax.data import nested_datasets, sample_sparse_limit
from tmsjax.model import TMSParams, loss
from tmsjax.posterior import make_logdensity_fn
from tmsjax.sampling.nuts import make_nuts_sweep

NAME = "nuts_sweep"


def _min_ess(W, b):
    draws = np.concatenate([np.asarray(W).reshape(*np.shape(W)[:2], -1), np.asarray(b)], axis=-1)
    return float(np.nanmin(diagnostics.effective_sample_size(draws)))


def run(quick: bool = False) -> list[dict]:
    c = 6
    sizes = [300, 600] if quick else [200, 400, 600, 800]
    num_chains = 2 if quick else 4
    num_warmup, num_samples, depth = (50, 50, 4) if quick else (200, 300, 5)
    x = sample_sparse_limit(jax.random.key(0), max(sizes), c)
    key = jax.random.key(1)
    init = TMSParams(0.5 * jax.random.normal(key, (len(sizes) * num_chains, 2, c)), -0.1 * jnp.ones((len(sizes) * num_chains, c)))

    # tmsjax: one program for the whole (n, chain) grid.
    sweep = make_nuts_sweep(make_logdensity_fn(), num_warmup=num_warmup, num_samples=num_samples, max_num_doublings=depth)
    data = jax.tree.map(lambda d: jnp.repeat(d, num_chains, 0), nested_datasets(x, sizes))
    keys = jax.random.split(key, len(sizes) * num_chains)
    start = time.perf_counter()
    result = jax.block_until_ready(sweep(keys, init, data))
    first = time.perf_counter() - start
    start = time.perf_counter()
    result = jax.block_until_ready(sweep(keys, init, data))
    tmsjax_s = time.perf_counter() - start
    W = np.asarray(result.positions.W).reshape(len(sizes), num_chains, num_samples, 2, c)
    b = np.asarray(result.positions.b).reshape(len(sizes), num_chains, num_samples, c)
    tmsjax_ess = sum(_min_ess(W[i], b[i]) for i in range(len(sizes)))

    # numpyro baseline: MCMC(NUTS) per n, chains vectorised, same target, compile counted apart.
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    def model(xs):
        Wp = numpyro.sample("W", dist.Normal(0, 1).expand([2, c]).to_event(2))
        bp = numpyro.sample("b", dist.Normal(0, 1).expand([c]).to_event(1))
        numpyro.factor("loglik", -xs.shape[0] * loss(TMSParams(Wp, bp), xs))

    baseline_s, baseline_first, baseline_ess = 0.0, 0.0, 0.0
    for i, n in enumerate(sizes):
        mcmc = MCMC(NUTS(model, max_tree_depth=depth), num_warmup=num_warmup, num_samples=num_samples,
                    num_chains=num_chains, chain_method="vectorized", progress_bar=False)
        # numpyro re-jits per MCMC object and a second .run() on vectorised chains fails in this
        # version, so its time includes compilation; compare with tmsjax_first_s (also with compile).
        start = time.perf_counter()
        mcmc.run(jax.random.fold_in(key, n), x[:n])
        baseline_first += time.perf_counter() - start
        baseline_s = baseline_first
        samples = mcmc.get_samples(group_by_chain=True)
        baseline_ess += _min_ess(samples["W"], samples["b"])

    rows = [{
        "workload": f"TMS c=6 NUTS, n in {sizes}, {num_chains} chains, {num_warmup}+{num_samples} steps",
        "tmsjax_s": tmsjax_s, "tmsjax_first_s": first, "tmsjax_ess_per_s": tmsjax_ess / tmsjax_s,
        "baseline": "numpyro MCMC(NUTS) looped over n", "baseline_s": baseline_s, "baseline_first_s": baseline_first,
        "baseline_ess_per_s": baseline_ess / baseline_s,
        "ratio": baseline_first / first,  # both include compilation (see the numpyro note above)
        "steady_ratio_vs_baseline_with_compile": baseline_s / tmsjax_s,
        "ess_per_s_ratio": (tmsjax_ess / tmsjax_s) / max(baseline_ess / baseline_s, 1e-12),
    }]
    # Throughput vs number of chains (one n, steady state).
    for chains in ([1, 4] if quick else [1, 4, 16, 64]):
        sweep_c = make_nuts_sweep(make_logdensity_fn(), num_warmup=num_warmup, num_samples=num_samples, max_num_doublings=depth)
        data_c = jax.tree.map(lambda d: jnp.repeat(d[None], chains, 0), nested_datasets(x, [max(sizes)]))
        data_c = jax.tree.map(lambda d: d[:, 0], data_c)
        init_c = jax.tree.map(lambda a: jnp.resize(a, (chains, *a.shape[1:])), init)
        keys_c = jax.random.split(key, chains)
        jax.block_until_ready(sweep_c(keys_c, init_c, data_c))
        start = time.perf_counter()
        jax.block_until_ready(sweep_c(keys_c, init_c, data_c))
        seconds = time.perf_counter() - start
        rows.append({"workload": f"sweep throughput, {chains} chains at n={max(sizes)}", "tmsjax_s": seconds,
                     "baseline": "", "baseline_s": float("nan"), "ratio": float("nan"),
                     "draws_per_s": chains * (num_warmup + num_samples) / seconds})
    return rows


if __name__ == "__main__":
    report(NAME, run(quick="--quick" in sys.argv))
