"""Query/gallery retrieval metrics (``roles``) against an independent brute force.

In-shop Clothes' protocol: each query image searches only the gallery images
(never itself, when it is in the gallery too); R of a query is the number of
gallery images of its class other than itself; a query with R = 0 is excluded.
The reference below ranks every query by a plain loop over the gallery in
float64, ties broken by embedding row, and is independent of the blocked code.
The data (from test_metrics) has exact ties and duplicates across classes.
"""

import json

import numpy as np
import pytest

from components.datasets.records import EVAL_ROLES
from components.recall_evaluator import metrics as M
from tests.components.recall_evaluator.test_metrics import gaussian_data, grid_data

KS = (1, 2, 4, 8, 16)


# --------------------------------------------------------------------------
# Independent reference
# --------------------------------------------------------------------------

def brute_force_qg(embeddings, labels, roles, ks=KS):
    """Per valid query in row order: ({name: vector}, valid rows, gallery size)."""
    x = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    roles = list(roles)
    gallery = [j for j, role in enumerate(roles) if role in ("gallery", "")]
    out = {f"recall@{k}": [] for k in ks}
    out.update({"map@r": [], "r_precision": []})
    rows = []
    for i, role in enumerate(roles):
        if role not in ("query", ""):
            continue
        cand = np.array([j for j in gallery if j != i], dtype=np.int64)
        if cand.size == 0:
            continue
        d = np.sqrt(((x[cand] - x[i]) ** 2).sum(axis=1))
        order = cand[np.lexsort((cand, d))]  # distance, then row
        rel = [bool(labels[j] == labels[i]) for j in order]
        r = sum(rel)
        if r == 0:
            continue  # no gallery image of its class: excluded
        rows.append(i)
        for k in ks:
            out[f"recall@{k}"].append(float(any(rel[:k])))
        found, ap = 0, 0.0
        for rank in range(1, r + 1):
            if rel[rank - 1]:
                found += 1
                ap += found / rank
        out["map@r"].append(ap / r)
        out["r_precision"].append(sum(rel[:r]) / r)
    return {k: np.array(v) for k, v in out.items()}, np.array(rows, dtype=np.int64), len(gallery)


def random_roles(seed, labels, p_both=0.15):
    """Mostly "query"/"gallery", some "" (both); some classes only queries
    (no gallery image: excluded), some only gallery (pure distractors)."""
    rng = np.random.default_rng(1000 + seed)
    roles = rng.choice(np.array(["query", "gallery", ""]), size=len(labels),
                       p=[(1 - p_both) / 2, (1 - p_both) / 2, p_both]).astype(object)
    classes = np.unique(labels)
    query_only, gallery_only = classes[0], classes[1]
    roles[labels == query_only] = "query"
    roles[labels == gallery_only] = "gallery"
    return roles.astype(str)


def assert_matches_reference(pq, expected, rows, num_gallery):
    assert set(pq.values) == set(expected)
    np.testing.assert_array_equal(pq.query_rows, rows)
    assert pq.num_queries == len(rows) and pq.num_gallery == num_gallery
    for name, vector in pq.values.items():
        assert vector.dtype == np.float64 and vector.shape == (len(rows),)
        np.testing.assert_allclose(vector, expected[name], rtol=0, atol=1e-12, err_msg=name)


