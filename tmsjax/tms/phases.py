r"""Coarse-graining of TMS parameters into k-gon phases: the phase classifier.

Any (W, b) with r = 2 (one point or a batch of millions of posterior samples) maps to a canonical
label "k" + "+"·σ⁺ + "-"·σ⁻ of the critical-point catalogue (:mod:`tmsjax.tms.critical`), or
"unknown", plus its distance to the nearest catalogue point of that label. Everything is invariant
to rotations, reflections and permutations of the features, and runs as one vectorised JAX program.

The rules, each a threshold with its reason:

1. **Dead columns.** Column i is *present* when :math:`\lVert W_i\rVert \ge` ``DEAD_FRACTION`` ×
   the longest column. Catalogue points have live columns of one length and dead columns of length
   0, so half the longest length is the widest margin on both sides, and a relative threshold is
   scale-free (posterior samples at small n have inflated dead columns, as the paper notes).
2. **Vertices.** k is the number of present columns that are vertices of the convex hull of the
   present columns (Chen et al.'s hull-vertex count). Column i is a vertex when the vectors
   :math:`W_j - W_i` all lie in an open half-plane; present columns inside the hull, or on a hull
   edge, are not vertices.
3. **σ⁻** counts vertices whose output never fires on its own feature,
   :math:`b_i \le -\lVert W_i\rVert^2` (the paper's "large negative" bias); **σ⁺** counts
   non-vertex columns with :math:`b_i > 0` (dead features whose output fires on every input,
   Lemma 3.1's positive-bias branch).
4. **Distance.** The Euclidean distance from (W, b) to the critical set of that label, modulo the
   symmetries: vertices sorted by angle are matched in order to the regular polygon (the optimal
   rotation of a 2-D Procrustes problem is closed-form; reflections are covered because a regular
   polygon is its own mirror image), non-vertex columns to 0, live biases to b*, σ⁺ biases to
   1/(2c), and the inequality-constrained biases (dead b ≤ 0, silenced b ≤ −l*²) by their
   violation.
5. **Unknown.** A point is "unknown" when (k, σ⁺, σ⁻) names no catalogue point (e.g. a 3-gon, or a
   5-gon with a silenced output), or when its distance exceeds ``max_distance``. The default 1.0 is
   ~250× the distance of a catalogue point under N(0, 1e-3²) noise per parameter (≈ 0.004 at c = 6)
   and below that of random parameters (N(0, 1) entries at c = 6: 1st percentile 1.6, median 3.1, so
   all but ~1e-5 of them are "unknown"). Posterior samples are broader (at n ≈ 400–800 their
   median distance is 0.4–0.8, 95th percentile ≈ 1.2), so the occupancy curves pass
   ``max_distance=inf``: the paper's pure hull-count labels.

References:
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301, §5 and App. F (classification of
  samples).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tmsjax.checks import check_params, check_positive_int
from tmsjax.tms.critical import critical_points
from tmsjax.types import Array, Float, Int

DEAD_FRACTION = 0.5
DEFAULT_MAX_DISTANCE = 1.0
UNKNOWN = "unknown"


@functools.cache
def phase_labels(num_features: int) -> tuple[str, ...]:
    """Labels indexed by phase id: the catalogue sorted by loss, then "unknown" (the last id)."""
    return tuple(p.label for p in critical_points(num_features)) + (UNKNOWN,)


class _Table(NamedTuple):
    lookup: np.ndarray  # (c + 1, c + 1, c + 1) ids indexed by (k, σ⁺, σ⁻), unknown elsewhere
    radius: np.ndarray  # (num_ids,) l* per id
    live_bias: np.ndarray  # (num_ids,) b* per id
    cos: np.ndarray  # (c + 1, c) cos(2π s / k) indexed by (k, s): the regular k-gon's vertex s
    sin: np.ndarray  # (c + 1, c) sin(2π s / k)


@functools.cache
def _table(num_features: int) -> _Table:
    points = critical_points(num_features)
    unknown = len(points)
    lookup = np.full((num_features + 1,) * 3, unknown, dtype=np.int32)
    for index, p in enumerate(points):
        lookup[p.k, p.sigma_plus, p.sigma_minus] = index
    radius = np.array([p.radius for p in points] + [np.nan])
    live_bias = np.array([p.live_bias for p in points] + [np.nan])
    # A table instead of cos/sin in the program: k and s are small integers, and the libm calls
    # were a third of the classifier's time.
    k = np.maximum(np.arange(num_features + 1), 1)[:, None]
    angle = 2 * np.pi * np.arange(num_features)[None, :] / k
    return _Table(lookup, radius, live_bias, np.cos(angle), np.sin(angle))


def _fill(mask, ndim: int):
    """A (c, c) constant broadcast against arrays with `ndim` trailing batch axes."""
    return mask.reshape(mask.shape + (1,) * ndim)


def _hull_vertices(x, y, present):
    """Which present points (x_i, y_i) are vertices of the convex hull of the present points.

    Column i is a vertex iff the vectors d_j = p_j − p_i (j ≠ i present) lie in an open half-plane,
    i.e. iff for some candidate boundary ray d_m every other d_j lies strictly to its left. Cross
    products of differences are sums of entries of the c × c cross-product matrix (bilinearity), so
    the O(c³) test costs three additions and a comparison per triple.

    Args:
      x, y: coordinates (c, *batch); features first, so a batch sits on the minor axes.
      present: boolean (c, *batch).
    """
    num, extra = x.shape[0], x.ndim - 1
    cross_matrix = x[:, None] * y[None] - y[:, None] * x[None]  # [i, j]
    transposed = jnp.swapaxes(cross_matrix, 0, 1)
    cross = cross_matrix[None] + cross_matrix[:, :, None] + transposed[:, None]  # [i, m, j]
    # "Strictly left" up to round-off: compiled code fuses multiply-adds, so an exact 0 comes out as
    # ~1e-8 of either sign. The tolerance is relative to the squared scale; the ray's own point
    # (j = m) always passes. Exactly collinear triples (never among catalogue points, measure zero
    # for samples; ~2e-4 of N(0, 1) junk falls within the tolerance) count as not strictly left.
    tol = 1e-5 * jnp.max(x**2 + y**2, axis=0)
    eye = _fill(np.eye(num, dtype=bool), extra)
    other = present[None] & ~eye  # [i, j]: j ≠ i, j present
    ok = (cross > tol) | eye[None] | ~other[:, None]
    works = jnp.all(ok, axis=2) & other  # [i, m]
    return present & (jnp.any(works, axis=1) | ~jnp.any(other, axis=1))


def _classify_columns(table: _Table, x, y, b, max_distance: float):
    """The classifier on feature-major arrays: x, y, b (c, *batch) -> ids, distances (*batch).

    Features come first so that a batch lies along the minor axis and every step is elementwise
    across samples (vectorised), and the same code serves one point (no batch axes) and a chunk.
    """
    c, extra = x.shape[0], x.ndim - 1
    unknown = len(table.radius) - 1
    positive_bias = 1.0 / (2 * c)
    norms = jnp.sqrt(x**2 + y**2)
    present = norms >= DEAD_FRACTION * jnp.max(norms, axis=0)
    vertex = _hull_vertices(x, y, present)
    silenced = vertex & (b <= -(norms**2))
    boosted = ~vertex & (b > 0)
    k, sigma_plus, sigma_minus = (jnp.sum(m, axis=0) for m in (vertex, boosted, silenced))
    phase = jnp.asarray(table.lookup)[k, sigma_plus, sigma_minus]

    # Distance to the label's critical set (see the module docstring, rule 4).
    radius = jnp.asarray(table.radius, x.dtype)[phase]
    live_bias = jnp.asarray(table.live_bias, x.dtype)[phase]
    # Vertices in angular order, by rank (a stable argsort: ties by index) rather than a sort, which
    # XLA runs as a scalar comparator loop. The pseudo-angle is strictly increasing in atan2(y, x)
    # on (-2, 2], so the order is the same without libm calls; non-vertices rank after the vertices.
    l1 = jnp.abs(x) + jnp.abs(y)
    pseudo_angle = jnp.copysign(1.0 - x / jnp.where(l1 > 0, l1, 1.0), y)
    key = jnp.where(vertex, pseudo_angle, 10.0)
    lower_index = _fill(np.tri(c, k=-1, dtype=bool), extra)  # [i, j]: j < i
    before = (key[None] < key[:, None]) | ((key[None] == key[:, None]) & lower_index)  # [i, j]
    rank = jnp.sum(before, axis=1)  # vertices get 0 .. k-1
    # Vertex i is matched to the regular polygon's vertex rank_i (the 2-D Procrustes rotation below
    # is closed-form); non-vertex columns are matched to 0.
    tx = jnp.where(vertex, radius * jnp.asarray(table.cos, x.dtype)[k, rank], 0.0)
    ty = jnp.where(vertex, radius * jnp.asarray(table.sin, x.dtype)[k, rank], 0.0)
    vx, vy = jnp.where(vertex, x, 0.0), jnp.where(vertex, y, 0.0)
    dot = jnp.sum(vx * tx + vy * ty, axis=0)
    cross = jnp.sum(tx * vy - ty * vx, axis=0)
    squares = jnp.sum(vx**2 + vy**2, axis=0) + jnp.sum(tx**2 + ty**2, axis=0)
    polygon = squares - 2 * jnp.sqrt(dot**2 + cross**2)
    rest = jnp.sum(jnp.where(vertex, 0.0, norms**2), axis=0)
    bias = jnp.where(
        vertex,
        jnp.where(silenced, jax.nn.relu(b + radius**2) ** 2, (b - live_bias) ** 2),
        jnp.where(boosted, (b - positive_bias) ** 2, jax.nn.relu(b) ** 2),
    )
    distance = jnp.sqrt(jnp.maximum(polygon, 0.0) + rest + jnp.sum(bias, axis=0))
    distance = jnp.where(phase == unknown, jnp.inf, distance)
    phase = jnp.where(distance > max_distance, unknown, phase)
    return phase.astype(jnp.int32), distance


def make_classifier(num_features: int, max_distance: float = DEFAULT_MAX_DISTANCE):
    """A pure, jittable classifier of one point: ``(W (2, c), b (c,)) -> (phase id, distance)``.

    vmap it for batches, or call it inside a scan; ids index :func:`phase_labels`. For many
    samples :func:`classify_batch` is faster: the same computation with samples on the minor axis.
    """
    num_features = check_positive_int("num_features", num_features)
    table = _table(num_features)

    def classify_one(W, b) -> tuple[Int[Array, ""], Float[Array, ""]]:
        return _classify_columns(table, W[0], W[1], b, max_distance)

    return classify_one


class Classification(NamedTuple):
    """The phase of one point: its label, and its distance to the nearest catalogue point of that
    label."""

    label: str
    distance: float


class BatchClassification(NamedTuple):
    """Phases of a batch: integer ids (index into `table`) and distances."""

    ids: Int[Array, " batch"]
    distance: Float[Array, " batch"]
    table: tuple[str, ...]

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.table, dtype=object)[np.asarray(self.ids)]

    def counts(self) -> dict[str, int]:
        """How many samples fall in each phase (every label of the table, zeros included)."""
        counts = np.bincount(np.asarray(self.ids), minlength=len(self.table))
        return {label: int(n) for label, n in zip(self.table, counts)}


@functools.cache
def _batch_classifier(num_features: int, max_distance: float, chunk: int):
    """One compiled program per (c, max_distance, chunk), reused across calls (per input shape)."""
    table = _table(num_features)

    def classify_chunk(chunk_params):
        W, b = chunk_params  # (chunk, 2, c), (chunk, c)
        # Samples onto the minor axis, so the classifier's elementwise steps vectorise over them.
        return _classify_columns(table, W[:, 0].T, W[:, 1].T, b.T, max_distance)

    @jax.jit
    def run(W, b):
        num = W.shape[0]
        size = min(chunk, num)
        num_chunks = -(-num // size)
        pad = num_chunks * size - num
        # Zero rows fill the last chunk; samples never interact, and the padding is cut off below.
        W = jnp.pad(W, ((0, pad), (0, 0), (0, 0))).reshape(num_chunks, size, *W.shape[1:])
        b = jnp.pad(b, ((0, pad), (0, 0))).reshape(num_chunks, size, b.shape[1])
        # lax.map over chunks keeps the O(c³) hull test's temporaries small (in cache) for millions
        # of samples.
        ids, distance = jax.lax.map(classify_chunk, (W, b))
        return ids.reshape(-1)[:num], distance.reshape(-1)[:num]

    return run


def classify_batch(
    W, b, *, max_distance: float = DEFAULT_MAX_DISTANCE, chunk: int = 2048
) -> BatchClassification:
    """Classifies a batch of TMS parameters.

    Args:
      W: weights (batch, 2, num_features).
      b: biases (batch, num_features).
      max_distance: points farther than this from their label's critical set are "unknown".
      chunk: samples per vectorised chunk: bounds memory, and keeps a chunk's temporaries (a few
        hundred bytes per sample) in cache; the default was the fastest on 2 CPU cores.

    Returns:
      A :class:`BatchClassification` with ids, distances and the label table.

    Raises:
      ValueError: on wrong shapes or dtypes, r ≠ 2, fewer than 4 features, or NaN entries.
    """
    W, b = check_params(W, b, batched=True, num_hidden=2)
    max_distance = float(max_distance)
    if not max_distance > 0:  # also rejects NaN, which would miss the compile cache on every call
        raise ValueError(f"max_distance must be positive (inf allowed), got {max_distance!r}")
    chunk = check_positive_int("chunk", chunk)
    if W.shape[0] == 0:
        raise ValueError("W has an empty batch axis")
    num_features = W.shape[-1]
    ids, distance = _batch_classifier(num_features, max_distance, chunk)(W, b)
    return BatchClassification(ids, distance, phase_labels(num_features))


def classify(W, b, *, max_distance: float = DEFAULT_MAX_DISTANCE) -> Classification:
    """Classifies one point (W (2, c), b (c,)) into a k^{σ+,σ−}-gon label or "unknown".

    Examples:
      >>> from tmsjax.tms.critical import critical_points
      >>> p = critical_points(6)[1]
      >>> classify(p.W, p.b).label
      '5+'
    """
    W, b = check_params(W, b, num_hidden=2)
    result = classify_batch(W[None], b[None], max_distance=max_distance, chunk=1)
    return Classification(str(result.labels[0]), float(result.distance[0]))


def canonicalize(W, b) -> tuple[Float[Array, "... 2 c"], Float[Array, "... c"]]:
    """Canonical form of samples for embeddings (t-SNE): rotate the longest column to +x, reflect so
    that the nearer of its two angular neighbours lies counter-clockwise, and sort the present
    columns (then the dead ones, by length) and their biases by angle."""
    columns = jnp.swapaxes(W, -1, -2)
    norms = jnp.linalg.norm(columns, axis=-1)
    longest_index = jnp.argmax(norms, -1)
    longest = jnp.take_along_axis(columns, longest_index[..., None, None], axis=-2)[..., 0, :]
    phi = jnp.arctan2(longest[..., 1], longest[..., 0])[..., None]
    cos, sin = jnp.cos(-phi), jnp.sin(-phi)
    x = cos * columns[..., 0] - sin * columns[..., 1]
    y = sin * columns[..., 0] + cos * columns[..., 1]
    is_longest = jnp.arange(columns.shape[-2]) == longest_index[..., None]
    y = jnp.where(is_longest, 0.0, y)
    present = (norms >= DEAD_FRACTION * jnp.max(norms, -1, keepdims=True)) & ~is_longest
    angle = jnp.mod(jnp.arctan2(y, x), 2 * jnp.pi)
    first = jnp.min(jnp.where(present, angle, 10.0), axis=-1, keepdims=True)
    last = jnp.max(jnp.where(present, angle, -10.0), axis=-1, keepdims=True)
    y = jnp.where(2 * jnp.pi - last < first, -y, y)
    angle = jnp.where(is_longest, 0.0, jnp.mod(jnp.arctan2(y, x), 2 * jnp.pi))
    order = jnp.argsort(jnp.where(present | is_longest, angle, 10.0 + norms), axis=-1)
    x, y = (jnp.take_along_axis(v, order, axis=-1) for v in (x, y))
    return jnp.stack([x, y], axis=-2), jnp.take_along_axis(b, order, axis=-1)


__all__ = [
    "phase_labels",
    "make_classifier",
    "classify",
    "classify_batch",
    "canonicalize",
    "Classification",
    "BatchClassification",
    "DEAD_FRACTION",
    "DEFAULT_MAX_DISTANCE",
    "UNKNOWN",
]
