r"""Replica exchange (parallel tempering) sweeps: chains that cross barriers by way of hot copies.

NUTS chains estimate a mode's posterior mass by how often they visit it, which needs them to cross
the barriers between modes many times. When the barriers grow (the TMS posterior at n ≳ 600) they
stop crossing and the estimate remembers where they started. Replica exchange (Swendsen, Wang 1986;
Geyer 1991) runs K copies of a chain at the tempered targets

.. math:: \pi_\beta(w) \propto \varphi(w)\, e^{\beta \ell(w)},
          \qquad 0 < \beta_1 < \dots < \beta_K = 1

(φ the prior, ℓ the log likelihood), moves every copy with a few HMC steps of its own target, then
proposes to swap the positions of adjacent temperatures, accepted with probability

.. math:: \min\bigl(1, \exp[(\beta_{i+1} - \beta_i)(\ell(w_i) - \ell(w_{i+1}))]\bigr)

(the prior cancels). Hot copies see a flatter landscape and cross between modes; swaps carry their
crossings down to β = 1, whose positions are exact posterior draws (the joint chain leaves the
product of the tempered targets invariant). Pairs alternate between even (1-2, 3-4, …) and odd
(2-3, 4-5, …) rounds, the deterministic even-odd scheme that lets a copy travel the ladder in O(K)
rounds instead of O(K²) (Okabe et al. 2001; Syed et al. 2022).

Each copy moves with blackjax's HMC kernel (fixed number of leapfrog steps, so a vmapped step costs
the same in every lane: no lockstep waste, unlike NUTS), its step size jittered by ±20% per move to
break the periodic orbits fixed-length HMC can fall into on near-Gaussian targets. Warmup adapts,
per temperature, a step size by dual averaging (Hoffman, Gelman 2014) towards
``target_acceptance_rate`` and a diagonal inverse mass matrix from the positions visited in the
second quarter of warmup (Stan's regularised estimate); dual averaging restarts once the mass
matrix is set. Draws are kept only at β = 1.

Diagnostics: mean HMC acceptance per temperature, mean swap acceptance per adjacent pair, and the
number of round trips (a copy's walk from the hottest temperature to β = 1 and back), the measure
of how well the ladder carries crossings (Katzgraber et al. 2006).

Like :mod:`tmsjax.sampling.nuts`, a sweep maps one compiled program over a grid of targets (e.g.
every (dataset size n, chain) pair), each with its own ladder; it knows nothing about TMS.

References:
  Swendsen, Wang (1986), "Replica Monte Carlo simulation of spin glasses", PRL.
  Geyer (1991), "Markov chain Monte Carlo maximum likelihood", Interface proceedings.
  Okabe, Kawata, Okamoto, Mikami (2001), "Replica-exchange Monte Carlo method for the isobaric-
  isothermal ensemble", Chem. Phys. Lett. (the even-odd scheme).
  Katzgraber, Trebst, Huse, Troyer (2006), "Feedback-optimized parallel tempering Monte Carlo",
  J. Stat. Mech. (round trips).
  Syed, Bouchard-Côté, Deligiannidis, Doucet (2022), "Non-reversible parallel tempering: a
  scalable highly parallel MCMC scheme", JRSS B.
"""

from collections.abc import Callable
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.mass_matrix import welford_algorithm
from blackjax.adaptation.step_size import dual_averaging_adaptation
from blackjax.mcmc.hmc import HMCState
from jax.flatten_util import ravel_pytree

from tmsjax import sharding
from tmsjax.checks import check_positive_int
from tmsjax.sampling.nuts import _check_settings, batched_leaves, broadcast_shared
from tmsjax.types import Array, Float, Int, PRNGKey, PyTree

# Ends of the ladder a copy visited last, for the round-trip count.
_NO_END, _HOT_END, _COLD_END = 0, 1, 2
# ±20% uniform step-size jitter (Neal 2011, §5.4.2.2): enough to break periodicity, small enough
# that the adapted acceptance rate still describes every move.
_STEP_SIZE_JITTER = 0.2


