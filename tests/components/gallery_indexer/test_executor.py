"""The GalleryIndexer: its executor called directly on real artifacts (a stand-in SavedModel
with the trainer's export contract, raw eval Examples), its recall protocol against the
evaluator's, its gallery readers, and a version directory the Pusher left half-copied."""
from __future__ import annotations

import dataclasses
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tfx.types import standard_artifacts

from tests.conftest import small_config
from tests.components.test_executors import artifact, eval_examples, stand_in_model  # noqa: F401 - fixture

EVALUATOR_BLESSED = "BLESSED: Recall@1 0.9000 meets the threshold 0.5000; no blessed baseline yet"


def write_eval_split(root, classes: int, per_class: int, seed: int = 0, spread: float = 8.0):
    """Raw Examples with an eval split: ``classes`` colours x ``per_class`` noisy images."""
    os.makedirs(root / "Split-eval")
    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(str(root / "Split-eval" / "data.gz"), "GZIP") as writer:
        for label in range(classes):
            base = rng.integers(0, 255, size=3)
            for i in range(per_class):
                pixels = np.clip(base + rng.normal(0, spread, (24, 32, 3)), 0, 255)
                writer.write(tf.train.Example(features=tf.train.Features(feature={
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[jpeg(pixels.astype(np.uint8))])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                    "image_id": tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[f"eval/{label}-{i}".encode()])),
                })).SerializeToString())
    return artifact(standard_artifacts.Examples, root, split_names=["eval"])