# --------------------------------------------------------------------------
# Recall@K, MAP@R, R-precision vs the reference
# --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("make", [grid_data, gaussian_data])
def test_query_gallery_matches_brute_force(seed, make):
    x, labels = make(seed)
    roles = random_roles(seed, labels)
    expected, rows, num_gallery = brute_force_qg(x, labels, roles)
    query_only = labels == np.unique(labels)[0]
    assert not np.isin(rows, np.flatnonzero(query_only)).any()  # excluded: no gallery image
    assert (roles == "").any() and len(rows) > 10

    pq = M.per_query_metrics(x, labels, ks=KS, block_size=16, roles=roles)
    assert_matches_reference(pq, expected, rows, num_gallery)
    # The public means are the means of those vectors, from the same code path.
    out = M.retrieval_metrics(x, labels, ks=KS, block_size=16, compute_nmi=False, roles=roles)
    assert out == pq.summary()
    recall = M.recall_at_k(x, labels, ks=KS, block_size=16, roles=roles)
    for k in KS:
        assert recall[k] == out[f"recall@{k}"] == pytest.approx(expected[f"recall@{k}"].mean(),
                                                                abs=1e-12)
    assert M.map_at_r(x, labels, roles=roles) == pytest.approx(expected["map@r"].mean(), abs=1e-12)
    assert M.r_precision(x, labels, roles=roles) == \
        pytest.approx(expected["r_precision"].mean(), abs=1e-12)
    assert out["num_queries"] == len(rows)
    assert out["num_gallery"] == num_gallery == int(np.isin(roles, ["gallery", ""]).sum())
    assert out["num_images"] == len(x) and out["num_classes"] == len(np.unique(labels))


@pytest.mark.parametrize("seed", range(3))
def test_inshop_protocol_disjoint_query_and_gallery(seed):
    # In-shop as the records give it: every image either a query or a gallery
    # image, each item (class) with both; plus gallery-only distractor items.
    rng = np.random.default_rng(seed)
    x, labels = grid_data(seed, n=160, num_classes=20)
    roles = np.where(rng.random(160) < 0.4, "query", "gallery")
    roles[labels >= 17] = "gallery"
    expected, rows, num_gallery = brute_force_qg(x, labels, roles)
    pq = M.per_query_metrics(x, labels, ks=KS, block_size=9, roles=roles)
    assert_matches_reference(pq, expected, rows, num_gallery)
    assert set(rows) <= set(np.flatnonzero(roles == "query"))


@pytest.mark.parametrize("block_size", [1, 2, 7, 33, 1024])
def test_query_gallery_results_independent_of_block_size(block_size):
    x, labels = grid_data(21, n=100)
    roles = random_roles(21, labels, p_both=0.3)
    ks = (1, 2, 4, 8, 80, 1000)  # 80, 1000 > gallery: clipped to the whole gallery
    expected, rows, num_gallery = brute_force_qg(x, labels, roles, ks)
    assert num_gallery < 80
    pq = M.per_query_metrics(x, labels, ks=ks, block_size=block_size, roles=roles)
    assert_matches_reference(pq, expected, rows, num_gallery)
    ref = M.per_query_metrics(x, labels, ks=ks, block_size=1024, roles=roles)
    for name in ref.values:
        np.testing.assert_array_equal(pq.values[name], ref.values[name])
    assert pq.values["recall@80"].min() == 1.0  # the whole gallery holds R >= 1 matches


def test_query_gallery_hand_computed():
    # 1-D. Gallery: rows 1 (A, 1.0), 2 (B, 0.5), 3 (A, 3.0; also a query).
    x = np.array([[0.0], [1.0], [0.5], [3.0], [10.0], [2.0]])
    labels = np.array(["A", "A", "B", "A", "C", "B"])
    roles = ["query", "gallery", "gallery", "", "query", "query"]
    # q0 (A, R=2): 2(B) 1(A) 3(A)       -> hits @1 0 @2 1; AP@R = (1/2)/2; RP = 1/2
    # q3 (A, R=1, itself excluded): 1(A) 2(B) -> hit @1; AP@R = 1; RP = 1
    # q4 (C): no gallery image of C     -> excluded
    # q5 (B, R=1): 1(A) 3(A) 2(B), 1 and 3 tie at 1.0, row 1 first -> first hit @3; 0, 0
    for block_size in (1, 2, 1024):
        pq = M.per_query_metrics(x, labels, ks=(1, 2, 3, 8), block_size=block_size, roles=roles)
        np.testing.assert_array_equal(pq.query_rows, [0, 3, 5])
        np.testing.assert_array_equal(pq.values["recall@1"], [0, 1, 0])
        np.testing.assert_array_equal(pq.values["recall@2"], [1, 1, 0])
        np.testing.assert_array_equal(pq.values["recall@3"], [1, 1, 1])
        np.testing.assert_array_equal(pq.values["recall@8"], [1, 1, 1])
        np.testing.assert_allclose(pq.values["map@r"], [0.25, 1, 0])
        np.testing.assert_allclose(pq.values["r_precision"], [0.5, 1, 0])
        assert pq.summary() == {
            "recall@1": 1 / 3, "recall@2": 2 / 3, "recall@3": 1.0, "recall@8": 1.0,
            "map@r": pytest.approx(5 / 12), "r_precision": 0.5,
            "num_queries": 3, "num_gallery": 3, "num_images": 6, "num_classes": 3}