class TemperingResult(NamedTuple):
    r"""Output of a replica-exchange run (leaves gain a leading grid axis in a sweep).

    Attributes:
      positions: draws at β = 1, one per round after warmup, leaves (num_samples, ...).
      loglikelihood: ℓ of each draw, (num_samples,).
      betas: the ladder, (K,), hottest first, ending at 1.
      step_size: adapted HMC step size per temperature, (K,).
      inverse_mass_matrix: adapted diagonal inverse mass matrix per temperature, (K, dim).
      acceptance_rate: mean HMC acceptance per temperature while sampling, (K,).
      swap_acceptance: mean swap acceptance probability per adjacent pair (β_i, β_{i+1}) while
        sampling, (K − 1,); its smallest entry is the ladder's bottleneck.
      num_round_trips: completed hot → β = 1 → hot (or β = 1 → hot → β = 1) walks of all copies
        while sampling: ~0 means the ladder does not carry crossings to β = 1.
      num_divergent: divergent HMC moves per temperature while sampling, (K,).
      initial_positions: the positions the copies started from, leaves (K, ...).
    """

    positions: PyTree
    loglikelihood: Float[Array, " num_samples"]
    betas: Float[Array, " K"]
    step_size: Float[Array, " K"]
    inverse_mass_matrix: Float[Array, "K dim"]
    acceptance_rate: Float[Array, " K"]
    swap_acceptance: Float[Array, " K_minus_1"]
    num_round_trips: Int[Array, ""]
    num_divergent: Int[Array, " K"]
    initial_positions: PyTree


class _Replicas(NamedTuple):
    """The K copies, slot k at temperature β_k (flat positions)."""

    hmc: HMCState  # position (K, dim), logdensity (K,), logdensity_grad (K, dim) at each slot's β
    loglikelihood: Float[Array, " K"]
    walker: Int[Array, " K"]  # which copy sits in each slot (copies move, slots keep their β)
    last_end: Int[Array, " K"]  # per copy: _NO_END, _HOT_END or _COLD_END
    one_way_trips: Int[Array, " K"]  # per copy: arrivals at an end after visiting the other


class _Tally(NamedTuple):
    acceptance: Float[Array, " K"]
    divergent: Int[Array, " K"]
    swap_acceptance: Float[Array, " K_minus_1"]
    swap_proposals: Int[Array, " K_minus_1"]


def geometric_ladder(beta_min, num_temperatures: int) -> Float[Array, "... K"]:
    r"""Inverse temperatures :math:`\beta_k = \beta_{\min}^{(K-1-k)/(K-1)}`, hottest first, ending
    at 1.

    A geometric ladder keeps the swap acceptance roughly constant along it when the log
    likelihood's variance scales as 1/β² (a regular or singular model near its optimum:
    Var_β ℓ ≈ λ/β², so adjacent overlap depends only on the ratio β_{k+1}/β_k).

    Args:
      beta_min: hottest inverse temperature in (0, 1]; an array gives one ladder per entry
        (β_min = 1: every copy at β = 1).
      num_temperatures: K ≥ 1.
    """
    check_positive_int("num_temperatures", num_temperatures)
    beta_min = jnp.asarray(beta_min, jnp.zeros(()).dtype)
    if num_temperatures == 1:
        return jnp.ones((*beta_min.shape, 1), beta_min.dtype)
    fraction = jnp.arange(num_temperatures - 1, -1, -1, dtype=beta_min.dtype) / (
        num_temperatures - 1
    )
    return beta_min[..., None] ** fraction


