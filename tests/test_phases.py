"""The phase classifier: invariances, catalogue points, junk, batches, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import ConvexHull, QhullError

from tmsjax import tms
from tmsjax.tms.critical import critical_points
from tmsjax.tms.phases import (
    _batch_classifier,
    canonicalize,
    classify,
    classify_batch,
    make_classifier,
    phase_labels,
)


def random_symmetry(rng, W, b):
    """A random rotation or reflection of the plane and a random permutation of the features."""
    theta = rng.uniform(0, 2 * np.pi)
    R = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    if rng.random() < 0.5:
        R = R @ np.diag([1.0, -1.0])
    perm = rng.permutation(W.shape[1])
    return (R @ W)[:, perm], b[perm]


@pytest.mark.parametrize("c", [5, 6, 7])
def test_catalogue_points_classify_after_symmetries_and_noise(c):
    rng = np.random.default_rng(c)
    points = critical_points(c)
    Ws, bs, expected = [], [], []
    for p in points:
        for _ in range(20):
            W, b = random_symmetry(rng, p.W, p.b)
            Ws.append(W + 1e-3 * rng.normal(size=W.shape))
            bs.append(b + 1e-3 * rng.normal(size=b.shape))
            expected.append(p.label)
    result = classify_batch(np.asarray(Ws, np.float32), np.asarray(bs, np.float32))
    chex.assert_shape(result.ids, (len(expected),))
    assert list(result.labels) == expected
    assert float(jnp.max(result.distance)) < 0.02


def test_exact_points_have_zero_distance(x64):
    for p in critical_points(6):
        label, distance = classify(p.W, p.b)
        assert label == p.label and distance < 1e-6


def test_random_junk_is_unknown():
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(20_000, 2, 6)), rng.normal(size=(20_000, 6))
    result = classify_batch(W.astype(np.float32), b.astype(np.float32))
    # A junk point passes only if it lies within distance 1 of a critical set: about 1e-5 of them.
    assert result.counts()["unknown"] >= 20_000 - 3
    hull_only = classify_batch(W.astype(np.float32), b.astype(np.float32), max_distance=np.inf)
    assert 0.2 < np.mean(hull_only.labels != "unknown") < 0.6  # the paper's hull count labels many


def test_non_polygons_are_unknown():
    # A triangle and two columns on one side: no catalogue label.
    angles = 2 * np.pi * np.arange(3) / 3
    W = np.zeros((2, 6))
    W[:, :3] = 1.2 * np.stack([np.cos(angles), np.sin(angles)])
    assert classify(W, -np.ones(6)).label == "unknown"
    # A 5-gon with a silenced live output is not a critical point.
    p = {q.label: q for q in critical_points(6)}["5"]
    b = p.b.copy()
    b[0] = -3.0
    assert classify(p.W, b).label == "unknown"


def test_batch_matches_single_and_classifier_is_jittable():
    rng = np.random.default_rng(3)
    points = critical_points(6)
    W = np.stack([random_symmetry(rng, p.W, p.b)[0] for p in points])
    W = W + 0.05 * rng.normal(size=W.shape)
    b = np.stack([p.b for p in points])
    batch = classify_batch(W, b)
    singles = [classify(W[i], b[i]) for i in range(len(points))]
    assert list(batch.labels) == [s.label for s in singles]
    ids, distance = jax.jit(jax.vmap(make_classifier(6)))(jnp.asarray(W), jnp.asarray(b))
    chex.assert_trees_all_equal(ids, batch.ids)
    chex.assert_trees_all_close(distance, batch.distance, rtol=1e-5)
    assert phase_labels(6)[-1] == "unknown" and batch.table == phase_labels(6)


def hull_count_label(W, b):
    """The paper's label by an independent route: scipy's convex hull of the present columns."""
    columns = W.T
    norms = np.linalg.norm(columns, axis=1)
    present = np.flatnonzero(norms >= 0.5 * norms.max())
    vertex = np.zeros(len(b), bool)
    try:
        vertex[present[ConvexHull(columns[present]).vertices]] = True
    except (QhullError, ValueError):  # fewer than 3 points or all collinear
        return None, vertex
    plus = int(np.sum(~vertex & (b > 0)))
    minus = int(np.sum(vertex & (b <= -(norms**2))))
    return f"{int(vertex.sum())}{'+' * plus}{'-' * minus}", vertex


def reference_distance(W, b, vertex, point):
    """Rule 4 of the module docstring in float64 numpy: vertices sorted by atan2 against the regular
    polygon (complex Procrustes), the rest against 0, biases against the label's b*."""
    columns, c = W.T, len(b)
    norms = np.linalg.norm(columns, axis=1)
    z = columns[vertex, 0] + 1j * columns[vertex, 1]
    z = z[np.argsort(np.angle(z))]
    target = point.radius * np.exp(2j * np.pi * np.arange(len(z)) / len(z))
    overlap = np.abs(np.sum(z * np.conj(target)))  # at the best rotation
    polygon = np.sum(np.abs(z) ** 2) + np.sum(np.abs(target) ** 2) - 2 * overlap
    silenced = vertex & (b <= -(norms**2))
    bias = np.where(
        vertex,
        np.where(silenced, np.maximum(b + point.radius**2, 0) ** 2, (b - point.live_bias) ** 2),
        np.where(b > 0, (b - 1 / (2 * c)) ** 2, 0.0),
    )
    return np.sqrt(polygon + np.sum(norms[~vertex] ** 2) + np.sum(bias))


