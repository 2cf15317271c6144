"""search/index.py: the gallery index, exact and approximate, bound to its model."""
from __future__ import annotations

import dataclasses
import json
import os
import threading

import numpy as np
import pytest

from core.config import load_config
from search import index as index_module
from search.exact import nearest_neighbours
from search.index import (
    MANIFEST, CorruptIndexError, DuplicateIdError, GalleryIndex, IndexQueryError,
    MissingIndexError, ModelMismatchError, ModelStamp, UnknownIdError, model_fingerprint)

D = 32
KINDS = ["exact", "ivf_flat", "ivf_sq8", "ivf_sq6", "ivf_pq", "hnsw"]
MODEL = ModelStamp("cgd", "a" * 64, D, "1")


def clustered(n, d=D, classes=40, seed=0):
    """Unit vectors around class centres, the spread in a low-dimensional subspace."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = np.linalg.qr(rng.standard_normal((d, 8)))[0]
    y = rng.integers(0, classes, n)
    x = centres[y] + 0.5 * rng.standard_normal((n, 8)) @ basis.T \
        + 0.05 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def config(kind="auto", **changes):
    return dataclasses.replace(load_config().gallery_index, kind=kind, **changes)


def build(kind, n=3000, seed=0, **changes):
    x = clustered(n, seed=seed)
    ids = [f"img-{i}" for i in range(n)]
    meta = [{"row": i} for i in range(n)]
    return GalleryIndex.build(x, ids, meta, config(kind, **changes), MODEL), x, ids


def test_exact_ranks_like_search_exact_including_ties():
    x = clustered(500)
    x[10] = x[3]  # a tie: the lower row must come first
    ids = [f"id{i}" for i in range(500)]
    index = GalleryIndex.build(x, ids, None, config("exact"), MODEL)
    queries = np.concatenate([x[3:4], clustered(20, seed=1)])
    rows, dist = nearest_neighbours(queries, x, 7)
    hits = index.search(queries, 7)
    assert [[h.id for h in row] for row in hits] == [[ids[r] for r in row] for row in rows]
    np.testing.assert_allclose([[h.distance for h in row] for row in hits], dist, atol=1e-6)
    assert [h.id for h in hits[0][:2]] == ["id3", "id10"]


def test_auto_picks_exact_below_the_threshold_and_approximate_above():
    x = clustered(2000)
    ids = [str(i) for i in range(2000)]
    assert GalleryIndex.build(x, ids, None, config(exact_below=2001), MODEL).kind == "exact"
    above = GalleryIndex.build(x, ids, None, config(exact_below=2000), MODEL)
    assert above.kind == index_module.AUTO_APPROXIMATE and above.faiss_factory


# Not ivf_sq6: 6-bit codes reach 0.93 on these tight clusters (why auto builds ivf_sq8).
@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_sq8", "hnsw"])
def test_approximate_recall_against_exact_at_the_default_settings(kind):
    index, x, ids = build(kind, n=5000)
    assert index.recall_against_exact(k=10, queries=300, seed=0) >= 0.95
    # Held-out queries too, measured here against search.exact directly.
    queries = clustered(200, seed=7)
    truth, _ = nearest_neighbours(queries, x, 10)
    found = index.search(queries, 10)
    recall = np.mean([len({ids[r] for r in t} & {h.id for h in f}) / 10
                      for t, f in zip(truth, found)])
    assert recall >= 0.95


def test_recall_of_a_poor_index_is_reported_as_poor():
    index, _, _ = build("ivf_flat", n=5000, nlist=64, nprobe=1)
    assert index.recall_against_exact(k=10, queries=300, seed=0) < 0.95


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_answers_the_same(tmp_path, kind):
    index, x, _ = build(kind, n=2000)
    index.catalogue_seq = 7
    index.save(str(tmp_path / "idx"))
    loaded = GalleryIndex.load(str(tmp_path / "idx"), expect=MODEL)
    assert (loaded.kind, loaded.size, loaded.model, loaded.catalogue_seq) == \
        (kind, 2000, MODEL, 7)
    q = clustered(10, seed=3)
    before = [[(h.id, h.metadata) for h in row] for row in index.search(q, 5)]
    assert [[(h.id, h.metadata) for h in row] for row in loaded.search(q, 5)] == before
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    assert manifest["model"]["fingerprint"] == MODEL.fingerprint
    assert all(len(entry["sha256"]) == 64 for entry in manifest["files"].values())


def test_a_save_killed_midway_leaves_the_previous_index_loadable(tmp_path, monkeypatch):
    target = str(tmp_path / "idx")
    old, _, _ = build("exact", n=500)
    old.save(target)
    new, _, _ = build("exact", n=600, seed=1)
    real = index_module._write_file

    def dies_at_the_manifest(directory, name, write):
        if name == MANIFEST:
            raise KeyboardInterrupt("killed")
        return real(directory, name, write)

    monkeypatch.setattr(index_module, "_write_file", dies_at_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        new.save(target)
    assert GalleryIndex.load(target).size == 500
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # the temp dir is cleaned up


def test_a_directory_without_manifest_is_missing(tmp_path):
    index, _, _ = build("exact", n=100)
    index.save(str(tmp_path / "idx"))
    os.remove(tmp_path / "idx" / MANIFEST)
    with pytest.raises(MissingIndexError, match="manifest.json"):
        GalleryIndex.load(str(tmp_path / "idx"))
    with pytest.raises(MissingIndexError, match="nowhere"):
        GalleryIndex.load(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("kind, name", [("exact", "vectors.npy"), ("ivf_sq8", "index.faiss"),
                                        ("hnsw", "rows.json")])
def test_a_corrupt_file_is_named(tmp_path, kind, name):
    index, _, _ = build(kind, n=1000)
    index.save(str(tmp_path / "idx"))
    path = tmp_path / "idx" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptIndexError, match=name):
        GalleryIndex.load(str(tmp_path / "idx"))


def test_another_model_or_dimension_is_refused_naming_both(tmp_path):
    index, _, _ = build("exact", n=100)
    index.save(str(tmp_path / "idx"))
    other = ModelStamp("cgd", "b" * 64, D, "2")
    with pytest.raises(ModelMismatchError) as e:
        GalleryIndex.load(str(tmp_path / "idx"), expect=other)
    assert "a" * 64 in str(e.value) and "b" * 64 in str(e.value)
    with pytest.raises(ModelMismatchError, match=f"dimension {D}.*64"):
        GalleryIndex.load(str(tmp_path / "idx"), expect=dataclasses.replace(MODEL, dimension=64))
    with pytest.raises(ModelMismatchError, match="dimension 16"):
        GalleryIndex.build(clustered(10, d=16), [str(i) for i in range(10)], None,
                           config("exact"), MODEL)


def test_model_fingerprint_is_the_sha256_of_saved_model_pb(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"graph")
    import hashlib
    assert model_fingerprint(str(tmp_path)) == hashlib.sha256(b"graph").hexdigest()


@pytest.mark.parametrize("k", [0, 101, -1, 2.0, True])
def test_k_outside_its_range_is_refused(k):
    index, _, _ = build("exact", n=100)
    with pytest.raises(IndexQueryError, match=r"\[1, 100\]"):
        index.search(clustered(1), k)


def test_a_query_of_another_dimension_is_refused():
    index, _, _ = build("ivf_flat", n=1000)
    with pytest.raises(IndexQueryError, match="dimension 16"):
        index.search(np.ones((1, 16), np.float32), 3)


@pytest.mark.parametrize("kind", KINDS)
def test_add_and_remove_by_id(kind):
    index, x, ids = build(kind, n=2000)
    new = clustered(5, seed=9)
    index.add([f"new-{i}" for i in range(5)], new, [{"n": i} for i in range(5)])
    hits = index.search(new, 1)
    assert [row[0].id for row in hits] == [f"new-{i}" for i in range(5)]
    # Quantised kinds return approximate distances; a unit vector's neighbours are > 0.3 away.
    assert hits[2][0].metadata == {"n": 2}
    assert hits[2][0].distance < (0.5 if kind == "ivf_pq" else 0.1)  # PQ8 at D=32: coarse
    index.remove(["new-2", "img-0"])
    assert index.size == 2003 and "new-2" not in index and "img-0" not in index
    for row in index.search(np.stack([new[2], x[0]]), 10):
        assert len(row) == 10 and not {"new-2", "img-0"} & {h.id for h in row}
    with pytest.raises(DuplicateIdError, match="'img-1'"):
        index.add(["img-1", "fresh"], clustered(2, seed=2))
    assert "fresh" not in index  # refused whole
    with pytest.raises(UnknownIdError, match="'new-2'"):
        index.remove(["new-2"])
    with pytest.raises(UnknownIdError, match="'ghost'"):
        index.remove(["img-5", "ghost"])
    assert "img-5" in index


def test_removals_survive_save_and_load_for_hnsw(tmp_path):
    index, x, _ = build("hnsw", n=1000)
    index.remove(["img-3"])
    index.save(str(tmp_path / "idx"))
    loaded = GalleryIndex.load(str(tmp_path / "idx"))
    assert loaded.size == 999
    assert "img-3" not in {h.id for h in loaded.search(x[3:4], 5)[0]}
    loaded.add(["img-3"], x[3:4])  # an id may come back after its removal
    assert loaded.search(x[3:4], 1)[0][0].id == "img-3"


def test_build_refuses_duplicate_ids():
    with pytest.raises(DuplicateIdError, match="'a'"):
        GalleryIndex.build(clustered(3), ["a", "b", "a"], None, config("exact"), MODEL)


@pytest.mark.parametrize("kind", ["exact", "ivf_sq8", "hnsw"])
def test_concurrent_add_remove_search_stay_consistent(kind):
    index, x, _ = build(kind, n=2000)
    extra = clustered(200, seed=5)
    errors = []

    def writer():
        try:
            for i in range(0, 200, 10):
                batch = [f"w-{j}" for j in range(i, i + 10)]
                index.add(batch, extra[i:i + 10])
                index.remove(batch[:5])
        except Exception as e:  # surfaced by the assertion below
            errors.append(e)

    def reader():
        try:
            for _ in range(30):
                for row in index.search(extra[:20], 5):
                    ids = [h.id for h in row]
                    # Never a removed id, never an id twice, always k answers.
                    assert len(ids) == 5 == len(set(ids))
                    assert not any(i.startswith("w-") and int(i[2:]) % 10 < 5 for i in ids)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader)
                                                   for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert index.size == 2100
    survivors = [f"w-{j}" for j in range(200) if j % 10 >= 5]
    assert all(s in index for s in survivors)
    hits = index.search(extra[[5, 6, 15]], 1)
    assert [row[0].id for row in hits] == ["w-5", "w-6", "w-15"]


def test_a_concurrent_save_writes_a_consistent_index(tmp_path):
    index, x, _ = build("ivf_flat", n=2000)
    extra = clustered(100, seed=4)
    stop = threading.Event()

    def writer():
        for i in range(100):
            index.add([f"e-{i}"], extra[i:i + 1])
        stop.set()

    t = threading.Thread(target=writer)
    t.start()
    saved = 0
    while not stop.is_set() or saved == 0:
        index.save(str(tmp_path / "idx"))
        loaded = GalleryIndex.load(str(tmp_path / "idx"))
        assert loaded.size == len(loaded.ids()) == loaded._faiss.ntotal
        saved += 1
    t.join()