def jpeg(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def upstream_blessing(tmp_path, blessed: bool, reason: str):
    blessing = artifact(standard_artifacts.ModelBlessing, tmp_path / "evaluator-blessing")
    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_string_custom_property("reason", reason)
    return blessing


def run_indexer(tmp_path, examples, model, blessing, serving_model_dir=None, **gallery_index):
    from components.gallery_indexer import constants
    from components.gallery_indexer.executor import Executor
    from components.recall_evaluator import constants as evaluator_keys
    from core import names

    cfg = small_config(tmp_path, tmp_path, gallery_index=dict({"enabled": True}, **gallery_index))
    outputs = {key: artifact(cls, tmp_path / key) for key, cls in (
        (constants.INDEXED_MODEL_KEY, standard_artifacts.Model),
        ("blessing", standard_artifacts.ModelBlessing),
        ("evaluation", standard_artifacts.ModelEvaluation))}
    for a in outputs.values():
        os.makedirs(a.uri)
    inputs = {"model": [model], "model_blessing": [blessing]}
    if examples is not None:
        inputs["examples"] = [examples]
    Executor().Do(inputs, {k: [v] for k, v in outputs.items()}, {
        constants.GALLERY_INDEX_JSON_KEY: json.dumps(dataclasses.asdict(cfg.gallery_index)),
        evaluator_keys.EVAL_SPLIT_KEY: "eval",
        evaluator_keys.SERVING_MODEL_DIR_KEY: str(serving_model_dir or tmp_path / "serving/cgd"),
        names.CODE_FINGERPRINT_KEY: ""})
    metrics = json.loads((tmp_path / "evaluation" / constants.METRICS_FILE).read_text())
    return outputs, metrics


def served_dir(outputs):
    from components.gallery_indexer import constants
    return os.path.join(outputs[constants.INDEXED_MODEL_KEY].uri, "Format-Serving")


# ------------------------------------------------------------------ the executor

def test_a_blessed_model_carries_its_index_stamped_with_the_models_fingerprint(
        tmp_path, eval_examples):  # noqa: F811
    from components.gallery_indexer.executor import index_dir
    from components.recall_evaluator.embedding import embed_with_signature
    from core.names import INDEX_DIR
    from search.index import MANIFEST, GalleryIndex, ModelStamp, model_fingerprint

    model = stand_in_model(tmp_path / "model", seed=1)
    outputs, metrics = run_indexer(tmp_path, eval_examples, model,
                                   upstream_blessing(tmp_path, True, EVALUATOR_BLESSED))
    blessing = outputs["blessing"]
    assert blessing.get_int_custom_property("blessed") == 1
    assert os.path.exists(os.path.join(blessing.uri, "BLESSED"))
    assert metrics["reason"].startswith("BLESSED: the gallery index")
    assert EVALUATOR_BLESSED in metrics["reason"]

    # One directory: the candidate's SavedModel and, inside it, its index.
    pushed = served_dir(outputs)
    candidate = os.path.join(model.uri, "Format-Serving")
    assert index_dir(pushed) == os.path.join(pushed, "assets.extra", INDEX_DIR)
    assert os.path.isfile(os.path.join(pushed, "saved_model.pb"))
    manifest = json.loads(open(os.path.join(index_dir(pushed), MANIFEST)).read())
    assert manifest["model"]["fingerprint"] == model_fingerprint(candidate) == \
        model_fingerprint(pushed)
    assert manifest["model"]["name"] == "cgd" and manifest["size"] == 24

    # The index answers queries embedded by the model it was pushed with: an image's
    # nearest item is itself.
    stamp = ModelStamp("cgd", model_fingerprint(pushed), 32)
    index = GalleryIndex.load(index_dir(pushed), expect=stamp)
    from components.recall_evaluator.embedding import read_eval_images
    images, _, ids, _ = read_eval_images(eval_examples.uri, "eval")
    hits = index.search(embed_with_signature(pushed, images[:3]), 1)
    assert [h[0].id for h in hits] == ids[:3]

    # Measured: exact search below gallery_index.exact_below, so ANN recall is 1 and the
    # end-to-end Recall@K through the index equals the evaluator's exact Recall@K.
    assert metrics["index"]["kind"] == "exact" and metrics["ann_recall"]["recall"] == 1.0
    e2e = metrics["end_to_end"]
    assert e2e["index"] == e2e["exact"] and e2e["index"]["num_queries"] == 24
    assert set(e2e["index"]) == {"recall@1", "recall@10", "num_queries"}


def clustered_examples(tmp_path):
    """200 images, 40 classes of noisy colours spread over the embedding space: an IVF
    index of 5 cells searching only the query's nearest (nprobe 1) misses the exact
    neighbours that lie across a cell border (recall@10 0.77 when written)."""
    return write_eval_split(tmp_path / "clustered", classes=40, per_class=5, seed=3,
                            spread=90.0)


def test_an_index_below_the_recall_floor_blocks_the_push_and_the_verdict_says_so(tmp_path):
    model = stand_in_model(tmp_path / "model", seed=1)
    outputs, metrics = run_indexer(tmp_path, clustered_examples(tmp_path), model,
                                   upstream_blessing(tmp_path, True, EVALUATOR_BLESSED),
                                   kind="ivf_flat", nlist=5, nprobe=1)
    ann = metrics["ann_recall"]
    assert metrics["index"]["kind"] == "ivf_flat"
    assert ann["recall"] < ann["floor"] == 0.95  # measured, not forced
    blessing = outputs["blessing"]
    assert blessing.get_int_custom_property("blessed") == 0
    assert os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
    reason = metrics["reason"]
    assert reason.startswith("NOT BLESSED: the gallery index (ivf_flat, 200 items)")
    assert f"recall@10 {ann['recall']:.4f} against exact search" in reason
    assert "below gallery_index.recall_floor 0.9500" in reason
    assert (tmp_path / "evaluation" / "verdict.txt").read_text().strip() == reason


def test_the_same_index_searching_every_cell_is_blessed(tmp_path):
    """The counterpart of the test above: the gate follows the measured recall."""
    model = stand_in_model(tmp_path / "model", seed=1)
    outputs, metrics = run_indexer(tmp_path, clustered_examples(tmp_path), model,
                                   upstream_blessing(tmp_path, True, EVALUATOR_BLESSED),
                                   kind="ivf_flat", nlist=5, nprobe=5)
    assert metrics["ann_recall"]["recall"] == 1.0
    assert outputs["blessing"].get_int_custom_property("blessed") == 1


def test_a_model_the_evaluator_did_not_bless_gets_no_index_and_is_not_blessed(
        tmp_path, eval_examples):  # noqa: F811
    from components.gallery_indexer.executor import index_dir

    refused = "NOT BLESSED: Recall@1 0.2000 is below the threshold 0.5000"
    outputs, metrics = run_indexer(tmp_path, eval_examples,
                                   stand_in_model(tmp_path / "model", seed=1),
                                   upstream_blessing(tmp_path, False, refused))
    assert outputs["blessing"].get_int_custom_property("blessed") == 0
    assert os.path.exists(os.path.join(outputs["blessing"].uri, "NOT_BLESSED"))
    assert metrics["reason"].startswith("NOT BLESSED: the RecallEvaluator did not bless")
    assert refused in metrics["reason"] and "ann_recall" not in metrics
    assert not os.path.exists(index_dir(served_dir(outputs)))


def test_the_catalogues_current_items_are_in_the_index_and_its_sequence_in_the_manifest(
        tmp_path, eval_examples):  # noqa: F811
    from components.gallery_indexer.executor import index_dir
    from core.names import CATALOGUE_DIR
    from search.catalogue import Catalogue, CatalogueItem
    from search.index import GalleryIndex

    serving = tmp_path / "serving" / "cgd"
    catalogue = Catalogue(str(serving / CATALOGUE_DIR))
    rng = np.random.default_rng(9)
    photos = [jpeg(rng.integers(0, 255, (24, 32, 3)).astype(np.uint8)) for _ in range(3)]
    catalogue.add([CatalogueItem(f"new-{i}", photo, {"sku": i}) for i, photo in
                   enumerate(photos)])
    catalogue.remove(["new-1", "test/00"])  # a catalogue item, and one of the eval split
    outputs, metrics = run_indexer(tmp_path, eval_examples,
                                   stand_in_model(tmp_path / "model", seed=1),
                                   upstream_blessing(tmp_path, True, EVALUATOR_BLESSED),
                                   serving_model_dir=serving)
    assert metrics["gallery"]["catalogue_items"] == 2
    assert metrics["gallery"]["catalogue_seq"] == catalogue.last_seq
    index_path = index_dir(served_dir(outputs))
    manifest = json.loads(open(os.path.join(index_path, "manifest.json")).read())
    assert manifest["catalogue_seq"] == catalogue.last_seq and manifest["size"] == 24 - 1 + 2
    index = GalleryIndex.load(index_path)
    assert "test/00" not in index and "new-1" not in index and "new-0" in index
    from components.recall_evaluator.embedding import embed_with_signature
    [[hit]] = index.search(embed_with_signature(served_dir(outputs), [photos[2]]), 1)
    assert (hit.id, hit.metadata) == ("new-2", {"sku": 2})
    # The removed eval image still queries; the additions are distractors only: still 24
    # queries, and through the index as through exact search.
    assert metrics["end_to_end"]["index"] == metrics["end_to_end"]["exact"]
    assert metrics["end_to_end"]["index"]["num_queries"] == 24


# ------------------------------------------------------------------ recall, as the evaluator counts

def exact_search(gallery_embeddings, gallery_ids):
    """A ``GalleryIndex.search`` stand-in over exact search (the protocol under test)."""
    from collections import namedtuple

    from search.exact import nearest_neighbours
    Hit = namedtuple("Hit", "id distance metadata")

    def search(queries, k):
        rows, dist = nearest_neighbours(queries, gallery_embeddings, k)
        return [[Hit(gallery_ids[r], d, {}) for r, d in zip(rr, dd)] for rr, dd in zip(rows, dist)]
    return search


@pytest.mark.parametrize("protocol", ["all-vs-all", "in-shop"])
def test_recall_through_a_search_matches_the_evaluators_recall(protocol):
    from components.gallery_indexer import recall

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(12), 5)
    x = rng.normal(size=(60, 8)).astype(np.float32) + labels[:, None] * 0.3
    if protocol == "all-vs-all":
        roles = np.full(60, "", dtype=object)
    else:
        roles = np.where(np.arange(60) % 5 < 2, "query", "gallery").astype(object)
    labels[59] = 99  # a class of one gallery image: a distractor, never a valid query
    ids = [f"id{i}" for i in range(60)]
    in_index = np.flatnonzero(roles != "query")
    search = exact_search(x[in_index], [ids[i] for i in in_index])
    ks = (1, 2, 4)
    through = recall.through_index(search, x, ids, labels, roles, ks)
    assert through == recall.exact(x, labels, roles, ks)
    assert through["num_queries"] == (59 if protocol == "all-vs-all" else 24)
    assert 0 < through["recall@1"] < through["recall@4"] <= 1


