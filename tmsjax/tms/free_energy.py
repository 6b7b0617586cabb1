r"""Local free energies of the TMS phases, measured: :math:`F_\alpha(n)` per phase and dataset size.

.. math:: F_\alpha(n) = -\log \int_{\alpha} \varphi(w)\, e^{-nL_n(w)}\, dw,

the integral over the basin of phase α as the classifier draws it
(:func:`tmsjax.tms.phases.make_classifier` with ``max_distance=inf``: hull-vertex count and bias
signs, so the basins partition parameter space), φ = N(0, I), and the unhalved loss of
:mod:`tmsjax.tms.posterior` on the first n rows of one dataset draw. The posterior mass of phase
α is :math:`e^{-F_\alpha} / \sum_\beta e^{-F_\beta}`, the quantity the free energy formula
:math:`nL + \lambda\log n + c` approximates.

Measured by :func:`tmsjax.sampling.evidence.local_log_evidence`: adaptive tempered SMC from the
prior through :math:`\varphi e^{-\beta nL_n}`, whose moves are free while the posterior is hot
(β n below ``freeze_size``, where chains cross between phases freely) and from then on rejected
whenever they would change a particle's phase. Above the freeze no particle crosses from one phase
to another, so the estimate does not depend on how often a sampler switches phase: the mass each
phase held at the hot end is carried to β = 1 by reweighting alone. A Metropolis move that
transposes two features (prior, classifier and population loss are permutation invariant; only
the data break the symmetry) keeps each phase's labelled copies (which feature is dead, the cyclic
order of the vertices) in their right proportions as barriers between them rise. Error bars: the
spread of independent SMC runs. ``freeze_size=inf`` is plain tempered SMC, the reference whose
occupancies the local free energies must reproduce.
"""

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tmsjax.checks import check_positive_int
from tmsjax.sampling.evidence import LocalEvidence, local_log_evidence
from tmsjax.tms.data import sparse_limit_stats
from tmsjax.tms.model import TMSParams
from tmsjax.tms.phases import classify_batch, make_classifier, phase_labels
from tmsjax.tms.posterior import log_likelihood, log_prior
from tmsjax.types import Array, Float


