r"""The TMS losses in the ``loss_fn(params, data)`` form the generic engines take (λ̂, samplers).

Three ways to the same :math:`L_n` or its limit:

- :func:`row_loss`: the mean over the real rows of a padded :class:`~tmsjax.tms.data.Dataset`,
  :math:`L_n(w) = \frac1n \sum_{k:\,\mathrm{mask}_k} \lVert x_k - f(x_k; w)\rVert^2`;
- :func:`stats_loss`: the same value for one-hot (high-sparsity) data from its sufficient statistics
  (:class:`~tmsjax.tms.data.SparseLimitStats`), O(c²) instead of O(n c);
- :func:`potential_loss`: the exact population loss :math:`L = H/(3c)` (n → ∞), data ignored.

A padded Dataset defines ``num_data`` and ``minibatch(key, batch_size)``, which the LLC engine uses
for n and for minibatches, so ``estimate_llc(key, row_loss, params, dataset, batch_size=...)`` needs
no TMS-specific arguments.
"""

from typing import Any

from tmsjax.tms import model
from tmsjax.tms.data import Dataset, SparseLimitStats
from tmsjax.tms.potential import population_loss
from tmsjax.types import Array, Float


def row_loss(params: model.TMSParams, data: Dataset) -> Float[Array, ""]:
    """The empirical TMS loss :math:`L_n` of a padded :class:`~tmsjax.tms.data.Dataset` (mask
    respected)."""
    return model.loss(params, data.x, data.mask)


def stats_loss(params: model.TMSParams, stats: SparseLimitStats) -> Float[Array, ""]:
    """:math:`L_n` of one-hot data from its sufficient statistics (one dataset size:
    ``stats.counts`` scalar)."""
    return model.sum_squared_error_from_stats(params, stats) / stats.num_data


def potential_loss(params: model.TMSParams, data: Any = None) -> Float[Array, ""]:
    """The exact TMS population loss (n → ∞); `data` is ignored. Pass an explicit `nbeta`."""
    del data
    return population_loss(params)


__all__ = ["potential_loss", "row_loss", "stats_loss"]
