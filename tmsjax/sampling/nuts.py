r"""NUTS (and ChEES-HMC) sweeps: many targets × many chains in one compiled program.

A *sweep* is a leading grid axis of independent chains, each with its own target
``logdensity_fn(position, data)`` (e.g. the TMS posterior at its own dataset size n, the dataset
padded to n_max with a mask so every n shares one shape), its own PRNG key and its own initial
position. :func:`make_nuts_sweep` returns one jitted, vmapped function of (keys, positions, data)
that runs, per chain, blackjax's Stan-style ``window_adaptation`` (step size by dual averaging,
diagonal mass matrix from windowed variance estimates) followed by ``num_samples`` NUTS transitions
in a ``lax.scan``. It records divergences, tree depth, integration steps and acceptance of every
draw. The grid can be sharded over all devices of a mesh (:mod:`tmsjax.sharding`).

Lockstep. Under vmap the NUTS tree-building ``while_loop`` runs until the *longest* trajectory of
the batch is done; the other lanes wait (blackjax docs, "How to sample multiple chains"). The cost
of a vmapped step is therefore ``max`` over chains of the integration steps, not the mean:
:func:`lockstep_efficiency` measures ``mean / max`` per draw from the recorded info. ChEES-HMC
(:func:`make_chees_sweep`; Hoffman, Radul, Sountsov 2021) avoids it by giving every chain of a
target the same (jittered) number of leapfrog steps, tuned across chains to maximise the expected
squared jump; it needs a group of chains per target, so its grid is (targets, chains).

Samplers know nothing about TMS: any pytree position and any log density work.

References:
  Hoffman, Gelman (2014), "The No-U-Turn Sampler", JMLR.
  Hoffman, Radul, Sountsov (2021), "An Adaptive MCMC Scheme for Setting Trajectory Lengths in
  Hamiltonian Monte Carlo", AISTATS.
  Cabezas et al. (2024), "BlackJAX: Composable Bayesian inference in JAX".
"""

from collections.abc import Callable
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from blackjax.adaptation.base import get_filter_adapt_info_fn
from jax.flatten_util import ravel_pytree

from tmsjax import sharding
from tmsjax.checks import check_positive_int
from tmsjax.types import Array, Bool, Float, Int, PRNGKey, PyTree


class DrawInfo(NamedTuple):
    """Per-draw sampler diagnostics (leaves (..., num_samples))."""

    is_divergent: Bool[Array, "..."]
    tree_depth: Int[Array, "..."]  # NUTS trajectory doublings (0 for fixed-length HMC)
    num_integration_steps: Int[Array, "..."]  # leapfrog steps = gradient evaluations
    acceptance_rate: Float[Array, "..."]
    logdensity: Float[Array, "..."]
    energy: Float[Array, "..."]  # Hamiltonian at the draw: ArviZ's E-BFMI and energy plot


class SweepResult(NamedTuple):
    """Output of a sweep: draws and diagnostics per grid element.

    Attributes:
      positions: the draws, leaves (grid, num_samples, ...).
      info: :class:`DrawInfo` with leaves (grid, num_samples).
      step_size: adapted step size per grid element.
      inverse_mass_matrix: adapted diagonal inverse mass matrix, (grid, dim).
      warmup_divergences: divergent transitions during warmup, per grid element.
      initial_positions: the positions the chains started from (after any preprocessing).
    """

    positions: PyTree
    info: DrawInfo
    step_size: Float[Array, " grid"]
    inverse_mass_matrix: Float[Array, "grid dim"]
    warmup_divergences: Int[Array, " grid"]
    initial_positions: PyTree


def _draw_info(state, info, integration_steps) -> DrawInfo:
    depth = getattr(info, "num_trajectory_expansions", jnp.zeros((), jnp.int32))
    return DrawInfo(
        is_divergent=info.is_divergent,
        tree_depth=jnp.asarray(depth, jnp.int32),
        num_integration_steps=jnp.asarray(integration_steps, jnp.int32),
        acceptance_rate=info.acceptance_rate,
        logdensity=state.logdensity,
        energy=info.energy,
    )