def test_recall_through_a_search_that_misses_neighbours_is_lower():
    from components.gallery_indexer import recall

    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(10), 4)
    x = rng.normal(size=(40, 4)).astype(np.float32) + labels[:, None]
    roles = np.full(40, "", dtype=object)
    ids = [str(i) for i in range(40)]
    exact = exact_search(x, ids)

    def blind(queries, k):  # drops every same-class neighbour: only the query comes back
        return [[h for h in hits if labels[int(h.id)] != labels[int(hits[0].id)]
                 or h is hits[0]] for hits in exact(queries, k)]

    assert recall.through_index(blind, x, ids, labels, roles, (1,))["recall@1"] == 0.0
    assert recall.exact(x, labels, roles, (1,))["recall@1"] > 0.5


# ------------------------------------------------------------------ galleries a user names

def test_a_folder_gallery_takes_its_classes_from_sub_folders_and_the_state_moves(tmp_path):
    from components.gallery_indexer import gallery
    from components.gallery_indexer.driver import gallery_state

    rng = np.random.default_rng(4)
    for cls in ("red", "blue"):
        os.makedirs(tmp_path / "g" / cls)
        for i in range(2):
            (tmp_path / "g" / cls / f"{i}.jpg").write_bytes(
                jpeg(rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)))
    rows = gallery.read(str(tmp_path / "g"), None, "eval")
    assert rows.ids == ["blue/0.jpg", "blue/1.jpg", "red/0.jpg", "red/1.jpg"]
    assert rows.labels.tolist() == [0, 0, 1, 1]
    assert rows.metadata[2] == {"path": "red/0.jpg", "class_name": "red"}
    before = gallery_state(str(tmp_path / "g"), str(tmp_path / "serving"))
    (tmp_path / "g" / "red" / "2.jpg").write_bytes(jpeg(np.zeros((8, 8, 3), np.uint8)))
    assert gallery_state(str(tmp_path / "g"), str(tmp_path / "serving")) != before


