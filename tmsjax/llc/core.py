r"""The core of the λ̂ engine: one estimate, unvalidated and unjitted, so that it vmaps.

The estimator of Lau et al. (2023) is

.. math:: \hat\lambda(w^*) = n\beta\,\big(\mathbb{E}_w[L_n(w)] - L_n(w^*)\big),
          \qquad \beta = 1/\log n,

the expectation over
:math:`p(w) \propto \exp(-n\beta L_n(w) - \frac\gamma2\lVert w - w^*\rVert^2)`, taken with
chains of the settings' sampler (:class:`tmsjax.sampling.sgld.SGLD`) that all start at :math:`w^*`.
`n` is the dataset size, never the batch size. The chains are vmapped inside one
``lax.scan``; :func:`sample_llc` takes nβ, ε, γ, the centre and the data as traced arguments, so the
entry points (:mod:`tmsjax.llc.api`) vmap it again over grids and over runs × checkpoints.

References:
  Lau, Furman, Wang, Murfet, Wei, "The local learning coefficient: a singularity-aware complexity
  measure" (2023), arXiv:2308.12108.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tmsjax.llc.health import MIN_ACCEPTANCE, LLCDiagnostics, diagnose
from tmsjax.llc.settings import ChainSettings
from tmsjax.types import Array, Bool, Float, PRNGKey, PyTree

LossFn = Callable[[PyTree, Any], Float[Array, ""]]


class LLCResult(NamedTuple):
    r"""An LLC estimate with its error bar, traces and diagnostics (batched: leading axes first).

    Attributes:
      llc: the pooled estimate :math:`n\beta(\bar L - L_n(w^*))` over all chains' draws.
      llc_per_chain: the same per chain.
      stderr: standard error of `llc` from the spread of the per-chain estimates,
        std(per chain) / sqrt(num_chains) (NaN for one chain).
      init_loss: :math:`L_n(w^*)` on the full dataset.
      nbeta: the inverse temperature times n used.
      loss_trace: the loss after every step, (num_chains, num_steps): :math:`L_n` in full-batch
        mode, the step's minibatch loss (at the pre-step position) otherwise.
      draw_losses: the losses entering the estimate, (num_chains, num_draws).
      diagnostics: per-chain health; :func:`tmsjax.llc.usable` decides, :func:`tmsjax.llc.verdict`
        describes.
    """

    llc: Float[Array, "..."]
    llc_per_chain: Float[Array, "... num_chains"]
    stderr: Float[Array, "..."]
    init_loss: Float[Array, "..."]
    nbeta: Float[Array, "..."]
    loss_trace: Float[Array, "... num_chains num_steps"]
    draw_losses: Float[Array, "... num_chains num_draws"]
    diagnostics: LLCDiagnostics


class _StepOutput(NamedTuple):
    """What the scan records per step, for all chains."""

    trace: Float[Array, " num_chains"]
    draw: Float[Array, " num_chains"]
    distance: Float[Array, " num_chains"]
    gradient_product: Float[Array, " num_chains"]
    curvature_trace: Float[Array, " num_chains"]
    acceptance: Float[Array, " num_chains"]
    is_finite: Bool[Array, " num_chains"]


# ----------------------------------------------------------------------------------------------
# Data helpers


def num_data_of(data: Any):
    """The dataset size n: ``data.num_data`` where the data defines it (a padded dataset with a
    mask), else the leading axis of its leaves."""
    if hasattr(data, "num_data"):
        return data.num_data
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("data has no arrays: pass num_data, or nbeta in the settings")
    return leaves[0].shape[0]


def default_nbeta(num_data) -> Float[Array, ""]:
    r"""The paper's inverse temperature: :math:`n\beta = n / \log n`."""
    num_data = jnp.asarray(num_data, dtype=jnp.result_type(float))
    return num_data / jnp.log(num_data)


def default_minibatch(key: PRNGKey, data: Any, batch_size: int) -> Any:
    """``data.minibatch(key, batch_size)`` where the data defines it (a padded dataset draws only
    its real rows), else rows drawn uniformly with replacement (the leaves' leading axis)."""
    if hasattr(data, "minibatch"):
        return data.minibatch(key, batch_size)
    num_rows = jax.tree.leaves(data)[0].shape[0]
    index = jax.random.randint(key, (batch_size,), 0, num_rows)
    return jax.tree.map(lambda leaf: leaf[index], data)


# ----------------------------------------------------------------------------------------------
# The estimate

#: At most this fraction of the steps pays a Hessian-vector product for the step-bias estimate's
#: curvature trace (every draw when draws are sparse, as on long thinned chains; every k-th draw
#: of a dense chain, whose steps would otherwise cost about twice as much).
TRACE_FRACTION = 0.25


