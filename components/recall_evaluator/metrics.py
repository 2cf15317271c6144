"""Retrieval metrics for metric learning: Recall@K, MAP@R, R-precision, NMI.

Pure NumPy (plus scikit-learn for k-means and NMI); no TFX or TensorFlow, so
the math can be tested and benchmarked on its own.

Conventions shared by every function here:

* Distance is Euclidean and non-squared, ``||q - g||_2``. It is computed as
  ``sqrt(max(|q|^2 + |g|^2 - 2 q.g, 0))`` with one matrix product per block of
  queries, in float32 (float64 when the embeddings are float64). Ranking uses
  the squared distance (same order, no square root in the hot loop).
* Queries and gallery. By default (``roles=None``) retrieval is
  leave-one-out, all-vs-all: every image queries all OTHER images (the image
  itself is never retrieved; an exact duplicate of it is a normal
  neighbour). With ``roles`` (In-shop Clothes' protocol) each image is a
  query, a gallery image, or both, and every query searches only the gallery
  images other than itself. All-vs-all is exactly the special case "every
  image is both" (``roles`` all ``""``): one code path, the same numbers.
  See :func:`retrieval_metrics` for the ``roles`` argument.
* R of a query is the number of gallery images of its class other than the
  query itself (all-vs-all: the other images of its class).
* Ties are deterministic: equal distances rank by embedding row (the gallery
  keeps the embedding order), lower first. Results therefore do not depend
  on ``block_size``.
* A query with R = 0 (no other gallery image of its class) has no correct
  answer. It is EXCLUDED from the Recall@K, MAP@R and R-precision
  denominators (and from ``num_queries``) rather than counted as a miss; if
  it is a gallery image it still serves as a distractor for the other
  queries, and every image given counts for NMI. If no query has R >= 1,
  the retrieval metrics raise ``ValueError``.
* ``k`` in Recall@K larger than the number of gallery images a query can
  retrieve (``N - 1`` all-vs-all) is clipped to it (every one is
  retrieved), so small evaluation sets do not fail on ``ks``.

Per query: Recall@K, MAP@R and R-precision are means over the valid queries.
:func:`per_query_metrics` returns the vectors behind those means (the 0/1
hits, each query's AP@R and R-precision) from the same single kNN pass, so
``significance`` can bootstrap their intervals over queries. NMI scores a
whole clustering and has no per-query values.

Memory: queries are processed in blocks of ``block_size``. For each block
the full distance row ``[block_size, G]`` to the G gallery images is built
once and every metric is derived from it, so the peak working memory is
O(block_size * G) (G = N all-vs-all), never O(Q * G); see
:func:`search.exact.nearest_neighbours` for the bound.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from search.exact import (as_embeddings, blocks, check_block_size, squared_distances, squared_norms,
                          topk_sorted)

# k-means restarts for NMI. Fixed (not sklearn's version-dependent "auto") so
# that a given seed gives the same clustering across sklearn releases.
NMI_N_INIT = 10


# --------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------

def _as_labels(labels, n: int) -> np.ndarray:
    """Validates 1-D class labels of length n; returns dense int64 codes [N].

    Labels may be integers or strings (any values usable as class names).
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array [N], got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(
            f"labels has {arr.shape[0]} entries but embeddings has {n} rows; "
            "they must have the same length")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)
            or arr.dtype.kind in "US"):
        raise ValueError(
            f"labels must be integers or strings, got dtype {arr.dtype}")
    _, codes = np.unique(arr, return_inverse=True)
    return codes.reshape(-1).astype(np.int64)


def _check_ks(ks) -> Tuple[int, ...]:
    if isinstance(ks, (int, np.integer)):
        ks = (ks,)
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks must contain at least one k")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"every k in ks must be a positive integer, got {k!r}")
    return tuple(int(k) for k in ks)


QUERY, GALLERY, BOTH = "query", "gallery", ""
# The per-image roles accepted by ``roles``: the records' ``eval_role`` values
# (components/datasets/records.py), where "" marks an all-vs-all image, i.e.
# one that is both a query and a gallery image.
ROLES = (QUERY, GALLERY, BOTH)