def test_the_local_cache_key_moves_with_the_catalogue(tmp_path):
    from components.gallery_indexer.driver import gallery_state
    from core.names import CATALOGUE_DIR
    from search.catalogue import Catalogue, CatalogueItem

    serving = str(tmp_path / "serving" / "cgd")
    empty = gallery_state("eval", serving)
    catalogue = Catalogue(os.path.join(serving, CATALOGUE_DIR))
    assert gallery_state("eval", serving) == empty  # an empty catalogue changes nothing
    catalogue.add([CatalogueItem("a", b"\xff\xd8jpeg")])
    added = gallery_state("eval", serving)
    catalogue.remove(["a"])
    assert len({empty, added, gallery_state("eval", serving)}) == 3


def test_a_csv_gallery_without_an_id_column_is_refused_naming_the_file_and_column(tmp_path):
    from components.gallery_indexer import gallery

    (tmp_path / "g.csv").write_text("path,sku\na.jpg,1\n")
    with pytest.raises(ValueError) as e:
        gallery.read(str(tmp_path / "g.csv"), None, "eval")
    assert str(tmp_path / "g.csv") in str(e.value) and "['id']" in str(e.value)
    assert "gallery_index.gallery" in str(e.value)


def test_a_gallery_that_does_not_exist_is_refused_naming_the_key(tmp_path):
    from components.gallery_indexer import gallery

    with pytest.raises(FileNotFoundError, match="gallery_index.gallery: .*nowhere"):
        gallery.read(str(tmp_path / "nowhere"), None, "eval")


# ------------------------------------------------------------------ a push killed halfway

