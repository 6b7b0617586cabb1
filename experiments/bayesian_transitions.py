r"""Bayesian phase transitions in the TMS: phase occupancy across dataset sizes vs free-energy
theory.

Question: as the number of samples n grows, does the posterior's dominant phase move from the 5-gon
to the 6-gon where the free energy formula :math:`F_n \approx nL + \lambda\log n + c` predicts
(n ≈ 601 at c = 6; 5⁺ → 6 near 202)?

Method (Chen et al. 2023 §5):

- target: :math:`p_n(w) \propto \mathcal N(w; 0, I)\,e^{-nL_n(w)}` with the unhalved loss
  (:mod:`tmsjax.tms.posterior`), on nested datasets: the first n points of one draw of n_max points
  from the high-sparsity-limit distribution, padded and masked so every n runs in one compiled
  program (by default as their exact sufficient statistics,
  :func:`tmsjax.tms.data.sparse_limit_stats`: the same likelihood at O(c² log n) per gradient;
  ``--likelihood rows`` evaluates it row by row);
- sampler (default ``--sampler tempering``): replica exchange (:mod:`tmsjax.sampling.tempering`),
  every chain a ladder of ``--num-temperatures`` copies at :math:`\varphi\,e^{-\beta nL_n}`,
  geometric in β from :math:`\beta_{\min} = \min(1, n_{\mathrm{hot}}/n)` to 1, so the hottest
  copy sees the posterior of ``--hot-size`` samples (200: where chains cross between the 5- and
  6-gon freely) and carries its crossings down to β = 1 by swaps; each copy moves with blackjax
  HMC (``--leapfrog-steps``), step size and mass matrix adapted per temperature; draws kept at
  β = 1. ``--sampler nuts`` is the reference: blackjax NUTS with per-chain Stan window adaptation
  (:mod:`tmsjax.sampling.nuts`), whose chains stop crossing between the 5- and 6-gon from n ≈ 600
  on, so its occupancies there remember where the chains started (its multi-chain error bars say
  so); ``--sampler chees`` runs ChEES-HMC (chains of one n share a trajectory length);
  ``--sampler smc`` runs adaptive tempered SMC from the prior (:mod:`tmsjax.sampling.smc`,
  ``--smc-replicates`` independent runs of ``--smc-particles`` per n), the independent check.
  All vmapped over the (n, chain) grid and run in blocks of n values written to disk as they
  finish (a re-run resumes);
- coarse-graining: every draw classified by :func:`tmsjax.tms.phases.classify_batch` with
  ``max_distance=inf`` (the paper's hull-vertex count plus bias signs: at n ≲ 1000 the posterior
  spread is comparable to the classifier's default distance cut, which would call most draws
  "unknown");
- occupancy per phase and n with an error bar :math:`\sqrt{p(1-p)/\mathrm{ESS}}`, the multi-chain
  (rank-normalised) ESS of the phase indicator
  (:func:`tmsjax.sampling.diagnostics.occupancy_with_error`): chains that stay put or disagree
  shrink it; for SMC the replicates play the chains and the resampled duplicates the
  autocorrelation;
- theory: softmax of :math:`-F_n` over the catalogue phases with known λ (6, 5⁺, 5 at c = 6;
  ``--llc-estimates`` adds 4-gons), crossings from :mod:`tmsjax.tms.theory`.

Initialisation (our choice, with reasons). Chains started from the prior N(0, I) spend most of a
short warmup wandering through high-loss configurations (3-gons, 4-gons with silenced outputs)
before the likelihood pulls them into a polygon, and at n ≳ 1000 the barriers between polygons keep
them where they land, so prior starts measure the basins of attraction of the warmup dynamics more
than the posterior. We therefore start an equal number of chains near each phase of the theory set
(a random rotation and feature permutation of the catalogue point plus N(0, 0.05²) noise) and use a
warmup of a few hundred steps: at the n where the competition happens (300–1000) chains switch
between 5- and 6-gons freely during warmup (we record the number of switches per chain to check
this), so a balanced start does not decide the answer, and it removes the bias of never finding the
6-gon. ``--init prior`` is available to measure the difference.

Default sampler: replica exchange, because it mixes at every n and was the cheapest at equal
error (benchmarks/bayes_sweep.py, dataset seed 9, 2 CPU cores at load average 2.3-4.3). Seconds
for a standard error of 0.01 on the 6-gon occupancy, each sampler's error from the spread of its
independent chains or runs: 14 s vs 26 s for tempered SMC at n = 600, 9.6 s vs 109 s at
n = 1000. Its occupancies match SMC's (6-gon, 64 chains vs 4 × 1000 particles: 0.067 / 0.060 at
n = 300, 0.784 / 0.772 at 600, 0.809 / 0.808 at 1000, 1.000 / 1.000 at 2000; |z| ≤ 1.6 for
6, 5⁺ and 5), where NUTS reads 0.886 ± 0.040 at 600 (z = +2.7 against SMC) and 0.48 ± 0.19 at
2000, 9 of its 12 chains never changing phase. The CPU preset's ladder has 6 copies
(swap acceptance ≥ 0.33 up to n = 800), the paper preset's 8 (≥ 0.35 up to n = 2000); 4 leapfrog
steps per move cost 24 or 32 gradients per draw, against NUTS's ~30 at depth cap 5.

c = 5 and c = 4. Only the 5-gon has a closed-form λ at c ≤ 5 (4-gons are not minimally singular,
docs/paper_numbers.md §4), so the theory curves hold one phase (c = 5) or none (c = 4) unless
``--llc-estimates`` supplies λ̂ for 4-gons; the chains start near, and the summary reports, the
three lowest-loss catalogue phases (5, 4⁺, 4 at c = 5; 4, 4⁻, 4⁻⁻ at c = 4) and every empirical
crossing among them (c = 5, dataset seed 0: 4 → 5 at n ≈ 109).

NUTS tree depth. The posterior is invariant under the O(2) rotation of all columns, a ring of radius
‖W‖ ≈ 3 that NUTS trajectories keep travelling around (depth 6–7 unconstrained). Occupancies are
rotation-invariant, so we cap the tree depth (``--max-doublings``, 5 = 31 leapfrog steps by default
on CPU): still an exact MCMC kernel, a several-fold saving, at the cost of slower mixing along a
direction nobody measures.

Writes ``DIR/config.json``, ``DIR/n_XXXXX.npz`` per dataset size (phase ids, sampler info, a thinned
subset of draws), ``DIR/summary.json`` (occupancies with errors, theoretical occupancies, empirical
and theoretical crossings, sampler diagnostics), ``DIR/occupancy.png`` and ``DIR/tsne.png``.

References:
  Chen, Lau, Mendel, Wei, Murfet (2023), "Dynamical versus Bayesian phase transitions in a toy model
  of superposition", arXiv:2310.06301, §5, Fig. 4–5.

Usage:
  python -m experiments.bayesian_transitions --out results/bayes            # CPU default, minutes
  python -m experiments.bayesian_transitions --out results/bayes --preset paper   # GPU, c = 6, 5, 4
  # 5 -> 6 crossing as mean ± spread over three dataset draws (~8 min on 2 busy CPU cores):
  python -m experiments.bayesian_transitions --out results/bayes_seeds --dataset-seeds 0,1,2 \
      --sizes 300,350,400,450,500,550,600,650,700 --num-warmup 300 --num-samples 300 --block-sizes 9

Every summary.json carries ``theory_leading_order`` (the formula's numbers and crossings, with and
without the constant and with the 5-gon's dead-column prior mass) and ``crossing_note`` (why the
measured crossing differs from the leading-order 601).

Measured (CPU, 2 cores): over 12 dataset draws (``--dataset-seeds 0,...,11 --sizes 300,350,...,800
--num-warmup 300 --num-samples 400``, 12 chains per n, 213 s of sampling) the 5 → 6 crossing is
482 ± 93 (mean ± sd over draws; median 492, range 307–664; 6 of 12 in 500–800). On draw 0, tempered
SMC (4 × 1000 particles from the prior) crosses at 424 and NUTS at 394–425; the Laplace estimate
with every O(1) term (``experiments.laplace_crossing``) at 313, the leading-order formula at 601.
"""

