r"""Data for the TMS: samplers, and datasets padded to a fixed size with a mask.

Dataset size is data, not shape: a :class:`Dataset` holds `x` of shape
(n_max, c) and a boolean `mask` whose first n entries are True. A sweep over n uses *nested*
datasets (the first n points of one draw), so every n runs in the same compiled program.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tmsjax.checks import as_float_array, check_finite, check_positive_int
from tmsjax.types import Array, Bool, Float, Int, PRNGKey


class Dataset(NamedTuple):
    """A padded dataset. Real rows come first; `mask[k]` says whether row k is data.

    Attributes:
      x: inputs (targets are the inputs themselves), shape (n_max, num_features).
      mask: boolean (n_max,).
    """

    x: Float[Array, "n_max num_features"]
    mask: Bool[Array, " n_max"]

    @property
    def num_data(self) -> Int[Array, ""]:
        """The dataset size n = mask.sum() (a traced value under jit)."""
        return jnp.sum(self.mask, axis=-1)

    def minibatch(self, key: PRNGKey, batch_size: int) -> "Dataset":
        """`batch_size` real rows drawn uniformly with replacement, as an all-real Dataset.

        The LLC engine calls this on data that defines it, so padding rows never enter a minibatch.
        """
        rows = self.x[minibatch_indices(key, self.num_data, batch_size)]
        return Dataset(rows, jnp.ones((batch_size,), dtype=bool))


def sample_sparse_limit(
    key: PRNGKey, num_data: int, num_features: int
) -> Float[Array, "num_data num_features"]:
    r"""The high-sparsity-limit distribution of Chen et al.: :math:`x = \mu e_i`, i uniform,
    μ ~ U[0, 1]."""
    num_data = check_positive_int("num_data", num_data)
    num_features = check_positive_int("num_features", num_features)
    key_i, key_mu = jax.random.split(key)
    index = jax.random.randint(key_i, (num_data,), 0, num_features)
    mu = jax.random.uniform(key_mu, (num_data,))
    return jax.nn.one_hot(index, num_features) * mu[:, None]


def sample_sparse(
    key: PRNGKey,
    num_data: int,
    num_features: int,
    feature_probability: float | Float[Array, " num_features"],
) -> Float[Array, "num_data num_features"]:
    r"""Elhage et al.'s sparse data: feature i present with probability p_i (= 1 − S), value
    U[0, 1].

    Importance weights act on the loss, not the data: pass them to :func:`tmsjax.tms.model.loss`.
    """
    num_data = check_positive_int("num_data", num_data)
    num_features = check_positive_int("num_features", num_features)
    p = feature_probability
    if not isinstance(p, jax.Array):
        p = np.asarray(p, dtype=float)
    concrete = not isinstance(p, jax.core.Tracer)
    if concrete and not np.all((np.asarray(p) >= 0) & (np.asarray(p) <= 1)):
        raise ValueError(f"feature_probability must lie in [0, 1], got {feature_probability!r}")
    key_on, key_value = jax.random.split(key)
    present = jax.random.uniform(key_on, (num_data, num_features)) < p
    return present * jax.random.uniform(key_value, (num_data, num_features))


def make_dataset(x, n_max: int | None = None) -> Dataset:
    """Wraps all rows of `x` as data, padded with zero rows up to `n_max`."""
    x = as_float_array("x", x, ndim=2)
    n = x.shape[0]
    n_max = n if n_max is None else check_positive_int("n_max", n_max)
    if n_max < n:
        raise ValueError(f"n_max={n_max} is smaller than the {n} rows of x")
    if n == 0:
        raise ValueError("x has no rows: n must be positive")
    check_finite("x", x)
    padded = jnp.concatenate([x, jnp.zeros((n_max - n, x.shape[1]), x.dtype)])
    return Dataset(padded, jnp.arange(n_max) < n)


def nested_datasets(x, sizes) -> Dataset:
    """Datasets of sizes `sizes` made of the first n rows of `x`, stacked on a leading axis.

    Args:
      x: (n_max, c) the rows, in the order the datasets take them.
      sizes: the dataset sizes, nondecreasing: nested datasets grow. A size may repeat, as when a
        block of sizes is padded to a fixed length by repeating its last one.

    Returns:
      A Dataset with x (len(sizes), n_max, c) and mask (len(sizes), n_max), n_max = x.shape[0].

    Raises:
      ValueError: if `sizes` is empty, not 1-d, not positive integers, decreasing anywhere, or
        beyond the rows of `x`.
    """
    x = as_float_array("x", x, ndim=2)
    sizes = np.asarray(sizes)
    if sizes.ndim != 1 or sizes.size == 0:
        raise ValueError(f"sizes must be a non-empty 1-d sequence, got {sizes!r}")
    if np.any(sizes <= 0) or np.any(sizes != np.round(sizes)):
        raise ValueError(f"sizes must be positive integers, got {sizes.tolist()}")
    if np.any(np.diff(sizes) < 0):
        raise ValueError(
            f"sizes must be nondecreasing (nested datasets grow), got {sizes.tolist()}"
        )
    if np.any(sizes > x.shape[0]):
        raise ValueError(f"sizes {sizes.tolist()} exceed the {x.shape[0]} rows of x")
    mask = jnp.arange(x.shape[0])[None, :] < jnp.asarray(sizes)[:, None]
    return Dataset(jnp.broadcast_to(x, (len(sizes), *x.shape)), mask)


class SparseLimitStats(NamedTuple):
    r"""Sufficient statistics of one-hot data :math:`x_k = \mu_k e_{i_k}` for the TMS loss.

    For such data the loss of every (input feature i, output j) pair is a sum over the samples of
    feature i of a quadratic in μ on the interval where output j fires, so three prefix sums over
    each feature's sorted μ give it exactly (:func:`tmsjax.tms.model.sum_squared_error_from_stats`).
    What remains is to count the μ below each of the c² thresholds; a bucket table makes that O(1):
    with K a power of two, bucket k holds the μ with ⌊μK⌋ = k (exact in floating point, since μK is
    exact), so #{μ ≤ t} = (samples in buckets below ⌊tK⌋) + (those of bucket ⌊tK⌋ that are ≤ t), a
    gather and at most `bucket_size` comparisons. O(c²) per evaluation instead of O(n c r): the same
    value and gradient as the rows.

    Attributes:
      mu: (c, m) each feature's μ values sorted ascending, padded with 2.0 (> any μ ∈ [0, 1]).
      moments: (3, c, m + 1) prefix sums of μ⁰, μ¹, μ² over `mu` (moments[:, i, k] sums the k
        smallest μ of feature i).
      counts: (c,) samples per feature; n = counts.sum().
      bucket_start: (c, K + 1) the number of feature i's μ in buckets below k.
      bucket_mu: (c, K + 1, bucket_size) the μ of bucket k (bucket K holds μ = 1), padded with +inf.
    """

    mu: Float[Array, "num_features m"]
    moments: Float[Array, "3 num_features m_plus_1"]
    counts: Int[Array, " num_features"]
    bucket_start: Int[Array, "num_features K_plus_1"]
    bucket_mu: Float[Array, "num_features K_plus_1 bucket_size"]

    @property
    def num_data(self) -> Int[Array, ""]:
        return jnp.sum(self.counts, axis=-1)


def sparse_limit_stats(x, sizes, num_slots: int | None = None) -> SparseLimitStats:
    """:class:`SparseLimitStats` of the first n rows of one-hot `x` for each n in `sizes`, stacked.

    Args:
      x: (n_max, c) rows with at most one nonzero entry, nonnegative (the high-sparsity-limit data).
      sizes: dataset sizes n (nested: the first n rows), each ≤ n_max.
      num_slots: the padded length m of each feature's μ list (default: the largest count). Pass the
        same value for every block of a sweep (e.g. the largest count over all of x) so every block
        has one shape and one compilation.

    Raises:
      ValueError: if x is not one-hot and nonnegative, or a size is not in 1..n_max.
    """
    x = np.asarray(as_float_array("x", x, ndim=2), dtype=np.float64)
    check_finite("x", x)
    if np.any(x < 0) or np.any(np.count_nonzero(x, axis=1) > 1):
        raise ValueError("x must have at most one nonzero, nonnegative entry per row (x = mu e_i)")
    sizes = [check_positive_int("sizes", n) for n in np.atleast_1d(sizes).tolist()]
    if max(sizes) > x.shape[0]:
        raise ValueError(f"sizes {sizes} exceed the {x.shape[0]} rows of x")
    num_features = x.shape[1]
    feature, mu = x.argmax(axis=1), x.max(axis=1)
    counts = np.stack([np.bincount(feature[:n], minlength=num_features) for n in sizes])
    m = int(counts.max()) if num_slots is None else check_positive_int("num_slots", num_slots)
    if m < counts.max():
        raise ValueError(
            f"num_slots={m} is smaller than the {int(counts.max())} samples of one feature"
        )
    dtype = jnp.zeros(()).dtype  # float32 unless x64 is enabled
    # Buckets are cut on the μ the loss will see (cast to its dtype); K a power of two ≥ m, so
    # that ⌊μK⌋ is exact. Their width is the largest occupancy over all of x (nested datasets
    # never hold more), so every block of a sweep with the same num_slots has the same shapes.
    num_buckets = 1 << max(int(m) - 1, 1).bit_length()
    mu = np.asarray(mu.astype(dtype), np.float64)
    bucket = np.minimum(np.floor(mu * num_buckets).astype(np.int64), num_buckets)
    flat = feature * (num_buckets + 1) + bucket
    bucket_size = max(int(np.bincount(flat).max()), 1)
    sorted_mu = np.full((len(sizes), num_features, m), 2.0)
    moments = np.zeros((len(sizes), 3, num_features, m + 1))
    bucket_start = np.zeros((len(sizes), num_features, num_buckets + 1), np.int32)
    bucket_mu = np.full((len(sizes), num_features, num_buckets + 1, bucket_size), np.inf)
    for s, n in enumerate(sizes):
        for i in range(num_features):
            values = np.sort(mu[:n][feature[:n] == i])
            sorted_mu[s, i, : len(values)] = values
            for power in range(3):
                sums = np.concatenate([[0.0], np.cumsum(values**power)])
                moments[s, power, i, : len(sums)] = sums
                moments[s, power, i, len(sums) :] = sums[-1]
            owner = np.minimum(np.floor(values * num_buckets).astype(np.int64), num_buckets)
            per_bucket = np.bincount(owner, minlength=num_buckets + 1)
            bucket_start[s, i, 1:] = np.cumsum(per_bucket)[:-1]
            slot = np.arange(len(values)) - bucket_start[s, i, owner]
            bucket_mu[s, i, owner, slot] = values
    return SparseLimitStats(
        jnp.asarray(sorted_mu, dtype),
        jnp.asarray(moments, dtype),
        jnp.asarray(counts),
        jnp.asarray(bucket_start),
        jnp.asarray(bucket_mu, dtype),
    )


def count_at_most(bucket_start, bucket_mu, t) -> Int[Array, "..."]:
    """#{μ ≤ t} of one feature for each threshold in `t`, from its bucket table
    (:class:`SparseLimitStats` ``bucket_start[i]``, ``bucket_mu[i]``): O(bucket_size) per threshold.
    """
    num_buckets = bucket_start.shape[-1] - 1
    k = jnp.clip(jnp.floor(t * num_buckets), 0, num_buckets).astype(bucket_start.dtype)
    return bucket_start[k] + jnp.sum(bucket_mu[k] <= t[..., None], axis=-1, dtype=k.dtype)


def minibatch_indices(key: PRNGKey, num_data, batch_size: int) -> Int[Array, " batch_size"]:
    """`batch_size` row indices drawn uniformly with replacement from the first `num_data` rows.

    ``floor(u · n)`` works with n traced, because real rows come first in a padded dataset.
    """
    index = jnp.floor(jax.random.uniform(key, (batch_size,)) * num_data).astype(jnp.int32)
    return jnp.minimum(index, num_data - 1)


def shuffled_indices(key: PRNGKey, mask: Bool[Array, " n_max"]) -> Int[Array, " n_max"]:
    """A random order of the real rows first, padding rows last: shuffling without replacement, n
    traced."""
    scores = jax.random.uniform(key, mask.shape)
    return jnp.argsort(jnp.where(mask, scores, 2.0)).astype(jnp.int32)


def sample_minibatch(
    key: PRNGKey, dataset: Dataset, batch_size: int
) -> Float[Array, "batch_size num_features"]:
    """Draws `batch_size` rows uniformly with replacement from the real rows of a padded dataset.

    Relies on real rows coming first (as :func:`make_dataset` and :func:`nested_datasets` build
    them), so that index = floor(u · n) works with n traced.
    """
    return dataset.x[minibatch_indices(key, dataset.num_data, batch_size)]


def epoch_permutation(key: PRNGKey, dataset: Dataset) -> Int[Array, " n_max"]:
    """A random order of the real rows first, padding rows last (see :func:`shuffled_indices`)."""
    return shuffled_indices(key, dataset.mask)


__all__ = [
    "Dataset",
    "SparseLimitStats",
    "count_at_most",
    "sparse_limit_stats",
    "sample_sparse_limit",
    "sample_sparse",
    "make_dataset",
    "nested_datasets",
    "sample_minibatch",
    "epoch_permutation",
    "minibatch_indices",
    "shuffled_indices",
]
