r"""Local free energies per TMS phase, measured without chains crossing between phases, against
the sampled occupancies and the free energy formula.

Question: the formula :math:`F_\alpha(n) \approx nL_\alpha + \lambda_\alpha\log n + c_\alpha` puts
the 5 → 6 crossing at n ≈ 601; the sampled posterior crosses earlier (482 ± 93 over 12 dataset
draws). What are the phases' actual free energies :math:`F_\alpha(n) = -\log\int_\alpha\varphi
e^{-nL_n}`, and which terms of their gap to the formula move the crossing?

Method:

1. **Measured F_α** (:func:`tmsjax.tms.free_energy.local_free_energies`): tempered SMC from the
   prior N(0, I) through :math:`\varphi e^{-\beta nL_n}` (nested datasets of
   ``bayesian_transitions``' draws, the same target), moves free while βn < ``--freeze-size``
   (hot: chains cross phases freely) and rejected above it whenever they would change the phase
   (the classifier with ``max_distance=inf``); feature-transposition Metropolis moves keep each
   phase's labelled copies in proportion. :math:`F_\alpha = -\log(\hat Z \hat s_\alpha)`, errors
   from ``--replicates`` independent runs. The reference, run in the same program with fresh keys,
   is plain tempered SMC (moves may cross at every β): its occupancies must match
   :math:`e^{-F_\alpha}/\sum_\beta e^{-F_\beta}` within 2 standard errors at every (draw, n).
2. **Decomposition** (:func:`decomposition`): the measured gap
   :math:`F_\alpha - [nL(w^*_\alpha) + \lambda_\alpha\log n]` split into named terms: the
   empirical-vs-population loss at the phase's best labelled copy, the labelled copies
   (log-sum-exp of every copy's :math:`e^{-n\Delta L_n}`), the prior at the critical point,
   the curved directions' Hessian (Laplace), the rotation orbit and, for the 5-gon, the dead
   column's prior-weighted volume and the (m − 1) log log n term, and the remainder.
3. **Predictor**: the crossing where the predicted 6-vs-5 log-odds change sign, per dataset draw,
   against the sampled crossing of a ``bayesian_transitions --dataset-seeds`` run (``--from``).

Writes ``summary.json`` (per draw and n: F_α ± se, predicted and reference occupancies with z
scores, the crossing from each; the check against chance; the decomposition's terms; the term that
resists; crossings), ``draw_XX.npz``, ``terms_XX.json`` and figures (``occupancy.png``,
``terms.png``: one panel per term against n, ``crossings.png``, ``crossing_resolution.png``: the
sampled crossing beside plain SMC's and the local free energies' on the same datasets,
``dataset.png``).

Measured (``--preset paper``: 256 particles × 8 runs per target, phases frozen by hull-vertex
count; 2 CPU cores shared with one other job, ~140 s per draw of 6 sizes, frozen and reference):

- **Occupancies** (item 1), 16 dataset draws: the 12 datasets of the crossing runs below (6 sizes
  each, 250–800 or 250–900) and 4 more (n = 200–1000), 281 informative comparisons (6, 5⁺, 5 at
  every (draw, n)): 9 beyond 2 standard errors where exact free energies would leave 12.8, the
  largest |z| 2.97 against the Bonferroni threshold 3.75 (281 comparisons), mean z² 0.81–0.92 per
  run. Freezing by phase label instead (session 5) missed 4 of 72, all 5⁺ (z down to −5.4): the
  dead bias crossing 0 is a flat direction, no barrier, and must stay open.
- **The crossing** on the 12 datasets of two ``bayesian_transitions --dataset-seeds`` runs: the
  sampled (replica exchange) n_c and plain tempered SMC's agree within 30 on 11 of 12 (mean
  |difference| 13), so the sampled n_c is known to about ±15. The local free energies put it within
  30 of the sampled one on 11 of 12 draws (median |miss| 10; the exception, draw 11, has 6-vs-5
  log-odds between −0.6 and −0.2 nats from n = 350 to 550, where plain SMC's are just above 0, so
  the first crossing moves from 331 to 574). The closed-form predictors do not: leading order nL +
  λ log n + ½‖w*‖² mean |miss| 155 (1 of 12 within 30), Laplace with every term 147 (0 of 11),
  Laplace plus a remainder a + b log n fitted on the 4 other draws 105 (3 of 11).
- **The term that resists** (items 2-3): the 5-gon's remainder beyond Laplace, −9.9 to +6.1 nats
  over 13 draws (6-gon −4.4 to +0.6); the 5 − 6 difference spreads 0.8, 1.2, 1.7, 2.9, 3.5, 3.2
  nats across 9 draws at n = 250 … 800, and one nat moves n_c by 23–138 (median 67). It
  anticorrelates with the dataset's own term (empirical loss + labelled copies, 5 − 6): correlation
  −0.56 over 72 (draw, n), a least-squares fit cancels ~80% of the data term, and leaves 1.5 nats
  (~90 in n_c): Laplace at the population critical points appears to overstate how much a dataset's
  per-feature counts move the 5-gon. Gap terms at n = 500, draw 0 (6-gon / 5-gon): empirical loss
  −0.08 / −2.17, ½‖w*‖² +6.38 / +3.62, MAP shift −0.65 / −0.15, Hessian −8.87 / −6.12, rotation
  orbit −2.98 / −2.79, labelled copies −4.79 / −3.75, dead column — / +3.03, (m−1) log log n 0 / 0,
  remainder −1.60 ± 0.17 / −2.90 ± 0.09 nats.

Usage:
  # CPU: one draw, n = 300, 500, 700: ~35 s on 2 cores
  python -m experiments.local_free_energy --out results/local_fe
  # the crossing runs (12 draws), then the local free energies on the same datasets (the dataset
  # of a draw depends on its largest n, so the sizes must end where the crossing run's do):
  python -m experiments.bayesian_transitions --out results/bayes_seeds \
      --dataset-seeds 0,1,2,3,4,5,6,7,8,9,10,11 --sizes 250,350,450,550,650,800 \
      --num-warmup 200 --num-samples 300 --block-sizes 6
  python -m experiments.local_free_energy --out results/local_fe_paper --preset paper \
      --dataset-seeds 0,1,2,3,4,5,6,7,8,9,10,11 --sizes 250,350,450,550,650,800 \
      --from results/bayes_seeds
  (the numbers above: draws 0-2 came from a crossing run with 13 sizes up to n = 900, so their
  local free energies were measured at 250, 350, 450, 550, 650, 900)
"""