def test_a_version_counts_as_served_only_once_its_model_and_index_are_whole(
        tmp_path, eval_examples):  # noqa: F811
    """TFX's Pusher copies file by file, saved_model.pb last, none of it atomically. The
    version it writes counts; a copy killed before or inside saved_model.pb does not, nor
    one whose index files arrived in part (a copier of another order), until it is whole."""
    import shutil

    from tfx.components.pusher.executor import Executor as Pusher
    from tfx.proto import pusher_pb2
    from tfx.utils import proto_utils

    from components.gallery_indexer import constants
    from components.gallery_indexer.executor import index_dir
    from serving.model_repository import scan_versions

    outputs, _ = run_indexer(tmp_path, eval_examples, stand_in_model(tmp_path / "model", seed=1),
                             upstream_blessing(tmp_path, True, EVALUATOR_BLESSED))
    serving = tmp_path / "serving" / "cgd"
    pushed = artifact(standard_artifacts.PushedModel, tmp_path / "pushed")
    Pusher().Do({"model": [outputs[constants.INDEXED_MODEL_KEY]],
                 "model_blessing": [outputs["blessing"]]}, {"pushed_model": [pushed]},
                {"push_destination": proto_utils.proto_to_json(pusher_pb2.PushDestination(
                    filesystem=pusher_pb2.PushDestination.Filesystem(
                        base_directory=str(serving))))})
    assert pushed.get_int_custom_property("pushed") == 1
    [whole] = os.listdir(serving)
    assert os.path.isfile(os.path.join(index_dir(str(serving / whole)), "manifest.json"))

    def copy(version, damage):
        target = serving / str(version)
        shutil.copytree(serving / whole, target)
        damage(target)
        return target

    def truncate(path):
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])

    index_files = lambda target: sorted(  # noqa: E731
        p for p in (target / "assets.extra" / "gallery_index").iterdir()
        if p.name != "manifest.json")
    before_model = copy(1, lambda t: (t / "saved_model.pb").unlink())
    torn_model = copy(2, lambda t: truncate(t / "saved_model.pb"))
    torn_index = copy(3, lambda t: truncate(index_files(t)[0]))
    no_manifest = copy(4, lambda t: (t / "assets.extra" / "gallery_index" /
                                     "manifest.json").unlink())
    copy(5, lambda t: shutil.rmtree(t / "assets.extra" / "gallery_index"))
    assert sorted(scan_versions(str(serving))) == [5, int(whole)]

    # The copies finish: each counts from then on.
    for target in (before_model, torn_model):
        shutil.copy(serving / whole / "saved_model.pb", target / "saved_model.pb")
    shutil.copy(index_files(serving / whole)[0], index_files(torn_index)[0])
    shutil.copy(serving / whole / "assets.extra" / "gallery_index" / "manifest.json",
                no_manifest / "assets.extra" / "gallery_index" / "manifest.json")
    assert sorted(scan_versions(str(serving))) == [1, 2, 3, 4, 5, int(whole)]


# ------------------------------------------------------------------ the pipeline

def compiled_nodes(cfg) -> dict:
    from tfx.dsl.compiler import compiler

    from pipeline.definition import create_pipeline
    ir = compiler.Compiler().compile(create_pipeline(cfg))
    return {n.pipeline_node.node_info.id: n.pipeline_node for n in ir.nodes}


def producers(node, key: str) -> set[str]:
    return {c.producer_node_query.id for c in node.inputs.inputs[key].channels}


def test_the_pusher_pushes_the_indexed_model_on_the_indexers_blessing(tmp_path):
    nodes = compiled_nodes(small_config(tmp_path, tmp_path / "cars196"))
    assert producers(nodes["Pusher"], "model") == {"GalleryIndexer"}
    assert producers(nodes["Pusher"], "model_blessing") == {"GalleryIndexer"}
    indexer = nodes["GalleryIndexer"]
    assert producers(indexer, "model") == {"Trainer"}
    assert producers(indexer, "model_blessing") == {"RecallEvaluator"}
    assert producers(indexer, "examples") == {"RetrievalExampleGen"}
    # A folder gallery needs no examples.
    folder = compiled_nodes(small_config(tmp_path, tmp_path / "cars196",
                                         gallery_index={"gallery": str(tmp_path / "g")}))
    assert "examples" not in folder["GalleryIndexer"].inputs.inputs


def test_without_the_index_the_pipeline_and_its_cache_keys_are_as_before(tmp_path):
    off = small_config(tmp_path, tmp_path / "cars196", gallery_index={"enabled": False})
    nodes = compiled_nodes(off)
    assert "GalleryIndexer" not in nodes
    assert producers(nodes["Pusher"], "model") == {"Trainer"}
    assert producers(nodes["Pusher"], "model_blessing") == {"RecallEvaluator"}
    edited = compiled_nodes(off.replace(gallery_index={"nprobe": 4, "kind": "hnsw"}))
    assert {k: n.parameters for k, n in nodes.items()} == \
        {k: n.parameters for k, n in edited.items()}
    on = compiled_nodes(small_config(tmp_path, tmp_path / "cars196"))
    assert {k: n.parameters for k, n in nodes.items()} == \
        {k: n.parameters for k, n in on.items() if k != "GalleryIndexer"}