def test_query_in_gallery_never_retrieves_itself_but_retrieves_its_duplicate():
    x = np.array([[0.0], [0.0], [0.1], [-5.0]], dtype=np.float32)
    labels = [0, 0, 1, 1]
    # Row 0 is a query and a gallery image; row 1 is an exact copy of it.
    # q0 (R=1): 1(class 0, distance 0) first, itself never -> hit.
    # q3 (R=1): 0 and 1 tie at 5, row 0 first, then 1, then 2 -> miss at @1.
    pq = M.per_query_metrics(x, labels, ks=(1, 3), roles=["", "gallery", "gallery", "query"])
    np.testing.assert_array_equal(pq.query_rows, [0, 3])
    assert list(pq.values["recall@1"]) == [1.0, 0.0]
    assert list(pq.values["recall@3"]) == [1.0, 1.0]
    # Copy as a query instead: q0's only other gallery image (row 2) is of class 1,
    # so q0 is excluded; q1 retrieves row 0 (a query too, and in the gallery).
    pq = M.per_query_metrics(x, labels, ks=(1,), roles=["", "query", "gallery", "query"])
    np.testing.assert_array_equal(pq.query_rows, [1, 3])
    assert list(pq.values["recall@1"]) == [1.0, 0.0]
    assert pq.summary()["num_gallery"] == 2


def test_gallery_only_images_are_distractors_and_count_for_nmi():
    x, labels = gaussian_data(3, n=120)
    roles = random_roles(3, labels)
    out = M.retrieval_metrics(x, labels, ks=(1, 2), seed=2, roles=roles)
    assert out["nmi"] == M.nmi(x, labels, seed=2)  # NMI over all images given
    assert list(out) == ["recall@1", "recall@2", "map@r", "r_precision", "nmi", "num_queries",
                         "num_gallery", "num_images", "num_classes"]
    json.dumps(out)
    assert all(type(out[k]) is int for k in out if k.startswith("num_"))


# --------------------------------------------------------------------------
# All-vs-all is the special case "every image is both"
# --------------------------------------------------------------------------

@pytest.mark.parametrize("make", [grid_data, gaussian_data])
def test_all_both_roles_are_exactly_all_vs_all(make):
    x, labels = make(4)
    labels = labels.copy()
    labels[[2, 9]] = [500, 501]  # singletons
    base = M.per_query_metrics(x, labels, ks=KS, block_size=11)
    assert base.num_gallery is None and "num_gallery" not in base.summary()
    for roles in ([""] * len(x), np.array([b""] * len(x)), np.array([""] * len(x), dtype=object)):
        pq = M.per_query_metrics(x, labels, ks=KS, block_size=11, roles=roles)
        np.testing.assert_array_equal(pq.query_rows, base.query_rows)
        for name in base.values:
            np.testing.assert_array_equal(pq.values[name], base.values[name])
        assert pq.summary() == base.summary()
    assert M.retrieval_metrics(x, labels, compute_nmi=False, roles=[""] * len(x)) == \
        M.retrieval_metrics(x, labels, compute_nmi=False)


def test_roles_vocabulary_is_the_records_eval_roles():
    assert set(M.ROLES) == set(EVAL_ROLES)


def test_bytes_roles_equal_str_roles():
    x, labels = grid_data(6, n=70)
    roles = random_roles(6, labels)
    as_str = M.retrieval_metrics(x, labels, compute_nmi=False, roles=roles)
    as_bytes = M.retrieval_metrics(x, labels, compute_nmi=False,
                                   roles=np.char.encode(roles, "utf-8"))
    as_list = M.retrieval_metrics(x, labels, compute_nmi=False,
                                  roles=[r.encode() for r in roles])
    assert as_str == as_bytes == as_list


