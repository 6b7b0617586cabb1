"""What each transition probe costs per checkpoint, in training steps of the same model and data.

Two models: the TMS (6 features, 2 hidden: 18 parameters, 1000 samples) and an equinox MLP
64 → 32 → 10 on scikit-learn's digits (2410 parameters, 1797 images). One *training step* is a
jitted full-batch gradient plus an Adam update; every probe is jitted on one checkpoint and timed in
steady state (compilation excluded, best of 3). Probes: the weight-only ones
(:func:`tmsjax.transitions.probes.compute_probes`), Hutchinson's trace with 8 probes, Lanczos with
16 steps, the free energy by perturbation with 8 antithetic pairs, the three at the detection
experiment's cpu settings (4 / 8 / 4), and λ̂ with one chain of 300 SGLD steps (the experiment's
former cpu setting; at an untrained point the chains escape, which does not change their cost,
so failures are returned, not raised).

Run: ``python -m benchmarks.probe_cost`` (``--quick``: fewer repeats). Rows: ``tmsjax_s`` is the
probe's seconds, ``baseline_s`` one training step's, ``ratio`` = probe / training step (here > 1
means the probe costs more than a step: the inverse of the other benchmarks' speed-up ratios).
"""

import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from sklearn.datasets import load_digits

from benchmarks.common import report, time_jax
from tmsjax import llc
from tmsjax.tms.data import make_dataset, sample_sparse_limit
from tmsjax.tms.losses import row_loss
from tmsjax.tms.model import init_params
from tmsjax.transitions import curvature, probes


def _tms():
    data = make_dataset(sample_sparse_limit(jax.random.key(0), 1000, 6))
    return (
        "tms (18 params, n=1000)",
        row_loss,
        init_params(jax.random.key(1), 6, 2, scale=0.3),
        data,
    )


def _digits():
    x, y = load_digits(return_X_y=True)
    data = (jnp.asarray(x / 16, jnp.float32), jnp.asarray(y))
    params, static = eqx.partition(
        eqx.nn.MLP(64, 10, 32, 1, key=jax.random.key(0)), eqx.is_inexact_array
    )
    return "digits MLP (2410 params, n=1797)", llc.PartitionedLoss(_plain, static), params, data


def _plain(model, data):
    x, y = data
    return optax.softmax_cross_entropy_with_integer_labels(jax.vmap(model)(x), y).mean()


def run(quick: bool = False) -> list[dict]:
    repeat = 2 if quick else 3
    rows = []
    for name, loss_fn, params, data in (_tms(), _digits()):
        optimizer = optax.adam(1e-3)
        state = optimizer.init(params)

        @jax.jit
        def train_step(params, state, loss_fn=loss_fn, optimizer=optimizer):
            updates, state = optimizer.update(jax.grad(loss_fn)(params, data), state)
            return optax.apply_updates(params, updates), state

        step_s = time_jax(train_step, params, state, repeat=repeat)[1]
        key = jax.random.key(2)
        num_data = int(jax.tree.leaves(data)[0].shape[0])
        settings = llc.LLCSettings(num_chains=1, num_steps=300, num_burnin=75)
        cases = {
            "weight-only probes": jax.jit(probes.compute_probes),
            "Hutchinson trace (8 probes)": lambda p: curvature.hutchinson_trace(
                key, loss_fn, p, data, 8
            ),
            "Lanczos top eigenvalue (16 steps)": lambda p: curvature.top_eigenvalue(
                key, loss_fn, p, data, 16
            ),
            "free energy (8 pairs)": lambda p: curvature.perturbation_free_energy(
                key, loss_fn, p, data, sigma=1e-2, num_samples=8
            ),
            "curvature, cpu preset (4/8/4)": lambda p: curvature.curvature_probes(
                key, loss_fn, p, data, num_probes=4, num_iterations=8, num_samples=4
            ),
            "λ̂ (1 chain × 300 steps)": lambda p: (
                llc.estimate_llc(
                    key, loss_fn, p, data, settings, num_data=num_data, on_failure="return"
                ).llc
            ),
        }
        for probe, fn in cases.items():
            probe_s = time_jax(fn, params, repeat=repeat)[1]
            rows.append(
                dict(
                    workload=f"{name}: {probe}",
                    tmsjax_s=probe_s,
                    baseline="one training step",
                    baseline_s=step_s,
                    ratio=probe_s / step_s,
                )
            )
    return rows


if __name__ == "__main__":
    report("probe_cost", run(quick="--quick" in sys.argv[1:]))
