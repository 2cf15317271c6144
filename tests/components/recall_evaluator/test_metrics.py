"""Retrieval metrics against an independent brute force, and the ranking picture.

The reference below builds the full N x N distance matrix from explicit
differences in float64 and ranks every query with a plain loop, breaking
ties by index. The data (tests/support/embeddings.py) has exact ties and duplicates.
search.exact's own nearest_neighbours and topk_sorted are tested in tests/search/test_exact.py.
"""

import json

import numpy as np
import pytest
from PIL import Image

from components.recall_evaluator import metrics as M
from search import exact as S
from components.recall_evaluator.ranking_picture import picture_size, render_rankings
from tests.support.embeddings import gaussian_data, grid_data


# --------------------------------------------------------------------------
# Independent reference
# --------------------------------------------------------------------------

def brute_force(embeddings, labels, ks=(1, 2, 4, 8)):
    x = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    n = len(x)
    dist = np.empty((n, n))
    for i in range(n):
        dist[i] = np.sqrt(((x - x[i]) ** 2).sum(axis=1))
    hits = {k: 0 for k in ks}
    aps, rps = [], []
    for i in range(n):
        others = np.array([j for j in range(n) if j != i])
        order = others[np.lexsort((others, dist[i, others]))]  # distance, then index
        rel = [bool(labels[j] == labels[i]) for j in order]
        r = sum(rel)
        if r == 0:
            continue  # singleton class: no correct answer, excluded
        for k in ks:
            hits[k] += any(rel[:k])
        found, ap = 0, 0.0
        for rank in range(1, r + 1):
            if rel[rank - 1]:
                found += 1
                ap += found / rank
        aps.append(ap / r)
        rps.append(sum(rel[:r]) / r)
    valid = len(aps)
    return ({k: hits[k] / valid for k in ks}, float(np.mean(aps)), float(np.mean(rps)), valid)


# --------------------------------------------------------------------------
# Recall@K, MAP@R, R-precision vs the reference
# --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("make", [grid_data, gaussian_data])
def test_metrics_match_brute_force(seed, make):
    x, labels = make(seed)
    ks = (1, 2, 4, 8, 16)
    recall, map_r, rp, valid = brute_force(x, labels, ks)
    got = M.recall_at_k(x, labels, ks=ks)
    assert got.keys() == recall.keys()
    for k in ks:
        assert got[k] == pytest.approx(recall[k], abs=1e-12)
    assert M.map_at_r(x, labels) == pytest.approx(map_r, abs=1e-12)
    assert M.r_precision(x, labels) == pytest.approx(rp, abs=1e-12)
    assert 0.0 < map_r <= rp <= 1.0


@pytest.mark.parametrize("block_size", [1, 7, 1024])
def test_results_independent_of_block_size(block_size):
    x, labels = grid_data(5, n=90)
    recall, map_r, rp, valid = brute_force(x, labels, (1, 2, 4, 8))
    out = M.retrieval_metrics(x, labels, block_size=block_size, compute_nmi=False)
    assert [out[f"recall@{k}"] for k in (1, 2, 4, 8)] == \
        pytest.approx([recall[k] for k in (1, 2, 4, 8)], abs=1e-12)
    assert out["map@r"] == pytest.approx(map_r, abs=1e-12)
    assert out["r_precision"] == pytest.approx(rp, abs=1e-12)
    ref_idx, _ = S.nearest_neighbours(x, x, 10, block_size=1024, exclude_self=True)
    idx, _ = S.nearest_neighbours(x, x, 10, block_size=block_size, exclude_self=True)
    np.testing.assert_array_equal(idx, ref_idx)


def test_large_class_sorted_gallery_uses_sampled_threshold():
    # n >> 32 k, so _topk_sorted bounds the k-th distance from a strided column
    # sample; labels sorted by class (as in Cars196) stress that sample.
    rng = np.random.default_rng(11)
    labels = np.sort(rng.integers(0, 40, size=1400))
    x = (rng.integers(-3, 4, size=(1400, 5)) / 2).astype(np.float32)
    x[::5] = x[1::5][: x[::5].shape[0]]  # many duplicates across classes
    ks = (1, 2, 4, 8)
    recall, map_r, rp, _ = brute_force(x, labels, ks)
    # recall_at_k alone selects only 8 neighbours: sample of ~600 of 1400 columns.
    got = M.recall_at_k(x, labels, ks=ks, block_size=256)
    assert [got[k] for k in ks] == pytest.approx([recall[k] for k in ks], abs=1e-12)
    out = M.retrieval_metrics(x, labels, ks=ks, block_size=256, compute_nmi=False)
    assert [out[f"recall@{k}"] for k in ks] == pytest.approx([recall[k] for k in ks], abs=1e-12)
    assert out["map@r"] == pytest.approx(map_r, abs=1e-12)
    assert out["r_precision"] == pytest.approx(rp, abs=1e-12)


