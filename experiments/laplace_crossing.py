r"""How large are the O(1) terms the free energy formula drops? 6-gon vs 5-gon log-odds three ways.

Question: the leading-order formula :math:`F_n = nL + \lambda\log n + c` puts the 5 → 6 crossing at
n ≈ 601, the sampled posterior (NUTS, and tempered SMC from the prior) mostly earlier. Which terms
make the difference? For one dataset draw (the nested datasets of ``bayesian_transitions --seed S``)
and each n, the log posterior odds :math:`\log(p_6/p_5)` of the 6-gon against the 5-gon are computed

1. ``leading_order``: :math:`F_5 - F_6` with the catalogue's population losses
   (docs/paper_numbers.md §5);
2. ``leading_order_data``: the same with this dataset's losses :math:`nL_n(w^*)` at the critical
   points, the 5-gon's six choices of dead feature combined by log-sum-exp (minus log 6, so that it
   reduces to 1. when every choice costs the same);
3. ``laplace``: every labelled copy (120 rotation orbits of the 6-gon, 6 × 24 of the 5-gon) refined
   to its maximum a posteriori point by Newton's method in float64, then a Laplace integral over the
   curved directions (:math:`-\tfrac12\log\det'` of the posterior Hessian), the rotation orbit's
   length :math:`2\pi\lVert W\rVert_F`, and for the 5-gon the dead column's prior-weighted volume
   :math:`E_{\varphi}[e^{-n\Delta L}]` over its 3 parameters (Monte Carlo on the exact potential,
   only where the classifier still says "5").

``--from DIR`` adds the sampled log-odds of a ``bayesian_transitions`` run (same seed) for
comparison. Writes ``summary.json`` (log-odds and the crossing of each) and ``log_odds.png``.

Usage:
  python -m experiments.laplace_crossing --out results/laplace --seed 0 \
      --sizes 300,400,450,500,600,700 --from results/bayes
"""

import itertools
import json
import math
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

from experiments import bayesian_transitions, common
from tmsjax.results import ResultStore
from tmsjax.tms.critical import critical_points
from tmsjax.tms.model import TMSParams, reconstruct
from tmsjax.tms.phases import DEAD_FRACTION, phase_labels
from tmsjax.tms.potential import population_loss

NUM_FEATURES = 6


def labelled_copies(k: int, c: int) -> list[tuple[int, ...]]:
    """Feature orders of the k live vertices, one per rotation orbit: the cyclic order up to
    rotation (mirror images are separate orbits), times the choice of live features."""
    orders = []
    for live in itertools.combinations(range(c), k):
        orders += [(live[0],) + rest for rest in itertools.permutations(live[1:])]
    return orders


def _laplace_one(live0, live_index, x, n_mask, dead_W, dead_b):
    """Newton to the MAP of one labelled copy, then its Laplace log-integral (live coordinates)."""
    k = live_index.shape[0]

    def energy(live):  # −log posterior over the live coordinates, unnormalised
        W = dead_W.at[:, live_index].set(live[: 2 * k].reshape(2, k))
        b = dead_b.at[live_index].set(live[2 * k :])
        per_sample = jnp.sum((x - reconstruct(TMSParams(W, b), x)) ** 2, axis=-1)
        return jnp.sum(per_sample * n_mask) + 0.5 * jnp.sum(live**2)

    grad, hess = jax.grad(energy), jax.hessian(energy)

    def newton(live, _):
        eigenvalues, vectors = jnp.linalg.eigh(hess(live))
        rotation = jnp.arange(eigenvalues.size) == jnp.argmin(
            jnp.abs(eigenvalues)
        )  # the exact zero mode
        inverse = jnp.where(rotation, 0.0, 1.0 / eigenvalues)
        return live - vectors @ (inverse * (vectors.T @ grad(live))), None

    live, _ = jax.lax.scan(newton, live0, None, length=30)
    eigenvalues = jnp.linalg.eigvalsh(hess(live))
    rotation = jnp.arange(eigenvalues.size) == jnp.argmin(jnp.abs(eigenvalues))
    log_det = jnp.sum(jnp.where(rotation, 0.0, jnp.log(jnp.abs(eigenvalues))))
    min_curvature = jnp.min(jnp.where(rotation, jnp.inf, eigenvalues))
    # ∫ = e^{−E} (2π)^{−d/2} (prior normalisation) (2π)^{(d−1)/2} det'^{−1/2} · 2π‖W‖ (the orbit).
    log_integral = (
        -energy(live)
        - 0.5 * math.log(2 * math.pi)
        - 0.5 * log_det
        + math.log(2 * math.pi)
        + jnp.log(jnp.linalg.norm(live[: 2 * k]))
    )
    parts = LaplaceParts(
        energy=energy(live), log_det=log_det, log_norm=jnp.log(jnp.linalg.norm(live[: 2 * k]))
    )
    return log_integral, min_curvature, jnp.max(jnp.abs(grad(live))), parts