class LocalFreeEnergies(NamedTuple):
    r"""Measured local free energies, axes (sizes, phases).

    Attributes:
      sizes: the dataset sizes n.
      labels: the phases (catalogue labels).
      free_energy: :math:`F_\alpha(n)` (nats, prior normalised).
      standard_error: its Monte Carlo standard error.
      evidence: the engine's :class:`~tmsjax.sampling.evidence.LocalEvidence` (replicates, prior
        masses, tempering steps).
    """

    sizes: np.ndarray
    labels: tuple[str, ...]
    free_energy: Float[Array, "sizes phases"]
    standard_error: Float[Array, "sizes phases"]
    evidence: LocalEvidence

    def occupancy(self) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mass of each phase, :math:`e^{-F_\\alpha}` normalised over the measured phases,
        and its standard error (delta method, the phases' errors independent): (sizes, phases)."""
        return occupancy_from_free_energies(self.free_energy, self.standard_error)


def occupancy_from_free_energies(free_energy, standard_error) -> tuple[np.ndarray, np.ndarray]:
    r"""Softmax of :math:`-F` over the last axis, with the delta-method error
    :math:`\mathrm{se}(p_\alpha)^2 = \sum_\beta (\partial p_\alpha/\partial F_\beta)^2
    \mathrm{se}_\beta^2`, :math:`\partial p_\alpha/\partial F_\beta = -p_\alpha(\delta_{\alpha\beta}
    - p_\beta)`."""
    F = np.asarray(free_energy, np.float64)
    se = np.asarray(standard_error, np.float64)
    se = np.where(np.isinf(F), 0.0, se)  # an empty phase: p = 0, and no error to carry
    logits = -F - np.max(-F, axis=-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=-1, keepdims=True)
    eye = np.eye(F.shape[-1])
    jac = -p[..., :, None] * (eye - p[..., None, :])  # [..., α, β]
    return p, np.sqrt(np.sum(jac**2 * se[..., None, :] ** 2, axis=-1))


def local_free_energies(
    key,
    x,
    sizes: Sequence[int],
    *,
    freeze_size=100.0,
    num_particles: int = 512,
    num_replicates: int = 4,
    prior_std: float = 1.0,
    num_mcmc_steps: int = 5,
    num_integration_steps: int = 8,
    target_ess: float = 0.5,
    num_symmetry_moves: int = 2,
    freeze_by: str = "phase",
) -> LocalFreeEnergies:
    r"""Local free energies :math:`F_\alpha(n)` of every classifier phase on nested datasets of `x`.

    Args:
      key: PRNG key.
      x: (n_max, c) one-hot high-sparsity-limit rows; n uses the first n
        (:func:`tmsjax.tms.data.sample_sparse_limit`).
      sizes: dataset sizes n (one SMC target each; repeat an n to run it with two freeze sizes).
      freeze_size: per size or one for all: phases freeze at β₀ = freeze_size / n (the tempered
        posterior of freeze_size samples); inf never freezes (plain tempered SMC, the reference).
      num_particles, num_replicates: SMC particles per run, and independent runs per target.
      prior_std: σ of the N(0, σ²I) prior.
      num_mcmc_steps, num_integration_steps, target_ess: the SMC settings
        (:func:`tmsjax.sampling.smc.build_tempered_smc`).
      num_symmetry_moves: Metropolis feature-transposition moves after each HMC move; 0: none.
      freeze_by: "phase" (no move may change the classifier's label above the freeze) or
        "vertices" (no move may change the hull-vertex count k; moves between 5 and 5⁺, which
        differ only by the sign of the dead column's bias, a flat direction with no barrier, stay
        allowed). Either way F_α comes from the final particles' phase labels.

    Returns:
      :class:`LocalFreeEnergies` over every label of :func:`tmsjax.tms.phases.phase_labels`
      ("unknown" included, so the phases partition parameter space); F = inf where no particle
      ended in a phase.

    Raises:
      ValueError: on a bad x, a non-positive count, size, freeze_size or prior_std.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be (n_max, c), got shape {x.shape}")
    c = x.shape[1]
    if not (math.isfinite(prior_std) and prior_std > 0):
        raise ValueError(f"prior_std must be positive and finite, got {prior_std!r}")
    if freeze_by not in ("phase", "vertices"):
        raise ValueError(f"freeze_by must be 'phase' or 'vertices', got {freeze_by!r}")
    sizes = [check_positive_int("sizes", n) for n in sizes]
    freeze_size = np.broadcast_to(np.asarray(freeze_size, np.float64), (len(sizes),))
    if not (freeze_size > 0).all():
        raise ValueError(f"freeze_size must be positive (inf allowed), got {freeze_size.tolist()}")
    table = phase_labels(c)  # after the checks: the first call builds the critical-point catalogue
    num_slots = int(np.bincount(x.argmax(axis=1), minlength=c).max())
    stats = sparse_limit_stats(x, sizes, num_slots=num_slots)
    classify_one = make_classifier(c, max_distance=math.inf)
    # Phase id -> the id the freeze compares: itself, or its hull-vertex count ("unknown": -1).
    group = np.arange(len(table))
    if freeze_by == "vertices":
        group = np.array([int(label.rstrip("+-")) if label[0].isdigit() else -1 for label in table])

    def sample_prior(key, num):
        k_w, k_b = jax.random.split(key)
        return TMSParams(
            prior_std * jax.random.normal(k_w, (num, 2, c)),
            prior_std * jax.random.normal(k_b, (num, c)),
        )

    def transpose_features(key, params):
        # A uniform pair i ≠ j: a symmetric proposal; prior and classifier are permutation
        # invariant, only the data tell labelled copies apart.
        i, j = jax.random.choice(key, c, (2,), replace=False)
        order = jnp.arange(c).at[i].set(j).at[j].set(i)
        return TMSParams(params.W[:, order], params.b[order])

    def batch_region(params):
        return classify_batch(params.W, params.b, max_distance=math.inf).ids

    symmetry = (
        dict(symmetry_fn=transpose_features, num_symmetry_moves=num_symmetry_moves)
        if num_symmetry_moves
        else {}
    )
    result = local_log_evidence(
        key,
        sample_prior,
        lambda w: log_prior(w, prior_std),
        log_likelihood,
        lambda w: jnp.asarray(group)[classify_one(w.W, w.b)[0]],
        stats,
        list(range(len(table))),
        freeze_size / np.asarray(sizes, np.float64),
        num_particles=num_particles,
        num_replicates=num_replicates,
        batch_region_fn=batch_region,
        num_mcmc_steps=num_mcmc_steps,
        num_integration_steps=num_integration_steps,
        target_ess=target_ess,
        **symmetry,
    )
    return LocalFreeEnergies(
        sizes=np.asarray(sizes),
        labels=table,
        free_energy=-np.asarray(result.log_evidence),
        standard_error=np.asarray(result.standard_error),
        evidence=result,
    )


__all__ = ["LocalFreeEnergies", "local_free_energies", "occupancy_from_free_energies"]