def test_map_at_r_hand_computed():
    # 1-D points: class A at 0, 1, 10; class B at 2, 11.
    x = np.array([[0.0], [1.0], [10.0], [2.0], [11.0]])
    labels = np.array(["A", "A", "A", "B", "B"])
    # query 0 (R=2): ranking 1(A) 3(B) 2(A) -> AP@R = (1/1)/2 = 0.5, RP = 0.5
    # query 1 (R=2): 0(A) 3(B) 2(A), 0 and 3 tie at 1, index 0 first -> 0.5, 0.5
    # query 2 (R=2): 4(B) 3(B) 1(A)          -> 0, 0;  first hit at rank 3
    # query 3 (R=1): 1(A) 0(A) 2(A) 4(B)     -> 0, 0;  first hit at rank 4
    # query 4 (R=1): 2(A) 3(B)               -> 0, 0;  first hit at rank 2
    assert M.map_at_r(x, labels) == pytest.approx(1.0 / 5)
    assert M.r_precision(x, labels) == pytest.approx(1.0 / 5)
    assert M.recall_at_k(x, labels, ks=(1, 2, 3)) == pytest.approx({1: 0.4, 2: 0.6, 3: 0.8})
    # Precision inside AP@R. Points 0..4 on a line, classes A A B A A; B is a
    # singleton (excluded as a query, still a distractor). R = 3 for A.
    # q0: 1A 2B 3A -> (1/1 + 2/3)/3 = 5/9     q1: 0A 2B 3A (0, 2 tie) -> 5/9
    # q3: 2B 4A 1A (2, 4 tie) -> (1/2 + 2/3)/3 = 7/18     q4: 3A 2B 1A -> 5/9
    y = np.arange(5, dtype=np.float64)[:, None]
    cls = ["A", "A", "B", "A", "A"]
    assert M.map_at_r(y, cls) == pytest.approx(37 / 72)
    assert M.r_precision(y, cls) == pytest.approx(2 / 3)
    assert M.retrieval_metrics(y, cls, compute_nmi=False)["num_queries"] == 4


def test_singleton_classes_are_excluded_but_stay_in_gallery():
    x, labels = grid_data(7, n=60)
    labels = labels.copy()
    labels[[3, 17, 41]] = [100, 101, 102]  # three classes with a single image
    recall, map_r, rp, valid = brute_force(x, labels, (1, 2, 4, 8))
    out = M.retrieval_metrics(x, labels, compute_nmi=False)
    assert out["num_images"] == 60
    assert out["num_queries"] == valid == 60 - 3
    assert out["recall@1"] == pytest.approx(recall[1])
    assert out["map@r"] == pytest.approx(map_r)
    # Singletons as distractors: moving one onto a query changes that query's top-1.
    y = np.zeros((4, 2), dtype=np.float32)
    y[1] = [5, 5]
    y[2] = [0.1, 0]
    y[3] = [5.1, 5]
    lab = np.array([0, 1, 0, 1])
    assert M.recall_at_k(y, lab, ks=(1,))[1] == 1.0
    y_extra = np.vstack([y, [[-0.01, 0]]])  # nearer to point 0 than point 2 is
    assert M.recall_at_k(y_extra, np.append(lab, 9), ks=(1,))[1] == 0.75


def test_all_singletons_raise():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="no query has another image"):
        M.recall_at_k(x, [0, 1, 2, 3])


def test_k_larger_than_gallery_is_clipped():
    x = np.array([[0.0], [1.0], [5.0], [6.0]], dtype=np.float32)
    out = M.recall_at_k(x, [0, 1, 0, 1], ks=(1, 8))
    assert out == {1: 0.0, 8: 1.0}


# --------------------------------------------------------------------------
# Per-query values (for bootstrap intervals)
# --------------------------------------------------------------------------

def brute_force_per_query(embeddings, labels, ks=(1, 2, 4, 8)):
    """Per valid query, in row order: {name: vector}, and the valid rows."""
    x = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    n = len(x)
    out = {f"recall@{k}": [] for k in ks}
    out.update({"map@r": [], "r_precision": []})
    rows = []
    for i in range(n):
        d = np.sqrt(((x - x[i]) ** 2).sum(axis=1))
        others = np.array([j for j in range(n) if j != i])
        order = others[np.lexsort((others, d[others]))]
        rel = [bool(labels[j] == labels[i]) for j in order]
        r = sum(rel)
        if r == 0:
            continue
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
    return {k: np.array(v) for k, v in out.items()}, np.array(rows)


