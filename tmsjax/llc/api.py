r"""Local learning coefficient (LLC) estimation with localized tempered SGLD, for any loss of a pytree.

The estimator of Lau et al. (2023) is

.. math:: \hat\lambda(w^*) = n\beta\,\big(\mathbb{E}_w[L_n(w)] - L_n(w^*)\big), \qquad \beta = 1/\log n,

the expectation over :math:`p(w) \propto \exp(-n\beta L_n(w) - \frac\gamma2\lVert w - w^*\rVert^2)`, taken
with SGLD chains (:mod:`tmsjax.sampling.sgld`) that all start at :math:`w^*`. `n` is the dataset size,
never the batch size. Everything runs in one compiled program: chains are vmapped inside one
``lax.scan``; a grid over (ε, γ, nβ) (:func:`llc_grid`) and many centres (:func:`llc_along_training`,
runs × checkpoints) vmap the same estimator again.

Each estimate comes with health verdicts that a user can read without plotting (per chain, as a bit
mask in :attr:`LLCDiagnostics.flags`; :func:`verdict` turns it into words):

- ``non-finite``: a NaN/inf position or loss (the chain blew up; ε far too large).
- ``escaped``: more than :data:`ESCAPE_FRACTION` of the draws lie below :math:`L_n(w^*)`, or the
  chain's λ̂ is negative. At a local minimum the draws sit above :math:`L_n(w^*)` (for a regular
  minimum :math:`n\beta(L_n(w) - L_n(w^*))` is about Gamma(d/2)-distributed, so essentially never below
  0); many draws below it mean the chain slid off a saddle or high-loss plateau into a lower phase,
  and λ̂ is no longer the LLC of :math:`w^*` (Chen et al. 2023 see negative λ̂ at high-loss points).
- ``drifting``: the draws are not stationary: the second-half mean of :math:`n\beta L_n` differs
  from the first-half mean by more than :data:`DRIFT_Z` standard errors (batch means of the second
  half, where the chain should be stationary) *and* by more
  than :data:`DRIFT_RELATIVE` of the chain's λ̂ (at least 0.1), so that only drifts that matter are
  named. Usually: too short a burn-in, or a slow escape.
- ``step size too large``: the mean MALA acceptance estimate is below :data:`MIN_ACCEPTANCE`; "too large
  an ε biases λ̂ upward" (Euler discretisation inflates the variance by about εk/4 along a direction of
  curvature k).

References:
  Lau, Furman, Wang, Murfet, Wei, "The local learning coefficient: a singularity-aware complexity
  measure" (2023), arXiv:2308.12108.
  Chen, Lau, Mendel, Wei, Murfet, "Dynamical versus Bayesian phase transitions in a toy model of
  superposition" (2023), arXiv:2310.06301, §5 and App. K.
"""

import functools
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tmsjax.checks import check_positive_int
from tmsjax.sampling import sgld
from tmsjax.types import Array, Bool, Float, Int, PRNGKey, PyTree

LossFn = Callable[[PyTree, Any], Float[Array, ""]]

#: A chain escaped when more than this fraction of its draws lie below L_n(w*) (see module docstring).
ESCAPE_FRACTION = 0.1
#: Drift needs a z-score above this. The standard error comes from 20 batch means (19 degrees of
#: freedom), so z is t-distributed with heavy tails: 5 keeps false alarms near 1e-4 per stationary
#: chain (4 would give 3e-3, i.e. a few percent of 16-chain estimates)...
DRIFT_Z = 5.0
#: ...and a size above this fraction of the chain's λ̂ (or 0.1 absolute): drifts that move the answer.
DRIFT_RELATIVE = 0.1
#: Below this mean MALA acceptance the step is too large. At acceptance 0.9 the variance inflation
#: εk/4 of the stiffest directions is a few percent (measured on Gaussians in tests/test_llc.py).
MIN_ACCEPTANCE = 0.9

#: Cells of a grid / along-training call vmapped together on CPU (measured: see benchmarks/llc_devinterp.py).
DEFAULT_CELL_BATCH = 8

NON_FINITE, ESCAPED, DRIFTING, LOW_ACCEPTANCE = 1, 2, 4, 8
PROBLEMS = {NON_FINITE: "non-finite", ESCAPED: "escaped", DRIFTING: "drifting", LOW_ACCEPTANCE: "step size too large"}


