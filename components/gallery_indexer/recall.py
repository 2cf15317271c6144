"""End-to-end Recall@K against labels through a gallery index: pure NumPy, no TFX.

The RecallEvaluator's protocol (components/recall_evaluator/metrics.py), asked of the
index that will be served instead of exact search: each row has a role, "" (query and
gallery item: all-vs-all, leave-one-out), "query" (In-shop's queries, not in the index)
or "gallery" (in the index, never a query: In-shop's gallery, catalogue items). A query
never retrieves itself; a query whose class has no other gallery item is left out of the
denominator, as the evaluator leaves it out. ``exact`` gives the same numbers through
exact search (the evaluator's own metrics), the reference the index is compared with.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

import numpy as np

from components.recall_evaluator import metrics

QUERY, GALLERY, BOTH = metrics.QUERY, metrics.GALLERY, metrics.BOTH
SEARCH_BLOCK = 256


def _valid_queries(labels: np.ndarray, roles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the queries with another gallery item of their class, in_gallery [N])."""
    in_gallery = roles != QUERY
    counts = Counter(labels[in_gallery].tolist())
    others = np.array([counts[label] for label in labels.tolist()]) - in_gallery
    return np.flatnonzero((roles != GALLERY) & (others > 0)), in_gallery


def num_queries(labels, roles) -> int:
    """The queries Recall@K counts: those with another gallery item of their class."""
    return int(_valid_queries(np.asarray(labels), np.asarray(roles))[0].size)


def through_index(search: Callable, embeddings: np.ndarray, ids: Sequence[str], labels,
                  roles, ks: Sequence[int]) -> dict:
    """Recall@K of every k in ``ks``, each query searched through ``search(queries, k)``
    (``GalleryIndex.search``: per query a ranked list of hits with ``.id``).

    ``embeddings`` [N, D], ``ids`` [N] and ``labels`` [N] of every row, queries and
    gallery alike; the index must hold exactly the rows whose role is not "query".
    Returns {"recall@k": ..., "num_queries": ...}.
    """
    labels, roles = np.asarray(labels), np.asarray(roles)
    rows, in_gallery = _valid_queries(labels, roles)
    if rows.size == 0:
        raise ValueError("no query has another gallery item of its class: Recall@K is "
                         "undefined")
    label_of = {ids[i]: labels[i] for i in np.flatnonzero(in_gallery)}
    k_max = max(ks)
    # One more than asked: a query that is a gallery item comes back as its own neighbour.
    k_search = min(k_max + 1, len(label_of))
    hits = {k: [] for k in ks}
    for start in range(0, rows.size, SEARCH_BLOCK):
        block = rows[start:start + SEARCH_BLOCK]
        for row, found in zip(block, search(embeddings[block], k_search)):
            ranked = [label_of[h.id] for h in found if h.id != ids[row]][:k_max]
            match = np.asarray(ranked) == labels[row]
            for k in ks:
                hits[k].append(bool(match[:k].any()))
    out = {f"recall@{k}": float(np.mean(hits[k])) for k in ks}
    out["num_queries"] = int(rows.size)
    return out


def exact(embeddings: np.ndarray, labels, roles, ks: Sequence[int]) -> dict:
    """The same Recall@K through exact search (the RecallEvaluator's metrics)."""
    roles = np.asarray(roles)
    rows, _ = _valid_queries(np.asarray(labels), roles)
    recall = metrics.recall_at_k(embeddings, labels, ks=tuple(ks),
                                 roles=None if (roles == BOTH).all() else roles)
    return dict({f"recall@{k}": v for k, v in recall.items()}, num_queries=int(rows.size))