import argparse
import json
import math
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from experiments import common
from tmsjax.results import ResultStore
from tmsjax.sampling import diagnostics
from tmsjax.sampling.nuts import lockstep_efficiency, make_chees_sweep, make_nuts_sweep
from tmsjax.sampling.smc import make_smc_sweep
from tmsjax.sampling.tempering import geometric_ladder, make_tempering_sweep
from tmsjax.tms import theory
from tmsjax.tms.critical import critical_points
from tmsjax.tms.data import Dataset, nested_datasets, sample_sparse_limit, sparse_limit_stats
from tmsjax.tms.model import TMSParams
from tmsjax.tms.phases import canonicalize, classify_batch, phase_labels
from tmsjax.tms.plotting import phase_colors, pretty_label
from tmsjax.tms.posterior import log_likelihood, log_prior, make_logdensity_fn

PRESETS = {
    # CPU default: nine n around the predicted transitions, 4 chains per theory phase.
    "cpu": dict(
        num_features=6,
        sizes="150,250,350,450,550,650,800,1000,1300",
        chains_per_phase=4,
        num_warmup=400,
        num_samples=400,
        max_doublings=5,
        block_sizes=3,
        smc_particles=1000,
        smc_replicates=4,
        num_temperatures=6,
        hot_size=200,
        leapfrog_steps=4,
        tsne_points=1500,
    ),
    # GPU: the paper's range, 100..2000 for c = 6 (c = 4, 5 get 100..600 in their own run).
    # num_features None: the paper's three systems c = 6, 5, 4, each in its own folder.
    "paper": dict(
        num_features=None,
        sizes="100,150,200,250,300,400,500,600,700,800,900,1000,1200,1400,1700,2000",
        chains_per_phase=32,
        num_warmup=1000,
        num_samples=2000,
        max_doublings=8,
        block_sizes=16,
        smc_particles=4000,
        smc_replicates=8,
        num_temperatures=8,
        hot_size=200,
        leapfrog_steps=4,
        tsne_points=1500,
    ),
    # Seconds: two n, one chain per phase, a few steps; only checks that every stage runs.
    "smoke": dict(
        num_features=6,
        sizes="200,600",
        chains_per_phase=1,
        num_warmup=10,
        num_samples=10,
        max_doublings=2,
        block_sizes=2,
        tsne_points=40,
        smc_particles=64,
        smc_replicates=2,
        num_temperatures=3,
        hot_size=200,
        leapfrog_steps=4,
    ),
}
PAPER_SMALL_C_SIZES = "100,150,200,250,300,400,500,600"
# The default occupancy sampler must mix at every n (issue #15): NUTS chains stop crossing between
# the 5- and 6-gon from n ≈ 600 on. Replica exchange and tempered SMC both mix; see the module
# docstring for which is cheaper at equal error and why it is the default.
DEFAULT_SAMPLER = "tempering"


