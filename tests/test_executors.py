"""Each custom executor and driver called directly (TFX's executor_test.py style).

Real artifacts in a temp dir, no orchestrator: ``Executor().Do(inputs, outputs,
exec_properties)`` exactly as the launcher calls it.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils, standard_artifacts

from tests.conftest import SAMPLE, small_config


def beam_context(tmp_path, name):
    return base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=["--direct_num_workers=1"], tmp_dir=str(tmp_path / f"{name}-tmp"),
        unique_id=name)


def artifact(cls, uri, **splits):
    a = cls()
    a.uri = str(uri)
    if splits.get("split_names"):
        a.split_names = artifact_utils.encode_split_names(splits["split_names"])
    return a


# ------------------------------------------------------------------ RetrievalExampleGen

def example_gen_exec_properties(cfg) -> dict:
    """The component's execution properties as the launcher passes them (protos as JSON)."""
    from google.protobuf import message
    from tfx.utils import proto_utils

    from components.example_gen.component import RetrievalExampleGen

    component = RetrievalExampleGen(source_dir=cfg.data.source_dir,
                                  split_rule=cfg.data.split_rule(), file_pattern="*")
    return {k: proto_utils.proto_to_json(v) if isinstance(v, message.Message) else v
            for k, v in component.exec_properties.items()}


def test_cars196_example_gen_executor_writes_class_disjoint_splits_and_counts(
        sample_data, tmp_path):
    from components.example_gen.executor import Executor

    cfg = small_config(tmp_path, sample_data.out_dir)
    examples = artifact(standard_artifacts.Examples, tmp_path / "examples")
    Executor(beam_context(tmp_path, "gen")).Do(
        {}, {"examples": [examples]}, example_gen_exec_properties(cfg))

    assert artifact_utils.decode_split_names(examples.split_names) == ["train", "valid", "eval"]
    labels_by_split, total = {}, 0
    for split in ("train", "valid", "eval"):
        files = tf.io.gfile.glob(os.path.join(examples.uri, f"Split-{split}", "*.gz"))
        records = list(tf.data.TFRecordDataset(files, compression_type="GZIP"))
        labels = {tf.train.Example.FromString(r.numpy()).features.feature["label"]
                  .int64_list.value[0] + 1 for r in records}
        labels_by_split[split] = labels
        assert examples.get_int_custom_property(f"num_examples_{split}") == len(records)
        total += len(records)
    assert labels_by_split == {"train": set(range(1, 8)), "valid": {8, 9, 10},
                               "eval": set(range(11, 17))}
    assert total == SAMPLE["num_classes"] * SAMPLE["images_per_class"]
    assert examples.get_int_custom_property("corrupt_images") == SAMPLE["corrupt"]


# ------------------------------------------------------------------ RecallEvaluator

@pytest.fixture(scope="module")
def eval_examples(tmp_path_factory):
    """A raw Examples artifact with an eval split: 4 classes x 3 images of distinct colours."""
    root = tmp_path_factory.mktemp("raw_examples")
    os.makedirs(root / "Split-eval")
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(root / "Split-eval" / "data.gz"), "GZIP") as writer:
        for label in range(4):
            base = rng.integers(0, 255, size=3)
            for i in range(3):
                pixels = np.clip(base + rng.normal(0, 8, (24, 32, 3)), 0, 255).astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, "JPEG")
                writer.write(tf.train.Example(features=tf.train.Features(feature={
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[buffer.getvalue()])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                    "image_id": tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[f"test/{label}{i}".encode()])),
                })).SerializeToString())
    return artifact(standard_artifacts.Examples, root, split_names=["eval"])


def stand_in_model(path, seed):
    from serving.standin import write_stand_in_model
    write_stand_in_model(str(path / "Format-Serving"), size=16, dim=32, seed=seed)
    return artifact(standard_artifacts.Model, path)


