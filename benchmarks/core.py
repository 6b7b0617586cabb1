"""Core throughput: the phase classifier and the closed-form potential.

Questions: how many posterior samples per second does the k-gon classifier label (target ≥ 1e6/s on
a 2-core CPU) as a user calls it, ``classify_batch(W, b)`` on the NumPy arrays samples are kept in
(validation, transfer, compiled program and result all timed), against a scipy ConvexHull loop;
and how many potential + gradient evaluations per second does the closed form give, against the
Monte Carlo loss it replaces (n = 10⁴ samples, ~1% error) — both measured in the same run.

Typical result (cpu-2core, jax 0.10.2, other jobs idle): see benchmarks/results/core-cpu-2core.json.

Usage: python -m benchmarks.core [--quick]
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import ConvexHull, QhullError

from benchmarks.common import report, time_jax, time_python
from tmsjax.tms.data import sample_sparse_limit
from tmsjax.tms.model import TMSParams, loss
from tmsjax.tms.phases import classify_batch
from tmsjax.tms.potential import population_loss

NAME = "core"


def scipy_hull_labels(W, b):
    """The baseline: the paper-style hull-vertex count + bias signs, one scipy call per sample."""
    labels = []
    for Wi, bi in zip(W, b):
        columns = Wi.T
        norms = np.linalg.norm(columns, axis=1)
        present = norms >= 0.5 * norms.max()
        try:
            vertices = ConvexHull(columns[present]).vertices
            is_vertex = np.zeros(len(columns), bool)
            is_vertex[np.flatnonzero(present)[vertices]] = True
        except (QhullError, ValueError):
            is_vertex = present
        k = int(is_vertex.sum())
        plus = int(np.sum(~is_vertex & (bi > 0)))
        minus = int(np.sum(is_vertex & (bi <= -(norms**2))))
        labels.append(f"{k}{'+' * plus}{'-' * minus}")
    return labels


def run(quick: bool = False) -> list[dict]:
    rng = np.random.default_rng(0)
    num = 200_000 if quick else 1_000_000
    # Random N(0, 1) parameters: the hull test costs the same whatever the label, and ~40% of such
    # points get a hull label, so the distance and lookup branches are exercised too.
    W = rng.normal(size=(num, 2, 6)).astype(np.float32)
    b = rng.normal(size=(num, 6)).astype(np.float32)
    # Exactly the user's call, not a jitted wrapper around it; time_jax blocks on ids and distances.
    first, steady = time_jax(classify_batch, W, b, repeat=5)
    num_base = 2_000
    base = time_python(scipy_hull_labels, W[:num_base], b[:num_base], repeat=1) / num_base * num
    rows = [
        {
            "workload": f"classify {num:,} samples (c=6), classify_batch(W, b) on NumPy float32",
            "tmsjax_s": steady,
            "compile_s": first - steady,
            "samples_per_s": num / steady,
            "baseline": "scipy ConvexHull loop (extrapolated from 2,000)",
            "baseline_s": base,
            "ratio": base / steady,
        }
    ]

    batch = 20_000 if quick else 100_000
    params = TMSParams(
        jnp.asarray(rng.normal(size=(batch, 2, 6)), jnp.float32),
        jnp.asarray(0.3 * rng.normal(size=(batch, 6)), jnp.float32),
    )
    exact = jax.jit(jax.vmap(jax.value_and_grad(population_loss)))
    first, steady = time_jax(exact, params)
    x = sample_sparse_limit(jax.random.key(0), 10_000, 6)
    mc_batch = 200
    monte_carlo = jax.jit(jax.vmap(jax.value_and_grad(loss), in_axes=(0, None)))
    small = jax.tree.map(lambda v: v[:mc_batch], params)
    _, mc_steady = time_jax(monte_carlo, small, x)
    base = mc_steady / mc_batch * batch
    rows.append(
        {
            "workload": f"potential+grad, {batch:,} points (c=6)",
            "tmsjax_s": steady,
            "compile_s": first - steady,
            "evals_per_s": batch / steady,
            "baseline": "Monte Carlo loss+grad, n=10^4 (extrapolated from 200)",
            "baseline_s": base,
            "ratio": base / steady,
        }
    )
    return rows


if __name__ == "__main__":
    report(NAME, run(quick="--quick" in sys.argv))