def add_arguments(parser):
    parser.add_argument("--num-features", type=int, default=None, help="c (preset: 6)")
    parser.add_argument("--sizes", default=None, help="comma-separated dataset sizes n")
    parser.add_argument("--chains-per-phase", type=int, default=None)
    parser.add_argument("--num-warmup", type=int, default=None)
    parser.add_argument("--num-samples", type=int, default=None)
    parser.add_argument("--max-doublings", type=int, default=None, help="NUTS tree depth cap")
    parser.add_argument(
        "--block-sizes", type=int, default=None, help="dataset sizes per compiled call"
    )
    parser.add_argument(
        "--sampler", choices=["tempering", "smc", "nuts", "chees"], default=DEFAULT_SAMPLER
    )
    parser.add_argument(
        "--likelihood",
        choices=["stats", "rows"],
        default="stats",
        help="log likelihood from the data's sufficient statistics (exact, fast) or row by row",
    )
    parser.add_argument("--smc-particles", type=int, default=None, help="particles per SMC run")
    parser.add_argument(
        "--smc-replicates", type=int, default=None, help="independent SMC runs per n"
    )
    parser.add_argument(
        "--num-temperatures", type=int, default=None, help="replica exchange: copies per chain K"
    )
    parser.add_argument(
        "--hot-size",
        type=float,
        default=None,
        help="replica exchange: the hottest copy sees the posterior of this many samples "
        "(beta_min = min(1, hot_size T / n))",
    )
    parser.add_argument(
        "--leapfrog-steps", type=int, default=None, help="replica exchange: leapfrog steps per move"
    )
    parser.add_argument("--init", choices=["phases", "prior"], default="phases")
    parser.add_argument("--prior-std", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=1.0, help="likelihood scale T")
    parser.add_argument(
        "--llc-estimates", default=None, help="JSON dict of λ for 4-gons, e.g. '{\"4\": 5.0}'"
    )
    parser.add_argument(
        "--tsne-points", type=int, default=None, help="0 skips the t-SNE (default 1500)"
    )
    parser.add_argument(
        "--dataset-seeds",
        default=None,
        help="comma-separated seeds, e.g. 0,1,2: one run per dataset draw in DIR/seed_S, and the "
        "crossing reported as mean ± spread over datasets in DIR/summary.json (overrides --seed)",
    )


def check(args):
    sizes = sorted({int(s) for s in str(args.sizes).split(",")})
    if not sizes or min(sizes) <= 0:
        raise ValueError(f"--sizes must be positive integers, got {args.sizes!r}")
    counts = (
        "chains_per_phase",
        "num_warmup",
        "num_samples",
        "max_doublings",
        "block_sizes",
        "smc_particles",
        "smc_replicates",
        "num_temperatures",
        "leapfrog_steps",
    )
    for name in counts:
        value = getattr(args, name)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(
                f"--{name.replace('_', '-')} must be a positive integer, got {value!r}"
            )
    if not (isinstance(args.hot_size, int | float) and 0 < args.hot_size < math.inf):
        raise ValueError(f"--hot-size must be a positive number, got {args.hot_size!r}")
    if not isinstance(args.tsne_points, int) or args.tsne_points < 0:
        raise ValueError(f"--tsne-points must be a non-negative integer, got {args.tsne_points!r}")


def settings_from_args(args) -> dict:
    """The settings of one sweep (one c, one dataset seed), for the sampler and config.json."""
    names = (
        "num_features",
        "chains_per_phase",
        "num_warmup",
        "num_samples",
        "max_doublings",
        "block_sizes",
        "smc_particles",
        "smc_replicates",
        "num_temperatures",
        "hot_size",
        "leapfrog_steps",
        "sampler",
        "likelihood",
        "init",
        "prior_std",
        "temperature",
        "seed",
    )
    settings = {name: getattr(args, name) for name in names}
    settings["sizes"] = sorted({int(s) for s in str(args.sizes).split(",")})
    settings["llc_estimates"] = json.loads(args.llc_estimates) if args.llc_estimates else {}
    settings["tsne_points"] = int(args.tsne_points)
    return settings


class SweepKeys(NamedTuple):
    data: jax.Array
    chains: jax.Array


def sweep_keys(seed: int) -> SweepKeys:
    """The one key schedule of a sweep: the dataset draw and the chains (or SMC particles)."""
    return SweepKeys(*jax.random.split(jax.random.key(seed)))


def dataset_rows(seed: int, n_max: int, num_features: int):
    """The sweep's dataset draw for `seed`: n_max rows; every n uses the first n (nested
    datasets)."""
    return sample_sparse_limit(sweep_keys(seed).data, n_max, num_features)


def initial_positions(key, labels, num_features, init: str, num_chains: int) -> TMSParams:
    """Starting points: near catalogue phases (cycled over `labels`) or prior draws N(0, I)."""
    key_rot, key_perm, key_noise = jax.random.split(key, 3)
    if init == "prior":
        W = jax.random.normal(key_noise, (num_chains, 2, num_features))
        b = jax.random.normal(jax.random.fold_in(key_noise, 1), (num_chains, num_features))
        return TMSParams(W, b)
    catalogue = {p.label: p for p in critical_points(num_features)}
    chosen = [catalogue[labels[i % len(labels)]] for i in range(num_chains)]
    W = jnp.asarray(np.stack([p.W for p in chosen]), jnp.float32)
    b = jnp.asarray(np.stack([p.b for p in chosen]), jnp.float32)
    theta = jax.random.uniform(key_rot, (num_chains,), maxval=2 * jnp.pi)
    rotation = jnp.stack(
        [
            jnp.stack([jnp.cos(theta), -jnp.sin(theta)], -1),
            jnp.stack([jnp.sin(theta), jnp.cos(theta)], -1),
        ],
        -2,
    )
    W = rotation @ W
    perms = jax.vmap(lambda k: jax.random.permutation(k, num_features))(
        jax.random.split(key_perm, num_chains)
    )
    W = jnp.take_along_axis(W, perms[:, None, :], axis=-1)
    b = jnp.take_along_axis(b, perms, axis=-1)
    # N(0, 0.05²): off the critical set so adaptation sees the local curvature, far inside the
    # basin.
    key_w, key_b = jax.random.split(key_noise)
    return TMSParams(
        W + 0.05 * jax.random.normal(key_w, W.shape), b + 0.05 * jax.random.normal(key_b, b.shape)
    )


def sampled_phases(c: int, theory_labels) -> list[str]:
    """The phases chains start near and the summary reports: the theory set (phases with known λ),
    completed to three with the lowest-loss catalogue points (c = 5: 5, 4⁺, 4; c = 4: 4, 4⁻, 4⁻⁻,
    whose λ has no closed form)."""
    labels = list(theory_labels)
    for point in critical_points(c):
        if len(labels) >= 3:
            break
        if point.label not in labels:
            labels.append(point.label)
    return labels