@pytest.mark.parametrize("make", [grid_data, gaussian_data])
def test_per_query_values_match_brute_force_and_average_to_the_metrics(make):
    x, labels = make(8)
    labels = labels.copy()
    labels[[5, 40]] = [1000, 1001]  # singletons: not queries, still in the gallery
    expected, rows = brute_force_per_query(x, labels, (1, 2, 4, 8))
    pq = M.per_query_metrics(x, labels, ks=(1, 2, 4, 8), block_size=13)
    assert set(pq.values) == set(expected)
    np.testing.assert_array_equal(pq.query_rows, rows)
    assert pq.num_queries == len(rows) == len(x) - 2
    for name, vector in pq.values.items():
        assert vector.dtype == np.float64 and vector.shape == (pq.num_queries,)
        np.testing.assert_allclose(vector, expected[name], rtol=0, atol=1e-12)
    for k in (1, 2, 4, 8):  # hits are exactly 0 or 1
        assert set(np.unique(pq.values[f"recall@{k}"])) <= {0.0, 1.0}
    # The means are the metrics, exactly (same code path as retrieval_metrics).
    out = M.retrieval_metrics(x, labels, block_size=13, compute_nmi=False)
    assert pq.summary() == out
    assert M.map_at_r(x, labels) == out["map@r"] == pq.values["map@r"].mean()


def test_per_query_values_come_from_the_same_single_knn_pass(monkeypatch):
    x, labels = grid_data(9, n=90)
    calls = []
    topk = M.topk_sorted
    monkeypatch.setattr(M, "topk_sorted", lambda d2, k: calls.append(d2.shape) or topk(d2, k))
    pq = M.per_query_metrics(x, labels, ks=(1, 2, 4, 8), block_size=30)
    assert calls == [(30, 90)] * 3  # one top-k selection per block of queries, nothing more
    assert set(pq.values) == {"recall@1", "recall@2", "recall@4", "recall@8", "map@r",
                              "r_precision"}
    summary = pq.summary(nmi_value=0.5)
    assert summary["nmi"] == 0.5 and summary["num_images"] == 90
    json.dumps(summary)


# --------------------------------------------------------------------------
# NMI and retrieval_metrics
# --------------------------------------------------------------------------

def test_nmi_equals_sklearn_on_its_own_kmeans():
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    x, labels = gaussian_data(4, n=200)
    num_classes = len(np.unique(labels))
    for seed in (0, 3):
        clusters = KMeans(n_clusters=num_classes, n_init=M.NMI_N_INIT,
                          random_state=seed).fit_predict(x.astype(np.float32))
        expected = normalized_mutual_info_score(labels, clusters)
        assert M.nmi(x, labels, seed=seed) == pytest.approx(expected, abs=1e-12)


def test_nmi_is_one_for_well_separated_clusters():
    rng = np.random.default_rng(0)
    centres = 100.0 * np.eye(6, 16)
    labels = np.repeat(np.arange(6), 20)
    x = centres[labels] + 0.01 * rng.standard_normal((120, 16))
    assert M.nmi(x, labels) == pytest.approx(1.0, abs=1e-9)
    out = M.retrieval_metrics(x, labels)
    assert out["recall@1"] == out["map@r"] == out["r_precision"] == 1.0
    assert out["nmi"] == pytest.approx(1.0, abs=1e-9)


def test_retrieval_metrics_is_flat_and_consistent():
    x, labels = gaussian_data(6, n=120)
    out = M.retrieval_metrics(x, labels, ks=(1, 2, 4, 8), seed=1)
    assert set(out) == {"recall@1", "recall@2", "recall@4", "recall@8", "map@r",
                        "r_precision", "nmi", "num_queries", "num_images", "num_classes"}
    json.dumps(out)  # JSON-friendly: plain floats and ints
    assert all(type(out[k]) is float for k in out if not k.startswith("num_"))
    assert all(type(out[k]) is int for k in out if k.startswith("num_"))
    recall = M.recall_at_k(x, labels)
    assert [out[f"recall@{k}"] for k in (1, 2, 4, 8)] == [recall[k] for k in (1, 2, 4, 8)]
    assert out["map@r"] == M.map_at_r(x, labels)
    assert out["r_precision"] == M.r_precision(x, labels)
    assert out["nmi"] == M.nmi(x, labels, seed=1)
    assert out["num_classes"] == len(np.unique(labels))
    assert out["num_queries"] == out["num_images"] == 120
    recalls = [out[f"recall@{k}"] for k in (1, 2, 4, 8)]
    assert recalls == sorted(recalls)


# --------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------

GOOD = np.zeros((4, 2), dtype=np.float32) + np.arange(4, dtype=np.float32)[:, None]
LABELS = np.array([0, 0, 1, 1])