class LLCConfig(NamedTuple):
    """Run-wide (static) settings of an estimate: they fix the shapes of the compiled program.

    Attributes:
      num_chains: independent SGLD chains, all started at w*.
      num_steps: SGLD steps per chain, burn-in included.
      num_burnin: leading steps whose draws are discarded.
      thinning: keep every `thinning`-th step after burn-in as a draw.
      batch_size: minibatch size; None for full batch (every step sees the whole dataset).
      draw_loss: "full" measures each draw's loss on the whole dataset (exact; in minibatch mode one
        extra loss evaluation per draw); "batch" uses the step's minibatch loss (devinterp's choice).
      estimate_acceptance: in minibatch mode, spend a second gradient per step on the MALA acceptance
        estimate (always on, and free, in full-batch mode).
    """

    num_chains: int = 4
    num_steps: int = 500
    num_burnin: int = 0
    thinning: int = 1
    batch_size: int | None = None
    draw_loss: str = "full"
    estimate_acceptance: bool = True

    @property
    def num_draws(self) -> int:
        return len(range(self.num_burnin, self.num_steps, self.thinning))


class LLCDiagnostics(NamedTuple):
    """Per-chain health of an estimate (leading axes of a grid or of runs × checkpoints come first).

    Attributes:
      is_finite: every position and loss stayed finite.
      escape_fraction: fraction of draws with :math:`L_n(w) < L_n(w^*)`.
      drift: :math:`n\\beta` × (second-half mean − first-half mean) of the draws, in λ units.
      drift_z: that difference over its batch-means standard error.
      acceptance: mean MALA acceptance estimate over the post-burn-in steps (NaN if not estimated).
      flags: bit mask of problems (see :data:`PROBLEMS`); 0 is healthy.
    """

    is_finite: Bool[Array, "... num_chains"]
    escape_fraction: Float[Array, "... num_chains"]
    drift: Float[Array, "... num_chains"]
    drift_z: Float[Array, "... num_chains"]
    acceptance: Float[Array, "... num_chains"]
    flags: Int[Array, "... num_chains"]


class LLCResult(NamedTuple):
    r"""An LLC estimate with its error bar, traces and diagnostics.

    Attributes:
      llc: the pooled estimate :math:`n\beta(\bar L - L_n(w^*))` over all chains' draws.
      llc_per_chain: the same per chain.
      stderr: standard error of `llc` from the spread of the per-chain estimates,
        std(per chain) / sqrt(num_chains) (NaN for one chain).
      init_loss: :math:`L_n(w^*)` on the full dataset.
      nbeta: the inverse temperature times n used.
      loss_trace: the loss after every step, (num_chains, num_steps): :math:`L_n` in full-batch mode,
        the step's minibatch loss (at the pre-step position) otherwise.
      draw_losses: the losses entering the estimate, (num_chains, num_draws).
      diagnostics: per-chain health; :func:`verdict` summarises it.
    """

    llc: Float[Array, "..."]
    llc_per_chain: Float[Array, "... num_chains"]
    stderr: Float[Array, "..."]
    init_loss: Float[Array, "..."]
    nbeta: Float[Array, "..."]
    loss_trace: Float[Array, "... num_chains num_steps"]
    draw_losses: Float[Array, "... num_chains num_draws"]
    diagnostics: LLCDiagnostics


# ----------------------------------------------------------------------------------------------
# Losses and data helpers


def num_data_of(data: Any):
    """The dataset size n: ``data.num_data`` where the data defines it (a padded dataset with a mask),
    else the leading axis of its leaves."""
    if hasattr(data, "num_data"):
        return data.num_data
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("data has no arrays: pass num_data or nbeta explicitly")
    return leaves[0].shape[0]


def default_nbeta(num_data) -> Float[Array, ""]:
    r"""The paper's inverse temperature: :math:`n\beta = n / \log n`."""
    num_data = jnp.asarray(num_data, dtype=jnp.result_type(float))
    return num_data / jnp.log(num_data)


def default_minibatch(key: PRNGKey, data: Any, batch_size: int) -> Any:
    """``data.minibatch(key, batch_size)`` where the data defines it (a padded dataset draws only its
    real rows), else rows drawn uniformly with replacement from the leading axis of every leaf."""
    if hasattr(data, "minibatch"):
        return data.minibatch(key, batch_size)
    num_rows = jax.tree.leaves(data)[0].shape[0]
    index = jax.random.randint(key, (batch_size,), 0, num_rows)
    return jax.tree.map(lambda leaf: leaf[index], data)