import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm
from tqdm.auto import tqdm

from experiments import common
from experiments.bayesian_transitions import dataset_rows
from experiments.laplace_crossing import (
    _laplace_all,
    crossing,
    crossing_with_error,
    dead_column_loss_change,
    labelled_copies,
)
from tmsjax.results import ResultStore
from tmsjax.tms.critical import critical_points
from tmsjax.tms.free_energy import local_free_energies, occupancy_from_free_energies
from tmsjax.tms.model import TMSParams, reconstruct
from tmsjax.tms.phases import make_classifier, phase_labels

NUM_FEATURES = 6
PHASES = ("6", "5+", "5")

PRESETS = {
    # ≤ 2 min on 2 CPU cores: one draw, three n, frozen and reference SMC in one program.
    "cpu": dict(
        dataset_seeds="0",
        sizes="300,500,700",
        particles=128,
        replicates=4,
        freeze_size=100.0,
        dead_draws=100_000,
    ),
    # The occupancy check of issue #13: ≥ 4 draws × ≥ 6 sizes in 200..1000.
    "paper": dict(
        dataset_seeds="0,1,2,3",
        sizes="200,300,400,500,700,1000",
        particles=256,
        replicates=8,
        freeze_size=100.0,
        dead_draws=400_000,
    ),
    "smoke": dict(
        dataset_seeds="0",
        sizes="300",
        particles=32,
        replicates=2,
        freeze_size=100.0,
        dead_draws=2000,
    ),
}


def add_arguments(parser):
    parser.add_argument("--dataset-seeds", default=None, help="comma-separated dataset draws")
    parser.add_argument("--sizes", default=None, help="comma-separated dataset sizes n")
    parser.add_argument("--particles", type=int, default=None, help="particles per SMC run")
    parser.add_argument("--replicates", type=int, default=None, help="SMC runs per target")
    parser.add_argument(
        "--freeze-size", type=float, default=None, help="phases freeze at beta*n = this"
    )
    parser.add_argument(
        "--freeze-by",
        choices=("vertices", "phase"),
        default="vertices",
        help="what no move may change above the freeze: the hull-vertex count (5 and 5+ stay "
        "connected: the dead bias crossing 0 is a flat direction, no barrier) or the phase label",
    )
    parser.add_argument(
        "--predict-sizes",
        default="250,350,450,550,650,800",
        help="n grid on which the predicted 6-vs-5 log-odds are solved for the crossing",
    )
    parser.add_argument(
        "--dead-draws", type=int, default=None, help="prior draws of the dead column's volume"
    )
    parser.add_argument(
        "--from",
        dest="from_dir",
        default=None,
        help="bayesian_transitions --dataset-seeds runs (comma-separated folders): sampled n_c",
    )


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise ValueError(f"--{name} is empty")
    return values


