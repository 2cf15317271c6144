"""Exact k-nearest-neighbour search: the one search primitive the evaluator and serving share.

Pure NumPy (no TFX, no TensorFlow). Distance is Euclidean and non-squared, computed per
block of queries as ``sqrt(max(|q|^2 + |g|^2 - 2 q.g, 0))`` with one matrix product, in
float32 (float64 when the embeddings are float64); ranking uses the squared distance.
Ties rank by gallery row, lower first, so results do not depend on ``block_size``.
"""

from __future__ import annotations

import math
from typing import Iterator, Tuple

import numpy as np


def as_embeddings(x, name: str = "embeddings") -> np.ndarray:
    """Validates a [N, D] floating-point, finite array; returns it C-contiguous.

    float64 stays float64; every other float type becomes float32.
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be a floating-point array, got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {arr.shape}")
    dtype = np.float64 if arr.dtype == np.float64 else np.float32
    arr = np.ascontiguousarray(arr, dtype=dtype)
    finite = np.isfinite(arr)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"{name} contains NaN or infinite values in {bad_rows.size} row(s), "
            f"first at row {int(bad_rows[0])}")
    return arr


def check_block_size(block_size) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) \
            or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    return int(block_size)


# --------------------------------------------------------------------------
# Exact blocked k nearest neighbours
# --------------------------------------------------------------------------

def squared_norms(x: np.ndarray) -> np.ndarray:
    """[N, D] -> [N] squared L2 norms, checked to be finite."""
    sq = np.einsum("ij,ij->i", x, x)
    if not np.isfinite(sq).all():
        raise ValueError(
            f"embedding norms overflow {x.dtype}; rescale the embeddings "
            "(e.g. L2-normalise them)")
    return sq


def squared_distances(q: np.ndarray, q_sq: np.ndarray,
                       g: np.ndarray, g_sq: np.ndarray) -> np.ndarray:
    """[B, D], [B], [N, D], [N] -> [B, N] squared Euclidean distances (>= 0).

    One matrix product; the norms are added in place, so the only allocation
    is the [B, N] result.
    """
    d2 = q @ g.T
    d2 *= -2.0
    d2 += q_sq[:, None]
    d2 += g_sq[None, :]
    np.maximum(d2, 0.0, out=d2)
    return d2


def topk_sorted(d2: np.ndarray, k: int) -> np.ndarray:
    """[B, N] distances -> [B, k] int64 column indices of each row's k smallest.

    Sorted by (distance, index): ties go to the lower index, so the result
    is the first k entries of a stable argsort of each row, whatever k is.

    Selection without sorting or arg-partitioning the whole row: the k-th
    smallest value of a strided sample of columns is an upper bound ``t`` on
    the row's true k-th smallest value (the sample already holds k values
    <= t). One comparison pass ``d2 <= t`` then collects a small candidate set
    that contains the true top k and all of its ties; only the candidates are
    sorted (stable, so ties stay in index order). The sample size
    ~sqrt(32 k N) balances the partition of the sample against the sort of
    the ~k N / sample candidates. Worst case (massive ties) the candidate
    arrays grow to [B, N], still O(B * N).
    """
    b, n = d2.shape
    if k >= n:
        return np.argsort(d2, axis=1, kind="stable")[:, :k].astype(np.int64)
    sample = int(min(n, max(2 * k + 2, math.sqrt(32.0 * k * n))))
    step = max(1, n // sample)
    # Strided, so representative even when the gallery is sorted by class. It
    # has >= 2k + 2 columns (or all n > k), so with at most one +inf (the
    # excluded self) per row its k-th smallest value is finite.
    cols_sample = d2[:, ::step]
    thresh = np.partition(cols_sample, k - 1, axis=1)[:, k - 1:k]
    cand = d2 <= thresh
    counts = cand.sum(axis=1)
    rows, cols = np.nonzero(cand)  # row-major: columns ascending within a row
    del cand
    starts = np.cumsum(counts) - counts
    pos = np.arange(cols.size) - np.repeat(starts, counts)
    width = int(counts.max())
    vals = np.full((b, width), np.inf, dtype=d2.dtype)
    idx = np.full((b, width), n, dtype=np.int64)  # padding sorts last (after real inf)
    vals[rows, pos] = d2[rows, cols]
    idx[rows, pos] = cols
    order = np.argsort(vals, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(idx, order, axis=1)


def blocks(n: int, block_size: int) -> Iterator[Tuple[int, int]]:
    for start in range(0, n, block_size):
        yield start, min(n, start + block_size)


def nearest_neighbours(queries, gallery, k: int, block_size: int = 1024,
                       exclude_self: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k nearest neighbours, computed in blocks of queries.

    Args:
      queries: [Q, D] float array.
      gallery: [N, D] float array (same D).
      k: neighbours per query, 1 <= k <= N (N - 1 with ``exclude_self``).
      block_size: queries per block. Peak working memory is about
        ``block_size * N * (itemsize + 1)`` bytes for the distance block and
        its candidate mask (itemsize 4 for float32, 8 for float64), plus a
        few ``block_size * c`` arrays for the c candidates per row (c is
        about k + sqrt(k N / 32)), plus the outputs ``Q * k * 12`` bytes.
        It never builds the [Q, N] matrix.
      exclude_self: queries ARE the gallery (row i of ``queries`` is item i
        of ``gallery``, Q == N): query i never retrieves item i. Other items
        with an identical embedding are still retrieved.

    Returns:
      (indices [Q, k] int64, distances [Q, k] float32), each row sorted by
      increasing distance; equal distances are ordered by gallery index.
    """
    q = as_embeddings(queries, "queries")
    g = as_embeddings(gallery, "gallery")
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            f"queries have dimension {q.shape[1]} but gallery has {g.shape[1]}")
    if q.dtype != g.dtype:
        q, g = q.astype(np.float64), g.astype(np.float64)
    block_size = check_block_size(block_size)
    n = g.shape[0]
    if exclude_self and q.shape[0] != n:
        raise ValueError(
            f"exclude_self=True needs queries to be the gallery (same rows), got "
            f"{q.shape[0]} queries and {n} gallery items")
    k_max = n - 1 if exclude_self else n
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= k_max:
        raise ValueError(f"k must be an integer in [1, {k_max}], got {k!r}")
    k = int(k)

    q_sq, g_sq = squared_norms(q), squared_norms(g)
    indices = np.empty((q.shape[0], k), dtype=np.int64)
    distances = np.empty((q.shape[0], k), dtype=np.float32)
    for start, stop in blocks(q.shape[0], block_size):
        d2 = squared_distances(q[start:stop], q_sq[start:stop], g, g_sq)
        if exclude_self:
            d2[np.arange(stop - start), np.arange(start, stop)] = np.inf
        top = topk_sorted(d2, k)
        indices[start:stop] = top
        distances[start:stop] = np.sqrt(np.take_along_axis(d2, top, axis=1))
    return indices, distances