# ----------------------------------------------------------------------------------------------
# The core: one estimate, unvalidated and unjitted, so that it vmaps over anything traced.


def _batch_means_variance(draws: Float[Array, "num_chains num"], num_batches: int = 20):
    """Variance of the mean of each row, from batch means (accounts for autocorrelation)."""
    length = draws.shape[-1]
    if length < 2 * num_batches:
        # Too few draws for batches: the naive iid variance (an underestimate when correlated).
        return jnp.var(draws, axis=-1, ddof=1) / max(length, 1) if length > 1 else jnp.zeros(draws.shape[:-1])
    size = length // num_batches
    means = draws[..., : size * num_batches].reshape(*draws.shape[:-1], num_batches, size).mean(-1)
    return jnp.var(means, axis=-1, ddof=1) / num_batches


def _diagnose(draws, init_loss, nbeta, llc_per_chain, acceptance, is_finite) -> LLCDiagnostics:
    num_draws = draws.shape[-1]
    escape_fraction = jnp.mean(draws < init_loss, axis=-1)
    half = num_draws // 2
    if half >= 1:
        first, second = draws[:, :half], draws[:, num_draws - half :]
        difference = jnp.mean(second, -1) - jnp.mean(first, -1)
        # Both half-means get the second half's batch-means variance: a trend inside the first half
        # would inflate its own batch means and hide the very drift we test for.
        error = jnp.sqrt(2 * _batch_means_variance(second))
        drift = nbeta * difference
        # A zero error with a zero difference (a frozen chain) is no evidence of drift.
        drift_z = jnp.where(error > 0, difference / jnp.where(error > 0, error, 1.0), jnp.where(difference == 0, 0.0, jnp.inf))
    else:
        drift = drift_z = jnp.zeros(draws.shape[:-1], draws.dtype)
    is_finite = is_finite & jnp.all(jnp.isfinite(draws), axis=-1)
    drifting = (jnp.abs(drift_z) > DRIFT_Z) & (jnp.abs(drift) > DRIFT_RELATIVE * jnp.maximum(jnp.abs(llc_per_chain), 1.0))
    escaped = (escape_fraction > ESCAPE_FRACTION) | (llc_per_chain < 0)
    low_acceptance = acceptance < MIN_ACCEPTANCE  # False for NaN (not estimated)
    flags = (
        jnp.where(~is_finite, NON_FINITE, 0)
        | jnp.where(is_finite & escaped, ESCAPED, 0)
        | jnp.where(is_finite & drifting, DRIFTING, 0)
        | jnp.where(is_finite & low_acceptance, LOW_ACCEPTANCE, 0)
    )
    return LLCDiagnostics(is_finite, escape_fraction, drift, drift_z, acceptance, flags)


