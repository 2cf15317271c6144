"""Exact k-NN search (search.exact): nearest_neighbours and topk_sorted against a brute force.

The reference computes every distance from explicit differences in float64 and ranks
with a plain sort, breaking ties by index. The data (tests/support/embeddings.py) has
exact ties and duplicates.
"""

import numpy as np
import pytest

from search import exact as S
from tests.support.embeddings import grid_data

GOOD = np.zeros((4, 2), dtype=np.float32) + np.arange(4, dtype=np.float32)[:, None]


def brute_knn(queries, gallery, k, exclude_self=False):
    q = np.asarray(queries, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    idx = np.empty((len(q), k), dtype=np.int64)
    dist = np.empty((len(q), k))
    for i in range(len(q)):
        d = np.sqrt(((g - q[i]) ** 2).sum(axis=1))
        cols = np.arange(len(g))
        if exclude_self:
            cols = cols[cols != i]
        order = cols[np.lexsort((cols, d[cols]))][:k]
        idx[i], dist[i] = order, d[order]
    return idx, dist


# --------------------------------------------------------------------------
# topk_sorted
# --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_topk_equals_stable_argsort_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 3000))
    d2 = rng.integers(0, int(rng.integers(1, 50)), size=(5, n)).astype(np.float32)
    d2[0, rng.integers(0, n)] = np.inf
    for k in {1, 2, min(n, 9), max(1, n // 3), n - 1, n}:
        k = max(1, k)
        expected = np.argsort(d2, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(S.topk_sorted(d2, k), expected)


# --------------------------------------------------------------------------
# nearest_neighbours
# --------------------------------------------------------------------------

def test_nearest_neighbours_matches_brute_force():
    rng = np.random.default_rng(3)
    g = rng.standard_normal((70, 9))
    q = rng.standard_normal((23, 9))
    idx, dist = S.nearest_neighbours(q, g, 12, block_size=5)
    ref_idx, ref_dist = brute_knn(q, g, 12)
    assert idx.dtype == np.int64 and dist.dtype == np.float32
    assert idx.shape == dist.shape == (23, 12)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5, atol=1e-5)


def test_exclude_self_never_returns_the_query():
    x, _ = grid_data(2, n=80)
    idx, dist = S.nearest_neighbours(x, x, 79, block_size=9, exclude_self=True)
    assert not (idx == np.arange(80)[:, None]).any()
    for i in range(80):  # every other image appears exactly once
        assert sorted(idx[i]) == [j for j in range(80) if j != i]
    ref_idx, ref_dist = brute_knn(x, x, 79, exclude_self=True)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-6)
    # Without exclude_self each distinct point finds itself first.
    y = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    idx0, dist0 = S.nearest_neighbours(y, y, 1)
    np.testing.assert_array_equal(idx0[:, 0], np.arange(30))
    assert np.all(dist0 < 1e-3)


def test_exclude_self_keeps_duplicates_and_breaks_ties_by_index():
    x = np.ones((6, 3), dtype=np.float32)  # six identical embeddings
    idx, dist = S.nearest_neighbours(x, x, 5, exclude_self=True, block_size=4)
    for i in range(6):
        assert list(idx[i]) == [j for j in range(6) if j != i]
    assert np.all(dist == 0.0)  # safe sqrt: exact zeros, no NaN


def test_invalid_nearest_neighbour_arguments():
    with pytest.raises(ValueError, match="k must be an integer in \\[1, 3\\]"):
        S.nearest_neighbours(GOOD, GOOD, 4, exclude_self=True)
    with pytest.raises(ValueError, match="k must be"):
        S.nearest_neighbours(GOOD, GOOD, 0)
    with pytest.raises(ValueError, match="dimension"):
        S.nearest_neighbours(GOOD, np.zeros((4, 3), np.float32), 1)
    with pytest.raises(ValueError, match="exclude_self"):
        S.nearest_neighbours(GOOD[:2], GOOD, 1, exclude_self=True)