def test_hull_labels_match_scipy():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(20_000, 2, 6)).astype(np.float32)
    b = rng.normal(size=(20_000, 6)).astype(np.float32)
    result = classify_batch(W, b, max_distance=np.inf)
    chex.assert_shape([result.ids, result.distance], (20_000,))
    known = set(phase_labels(6))
    labels = [hull_count_label(Wi, bi)[0] for Wi, bi in zip(W, b)]
    expected = np.array([label if label in known else "unknown" for label in labels], dtype=object)
    # Only near-collinear triples (within the hull test's round-off tolerance, ~2e-4 of such
    # points) may disagree.
    assert np.sum(result.labels != expected) <= 10
    assert 0.3 < np.mean(expected != "unknown") < 0.5  # the comparison covers many labelled points


def test_distances_match_reference(x64):
    rng = np.random.default_rng(7)
    by_label = {p.label: p for p in critical_points(6)}
    Ws, bs = [], []
    for p in by_label.values():
        for _ in range(30):
            W, b = random_symmetry(rng, p.W, p.b)
            Ws.append(W + 0.05 * rng.normal(size=W.shape))
            bs.append(b + 0.05 * rng.normal(size=b.shape))
    W, b = np.asarray(Ws), np.asarray(bs)
    result = classify_batch(W, b, max_distance=np.inf)
    checked = 0
    for i, label in enumerate(result.labels):
        expected_label, vertex = hull_count_label(W[i], b[i])
        assert label == (expected_label if expected_label in by_label else "unknown")
        if label != "unknown":
            reference = reference_distance(W[i], b[i], vertex, by_label[label])
            assert float(result.distance[i]) == pytest.approx(reference, rel=1e-9)
            checked += 1
    assert checked > 0.9 * len(W)


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(5)
    p = critical_points(6)[2]
    W = np.stack([random_symmetry(rng, p.W, p.b)[0] for _ in range(30)])
    W = W + 0.1 * rng.normal(size=W.shape)
    b = p.b + 0.1 * rng.normal(size=(30, 6))
    whole = classify_batch(W, b)
    for chunk in (1, 7, 30, 4096):  # one sample, a padded last chunk, exact, larger than the batch
        part = classify_batch(W, b, chunk=chunk)
        chex.assert_trees_all_equal(part.ids, whole.ids)
        chex.assert_trees_all_close(part.distance, whole.distance, rtol=1e-6)


def test_batch_program_is_compiled_once_and_vectorisable():
    W = np.zeros((100, 2, 6), np.float32)
    b = np.zeros((100, 6), np.float32)
    program = _batch_classifier(6, 1.0, 2048)
    classify_batch(W, b)
    size = program._cache_size()
    classify_batch(W + 1, b)
    classify_batch(jnp.asarray(W), jnp.asarray(b))
    assert program._cache_size() == size  # no retracing per call
    # No XLA sort (a scalar comparator loop on CPU) and no libm calls (atan2, cos, sin), the two
    # things that held a sort-based classifier below 1e6 samples/s on two CPU cores.
    text = program.lower(W, b).compile().as_text()
    for op in (" sort(", " atan2(", " cosine(", " sine("):
        assert op not in text


def test_canonicalize_is_invariant():
    rng = np.random.default_rng(4)
    p = {q.label: q for q in critical_points(6)}["5+"]
    W = p.W + 0.01 * rng.normal(size=p.W.shape)
    base = canonicalize(jnp.asarray(W), jnp.asarray(p.b))
    for _ in range(5):
        W2, b2 = random_symmetry(rng, W, p.b)
        moved = canonicalize(jnp.asarray(W2), jnp.asarray(b2))
        np.testing.assert_allclose(moved[0], base[0], atol=1e-5)
        np.testing.assert_allclose(moved[1], base[1], atol=1e-6)


@pytest.mark.parametrize(
    "W, b, match",
    [
        (np.zeros((3, 6)), np.zeros(6), "num_hidden=2"),
        (np.zeros((2, 6)), np.zeros(4), "columns"),
        (np.full((2, 6), np.nan), np.zeros(6), "NaN"),
        (np.zeros((2, 6), dtype=np.int32).astype(object), np.zeros(6), "W"),
    ],
)
def test_bad_input(W, b, match):
    with pytest.raises(ValueError, match=match):
        classify(W, b)


def test_bad_batch_input():
    with pytest.raises(ValueError, match="max_distance"):
        classify_batch(np.zeros((1, 2, 6)), np.zeros((1, 6)), max_distance=np.nan)
    with pytest.raises(ValueError, match="chunk"):
        classify_batch(np.zeros((1, 2, 6)), np.zeros((1, 6)), chunk=0)
    with pytest.raises(ValueError, match="3 dimensions"):
        classify_batch(np.zeros((2, 6)), np.zeros(6))
    with pytest.raises(ValueError, match="batch axis"):
        classify_batch(np.zeros((4, 2, 6)), np.zeros((3, 6)))


def test_top_level_api():
    p = critical_points(6)[0]
    assert tms.classify(p.W, p.b).label == "6"
    assert list(tms.classify_batch(p.W[None], p.b[None]).labels) == ["6"]
