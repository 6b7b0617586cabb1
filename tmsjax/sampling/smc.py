r"""Adaptive tempered SMC sweeps: phase occupancies that do not rely on chains switching phase.

NUTS chains estimate a phase's posterior mass by how long they stay there, which needs them to cross
between phases many times. Near the 5 → 6 transition of TMS they cross a few times per thousand
draws at n ≥ 550, so the occupancy leans on where the chains started. Tempered sequential Monte
Carlo (Del Moral, Doucet, Jasra 2006) does not need crossings: particles drawn from the prior (where
every phase is reachable) are moved through the tempered posteriors

.. math:: \pi_\beta(w) \propto \varphi(w)\, e^{\beta \ell(w)},
          \qquad 0 = \beta_0 < \beta_1 < \dots < \beta_T = 1,

(ℓ the log likelihood, here −n L_n) by importance reweighting with
:math:`e^{(\beta_{t+1}-\beta_t)\ell}`, resampling, and a few HMC moves at each β. A phase's share of
the particles at β = 1 is a consistent estimate of its posterior mass whatever the barrier between
phases, and the product of the mean incremental weights estimates the evidence
:math:`\log \int \varphi\, e^{\ell}`.

Built on blackjax's ``adaptive_tempered_smc`` (the next β keeps the weights' ESS at ``target_ess``
of the particles) with a blackjax HMC mutation kernel whose diagonal mass matrix is the particles'
variance at the current β and whose step size follows the mean acceptance rate, as in blackjax's
tuned-SMC recipe. Like :mod:`tmsjax.sampling.nuts`, a sweep maps one compiled program over a grid of
targets (e.g. every dataset size n), and knows nothing about TMS.

References:
  Del Moral, Doucet, Jasra (2006), "Sequential Monte Carlo samplers", JRSS B.
  Buchholz, Chopin, Jacob (2021), "Adaptive tuning of Hamiltonian Monte Carlo within sequential
  Monte Carlo", Bayesian Analysis.
"""

from collections.abc import Callable
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc import resampling
from jax.flatten_util import ravel_pytree

from tmsjax.checks import check_positive_int
from tmsjax.sampling.nuts import _check_counts, _check_settings, _with_grid_checks
from tmsjax.types import Array, Bool, Float, Int, PRNGKey, PyTree


class SMCResult(NamedTuple):
    r"""Output of a tempered SMC run (leaves gain a leading grid axis in a sweep).

    Attributes:
      particles: equally weighted draws from the β = 1 posterior, leaves (num_particles, ...): the
        last weighted particle set, resampled once more.
      log_evidence: estimate of :math:`\log\int\varphi(w)e^{\ell(w)}dw` (prior normalised).
      num_steps: tempering steps taken.
      reached_target: whether β reached 1 within ``max_num_steps`` (False: the particles are *not*
        posterior draws; :func:`make_smc_sweep` raises on it).
      tempering: β after each step, padded with NaN past ``num_steps``.
      acceptance_rate: mean HMC acceptance of the mutation at each step, NaN-padded.
      step_size: HMC step size used at each step, NaN-padded.
    """

    particles: PyTree
    log_evidence: Float[Array, ""]
    num_steps: Int[Array, ""]
    reached_target: Bool[Array, ""]
    tempering: Float[Array, " max_num_steps"]
    acceptance_rate: Float[Array, " max_num_steps"]
    step_size: Float[Array, " max_num_steps"]