def check(args):
    sizes = _ints(args.sizes, "sizes")
    if min(sizes) < 1:
        raise ValueError(f"--sizes must be positive, got {sizes}")
    seeds = _ints(args.dataset_seeds, "dataset-seeds")
    if min(seeds) < 0:
        raise ValueError(f"--dataset-seeds must be non-negative, got {seeds}")
    for name in ("particles", "replicates"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be positive, got {getattr(args, name)}")
    if not args.freeze_size > 0:
        raise ValueError(f"--freeze-size must be positive, got {args.freeze_size}")


def measure_draw(seed: int, sizes, args) -> dict:
    """Frozen-phase and reference SMC for every n of one dataset draw, in one compiled program."""
    x = np.asarray(dataset_rows(seed, max(sizes), NUM_FEATURES))
    targets = list(sizes) * 2
    freeze = [args.freeze_size] * len(sizes) + [math.inf] * len(sizes)
    key = jax.random.fold_in(jax.random.key(args.seed), seed)
    begin = time.perf_counter()
    result = local_free_energies(
        key,
        x,
        targets,
        freeze_size=freeze,
        num_particles=args.particles,
        num_replicates=args.replicates,
        freeze_by=args.freeze_by,
    )
    seconds = time.perf_counter() - begin
    k = len(sizes)
    share = result.evidence.share  # (targets, regions, replicates)
    return dict(
        sizes=np.asarray(sizes),
        free_energy=result.free_energy[:k],
        standard_error=result.standard_error[:k],
        reference_free_energy=result.free_energy[k:],
        reference_standard_error=result.standard_error[k:],
        reference_share=share[k:],
        frozen_share=share[:k],
        log_total=result.evidence.log_total,
        num_steps=result.evidence.num_steps,
        seconds=np.asarray(seconds),
        freeze_by=np.asarray(args.freeze_by),
        particles=np.asarray(args.particles),
        replicates=np.asarray(args.replicates),
    )


def _same_run(arrays, sizes, args) -> bool:
    """Whether a saved draw was measured with these sizes and SMC settings (else it is re-run)."""
    if arrays is None or list(arrays["sizes"]) != list(sizes):
        return False
    saved = {k: arrays[k].item() for k in ("freeze_by", "particles", "replicates") if k in arrays}
    wanted = dict(freeze_by=args.freeze_by, particles=args.particles, replicates=args.replicates)
    return all(saved.get(k, "phase" if k == "freeze_by" else None) == v for k, v in wanted.items())


def reference_occupancy(share) -> tuple[np.ndarray, np.ndarray]:
    """Plain tempered SMC's occupancy: the mean share over replicates, error from their spread."""
    share = np.asarray(share)
    num = share.shape[-1]
    return share.mean(-1), share.std(-1, ddof=1) / math.sqrt(num)


def occupancy_check(arrays: dict, labels) -> dict:
    """Predicted occupancies (softmax of −F_α over phases) against the reference SMC's."""
    p, p_se = occupancy_from_free_energies(arrays["free_energy"], arrays["standard_error"])
    ref, ref_se = reference_occupancy(arrays["reference_share"])
    se = np.sqrt(p_se**2 + ref_se**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (p - ref) / se, np.where(np.isclose(p, ref), 0.0, np.inf))
    rows = []
    for i, n in enumerate(arrays["sizes"]):
        for label in PHASES:
            a = labels.index(label)
            rows.append(
                dict(
                    n=int(n),
                    phase=label,
                    predicted=float(p[i, a]),
                    predicted_se=float(p_se[i, a]),
                    reference=float(ref[i, a]),
                    reference_se=float(ref_se[i, a]),
                    z=float(z[i, a]),
                )
            )
    return dict(rows=rows, max_abs_z=float(np.max(np.abs([r["z"] for r in rows]))))


def occupancy_statistics(rows) -> dict:
    r"""The occupancy check's z scores against chance.

    Even exact free energies leave :math:`|z| > 2` in about 4.6% of comparisons (more with
    standard errors from 8 replicates, whose z is closer to a t with 7 degrees of freedom), so
    "every comparison within 2 se" is a statement about the largest of many z scores: it is judged
    against the Bonferroni threshold :math:`\Phi^{-1}(1 - 0.025/m)` of m comparisons, and the mean
    of z² (1 for calibrated errors, well above 1 for a biased estimator). Rows where both sides are
    exactly 0 (no particle in the phase either way) carry no information and are left out.
    """
    z = np.array(
        [r["z"] for r in rows if r["predicted_se"] > 0 or r["reference_se"] > 0], np.float64
    )
    m = int(z.size)
    return dict(
        comparisons=m,
        beyond_2se=int(np.sum(np.abs(z) > 2)),
        expected_beyond_2se_if_exact=float(m * 2 * norm.sf(2)),
        max_abs_z=float(np.max(np.abs(z))) if m else float("nan"),
        bonferroni_threshold=float(norm.isf(0.025 / m)) if m else float("nan"),
        mean_z_squared=float(np.mean(z**2)) if m else float("nan"),
    )


def draw_crossings(arrays: dict, labels) -> dict:
    r"""The 5 → 6 crossing of one measured draw two ways: from the local free energies
    (:math:`F_5 - F_6`) and from plain tempered SMC's occupancies (:math:`\log p_6/p_5`)."""
    six, five = labels.index("6"), labels.index("5")
    sizes = [int(n) for n in arrays["sizes"]]
    F, se = arrays["free_energy"], arrays["standard_error"]
    measured = crossing_with_error(sizes, F[:, five] - F[:, six], np.hypot(se[:, five], se[:, six]))
    share = np.asarray(arrays["reference_share"], np.float64)  # (sizes, regions, replicates)
    with np.errstate(divide="ignore"):
        odds = np.log(share[:, six]) - np.log(share[:, five])  # (sizes, replicates)
    mean_share = share.mean(-1)
    with np.errstate(divide="ignore"):
        reference_odds = np.log(mean_share[:, six]) - np.log(mean_share[:, five])
    # A replicate with no particle in a phase has infinite odds: the error comes from the others
    # (infinite where fewer than two are finite).
    count = np.sum(np.isfinite(odds), axis=-1)
    finite = np.where(np.isfinite(odds), odds, 0.0)
    mean = finite.sum(-1) / np.maximum(count, 1)
    spread = np.sum(np.where(np.isfinite(odds), (finite - mean[:, None]) ** 2, 0.0), axis=-1)
    odds_se = np.where(
        count > 1, np.sqrt(spread / np.maximum(count - 1, 1) / np.maximum(count, 1)), np.inf
    )
    reference = crossing_with_error(sizes, reference_odds, odds_se)
    return dict(
        measured=measured[0],
        measured_se=measured[1],
        reference=reference[0],
        reference_se=reference[1],
        n_per_nat=measured[2],
    )


# --- item 2: the decomposition -------------------------------------------------------------------

TERMS = (
    "empirical_loss",
    "prior_constant",
    "map_shift",
    "hessian",
    "rotation_orbit",
    "labelled_copies",
    "dead_column_volume",
    "multiplicity_loglog",
)


def _copy_params(point, order):
    """A labelled copy of a catalogue k-gon: its live vertices on features `order`, dead columns 0
    with bias −1 (inside their flat region)."""
    W, b = np.zeros((2, NUM_FEATURES)), np.full(NUM_FEATURES, -1.0)
    W[:, list(order)], b[list(order)] = point.W[:, : point.k], point.b[: point.k]
    return W, b


def empirical_dead_volume(x, n: int, W, b, dead: int, draws) -> float:
    r"""log :math:`E_\varphi[1_{\text{"5"}}\,e^{-n\Delta L_n}]` over the dead column's three
    parameters (`draws`, N(0, I₃)), the live columns held at (W, b): *this dataset's* loss
    change, over the whole region the classifier calls "5" (a column inside the pentagon with
    b ≤ 0, of any length, included); the population version in ``laplace_crossing`` counts only
    short columns. On draw 0 the two agree within 0.2 nats (2.72 vs 2.89 at n = 300, 3.10 vs 3.09 at
    600), so the decomposition uses the cheaper population one."""

    classify = make_classifier(NUM_FEATURES, max_distance=math.inf)
    five = phase_labels(NUM_FEATURES).index("5")
    rows = x[:n]
    W, b = jnp.asarray(W), jnp.asarray(b)
    base = jnp.sum((rows - reconstruct(TMSParams(W, b), rows)) ** 2)

    def one(z):
        Wz, bz = W.at[:, dead].set(z[:2]), b.at[dead].set(z[2])
        delta = jnp.sum((rows - reconstruct(TMSParams(Wz, bz), rows)) ** 2) - base
        return jnp.where(classify(Wz, bz)[0] == five, -delta, -jnp.inf)

    logw = jax.lax.map(jax.vmap(one), draws.reshape(-1, 1000, 3)).reshape(-1)
    return float(jax.scipy.special.logsumexp(logw) - math.log(logw.size))


def decomposition_terms(x, n: int, dead_delta) -> dict:
    r"""The gap :math:`F_\alpha - [nL_\alpha + \lambda_\alpha\log n]` term by term, for the 6- and
    5-gon at one n (x: float64 rows, at least n of them; `dead_delta` the 5-gon dead column's ΔL at
    prior draws, :func:`experiments.laplace_crossing.dead_column_loss_change`).

    Every labelled copy's :math:`nL_n` at its critical point picks the best copy b, which is refined
    to its MAP point by Newton's method and integrated by Laplace over its live coordinates
    (:func:`experiments.laplace_crossing.phase_laplace` for one copy); then

    - empirical_loss: :math:`nL_n(w^*_b) - nL_\alpha` (this dataset against the population);
    - prior_constant: :math:`\tfrac12\lVert w^*\rVert^2`, the formula's c_α;
    - map_shift: :math:`E(w_{MAP}) - nL_n(w^*_b) - \tfrac12\lVert w^*\rVert^2` (≤ 0: prior and data
      pull the MAP off the critical point);
    - hessian: :math:`\tfrac12\log\det' H - \lambda\log n + \tfrac12\log 2\pi` (the curved
      directions' determinant at scale n; λ = d'/2 for both phases, regular in the live
      coordinates);
    - rotation_orbit: :math:`-\log(2\pi\lVert W\rVert)`;
    - labelled_copies: :math:`-\log\sum_{c} e^{-n(L_n(w^*_c) - L_n(w^*_b))}` over the 120 rotation
      orbits of the 6-gon and 144 of the 5-gon (−log of their count when the data do not tell them
      apart; their MAP shifts and Hessians are taken equal to the best copy's, a second-order
      difference, which makes this 250× cheaper than refining every copy);
    - dead_column_volume: :math:`-\log E_\varphi[e^{-n\Delta L}]` over the dead column's three
      parameters (5-gon);
    - multiplicity_loglog: :math:`(m-1)\log\log n`, 0 here: both λ come with m = 1 (a regular
      Laplace in the live coordinates, and a dead column whose ΔL vanishes on a region of positive
      prior mass, which gives a constant, not a log log n).

    Their sum plus the leading order is the Laplace-plus-volume estimate ``laplace``.
    """

    points = {p.label: p for p in critical_points(NUM_FEATURES)}
    rows = x[:n]
    n_mask = (jnp.arange(x.shape[0]) < n).astype(x.dtype)
    out = {}
    for label in ("6", "5"):
        point = points[label]
        orders = labelled_copies(point.k, NUM_FEATURES)
        params = [_copy_params(point, order) for order in orders]
        W = jnp.asarray(np.array([p[0] for p in params]))
        b = jnp.asarray(np.array([p[1] for p in params]))
        totals = np.asarray(
            jax.vmap(lambda W, b: jnp.sum((rows - reconstruct(TMSParams(W, b), rows)) ** 2))(W, b)
        )
        best = int(np.argmin(totals))
        order = np.asarray(orders[best])
        live0 = np.concatenate([params[best][0][:, order].ravel(), params[best][1][order]])
        dead_W = np.where(np.isin(np.arange(NUM_FEATURES), order), 0.0, params[best][0])
        _, curvature, grad_max, parts = _laplace_all(
            jnp.asarray(live0[None]),
            jnp.asarray(order[None]),
            x,
            n_mask,
            jnp.asarray(dead_W[None]),
            jnp.asarray(params[best][1][None]),
        )
        if float(grad_max[0]) > 1e-6 or float(curvature[0]) <= 0:
            raise RuntimeError(f"Newton did not reach a minimum for the {label}-gon at n={n}")
        total = float(totals[best])
        prior = 0.5 * float(np.sum(point.W**2) + np.sum(point.b[: point.k] ** 2))
        leading = n * point.loss + point.llc * math.log(n)
        terms = dict(
            empirical_loss=total - n * point.loss,
            prior_constant=prior,
            map_shift=float(parts.energy[0]) - total - prior,
            hessian=0.5 * float(parts.log_det[0])
            - point.llc * math.log(n)
            + 0.5 * math.log(2 * math.pi),
            rotation_orbit=-math.log(2 * math.pi) - float(parts.log_norm[0]),
            labelled_copies=float(-np.log(np.sum(np.exp(-(totals - total))))),
            dead_column_volume=0.0,
            multiplicity_loglog=0.0,
        )
        if label == "5":
            # log-mean-exp: a plain mean of e^{−nΔ} underflows once every nΔ exceeds ~745.
            log_mean = logsumexp(-n * np.asarray(dead_delta)) - math.log(np.size(dead_delta))
            terms["dead_column_volume"] = -float(log_mean)
        out[label] = dict(
            leading_order=leading,
            laplace=leading + sum(terms.values()),
            best_copy=orders[best],
            **terms,
        )
    return out


def decompose_draw(seed: int, n_max: int, sizes, dead_delta) -> dict:
    """:func:`decomposition_terms` at every n of one dataset draw (as bayesian_transitions draws
    it with n_max rows): {"6": {term: [per n]}, "5": ...}."""
    with jax.enable_x64(True):
        x = jnp.asarray(dataset_rows(seed, n_max, NUM_FEATURES), jnp.float64)
        rows = [decomposition_terms(x, n, dead_delta) for n in sizes]
    return {
        label: {key: [r[label][key] for r in rows] for key in rows[0][label] if key != "best_copy"}
        | {"best_copy": [list(r[label]["best_copy"]) for r in rows]}
        for label in ("6", "5")
    }


def fit_remainder(sizes, remainder, error) -> list[float]:
    r"""Weighted least squares :math:`r(n) = a + b\log n` over every (draw, n) given: [a, b]."""
    n, r, e = (np.asarray(v, np.float64).ravel() for v in (sizes, remainder, error))
    ok = np.isfinite(r) & np.isfinite(e) & (e > 0)
    design = np.stack([np.ones(ok.sum()), np.log(n[ok])], axis=1) / e[ok, None]
    coef, *_ = np.linalg.lstsq(design, r[ok] / e[ok], rcond=None)
    return coef.tolist()


def sampled_crossings(folders) -> dict[int, dict]:
    """Per dataset seed of ``bayesian_transitions --dataset-seeds`` runs: the sampled 5 → 6
    crossing and the run's largest n (which fixes the dataset draw)."""
    out = {}
    for folder in folders:
        for sub in sorted(ResultStore(folder).path("").glob("seed_*")):
            store = ResultStore(sub)
            summary, config = store.read_json("summary.json"), store.read_json("config.json")
            if summary is None or config is None:
                continue
            settings = config["settings"]
            crossing = summary["empirical_crossings"].get("5->6")
            out[int(settings["seed"])] = dict(
                sampled=float("nan") if crossing is None else float(crossing),
                n_max=int(max(settings["sizes"])),
                sizes=list(summary["sizes"]),
                occupancy_6=list(summary["occupancy"]["6"]),
                occupancy_5=list(summary["occupancy"]["5"]),
            )
    return out


def predicted_crossings(terms: dict, sizes, remainder_fit: dict) -> dict:
    """5 → 6 crossings of one draw: leading order (population), with this dataset's losses,
    Laplace-plus-volume, and Laplace-plus-volume plus the fitted remainder."""

    n = np.asarray(sizes, np.float64)
    six, five = terms["6"], terms["5"]

    def odds(key):
        return np.asarray(five[key]) - np.asarray(six[key])

    # The formula as the paper writes it, nL + λ log n + ½‖w*‖² (601 at c = 6), then with this
    # dataset's losses and the labelled copies (the two terms that depend on the draw).
    lo = odds("leading_order") + odds("prior_constant")
    data = lo + odds("empirical_loss") + odds("labelled_copies")
    laplace = odds("laplace")
    correction = (remainder_fit["5"][0] + remainder_fit["5"][1] * np.log(n)) - (
        remainder_fit["6"][0] + remainder_fit["6"][1] * np.log(n)
    )
    curves = dict(
        leading_order=lo,
        leading_order_data=data,
        laplace=laplace,
        laplace_remainder=laplace + correction,
    )
    return {
        key: dict(crossing=crossing(list(sizes), list(v)), log_odds=v.tolist())
        for key, v in curves.items()
    }


def main(args) -> dict:
    store = ResultStore(args.out)
    store.write_config(common.settings(args))
    sizes = _ints(args.sizes, "sizes")
    seeds = _ints(args.dataset_seeds, "dataset-seeds")
    labels = phase_labels(NUM_FEATURES)
    per_draw = {}
    bar = tqdm(seeds, desc="local free energies", disable=not args.progress)
    for seed in bar:
        name = f"draw_{seed:02d}"
        arrays = store.load_arrays(name)
        if not _same_run(arrays, sizes, args):
            arrays = measure_draw(seed, sizes, args)
            store.save_arrays(name, **arrays)  # written as it goes: a re-run resumes
        check_draw = occupancy_check(arrays, labels)
        per_draw[str(seed)] = dict(
            free_energy={
                label: [
                    [float(f), float(e)]
                    for f, e in zip(
                        arrays["free_energy"][:, labels.index(label)],
                        arrays["standard_error"][:, labels.index(label)],
                    )
                ]
                for label in PHASES
            },
            occupancy_check=check_draw,
            crossing=draw_crossings(arrays, labels),
            seconds=float(arrays["seconds"]),
        )
    bar.close()
    all_rows = [r for d in per_draw.values() for r in d["occupancy_check"]["rows"]]
    all_z = [r["z"] for r in all_rows]
    summary = dict(
        question="Do measured local free energies exp(-F_alpha) reproduce the sampled occupancies?",
        sizes=sizes,
        dataset_seeds=seeds,
        phases=list(PHASES),
        freeze_size=args.freeze_size,
        per_draw=per_draw,
        occupancy_within_2se=float(np.mean(np.abs(all_z) <= 2)),
        max_abs_z=float(np.max(np.abs(all_z))),
        occupancy_statistics=occupancy_statistics(all_rows),
    )

    five = {p.label: p for p in critical_points(NUM_FEATURES)}["5"]
    with jax.enable_x64(True):
        dead_delta = dead_column_loss_change(five, num_draws=args.dead_draws)
    # Item 2: the measured gap, term by term, on the measured draws.
    decomposition, residuals = {}, {"6": [], "5": []}
    for seed in seeds:
        name = f"terms_{seed:02d}"
        cached = store.read_json(f"{name}.json")
        if cached is None or cached.get("sizes") != sizes:
            cached = dict(sizes=sizes, terms=decompose_draw(seed, max(sizes), sizes, dead_delta))
            store.write_json(f"{name}.json", cached)
        arrays = store.load_arrays(f"draw_{seed:02d}")
        for label in ("6", "5"):
            a = labels.index(label)
            remainder = arrays["free_energy"][:, a] - np.asarray(cached["terms"][label]["laplace"])
            cached["terms"][label]["remainder"] = remainder.tolist()
            cached["terms"][label]["remainder_se"] = arrays["standard_error"][:, a].tolist()
            residuals[label].append((sizes, remainder, arrays["standard_error"][:, a]))
        decomposition[str(seed)] = cached["terms"]
    remainder_fit = {
        label: fit_remainder(*(np.stack([np.asarray(r[i]) for r in rows]) for i in range(3)))
        for label, rows in residuals.items()
    }
    # The predictor needs only the log-odds: fit the remainders' difference (5 − 6) directly, on the
    # points measured to better than 0.6 nats (the 5-gon at n = 1000 holds a few particles).
    difference = [
        (n, r5 - r6, np.where(np.hypot(e5, e6) < 0.6, np.hypot(e5, e6), np.nan))
        for (n, r6, e6), (_, r5, e5) in zip(residuals["6"], residuals["5"])
    ]
    odds_fit = fit_remainder(*(np.stack([np.asarray(d[i]) for d in difference]) for i in range(3)))
    remainder_fit = {"6": [0.0, 0.0], "5": odds_fit}
    summary["decomposition"] = decomposition
    summary["remainder_fit"] = {
        "5 minus 6": dict(a=odds_fit[0], b_log_n=odds_fit[1], fitted_on_draws=seeds)
    }
    summary["resisting_term"] = resisting_term(residuals, per_draw)
    # Item 3: the crossing per draw of a bayesian_transitions multi-draw run, predicted from the
    # decomposition (the remainder fitted above on the measured draws, other datasets: their n_max
    # differs, so even equal seeds are different draws) against the sampled one.
    if args.from_dir:
        grid = [int(v) for v in args.predict_sizes.split(",")]
        crossings = {}
        sampled_all = sampled_crossings(args.from_dir.split(","))
        for seed, sampled in tqdm(
            sampled_all.items(),
            desc="predicted crossings",
            disable=not args.progress,
        ):
            name = f"predict_{seed:02d}_{sampled['n_max']}"
            cached = store.read_json(f"{name}.json")
            if cached is None or cached.get("sizes") != grid:
                terms = decompose_draw(seed, sampled["n_max"], grid, dead_delta)
                cached = dict(sizes=grid, terms=terms)
                store.write_json(f"{name}.json", cached)
            predicted = predicted_crossings(cached["terms"], grid, remainder_fit)
            crossings[str(seed)] = dict(
                sampled=sampled["sampled"],
                **{k: v["crossing"] for k, v in predicted.items()},
                five_dead_feature=[
                    sorted(set(range(NUM_FEATURES)) - set(c))[0]
                    for c in cached["terms"]["5"]["best_copy"]
                ],
                data_log_odds=(
                    np.asarray(cached["terms"]["5"]["empirical_loss"])
                    + np.asarray(cached["terms"]["5"]["labelled_copies"])
                    - np.asarray(cached["terms"]["6"]["empirical_loss"])
                    - np.asarray(cached["terms"]["6"]["labelled_copies"])
                ).tolist(),
            )
        summary["crossings"] = crossings
        summary["predict_sizes"] = args.predict_sizes
        summary["crossing_scores"] = crossing_scores(crossings)
        summary["crossing_resolution"] = crossing_resolution(per_draw, sampled_all, max(sizes))
    store.write_summary(summary)
    figures(store, summary, labels)
    return summary


def resisting_term(residuals: dict, per_draw: dict) -> dict:
    """What the Laplace-plus-volume terms leave unexplained, and what it costs in n_c: each phase's
    remainder over the measured (draw, n) (points known to better than 0.6 nats), the spread of the
    5 − 6 difference across draws at each n, and how far one nat moves the crossing (the measured
    log-odds' slope there)."""
    out = {}
    for label, rows in residuals.items():
        values = np.concatenate([np.asarray(r)[np.asarray(e) < 0.6] for _, r, e in rows])
        values = values[np.isfinite(values)]
        out[f"remainder_{label}"] = (
            dict(low=float(values.min()), high=float(values.max()), mean=float(values.mean()))
            if values.size
            else dict(low=float("nan"), high=float("nan"), mean=float("nan"))
        )
    difference = np.stack(
        [
            np.where(np.hypot(e5, e6) < 0.6, np.asarray(r5) - np.asarray(r6), np.nan)
            for (_, r6, e6), (_, r5, e5) in zip(residuals["6"], residuals["5"])
        ]
    )  # (draws, sizes)
    known = np.sum(np.isfinite(difference), axis=0)
    spread = [
        float(np.nanstd(column, ddof=1)) if count > 1 else None
        for column, count in zip(difference.T, known)
    ]
    out["difference_5_minus_6_spread_over_draws"] = spread
    n_per_nat = [d["crossing"]["n_per_nat"] for d in per_draw.values()]
    n_per_nat = [v for v in n_per_nat if np.isfinite(v)]
    out["n_c_per_nat"] = float(np.median(n_per_nat)) if n_per_nat else float("nan")
    return out


def crossing_resolution(per_draw: dict, sampled: dict, n_max: int) -> dict:
    """How precisely a crossing is known: on the measured draws that are the very datasets of the
    ``--from`` runs (same seed and largest n), the sampled crossing (replica exchange) beside plain
    tempered SMC's and the local free energies' crossings."""
    rows = {}
    for seed, draw in per_draw.items():
        run = sampled.get(int(seed))
        if run is None or run["n_max"] != n_max:
            continue
        rows[seed] = dict(sampled=run["sampled"], **draw["crossing"])
    if not rows:
        return dict(draws={}, note=f"no --from run has these datasets (largest n {n_max})")

    def misses(key):
        return np.array([v[key] - v["sampled"] for v in rows.values()], np.float64)

    out = dict(draws=rows)
    for key in ("reference", "measured"):
        miss = misses(key)
        ok = np.isfinite(miss)
        out[f"{key}_minus_sampled"] = dict(
            mean_abs=float(np.mean(np.abs(miss[ok]))) if ok.any() else None,
            within_30=int(np.sum(np.abs(miss[ok]) <= 30)),
            draws=int(ok.sum()),
        )
    return out


def crossing_scores(crossings: dict) -> dict:
    """Mean |predicted − sampled| and how many draws fall within 30, per predictor."""
    out = {}
    for key in ("leading_order", "leading_order_data", "laplace", "laplace_remainder"):
        miss = np.array([v[key] - v["sampled"] for v in crossings.values()], np.float64)
        ok = np.isfinite(miss)
        out[key] = dict(
            mean_abs_miss=float(np.mean(np.abs(miss[ok]))) if ok.any() else None,
            mean_miss=float(np.mean(miss[ok])) if ok.any() else None,
            within_30=int(np.sum(np.abs(miss[ok]) <= 30)),
            draws=int(ok.sum()),
        )
    return out


def figures(store: ResultStore, summary: dict, labels) -> None:
    """occupancy.png (item 1), terms.png (item 2), crossings.png (item 3), dataset.png (item 4)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    sizes = np.asarray(summary["sizes"])
    # Item 1: predicted (measured F) vs reference occupancy, every draw.
    fig, axes = plt.subplots(1, len(PHASES), figsize=(4 * len(PHASES), 3.6))
    for ax, label in zip(axes, PHASES):
        for seed, draw in summary["per_draw"].items():
            rows = [r for r in draw["occupancy_check"]["rows"] if r["phase"] == label]
            ax.errorbar(
                [r["reference"] for r in rows],
                [r["predicted"] for r in rows],
                xerr=[r["reference_se"] for r in rows],
                yerr=[r["predicted_se"] for r in rows],
                fmt="o",
                ms=3,
                label=f"draw {seed}",
            )
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_title(f"{label}-gon")
        ax.set_xlabel("tempered SMC occupancy")
    axes[0].set_ylabel(r"$e^{-F_\alpha}/\sum e^{-F}$, F measured")
    axes[0].legend(fontsize=7)
    store.save_figure("occupancy", fig)

    # Item 2: one panel per term against n, 6-gon solid, 5-gon dashed, one colour per draw.
    keys = [*TERMS, "remainder"]
    fig, axes = plt.subplots(3, 3, figsize=(12, 9), sharex=True)
    for ax, key in zip(axes.ravel(), keys):
        for index, (seed, terms) in enumerate(summary["decomposition"].items()):
            for label, style in (("6", "-"), ("5", "--")):
                values = np.asarray(terms[label][key], np.float64)
                if key == "remainder":
                    ax.errorbar(
                        sizes,
                        values,
                        yerr=terms[label]["remainder_se"],
                        fmt="o" + style,
                        color=f"C{index}",
                        ms=3,
                        lw=1,
                    )
                else:
                    ax.plot(sizes, values, style, color=f"C{index}", lw=1.2)
        ax.set_title(key.replace("_", " "), fontsize=10)
        ax.axhline(0, color="grey", lw=0.6)
    for ax in axes[-1]:
        ax.set_xlabel("n")
    fig.suptitle(
        r"$F_\alpha - [nL_\alpha + \lambda_\alpha \log n]$ term by term (nats); "
        "6-gon solid, 5-gon dashed, one colour per dataset draw"
    )
    fig.tight_layout()
    store.save_figure("terms", fig)

    if "crossings" not in summary:
        return
    resolution = summary["crossing_resolution"]["draws"]
    if resolution:
        fig, ax = plt.subplots(figsize=(5.5, 5))
        sampled = np.array([v["sampled"] for v in resolution.values()])
        for key, marker, name in (
            ("reference", "o", "plain tempered SMC"),
            ("measured", "s", "local free energies"),
        ):
            ax.errorbar(
                sampled,
                [v[key] for v in resolution.values()],
                yerr=[v[f"{key}_se"] for v in resolution.values()],
                fmt=marker,
                ms=4,
                capsize=2,
                label=name,
            )
        lo, hi = np.nanmin(sampled) - 50, np.nanmax(sampled) + 50
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.fill_between([lo, hi], [lo - 30, hi - 30], [lo + 30, hi + 30], color="grey", alpha=0.2)
        ax.set_xlabel("sampled 5 → 6 crossing (replica exchange)")
        ax.set_ylabel("crossing on the same dataset")
        ax.set_title("the same datasets three ways (band: ±30)", fontsize=9)
        ax.legend(fontsize=7)
        store.save_figure("crossing_resolution", fig)
    crossings = summary["crossings"]
    sampled = np.array([v["sampled"] for v in crossings.values()])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for key, marker in (
        ("leading_order", "x"),
        ("leading_order_data", "^"),
        ("laplace", "s"),
        ("laplace_remainder", "o"),
    ):
        score = summary["crossing_scores"][key]
        ax.plot(
            sampled,
            [v[key] for v in crossings.values()],
            marker,
            label=f"{key.replace('_', ' ')}: mean |miss| {score['mean_abs_miss']:.0f}, "
            f"{score['within_30']}/{score['draws']} within 30",
        )
    lo, hi = np.nanmin(sampled) - 50, np.nanmax(sampled) + 50
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.fill_between([lo, hi], [lo - 30, hi - 30], [lo + 30, hi + 30], color="grey", alpha=0.2)
    ax.set_xlabel("sampled 5 → 6 crossing (replica exchange)")
    ax.set_ylabel("predicted crossing")
    ax.legend(fontsize=7)
    store.save_figure("crossings", fig)

    # Item 4: what the dataset does: the data's part of the 6-vs-5 log-odds at n = 450 against the
    # sampled crossing, labelled by the 5-gon's dead feature.
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    grid = [int(v) for v in summary.get("predict_sizes", "450").split(",")]
    at = grid.index(450) if 450 in grid else len(grid) // 2
    for seed, v in crossings.items():
        ax.scatter(-v["data_log_odds"][at], v["sampled"], color="C0")
        ax.annotate(
            f"{seed}:{v['five_dead_feature'][at]}",
            (-v["data_log_odds"][at], v["sampled"]),
            fontsize=7,
        )
    ax.set_xlabel(
        f"data's share of log-odds 6 vs 5 at n = {grid[at]} (empirical loss + labelled copies)"
    )
    ax.set_ylabel("sampled crossing")
    ax.set_title("draw: dead feature of the 5-gon's best copy")
    store.save_figure("dataset", fig)


if __name__ == "__main__":
    common.run_module(sys.modules[__name__])