class LaplaceParts(NamedTuple):
    """One labelled copy's Laplace integral, term by term (at its MAP point)."""

    energy: jax.Array  # n L_n(w_MAP) + ½‖w_MAP‖² over the live coordinates
    log_det: jax.Array  # log det' of the posterior Hessian (the rotation's zero mode left out)
    log_norm: jax.Array  # log ‖W‖ of the live columns (the rotation orbit has length 2π‖W‖)


_laplace_all = jax.jit(jax.vmap(_laplace_one, in_axes=(0, 0, None, None, 0, 0)))


def phase_log_mass(point, c: int, x, n: int) -> tuple[float, float]:
    """log Σ over labelled copies of the Laplace integral; returns (log mass, min curvature)."""
    log_mass, curvature, _ = phase_laplace(point, c, x, n)
    return log_mass, curvature


def phase_laplace(point, c: int, x, n: int) -> tuple[float, float, dict]:
    """:func:`phase_log_mass` plus every copy's :class:`LaplaceParts` and log integral (numpy)."""
    orders = labelled_copies(point.k, c)
    live0, live_index, dead_W, dead_b = [], [], [], []
    for order in orders:
        W, b = (
            np.zeros((2, c)),
            np.full(c, -1.0),
        )  # dead columns: 0, bias -1 (inside the flat region)
        W[:, list(order)], b[list(order)] = point.W[:, : point.k], point.b[: point.k]
        live0.append(np.concatenate([W[:, list(order)].ravel(), b[list(order)]]))
        live_index.append(order)
        dead_W.append(np.where(np.isin(np.arange(c), order), 0.0, W))
        dead_b.append(b)
    n_mask = (jnp.arange(x.shape[0]) < n).astype(x.dtype)
    logs, curvature, grad_max, parts = _laplace_all(
        jnp.asarray(np.array(live0)),
        jnp.asarray(np.array(live_index)),
        x,
        n_mask,
        jnp.asarray(np.array(dead_W)),
        jnp.asarray(np.array(dead_b)),
    )
    if float(jnp.max(grad_max)) > 1e-6 or float(jnp.min(curvature)) <= 0:
        raise RuntimeError(f"Newton did not reach a minimum for the {point.label}-gon at n={n}")
    copies = {name: np.asarray(value) for name, value in parts._asdict().items()}
    copies["log_integral"] = np.asarray(logs)
    return float(logsumexp(np.asarray(logs))), float(jnp.min(curvature)), copies


def dead_column_loss_change(point, num_draws: int = 400_000, seed: int = 0) -> np.ndarray:
    r"""ΔL at prior draws (W_d, b_d) ~ N(0, I₃) of the dead column, +inf where it no longer reads
    "5" (so :math:`E_\varphi[e^{-n\Delta L}]` over them is the column's prior-weighted volume at
    every n)."""
    dead = int(np.argmin(np.linalg.norm(point.W, axis=0)))
    draws = jax.random.normal(jax.random.key(seed), (num_draws, 3))
    W0, b0 = jnp.asarray(point.W), jnp.asarray(point.b)

    def delta_loss(z):
        return (
            population_loss(TMSParams(W0.at[:, dead].set(z[:2]), b0.at[dead].set(z[2])))
            - point.loss
        )

    still_five = (draws[:, 2] <= 0) & (
        jnp.linalg.norm(draws[:, :2], axis=1) < DEAD_FRACTION * point.radius
    )
    return np.asarray(jnp.where(still_five, jax.jit(jax.vmap(delta_loss))(draws), jnp.inf))


def leading_order_data(points, x, n: int, c: int) -> float:
    """F_5 − F_6 with this dataset's n L_n at the critical points (log-sum-exp over the dead
    feature)."""

    def total(W, b):
        return float(
            jnp.sum((x[:n] - reconstruct(TMSParams(jnp.asarray(W), jnp.asarray(b)), x[:n])) ** 2)
        )

    six, five = points["6"], points["5"]
    dead = int(np.argmin(np.linalg.norm(five.W, axis=0)))
    costs = []
    for feature in range(c):
        order = list(range(c))
        order[feature], order[dead] = order[dead], order[feature]
        costs.append(total(five.W[:, order], five.b[order]))
    F6 = total(six.W, six.b) + six.llc * math.log(n) + six.constant
    F5 = -logsumexp(-np.array(costs)) + math.log(c) + five.llc * math.log(n) + five.constant
    return F5 - F6


def sampled_log_odds(folder, sizes) -> dict:
    store = ResultStore(folder)
    table = np.asarray(phase_labels(NUM_FEATURES), dtype=object)
    out = {}
    for n in sizes:
        data = store.load_arrays(f"n_{n:05d}")
        if data is not None:
            labels = table[data["ids"]]
            p6, p5 = np.mean(labels == "6"), np.mean(labels == "5")
            if p6 > 0 and p5 > 0:
                out[n] = float(math.log(p6 / p5))
    return out


def crossing(sizes, log_odds) -> float:
    """First n where the log-odds turn positive (linear interpolation), NaN if they never do."""
    return crossing_with_error(sizes, log_odds, [0.0] * len(sizes))[0]