def sample_llc(
    key: PRNGKey,
    center: PyTree,
    data: Any,
    nbeta,
    step_size,
    localization,
    *,
    loss_fn: LossFn,
    config: LLCConfig = LLCConfig(),
    minibatch_fn: Callable | None = None,
) -> LLCResult:
    r"""One LLC estimate (the pure core: no validation, no jit; vmap it over anything traced).

    Args:
      key: PRNG key.
      center: :math:`w^*`, any pytree.
      data: the full dataset passed to `loss_fn` (any pytree; None for a potential).
      nbeta: :math:`n\beta`.
      step_size: ε.
      localization: γ.
      loss_fn: ``loss_fn(params, data) -> scalar``.
      config: static settings (chains, steps, burn-in, thinning, batch size).
      minibatch_fn: ``minibatch_fn(key, data, batch_size) -> batch`` (default :func:`default_minibatch`).

    Returns:
      An :class:`LLCResult`.
    """
    full_batch = config.batch_size is None
    minibatch_fn = minibatch_fn or default_minibatch
    kernel = sgld.build_kernel(loss_fn, full_batch=full_batch, estimate_acceptance=config.estimate_acceptance)
    init_loss = loss_fn(center, data)
    num_chains, num_steps = config.num_chains, config.num_steps
    dtype = init_loss.dtype
    nbeta = jnp.asarray(nbeta, dtype)
    step_size = jnp.asarray(step_size, dtype)
    localization = jnp.asarray(localization, dtype)

    positions = jax.tree.map(lambda c: jnp.broadcast_to(c, (num_chains, *jnp.shape(c))), center)
    if full_batch:
        state = jax.vmap(sgld.init, in_axes=(0, None, None))(positions, loss_fn, data)
    else:
        # Loss and gradient are recomputed on every new minibatch; the state's copies are placeholders.
        state = sgld.SGLDState(positions, jnp.zeros((num_chains,), dtype), positions)
    step_kernel = jax.vmap(kernel, in_axes=(0, 0, None, None, None, None, None))
    draw_mask = np.zeros(num_steps, dtype=bool)
    draw_mask[config.num_burnin :: config.thinning] = True
    measure_full = (not full_batch) and config.draw_loss == "full"

    def one_step(state, inputs):
        step_key, is_draw = inputs
        key_batch, key_chains = jax.random.split(step_key)
        # All chains share a minibatch per step (as devinterp does); the noise differs per chain.
        batch = data if full_batch else minibatch_fn(key_batch, data, config.batch_size)
        state, info = step_kernel(jax.random.split(key_chains, num_chains), state, batch, center, nbeta, step_size, localization)
        trace = info.loss if full_batch else info.batch_loss
        if measure_full:
            # `is_draw` comes from the scan's inputs, not from a vmapped value, so this stays a real
            # branch under vmap: the full-data loss is paid only at draws.
            draw = jax.lax.cond(
                is_draw,
                lambda p: jax.vmap(loss_fn, in_axes=(0, None))(p, data),
                lambda p: jnp.full((num_chains,), jnp.nan, dtype),
                state.position,
            )
        else:
            draw = trace
        return state, (trace, draw, info.acceptance, info.is_finite)

    step_keys = jax.random.split(key, num_steps)
    _, (trace, draws, acceptance, is_finite) = jax.lax.scan(one_step, state, (step_keys, jnp.asarray(draw_mask)))
    trace, draws, acceptance, is_finite = (x.T for x in (trace, draws, acceptance, is_finite))  # (chains, steps)
    # Full-data draws are measured at w_{t+1}; batch-loss draws at the pre-step w_t (as devinterp).
    draws = draws[:, draw_mask]
    llc_per_chain = nbeta * (jnp.mean(draws, axis=-1) - init_loss)
    llc = nbeta * (jnp.mean(draws) - init_loss)
    if num_chains > 1:
        stderr = jnp.std(llc_per_chain, ddof=1) / jnp.sqrt(num_chains)
    else:
        stderr = jnp.full((), jnp.nan, dtype)
    after_burnin = acceptance[:, config.num_burnin :]
    mean_acceptance = jnp.mean(after_burnin, axis=-1)
    diagnostics = _diagnose(draws, init_loss, nbeta, llc_per_chain, mean_acceptance, jnp.all(is_finite, axis=-1))
    return LLCResult(llc, llc_per_chain, stderr, init_loss, nbeta, trace, draws, diagnostics)


# ----------------------------------------------------------------------------------------------
# Validation shared by the public entry points


def _check_config(num_chains, num_steps, num_burnin, thinning, batch_size, draw_loss, estimate_acceptance, data) -> LLCConfig:
    for name, value in (("num_chains", num_chains), ("num_steps", num_steps), ("thinning", thinning)):
        check_positive_int(name, value)
    if num_burnin != 0:
        try:
            check_positive_int("num_burnin", num_burnin)
        except ValueError:
            raise ValueError(f"num_burnin must be a non-negative integer, got {num_burnin!r}") from None
    if int(num_burnin) >= int(num_steps):
        raise ValueError(f"num_burnin={num_burnin} leaves no draws out of num_steps={num_steps}")
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)
        if data is None:
            raise ValueError("batch_size needs data to draw minibatches from")
    if draw_loss not in ("full", "batch"):
        raise ValueError(f"draw_loss must be 'full' or 'batch', got {draw_loss!r}")
    return LLCConfig(
        int(num_chains), int(num_steps), int(num_burnin), int(thinning),
        None if batch_size is None else int(batch_size), draw_loss, bool(estimate_acceptance),
    )


def _check_positive_values(name: str, value) -> np.ndarray:
    array = np.asarray(value, dtype=float)
    if array.ndim > 1:
        raise ValueError(f"{name} must be a number or a 1-d sequence, got shape {array.shape}")
    if array.size == 0 or not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"{name} must be finite and positive, got {value!r}")
    return array


