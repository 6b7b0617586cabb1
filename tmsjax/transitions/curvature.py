r"""Curvature probes: matrix-free Hessian trace and top eigenvalue, and the free energy by
perturbation, at one checkpoint or along training.

Unlike the weight-only probes (:mod:`tmsjax.transitions.probes`) these need the loss and data, but
no sampler: each is a handful of Hessian-vector products or loss evaluations, so they cost a few
training steps per checkpoint (λ̂ costs hundreds). With :math:`H = \nabla^2 L_n(w)` and
:math:`d` parameters:

- **Hutchinson's trace**: :math:`\widehat{\mathrm{tr}\,H} = \frac1m\sum_{i=1}^m v_i^\top H v_i`
  with Rademacher :math:`v_i \in \{\pm1\}^d`; unbiased, with variance
  :math:`\frac2m\sum_{j\ne k} H_{jk}^2 \le \frac2m\lVert H\rVert_F^2`.
- **Top eigenvalue** by Lanczos: k steps of the Lanczos recursion from a random start (with full
  reorthogonalisation: k is small) give a tridiagonal :math:`T_k` whose largest eigenvalue
  converges to :math:`\lambda_{\max}(H)` from below, fast when the top of the spectrum is separated.
- **Free energy by perturbation**: :math:`F_\sigma(w) = \mathbb E_{\xi\sim N(0, I_d)}
  [L_n(w + \sigma\xi)] - L_n(w)`, the mean loss increase under Gaussian weight noise of scale σ
  (antithetic pairs :math:`\pm\xi`, which cancel the gradient term). For a quadratic it is exactly
  :math:`\sigma^2\,\mathrm{tr}\,H/2`; near a singular minimum it grows more slowly than
  :math:`\sigma^2` in directions where the loss is flatter than quadratic, which makes it a cheap
  proxy of the local learning coefficient λ̂ (a flatter, more degenerate neighbourhood has both a
  smaller :math:`F_\sigma` and a smaller λ̂).

Hessian-vector products are forward-over-reverse, :math:`Hv = \partial_\epsilon\nabla L(w +
\epsilon v)|_0` (``jax.jvp`` of ``jax.grad``): about three gradients' cost, no Hessian stored.

References:
  Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian smoothing
  splines" (1989). Lanczos (1950); Ghorbani, Krishnan, Xiao, "An investigation into neural net
  optimization via Hessian eigenvalue density" (2019) (Lanczos on network Hessians). Lau et al.
  (2023), arXiv:2308.12108 (λ̂).
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from tmsjax.checks import check_positive_int
from tmsjax.types import Array, Float, PRNGKey, PyTree


class CurvatureProbes(NamedTuple):
    r"""Curvature probes of one checkpoint (add leading axes for checkpoints and runs).

    Attributes:
      trace: Hutchinson's estimate of :math:`\mathrm{tr}\,\nabla^2 L_n(w)`.
      top_eigenvalue: Lanczos' estimate of :math:`\lambda_{\max}(\nabla^2 L_n(w))`.
      free_energy: :math:`\mathbb E[L_n(w+\sigma\xi)] - L_n(w)`.
    """

    trace: Float[Array, ""]
    top_eigenvalue: Float[Array, ""]
    free_energy: Float[Array, ""]


def _flat_loss(loss_fn, params, data):
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("params has no array leaves")
    if not all(eqx.is_inexact_array(leaf) for leaf in leaves):
        raise ValueError(
            "params must hold only floating-point arrays (for an equinox model pass the array part "
            "of eqx.partition(model, eqx.is_inexact_array) and a loss that combines it)"
        )
    flat, unravel = ravel_pytree(params)
    return flat, lambda x: loss_fn(unravel(x), data)


def _hvp(loss, flat, vector):
    return jax.jvp(jax.grad(loss), (flat,), (vector,))[1]


def hessian_vector_product(loss_fn: Callable, params: PyTree, data: Any, vector: PyTree) -> PyTree:
    r""":math:`\nabla^2 L(w)\,v` by forward-over-reverse differentiation (no Hessian formed).

    Args:
      loss_fn: ``loss_fn(params, data) -> scalar``.
      params: the point w (a pytree of floating arrays).
      data: the loss's data.
      vector: v, a pytree shaped like `params`.

    Returns:
      Hv, shaped like `params`.
    """
    flat, loss = _flat_loss(loss_fn, params, data)
    flat_vector, unravel = ravel_pytree(vector)
    if flat_vector.shape != flat.shape:
        raise ValueError(
            f"vector must be shaped like params ({flat.size} numbers), got {flat_vector.size}"
        )
    return unravel(_hvp(loss, flat, flat_vector))


def _hutchinson(key, loss, flat, num_probes):
    signs = jax.random.rademacher(key, (num_probes, flat.size), dtype=flat.dtype)
    return jnp.mean(jax.vmap(lambda v: v @ _hvp(loss, flat, v))(signs))


def _lanczos(key, loss, flat, num_iterations):
    size = flat.size
    steps = min(num_iterations, size)  # a Krylov space has at most d dimensions
    start = jax.random.normal(key, (size,), flat.dtype)
    start = start / jnp.linalg.norm(start)
    tiny = jnp.finfo(flat.dtype).tiny ** 0.5

    def body(j, carry):
        basis, alphas, betas, v, v_previous, beta_previous = carry
        basis = basis.at[j].set(v)
        w = _hvp(loss, flat, v)
        alpha = w @ v
        w = w - alpha * v - beta_previous * v_previous
        # Full reorthogonalisation (twice is enough, Parlett): without it rounding makes copies of
        # converged eigenvalues ("ghosts"), harmless for the top one but costly to diagnose.
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        beta = jnp.linalg.norm(w)
        # An exhausted Krylov space (beta = 0) leaves zero rows: T gains zero eigenvalues only.
        v_next = jnp.where(beta > tiny, w / jnp.where(beta > tiny, beta, 1.0), 0.0)
        return basis, alphas.at[j].set(alpha), betas.at[j].set(beta), v_next, v, beta

    init = (
        jnp.zeros((steps, size), flat.dtype),
        jnp.zeros(steps, flat.dtype),
        jnp.zeros(steps, flat.dtype),
        start,
        jnp.zeros_like(start),
        jnp.zeros((), flat.dtype),
    )
    _, alphas, betas, *_ = jax.lax.fori_loop(0, steps, body, init)
    tridiagonal = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    return jnp.linalg.eigvalsh(tridiagonal)[-1]


def _free_energy(key, loss, flat, sigma, num_samples):
    noise = jax.random.normal(key, (num_samples, flat.size), flat.dtype)
    pairs = jax.vmap(lambda xi: 0.5 * (loss(flat + sigma * xi) + loss(flat - sigma * xi)))(noise)
    return jnp.mean(pairs) - loss(flat)


def _check_settings(num_probes, num_iterations, num_samples, sigma):
    check_positive_int("num_probes", num_probes)
    check_positive_int("num_iterations", num_iterations)
    check_positive_int("num_samples", num_samples)
    if not isinstance(sigma, jax.core.Tracer) and not (0 < float(sigma) < float("inf")):
        raise ValueError(f"sigma must be positive and finite, got {sigma!r}")


@functools.partial(jax.jit, static_argnames=("loss_fn", "num_probes"))
def hutchinson_trace(
    key: PRNGKey, loss_fn: Callable, params: PyTree, data: Any, num_probes: int = 8
) -> Float[Array, ""]:
    r"""Hutchinson's estimate :math:`\frac1m\sum_i v_i^\top\nabla^2L(w)v_i`, Rademacher :math:`v_i`.

    Args:
      key: PRNG key for the probe vectors.
      loss_fn: ``loss_fn(params, data) -> scalar``.
      params: the point w (floating arrays only).
      data: the loss's data.
      num_probes: m; the estimate's variance is :math:`\frac2m\sum_{j\ne k}H_{jk}^2`.

    Returns:
      The trace estimate (a scalar).
    """
    check_positive_int("num_probes", num_probes)
    flat, loss = _flat_loss(loss_fn, params, data)
    return _hutchinson(key, loss, flat, num_probes)


@functools.partial(jax.jit, static_argnames=("loss_fn", "num_iterations"))
def top_eigenvalue(
    key: PRNGKey, loss_fn: Callable, params: PyTree, data: Any, num_iterations: int = 16
) -> Float[Array, ""]:
    r"""Largest Hessian eigenvalue by `num_iterations` Lanczos steps (at most d), matrix-free.

    Args:
      key: PRNG key for the start vector.
      loss_fn: ``loss_fn(params, data) -> scalar``.
      params: the point w (floating arrays only).
      data: the loss's data.
      num_iterations: Lanczos steps k (each one Hessian-vector product); exact for k ≥ d.

    Returns:
      :math:`\lambda_{\max}(T_k) \le \lambda_{\max}(\nabla^2 L(w))` (a scalar).
    """
    check_positive_int("num_iterations", num_iterations)
    flat, loss = _flat_loss(loss_fn, params, data)
    return _lanczos(key, loss, flat, num_iterations)


def perturbation_free_energy(
    key: PRNGKey,
    loss_fn: Callable,
    params: PyTree,
    data: Any,
    sigma: float = 1e-2,
    num_samples: int = 8,
) -> Float[Array, ""]:
    r"""Free energy by perturbation, :math:`\mathbb E_\xi[L(w+\sigma\xi)] - L(w)`, ξ ~ N(0, I).

    Averaged over `num_samples` antithetic pairs :math:`\tfrac12[L(w+\sigma\xi) + L(w-\sigma\xi)]`;
    for a quadratic loss the pair mean is exactly :math:`\tfrac12\sigma^2\xi^\top H\xi`, so the
    estimate is unbiased for :math:`\sigma^2\mathrm{tr}\,H/2` with variance
    :math:`\sigma^4\lVert H\rVert_F^2/(2\,\mathrm{num\_samples})`.

    Args:
      key: PRNG key for the perturbations.
      loss_fn: ``loss_fn(params, data) -> scalar``.
      params: the point w (floating arrays only).
      data: the loss's data.
      sigma: the perturbation scale (in the parameters' units).
      num_samples: antithetic pairs (2 loss evaluations each).

    Returns:
      The mean loss increase (a scalar).
    """
    _check_settings(1, 1, num_samples, sigma)
    return _perturbation_jit(key, loss_fn, params, data, sigma, num_samples)


# σ is traced (a new σ does not recompile); it is checked before the jit, where it is a number.
@functools.partial(jax.jit, static_argnames=("loss_fn", "num_samples"))
def _perturbation_jit(key, loss_fn, params, data, sigma, num_samples):
    flat, loss = _flat_loss(loss_fn, params, data)
    return _free_energy(key, loss, flat, sigma, num_samples)


def curvature_probes(
    key: PRNGKey,
    loss_fn: Callable,
    params: PyTree,
    data: Any,
    *,
    sigma: float = 1e-2,
    num_probes: int = 8,
    num_iterations: int = 16,
    num_samples: int = 8,
) -> CurvatureProbes:
    r"""The three curvature probes of one checkpoint (traceable: put it in a training loop).

    Cost: :math:`m + k` Hessian-vector products (each about three gradients) and
    :math:`2\,\mathrm{num\_samples} + 1` loss evaluations; see :func:`hutchinson_trace`,
    :func:`top_eigenvalue`, :func:`perturbation_free_energy` for the arguments.

    Returns:
      :class:`CurvatureProbes`.
    """
    _check_settings(num_probes, num_iterations, num_samples, sigma)
    return _probes_jit(key, loss_fn, params, data, sigma, num_probes, num_iterations, num_samples)


@functools.partial(
    jax.jit, static_argnames=("loss_fn", "num_probes", "num_iterations", "num_samples")
)
def _probes_jit(key, loss_fn, params, data, sigma, num_probes, num_iterations, num_samples):
    flat, loss = _flat_loss(loss_fn, params, data)
    key_trace, key_top, key_free = jax.random.split(key, 3)
    return CurvatureProbes(
        _hutchinson(key_trace, loss, flat, num_probes),
        _lanczos(key_top, loss, flat, num_iterations),
        _free_energy(key_free, loss, flat, sigma, num_samples),
    )


def curvature_along_training(
    key: PRNGKey,
    loss_fn: Callable,
    checkpoints: PyTree,
    data: Any,
    *,
    data_per_run: bool = False,
    sigma: float = 1e-2,
    num_probes: int = 8,
    num_iterations: int = 16,
    num_samples: int = 8,
    cell_batch: int | None = 64,
) -> CurvatureProbes:
    r""":func:`curvature_probes` at every checkpoint of many runs, in one compiled program.

    Args:
      key: PRNG key (one fold per cell).
      loss_fn: ``loss_fn(params, data) -> scalar``, hashable (a module-level function or a
        :class:`tmsjax.llc.PartitionedLoss`: it is a static argument of the jit).
      checkpoints: a pytree of floating arrays with leading axes (num_runs, num_checkpoints).
      data: the data every run shares, or with `data_per_run` one set per run (leading run axis).
      data_per_run: whether every leaf of `data` has a leading num_runs axis.
      sigma, num_probes, num_iterations, num_samples: as in :func:`curvature_probes`.
      cell_batch: (run, checkpoint) cells vmapped together, in sequence over batches (bounds
        memory; None vmaps all at once).

    Returns:
      :class:`CurvatureProbes` with leading axes (num_runs, num_checkpoints).
    """
    _check_settings(num_probes, num_iterations, num_samples, sigma)
    leaves = jax.tree.leaves(checkpoints)
    if not leaves or any(leaf.ndim < 2 for leaf in leaves):
        raise ValueError("checkpoints must have leading (num_runs, num_checkpoints) axes")
    if len({leaf.shape[:2] for leaf in leaves}) != 1:
        raise ValueError(
            "every leaf of checkpoints must share the (num_runs, num_checkpoints) axes"
        )
    num_runs, num_checkpoints = leaves[0].shape[:2]
    if data_per_run:
        data_runs = {leaf.shape[0] for leaf in jax.tree.leaves(data)}
        if data_runs != {num_runs}:
            raise ValueError(
                f"data_per_run: every leaf of data needs a leading axis of num_runs={num_runs}, "
                f"got {sorted(data_runs)}"
            )
    if cell_batch is not None:
        check_positive_int("cell_batch", cell_batch)
    return _along(
        key,
        loss_fn,
        checkpoints,
        data,
        data_per_run,
        float(sigma),
        int(num_probes),
        int(num_iterations),
        int(num_samples),
        None if cell_batch is None else int(cell_batch),
    )


@functools.partial(jax.jit, static_argnums=(1, 4, 6, 7, 8, 9))
def _along(
    key,
    loss_fn,
    checkpoints,
    data,
    data_per_run,
    sigma,
    num_probes,
    num_iterations,
    num_samples,
    cell_batch,
):
    num_runs, num_checkpoints = jax.tree.leaves(checkpoints)[0].shape[:2]
    cells = num_runs * num_checkpoints
    flat = jax.tree.map(lambda x: x.reshape(cells, *x.shape[2:]), checkpoints)
    run_of_cell = jnp.repeat(jnp.arange(num_runs), num_checkpoints)
    keys = jax.random.split(key, cells)

    def one(cell_key, params, run):
        cell_data = jax.tree.map(lambda x: x[run], data) if data_per_run else data
        return _probes_jit(
            cell_key, loss_fn, params, cell_data, sigma, num_probes, num_iterations, num_samples
        )

    batch = cells if cell_batch is None else min(cell_batch, cells)
    values = jax.lax.map(lambda args: one(*args), (keys, flat, run_of_cell), batch_size=batch)
    return jax.tree.map(lambda x: x.reshape(num_runs, num_checkpoints), values)


__all__ = [
    "CurvatureProbes",
    "curvature_along_training",
    "curvature_probes",
    "hessian_vector_product",
    "hutchinson_trace",
    "perturbation_free_energy",
    "top_eigenvalue",
]