def build_tempered_smc(
    logprior_fn: Callable[[PyTree], Float[Array, ""]],
    loglikelihood_fn: Callable[[PyTree, PyTree], Float[Array, ""]],
    *,
    num_mcmc_steps: int = 10,
    num_integration_steps: int = 10,
    target_ess: float = 0.5,
    target_acceptance_rate: float = 0.75,
    initial_step_size: float = 0.1,
    max_num_steps: int = 500,
    constraint_fn: Callable[[PyTree, PyTree, PyTree, Float[Array, ""]], Bool[Array, ""]]
    | None = None,
    symmetry_fn: Callable[[PRNGKey, PyTree], PyTree] | None = None,
    num_symmetry_moves: int = 1,
) -> Callable[[PRNGKey, PyTree, PyTree], SMCResult]:
    r"""One SMC run ``(key, particles (num_particles, ...), data) -> SMCResult``; pure, vmappable.

    With a ``constraint_fn`` every move (HMC or symmetry) from w to w' at tempering β is rejected
    unless ``constraint_fn(w, w', data, β)`` holds. For a symmetric proposal the Metropolis ratio of
    a target restricted to a region A is the unrestricted one times :math:`1_A(w')`, so
    accept-then-reject-if-outside is exact. Two uses (:mod:`tmsjax.sampling.evidence`): a fixed
    region (:math:`w' \in A`: the initial particles must then be prior draws in A), and *frozen
    regions* (w' in the same region as w once β ≥ β₀): each particle then stays in the region it
    held at β₀, the kernel preserves every restricted target :math:`\varphi 1_A e^{\beta\ell}` and
    hence their sum, and the weighted share of region A at β = 1 times the evidence estimates
    :math:`Z_A` by reweighting alone. The reported acceptance counts the rejections, so the step
    size adapts to them.

    Args:
      logprior_fn: log prior of one position; the initial particles must be draws from it.
      loglikelihood_fn: ``(position, data) -> log likelihood``, tempered by β.
      num_mcmc_steps: HMC moves per particle after each reweighting.
      num_integration_steps: leapfrog steps per HMC move.
      target_ess: fraction of particles the weights' ESS keeps at each step (sets the next β).
      target_acceptance_rate: the step size is multiplied by exp(acceptance − target) after each
        step.
      initial_step_size: HMC step size at β = 0 (in units of the particles' standard deviation).
      max_num_steps: tempering steps allowed before giving up (see ``reached_target``).
      constraint_fn: ``(old, new, data, beta) -> bool``, whether a move from `old` to `new` is
        allowed at tempering `beta` (None: every move).
      symmetry_fn: ``(key, position) -> position``, a symmetric proposal (q(w'|w) = q(w|w'), e.g. a
        random transposition of exchangeable coordinates) that leaves the prior and the region
        invariant: after each HMC move, ``num_symmetry_moves`` Metropolis steps with it. HMC cannot
        move between copies of a mode related by a symmetry the *data* break (relabelled features
        with different losses) once barriers form; these moves do, so the particles keep the right
        share in each copy at every β instead of the share they had when the barriers rose.
      num_symmetry_moves: Metropolis steps with `symmetry_fn` per HMC move.

    Raises:
      ValueError: on a non-positive count, or a rate or target_ess outside (0, 1).
    """
    _check_counts(
        num_mcmc_steps=num_mcmc_steps,
        num_integration_steps=num_integration_steps,
        max_num_steps=max_num_steps,
    )
    _check_settings(
        target_acceptance_rate=target_acceptance_rate, initial_step_size=initial_step_size
    )
    if not (np.isfinite(target_ess) and 0 < target_ess < 1):
        raise ValueError(f"target_ess must lie in (0, 1), got {target_ess!r}")
    num_symmetry_moves = check_positive_int("num_symmetry_moves", num_symmetry_moves)
    hmc_kernel = blackjax.hmc.build_kernel()

    def symmetry_moves(key, state, logdensity_fn, data, beta):
        def one(state, key):
            key_propose, key_accept = jax.random.split(key)
            proposal = symmetry_fn(key_propose, state.position)
            logdensity, grad = jax.value_and_grad(logdensity_fn)(proposal)
            log_ratio = jnp.nan_to_num(logdensity - state.logdensity, nan=-jnp.inf)
            accept = jnp.log(jax.random.uniform(key_accept)) < log_ratio
            if constraint_fn is not None:
                accept &= constraint_fn(state.position, proposal, data, beta)
            new = state._replace(position=proposal, logdensity=logdensity, logdensity_grad=grad)
            return jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, state), None

        return jax.lax.scan(one, state, jax.random.split(key, num_symmetry_moves))[0]

    def run(key, particles, data):
        loglikelihood = lambda position: loglikelihood_fn(position, data)  # noqa: E731

        def mutation_step(key, state, logdensity_fn, step_size, inverse_mass_matrix, beta):
            key_hmc, key_symmetry = jax.random.split(key)
            new, info = hmc_kernel(
                key_hmc, state, logdensity_fn, step_size, inverse_mass_matrix, num_integration_steps
            )
            if constraint_fn is not None:
                inside = constraint_fn(state.position, new.position, data, beta)
                new = jax.tree.map(lambda a, b: jnp.where(inside, a, b), new, state)
                info = info._replace(
                    acceptance_rate=info.acceptance_rate * inside,
                    is_accepted=info.is_accepted & inside,
                )
            if symmetry_fn is not None:
                new = symmetry_moves(key_symmetry, new, logdensity_fn, data, beta)
            return new, info

        def algorithm(parameters):
            return blackjax.adaptive_tempered_smc(
                logprior_fn,
                loglikelihood,
                mutation_step,
                blackjax.hmc.init,
                parameters,
                resampling.systematic,
                target_ess,
                num_mcmc_steps=num_mcmc_steps,
            )

        nan_trace = jnp.full(max_num_steps, jnp.nan)

        def not_done(carry):
            state, _, _, step, *_ = carry
            return (state.tempering_param < 1) & (step < max_num_steps)

        def one_step(carry):
            state, step_size, key, step, log_evidence, betas, acceptance, sizes = carry
            key, key_step = jax.random.split(key)
            flat = jax.vmap(lambda p: ravel_pytree(p)[0])(state.particles)
            # The particles' spread at this β is the posterior's scale: use it as the mass matrix.
            parameters = {
                "step_size": step_size[None],
                "inverse_mass_matrix": jnp.var(flat, axis=0)[None],
                # The mutation runs at the current β (blackjax moves, then reweights).
                "beta": jnp.asarray(state.tempering_param)[None],
            }
            state, info = algorithm(parameters).step(key_step, state)
            rate = jnp.mean(info.update_info.acceptance_rate)
            return (
                state,
                (step_size * jnp.exp(rate - target_acceptance_rate)).astype(step_size.dtype),
                key,
                step + 1,
                log_evidence + info.log_likelihood_increment,
                betas.at[step].set(state.tempering_param),
                acceptance.at[step].set(rate),
                sizes.at[step].set(step_size),
            )

        key_loop, key_final = jax.random.split(key)
        state = algorithm({}).init(particles)
        dtype = jax.tree.leaves(particles)[0].dtype
        carry = (
            state,
            jnp.asarray(initial_step_size, dtype),
            key_loop,
            jnp.asarray(0),
            jnp.asarray(0.0, dtype),
            nan_trace,
            nan_trace,
            nan_trace,
        )
        state, _, _, steps, log_evidence, betas, acceptance, sizes = jax.lax.while_loop(
            not_done, one_step, carry
        )
        # One more resampling turns the weighted particle set into equally weighted draws.
        num_particles = state.weights.shape[0]
        index = resampling.systematic(key_final, state.weights, num_particles)
        return SMCResult(
            particles=jax.tree.map(lambda leaf: leaf[index], state.particles),
            log_evidence=log_evidence,
            num_steps=steps,
            reached_target=state.tempering_param >= 1,
            tempering=betas,
            acceptance_rate=acceptance,
            step_size=sizes,
        )

    return run


