"""Type aliases shared across tmsjax (shapes in jaxtyping notation)."""

from collections.abc import Callable
from typing import Any

from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

PRNGKey = PRNGKeyArray
PyTree = Any
Scalar = Float[Array, ""]
LossFn = Callable[..., Scalar]

__all__ = ["Array", "Bool", "Float", "Int", "PRNGKey", "PyTree", "Scalar", "LossFn"]