def run_evaluator(tmp_path, examples, model, serving_model_dir, **evaluator):
    from components.recall_evaluator import constants
    from components.recall_evaluator.executor import Executor

    cfg = small_config(tmp_path, tmp_path, evaluator=dict({"ranking_queries": 3}, **evaluator))
    blessing = artifact(standard_artifacts.ModelBlessing, tmp_path / "blessing")
    evaluation = artifact(standard_artifacts.ModelEvaluation, tmp_path / "evaluation")
    for a in (blessing, evaluation):
        os.makedirs(a.uri)
    Executor(beam_context(tmp_path, "eval")).Do(
        {"examples": [examples], "model": [model]},
        {"blessing": [blessing], "evaluation": [evaluation]},
        {constants.EVALUATOR_JSON_KEY: json.dumps(dataclasses.asdict(cfg.evaluator)),
         constants.EVAL_SPLIT_KEY: "eval", constants.SERVING_MODEL_DIR_KEY: str(serving_model_dir),
         constants.CODE_FINGERPRINT_KEY: ""})
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    return blessing, metrics


def push(model, serving_model_dir, version):
    tf.io.gfile.makedirs(serving_model_dir)
    import shutil
    shutil.copytree(os.path.join(model.uri, "Format-Serving"),
                    os.path.join(serving_model_dir, str(version)))


def test_recall_evaluator_blesses_the_first_model_on_the_threshold(tmp_path, eval_examples):
    model = stand_in_model(tmp_path / "model", seed=1)
    blessing, metrics = run_evaluator(tmp_path, eval_examples, model, tmp_path / "serving/cgd")
    assert blessing.get_int_custom_property("blessed") == 1
    assert os.path.exists(os.path.join(blessing.uri, "BLESSED"))
    assert metrics["production_version"] is None and "first model" in metrics["reason"]
    assert set(metrics["candidate"]) >= {"recall@1", "map@r", "nmi"}
    for name in ("verdict.txt", "rankings.png", "rankings.html"):
        assert (tmp_path / "evaluation" / name).stat().st_size > 0


def test_recall_evaluator_compares_with_the_newest_served_version(tmp_path, eval_examples):
    serving = tmp_path / "serving/cgd"
    push(stand_in_model(tmp_path / "old", seed=5), serving, 100)
    push(stand_in_model(tmp_path / "prod", seed=6), serving, 200)
    os.makedirs(serving / "300")  # a version still being copied: no saved_model.pb yet
    candidate = stand_in_model(tmp_path / "model", seed=7)
    blessing, metrics = run_evaluator(tmp_path, eval_examples, candidate, serving,
                                      baseline_tolerance=1.0)
    assert metrics["production_version"] == 200
    assert metrics["baseline_model"] == str(serving / "200")
    assert "baseline" in metrics and blessing.get_int_custom_property("blessed") == 1
    assert blessing.get_int_custom_property("baseline_version") == 200


def test_recall_evaluator_does_not_push_the_model_already_served(tmp_path, eval_examples):
    serving = tmp_path / "serving/cgd"
    candidate = stand_in_model(tmp_path / "model", seed=3)
    push(candidate, serving, 100)
    blessing, metrics = run_evaluator(tmp_path, eval_examples, candidate, serving)
    assert blessing.get_int_custom_property("blessed") == 0
    assert os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
    assert "ALREADY SERVING" in metrics["reason"] and metrics["production_version"] == 100


def test_production_driver_keys_the_evaluator_cache_on_the_served_model(tmp_path):
    from tfx.orchestration.portable import data_types

    from components.recall_evaluator import constants
    from components.recall_evaluator.driver import ProductionModelDriver

    serving = tmp_path / "serving/cgd"

    def fingerprint():
        info = data_types.ExecutionInfo(exec_properties={
            constants.SERVING_MODEL_DIR_KEY: str(serving)})
        out = ProductionModelDriver(None).run(info)
        return out.exec_properties[constants.PRODUCTION_FINGERPRINT_KEY].string_value

    assert fingerprint() == ""
    model = stand_in_model(tmp_path / "a", seed=1)
    push(model, serving, 1)
    first = fingerprint()
    push(model, serving, 2)  # the same model pushed again: a copy of the same files
    assert first and fingerprint() == first
    push(stand_in_model(tmp_path / "b", seed=2), serving, 3)
    assert fingerprint() not in ("", first)
