"""Every dataset end to end: its sample data in the original layout, through the same
pipeline (RetrievalExampleGen, StatisticsGen, ImportSchemaGen, ExampleValidator, Transform,
a few Trainer steps, the RecallEvaluator: In-shop query against gallery, the others
all-vs-all).

One LocalDagRunner run per dataset, shared by the tests of that dataset (module fixture).
Cars196 has its own, deeper tests (test_pipeline_data.py and the end-to-end tests).
"""
from __future__ import annotations

import glob
import json
import os

import pytest
import tensorflow as tf

from tests.conftest import latest_output, small_config

# Slow tier: a pipeline run per dataset on its generated sample.
pytestmark = pytest.mark.slow

# 8 classes x 6 images: each dataset's protocol makes its own train/eval split of them.
SAMPLE = dict(num_classes=8, images_per_class=6, seed=5, corrupt=2)
# Two held-out classes: the least that can select a model (evaluator.min_eval_classes).
DATA = {
    # Class ranges as for Cars196 (CUB's standard split is 1-100 / 101-200).
    "cub200": {"train_classes": [1, 5], "eval_classes": [6, 8], "validation_classes": 2},
    # Split by the dataset's own files: the class ranges stay null.
    "sop": {"train_classes": None, "eval_classes": None, "validation_classes": 2},
    "inshop": {"train_classes": None, "eval_classes": None, "validation_classes": 2},
    "folder": {"train_classes": None, "eval_classes": None, "validation_classes": 2},
}
# The samples' splits hold 10-25 queries: these tests check the mechanics, not a verdict.
EVALUATOR = {"min_queries": 8}
TRAINER = {"epochs": 1, "steps_per_epoch": 3, "classes_per_batch": 2, "images_per_class": 2}


def read_examples(examples_uri: str, split: str) -> list[tf.train.Example]:
    out = []
    for path in sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "*.gz"))):
        for raw in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            out.append(tf.train.Example.FromString(raw.numpy()))
    return out


def feature(example, name):
    f = example.features.feature[name]
    return list(f.bytes_list.value or f.int64_list.value or f.float_list.value)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """dataset -> (dataset, config, sample summary) after one pipeline run on its sample,
    made on first use and shared by the module's tests."""
    done = {}

    def run(dataset):
        if dataset not in done:
            done[dataset] = _run(dataset, tmp_path_factory.mktemp(f"{dataset}_run"))
        return done[dataset]

    return run


def _run(dataset, root):
    from tfx import v1 as tfx

    from components.datasets.samples import make_sample_data
    from pipeline.definition import create_components, create_pipeline

    summary = make_sample_data(dataset, str(root / "source"), **SAMPLE)
    cfg = small_config(root, root / "source", data=dict(DATA[dataset], dataset=dataset),
                       trainer=TRAINER, evaluator=EVALUATOR)
    pipeline = create_pipeline(cfg)
    pipeline.components = create_components(cfg)[:7]  # up to the RecallEvaluator
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return dataset, cfg, summary


@pytest.fixture(params=sorted(DATA))
def dataset_run(request, runs):
    return runs(request.param)


def examples_properties(cfg) -> dict:
    """Custom properties of the RetrievalExampleGen artifact in the run's ML Metadata."""
    from tfx import v1 as tfx
    from tfx.orchestration import metadata
    store = metadata.Metadata(tfx.orchestration.metadata.sqlite_metadata_connection_config(
        cfg.pipeline.metadata_path))
    with store:
        [artifact] = [a for a in store.store.get_artifacts_by_type("Examples")
                      if "RetrievalExampleGen" in a.uri]
    return {k: v.int_value or v.string_value for k, v in artifact.custom_properties.items()}


def test_every_valid_image_once_in_class_disjoint_splits(dataset_run):
    dataset, cfg, summary = dataset_run
    examples = latest_output(cfg, "RetrievalExampleGen", "examples")
    classes, ids = {}, []
    for split in cfg.data.output_splits:
        rows = read_examples(examples, split)
        assert rows, f"{dataset}: split {split} is empty"
        classes[split] = {feature(e, "label")[0] for e in rows}
        ids += [feature(e, "image_id")[0].decode() for e in rows]
    assert len(ids) == len(set(ids))
    # Each valid image of the sample once (single-image classes would be skipped: none here).
    assert set(ids) == {image_id for image_id, *_ in summary_images(summary)}
    splits = list(classes)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            assert not classes[a] & classes[b], f"{dataset}: {a} and {b} share classes"


def summary_images(summary):
    """(image_id, ...) of the sample's valid images, whatever the generator's summary."""
    if hasattr(summary, "images"):
        return summary.images
    corrupt = {c.replace("cars_", "").replace(".jpg", "") for c in summary.corrupt}
    return [(f"{s}/{f[:-4]}",) for s, rows in (("train", summary.train), ("test", summary.test))
            for f, _ in rows if f"{s}/{f[:-4]}" not in corrupt]


def test_corrupt_files_are_counted_on_the_artifact(dataset_run):
    dataset, cfg, summary = dataset_run
    props = examples_properties(cfg)
    assert props["corrupt_images"] == SAMPLE["corrupt"] == len(summary.corrupt), dataset


def test_transform_and_a_few_training_steps_run(dataset_run):
    dataset, cfg, _ = dataset_run
    transformed = latest_output(cfg, "Transform", "transformed_examples")
    assert glob.glob(os.path.join(transformed, "Split-train", "*.gz")), dataset
    model = latest_output(cfg, "Trainer", "model")
    assert glob.glob(os.path.join(model, "**", "saved_model.pb"), recursive=True), dataset


def test_each_dataset_is_evaluated_with_its_protocol(dataset_run):
    dataset, cfg, _ = dataset_run
    with open(os.path.join(latest_output(cfg, "RecallEvaluator", "evaluation"),
                           "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["protocol"] == ("query/gallery" if dataset == "inshop" else "all-vs-all")
    assert 0.0 <= metrics["candidate"]["recall@1"] <= 1.0
    assert metrics["candidate"]["num_queries"] > 0


def test_inshop_eval_examples_carry_query_and_gallery_roles(runs):
    _, cfg, _ = runs("inshop")
    rows = read_examples(latest_output(cfg, "RetrievalExampleGen", "examples"), "eval")
    roles = {feature(e, "eval_role")[0] for e in rows}
    assert roles == {b"query", b"gallery"}


def test_inshop_is_evaluated_query_against_gallery(runs):
    _, cfg, _ = runs("inshop")
    evaluation = latest_output(cfg, "RecallEvaluator", "evaluation")
    with open(os.path.join(evaluation, "metrics.json")) as f:
        metrics = json.load(f)
    rows = read_examples(latest_output(cfg, "RetrievalExampleGen", "examples"), "eval")
    queries = sum(feature(e, "eval_role")[0] == b"query" for e in rows)
    gallery = sum(feature(e, "eval_role")[0] == b"gallery" for e in rows)
    candidate = metrics["candidate"]
    assert metrics["protocol"] == "query/gallery"
    assert candidate["num_queries"] == queries and candidate["num_gallery"] == gallery