def build_nuts_chain(
    logdensity_fn: Callable[[PyTree, PyTree], Float[Array, ""]],
    *,
    num_warmup: int,
    num_samples: int,
    target_acceptance_rate: float = 0.8,
    max_num_doublings: int = 10,
    initial_step_size: float = 0.1,
) -> Callable[[PRNGKey, PyTree, PyTree], SweepResult]:
    r"""One chain: window adaptation then NUTS, as a pure function
    ``(key, position, data) -> result``.

    Args:
      logdensity_fn: ``(position, data) -> log density``; `data` is whatever varies per target.
      num_warmup: adaptation steps (Stan's windowed schedule: fast / slow doubling windows / fast).
      num_samples: draws kept after warmup.
      target_acceptance_rate: dual-averaging target (0.8, Stan's default; raise it to cut
        divergences).
      max_num_doublings: NUTS tree depth cap (10 = 1023 leapfrog steps, Stan's default).
      initial_step_size: where dual averaging starts (0.1: the TMS posterior at n ~ 10³ has
        curvature ~ n, so a unit step would diverge at once and waste the first windows).
    """

    def run_chain(key, position, data):
        def logdensity(p):
            return logdensity_fn(p, data)

        warmup = blackjax.window_adaptation(
            blackjax.nuts,
            logdensity,
            target_acceptance_rate=target_acceptance_rate,
            initial_step_size=initial_step_size,
            max_num_doublings=max_num_doublings,
            adaptation_info_fn=get_filter_adapt_info_fn(info_keys={"is_divergent"}),
        )
        key_warmup, key_sample = jax.random.split(key)
        (state, parameters), warmup_info = warmup.run(key_warmup, position, num_steps=num_warmup)
        # `parameters` already carries max_num_doublings
        # (window_adaptation passes extra parameters on).
        kernel = blackjax.nuts(
            logdensity, **{"max_num_doublings": max_num_doublings, **parameters}
        ).step

        def one_step(state, step_key):
            state, info = kernel(step_key, state)
            return state, (state.position, _draw_info(state, info, info.num_integration_steps))

        _, (positions, infos) = jax.lax.scan(
            one_step, state, jax.random.split(key_sample, num_samples)
        )
        return SweepResult(
            positions=positions,
            info=infos,
            step_size=parameters["step_size"],
            inverse_mass_matrix=parameters["inverse_mass_matrix"],
            warmup_divergences=jnp.sum(warmup_info.info.is_divergent),
            initial_positions=position,
        )

    return run_chain


def make_nuts_sweep(
    logdensity_fn: Callable[[PyTree, PyTree], Float[Array, ""]],
    *,
    num_warmup: int,
    num_samples: int,
    target_acceptance_rate: float = 0.8,
    max_num_doublings: int = 10,
    initial_step_size: float = 0.1,
    mesh: jax.sharding.Mesh | None = None,
    data_axes: PyTree = 0,
) -> Callable[[PRNGKey, PyTree, PyTree], SweepResult]:
    """A jitted sweep ``(keys (G,), positions (G, ...), data (G, ...)) -> SweepResult`` over a grid.

    Build it once and call it for every block of a sweep: same shapes, one compilation. With a
    `mesh`, the grid axis is padded and sharded over its devices
    (:func:`tmsjax.sharding.shard_grid`) and the result is identical to the unsharded run.

    `data_axes` is a ``vmap`` in_axes prefix of `data`: ``None`` marks leaves shared by every grid
    element (no grid axis), e.g. ``Dataset(x=None, mask=0)`` for nested datasets, where every n
    reads the same rows and only the mask differs. Shared data is read once for all lanes (the
    vmapped loss becomes one matrix product) instead of once per lane: on CPU per-lane copies of an
    (800, 6) dataset made 16–64 vmapped chains ~2x slower (benchmarks/nuts_sweep.py). With a
    `mesh`, shared leaves are broadcast to the grid before sharding.

    Raises (at call time):
      ValueError: if the grid axes of keys, positions and data disagree, or positions hold NaN.
    """
    _check_counts(
        num_warmup=num_warmup, num_samples=num_samples, max_num_doublings=max_num_doublings
    )
    _check_settings(
        target_acceptance_rate=target_acceptance_rate, initial_step_size=initial_step_size
    )
    chain = build_nuts_chain(
        logdensity_fn,
        num_warmup=num_warmup,
        num_samples=num_samples,
        target_acceptance_rate=target_acceptance_rate,
        max_num_doublings=max_num_doublings,
        initial_step_size=initial_step_size,
    )
    compiled = jax.jit(jax.vmap(chain))
    if data_axes == 0:
        return _with_grid_checks(compiled, mesh)
    compiled_shared = jax.jit(jax.vmap(chain, in_axes=(0, 0, data_axes)))
    checked = _with_grid_checks(compiled, mesh)

    def sweep(keys, positions, data):
        # sharding needs a grid axis on every leaf: materialise the shared ones
        if mesh is not None:
            size = int(np.shape(keys)[0])
            return checked(keys, positions, broadcast_shared(data, data_axes, size))
        return _with_grid_checks(
            compiled_shared, None, grid_data=lambda d: batched_leaves(d, data_axes)
        )(keys, positions, data)

    return sweep