def _check_nonnegative(name: str, value) -> np.ndarray:
    """γ may be 0 (no localization), never negative."""
    array = np.asarray(value, dtype=float)
    if array.ndim > 1 or array.size == 0 or not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must be finite and non-negative (a number or 1-d sequence), got {value!r}")
    return array


def _check_center(center: PyTree, name: str = "center") -> None:
    leaves = jax.tree.leaves(center)
    if not leaves:
        raise ValueError(f"{name} has no arrays")
    for leaf in leaves:
        leaf = jnp.asarray(leaf)
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(f"{name} must hold floating arrays, got dtype {leaf.dtype}")
        if not bool(jnp.all(jnp.isfinite(leaf))):
            raise ValueError(f"{name} contains NaN or inf values")


def _check_cell_batch(cell_batch):
    return None if cell_batch is None else check_positive_int("cell_batch", cell_batch)


def _resolve_nbeta(nbeta, num_data, data):
    if nbeta is not None:
        return _check_positive_values("nbeta", nbeta)
    if num_data is None:
        if data is None:
            raise ValueError("nbeta is None and there is no data to take n from: pass nbeta or num_data")
        num_data = num_data_of(data)
    if not np.all(np.isfinite(np.asarray(num_data, dtype=float))) or np.any(np.asarray(num_data) <= 1):
        raise ValueError(f"num_data must be finite and exceed 1 for the default nbeta = n / log n, got {num_data!r}")
    return _check_positive_values("nbeta", default_nbeta(num_data))


@functools.partial(jax.jit, static_argnames=("loss_fn", "config", "minibatch_fn"))
def _estimate_jit(key, center, data, nbeta, step_size, localization, *, loss_fn, config, minibatch_fn):
    return sample_llc(key, center, data, nbeta, step_size, localization, loss_fn=loss_fn, config=config, minibatch_fn=minibatch_fn)


