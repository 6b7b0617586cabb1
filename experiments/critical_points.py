"""The catalogue of TMS critical points and its energy levels.

Question: which regular k^{σ+,σ−}-gons are critical points of the closed-form TMS potential, at what
loss, with which Hessian signature and (where known) which learning coefficient λ?

Method: for each number of features c, build every k^{σ+,σ−}-gon, refine (l*, b*) by Newton's method
in float64 (‖∇L‖ < 1e-10), and compute the Hessian spectrum and the free-energy constant ½‖w*‖².

Writes ``DIR/summary.json`` (every point: label, k, sigma_plus, sigma_minus, loss, llc or null,
grad_norm, Hessian counts, constant), ``DIR/energy_levels_c{c}.png`` and ``DIR/config.json``.

References: Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301, §3, App. A, E.

Usage:
  python -m experiments.critical_points --out results/critical_points [--num-features 4,5,6,7,8]
"""

import sys

from experiments import common
from tmsjax.results import ResultStore
from tmsjax.tms.critical import critical_points
from tmsjax.tms.plotting import energy_diagram

# Exact computation: the same at every scale but smoke, which does c = 6 only.
PRESETS = {
    "smoke": {"num_features": "6"},
    "cpu": {"num_features": "4,5,6,7,8"},
    "paper": {"num_features": "4,5,6,7,8"},
}


def add_arguments(parser):
    parser.add_argument(
        "--num-features",
        default=None,
        help="comma-separated numbers of features c (preset: 4,5,6,7,8)",
    )


def check(args):
    features = [int(c) for c in str(args.num_features).split(",")]
    if min(features) < 3:
        raise ValueError(f"--num-features must all be at least 3, got {args.num_features}")


def main(args) -> dict:
    features = [int(c) for c in str(args.num_features).split(",")]
    store = ResultStore(args.out)
    store.write_config({"num_features": features})
    catalogues = {}
    for c in features:
        points = critical_points(c)
        catalogues[str(c)] = [p.as_dict() for p in points]
        store.save_figure(f"energy_levels_c{c}.png", energy_diagram(points, num_features=c))
        print(f"c = {c}: {len(points)} critical points")
        for p in points:
            llc = "   -" if p.llc is None else f"{p.llc:4g}"
            print(
                f"  {p.label:8s} L = {p.loss:.5f}  λ = {llc}  |∇L| = {p.grad_norm:.1e}  "
                f"zero/neg = {p.num_zero}/{p.num_negative}  c = {p.constant:.5f}"
            )
    summary = {
        "catalogues": catalogues,
        "max_grad_norm": max(r["grad_norm"] for cat in catalogues.values() for r in cat),
        "num_points": {c: len(cat) for c, cat in catalogues.items()},
    }
    store.write_summary(summary)
    return summary


if __name__ == "__main__":
    common.run_module(sys.modules[__name__])
