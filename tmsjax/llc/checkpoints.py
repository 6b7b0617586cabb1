"""Checkpoints as :func:`~tmsjax.llc.llc_along_training` takes them: one model with leading
(num_runs, num_checkpoints) axes on its floating arrays.

A training loop keeps a list of models. The obvious stack, ``jax.tree.map(jnp.stack, *models)``,
fails on an equinox module: its activation functions are leaves too, and ``jnp.stack`` refuses a
function. :func:`stack_checkpoints` stacks only what λ̂ samples (the floating arrays, as
:func:`~tmsjax.llc.partition_model` splits them) and keeps the rest once, after checking that every
checkpoint shares it.
"""

import equinox as eqx
import jax
import jax.numpy as jnp

from tmsjax.llc.partition import _leaves_equal
from tmsjax.types import PyTree


def _as_run(index: int, run) -> list:
    if isinstance(run, (list, tuple)) and not hasattr(run, "_fields"):
        return list(run)
    raise ValueError(
        f"run {index} must be a list or tuple of models (one per checkpoint), got "
        f"{type(run).__name__}; for one run call stack_checkpoints(models)"
    )


def stack_checkpoints(*runs) -> PyTree:
    """Stacks the checkpoints of one or more training runs into one model for λ̂ along training.

    Args:
      *runs: each a list (or tuple) of models, one per checkpoint in training order; every run has
        the same number of checkpoints. A model is any pytree, an equinox module included
        (``stack_checkpoints(models)`` for one run, ``stack_checkpoints(*runs)`` for many).

    Returns:
      The first model with each floating array replaced by the stack of that array over runs and
      checkpoints, shape (num_runs, num_checkpoints, *shape); its other leaves (activation
      functions, integer arrays, ...) are shared, as :func:`~tmsjax.llc.llc_along_training`
      expects.

    Raises:
      ValueError: no run, a run that is not a list, an empty run or runs of unequal length, or a
        checkpoint whose structure, array shapes and dtypes, or non-floating leaves differ from
        the first one's (naming the run and checkpoint).

    Examples:
      >>> import equinox as eqx, jax
      >>> models = [eqx.nn.MLP(2, 1, 4, 1, key=jax.random.key(i)) for i in range(3)]
      >>> stack_checkpoints(models).layers[0].weight.shape     # (runs, checkpoints, 4, 2)
      (1, 3, 4, 2)
    """
    if not runs:
        raise ValueError("stack_checkpoints needs at least one run: stack_checkpoints(models)")
    runs = [_as_run(index, run) for index, run in enumerate(runs)]
    num_checkpoints = len(runs[0])
    if num_checkpoints == 0 or any(len(run) != num_checkpoints for run in runs):
        lengths = [len(run) for run in runs]
        raise ValueError(f"every run needs the same number (>= 1) of checkpoints, got {lengths}")
    first = runs[0][0]
    structure = jax.tree.structure(first)
    first_arrays, static = eqx.partition(first, eqx.is_inexact_array)
    array_structure = jax.tree.structure(first_arrays)
    shapes = [(jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(first_arrays)]
    static_leaves = jax.tree.leaves(static)
    stacked_arrays = []
    for r, run in enumerate(runs):
        for c, model in enumerate(run):
            where = f"checkpoint {c} of run {r}"
            if jax.tree.structure(model) != structure:
                raise ValueError(f"{where} has another structure than the first checkpoint")
            arrays, other = eqx.partition(model, eqx.is_inexact_array)
            if (
                jax.tree.structure(arrays) != array_structure
                or [(jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(arrays)] != shapes
            ):
                raise ValueError(f"{where}: its floating arrays differ in shape or dtype")
            # The static part is kept once: a checkpoint that differs there (another activation
            # function, a changed integer buffer) would be silently replaced by the first's.
            other_leaves = jax.tree.leaves(other)
            if len(other_leaves) != len(static_leaves) or not all(
                _leaves_equal(a, b) for a, b in zip(other_leaves, static_leaves)
            ):
                raise ValueError(
                    f"{where}: its non-floating leaves (activation functions, integer arrays) "
                    "differ from the first checkpoint's; they must be shared"
                )
            stacked_arrays.append(arrays)
    num_runs = len(runs)
    stacked = jax.tree.map(
        lambda *xs: jnp.stack(xs).reshape(num_runs, num_checkpoints, *jnp.shape(xs[0])),
        *stacked_arrays,
    )
    return eqx.combine(stacked, static)


__all__ = ["stack_checkpoints"]