def estimate_llc(
    key: PRNGKey,
    loss_fn: LossFn,
    center: PyTree,
    data: Any = None,
    *,
    nbeta: float | None = None,
    num_data: int | None = None,
    step_size: float = 1e-3,
    localization: float = 1.0,
    num_chains: int = 4,
    num_steps: int = 500,
    num_burnin: int = 0,
    thinning: int = 1,
    batch_size: int | None = None,
    draw_loss: str = "full",
    estimate_acceptance: bool = True,
    minibatch_fn: Callable | None = None,
) -> LLCResult:
    r"""Estimates the local learning coefficient of `loss_fn` at `center`.

    .. math:: \hat\lambda(w^*) = n\beta\,\big(\mathbb{E}_w[L_n(w)] - L_n(w^*)\big), \quad
              p(w) \propto e^{-n\beta L_n(w) - \frac\gamma2\lVert w - w^*\rVert^2},

    sampled by `num_chains` SGLD chains started at :math:`w^*`, vmapped inside one ``lax.scan`` and
    compiled once per (loss_fn, shapes, static settings). Defaults are the paper's protocol (full batch,
    ε = 1e-3, γ = 1, 500 steps, nβ = n / log n).

    Args:
      key: PRNG key.
      loss_fn: ``loss_fn(params, data) -> scalar`` (your model's loss; the TMS wing has
        :mod:`tmsjax.tms.losses`). Pass a module-level function: a new lambda each call recompiles.
      center: :math:`w^*`, any pytree of floating arrays (its dtype sets the sampling precision).
      data: the full dataset, any pytree, or None. Data that defines ``num_data`` and
        ``minibatch(key, batch_size)`` (a padded dataset with a mask) is read through them.
      nbeta: :math:`n\beta`; default :math:`n/\log n` with n from `num_data` or `data`.
      num_data: n, when it cannot be read from `data`.
      step_size: ε.
      localization: γ.
      num_chains: number of chains.
      num_steps: steps per chain, burn-in included.
      num_burnin: discarded leading steps.
      thinning: keep every `thinning`-th step after burn-in.
      batch_size: minibatch size; None for full batch.
      draw_loss: "full" (each draw's loss on the whole dataset) or "batch" (its minibatch loss).
      estimate_acceptance: MALA acceptance diagnostic in minibatch mode (one more gradient per step).
      minibatch_fn: ``(key, data, batch_size) -> batch``; default uniform rows with replacement.

    Returns:
      An :class:`LLCResult`; ``verdict(result)`` says "ok" or names the problem.

    Raises:
      ValueError: naming the bad argument (non-positive ε, γ, nβ, counts; NaN centre; no n).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from tmsjax.llc import estimate_llc, verdict
      >>> def loss_fn(w, data):          # a regular quadratic in 3 dimensions: λ = 3/2
      ...     return jnp.sum(w**2)
      >>> result = estimate_llc(jax.random.key(0), loss_fn, jnp.zeros(3), nbeta=100.0,
      ...                       step_size=1e-3, num_chains=4, num_steps=2000, num_burnin=200)
      >>> abs(float(result.llc) - 1.5) < 0.3, verdict(result)
      (True, 'ok')
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    _check_center(center)
    config = _check_config(num_chains, num_steps, num_burnin, thinning, batch_size, draw_loss, estimate_acceptance, data)
    nbeta = _resolve_nbeta(nbeta, num_data, data)
    step_size = _check_positive_values("step_size", step_size)
    localization = _check_nonnegative("localization", localization)
    for name, value in (("nbeta", nbeta), ("step_size", step_size), ("localization", localization)):
        if np.ndim(value) != 0:
            raise ValueError(f"{name} must be a scalar here (use llc_grid for a sweep), got shape {np.shape(value)}")
    return _estimate_jit(key, center, data, nbeta, step_size, localization, loss_fn=loss_fn, config=config, minibatch_fn=minibatch_fn)


# ----------------------------------------------------------------------------------------------
# Hyperparameter grids


class LLCGrid(NamedTuple):
    """A sweep over (ε, γ, nβ): every field of `result` has leading axes (step_sizes, localizations, nbetas)."""

    step_sizes: np.ndarray
    localizations: np.ndarray
    nbetas: np.ndarray
    result: LLCResult


def _map_cells(fn, xs, cell_batch):
    """vmap `fn` over the leading axis of `xs` in groups of `cell_batch` cells (``lax.map``).

    All cells at once would keep (cells × chains × n) activations live per step and fall out of
    the CPU caches; groups keep the working set small while each group still runs vmapped.
    """
    num_cells = jax.tree.leaves(xs)[0].shape[0]
    if cell_batch is None or cell_batch >= num_cells:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=cell_batch)


@functools.partial(jax.jit, static_argnames=("loss_fn", "config", "minibatch_fn", "cell_batch"))
def _grid_jit(keys, center, data, nbetas, step_sizes, localizations, *, loss_fn, config, minibatch_fn, cell_batch):
    core = functools.partial(sample_llc, loss_fn=loss_fn, config=config, minibatch_fn=minibatch_fn)

    def cell(inputs):
        key, nbeta, step_size, localization = inputs
        return core(key, center, data, nbeta, step_size, localization)

    return _map_cells(cell, (keys, nbetas, step_sizes, localizations), cell_batch)


def llc_grid(
    key: PRNGKey,
    loss_fn: LossFn,
    center: PyTree,
    data: Any = None,
    *,
    step_sizes,
    localizations,
    nbetas=None,
    num_data: int | None = None,
    num_chains: int = 4,
    num_steps: int = 500,
    num_burnin: int = 0,
    thinning: int = 1,
    batch_size: int | None = None,
    draw_loss: str = "full",
    estimate_acceptance: bool = True,
    minibatch_fn: Callable | None = None,
    cell_batch: int | None = DEFAULT_CELL_BATCH,
) -> LLCGrid:
    r"""λ̂ and verdicts for every cell of the product grid ε × γ × nβ, in one compiled call.

    The product is flattened to one leading axis and :func:`sample_llc` vmapped over it (every cell
    gets its own key), then reshaped to (len(step_sizes), len(localizations), len(nbetas)). The stable
    region is where λ̂ is flat in ε and the verdict is "ok"; :func:`grid_verdicts` names each cell.

    Args:
      step_sizes, localizations, nbetas: 1-d sequences (or scalars) of positive values; `nbetas`
        defaults to the single value n / log n.
      cell_batch: cells vmapped together; groups of them run one after another (``lax.map``) so the
        working set stays in cache on CPU. None vmaps all cells at once (best on a GPU).
      The rest as in :func:`estimate_llc`.

    Returns:
      An :class:`LLCGrid`.
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    _check_center(center)
    config = _check_config(num_chains, num_steps, num_burnin, thinning, batch_size, draw_loss, estimate_acceptance, data)
    step_sizes = np.atleast_1d(_check_positive_values("step_sizes", step_sizes))
    localizations = np.atleast_1d(_check_nonnegative("localizations", localizations))
    nbetas = np.atleast_1d(np.asarray(_resolve_nbeta(nbetas, num_data, data), dtype=float))
    cells = np.array(list(itertools.product(step_sizes, localizations, nbetas)))
    shape = (len(step_sizes), len(localizations), len(nbetas))
    keys = jax.random.split(key, len(cells))
    flat = _grid_jit(
        keys, center, data, cells[:, 2], cells[:, 0], cells[:, 1],
        loss_fn=loss_fn, config=config, minibatch_fn=minibatch_fn, cell_batch=_check_cell_batch(cell_batch),
    )
    result = jax.tree.map(lambda x: x.reshape(*shape, *x.shape[1:]), flat)
    return LLCGrid(step_sizes, localizations, nbetas, result)