def trace_mask(chains: ChainSettings) -> np.ndarray:
    """(num_steps,) bool: the draws where the curvature trace is measured (module constant)."""
    mask = chains.draw_mask
    budget = max(1, int(TRACE_FRACTION * chains.num_steps))
    stride = max(1, -(-chains.num_draws // budget))  # ceil: at most `budget` traced draws
    traced = np.zeros_like(mask)
    traced[np.flatnonzero(mask)[::stride]] = True
    return traced


def sample_llc(
    key: PRNGKey,
    center: PyTree,
    data: Any,
    nbeta,
    step_size,
    localization,
    *,
    loss_fn: LossFn,
    chains: ChainSettings = ChainSettings(),
    minibatch_fn: Callable | None = None,
) -> LLCResult:
    r"""One LLC estimate (the pure core: no validation, no jit; vmap it over anything traced).

    .. math:: \hat\lambda = n\beta\,\big(\overline{L_n(w)} - L_n(w^*)\big),

    the mean over every chain's draws (after burn-in, thinned). Each step all chains share one
    minibatch (as devinterp does) and draw their own noise.

    Args:
      key: PRNG key.
      center: :math:`w^*`, a pytree of floating arrays (for a model with static parts, see
        :func:`tmsjax.llc.partition_model`).
      data: the full dataset passed to `loss_fn` (any pytree; None for a potential).
      nbeta: :math:`n\beta`.
      step_size: ε.
      localization: γ.
      loss_fn: ``loss_fn(params, data) -> scalar``.
      chains: the static settings (:attr:`tmsjax.llc.LLCSettings.chains`): chains, steps, burn-in,
        thinning, batch size, draw loss, sampler.
      minibatch_fn: ``minibatch_fn(key, data, batch_size) -> batch`` (default
        :func:`default_minibatch`).

    Returns:
      An :class:`LLCResult`.
    """
    full_batch = chains.full_batch
    sampler = chains.sampler
    minibatch_fn = minibatch_fn or default_minibatch
    init_loss = loss_fn(center, data)
    num_chains = chains.num_chains
    dtype = init_loss.dtype
    nbeta = jnp.asarray(nbeta, dtype)
    step_size = jnp.asarray(step_size, dtype)
    localization = jnp.asarray(localization, dtype)

    positions = jax.tree.map(lambda c: jnp.broadcast_to(c, (num_chains, *jnp.shape(c))), center)
    init = functools.partial(sampler.init, loss_fn=loss_fn, full_batch=full_batch)
    state = jax.vmap(init, in_axes=(0, None))(positions, data)
    step = functools.partial(sampler.step, loss_fn=loss_fn, full_batch=full_batch)
    step_chains = jax.vmap(step, in_axes=(0, 0, None, None, None, None, None))
    draw_mask = chains.draw_mask
    measure_full = (not full_batch) and chains.draw_loss == "full"
    # The SGLD discretisation-bias estimate (health.diagnose) needs the full-data gradient at the
    # draws; the other samplers' biases are judged by their acceptance instead.
    estimates_bias = bool(getattr(sampler, "estimates_bias", False))
    traces_curvature = estimates_bias and chains.trace_curvature
    value_and_grad = jax.vmap(jax.value_and_grad(loss_fn), in_axes=(0, None))

    def squared_distance(position):
        return sum(jnp.sum((w - c) ** 2) for w, c in zip(jax.tree.leaves(position), center_leaves))

    def gradient_product(position, grad):
        r""":math:`\nabla(n\beta L_n)\cdot\nabla U`, U = nβ L_n + (γ/2)‖w − w*‖²."""
        pairs = zip(jax.tree.leaves(position), jax.tree.leaves(grad), center_leaves)
        return sum(jnp.sum(nbeta * g * (nbeta * g + localization * (w - c))) for w, g, c in pairs)

    def gradient_noise(grad, batch_grad):
        r""":math:`n\beta^2\lVert\nabla L_m - \nabla L_n\rVert^2` (m a batch): in the step-bias
        slope it stands for the minibatch noise's :math:`n\beta^2\,\mathrm{tr}\,\Sigma_m`."""
        pairs = zip(jax.tree.leaves(grad), jax.tree.leaves(batch_grad))
        return nbeta**2 * sum(jnp.sum((b - g) ** 2) for g, b in pairs)

    def curvature_trace(key, position):
        r"""Hutchinson's :math:`v^\top\nabla^2(n\beta L_n)\,v`, v Rademacher: an unbiased
        estimate of :math:`\Delta(n\beta L_n)` at the position (full data), independent of the
        draw's loss given the position, so its covariance with the loss is that of the trace."""
        leaves, treedef = jax.tree.flatten(position)
        keys = jax.random.split(key, len(leaves))
        signs = [jax.random.rademacher(k, jnp.shape(x), x.dtype) for k, x in zip(keys, leaves)]
        direction = jax.tree.unflatten(treedef, signs)
        _, hvp = jax.jvp(lambda p: jax.grad(loss_fn)(p, data), (position,), (direction,))
        pairs = zip(signs, jax.tree.leaves(hvp))
        return nbeta * sum(jnp.sum(v * h) for v, h in pairs)

    center_leaves = jax.tree.leaves(center)
    per_chain_distance = jax.vmap(squared_distance)
    per_chain_product = jax.vmap(gradient_product)
    per_chain_trace = jax.vmap(curvature_trace)
    per_chain_noise = jax.vmap(gradient_noise)
    nans = jnp.full((num_chains,), jnp.nan, dtype)

    def traces_at_draws(step_key, position, is_traced):
        """The curvature traces at the traced draws (an HVP per chain), NaN elsewhere."""
        if not traces_curvature:
            return nans
        # fold_in, not split: the chains' own keys stay those of the runs before this estimate.
        keys = jax.random.split(jax.random.fold_in(step_key, 1), num_chains)
        return jax.lax.cond(is_traced, per_chain_trace, lambda k, p: nans, keys, position)

    def one_step(state, inputs):
        step_key, is_draw, is_traced = inputs
        key_batch, key_chains = jax.random.split(step_key)
        batch = data if full_batch else minibatch_fn(key_batch, data, chains.batch_size)
        chain_keys = jax.random.split(key_chains, num_chains)
        previous = state.position
        state, info = step_chains(chain_keys, state, batch, center, nbeta, step_size, localization)
        trace = info.loss if full_batch else info.batch_loss
        if full_batch:
            # The state's loss and gradient are L_n's at the new position, where the draw is.
            draw, distance = trace, per_chain_distance(state.position)
            product = per_chain_product(state.position, state.grad) if estimates_bias else nans
        elif measure_full:
            # `is_draw` comes from the scan's inputs, not from a vmapped value, so this stays a real
            # branch under vmap: the full-data loss (and gradient) is paid only at draws.
            def measure(position):
                if estimates_bias:
                    loss, grad = value_and_grad(position, data)
                    # A fresh batch at the same position: ‖g_batch − g‖² is an unbiased draw of
                    # the trace of the step's gradient-noise covariance, whatever minibatch_fn does.
                    key_noise = jax.random.fold_in(step_key, 2)
                    fresh = minibatch_fn(key_noise, data, chains.batch_size)
                    _, batch_grad = value_and_grad(position, fresh)
                    product = per_chain_product(position, grad)
                    return loss, product + per_chain_noise(grad, batch_grad)
                return jax.vmap(loss_fn, in_axes=(0, None))(position, data), nans

            draw, product = jax.lax.cond(is_draw, measure, lambda p: (nans, nans), state.position)
            distance = per_chain_distance(state.position)
        else:
            # Batch-loss draws are the pre-step position's; no full-data gradient there.
            draw, distance, product = trace, per_chain_distance(previous), nans
        if full_batch or measure_full:
            curvature = traces_at_draws(step_key, state.position, is_traced)
        else:
            curvature = nans
        output = _StepOutput(
            trace, draw, distance, product, curvature, info.acceptance, info.is_finite
        )
        return state, output

    step_keys = jax.random.split(key, chains.num_steps)
    inputs = (step_keys, jnp.asarray(draw_mask), jnp.asarray(trace_mask(chains)))
    _, out = jax.lax.scan(one_step, state, inputs)
    out = jax.tree.map(lambda x: x.T, out)  # (chains, steps)
    # Full-data draws are measured at w_{t+1}; batch-loss draws at the pre-step w_t (as devinterp).
    draws = out.draw[:, draw_mask]
    llc_per_chain = nbeta * (jnp.mean(draws, axis=-1) - init_loss)
    llc = nbeta * (jnp.mean(draws) - init_loss)
    if num_chains > 1:
        stderr = jnp.std(llc_per_chain, ddof=1) / jnp.sqrt(num_chains)
    else:
        stderr = jnp.full((), jnp.nan, dtype)
    mean_acceptance = jnp.mean(out.acceptance[:, chains.num_burnin :], axis=-1)
    is_finite = jnp.all(out.is_finite, axis=-1)
    min_acceptance = getattr(sampler, "min_acceptance", MIN_ACCEPTANCE)
    diagnostics = diagnose(
        draws,
        init_loss,
        nbeta,
        llc_per_chain,
        mean_acceptance,
        is_finite,
        min_acceptance,
        distances=out.distance[:, draw_mask],
        gradient_products=out.gradient_product[:, draw_mask] if estimates_bias else None,
        curvature_traces=out.curvature_trace[:, draw_mask] if traces_curvature else None,
        step_size=step_size,
        localization=localization,
    )
    return LLCResult(llc, llc_per_chain, stderr, init_loss, nbeta, out.trace, draws, diagnostics)


__all__ = ["LLCResult", "LossFn", "default_minibatch", "default_nbeta", "num_data_of", "sample_llc"]
