r"""Weight-only probes: cheap signals of a parameter pytree, for detecting phase transitions.

Every probe is a pure function of a parameter pytree (a :class:`~tmsjax.tms.model.TMSParams`, an
equinox module, a dict of arrays: any pytree), so it runs inside a jitted training scan, vmaps over
seeds and checkpoints, and needs neither data nor gradients (λ̂ aside). The *layers* of a model are
its floating leaves with at least two dimensions (weight matrices; a convolution kernel
(out, in, k, k) is read as the matrix (out, in·k·k)); one-dimensional leaves are biases and enter
only the total norm, the checkpoint distance and the histograms. For the TMS the one layer is
W (r × c).

With :math:`W_\ell` the layer matrices and :math:`\sigma_1(W_\ell)` their top singular values:

- total weight norm :math:`\lVert\theta\rVert_2` over every floating leaf, and per-layer
  :math:`\lVert W_\ell\rVert_F`;
- top singular values :math:`\sigma_1(W_\ell)` and their product
  :math:`\prod_\ell \sigma_1(W_\ell)`, an upper bound on the network's Lipschitz constant (reported
  as its log, a sum, so deep nets do not overflow);
- stable rank :math:`\lVert W_\ell\rVert_F^2 / \sigma_1(W_\ell)^2 \in [1, \mathrm{rank}]`;
- distance between consecutive checkpoints :math:`\lVert\theta_t - \theta_{t-1}\rVert_2`;
- a histogram of all weight values on fixed bin edges (the seed's animations, as an image over
  time);
- λ̂, the local learning coefficient at each checkpoint, from the LLC engine (:mod:`tmsjax.llc`).

These are the observables of Hoogland et al.'s hackathon seed ("Detecting phase transitions", 2023):
weight norm (Liu et al.'s Omnigrok), the product of top singular values, and weight histograms.

References:
  Liu, Michaud, Tegmark, "Omnigrok: grokking beyond algorithmic data", ICLR 2023.
  Martin, Mahoney, "Implicit self-regularization in deep neural networks" (2018) (spectra over
  training).
  Lau, Furman, Wang, Murfet, Wei (2023), arXiv:2308.12108 (λ̂).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from tmsjax import llc
from tmsjax.types import Array, Float, Int, PRNGKey, PyTree

#: Names of the scalar probe series that :func:`scalar_series` returns, in order.
SCALAR_PROBES = (
    "weight_norm",
    "log_spectral_product",
    "stable_rank",
    "top_singular",
    "step_distance",
)


class Probes(NamedTuple):
    """Probe values of one parameter pytree (add leading axes for checkpoints and runs).

    Attributes:
      weight_norm: :math:`\\lVert\\theta\\rVert_2` over every floating leaf.
      layer_norms: :math:`\\lVert W_\\ell\\rVert_F`, (num_layers,).
      top_singular: :math:`\\sigma_1(W_\\ell)`, (num_layers,).
      log_spectral_product: :math:`\\sum_\\ell \\log\\sigma_1(W_\\ell)`.
      stable_rank: :math:`\\lVert W_\\ell\\rVert_F^2/\\sigma_1(W_\\ell)^2`, (num_layers,).
      step_distance: :math:`\\lVert\\theta - \\theta_{\\mathrm{previous}}\\rVert_2` (0 with no
        previous).
      histogram: counts of all weight values in the bins of `edges` (values outside go to the end
        bins), (num_bins,); empty when no edges were given.
    """

    weight_norm: Float[Array, ""]
    layer_norms: Float[Array, " num_layers"]
    top_singular: Float[Array, " num_layers"]
    log_spectral_product: Float[Array, ""]
    stable_rank: Float[Array, " num_layers"]
    step_distance: Float[Array, ""]
    histogram: Int[Array, " num_bins"]


def parameter_leaves(params: PyTree) -> list[Array]:
    """The floating-point array leaves of any pytree (equinox modules: its non-static arrays)."""
    return [leaf for leaf in jax.tree.leaves(params) if eqx.is_inexact_array(leaf)]


def layer_matrices(params: PyTree) -> list[Array]:
    """The layers: floating leaves with ndim ≥ 2, each reshaped to (shape[0], rest)."""
    return [leaf.reshape(leaf.shape[0], -1) for leaf in parameter_leaves(params) if leaf.ndim >= 2]


def _validate(params: PyTree, *, need_layers: bool = False) -> None:
    leaves = parameter_leaves(params)
    if not leaves:
        raise ValueError("params has no floating-point array leaves")
    if need_layers and not any(leaf.ndim >= 2 for leaf in leaves):
        raise ValueError("params has no leaf with ndim >= 2, so no layer (weight matrix) to probe")


def weight_norm(params: PyTree) -> Float[Array, ""]:
    r"""Total weight norm :math:`\lVert\theta\rVert_2 = (\sum_{\mathrm{leaves}}\sum w^2)^{1/2}`."""
    _validate(params)
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in parameter_leaves(params)))


def _spectra(matrices: list[Array]) -> tuple[Array, Array, Array]:
    r"""Per-layer :math:`\lVert W_\ell\rVert_F`, :math:`\sigma_1(W_\ell)` and stable rank
    :math:`\lVert W_\ell\rVert_F^2/\sigma_1^2` (0/0 → 0), the one place these formulas live.

    An exact SVD per layer: layers are small; for very wide layers a few power iterations would
    do."""
    frobenius = jnp.stack([jnp.linalg.norm(m) for m in matrices])
    top = jnp.stack([jnp.linalg.svd(m, compute_uv=False)[0] for m in matrices])
    safe_top = jnp.where(top > 0, top, 1.0)
    ranks = jnp.where(top > 0, frobenius**2 / safe_top**2, 0.0)
    return frobenius, top, ranks


def layer_norms(params: PyTree) -> Float[Array, " num_layers"]:
    r"""Frobenius norm :math:`\lVert W_\ell\rVert_F` of each layer."""
    _validate(params, need_layers=True)
    return _spectra(layer_matrices(params))[0]


def top_singular_values(params: PyTree) -> Float[Array, " num_layers"]:
    r"""Largest singular value :math:`\sigma_1(W_\ell)` of each layer."""
    _validate(params, need_layers=True)
    return _spectra(layer_matrices(params))[1]


def log_spectral_product(params: PyTree) -> Float[Array, ""]:
    r""":math:`\log\prod_\ell\sigma_1(W_\ell) = \sum_\ell\log\sigma_1(W_\ell)` (log: products of
    many layers overflow or underflow float32)."""
    return jnp.sum(jnp.log(top_singular_values(params)))


def stable_rank(params: PyTree) -> Float[Array, " num_layers"]:
    r"""Stable rank :math:`\lVert W_\ell\rVert_F^2/\sigma_1(W_\ell)^2` of each layer (0/0 → 0)."""
    _validate(params, need_layers=True)
    return _spectra(layer_matrices(params))[2]


def checkpoint_distance(params: PyTree, previous: PyTree) -> Float[Array, ""]:
    r"""Euclidean distance :math:`\lVert\theta - \theta'\rVert_2` between two checkpoints."""
    _validate(params)
    a, b = parameter_leaves(params), parameter_leaves(previous)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise ValueError("previous must have the same array leaves (and shapes) as params")
    return jnp.sqrt(sum(jnp.sum((x - y) ** 2) for x, y in zip(a, b)))


def weight_histogram(params: PyTree, edges) -> Int[Array, " num_bins"]:
    r"""Counts of all weight values in the bins ``[edges[i], edges[i+1])``; values below the first
    or above the last edge are counted in the end bins, so every weight shows.
    Traceable (fixed bins)."""
    _validate(params)
    edges = jnp.asarray(edges)
    if edges.ndim != 1 or edges.shape[0] < 2:
        raise ValueError(
            f"edges must be a 1-d array of at least 2 bin edges, got shape {edges.shape}"
        )
    # values are checkable only outside jit (docs/architecture.md, decision 8)
    if not isinstance(edges, jax.core.Tracer):
        concrete = np.asarray(edges)
        if not np.all(np.isfinite(concrete)) or np.any(np.diff(concrete) <= 0):
            raise ValueError("edges must be finite and strictly increasing")
    values = jnp.concatenate([leaf.reshape(-1) for leaf in parameter_leaves(params)])
    index = jnp.clip(jnp.searchsorted(edges, values, side="right") - 1, 0, edges.shape[0] - 2)
    return jnp.bincount(index, length=edges.shape[0] - 1)


def compute_probes(params: PyTree, previous: PyTree | None = None, edges=None) -> Probes:
    r"""All weight-only probes of one parameter pytree in one call: put it in a training scan's
    body.

    Args:
      params: the parameters (any pytree; its ≥2-D floating leaves are the layers).
      previous: the previous checkpoint (same structure) for the step distance; None gives 0.
      edges: optional histogram bin edges (1-d); None gives an empty histogram.

    Returns:
      A :class:`Probes`.

    Raises:
      ValueError: if `params` has no weight matrix, or `previous` does not match it.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tmsjax.tms.model import TMSParams
      >>> p = compute_probes(TMSParams(jnp.array([[3.0, 0.0], [0.0, 4.0]]), jnp.zeros(2)))
      >>> float(p.weight_norm), float(p.top_singular[0]), float(p.stable_rank[0])
      (5.0, 4.0, 1.5625)
    """
    _validate(params, need_layers=True)
    frobenius, top, ranks = _spectra(layer_matrices(params))
    distance = (
        jnp.zeros((), frobenius.dtype)
        if previous is None
        else checkpoint_distance(params, previous)
    )
    histogram = jnp.zeros((0,), jnp.int32) if edges is None else weight_histogram(params, edges)
    return Probes(
        weight_norm(params), frobenius, top, jnp.sum(jnp.log(top)), ranks, distance, histogram
    )


def probe_trajectory(checkpoints: PyTree, edges=None) -> Probes:
    r"""Probes of a stack of checkpoints (leading axis: checkpoints; add runs with ``jax.vmap``).

    The step distance of checkpoint t is :math:`\lVert\theta_t - \theta_{t-1}\rVert` (0 at t = 0).

    Args:
      checkpoints: a pytree whose floating leaves share a leading checkpoint axis, e.g. the params
        of :class:`tmsjax.tms.sgd.Trajectory` for one run, or ``jax.tree.map(lambda x: x[r], ...)``.
      edges: optional histogram bin edges.

    Returns:
      A :class:`Probes` with a leading checkpoint axis on every field.
    """
    leaves = parameter_leaves(checkpoints)
    if not leaves or any(leaf.ndim < 1 for leaf in leaves):
        raise ValueError("checkpoints must have floating leaves with a leading checkpoint axis")
    if len({leaf.shape[0] for leaf in leaves}) != 1:
        raise ValueError(
            "every floating leaf of checkpoints must share the leading checkpoint axis"
        )
    previous = jax.tree.map(
        lambda x: jnp.concatenate([x[:1], x[:-1]]) if eqx.is_inexact_array(x) else x, checkpoints
    )
    return jax.vmap(lambda p, q: compute_probes(p, q, edges))(checkpoints, previous)


def scalar_series(probes: Probes, steps=None) -> dict[str, np.ndarray]:
    r"""One scalar series per probe, the inputs of change-point detection (leading axes kept).

    Per-layer probes are summarised by their mean over layers (``stable_rank``, ``top_singular``);
    ``step_distance`` becomes a speed per decade of steps,
    :math:`\lVert\theta_t-\theta_{t-1}\rVert/(\log_{10}s_t-\log_{10}s_{t-1})`, when `steps` is
    given, so that log-spaced checkpoints do not make it grow with the interval length.

    Args:
      probes: probes with a trailing checkpoint axis before any layer axis (from
        :func:`probe_trajectory`, possibly vmapped over runs).
      steps: optional checkpoint steps (num_checkpoints,), positive and strictly increasing.
    """
    series = {
        "weight_norm": np.asarray(probes.weight_norm),
        "log_spectral_product": np.asarray(probes.log_spectral_product),
        "stable_rank": np.asarray(probes.stable_rank).mean(-1),
        "top_singular": np.asarray(probes.top_singular).mean(-1),
    }
    distance = np.asarray(probes.step_distance, dtype=float)
    if steps is not None:
        steps = np.asarray(steps, dtype=float)
        if steps.ndim != 1 or steps.shape[0] != distance.shape[-1] or np.any(steps <= 0):
            raise ValueError("steps must be positive, one per checkpoint")
        if np.any(np.diff(steps) <= 0):
            raise ValueError("steps must be strictly increasing")
        gap = np.diff(np.log10(steps), prepend=np.nan)
        distance = distance / np.where(gap > 0, gap, np.nan)
        # The first checkpoint has no predecessor: copy its neighbour so the series stays finite.
        distance[..., 0] = distance[..., 1] if distance.shape[-1] > 1 else 0.0
    series["step_distance"] = distance
    return series


#: The λ̂ probe's default settings: short chains (a probe, not a converged estimate), nβ = n / log n.
PROBE_SETTINGS = llc.LLCSettings(num_chains=2, num_steps=200, num_burnin=50)


def llc_probe_result(
    key: PRNGKey,
    loss_fn: Callable[[PyTree, Any], Float[Array, ""]],
    checkpoints: PyTree,
    data: Any,
    settings: llc.LLCSettings = PROBE_SETTINGS,
    *,
    num_data=None,
    data_per_run: bool = False,
    cell_batch: int | None = llc.DEFAULT_CELL_BATCH,
) -> llc.LLCResult:
    r"""λ̂ at every checkpoint of many runs with its traces and health, through the LLC engine
    (:func:`tmsjax.llc.llc_along_training`).

    .. math:: \hat\lambda(\theta_t) = n\beta\,\big(\mathbb{E}_{w}[L_n(w)] - L_n(\theta_t)\big),
              \quad w \sim e^{-n\beta L_n(w) - \frac\gamma2\lVert w-\theta_t\rVert^2}

    Unlike the other probes it needs the loss and data, and costs num_chains × num_steps gradients
    per checkpoint, so it runs after training on the stored checkpoints. Equinox modules work: the
    engine splits off their non-array fields (:func:`tmsjax.llc.partition_model`).
    :func:`tmsjax.llc.usable` says which estimates to use, :func:`tmsjax.llc.problem_counts` counts
    the problems.

    Args:
      key: PRNG key.
      loss_fn: ``loss_fn(params, data) -> scalar`` (a module-level function: a fresh lambda
        recompiles).
      checkpoints: a pytree whose array leaves have leading axes (num_runs, num_checkpoints).
      data: the dataset every run trained on (any pytree), or with `data_per_run` one per run.
      settings: the chains' :class:`tmsjax.llc.LLCSettings`; default :data:`PROBE_SETTINGS`
        (2 chains × 200 steps, 50 burn-in, ε = 1e-3, γ = 1, nβ = n / log n).
      num_data: n for the default nβ when the data do not tell it.
      data_per_run: whether every leaf of `data` has a leading num_runs axis.
      cell_batch: (run, checkpoint) cells vmapped together (CPU cache-friendly, as the engine's
        default); None vmaps all at once (best on a GPU).

    Returns:
      A :class:`tmsjax.llc.LLCResult` with leading axes (num_runs, num_checkpoints).
    """
    return llc.llc_along_training(
        key,
        loss_fn,
        checkpoints,
        data,
        settings,
        data_per_run=data_per_run,
        num_data=num_data,
        cell_batch=cell_batch,
    )


def llc_probe(
    key: PRNGKey,
    loss_fn: Callable,
    checkpoints: PyTree,
    data: Any,
    settings: llc.LLCSettings = PROBE_SETTINGS,
    **kwargs,
) -> Float[Array, "num_runs num_checkpoints"]:
    r"""λ̂ at every checkpoint of many runs (:func:`llc_probe_result`), NaN where the estimate is not
    usable (:func:`tmsjax.llc.usable`: a chain blew up or escaped).

    Returns:
      λ̂ with shape (num_runs, num_checkpoints).
    """
    result = llc_probe_result(key, loss_fn, checkpoints, data, settings, **kwargs)
    return jnp.where(llc.usable(result), result.llc, jnp.nan)


__all__ = [
    "SCALAR_PROBES",
    "Probes",
    "parameter_leaves",
    "layer_matrices",
    "weight_norm",
    "layer_norms",
    "top_singular_values",
    "log_spectral_product",
    "stable_rank",
    "checkpoint_distance",
    "weight_histogram",
    "compute_probes",
    "probe_trajectory",
    "scalar_series",
    "PROBE_SETTINGS",
    "llc_probe",
    "llc_probe_result",
]