# ----------------------------------------------------------------------------------------------
# Along training: runs × checkpoints × chains in one call


@functools.partial(
    jax.jit, static_argnames=("loss_fn", "config", "minibatch_fn", "data_per_run", "num_checkpoints", "cell_batch")
)
def _along_jit(keys, centers, data, nbeta, step_size, localization, *, loss_fn, config, minibatch_fn, data_per_run, num_checkpoints, cell_batch):
    core = functools.partial(sample_llc, loss_fn=loss_fn, config=config, minibatch_fn=minibatch_fn)
    run_index = jnp.arange(keys.shape[0]) // num_checkpoints

    def cell(inputs):
        key, center, run = inputs
        if data_per_run:
            # Index the run's dataset inside the cell instead of repeating it per checkpoint.
            return core(key, center, jax.tree.map(lambda x: x[run], data), nbeta[run], step_size, localization)
        return core(key, center, data, nbeta, step_size, localization)

    return _map_cells(cell, (keys, centers, run_index), cell_batch)


def llc_along_training(
    key: PRNGKey,
    loss_fn: LossFn,
    params: PyTree,
    data: Any,
    *,
    data_per_run: bool = False,
    nbeta=None,
    num_data=None,
    step_size: float = 1e-3,
    localization: float = 1.0,
    num_chains: int = 4,
    num_steps: int = 500,
    num_burnin: int = 0,
    thinning: int = 1,
    batch_size: int | None = None,
    draw_loss: str = "full",
    estimate_acceptance: bool = True,
    minibatch_fn: Callable | None = None,
    cell_batch: int | None = DEFAULT_CELL_BATCH,
) -> LLCResult:
    r"""λ̂ at every checkpoint of many training runs, in one compiled call (runs × checkpoints × chains).

    Defaults are Chen et al.'s protocol: full batch, ε = 1e-3, γ = 1, 500 steps, nβ = n / log n.

    Args:
      key: PRNG key (each (run, checkpoint) cell gets its own).
      loss_fn: ``loss_fn(params, data) -> scalar``.
      params: a pytree whose leaves have leading axes (num_runs, num_checkpoints), e.g. the stacked
        checkpoints of a training ensemble.
      data: the dataset every run trained on, or with `data_per_run` one per run (leading axis
        num_runs on every leaf, e.g. stacked padded datasets).
      data_per_run: whether `data` has a leading run axis.
      nbeta: a scalar, or one value per run when `data_per_run`; default n / log n of each dataset.
      cell_batch: (run, checkpoint) cells vmapped together, groups run one after another; None for all
        at once (best on a GPU).
      The rest as in :func:`estimate_llc`.

    Returns:
      An :class:`LLCResult` whose fields have leading axes (num_runs, num_checkpoints).
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    leaves = jax.tree.leaves(params)
    if not leaves or any(jnp.ndim(leaf) < 2 for leaf in leaves):
        raise ValueError("params must be a pytree whose leaves have leading axes (num_runs, num_checkpoints)")
    num_runs, num_checkpoints = jnp.shape(leaves[0])[:2]
    if any(jnp.shape(leaf)[:2] != (num_runs, num_checkpoints) for leaf in leaves):
        raise ValueError("every leaf of params must share the leading axes (num_runs, num_checkpoints)")
    _check_center(params, "params")
    config = _check_config(num_chains, num_steps, num_burnin, thinning, batch_size, draw_loss, estimate_acceptance, data)
    step_size = float(_check_positive_values("step_size", step_size))
    localization = float(_check_nonnegative("localization", localization))
    if data_per_run:
        data_leaves = jax.tree.leaves(data)
        if not data_leaves or any(jnp.shape(x)[0] != num_runs for x in data_leaves):
            raise ValueError(f"data_per_run=True needs a leading axis of num_runs={num_runs} on every leaf of data")
        if nbeta is None:
            if num_data is None:
                if not hasattr(data, "num_data"):
                    raise ValueError("data_per_run with data that has no num_data: pass nbeta or num_data")
                num_data = np.asarray(data.num_data)
            nbeta = default_nbeta(_check_positive_values("num_data", num_data))
        nbeta = jnp.broadcast_to(jnp.asarray(_check_positive_values("nbeta", nbeta)), (num_runs,))
    else:
        nbeta = _resolve_nbeta(nbeta, num_data, data)
        if np.ndim(nbeta) != 0:
            raise ValueError(f"nbeta must be a scalar when data is shared, got shape {np.shape(nbeta)}")
    centers = jax.tree.map(lambda x: jnp.reshape(x, (num_runs * num_checkpoints, *jnp.shape(x)[2:])), params)
    keys = jax.random.split(key, num_runs * num_checkpoints)
    flat = _along_jit(
        keys, centers, data, nbeta, step_size, localization, loss_fn=loss_fn, config=config,
        minibatch_fn=minibatch_fn, data_per_run=data_per_run, num_checkpoints=int(num_checkpoints),
        cell_batch=_check_cell_batch(cell_batch),
    )
    return jax.tree.map(lambda x: x.reshape(num_runs, num_checkpoints, *x.shape[1:]), flat)


# ----------------------------------------------------------------------------------------------
# Verdicts, outside jit


def chain_problems(flags: int) -> list[str]:
    """The named problems in one chain's bit mask."""
    return [name for bit, name in PROBLEMS.items() if int(flags) & bit]