def build_tempering_chain(
    logprior_fn: Callable[[PyTree], Float[Array, ""]],
    loglikelihood_fn: Callable[[PyTree, PyTree], Float[Array, ""]],
    *,
    num_warmup: int,
    num_samples: int,
    num_integration_steps: int = 8,
    num_moves: int = 1,
    target_acceptance_rate: float = 0.7,
    initial_step_size: float = 0.1,
) -> Callable[[PRNGKey, PyTree, PyTree, Float[Array, " K"]], TemperingResult]:
    r"""One replica-exchange chain ``(key, positions (K, ...), data, betas (K,)) -> result``.

    Each round: `num_moves` HMC moves of `num_integration_steps` leapfrog steps for every copy at
    its own β, then one even-or-odd sweep of swap proposals, then the β = 1 copy's position is
    recorded. Cost per round: K · num_moves · num_integration_steps gradient evaluations of
    :math:`\log\varphi + \beta\ell` (one more per copy at the start).

    The log likelihood of a copy is read back from its HMC state,
    :math:`\ell = (\log\pi_\beta - \log\varphi)/\beta`, and likewise its gradient, so a swap costs
    one prior evaluation per copy, no likelihood evaluation; that needs every β > 0 (the sweep
    checks it).

    Args:
      logprior_fn: log prior of one position (cheap: evaluated once more per copy and round).
      loglikelihood_fn: ``(position, data) -> log likelihood``, tempered by β.
      num_warmup: adaptation rounds (step size and mass matrix per temperature; swaps on).
      num_samples: rounds after warmup; one β = 1 draw each.
      num_integration_steps: leapfrog steps per HMC move (8: with the ~0.7 acceptance target a
        move travels a few posterior widths, and 8 keeps the round cheap).
      num_moves: HMC moves per copy between swap sweeps.
      target_acceptance_rate: dual-averaging target per temperature (0.7: a little above
        fixed-length HMC's optimum 0.651 (Beskos et al. 2013) for robustness on curved targets).
      initial_step_size: where dual averaging starts at every temperature.
    """
    da_init, da_update, da_final = dual_averaging_adaptation(target_acceptance_rate)
    hmc_kernel = blackjax.hmc.build_kernel()
    # The mass matrix is estimated over rounds [W/4, W/2) and set at W/2; step sizes adapt
    # throughout and restart from the current value once the mass matrix changes (as in Stan).
    collect_start, switch = num_warmup // 4, num_warmup // 2

    def run(key, positions, data, betas):
        first = jax.tree.map(lambda leaf: leaf[0], positions)
        _, unravel = ravel_pytree(first)
        flat = jax.vmap(lambda p: ravel_pytree(p)[0])(positions)
        num_temperatures, dim = flat.shape
        dtype = flat.dtype
        betas = jnp.asarray(betas, dtype)

        def logprior(x):
            return logprior_fn(unravel(x))

        def tempered(beta):
            return lambda x: logprior(x) + beta * loglikelihood_fn(unravel(x), data)

        def init_slot(x, beta):
            state = blackjax.hmc.init(x, tempered(beta))
            return state, (state.logdensity - logprior(x)) / beta

        hmc_states, loglik = jax.vmap(init_slot)(flat, betas)
        slots = jnp.arange(num_temperatures)
        replicas = _Replicas(
            hmc=hmc_states,
            loglikelihood=loglik,
            walker=slots,
            last_end=jnp.full(num_temperatures, _NO_END),
            one_way_trips=jnp.zeros(num_temperatures, jnp.int32),
        )

        def move_slot(key, state, beta, step_size, inverse_mass):
            def one_move(state, move_key):
                key_jitter, key_hmc = jax.random.split(move_key)
                jitter = jax.random.uniform(
                    key_jitter, minval=1 - _STEP_SIZE_JITTER, maxval=1 + _STEP_SIZE_JITTER
                )
                state, info = hmc_kernel(
                    key_hmc,
                    state,
                    tempered(beta),
                    step_size * jitter,
                    inverse_mass,
                    num_integration_steps,
                )
                return state, (info.acceptance_rate, info.is_divergent)

            state, (acceptance, divergent) = jax.lax.scan(
                one_move, state, jax.random.split(key, num_moves)
            )
            return state, jnp.mean(acceptance), jnp.sum(divergent)

        def swap(key, replicas: _Replicas, parity):
            """One even (parity 0) or odd (parity 1) sweep of adjacent swap proposals."""
            hmc = replicas.hmc
            prior_value, prior_grad = jax.vmap(jax.value_and_grad(logprior))(hmc.position)
            loglik = (hmc.logdensity - prior_value) / betas
            loglik_grad = (hmc.logdensity_grad - prior_grad) / betas[:, None]
            pair = jnp.arange(num_temperatures - 1)
            log_ratio = (betas[1:] - betas[:-1]) * (loglik[:-1] - loglik[1:])
            # NaN ratios (a non-finite copy) are never accepted.
            accept_probability = jnp.where(
                jnp.isnan(log_ratio), 0.0, jnp.exp(jnp.minimum(log_ratio, 0.0))
            )
            active = (pair % 2) == parity
            uniform = jax.random.uniform(key, (num_temperatures - 1,))
            swapped = active & (uniform < accept_probability)
            up = jnp.concatenate([swapped, jnp.zeros(1, bool)])  # slot k takes slot k + 1's copy
            down = jnp.concatenate([jnp.zeros(1, bool), swapped])  # slot k takes slot k − 1's
            source = jnp.where(up, slots + 1, jnp.where(down, slots - 1, slots))
            position = hmc.position[source]
            prior_value, prior_grad = prior_value[source], prior_grad[source]
            loglik, loglik_grad = loglik[source], loglik_grad[source]
            walker = replicas.walker[source]
            # Copies at an end: an arrival after visiting the other end completes a one-way trip.
            last_end, trips = replicas.last_end, replicas.one_way_trips
            if num_temperatures > 1:  # one copy is at both ends: no trips to count
                hot, cold = walker[0], walker[-1]
                trips = trips.at[hot].add(jnp.where(last_end[hot] == _COLD_END, 1, 0))
                last_end = last_end.at[hot].set(_HOT_END)
                trips = trips.at[cold].add(jnp.where(last_end[cold] == _HOT_END, 1, 0))
                last_end = last_end.at[cold].set(_COLD_END)
            hmc = HMCState(
                position,
                prior_value + betas * loglik,
                prior_grad + betas[:, None] * loglik_grad,
            )
            replicas = _Replicas(hmc, loglik, walker, last_end, trips)
            return replicas, jnp.where(active, accept_probability, 0.0), active

        def round_step(key, replicas, parity, step_size, inverse_mass):
            key_move, key_swap = jax.random.split(key)
            hmc, acceptance, divergent = jax.vmap(move_slot)(
                jax.random.split(key_move, num_temperatures),
                replicas.hmc,
                betas,
                step_size,
                inverse_mass,
            )
            replicas, swap_probability, active = swap(key_swap, replicas._replace(hmc=hmc), parity)
            return replicas, acceptance, divergent, swap_probability, active

        # One loop over warmup and sampling rounds (one copy of the round in the compiled program,
        # half the compile time of two loops); draws go into a buffer from round num_warmup on.
        welford_init, welford_update, welford_final = welford_algorithm(True)

        class Carry(NamedTuple):
            replicas: _Replicas
            da_state: tuple
            welford: tuple
            inverse_mass: Float[Array, "K dim"]
            step_size: Float[Array, " K"]  # the adapted one, fixed once warmup ends
            tally: _Tally
            draws: Float[Array, "num_samples dim"]
            loglik_draws: Float[Array, " num_samples"]

        def one_round(carry: Carry, inputs):
            index, round_key = inputs
            adapting = index < num_warmup
            sampling = ~adapting
            step_size = jnp.where(adapting, jnp.exp(carry.da_state.log_step_size), carry.step_size)
            replicas, acceptance, divergent, swap_probability, active = round_step(
                round_key, carry.replicas, index % 2, step_size, carry.inverse_mass
            )
            keep = lambda new, old: jnp.where(adapting, new, old)  # noqa: E731
            da_state = jax.tree.map(
                keep, jax.vmap(da_update)(carry.da_state, acceptance), carry.da_state
            )
            collecting = (index >= collect_start) & (index < switch)
            updated = jax.vmap(welford_update)(carry.welford, replicas.hmc.position)
            welford = jax.tree.map(
                lambda new, old: jnp.where(collecting, new, old), updated, carry.welford
            )

            def set_mass_matrix(_):
                variance, count, _ = jax.vmap(welford_final)(welford)
                count = count[:, None].astype(dtype)
                # Stan's regularisation: shrink towards 1e-3 · I with weight 5 / (count + 5).
                regularised = (count / (count + 5)) * variance + 1e-3 * (5 / (count + 5))
                restarted = jax.vmap(da_init)(jax.vmap(da_final)(da_state))
                return regularised.astype(dtype), restarted

            inverse_mass, da_state = jax.lax.cond(
                (index == switch - 1) & (switch - collect_start >= 2),
                set_mass_matrix,
                lambda _: (carry.inverse_mass, da_state),
                None,
            )
            last_warmup = index == num_warmup - 1
            step_size = jnp.where(
                last_warmup, jax.vmap(da_final)(da_state).astype(dtype), carry.step_size
            )
            # Round trips are counted from the first sampling round on.
            replicas = replicas._replace(
                last_end=jnp.where(last_warmup, _NO_END, replicas.last_end),
                one_way_trips=jnp.where(last_warmup, 0, replicas.one_way_trips),
            )
            tally = carry.tally
            tally = _Tally(
                tally.acceptance + jnp.where(sampling, acceptance, 0.0),
                tally.divergent + jnp.where(sampling, divergent, 0).astype(jnp.int32),
                tally.swap_acceptance + jnp.where(sampling, swap_probability, 0.0),
                tally.swap_proposals + jnp.where(sampling, active, False).astype(jnp.int32),
            )
            slot = jnp.maximum(index - num_warmup, 0)
            draws = carry.draws.at[slot].set(
                jnp.where(sampling, replicas.hmc.position[-1], carry.draws[slot])
            )
            loglik_draws = carry.loglik_draws.at[slot].set(
                jnp.where(sampling, replicas.loglikelihood[-1], carry.loglik_draws[slot])
            )
            carry = Carry(
                replicas, da_state, welford, inverse_mass, step_size, tally, draws, loglik_draws
            )
            return carry, None

        carry = Carry(
            replicas=replicas,
            da_state=jax.vmap(da_init)(jnp.full(num_temperatures, initial_step_size, dtype)),
            welford=jax.vmap(lambda _: welford_init(dim))(slots),
            inverse_mass=jnp.ones((num_temperatures, dim), dtype),
            step_size=jnp.full(num_temperatures, initial_step_size, dtype),
            tally=_Tally(
                acceptance=jnp.zeros(num_temperatures, dtype),
                divergent=jnp.zeros(num_temperatures, jnp.int32),
                swap_acceptance=jnp.zeros(num_temperatures - 1, dtype),
                swap_proposals=jnp.zeros(num_temperatures - 1, jnp.int32),
            ),
            draws=jnp.zeros((num_samples, dim), dtype),
            loglik_draws=jnp.zeros(num_samples, dtype),
        )
        num_rounds = num_warmup + num_samples
        carry, _ = jax.lax.scan(
            one_round, carry, (jnp.arange(num_rounds), jax.random.split(key, num_rounds))
        )
        tally = carry.tally
        return TemperingResult(
            positions=jax.vmap(unravel)(carry.draws),
            loglikelihood=carry.loglik_draws,
            betas=betas,
            step_size=carry.step_size,
            inverse_mass_matrix=carry.inverse_mass,
            acceptance_rate=tally.acceptance / num_samples,
            swap_acceptance=tally.swap_acceptance / jnp.maximum(tally.swap_proposals, 1),
            num_round_trips=jnp.sum(carry.replicas.one_way_trips // 2),
            num_divergent=tally.divergent,
            initial_positions=positions,
        )

    return run


def make_tempering_sweep(
    logprior_fn: Callable[[PyTree], Float[Array, ""]],
    loglikelihood_fn: Callable[[PyTree, PyTree], Float[Array, ""]],
    *,
    num_warmup: int,
    num_samples: int,
    num_integration_steps: int = 8,
    num_moves: int = 1,
    target_acceptance_rate: float = 0.7,
    initial_step_size: float = 0.1,
    mesh: jax.sharding.Mesh | None = None,
    data_axes: PyTree = 0,
) -> Callable[[PRNGKey, PyTree, PyTree, Float[Array, "grid K"]], TemperingResult]:
    """A jitted replica-exchange sweep over a grid of chains.

    ``sweep(keys (G,), positions (G, K, ...), data (G, ...), betas (G, K)) -> TemperingResult``
    with leaves gaining the leading grid axis G. Every grid element (e.g. one (n, chain) pair) is
    one chain of K copies with its own ladder `betas` (increasing, every entry in (0, 1], the last
    exactly 1; :func:`geometric_ladder`); settings are those of :func:`build_tempering_chain`.
    `data_axes` and `mesh` work as in :func:`tmsjax.sampling.nuts.make_nuts_sweep`.

    Raises:
      ValueError: (when built) on a non-positive count or a rate outside (0, 1); (when called) if
        the grid axes disagree, positions hold NaN, or a ladder is not increasing in (0, 1] with
        last entry 1.
      RuntimeError: if the β = 1 draws of a chain are not finite (a diverged HMC kernel).
    """
    for name, value in dict(
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_integration_steps=num_integration_steps,
        num_moves=num_moves,
    ).items():
        check_positive_int(name, value)
    _check_settings(
        target_acceptance_rate=target_acceptance_rate, initial_step_size=initial_step_size
    )
    chain = build_tempering_chain(
        logprior_fn,
        loglikelihood_fn,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_integration_steps=num_integration_steps,
        num_moves=num_moves,
        target_acceptance_rate=target_acceptance_rate,
        initial_step_size=initial_step_size,
    )
    shared = data_axes != 0
    if shared and mesh is None:
        compiled = jax.jit(jax.vmap(chain, in_axes=(0, 0, data_axes, 0)))
    else:
        compiled = jax.jit(jax.vmap(chain))

    def sweep(keys, positions, data, betas):
        betas = np.asarray(betas)
        size = sharding.grid_size(keys)
        sizes = {
            "keys": size,
            "positions": sharding.grid_size(positions),
            "betas": int(betas.shape[0]) if betas.ndim == 2 else -1,
        }
        batched = batched_leaves(data, data_axes) if shared else jax.tree.leaves(data)
        if batched:
            sizes["data"] = sharding.grid_size(batched)
        if len(set(sizes.values())) != 1:
            raise ValueError(
                f"keys, positions, data and betas (G, K) must share the grid axis, got {sizes}"
            )
        num_temperatures = betas.shape[1]
        copies = {int(np.shape(leaf)[1]) for leaf in jax.tree.leaves(positions)}
        if copies != {num_temperatures}:
            raise ValueError(
                f"positions must have shape (grid, K={num_temperatures}, ...), got K in {copies}"
            )
        if not (
            np.all(np.isfinite(betas))
            and np.all(betas > 0)
            and np.all(betas <= 1)
            and np.all(np.diff(betas, axis=1) >= 0)
            and np.all(betas[:, -1] == 1)
        ):
            raise ValueError("betas must be nondecreasing in (0, 1] along K with last entry 1")
        for leaf in jax.tree.leaves(positions):
            if not np.all(np.isfinite(np.asarray(leaf))):
                raise ValueError("positions contain NaN or inf")
        betas = jnp.asarray(betas, jnp.zeros(()).dtype)
        if mesh is None:
            result = compiled(keys, positions, data, betas)
        else:
            if shared:
                data = broadcast_shared(data, data_axes, size)
            result = sharding.run_sharded(compiled, keys, positions, data, betas, mesh=mesh)
        finite = np.ones(size, bool)
        for leaf in jax.tree.leaves(result.positions):
            finite &= np.isfinite(np.asarray(leaf)).reshape(size, -1).all(axis=1)
        if not finite.all():
            raise RuntimeError(
                "replica exchange diverged (non-finite draws) for grid elements "
                f"{np.flatnonzero(~finite).tolist()}: lower initial_step_size or raise "
                "target_acceptance_rate"
            )
        return result

    return sweep


__all__ = [
    "TemperingResult",
    "build_tempering_chain",
    "geometric_ladder",
    "make_tempering_sweep",
]