def phase_switches(ids: np.ndarray) -> np.ndarray:
    """Number of changes of phase id along each chain (num_chains, num_draws) -> (num_chains,)."""
    return np.sum(ids[:, 1:] != ids[:, :-1], axis=1)


def run_sweep(settings: dict, store: ResultStore, progress: bool = True) -> None:
    """Runs every dataset size not yet on disk, a block of n values per compiled call."""

    c = settings["num_features"]
    sizes = settings["sizes"]
    todo = [n for n in sizes if not store.has(f"n_{n:05d}")]
    if not todo:
        return
    if settings["sampler"] == "smc":
        return run_smc_sweep(settings, store, todo, progress)
    init_labels = sampled_phases(
        c, [p.label for p in theory.catalogue_phases(c, settings["llc_estimates"])]
    )
    num_chains = settings["chains_per_phase"] * len(init_labels)
    key_run = sweep_keys(settings["seed"]).chains
    n_max = max(sizes)
    x = dataset_rows(settings["seed"], n_max, c)
    logdensity_fn = make_logdensity_fn(settings["prior_std"], settings["temperature"])
    draws = dict(num_warmup=settings["num_warmup"], num_samples=settings["num_samples"])
    rows = settings["likelihood"] == "rows"
    if settings["sampler"] == "nuts":
        # Nested datasets share their rows: x goes in once, only the masks are per lane.
        sweep = make_nuts_sweep(
            logdensity_fn,
            max_num_doublings=settings["max_doublings"],
            data_axes=Dataset(x=None, mask=0) if rows else 0,
            **draws,
        )
    elif settings["sampler"] == "tempering":
        prior_std, temperature = settings["prior_std"], settings["temperature"]
        sweep = make_tempering_sweep(
            lambda w: log_prior(w, prior_std),
            lambda w, d: log_likelihood(w, d, temperature),
            num_integration_steps=settings["leapfrog_steps"],
            data_axes=Dataset(x=None, mask=0) if rows else 0,
            **draws,
        )
    else:
        sweep = make_chees_sweep(logdensity_fn, num_chains=num_chains, **draws)
    block = settings["block_sizes"]
    blocks = [todo[i : i + block] for i in range(0, len(todo), block)]
    bar = tqdm(total=len(todo), desc=f"{settings['sampler']} sweep c={c}", disable=not progress)
    for sizes_block in blocks:
        # Pad the last block by repeating its last n so every call has one shape (one compilation).
        padded = sizes_block + [sizes_block[-1]] * (block - len(sizes_block))
        datasets = block_data(x, padded, settings["likelihood"])
        # Keys and starts depend on n only, not on the blocking, so a resumed run is the same run.
        # Starting points and chain keys come from separate keys (never the same key split twice).
        keys_n = [jax.random.split(jax.random.fold_in(key_run, n)) for n in padded]
        inits = [
            initial_positions(k[0], init_labels, c, settings["init"], num_chains) for k in keys_n
        ]
        chain_keys = jnp.stack(
            [jax.random.split(k[1], num_chains) for k in keys_n]
        )  # (block, chains)
        start = time.perf_counter()
        if settings["sampler"] in ("nuts", "tempering"):
            if rows:
                grid_data = Dataset(x, jnp.repeat(datasets.mask, num_chains, axis=0))
            else:
                grid_data = jax.tree.map(lambda a: jnp.repeat(a, num_chains, axis=0), datasets)
            positions = jax.tree.map(lambda *xs: jnp.concatenate(xs), *inits)
            if settings["sampler"] == "nuts":
                result = sweep(chain_keys.reshape(-1), positions, grid_data)
            else:
                # Every copy of a chain starts where the chain does; the hot ones spread out.
                copies = settings["num_temperatures"]
                positions = jax.tree.map(
                    lambda a: jnp.repeat(a[:, None], copies, axis=1), positions
                )
                betas = np.repeat(temperature_ladders(padded, settings), num_chains, axis=0)
                result = sweep(chain_keys.reshape(-1), positions, grid_data, betas)
        else:
            positions = jax.tree.map(lambda *xs: jnp.stack(xs), *inits)
            result = sweep(chain_keys[:, 0], positions, datasets)
        result = jax.device_get(result)
        seconds = time.perf_counter() - start
        for index, n in enumerate(sizes_block):
            part = jax.tree.map(
                lambda a: np.asarray(a).reshape(block, num_chains, *np.shape(a)[1:])[index], result
            )
            if settings["sampler"] == "tempering":
                save_tempering_size(store, n, part, c, seconds / len(sizes_block))
            else:
                save_size(store, n, part, c, seconds / len(sizes_block))
            bar.update(1)
    bar.close()


def temperature_ladders(sizes, settings: dict) -> np.ndarray:
    r"""Replica-exchange ladders, one per n: geometric from
    :math:`\beta_{\min} = \min(1, n_{\mathrm{hot}} T / n)` to 1.

    The tempered posterior :math:`\varphi\,e^{-\beta n L_n / T}` is that of
    :math:`\beta n / T` samples, so the hottest copy sees the posterior of ``hot_size`` samples,
    where NUTS chains cross between the 5- and 6-gon freely (n ≲ 450 at c = 6). At n ≤ hot_size
    every copy is at β = 1 and the swaps are no-ops.
    """
    sizes = np.asarray(sizes, float)
    beta_min = np.minimum(1.0, settings["hot_size"] * settings["temperature"] / sizes)
    return np.asarray(geometric_ladder(beta_min, settings["num_temperatures"]))


def block_data(x, sizes, likelihood: str):
    """The targets of one block of dataset sizes: nested padded rows, or their sufficient statistics
    (exactly the same log likelihood, O(c² log n) per evaluation; every block padded to one
    shape)."""
    if likelihood == "rows":
        return nested_datasets(x, sizes)
    num_slots = int(np.bincount(np.asarray(x).argmax(axis=1), minlength=x.shape[1]).max())
    return sparse_limit_stats(x, sizes, num_slots=num_slots)