def _verdict_from(flags: np.ndarray, llc: float) -> str:
    flags = np.asarray(flags).reshape(-1)
    num_chains = flags.size
    parts = []
    for bit, name in PROBLEMS.items():
        count = int(np.sum((flags & bit) != 0))
        if count:
            parts.append(f"{name} ({count}/{num_chains} chains)")
    if np.isfinite(llc) and llc < 0 and not any(p.startswith("escaped") for p in parts):
        parts.append("escaped (negative pooled estimate)")
    return "ok" if not parts else "; ".join(parts)


def verdict(result: LLCResult) -> str:
    """One readable line for a single estimate: "ok", or the problems and how many chains have them.

    Examples: ``"ok"``, ``"escaped (3/4 chains); drifting (1/4 chains)"``.
    """
    flags = np.asarray(result.diagnostics.flags)
    if flags.ndim != 1:
        raise ValueError(f"verdict takes a single estimate; for a grid use grid_verdicts (flags shape {flags.shape})")
    return _verdict_from(flags, float(result.llc))


def grid_verdicts(result: LLCResult) -> np.ndarray:
    """Verdict strings for every cell of a batched result (a grid, or runs × checkpoints)."""
    flags = np.asarray(result.diagnostics.flags)
    llc = np.asarray(result.llc)
    out = np.empty(llc.shape, dtype=object)
    for index in np.ndindex(llc.shape):
        out[index] = _verdict_from(flags[index], float(llc[index]))
    return out


def summarize(result: LLCResult) -> dict:
    """A small JSON-ready summary of a single estimate."""
    diagnostics = result.diagnostics
    return {
        "llc": float(result.llc),
        "stderr": float(result.stderr),
        "llc_per_chain": np.asarray(result.llc_per_chain).tolist(),
        "init_loss": float(result.init_loss),
        "nbeta": float(result.nbeta),
        "escape_fraction": np.asarray(diagnostics.escape_fraction).tolist(),
        "drift": np.asarray(diagnostics.drift).tolist(),
        "acceptance": np.asarray(diagnostics.acceptance).tolist(),
        "verdict": verdict(result),
    }


__all__ = [
    "LLCConfig",
    "LLCDiagnostics",
    "LLCGrid",
    "LLCResult",
    "PROBLEMS",
    "chain_problems",
    "default_nbeta",
    "default_minibatch",
    "estimate_llc",
    "grid_verdicts",
    "llc_along_training",
    "llc_grid",
    "num_data_of",
    "sample_llc",
    "summarize",
    "verdict",
]