def test_two_models_same_roles_same_query_rows():
    # verdict pairs candidate and production per query: valid queries depend
    # only on labels and roles, not on the embeddings.
    x, labels = gaussian_data(5)
    y, _ = gaussian_data(6)
    roles = random_roles(5, labels)
    a = M.per_query_metrics(x, labels, roles=roles)
    b = M.per_query_metrics(y[:, :7], labels, roles=roles)
    np.testing.assert_array_equal(a.query_rows, b.query_rows)


# --------------------------------------------------------------------------
# Memory: one [block, G] distance block at a time
# --------------------------------------------------------------------------

def test_query_gallery_is_blocked_over_queries_against_the_gallery_only(monkeypatch):
    x, labels = grid_data(9, n=90)
    roles = np.array(["query"] * 40 + ["gallery"] * 35 + [""] * 15)
    calls = []
    topk = M.topk_sorted
    monkeypatch.setattr(M, "topk_sorted", lambda d2, k: calls.append(d2.shape) or topk(d2, k))
    M.per_query_metrics(x, labels, block_size=16, roles=roles)
    # 55 queries (40 + 15) in blocks of 16, each against the 50 gallery images (35 + 15).
    assert calls == [(16, 50), (16, 50), (16, 50), (7, 50)]


def test_ranked_matches_never_count_the_query_itself():
    # K == G (the whole gallery) when a block mixes gallery and non-gallery
    # queries: a query in the gallery then gets its own column last. No metric
    # reads it (it lies past rank R), but the matches must not call it a match.
    x = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)
    codes = np.array([0, 1, 1])
    query_rows, gallery_rows = np.array([0, 1]), np.array([1, 2])  # row 1 is both
    r = np.array([0, 1])
    (block, matches), = M._ranked_matches(x, codes, query_rows, r, gallery_rows, 8, True, 16)
    assert block == slice(0, 2) and matches.shape == (2, 2)
    # q0 -> 1, 2 (class 1: no match); q1 -> 2 (match), then itself (not a match)
    np.testing.assert_array_equal(matches, [[False, False], [True, False]])


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

FNS = [
    lambda x, y, roles: M.retrieval_metrics(x, y, compute_nmi=False, roles=roles),
    lambda x, y, roles: M.per_query_metrics(x, y, roles=roles),
    lambda x, y, roles: M.recall_at_k(x, y, roles=roles),
    lambda x, y, roles: M.map_at_r(x, y, roles=roles),
    lambda x, y, roles: M.r_precision(x, y, roles=roles),
]
X4 = np.arange(8, dtype=np.float32).reshape(4, 2)
Y4 = np.array([0, 0, 1, 1])


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("roles, message", [
    (["query", "gallery", "query"], "roles has 3 entries but embeddings has 4 rows"),
    ([["query", "gallery"]] * 4, "roles must be a 1-D array"),
    ("query", "roles must be a 1-D array"),
    ([0, 1, 0, 1], "roles must be strings.*int"),
    (["query", "gallery", "train", "Query"], "2 other value\\(s\\): 'Query', 'train'"),
    (np.array(["query", None, "gallery", ""], dtype=object), "1 other value\\(s\\): None"),
    (["gallery"] * 4, "no image is a query"),
    (["query"] * 4, "no image is in the gallery"),
])
def test_invalid_roles(fn, roles, message):
    with pytest.raises(ValueError, match=message):
        fn(X4, Y4, roles)


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("labels, roles", [
    ([0, 0, 1, 1], ["query", "query", "gallery", "gallery"]),  # query classes not in gallery
    ([0, 1, 2, 2], ["", "", "query", "query"]),  # the only gallery image of its class is itself
])
def test_no_valid_query_raises(fn, labels, roles):
    with pytest.raises(ValueError, match="no query has another image of its class in the gallery"):
        fn(X4, labels, roles)
