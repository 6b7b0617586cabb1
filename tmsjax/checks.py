"""Argument validation at public entry points: a ValueError that names the bad argument.

Shape and dtype checks run at trace time (shapes are static). Value checks (NaN, n <= 0) run only on
concrete arrays: inside jit the values are tracers and failures become data instead
(docs/architecture.md, decision 8).
"""

import jax
import numpy as np


def is_concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


def as_float_array(name: str, value, ndim: int | None = None):
    """Checks that `value` is a real floating array (or convertible), with `ndim` dimensions."""
    if isinstance(value, jax.core.Tracer):
        array = value
    else:
        try:
            array = jax.numpy.asarray(value)
        except TypeError as error:
            raise ValueError(
                f"{name} must be an array of numbers, got {type(value).__name__}"
            ) from error
    if not (jax.numpy.issubdtype(array.dtype, jax.numpy.floating)):
        if jax.numpy.issubdtype(array.dtype, jax.numpy.integer) and is_concrete(array):
            array = array.astype(jax.numpy.result_type(float))
        else:
            raise ValueError(f"{name} must have a floating dtype, got {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(array.shape)}")
    return array


def check_finite(name: str, value) -> None:
    """Raises if a concrete array holds NaN or inf; a no-op under tracing."""
    if is_concrete(value) and not bool(np.all(np.isfinite(np.asarray(value)))):
        raise ValueError(f"{name} contains NaN or inf values")


def _is_int(value) -> bool:
    try:
        return not isinstance(value, bool | str) and int(value) == value
    except (TypeError, ValueError, OverflowError):
        return False


def check_positive_int(name: str, value) -> int:
    """`value` as an int; raises unless it is an integer (of any type, not bool) above 0."""
    if not (_is_int(value) and int(value) > 0):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_nonnegative_int(name: str, value) -> int:
    """`value` as an int; raises unless it is an integer (of any type, not bool) ≥ 0."""
    if not (_is_int(value) and int(value) >= 0):
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def check_real_array(name: str, value, ndim: int) -> np.ndarray:
    """A non-empty, finite float64 numpy array with `ndim` dimensions (host-side settings, not
    traced data)."""
    if isinstance(value, str):
        raise ValueError(f"{name} must be an array of numbers, got a string")
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be an array of numbers, got {value!r}") from error
    if array.ndim != ndim or array.size == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-d array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf values")
    return array


def check_params(W, b, *, batched: bool = False, num_hidden: int | None = None):
    """Validates TMS weights W (r, c) and bias b (c,), with an optional leading batch axis."""
    lead = 1 if batched else 0
    W = as_float_array("W", W, ndim=2 + lead)
    b = as_float_array("b", b, ndim=1 + lead)
    if W.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"W has {W.shape[-1]} feature columns but b has {b.shape[-1]} entries; "
            "W must be (num_hidden, num_features) and b (num_features,)"
        )
    if batched and W.shape[0] != b.shape[0]:
        raise ValueError(f"W and b must share the batch axis, got {W.shape[0]} and {b.shape[0]}")
    if num_hidden is not None and W.shape[-2] != num_hidden:
        raise ValueError(
            f"W must have num_hidden={num_hidden} rows here, got shape {tuple(W.shape)}"
        )
    check_finite("W", W)
    check_finite("b", b)
    return W, b
