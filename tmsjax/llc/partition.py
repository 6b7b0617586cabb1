"""Models as users hold them: split off the arrays to sample, keep the rest static.

An equinox module (``eqx.nn.MLP`` with its activation function), or any pytree with non-array leaves
(ints, strings, callables), cannot be a jit argument as is. The λ̂ engine samples only its floating
arrays: ``arrays, static = eqx.partition(model, eqx.is_inexact_array)``, and the loss sees the
recombined model, ``loss_fn(eqx.combine(arrays, static), data)`` (:class:`PartitionedLoss`).
"""

import equinox as eqx
import jax
import numpy as np

from tmsjax.types import PyTree


def _leaves_equal(a, b) -> bool:
    """Exact equality of two static leaves: arrays (any dtype, integer ones included) by shape,
    dtype and values, everything else (functions, numbers, strings) by ``==``."""
    if isinstance(a, (np.ndarray, jax.Array)) or isinstance(b, (np.ndarray, jax.Array)):
        if not isinstance(a, (np.ndarray, jax.Array)) or not isinstance(b, (np.ndarray, jax.Array)):
            return False
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return a is b


class PartitionedLoss:
    """``loss_fn(eqx.combine(arrays, static), data)``, hashable and comparable by value, so the LLC
    engine's jit (which takes the loss as a static argument) compiles once per loss and model
    structure: two builds with the same loss and the same static part (activation functions, layer
    sizes) share one compiled λ̂ program.

    Equality compares the loss, the static part's tree structure and every static leaf exactly
    (arrays by value: ``eqx.tree_equal(...) is True`` returns an array, not True, for array leaves);
    the hash uses only the loss and the tree structure, which equal objects share.
    """

    def __init__(self, loss_fn, static):
        self.loss_fn = loss_fn
        self.static = static

    def __call__(self, arrays, data):
        return self.loss_fn(eqx.combine(arrays, self.static), data)

    def __hash__(self):
        return hash((self.loss_fn, jax.tree.structure(self.static)))

    def __eq__(self, other):
        if not isinstance(other, PartitionedLoss) or self.loss_fn != other.loss_fn:
            return False
        leaves, structure = jax.tree.flatten(self.static)
        other_leaves, other_structure = jax.tree.flatten(other.static)
        same_leaves = all(_leaves_equal(a, b) for a, b in zip(leaves, other_leaves))
        return structure == other_structure and same_leaves

    def __repr__(self):
        return f"PartitionedLoss({self.loss_fn!r}, static={jax.tree.structure(self.static)})"


def partition_model(model: PyTree, loss_fn, name: str = "center"):
    """(arrays, loss) for sampling: the floating arrays of `model` and a loss of them alone.

    A model that is all floating arrays (a dict of arrays, a NamedTuple of parameters) comes back
    unchanged with `loss_fn` itself, so its compiled program is exactly the one of the plain loss.

    Raises:
      ValueError: naming `name` when the model has no floating-point array.
    """
    arrays, static = eqx.partition(model, eqx.is_inexact_array)
    if not jax.tree.leaves(arrays):
        raise ValueError(f"{name} has no floating-point array leaves to sample")
    if not jax.tree.leaves(static):
        return model, loss_fn
    return arrays, PartitionedLoss(loss_fn, static)


__all__ = ["PartitionedLoss", "partition_model"]
