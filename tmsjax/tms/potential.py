r"""The closed-form TMS potential in the high-sparsity limit (Chen et al. 2023, Lemma 3.1).

With :math:`a_{ij} = W_i\cdot W_j`, :math:`l_i^2 = a_{ii}`, output index i and input index j,

.. math::
    H(W, b) = 3\sum_{i}\sum_{j} \int_0^1
    \big(\mu\,\delta_{ij} - \mathrm{ReLU}(\mu\,a_{ij} + b_i)\big)^2\,d\mu,
    \qquad L(W, b) = \mathbb{E}_x \lVert x - f(x)\rVert^2 = \frac{H}{3c}.

Each integrand is piecewise quadratic in μ, so H integrates in closed form
(docs/paper_numbers.md §2):

- :math:`N_i = (1 - l_i^2)^2 - 3(1 - l_i^2)b_i + 3b_i^2` (output i fires on all of [0, 1] for its
  own input).
- :math:`b_i \le 0`:
  :math:`H_i = \sum_{j\ne i} [a_{ij} > 0,\ -a_{ij} \le b_i]\,(a_{ij}+b_i)^3/a_{ij}
  + ([l_i^2 > 0,\ -l_i^2 \le b_i]\ ?\ b_i^3/l_i^4 + b_i^3/l_i^2 + N_i : 1)`.
- :math:`b_i > 0`: :math:`H_i = \sum_{j\ne i} ([-a_{ij} > b_i]\ ?\ -b_i^3/a_{ij}
  : a_{ij}^2 + 3a_{ij}b_i + 3b_i^2) + N_i`.

H is C¹ but not C² (e.g. at 4-gons). Every division is guarded with the double-``where`` trick, so
values, gradients and Hessians are finite everywhere, including at :math:`a_{ij} = 0` and dead
columns. Works for any number of hidden dimensions r, float32 or float64, and under vmap.
"""

import jax.numpy as jnp

from tmsjax.checks import check_params
from tmsjax.tms.model import TMSParams
from tmsjax.types import Array, Float


def _cross_terms(a, b):
    """3∫(ReLU(μ a + b))² dμ over [0, 1], elementwise (output bias b, off-diagonal a)."""
    # b <= 0: the output fires only for mu > -b/a, which needs a > 0 and -b/a <= 1.
    # Each guard includes its branch's bias sign: the branch not selected is still differentiated,
    # and an unguarded division there turns the whole gradient into NaN.
    fires = (b <= 0) & (a > 0) & (-a <= b)
    a_fires = jnp.where(fires, a, 1.0)
    negative_bias = jnp.where(fires, (a_fires + b) ** 3 / a_fires, 0.0)
    # b > 0: the output fires from mu = 0 and stops at mu = b/|a| when that is inside [0, 1].
    stops = (b > 0) & (-a > b)
    a_stops = jnp.where(stops, a, -1.0)
    positive_bias = jnp.where(stops, -(b**3) / a_stops, a**2 + 3 * a * b + 3 * b**2)
    return jnp.where(b <= 0, negative_bias, positive_bias)


def _self_terms(l2, b):
    """3∫(μ − ReLU(μ l² + b))² dμ over [0, 1], elementwise."""
    full = (1 - l2) ** 2 - 3 * (1 - l2) * b + 3 * b**2
    fires = (b <= 0) & (l2 > 0) & (-l2 <= b)
    l2_fires = jnp.where(fires, l2, 1.0)
    negative_bias = jnp.where(fires, b**3 / l2_fires**2 + b**3 / l2_fires + full, 1.0)
    return jnp.where(b <= 0, negative_bias, full)


def tms_potential_terms(W: Float[Array, "r c"], b: Float[Array, " c"]) -> Float[Array, "c c"]:
    """The c × c matrix of integrated terms (row = output i, column = input j); H is its sum."""
    gram = W.T @ W
    num_features = b.shape[-1]
    eye = jnp.eye(num_features, dtype=bool)
    off_diagonal = _cross_terms(jnp.where(eye, 0.0, gram), b[:, None])
    diagonal = _self_terms(jnp.diagonal(gram), b)
    return jnp.where(eye, jnp.diag(diagonal), off_diagonal)


def tms_potential_H(W: Float[Array, "r c"], b: Float[Array, " c"]) -> Float[Array, ""]:
    """The paper's H(W, b) (no validation; jit/vmap/grad friendly)."""
    return jnp.sum(tms_potential_terms(W, b))


def population_loss(params: TMSParams) -> Float[Array, ""]:
    """L = H / (3c) of a parameter pytree: the n → ∞ limit of :func:`tmsjax.tms.model.loss`."""
    return tms_potential_H(params.W, params.b) / (3 * params.b.shape[-1])


def potential(W, b) -> Float[Array, ""]:
    r"""The expected TMS loss :math:`L(W, b) = H(W, b)/(3c)` in closed form.

    Args:
      W: weights (num_hidden, num_features), any num_hidden.
      b: bias (num_features,).

    Returns:
      The scalar population loss, in the dtype of W.

    Raises:
      ValueError: on wrong shapes or dtypes, or NaN/inf entries.

    Examples:
      >>> import jax.numpy as jnp, tmsjax
      >>> float(tmsjax.tms.potential(jnp.zeros((2, 6)), -jnp.ones(6)))  # all features dead
      0.3333333...
    """
    W, b = check_params(W, b)
    return population_loss(TMSParams(W, b))


__all__ = ["potential", "population_loss", "tms_potential_H", "tms_potential_terms"]
