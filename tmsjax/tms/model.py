r"""The Toy Model of Superposition: parameters, forward map, empirical loss, initialisations.

The model is the tied ReLU autoencoder of Elhage et al. (2022),

.. math::
    f(x; W, b) = \mathrm{ReLU}(W^\top W x + b), \qquad W \in \mathbb{R}^{r\times c},\
    b \in \mathbb{R}^c,

and the loss is the squared error summed over the c outputs, *not* halved, averaged over samples
(Chen et al. 2023, eq. (2)): :math:`L_n(W, b) = \frac1n \sum_k \lVert x_k - f(x_k)\rVert^2`.

References:
  Elhage et al., "Toy Models of Superposition" (2022).
  Chen, Lau, Mendel, Wei, Murfet, "Dynamical versus Bayesian phase transitions in a toy model of
  superposition" (2023), arXiv:2310.06301.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tmsjax.checks import as_float_array, check_finite, check_params, check_positive_int
from tmsjax.tms.data import count_at_most
from tmsjax.types import Array, Bool, Float, PRNGKey


class TMSParams(NamedTuple):
    """TMS parameters: a pytree that passes straight through blackjax and optax.

    Attributes:
      W: weights, shape (num_hidden, num_features); column i embeds feature i.
      b: output bias, shape (num_features,).
    """

    W: Float[Array, "num_hidden num_features"]
    b: Float[Array, " num_features"]


def reconstruct(
    params: TMSParams, x: Float[Array, "... num_features"]
) -> Float[Array, "... num_features"]:
    r"""The forward map :math:`\mathrm{ReLU}(W^\top W x + b)` on a batch of inputs."""
    hidden = x @ params.W.T
    return jax.nn.relu(hidden @ params.W + params.b)


def loss(
    params: TMSParams,
    x: Float[Array, "num_data num_features"],
    mask: Bool[Array, " num_data"] | None = None,
    importance: Float[Array, " num_features"] | None = None,
) -> Float[Array, ""]:
    r"""Empirical loss of a parameter pytree: the function samplers and optimisers differentiate.

    .. math:: L_n(w) = \frac{1}{n}\sum_{k:\,\mathrm{mask}_k} \sum_i I_i\,(x_{ki} - f_i(x_k; w))^2,
              \qquad n = \sum_k \mathrm{mask}_k.

    Args:
      params: the model parameters.
      x: inputs (and targets), padded rows allowed.
      mask: which rows are real data; None means all of them. `n` is its sum, a traced value, so
        datasets of different sizes padded to one shape share one compiled program.
      importance: optional per-feature weights I_i of Elhage et al. (default 1).

    Returns:
      The scalar loss. An empty dataset (zero rows, or an all-False mask) gives NaN, there being no
      data to average over: no check runs here, because under jit a failure has to become data.
      :func:`empirical_loss`, the checked entry point, raises instead.
    """
    residual = x - reconstruct(params, x)
    squared = residual**2 if importance is None else importance * residual**2
    per_sample = jnp.sum(squared, axis=-1)
    if mask is None:
        return jnp.mean(per_sample)
    mask = mask.astype(per_sample.dtype)
    return jnp.sum(per_sample * mask) / jnp.sum(mask)


def sum_squared_error_from_stats(params: TMSParams, stats) -> Float[Array, ""]:
    r""":math:`\sum_k \lVert x_k - f(x_k; w)\rVert^2` of one-hot data from its sufficient
    statistics.

    For :math:`x = \mu e_i`, output j is :math:`\mathrm{ReLU}(\mu a_{ij} + b_j)` with
    :math:`a_{ij} = W_i\cdot W_j`; it fires for μ on one side of :math:`t_{ij} = -b_j/a_{ij}`, a
    prefix or suffix of feature i's sorted μ (:class:`tmsjax.tms.data.SparseLimitStats`). With
    :math:`P_p` the sum of :math:`\mu^p` over that active set A and :math:`P_2^{\mathrm{all}}` over
    all of feature i's samples,

    .. math::
        \sum_{j\ne i} (a^2 P_2 + 2ab P_1 + b^2 P_0)
        + P_2^{\mathrm{all}} - P_2 + (1-a_{ii})^2 P_2 - 2(1-a_{ii}) b_i P_1 + b_i^2 P_0 .

    Exactly the per-row sum (same gradient almost everywhere) at O(c²) cost: a bucket table
    counts the μ below each threshold.
    """
    W, b = params.W, params.b
    num_features = b.shape[-1]
    a = W.T @ W  # a[i, j]: input feature i -> output j
    bias = jnp.broadcast_to(b[None, :], a.shape)
    flat = jnp.abs(a) <= 1e-12
    safe_a = jnp.where(flat, 1.0, a)  # double-where: no inf/NaN in the unused branch's gradient
    # Output j fires on {mu > t} if a > 0, {mu < t} if a < 0, everywhere or nowhere if a = 0.
    threshold = jnp.where(flat, jnp.where(bias > 0, -1.0, 3.0), -bias / safe_a)
    threshold = jnp.clip(threshold, -1.0, 3.0)  # mu lies in [0, 1]; padding is 2.0

    below = jax.vmap(count_at_most)(stats.bucket_start, stats.bucket_mu, threshold)
    # (c, c): how many samples of feature i have mu <= t_ij
    below = jnp.minimum(below, stats.counts[:, None])
    sums_below = jnp.take_along_axis(stats.moments, below[None], axis=2)
    everything = jnp.broadcast_to(stats.counts[None, :, None], (3, num_features, num_features))
    total = jnp.take_along_axis(stats.moments, everything, axis=2)
    fires_above = (a > 0) | flat  # a = 0: threshold -1 (all fire) or 3 (none)
    P0, P1, P2 = jnp.where(fires_above[None], total - sums_below, sums_below)
    cross = a**2 * P2 + 2 * a * bias * P1 + bias**2 * P0
    own = total[2] - P2 + (1 - a) ** 2 * P2 - 2 * (1 - a) * bias * P1 + bias**2 * P0
    return jnp.sum(jnp.where(jnp.eye(num_features, dtype=bool), own, cross))


def empirical_loss(W, b, x, mask=None, importance=None) -> Float[Array, ""]:
    r"""Empirical TMS loss :math:`L_n(W, b)` (squared error summed over outputs, mean over samples).

    Args:
      W: weights (num_hidden, num_features).
      b: bias (num_features,).
      x: data (num_data, num_features), e.g. from :func:`tmsjax.tms.data.sample_sparse_limit`.
      mask: optional boolean (num_data,) marking the real rows of a padded dataset.
      importance: optional per-feature loss weights (num_features,).

    Raises:
      ValueError: on wrong shapes or dtypes, NaN parameters or data, or an empty dataset (`x` with
        no rows, or a `mask` that selects none).
    """
    W, b = check_params(W, b)
    x = as_float_array("x", x, ndim=2)
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"x has {x.shape[1]} features but W has {W.shape[1]} columns")
    if x.shape[0] == 0:  # a static shape, so this check holds under jit too
        raise ValueError("x has no rows: the loss of an empty dataset is undefined (n must be > 0)")
    check_finite("x", x)
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            raise ValueError(f"mask must be boolean (which rows are data), got dtype {mask.dtype}")
        if mask.shape != (x.shape[0],):
            raise ValueError(f"mask must have shape ({x.shape[0]},), got {tuple(mask.shape)}")
        if not isinstance(mask, jax.core.Tracer) and not bool(mask.any()):
            raise ValueError("mask selects no data: n must be positive")
    if importance is not None:
        importance = as_float_array("importance", importance, ndim=1)
        if importance.shape[0] != W.shape[1]:
            raise ValueError(f"importance must have shape ({W.shape[1]},), got {importance.shape}")
    return loss(TMSParams(W, b), x, mask, importance)


def _check_nonnegative_scalar(name, value):
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")


def _check_range(name, value, allow_negative=False):
    """A finite number, or a (low, high) range with low ≤ high (non-negative unless allowed)."""
    values = np.asarray(value, dtype=float).reshape(-1)
    if values.size not in (1, 2) or not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be a finite number or a (low, high) range, got {value!r}")
    if values.size == 2 and values[0] > values[1]:
        raise ValueError(f"{name} range must have low <= high, got {value!r}")
    if not allow_negative and np.any(values < 0):
        raise ValueError(f"{name} must be non-negative, got {value!r}")


def init_params(
    key: PRNGKey,
    num_features: int,
    num_hidden: int = 2,
    *,
    scale: float = 1.0,
    bias_scale: float = 0.0,
) -> TMSParams:
    """Random parameters: W ~ N(0, scale²), b ~ N(0, bias_scale²) (b = 0 by default)."""
    num_features = check_positive_int("num_features", num_features)
    num_hidden = check_positive_int("num_hidden", num_hidden)
    _check_nonnegative_scalar("scale", scale)
    _check_nonnegative_scalar("bias_scale", bias_scale)
    key_W, key_b = jax.random.split(key)
    W = scale * jax.random.normal(key_W, (num_hidden, num_features))
    b = bias_scale * jax.random.normal(key_b, (num_features,))
    return TMSParams(W, b)


def init_near_kgon(
    key: PRNGKey,
    k: int,
    num_features: int,
    *,
    radius: float | tuple[float, float] = (0.9, 1.0),
    noise: float = 0.01,
    bias: float | tuple[float, float] = (-0.01, 0.01),
) -> TMSParams:
    r"""Parameters near a regular k-gon (r = 2), the starting points of the paper's SGD runs.

    k random features get columns
    :math:`\rho\,(\cos(\theta + 2\pi j/k), \sin(\theta + 2\pi j/k))` with a random rotation θ and a
    random permutation of features; the other columns are 0. Everything gets N(0, noise²) noise.

    Args:
      key: PRNG key.
      k: number of live columns (vertices).
      num_features: c.
      radius: polygon radius ρ, a number or a (low, high) range to draw it from uniformly.
      noise: standard deviation of the Gaussian noise on W.
      bias: a constant bias, or a (low, high) range to draw each b_i from uniformly.
    """
    num_features = check_positive_int("num_features", num_features)
    k = check_positive_int("k", k)
    if k > num_features:
        raise ValueError(f"k={k} exceeds num_features={num_features}")
    _check_range("radius", radius)
    _check_range("bias", bias, allow_negative=True)
    _check_nonnegative_scalar("noise", noise)
    key_r, key_theta, key_perm, key_noise, key_b = jax.random.split(key, 5)
    if isinstance(radius, tuple):
        rho = jax.random.uniform(key_r, (), minval=radius[0], maxval=radius[1])
    else:
        rho = jnp.asarray(radius, dtype=float)
    theta = jax.random.uniform(key_theta, (), maxval=2 * jnp.pi)
    angles = theta + 2 * jnp.pi * jnp.arange(num_features) / k
    live = jnp.arange(num_features) < k
    columns = rho * jnp.stack([jnp.cos(angles), jnp.sin(angles)]) * live
    columns = columns[:, jax.random.permutation(key_perm, num_features)]
    W = columns + noise * jax.random.normal(key_noise, columns.shape)
    if isinstance(bias, tuple):
        b = jax.random.uniform(key_b, (num_features,), minval=bias[0], maxval=bias[1])
    else:
        b = jnp.full((num_features,), bias, dtype=float)
    return TMSParams(W, b)


__all__ = [
    "TMSParams",
    "reconstruct",
    "loss",
    "empirical_loss",
    "sum_squared_error_from_stats",
    "init_params",
    "init_near_kgon",
]