def _is_none(x) -> bool:
    return x is None


def batched_leaves(data: PyTree, data_axes: PyTree) -> list:
    """The leaves of `data` that carry the grid axis (data_axes 0), as a list."""
    picked = jax.tree.map(
        lambda axis, sub: [] if axis is None else jax.tree.leaves(sub),
        data_axes,
        data,
        is_leaf=_is_none,
    )
    return [
        leaf
        for group in jax.tree.leaves(picked, is_leaf=lambda x: isinstance(x, list))
        for leaf in group
    ]


def broadcast_shared(data: PyTree, data_axes: PyTree, size: int) -> PyTree:
    """`data` with every shared (data_axes None) leaf broadcast to a leading grid axis of `size`."""

    def expand(axis, sub):
        if axis is None:
            return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (size, *jnp.shape(leaf))), sub)
        return sub

    return jax.tree.map(expand, data_axes, data, is_leaf=_is_none)


def build_chees_group(
    logdensity_fn: Callable[[PyTree, PyTree], Float[Array, ""]],
    *,
    num_chains: int,
    num_warmup: int,
    num_samples: int,
    learning_rate: float = 0.025,
    initial_step_size: float = 0.1,
    target_acceptance_rate: float = 0.651,
    max_leapfrog_steps: int = 1000,
) -> Callable[[PRNGKey, PyTree, PyTree], SweepResult]:
    """A group of `num_chains` ChEES-HMC chains on one target:
    ``(key, positions (chains, ...), data)``.

    All chains of the group share one step size and one jittered trajectory length (Halton jitter),
    tuned during warmup by Adam on the ChEES criterion (`learning_rate` 0.025 as in the paper's
    experiments), so a vmapped step costs exactly the common number of leapfrog steps: no lockstep
    waste. 0.651 is the optimal HMC acceptance rate (Beskos et al. 2013).
    """

    def run_group(key, positions, data):
        # blackjax's ChEES adaptation (mass matrix, length floor) assumes flat positions: ravel at
        # the edge (docs/architecture.md, decision 1) and unravel the draws.
        _, unravel = ravel_pytree(jax.tree.map(lambda leaf: leaf[0], positions))
        original_positions = positions
        positions = jax.vmap(lambda p: ravel_pytree(p)[0])(positions)

        def logdensity(p):
            return logdensity_fn(unravel(p), data)

        warmup = blackjax.chees_adaptation(
            logdensity,
            num_chains,
            target_acceptance_rate=target_acceptance_rate,
            max_leapfrog_steps=max_leapfrog_steps,
            adaptation_info_fn=get_filter_adapt_info_fn(info_keys={"is_divergent"}),
        )
        key_warmup, key_sample = jax.random.split(key)
        (states, parameters), warmup_info = warmup.run(
            key_warmup,
            positions,
            initial_step_size,
            optax.adam(learning_rate),
            num_warmup,
            max_sampling_steps=num_samples,
        )
        algorithm = blackjax.dynamic_hmc(logdensity, **parameters)

        def one_step(states, step_key):
            keys = jax.random.split(step_key, num_chains)
            new_states, info = jax.vmap(algorithm.step)(keys, states)
            steps = jax.vmap(
                lambda s: parameters["integration_steps_fn"](
                    s, *parameters["integration_steps_params"]
                )
            )(states.random_generator_arg)
            return new_states, (new_states.position, jax.vmap(_draw_info)(new_states, info, steps))

        _, (draws, infos) = jax.lax.scan(
            one_step, states, jax.random.split(key_sample, num_samples)
        )
        swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731  (samples, chains) -> (chains, samples)
        num_divergent = jnp.sum(warmup_info.info.is_divergent, axis=0)
        draws = jax.vmap(jax.vmap(unravel))(draws)
        return SweepResult(
            positions=jax.tree.map(swap, draws),
            info=jax.tree.map(swap, infos),
            step_size=jnp.broadcast_to(parameters["step_size"], (num_chains,)),
            inverse_mass_matrix=jnp.broadcast_to(
                parameters["inverse_mass_matrix"],
                (num_chains, *jnp.shape(parameters["inverse_mass_matrix"])),
            ),
            warmup_divergences=num_divergent,
            initial_positions=original_positions,
        )

    return run_group