@pytest.mark.parametrize("embeddings, labels, kwargs, message", [
    (np.zeros(4, np.float32), LABELS, {}, "2-D"),
    (np.zeros((4, 2), np.int64), LABELS, {}, "floating-point"),
    (np.zeros((0, 2), np.float32), [], {}, "non-empty"),
    (np.where(np.eye(4, 2) > 0, np.nan, GOOD), LABELS, {}, "NaN or infinite.*row 0"),
    (np.where(np.eye(4, 2)[::-1] > 0, np.inf, GOOD), LABELS, {}, "first at row 2"),
    (GOOD, LABELS[:3], {}, "3 entries but embeddings has 4 rows"),
    (GOOD, LABELS[:, None], {}, "1-D"),
    (GOOD, LABELS.astype(float), {}, "integers or strings"),
    (GOOD, LABELS, {"ks": ()}, "at least one k"),
    (GOOD, LABELS, {"ks": (1, 0)}, "positive integer"),
    (GOOD, LABELS, {"block_size": 0}, "block_size"),
    (np.full((4, 2), 1e30, np.float32), LABELS, {}, "overflow"),
])
def test_invalid_inputs(embeddings, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        M.retrieval_metrics(embeddings, labels, **kwargs)


def test_recall_at_k_needs_at_least_two_embeddings():
    with pytest.raises(ValueError, match="at least 2"):
        M.recall_at_k(GOOD[:1], [0])


# --------------------------------------------------------------------------
# Ranking picture
# --------------------------------------------------------------------------

def _image(rng, h, w):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_render_rankings_png_and_html(tmp_path):
    rng = np.random.default_rng(0)
    num_q, num_k, thumb = 3, 10, 40  # more than 8 neighbours: only 8 are drawn
    queries = [_image(rng, 30 + 7 * i, 50) for i in range(num_q)]  # varied sizes
    neighbours = [[_image(rng, 20 + j, 35) for j in range(num_k)] for _ in range(num_q)]
    matches = rng.random((num_q, num_k)) < 0.5
    matches[0, 0], matches[0, 1] = True, False
    titles = {"query_ids": ["<q0> & co", "q1", "q2"],
              "neighbour_ids": [[f"n{i}-{j}" for j in range(num_k)] for i in range(num_q)],
              "distances": rng.random((num_q, num_k)),
              "caption": 'R@1 "test" <page>'}
    png, html_path = render_rankings(queries, neighbours, matches, str(tmp_path / "out" / "rank.png"),
                                     str(tmp_path / "rank.html"), titles=titles, thumb_size=thumb)
    with Image.open(png) as im:
        assert im.format == "PNG"
        assert im.size == picture_size(num_q, 8, thumb)
        rgb = im.convert("RGB")
        # Top-left frame pixel of neighbour 1 (green: match) and 2 (red: miss) of query 0.
        from components.recall_evaluator import ranking_picture as RP
        cell = thumb + 2 * RP.FRAME
        y = RP.GAP + RP.HEADER
        x1 = RP.GAP + RP.SEPARATOR + (cell + RP.GAP)
        assert rgb.getpixel((x1 + 1, y + 1)) == RP.MATCH_COLOUR
        assert rgb.getpixel((x1 + cell + RP.GAP + 1, y + 1)) == RP.MISS_COLOUR
        assert rgb.getpixel((RP.GAP + 1, y + 1)) == RP.QUERY_COLOUR
    page = open(html_path, encoding="utf-8").read()
    assert 'src="out/rank.png"' in page
    assert "&lt;q0&gt; &amp; co" in page and "<q0>" not in page
    assert "R@1 &quot;test&quot; &lt;page&gt;" in page
    assert "n2-7" in page and "n2-8" not in page
    assert f"{titles['distances'][1, 3]:.4f}" in page
    assert page.count('class="match"') == int(matches[:, :8].sum())
    assert page.count('class="miss"') == int((~matches[:, :8]).sum())


def test_render_rankings_without_html_and_bad_input(tmp_path):
    rng = np.random.default_rng(1)
    q = [_image(rng, 16, 16)]
    n = [[_image(rng, 16, 16) for _ in range(3)]]
    png, html_path = render_rankings(q, n, [[True, False, True]], str(tmp_path / "a.png"))
    assert html_path is None
    with Image.open(png) as im:
        assert im.size == picture_size(1, 3, 128)
    with pytest.raises(ValueError, match="uint8"):
        render_rankings([q[0].astype(np.float32)], n, [[True] * 3], str(tmp_path / "b.png"))
    with pytest.raises(ValueError, match="matches"):
        render_rankings(q, n, [[True] * 3] * 2, str(tmp_path / "c.png"))