def run_smc_sweep(settings: dict, store: ResultStore, todo: list, progress: bool = True) -> None:
    """Tempered SMC from the prior: `smc_replicates` independent runs of `smc_particles` per n, all
    (n, replicate) runs of a block in one compiled program (tmsjax.sampling.smc)."""

    c = settings["num_features"]
    replicates, num_particles = settings["smc_replicates"], settings["smc_particles"]
    key_run = sweep_keys(settings["seed"]).chains
    x = dataset_rows(settings["seed"], max(settings["sizes"]), c)
    prior_std, temperature = settings["prior_std"], settings["temperature"]
    sweep = make_smc_sweep(
        lambda w: log_prior(w, prior_std), lambda w, d: log_likelihood(w, d, temperature)
    )
    block = settings["block_sizes"]
    bar = tqdm(total=len(todo), desc=f"smc sweep c={c}", disable=not progress)
    for start in range(0, len(todo), block):
        sizes_block = todo[start : start + block]
        padded = sizes_block + [sizes_block[-1]] * (block - len(sizes_block))
        datasets = block_data(x, padded, settings["likelihood"])
        grid_data = jax.tree.map(lambda a: jnp.repeat(a, replicates, axis=0), datasets)
        keys, particles = [], []
        for n in padded:  # keys depend on n only, so a resumed run is the same run
            key_chain, key_init = jax.random.split(jax.random.fold_in(key_run, n))
            keys.append(jax.random.split(key_chain, replicates))
            k_w, k_b = jax.random.split(key_init)
            particles.append(
                TMSParams(
                    prior_std * jax.random.normal(k_w, (replicates, num_particles, 2, c)),
                    prior_std * jax.random.normal(k_b, (replicates, num_particles, c)),
                )
            )
        particles = jax.tree.map(lambda *xs: jnp.concatenate(xs), *particles)
        begin = time.perf_counter()
        result = jax.device_get(sweep(jnp.concatenate(keys), particles, grid_data))
        seconds = (time.perf_counter() - begin) / len(sizes_block)
        for index, n in enumerate(sizes_block):
            part = jax.tree.map(
                lambda a: np.asarray(a).reshape(block, replicates, *np.shape(a)[1:])[index], result
            )
            W, b = np.asarray(part.particles.W), np.asarray(part.particles.b)
            ids = np.asarray(
                classify_batch(W.reshape(-1, 2, c), b.reshape(-1, c), max_distance=math.inf).ids
            )
            thin = max(1, num_particles // 50)
            store.save_arrays(
                f"n_{n:05d}",
                ids=ids.reshape(replicates, num_particles),  # replicates play the role of chains
                W=W[:, ::thin],
                b=b[:, ::thin],
                log_evidence=part.log_evidence,
                num_steps=part.num_steps,
                acceptance_rate=part.acceptance_rate,
                step_size=part.step_size,
                tempering=part.tempering,
                seconds=np.asarray(seconds),
            )
            bar.update(1)
    bar.close()


def _draw_arrays(positions, initial, c: int) -> dict:
    """What every sampler saves of one n's draws: phase ids of each draw and each start, 50 draws
    per chain for the t-SNE, and the ESS of the positions (zeros below 4 draws)."""
    W, b = np.asarray(positions.W), np.asarray(positions.b)
    num_chains, num_draws = W.shape[:2]
    classes = classify_batch(W.reshape(-1, 2, c), b.reshape(-1, c), max_distance=math.inf)
    init = classify_batch(np.asarray(initial.W), np.asarray(initial.b), max_distance=math.inf)
    thin = max(1, num_draws // 50)
    flat = np.concatenate([W.reshape(num_chains, num_draws, -1), b], axis=-1)
    return dict(
        ids=np.asarray(classes.ids).reshape(num_chains, num_draws),
        init_ids=np.asarray(init.ids),
        W=W[:, ::thin],
        b=b[:, ::thin],
        positions_ess=diagnostics.effective_sample_size(flat)
        if num_draws >= 4
        else np.zeros(3 * c),
    )


def save_tempering_size(store: ResultStore, n: int, part, c: int, seconds: float) -> None:
    """The β = 1 draws of every chain of one n, classified, with the ladder's diagnostics."""
    start = jax.tree.map(lambda a: np.asarray(a)[:, 0], part.initial_positions)  # the β = 1 copy
    store.save_arrays(
        f"n_{n:05d}",
        **_draw_arrays(part.positions, start, c),
        loglikelihood=np.asarray(part.loglikelihood),
        betas=np.asarray(part.betas),
        step_size=np.asarray(part.step_size),
        acceptance_rate=np.asarray(part.acceptance_rate),
        swap_acceptance=np.asarray(part.swap_acceptance),
        num_round_trips=np.asarray(part.num_round_trips),
        num_divergent=np.asarray(part.num_divergent),
        seconds=np.asarray(seconds),
    )


def save_size(store: ResultStore, n: int, part, c: int, seconds: float) -> None:
    store.save_arrays(
        f"n_{n:05d}",
        **_draw_arrays(part.positions, part.initial_positions, c),
        is_divergent=np.asarray(part.info.is_divergent),
        tree_depth=np.asarray(part.info.tree_depth),
        num_integration_steps=np.asarray(part.info.num_integration_steps),
        acceptance_rate=np.asarray(part.info.acceptance_rate),
        logdensity=np.asarray(part.info.logdensity),
        step_size=np.asarray(part.step_size),
        warmup_divergences=np.asarray(part.warmup_divergences),
        seconds=np.asarray(seconds),
    )


def analyse(settings: dict, store: ResultStore) -> dict:
    c = settings["num_features"]
    sizes = settings["sizes"]
    table = list(phase_labels(c))
    theory_phases = theory.catalogue_phases(c, settings["llc_estimates"])
    tlabels = [p.label for p in theory_phases]
    phases = sampled_phases(c, tlabels)
    shown = phases + ["other"]
    occupancy = {label: [] for label in shown}
    errors = {label: [] for label in shown}
    per_n = []
    for n in sizes:
        data = store.load_arrays(f"n_{n:05d}")
        ids = data["ids"]
        labels = np.asarray(table, dtype=object)[ids]
        occupancy_ess = {}
        for label in shown:
            indicator = ~np.isin(labels, phases) if label == "other" else labels == label
            p, se, ess = diagnostics.occupancy_with_error(indicator)
            occupancy[label].append(p)
            errors[label].append(se)
            occupancy_ess[label] = ess
        counts = {lab: int(np.sum(labels == lab)) for lab in table if np.any(labels == lab)}
        if settings["sampler"] == "tempering":
            switches = phase_switches(ids)
            copies = len(data["betas"][0])
            per_n.append(
                {
                    "n": n,
                    "counts": counts,
                    "occupancy_ess": occupancy_ess,
                    "phase_switches_per_chain_mean": float(switches.mean()),
                    "chains_that_switched": int(np.sum(switches > 0)),
                    "beta_min": float(data["betas"][0, 0]),
                    "min_swap_acceptance": float(data["swap_acceptance"].min())
                    if copies > 1
                    else float("nan"),
                    "mean_swap_acceptance": float(data["swap_acceptance"].mean())
                    if copies > 1
                    else float("nan"),
                    "round_trips_per_chain_mean": float(data["num_round_trips"].mean()),
                    "mean_acceptance": float(data["acceptance_rate"].mean()),
                    "num_divergent": int(data["num_divergent"].sum()),
                    # K copies × L leapfrog steps per round, one β = 1 draw per round.
                    "gradients_per_draw": copies * settings["leapfrog_steps"],
                    "min_position_ess": float(np.nanmin(data["positions_ess"])),
                    "seconds": float(data["seconds"]),
                }
            )
            continue
        if settings["sampler"] == "smc":
            per_n.append(
                {
                    "n": n,
                    "counts": counts,
                    "occupancy_ess": occupancy_ess,
                    "log_evidence_per_replicate": data["log_evidence"].tolist(),
                    "tempering_steps_mean": float(data["num_steps"].mean()),
                    "mean_acceptance": float(np.nanmean(data["acceptance_rate"])),
                    "seconds": float(data["seconds"]),
                }
            )
            continue
        switches = phase_switches(ids)
        per_n.append(
            {
                "n": n,
                "counts": counts,
                "occupancy_ess": occupancy_ess,
                "phase_switches_per_chain_mean": float(switches.mean()),
                "chains_that_switched": int(np.sum(switches > 0)),
                "final_phase_by_init": {
                    table[i]: dict(
                        zip(*np.unique(labels[data["init_ids"] == i, -1], return_counts=True))
                    )
                    for i in np.unique(data["init_ids"])
                },
                "num_divergent": int(data["is_divergent"].sum()),
                "warmup_divergences": int(data["warmup_divergences"].sum()),
                "mean_tree_depth": float(data["tree_depth"].mean()),
                "max_tree_depth": int(data["tree_depth"].max()),
                "mean_acceptance": float(data["acceptance_rate"].mean()),
                "mean_step_size": float(data["step_size"].mean()),
                "lockstep_efficiency": lockstep_efficiency(data["num_integration_steps"]),
                # A vmapped draw costs the longest trajectory of its batch; this is the mean.
                "gradients_per_draw": float(data["num_integration_steps"].mean()),
                "min_position_ess": float(np.nanmin(data["positions_ess"])),
                "seconds": float(data["seconds"]),
            }
        )
    n_grid = np.geomspace(min(sizes) * 0.8, max(sizes) * 1.25, 200)

    def theory_occupancy_at(n):
        if not theory_phases:
            return np.zeros((len(n), 0))
        scales = dict(temperature=settings["temperature"], prior_std=settings["prior_std"])
        return theory.theoretical_occupancy(n, theory_phases, **scales)

    theory_occupancy = theory_occupancy_at(n_grid)
    theory_at_sizes = theory_occupancy_at(sizes)
    theoretical_crossings = theory.all_crossings(
        theory_phases, temperature=settings["temperature"], prior_std=settings["prior_std"]
    )
    # Every pair of reported phases, the higher-loss one first (c = 5: 4 -> 5, whose λ has no
    # closed form, so no theoretical crossing stands beside it).
    loss = {point.label: point.loss for point in critical_points(c)}
    empirical_crossings = {}
    for high in phases:
        for low in phases:
            if loss[low] < loss[high]:
                n_c = theory.empirical_crossing(sizes, occupancy[high], occupancy[low])
                if np.isfinite(n_c):
                    empirical_crossings[f"{high}->{low}"] = n_c
    summary = {
        "num_features": c,
        "sizes": sizes,
        "sampler": settings["sampler"],
        "init": settings["init"],
        "occupancy": occupancy,
        "occupancy_stderr": errors,
        "theoretical_occupancy": {lab: theory_at_sizes[:, i] for i, lab in enumerate(tlabels)},
        "theory_phases": [p._asdict() for p in theory_phases],
        "theoretical_crossings": theoretical_crossings,
        "empirical_crossings": empirical_crossings,
        "theory_leading_order": leading_order_theory(c, settings),
        "crossing_note": CROSSING_NOTE,
        "diagnostics": {
            "per_n": per_n,
            "total_seconds": sum(r["seconds"] for r in per_n),
            **sampler_totals(settings["sampler"], per_n),
        },
    }
    store.write_summary(summary)
    store.save_figure(
        "occupancy.png",
        occupancy_figure(sizes, occupancy, errors, n_grid, theory_occupancy, tlabels, summary, c),
    )
    if settings["tsne_points"] > 0:
        store.save_figure("tsne.png", tsne_figure(store, sizes, table, c, settings))
    return summary


def sampler_totals(sampler: str, per_n: list) -> dict:
    """Sweep-wide sampler diagnostics for summary.json."""
    if sampler == "smc":
        return {}
    totals = {"total_divergent": sum(r["num_divergent"] for r in per_n)}
    if sampler == "tempering":
        swaps = [r["min_swap_acceptance"] for r in per_n if np.isfinite(r["min_swap_acceptance"])]
        totals["min_swap_acceptance"] = min(swaps) if swaps else float("nan")  # K = 1: no swaps
        totals["total_round_trips_per_chain"] = float(
            sum(r["round_trips_per_chain_mean"] for r in per_n)
        )
        return totals
    totals["mean_lockstep_efficiency"] = float(np.mean([r["lockstep_efficiency"] for r in per_n]))
    return totals


CROSSING_NOTE = (
    "The theoretical crossings come from the leading-order free energy F_n = nL + lambda log n + "
    "c, c = |w*|^2/2 (docs/paper_numbers.md §5): 5->6 at n = 601 (445 without the constant c). "
    "The posterior itself crosses earlier on most dataset draws, and that is not a sampler "
    "artefact: tempered SMC from the prior (--sampler smc), which never needs a chain to cross "
    "between phases, gives the same occupancies as NUTS. Measured phase by phase (python -m "
    "experiments.local_free_energy: F_alpha by tempered SMC with phases frozen above n = 100, "
    "reproducing the sampled occupancies), the gap F_alpha - [nL + lambda log n] at n = 500 is, "
    "6-gon / 5-gon in nats: data loss at the best copy -0.1 / -2.2, prior |w*|^2/2 +6.4 / +3.6, "
    "MAP shift -0.7 / -0.2, Hessian of the curved directions -8.9 / -6.1, rotation orbit -3.0 / "
    "-2.8, labelled copies -4.8 / -3.8, dead column volume 0 / +3.0, remainder -1.6 / -2.9 (the "
    "Laplace estimate misses by the remainder: -4.4 to +0.6 nats for the 6-gon, -9.9 to +6.1 for "
    "the 5-gon over 13 draws, anticorrelated with the dataset's own term). Near the crossing one "
    "nat moves n_c by ~67; the measured local free energies put n_c within 30 of the sampled one "
    "on 11 of 12 draws, the Laplace formula on none. The dataset matters too: at "
    "finite n the 5-gon picks the dead feature whose samples cost least, the data's share of the "
    "6-vs-5 log-odds ranges from -1 to -6.5 nats, and the crossing moves by ~100 between dataset "
    "draws (use --dataset-seeds; docs/paper_numbers.md §5)."
)


def leading_order_theory(c: int, settings: dict) -> dict:
    """The leading-order free-energy numbers behind the theoretical crossings, for readers of
    summary.json."""
    phases = theory.catalogue_phases(c, settings["llc_estimates"])
    labels = [p.label for p in phases]
    kwargs = dict(temperature=settings["temperature"], prior_std=settings["prior_std"])
    out = {
        "formula": "F_n = (n/T) L + lambda log(n/T) + |w*|^2 / (2 sigma^2)",
        "phases": {p.label: {"loss": p.loss, "llc": p.llc, "constant": p.constant} for p in phases},
    }
    if "5" in labels and "6" in labels:
        by_label = {p.label: p for p in phases}
        out["crossing_5_to_6"] = theory.crossing(by_label["5"], by_label["6"], **kwargs)
        out["crossing_5_to_6_without_constant"] = theory.crossing(
            by_label["5"], by_label["6"], include_constant=False, **kwargs
        )
        # The 5-gon's dead column ranges over a region of prior mass ~0.0142 that the formula omits.
        out["crossing_5_to_6_with_dead_column_prior_mass"] = theory.crossing(
            by_label["5"]._replace(constant=by_label["5"].constant - math.log(0.0142)),
            by_label["6"],
            **kwargs,
        )
    if "5+" in labels and "6" in labels:
        by_label = {p.label: p for p in phases}
        out["crossing_5plus_to_6"] = theory.crossing(by_label["5+"], by_label["6"], **kwargs)
    return out


def occupancy_figure(sizes, occupancy, errors, n_grid, theory_occupancy, tlabels, summary, c):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    colors = phase_colors([label for label in occupancy if label != "other"] + ["unknown"])
    colors["other"] = colors["unknown"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, label in enumerate(tlabels):
        ax.plot(
            n_grid,
            theory_occupancy[:, i],
            color=colors[label],
            lw=2.5,
            alpha=0.8,
            label=f"theory {pretty_label(label)}",
        )
    for label in occupancy:
        if label == "other" and max(occupancy[label]) == 0:
            continue
        name = "other phases" if label == "other" else pretty_label(label)
        ax.errorbar(
            sizes,
            occupancy[label],
            yerr=errors[label],
            fmt="o",
            ms=6,
            capsize=3,
            color=colors[label],
            mec="black",
            mew=0.6,
            label=f"{summary['sampler'].upper()} {name}",
        )
    for key, n_c in summary["theoretical_crossings"].items():
        if n_grid[0] <= n_c <= n_grid[-1]:
            ax.axvline(n_c, color="grey", ls=":", lw=1)
            ax.text(
                n_c,
                1.02,
                f"{key}\n$n_c$={n_c:.0f}",
                ha="center",
                va="bottom",
                fontsize=8,
                color="grey",
            )
    ax.set_xscale("log")
    ax.set_xlabel("number of samples n")
    ax.set_ylabel("posterior occupancy")
    ax.set_ylim(-0.03, 1.12)
    ax.set_title(
        f"Bayesian phase transitions, TMS c = {c} ({summary['sampler'].upper()}, "
        f"empirical 5→6: {summary['empirical_crossings'].get('5->6', float('nan')):.0f})",
        pad=28,
    )
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3, which="both")
    return fig


def tsne_figure(store, sizes, table, c, settings):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    Ws, bs, ids = [], [], []
    for n in sizes:
        data = store.load_arrays(f"n_{n:05d}")
        thin_ids = data["ids"][:, :: max(1, data["ids"].shape[1] // 50)][:, : data["W"].shape[1]]
        Ws.append(data["W"].reshape(-1, 2, c))
        bs.append(data["b"].reshape(-1, c))
        ids.append(thin_ids.reshape(-1))
    W, b, ids = np.concatenate(Ws), np.concatenate(bs), np.concatenate(ids)
    rng = np.random.default_rng(settings["seed"])
    keep = rng.choice(len(ids), size=min(settings["tsne_points"], len(ids)), replace=False)
    Wc, bc = canonicalize(jnp.asarray(W[keep]), jnp.asarray(b[keep]))
    features = np.concatenate([np.asarray(Wc).reshape(len(keep), -1), np.asarray(bc)], axis=1)
    perplexity = float(min(30, max(2, (len(keep) - 1) / 3)))
    embedding = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=settings["seed"]
    ).fit_transform(features)
    labels = np.asarray(table, dtype=object)[ids[keep]]
    colors = phase_colors(list(table))
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for label in table:
        mask = labels == label
        if np.any(mask):
            ax.scatter(
                *embedding[mask].T,
                s=8,
                color=colors[label],
                label=f"{pretty_label(label)} ({mask.sum()})",
            )
    ax.set_title(f"t-SNE of canonicalised {settings['sampler'].upper()} samples, coloured by phase")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, markerscale=2, loc="best")
    return fig


def main(args) -> dict:
    if args.num_features is None:
        # The paper's three systems, each in its own folder: c = 6 (n to 2000), c = 5 and 4
        # (n to 600).
        summaries = {}
        for c in (6, 5, 4):
            sub = argparse.Namespace(
                **{
                    **vars(args),
                    "num_features": c,
                    "out": f"{args.out}/c{c}",
                    "sizes": PAPER_SMALL_C_SIZES
                    if c != 6 and args.sizes == PRESETS["paper"]["sizes"]
                    else args.sizes,
                }
            )
            summaries[c] = main(sub)
        return summaries
    if args.dataset_seeds:
        return main_over_datasets(args)
    settings = settings_from_args(args)
    store = ResultStore(args.out)
    store.write_config(settings)
    run_sweep(settings, store, progress=args.progress)
    summary = analyse(settings, store)
    print(
        json.dumps(
            {k: summary[k] for k in ("occupancy", "theoretical_crossings", "empirical_crossings")},
            indent=1,
            default=float,
        )
    )
    return summary


def main_over_datasets(args) -> dict:
    """One run per dataset seed in DIR/seed_S (data and chains keyed by S), then the crossings as
    mean ± spread over dataset draws in DIR/summary.json."""
    seeds = sorted({int(s) for s in str(args.dataset_seeds).split(",")})
    per_seed = {}
    for seed in seeds:
        sub = argparse.Namespace(
            **{**vars(args), "dataset_seeds": None, "seed": seed, "out": f"{args.out}/seed_{seed}"}
        )
        per_seed[seed] = main(sub)
    first = per_seed[seeds[0]]
    keys = sorted({k for summary in per_seed.values() for k in summary["empirical_crossings"]})
    crossings = {}
    for key in keys:
        values = [per_seed[s]["empirical_crossings"].get(key, float("nan")) for s in seeds]
        found = [v for v in values if np.isfinite(v)]
        crossings[key] = {
            "per_seed": dict(zip(map(str, seeds), values)),
            "mean": float(np.mean(found)) if found else float("nan"),
            # Sample standard deviation over dataset draws (NaN with one draw); seeds without a
            # crossing inside the n range are left out and counted.
            "std": float(np.std(found, ddof=1)) if len(found) > 1 else float("nan"),
            "num_seeds_with_crossing": len(found),
        }
    summary = {
        "num_features": first["num_features"],
        "sizes": first["sizes"],
        "sampler": first["sampler"],
        "dataset_seeds": seeds,
        "empirical_crossings_over_datasets": crossings,
        "occupancy_per_seed": {str(s): per_seed[s]["occupancy"] for s in seeds},
        "occupancy_stderr_per_seed": {str(s): per_seed[s]["occupancy_stderr"] for s in seeds},
        "theoretical_crossings": first["theoretical_crossings"],
        "theory_leading_order": first["theory_leading_order"],
        "crossing_note": CROSSING_NOTE,
        "total_seconds": float(sum(per_seed[s]["diagnostics"]["total_seconds"] for s in seeds)),
    }
    store = ResultStore(args.out)
    store.write_summary(summary)
    store.save_figure("occupancy_over_datasets.png", datasets_figure(summary))
    print(json.dumps({"empirical_crossings_over_datasets": crossings}, indent=1, default=float))
    return summary


def datasets_figure(summary):
    """5-gon and 6-gon occupancy against n, one line per dataset seed, with the crossings marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = summary["sizes"]
    for index, seed in enumerate(summary["dataset_seeds"]):
        occupancy, errors = (
            summary["occupancy_per_seed"][str(seed)],
            summary["occupancy_stderr_per_seed"][str(seed)],
        )
        for label, style in (("6", "-o"), ("5", "--s")):
            if label in occupancy:
                ax.errorbar(
                    sizes,
                    occupancy[label],
                    yerr=errors[label],
                    fmt=style,
                    color=f"C{index}",
                    ms=4,
                    capsize=2,
                    label=f"seed {seed}: {label}-gon",
                )
    crossing = summary["empirical_crossings_over_datasets"].get("5->6")
    if crossing and np.isfinite(crossing["mean"]):
        ax.axvspan(
            crossing["mean"] - np.nan_to_num(crossing["std"]),
            crossing["mean"] + np.nan_to_num(crossing["std"]),
            color="grey",
            alpha=0.2,
            label=f"empirical 5->6: {crossing['mean']:.0f}",
        )
    theory_n = summary["theoretical_crossings"].get("5->6")
    if theory_n:
        ax.axvline(theory_n, color="black", ls=":", label=f"leading-order theory: {theory_n:.0f}")
    ax.set_xscale("log")
    ax.set_xlabel("number of samples n")
    ax.set_ylabel("posterior occupancy")
    ax.set_title("5-gon vs 6-gon occupancy over dataset draws")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3, which="both")
    return fig


if __name__ == "__main__":
    common.run_module(sys.modules[__name__])
