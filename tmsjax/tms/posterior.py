r"""The TMS posterior: Gaussian prior, tempered likelihood, and their sum as a log density.

.. math::
    \log p_n(w) = \log\varphi(w) - \frac{n\,L_n(w)}{T},
    \qquad \varphi = \mathcal N(0, \sigma^2 I),
    \qquad L_n(w) = \frac1n\sum_{k\le n}\lVert x_k - f(x_k; w)\rVert^2

with the *unhalved* loss of :func:`tmsjax.tms.model.loss` (so T = 1 is a Gaussian likelihood of
variance ½ per output). Chen et al. (2023) sample exactly this with σ = 1, T = 1
(docs/paper_numbers.md §5; inferred from their free-energy constants).

Consequences for the Bayesian transition point :math:`n_c` (see :mod:`tmsjax.tms.theory`). Near a
phase α the evidence is :math:`F_n \approx (n/T) L_\alpha + \lambda_\alpha \log(n/T) +
\lVert w^*_\alpha\rVert^2/(2\sigma^2)`:

- the *likelihood scale* T rescales the sample size, :math:`n_c(T) = T\,n_c(1)`. A halved loss
  (T = 2) moves the 5 → 6 transition from n ≈ 601 to ≈ 1202 (≈ 1317 if one keeps λ log n rather
  than λ log(n/T), the convention docs/paper_numbers.md quotes; the two differ by the O(1) term
  λ log T);
- the *prior width* σ scales the constant, :math:`c_\alpha = \lVert w^*_\alpha\rVert^2/(2\sigma^2)`;
  since the 6-gon has the larger norm (c = 6.378 vs 3.624 for the 5-gon) a wider prior moves n_c
  down, towards ≈ 445 as σ → ∞, and a narrower one moves it up.

Dataset size is data (docs/architecture.md, decision 2): `n` is the number of True entries of the
dataset's mask, a traced value, so one compiled sampler serves every n of a nested sweep.
"""

import math

import jax
import jax.numpy as jnp

from tmsjax.checks import check_params
from tmsjax.tms import model
from tmsjax.tms.data import Dataset, SparseLimitStats
from tmsjax.tms.model import TMSParams
from tmsjax.types import Array, Float, PyTree


def log_prior(params: PyTree, prior_std: float = 1.0) -> Float[Array, ""]:
    r"""Isotropic Gaussian log prior :math:`\log\mathcal N(w; 0, \sigma^2 I)` over every leaf,
    normalised.

    .. math:: \log\varphi(w) = -\frac{\lVert w\rVert^2}{2\sigma^2} - \frac d2 \log(2\pi\sigma^2)
    """
    leaves = jax.tree.leaves(params)
    squared_norm = sum(jnp.sum(leaf**2) for leaf in leaves)
    dim = sum(leaf.size for leaf in leaves)
    return -0.5 * squared_norm / prior_std**2 - 0.5 * dim * math.log(2 * math.pi * prior_std**2)


def log_likelihood(
    params: TMSParams, dataset: Dataset | SparseLimitStats, temperature: float = 1.0
) -> Float[Array, ""]:
    r"""Tempered TMS log likelihood :math:`-n L_n(w) / T` on the real rows of a padded dataset.

    Up to a w-independent constant this is
    :math:`\sum_k \log\mathcal N(x_k; f(x_k; w), \tfrac T2 I)`. `dataset` may also be the
    :class:`~tmsjax.tms.data.SparseLimitStats` of one-hot data: the same value from prefix sums,
    O(c²) instead of O(n c) per evaluation.
    """
    if isinstance(dataset, SparseLimitStats):
        return -model.sum_squared_error_from_stats(params, dataset) / temperature
    num_data = dataset.num_data.astype(dataset.x.dtype)
    return -num_data * model.loss(params, dataset.x, dataset.mask) / temperature


def log_density(
    params: TMSParams, dataset: Dataset, prior_std: float = 1.0, temperature: float = 1.0
) -> Float[Array, ""]:
    r"""Unnormalised log posterior :math:`\log\varphi(w) - n L_n(w)/T` (pure, vmappable, jittable).

    Args:
      params: the TMS parameters w = (W, b).
      dataset: padded dataset; n = dataset.mask.sum() is traced.
      prior_std: σ of the N(0, σ²I) prior.
      temperature: the likelihood scale T (T = 1: the paper's posterior; T = 2: a halved loss).
    """
    return log_prior(params, prior_std) + log_likelihood(params, dataset, temperature)


def make_logdensity_fn(prior_std: float = 1.0, temperature: float = 1.0):
    """A ``(params, dataset) -> log density`` closure with σ and T fixed; the dataset stays an
    argument so a sweep can vmap over datasets of different n (docs/architecture.md, decision 3)."""
    if not (prior_std > 0 and math.isfinite(prior_std)):
        raise ValueError(f"prior_std must be positive and finite, got {prior_std!r}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be positive and finite, got {temperature!r}")

    def logdensity_fn(params, dataset):
        return log_density(params, dataset, prior_std, temperature)

    return logdensity_fn


def posterior_log_density(W, b, x, mask=None, *, prior_std: float = 1.0, temperature: float = 1.0):
    """Validated public wrapper of :func:`log_density` on raw arrays.

    Raises:
      ValueError: on wrong shapes, NaN parameters, an empty dataset (n ≤ 0), or σ, T ≤ 0.
    """
    W, b = check_params(W, b)
    model.empirical_loss(W, b, x, mask)  # validates x and mask with named errors
    make_logdensity_fn(prior_std, temperature)  # validates σ and T
    x = jnp.asarray(x)
    mask = jnp.ones(x.shape[0], bool) if mask is None else jnp.asarray(mask)
    return log_density(TMSParams(W, b), Dataset(x, mask), prior_std, temperature)


__all__ = [
    "log_prior",
    "log_likelihood",
    "log_density",
    "make_logdensity_fn",
    "posterior_log_density",
]
