r"""Local evidence: the posterior mass of each region of parameter space, without chains crossing.

For a prior φ, a log likelihood ℓ and a partition of parameter space into regions A (phases,
basins: whatever ``region_fn`` returns), the *local evidence* and *local free energy* are

.. math:: Z_A = \int_A \varphi(w)\, e^{\ell(w)}\, dw, \qquad F_A = -\log Z_A,

and the posterior mass of A is :math:`Z_A / \sum_B Z_B`. A sampler of the whole posterior measures
that mass by how long its chains stay in A, which needs them to cross between regions. Here the
regions are *frozen* from a tempering β₀ on: adaptive tempered SMC from the prior
(:func:`tmsjax.sampling.smc.build_tempered_smc`) through :math:`\varphi e^{\beta\ell}`, whose
mutation moves are free below β₀ and rejected above it whenever they would change a particle's
region. From β₀ to 1 each region's particles are moved by a kernel that preserves
:math:`\varphi 1_A e^{\beta\ell}`, so

.. math:: \hat Z_A = \hat Z \cdot \hat s_A,

the evidence estimate times the share of region A among the final (equally weighted) particles, is
the SMC estimate of :math:`Z_A(\beta_0)\,\prod_t \overline{w}_{A,t}`: the mass the region held at
β₀ carried to β = 1 by reweighting alone. No particle crosses between regions above β₀, so barriers
between regions cost nothing; choose β₀ where they are still low (a "hot" temperature at which an
unrestricted sampler mixes), or β₀ = 0 (regions frozen from the prior, :math:`\hat s_A(0)` the prior
mass). β₀ = ∞ never freezes: plain tempered SMC, the reference whose moves may cross.

Errors. SMC's evidence estimate is unbiased for Z (not for log Z), so ``num_replicates``
independent runs are averaged in Z, and the standard error of :math:`\log\bar Z_A` is the delta
method's :math:`\mathrm{sd}(\hat Z_{A,r})/(\sqrt R\,\bar Z_A)`; it contains every Monte Carlo error
(reweighting, resampling, the share's multinomial noise). The one assumption is that the moves mix
*within* each region at every β well enough for the resampled particles to represent
:math:`\pi_{\beta,A}`; a ``symmetry_fn`` (see :func:`~tmsjax.sampling.smc.build_tempered_smc`)
moves particles between symmetric copies of a mode inside a region.

Nothing here knows about TMS; the TMS wing applies it per phase in :mod:`tmsjax.tms.free_energy`.

References:
  Del Moral, Doucet, Jasra (2006), "Sequential Monte Carlo samplers", JRSS B (the evidence
  estimator and its unbiasedness).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tmsjax.checks import check_positive_int
from tmsjax.sampling.smc import SMCResult, make_smc_sweep
from tmsjax.types import Array, Float, Int, PRNGKey, PyTree


class LocalEvidence(NamedTuple):
    r"""Local log evidences of regions (leading axes: targets, regions).

    Attributes:
      log_evidence: :math:`\log\bar Z_A`, (targets, regions); −inf where no particle ended in A.
      standard_error: its Monte Carlo standard error (NaN with fewer than 2 replicates, or where a
        region is empty).
      log_total: :math:`\log\bar Z` of the whole space, (targets,), and its error `total_error`.
      total_error: see `log_total`.
      share: each replicate's share of the final particles in each region, (targets, regions,
        replicates).
      replicate_log_evidence: each replicate's :math:`\log\hat Z`, (targets, replicates).
      num_steps: tempering steps each replicate took, (targets, replicates).
    """

    log_evidence: Float[Array, "targets regions"]
    standard_error: Float[Array, "targets regions"]
    log_total: Float[Array, " targets"]
    total_error: Float[Array, " targets"]
    share: Float[Array, "targets regions replicates"]
    replicate_log_evidence: Float[Array, "targets replicates"]
    num_steps: Int[Array, "targets replicates"]


def combine_replicates(log_evidence_replicates, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    r"""Average independent SMC evidence estimates in Z (SMC is unbiased for Z, not log Z):
    :math:`\log\bar Z` and the delta-method error :math:`\mathrm{sd}(Z_r)/(\sqrt R\,\bar Z)`.
    All −inf gives −inf with a NaN error."""
    logz = np.moveaxis(np.asarray(log_evidence_replicates, dtype=np.float64), axis, -1)
    num = logz.shape[-1]
    top = logz.max(axis=-1, keepdims=True)
    safe_top = np.where(np.isfinite(top), top, 0.0)
    scaled = np.exp(logz - safe_top)
    mean = scaled.mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mean = np.log(mean) + safe_top[..., 0]
        if num < 2:
            return log_mean, np.full_like(log_mean, np.nan)
        error = scaled.std(axis=-1, ddof=1) / (np.sqrt(num) * mean)
    return log_mean, np.where(mean > 0, error, np.nan)


def make_frozen_region_sweep(
    logprior_fn: Callable[[PyTree], Float[Array, ""]],
    loglikelihood_fn: Callable[[PyTree, PyTree], Float[Array, ""]],
    region_fn: Callable[[PyTree], Int[Array, ""]],
    **smc_settings,
) -> Callable[[PRNGKey, PyTree, PyTree, Array], SMCResult]:
    """A jitted sweep of tempered SMC runs with regions frozen from β₀ on:
    ``(keys (G,), particles (G, P, ...), data (G, ...), freeze_beta (G,)) -> SMCResult``.

    Grid element g runs SMC from the prior to :math:`\\varphi e^{\\ell(\\cdot;\\,\\mathrm{data}_g)}`
    whose moves at β ≥ ``freeze_beta[g]`` are rejected when ``region_fn`` of the new position
    differs from the old one's (``freeze_beta`` = inf: plain tempered SMC). `smc_settings` are those
    of :func:`tmsjax.sampling.smc.build_tempered_smc`.
    """

    def constraint(old, new, data, beta):
        return (beta < data[1]) | (region_fn(new) == region_fn(old))

    def loglikelihood(position, data):
        return loglikelihood_fn(position, data[0])

    sweep = make_smc_sweep(logprior_fn, loglikelihood, constraint_fn=constraint, **smc_settings)

    def run(keys, particles, data, freeze_beta):
        dtype = jax.tree.leaves(particles)[0].dtype
        return sweep(keys, particles, (data, jnp.asarray(freeze_beta, dtype)))

    return run


def local_log_evidence(
    key: PRNGKey,
    sample_prior_fn: Callable[[PRNGKey, int], PyTree],
    logprior_fn: Callable[[PyTree], Float[Array, ""]],
    loglikelihood_fn: Callable[[PyTree, PyTree], Float[Array, ""]],
    region_fn: Callable[[PyTree], Int[Array, ""]],
    data: PyTree,
    regions,
    freeze_beta,
    *,
    num_particles: int = 512,
    num_replicates: int = 4,
    batch_region_fn: Callable[[PyTree], Array] | None = None,
    **smc_settings,
) -> LocalEvidence:
    r"""Local log evidences :math:`\log Z_A(\mathrm{data}_t)` of regions A for every target t.

    Args:
      key: PRNG key (prior draws and SMC runs).
      sample_prior_fn: ``(key, num) -> particles`` with a leading axis of `num` prior draws.
      logprior_fn: log density of that prior at one position (normalisation irrelevant).
      loglikelihood_fn: ``(position, data_t) -> ℓ``.
      region_fn: ``position -> int`` region id of one position (jittable).
      data: the targets, every leaf with a leading axis T.
      regions: the region ids to report (a sequence of ints; other regions still hold particles).
      freeze_beta: β₀ per target (T,) or one for all: from β₀ on no move changes a particle's
        region; 0 freezes them from the prior, inf never (plain tempered SMC).
      num_particles: particles per SMC run.
      num_replicates: independent SMC runs per target, for the error bar.
      batch_region_fn: ``particles (N, ...) -> ids (N,)``, the regions reported (`regions` are its
        ids); default ``vmap(region_fn)``. It may be finer than `region_fn`, which only sets what
        the frozen moves preserve: the SMC stays valid for the whole target either way, so
        :math:`\hat Z \hat s_A` estimates :math:`Z_A` for any A; what freezing buys is that no
        particle crosses a `region_fn` boundary above β₀.
      **smc_settings: passed to :func:`tmsjax.sampling.smc.build_tempered_smc` (e.g. a
        ``symmetry_fn`` that moves particles between symmetric copies of a mode inside a region).

    Returns:
      :class:`LocalEvidence` with leading axes (T, len(regions)).

    Raises:
      ValueError: on a non-positive count, an empty `regions`, or a negative or NaN freeze_beta.
    """
    num_particles = check_positive_int("num_particles", num_particles)
    num_replicates = check_positive_int("num_replicates", num_replicates)
    regions = [int(r) for r in regions]
    if not regions:
        raise ValueError("regions must name at least one region id")
    num_targets = jax.tree.leaves(data)[0].shape[0]
    freeze_beta = np.asarray(freeze_beta, np.float64)
    if freeze_beta.ndim > 1 or freeze_beta.size not in (1, num_targets):
        raise ValueError(
            f"freeze_beta must be one value or one per target ({num_targets}), got shape "
            f"{freeze_beta.shape}"
        )
    freeze_beta = np.broadcast_to(freeze_beta, (num_targets,))
    if np.isnan(freeze_beta).any() or (freeze_beta < 0).any():
        raise ValueError(f"freeze_beta must be ≥ 0 (inf allowed), got {freeze_beta.tolist()}")
    grid = num_targets * num_replicates
    key_prior, key_smc = jax.random.split(key)
    particles = jax.tree.map(
        lambda leaf: leaf.reshape(grid, num_particles, *leaf.shape[1:]),
        sample_prior_fn(key_prior, grid * num_particles),
    )
    grid_data = jax.tree.map(lambda leaf: jnp.repeat(leaf, num_replicates, axis=0), data)
    sweep = make_frozen_region_sweep(logprior_fn, loglikelihood_fn, region_fn, **smc_settings)
    result = sweep(
        jax.random.split(key_smc, grid),
        particles,
        grid_data,
        np.repeat(freeze_beta, num_replicates),
    )
    final = jax.tree.map(
        lambda leaf: leaf.reshape(grid * num_particles, *leaf.shape[2:]), result.particles
    )
    ids = np.asarray((batch_region_fn or jax.jit(jax.vmap(region_fn)))(final))
    ids = ids.reshape(num_targets, num_replicates, num_particles)
    share = np.stack([(ids == r).mean(axis=-1) for r in regions], axis=1)  # (T, regions, R)
    logz = np.asarray(result.log_evidence, np.float64).reshape(num_targets, num_replicates)
    with np.errstate(divide="ignore"):
        region_logz = logz[:, None, :] + np.log(share)
    log_evidence, error = combine_replicates(region_logz)
    log_total, total_error = combine_replicates(logz)
    return LocalEvidence(
        log_evidence=log_evidence,
        standard_error=error,
        log_total=log_total,
        total_error=total_error,
        share=share,
        replicate_log_evidence=logz,
        num_steps=np.asarray(result.num_steps).reshape(num_targets, num_replicates),
    )


__all__ = [
    "LocalEvidence",
    "combine_replicates",
    "local_log_evidence",
    "make_frozen_region_sweep",
]