def _as_roles(roles, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Validates per-image roles; returns (is_query [N] bool, is_gallery [N] bool).

    None: every image is both (all-vs-all). Otherwise a 1-D sequence of N
    strings (str or UTF-8 bytes, as read from TFRecords) from ``ROLES``.
    """
    if roles is None:
        every = np.ones(n, dtype=bool)
        return every, every
    arr = np.asarray(roles)
    if arr.ndim != 1:
        raise ValueError(f"roles must be a 1-D array [N], got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(
            f"roles has {arr.shape[0]} entries but embeddings has {n} rows; "
            "they must have the same length")
    if arr.dtype.kind not in "USO":
        raise ValueError(
            f"roles must be strings ({', '.join(map(repr, ROLES))}), got dtype {arr.dtype}")
    if arr.dtype.kind in "SO":
        arr = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                        for v in arr.tolist()], dtype=object)
    is_query, is_gallery = (arr == QUERY), (arr == GALLERY)
    is_both = arr == BOTH
    unknown = ~(is_query | is_gallery | is_both)
    if unknown.any():
        examples = sorted({repr(v) for v in arr[unknown].tolist()})
        raise ValueError(
            f"roles must each be 'query', 'gallery' or '' (both), got {int(unknown.sum())} "
            f"other value(s): {', '.join(examples[:5])}"
            f"{', ...' if len(examples) > 5 else ''}")
    is_query |= is_both
    is_gallery |= is_both
    if not is_query.any():
        raise ValueError("roles: no image is a query (role 'query' or '')")
    if not is_gallery.any():
        raise ValueError("roles: no image is in the gallery (role 'gallery' or '')")
    return is_query, is_gallery


# --------------------------------------------------------------------------
# Retrieval metrics (one blocked pass)
# --------------------------------------------------------------------------

def _ranked_matches(x: np.ndarray, codes: np.ndarray, query_rows: np.ndarray,
                    r: np.ndarray, gallery_rows: np.ndarray, k_min: int, with_r: bool,
                    block_size: int) -> Iterator[Tuple[slice, np.ndarray]]:
    """Yields, per block of queries, (block, matches [B, K] bool).

    query_rows [Q]: embedding rows of the queries, r [Q] their R; gallery_rows
    [G]: embedding rows of the gallery, ascending. ``block`` slices both.
    matches[i, j]: the j-th nearest gallery image of query i, other than the
    query itself, shares its class. K = min(max(k_min, max r in the block)
    if with_r else k_min, C) with C the most gallery images a query of the
    block can retrieve (G - 1 when all of them are in the gallery, else G).
    Blocks without a query of R >= 1 are skipped.
    """
    n, g_count = x.shape[0], gallery_rows.size
    x_sq = squared_norms(x)
    # All-vs-all uses x itself for both sides (no copies); otherwise the two
    # sides are gathered once, so every block of queries is a contiguous view.
    g, g_sq, g_codes = ((x, x_sq, codes) if g_count == n else
                        (x[gallery_rows], x_sq[gallery_rows], codes[gallery_rows]))
    q, q_sq, q_codes = ((x, x_sq, codes) if query_rows.size == n else
                        (x[query_rows], x_sq[query_rows], codes[query_rows]))
    column = np.full(n, -1, dtype=np.int64)  # gallery column of each row, -1 if none
    column[gallery_rows] = np.arange(g_count)
    self_col = column[query_rows]
    for start, stop in blocks(query_rows.size, block_size):
        rb = r[start:stop]
        if not (rb > 0).any():
            continue
        own = self_col[start:stop]
        in_gallery = np.flatnonzero(own >= 0)
        k = max(k_min, int(rb.max())) if with_r else k_min
        k = min(k, g_count - 1 if in_gallery.size == stop - start else g_count)
        d2 = squared_distances(q[start:stop], q_sq[start:stop], g, g_sq)
        d2[in_gallery, own[in_gallery]] = np.inf  # a query never retrieves itself
        top = topk_sorted(d2, k)
        del d2
        matches = g_codes[top] == q_codes[start:stop, None]
        if k == g_count:  # the whole gallery: queries in it got their own column last
            matches &= top != own[:, None]
        yield slice(start, stop), matches


@dataclasses.dataclass(frozen=True)
class PerQueryMetrics:
    """Per-query retrieval values of one model, from one blocked kNN pass.

    ``values[name]`` is a float64 vector over the valid queries (those with at
    least one gallery image of their class other than themselves), in
    embedding-row order:

    * ``"recall@k"``: 1.0 if one of the k nearest gallery images (other than
      the query) shares the query's class, else 0.0 (the per-query hit);
    * ``"map@r"``: the query's AP@R; ``"r_precision"``: its R-precision.

    The metric is the mean of its vector, so intervals can be bootstrapped by
    resampling queries (``components.recall_evaluator.significance``).
    ``query_rows[i]`` is the embedding row of the i-th valid query.
    ``num_gallery`` is the number of gallery images with ``roles``, None
    all-vs-all (every image is a query and a gallery image).
    """
    values: Dict[str, np.ndarray]
    query_rows: np.ndarray
    num_images: int
    num_classes: int
    num_gallery: Optional[int] = None

    @property
    def num_queries(self) -> int:
        return int(self.query_rows.size)

    def summary(self, nmi_value: Optional[float] = None) -> Dict[str, object]:
        """The flat, JSON-friendly dict of :func:`retrieval_metrics` (means of the vectors)."""
        out: Dict[str, object] = {name: float(v.sum() / v.size) for name, v in self.values.items()}
        if nmi_value is not None:
            out["nmi"] = float(nmi_value)
        out["num_queries"] = self.num_queries
        if self.num_gallery is not None:
            out["num_gallery"] = int(self.num_gallery)
        out["num_images"] = int(self.num_images)
        out["num_classes"] = int(self.num_classes)
        return out


def _per_query(x: np.ndarray, codes: np.ndarray, ks: Sequence[int], with_r: bool,
               block_size: int, roles=None) -> PerQueryMetrics:
    """Per-query hits (and AP@R / R-precision when ``with_r``) of the valid queries."""
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"retrieval needs at least 2 embeddings, got {n}")
    is_query, is_gallery = _as_roles(roles, n)
    all_vs_all = bool((is_query & is_gallery).all())
    query_rows, gallery_rows = np.flatnonzero(is_query), np.flatnonzero(is_gallery)
    # R: gallery images of the query's class, minus the query itself if in the gallery.
    r_all = np.bincount(codes[gallery_rows], minlength=int(codes.max()) + 1)[codes] - is_gallery
    r = r_all[query_rows]
    if not (r > 0).any():
        raise ValueError(
            "no query has another image of its class "
            + ("(every class has a single image)" if all_vs_all else "in the gallery")
            + ", so retrieval metrics are undefined")
    hits = {k: [] for k in ks}
    aps, rps, rows = [], [], []
    for block, matches in _ranked_matches(x, codes, query_rows, r, gallery_rows, max(ks),
                                          with_r, block_size):
        valid = r[block] > 0
        rows.append(query_rows[block][valid])
        m = matches[valid]
        for k in ks:
            hits[k].append(m[:, :k].any(axis=1))  # K < k only when every image is retrieved
        if with_r:
            rv = r[block][valid]
            ranks = np.arange(1, m.shape[1] + 1)
            rel = m & (ranks[None, :] <= rv[:, None])
            precision_at_i = np.cumsum(m, axis=1) / ranks[None, :]
            aps.append(np.where(rel, precision_at_i, 0.0).sum(axis=1) / rv)
            rps.append(rel.sum(axis=1) / rv)
    values = {f"recall@{k}": np.concatenate(hits[k]).astype(np.float64) for k in ks}
    if with_r:
        values["map@r"] = np.concatenate(aps).astype(np.float64)
        values["r_precision"] = np.concatenate(rps).astype(np.float64)
    return PerQueryMetrics(values=values, query_rows=np.concatenate(rows).astype(np.int64),
                           num_images=n, num_classes=int(codes.max()) + 1,
                           num_gallery=None if all_vs_all else int(gallery_rows.size))


def per_query_metrics(embeddings, labels, ks=(1, 2, 4, 8), block_size: int = 1024,
                      roles=None) -> PerQueryMetrics:
    """Per-query Recall@K hits, AP@R and R-precision from one blocked kNN pass.

    Args: as :func:`retrieval_metrics` (no NMI: it is not a per-query score).
    Returns: a :class:`PerQueryMetrics`; ``.summary()`` gives the means, equal
    to :func:`retrieval_metrics` without ``"nmi"``. Its ``query_rows`` are
    the embedding rows of the valid queries (with ``roles``, a subset of the
    query images).
    """
    x = as_embeddings(embeddings)
    codes = _as_labels(labels, x.shape[0])
    return _per_query(x, codes, _check_ks(ks), True, check_block_size(block_size), roles)


def recall_at_k(embeddings, labels, ks=(1, 2, 4, 8), block_size: int = 1024,
                roles=None) -> Dict[int, float]:
    """Recall@K: each query searches the gallery images other than itself
    (all-vs-all by default: all other images); a hit if any of the top K
    shares its class.

    Args:
      embeddings: [N, D] float array.
      labels: [N] integer or string class labels.
      ks: the K values (clipped to the gallery images a query can retrieve).
      block_size: queries per block (memory, not results; see module doc).
      roles: None (all-vs-all) or [N] per-image roles; see
        :func:`retrieval_metrics`.

    Returns:
      {k: fraction of valid queries with a hit}; queries without another
      gallery image of their class are excluded from the denominator.
    """
    x = as_embeddings(embeddings)
    codes = _as_labels(labels, x.shape[0])
    ks = _check_ks(ks)
    pq = _per_query(x, codes, ks, False, check_block_size(block_size), roles)
    return {k: pq.summary()[f"recall@{k}"] for k in ks}


def map_at_r(embeddings, labels, block_size: int = 1024, roles=None) -> float:
    """MAP@R (Musgrave et al. 2020, "A Metric Learning Reality Check").

    For a query with R gallery images of its class other than itself and its
    R nearest such gallery images: AP@R = (1/R) * sum_{i=1..R} P(i) * rel(i),
    where rel(i) is 1 if the i-th neighbour shares the class and P(i) is the
    precision of the top i. MAP@R is the mean over valid queries (R >= 1).

    Args: embeddings [N, D] float; labels [N]; block_size and roles as in
    recall_at_k.
    """
    x = as_embeddings(embeddings)
    codes = _as_labels(labels, x.shape[0])
    pq = _per_query(x, codes, (1,), True, check_block_size(block_size), roles)
    return pq.summary()["map@r"]


def r_precision(embeddings, labels, block_size: int = 1024, roles=None) -> float:
    """R-precision: mean over valid queries of (same-class images among the
    R nearest gallery images other than the query) / R, with R the number of
    gallery images of the query's class other than the query itself.

    Args: embeddings [N, D] float; labels [N]; block_size and roles as in
    recall_at_k.
    """
    x = as_embeddings(embeddings)
    codes = _as_labels(labels, x.shape[0])
    pq = _per_query(x, codes, (1,), True, check_block_size(block_size), roles)
    return pq.summary()["r_precision"]


def nmi(embeddings, labels, seed: int = 0, n_init: int = NMI_N_INIT) -> float:
    """Normalised mutual information between classes and a k-means clustering.

    k-means (scikit-learn ``KMeans``, k = number of distinct classes,
    ``n_init`` restarts, ``random_state=seed``) on the embeddings, then
    ``sklearn.metrics.normalized_mutual_info_score(labels, clusters)``
    (arithmetic normalisation). Every image counts, singletons included.
    NMI scores the whole clustering: it has no per-query values, hence no
    bootstrap interval (see ``significance``).

    Args: embeddings [N, D] float; labels [N]; seed; n_init.
    Returns: NMI in [0, 1].
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    x = as_embeddings(embeddings)
    codes = _as_labels(labels, x.shape[0])
    num_classes = int(codes.max()) + 1
    clusters = KMeans(n_clusters=num_classes, n_init=n_init,
                      random_state=seed).fit_predict(x)
    return float(normalized_mutual_info_score(codes, clusters))


def retrieval_metrics(embeddings, labels, ks=(1, 2, 4, 8), block_size: int = 1024,
                      seed: int = 0, compute_nmi: bool = True,
                      roles=None) -> Dict[str, object]:
    """All retrieval metrics from one blocked nearest-neighbour pass.

    Args:
      embeddings: [N, D] float array. labels: [N] integer or string labels.
      ks: Recall@K values. block_size: queries per block. seed: k-means seed.
      compute_nmi: skip the k-means (the slow part for large N) when False.
      roles: who queries whom. None (default): all-vs-all, every image
        queries all other images. Else [N] strings, one per embedding row:
        ``"query"`` (searches the gallery, is never retrieved),
        ``"gallery"`` (retrieved, never queries) or ``""`` (both: queries the
        gallery and is in it; all ``""`` is exactly all-vs-all). These are the
        records' ``eval_role`` values, so that column can be passed as is;
        bytes are decoded as UTF-8. Raises ``ValueError`` for a length
        mismatch, another value, or no query or no gallery image.

    Returns a flat JSON-friendly dict (Python floats and ints)::

      {"recall@1": ..., "recall@2": ..., ..., "map@r": ..., "r_precision": ...,
       "nmi": ...,            # only when compute_nmi; over all N images
       "num_queries": ...,    # valid queries: R >= 1 (see module doc)
       "num_gallery": ...,    # only with roles (not all ""): gallery images
       "num_images": N, "num_classes": C}   # C: classes of all N images

    All-vs-all ``num_queries`` equals N unless some class has a single image.
    The per-query vectors behind the means: :func:`per_query_metrics`.
    """
    x = as_embeddings(embeddings)
    codes = _as_labels(labels, x.shape[0])
    pq = _per_query(x, codes, _check_ks(ks), True, check_block_size(block_size), roles)
    return pq.summary(nmi(x, codes, seed=seed) if compute_nmi else None)