def make_chees_sweep(
    logdensity_fn: Callable[[PyTree, PyTree], Float[Array, ""]],
    *,
    num_chains: int,
    num_warmup: int,
    num_samples: int,
    learning_rate: float = 0.025,
    initial_step_size: float = 0.1,
    mesh: jax.sharding.Mesh | None = None,
) -> Callable[[PRNGKey, PyTree, PyTree], SweepResult]:
    """A jitted ChEES-HMC sweep ``(keys (T,), positions (T, chains, ...), data (T, ...))``.

    Returns a :class:`SweepResult` flattened to the same (T·chains) grid layout as
    :func:`make_nuts_sweep` (target-major: element t·chains + j is chain j of target t).
    """
    _check_counts(num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples)
    _check_settings(learning_rate=learning_rate, initial_step_size=initial_step_size)
    group = build_chees_group(
        logdensity_fn,
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        learning_rate=learning_rate,
        initial_step_size=initial_step_size,
    )
    compiled = jax.jit(jax.vmap(group))
    checked = _with_grid_checks(compiled, mesh)

    def sweep(keys, positions, data):
        leading = {
            int(np.shape(x)[1]) if np.ndim(x) >= 2 else None for x in jax.tree.leaves(positions)
        }
        if leading != {num_chains}:
            raise ValueError(
                f"positions must have shape (targets, num_chains={num_chains}, ...), got {leading}"
            )
        result = checked(keys, positions, data)
        return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), result)

    return sweep


def _check_counts(**counts) -> None:
    for name, value in counts.items():
        check_positive_int(name, value)


def _check_settings(**settings) -> None:
    """Acceptance rates must lie in (0, 1); step sizes and learning rates must be positive and
    finite."""
    for name, value in settings.items():
        if name.endswith("acceptance_rate"):
            if not (np.isfinite(value) and 0 < value < 1):
                raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
        elif not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite, got {value!r}")


def _with_grid_checks(compiled, mesh, grid_data=lambda data: data):
    def sweep(keys, positions, data):
        sizes = {"keys": sharding.grid_size(keys), "positions": sharding.grid_size(positions)}
        batched = grid_data(data)
        if jax.tree.leaves(batched):  # fully shared data (one target, many chains) has no grid axis
            sizes["data"] = sharding.grid_size(batched)
        if len(set(sizes.values())) != 1:
            raise ValueError(f"keys, positions and data must share the grid axis, got {sizes}")
        for leaf in jax.tree.leaves(positions):
            if not isinstance(leaf, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(leaf))):
                raise ValueError("positions contain NaN or inf")
        if mesh is None:
            return compiled(keys, positions, data)
        return sharding.run_sharded(compiled, keys, positions, data, mesh=mesh)

    return sweep


def lockstep_efficiency(num_integration_steps) -> float:
    """Useful fraction of vmapped NUTS work: Σ_draws mean_chains(steps) / Σ_draws max_chains(steps).

    Args:
      num_integration_steps: (num_chains, num_samples) leapfrog steps per draw of chains that ran
        in one vmapped batch. 1.0 = no waiting; 0.1 = nine tenths of the lanes idle on average.
    """
    steps = np.asarray(num_integration_steps, dtype=float)
    if steps.ndim != 2:
        raise ValueError(
            f"num_integration_steps must be (num_chains, num_samples), got {steps.shape}"
        )
    return float(steps.mean(axis=0).sum() / steps.max(axis=0).sum())


__all__ = [
    "DrawInfo",
    "SweepResult",
    "build_nuts_chain",
    "make_nuts_sweep",
    "build_chees_group",
    "make_chees_sweep",
    "lockstep_efficiency",
]