def crossing_with_error(sizes, log_odds, standard_error) -> tuple[float, float, float]:
    """:func:`crossing`, its error (the log-odds' error at the crossing over their slope there)
    and how far one nat moves it (the inverse slope); NaN when they never cross."""
    for i in range(len(sizes) - 1):
        a, b = log_odds[i], log_odds[i + 1]
        if a <= 0 < b:
            n0, n1 = sizes[i], sizes[i + 1]
            t = -a / (b - a)
            error = (1 - t) * standard_error[i] + t * standard_error[i + 1]
            per_nat = (n1 - n0) / (b - a)
            return float(n0 + t * (n1 - n0)), float(error * per_nat), float(per_nat)
    return float("nan"), float("nan"), float("nan")


PRESETS = {
    "smoke": {"sizes": "300,400"},
    "cpu": {"sizes": "300,400,450,500,600,700"},
    "paper": {"sizes": "300,350,400,450,500,550,600,650,700,800"},
}


def add_arguments(parser):
    parser.add_argument("--sizes", default=None, help="comma-separated dataset sizes n (preset)")
    parser.add_argument(
        "--from", dest="sampled", default=None, help="a bayesian_transitions output folder"
    )


def check(args):
    sizes = sorted({int(s) for s in str(args.sizes).split(",")})
    if min(sizes) <= 0:
        raise ValueError(f"--sizes must be positive, got {sizes}")


def main(args) -> dict:
    """The 6-vs-5 log posterior odds three ways for the dataset of ``--seed`` (as
    bayesian_transitions draws it)."""
    sizes = sorted({int(s) for s in str(args.sizes).split(",")})
    c = NUM_FEATURES
    points = {p.label: p for p in critical_points(c)}
    six, five = points["6"], points["5"]
    # The experiment's dataset draw: n_max rows from the seed's data key (the draw depends on
    # n_max).
    n_max = max(sizes)
    if args.sampled:
        settings = ResultStore(args.sampled).read_json("config.json")["settings"]
        if settings["seed"] != args.seed:
            raise ValueError(
                f"--from {args.sampled} used seed {settings['seed']}, not --seed {args.seed}"
            )
        n_max = max(settings["sizes"])
    if n_max < max(sizes):
        raise ValueError(f"--sizes go beyond the sampled run's largest n ({n_max})")
    rows = {
        "leading_order": [],
        "leading_order_data": [],
        "laplace": [],
        "dead_column_log_volume": [],
    }
    with jax.enable_x64(True):
        x = jnp.asarray(bayesian_transitions.dataset_rows(args.seed, n_max, c), jnp.float64)
        dead_delta = dead_column_loss_change(five)  # the same draws for every n
        for n in sizes:
            F = lambda p: n * p.loss + p.llc * math.log(n) + p.constant  # noqa: E731
            rows["leading_order"].append(F(five) - F(six))
            rows["leading_order_data"].append(leading_order_data(points, x, n, c))
            log6, _ = phase_log_mass(six, c, x, n)
            log5, _ = phase_log_mass(five, c, x, n)
            volume = float(logsumexp(-n * dead_delta) - math.log(dead_delta.size))
            rows["dead_column_log_volume"].append(volume)
            rows["laplace"].append(log6 - (log5 + volume))
            print(f"n={n}: " + ", ".join(f"{k} {v[-1]:+.2f}" for k, v in rows.items()), flush=True)
    summary = {
        "seed": args.seed,
        "sizes": sizes,
        "log_odds_6_vs_5": rows,
        "crossings": {
            k: crossing(sizes, v) for k, v in rows.items() if k != "dead_column_log_volume"
        },
    }
    if args.sampled:
        sampled = sampled_log_odds(args.sampled, sizes)
        summary["sampled_log_odds"] = {str(n): v for n, v in sampled.items()}
        summary["crossings"]["sampled"] = crossing(list(sampled), list(sampled.values()))
    store = ResultStore(args.out)
    store.write_summary(summary)
    store.save_figure("log_odds.png", figure(summary))
    print(json.dumps(summary["crossings"], indent=1))
    return summary


def figure(summary):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = summary["sizes"]
    names = {
        "leading_order": "F = nL + λ log n + c",
        "leading_order_data": "same, this dataset's losses",
        "laplace": "Laplace, all O(1) terms",
    }
    for key, name in names.items():
        ax.plot(sizes, summary["log_odds_6_vs_5"][key], "o-", label=name)
    if "sampled_log_odds" in summary:
        sampled = summary["sampled_log_odds"]
        ax.plot(
            [int(n) for n in sampled], list(sampled.values()), "ks", ms=8, label="sampled posterior"
        )
    ax.axhline(0, color="grey", lw=1)
    ax.set_xlabel("number of samples n")
    ax.set_ylabel("log posterior odds, 6-gon vs 5-gon")
    ax.set_title(f"What the free energy formula leaves out (dataset seed {summary['seed']})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


if __name__ == "__main__":
    common.run_module(sys.modules[__name__])