def make_smc_sweep(
    logprior_fn: Callable[[PyTree], Float[Array, ""]],
    loglikelihood_fn: Callable[[PyTree, PyTree], Float[Array, ""]],
    *,
    mesh: jax.sharding.Mesh | None = None,
    **settings,
) -> Callable[[PRNGKey, PyTree, PyTree], SMCResult]:
    """A jitted SMC sweep
    ``(keys (G,), particles (G, num_particles, ...), data (G, ...)) -> SMCResult``.

    Every grid element (a target, e.g. one dataset size n, or one replicate of it) runs its own
    tempering schedule; under vmap the loop runs until the slowest element reaches β = 1. `settings`
    are those of :func:`build_tempered_smc` (validated there); with a `mesh` the grid is sharded
    over its devices.

    Raises (at call time):
      ValueError: if the grid axes disagree or the particles hold NaN.
      RuntimeError: if a run did not reach β = 1 in ``max_num_steps`` steps, or its particles or
        evidence are not finite (a diverged mutation kernel).
    """
    run = build_tempered_smc(logprior_fn, loglikelihood_fn, **settings)
    checked = _with_grid_checks(jax.jit(jax.vmap(run)), mesh)

    def sweep(keys, particles, data):
        result = checked(keys, particles, data)
        reached = np.asarray(result.reached_target)
        if not reached.all():
            raise RuntimeError(
                "tempered SMC did not reach beta = 1 within "
                f"max_num_steps={result.tempering.shape[-1]} "
                f"for grid elements {np.flatnonzero(~reached).tolist()}: "
                "raise max_num_steps or lower target_ess"
            )
        finite = np.isfinite(np.asarray(result.log_evidence))
        for leaf in jax.tree.leaves(result.particles):
            finite &= np.isfinite(np.asarray(leaf)).reshape(len(finite), -1).all(axis=1)
        if not finite.all():
            raise RuntimeError(
                f"tempered SMC diverged (non-finite particles or evidence) for grid elements "
                f"{np.flatnonzero(~finite).tolist()}: "
                "lower initial_step_size or target_acceptance_rate"
            )
        return result

    return sweep


__all__ = ["SMCResult", "build_tempered_smc", "make_smc_sweep"]
