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
                                  split_rule=cfg.data.split_rule(cfg.evaluator),
                                  file_pattern="*")
    return {k: proto_utils.proto_to_json(v) if isinstance(v, message.Message) else v
            for k, v in component.exec_properties.items()}


@pytest.mark.slow
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


def _photo_jpegs(count: int) -> list[bytes]:
    """Photo-sized JPEGs (the real-size sample generator's images)."""
    from components.datasets import synthetic
    rng = np.random.default_rng(5)
    texture = synthetic.texture_tile(rng, side=512)
    out = []
    for i in range(count):
        width, height = synthetic.image_size(rng, real_size=True)
        image, _ = synthetic.draw_object(synthetic.class_look(i + 1, count, rng), rng, width,
                                         height, texture)
        out.append(synthetic.encode(image, "L" if i == 0 else "RGB", rng))
    return out


def test_the_decode_check_gives_a_full_decodes_verdict_on_damaged_images():
    """The check decodes JPEGs at 1/8 scale (every scan entropy-decoded, no full-size IDCT):
    on truncated and damaged photos it accepts and rejects exactly what a full decode does."""
    from components.example_gen import examples

    def full_decode_ok(data: bytes) -> bool:
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
            return True
        except Exception:
            return False

    rng = np.random.default_rng(0)
    rejected = 0
    for data in _photo_jpegs(4):
        reason, size = examples._decode_check(data)
        assert reason is None and size == Image.open(io.BytesIO(data)).size
        variants = [data[:int(rng.integers(1, len(data)))] for _ in range(30)]
        for _ in range(30):
            damaged = bytearray(data)
            start = int(rng.integers(0, len(data) - 64))
            damaged[start:start + int(rng.integers(1, 64))] = bytes(rng.integers(0, 256, 64)
                                                                    .astype(np.uint8))[:1]
            variants.append(bytes(damaged))
        for variant in variants:
            ok = full_decode_ok(variant)
            assert (examples._decode_check(variant)[0] is None) == ok
            rejected += not ok
    assert rejected > 50  # the variants do exercise the rejection


@pytest.mark.slow
def test_gzip_tfrecords_written_by_beam_read_back_at_every_level(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from components.example_gen import tfrecords

    records = [bytes([i % 256]) * (i * 37 % 5000) for i in range(300)]
    sizes = {}
    for level in (tfrecords.STORED, tfrecords.FAST, 6):
        prefix = str(tmp_path / f"level{level}" / "data_tfrecord")
        with beam.Pipeline() as pipeline:
            _ = (pipeline | beam.Create(records, reshuffle=False)
                 | tfrecords.WriteGzipTFRecords(prefix, level))
        files = tf.io.gfile.glob(prefix + "-*-of-*.gz")
        assert files
        back = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
        assert sorted(back) == sorted(records)
        with beam.Pipeline() as pipeline:  # Beam's own reader (TFXIO's) checks the CRCs too
            got = pipeline | beam.io.ReadFromTFRecord(prefix + "*") | beam.combiners.Count.Globally()
            assert_that(got, equal_to([len(records)]))
        sizes[level] = sum(os.path.getsize(f) for f in files)
    assert sizes[tfrecords.STORED] > sum(map(len, records)) > sizes[tfrecords.FAST]


@pytest.mark.slow
def test_examples_are_tf_examples_built_without_tensorflow():
    """ExampleGen's Beam code imports no TensorFlow (worker start-up), yet writes exactly
    the tf.train.Example TensorFlow would."""
    import subprocess
    import sys

    from components.datasets import records as R
    from components.example_gen import examples

    code = ("import sys; import components.example_gen.examples, components.example_gen."
            "tfrecords, components.example_gen.sources; "
            "sys.exit('tensorflow' in sys.modules or 'tfx' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    record = R.record("x.jpg", "train/00001", 4, "AM General Hummer SUV 2000",
                      bbox_pixels=(1, 2, 30, 40), source_split="train")
    ours = examples.to_example(record, b"\xff\xd8jpeg", (0.1, 0.2, 0.5, 1.0))
    theirs = tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\xff\xd8jpeg"])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[4])),
        "class_name": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[b"AM General Hummer SUV 2000"])),
        "bbox": tf.train.Feature(float_list=tf.train.FloatList(value=[0.1, 0.2, 0.5, 1.0])),
        "image_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"train/00001"])),
        "source_split": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"train"])),
        "eval_role": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b""])),
        "super_class": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b""])),
    }))
    assert tf.train.Example.FromString(ours.SerializeToString()) == theirs
    assert ours.SerializeToString(deterministic=True) == \
        theirs.SerializeToString(deterministic=True)


def test_small_inputs_run_in_process_on_the_direct_runner():
    from components.example_gen import local_beam

    configured = ["--direct_running_mode=multi_processing", "--direct_num_workers", "0",
                  "--pickle_library=cloudpickle"]
    small = local_beam.SMALL_INPUT_IMAGES - 1
    assert local_beam.args_for_input_size(configured, small) == [
        "--pickle_library=cloudpickle", "--direct_running_mode=in_memory",
        "--direct_num_workers=1"]
    assert local_beam.args_for_input_size(configured, small + 1) == configured
    dataflow = ["--runner=DataflowRunner", "--project=p"]
    assert local_beam.args_for_input_size(dataflow, 10) == dataflow


# ------------------------------------------------------------------ RecallEvaluator

@pytest.fixture(scope="module")
def eval_examples(tmp_path_factory):
    """A raw Examples artifact with an eval split: 4 classes x 6 images of distinct colours
    (24 queries: at least evaluator.min_queries)."""
    root = tmp_path_factory.mktemp("raw_examples")
    os.makedirs(root / "Split-eval")
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(root / "Split-eval" / "data.gz"), "GZIP") as writer:
        for label in range(4):
            base = rng.integers(0, 255, size=3)
            for i in range(6):
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
    from core import names

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
         names.CODE_FINGERPRINT_KEY: ""})
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    return blessing, metrics


def push(model, serving_model_dir, version):
    tf.io.gfile.makedirs(serving_model_dir)
    import shutil
    shutil.copytree(os.path.join(model.uri, "Format-Serving"),
                    os.path.join(serving_model_dir, str(version)))


@pytest.mark.slow
def test_recall_evaluator_blesses_the_first_model_on_the_threshold(tmp_path, eval_examples):
    model = stand_in_model(tmp_path / "model", seed=1)
    blessing, metrics = run_evaluator(tmp_path, eval_examples, model, tmp_path / "serving/cgd")
    assert blessing.get_int_custom_property("blessed") == 1
    assert os.path.exists(os.path.join(blessing.uri, "BLESSED"))
    assert metrics["production_version"] is None and "first model" in metrics["reason"]
    assert set(metrics["candidate"]) >= {"recall@1", "map@r", "nmi"}
    for name in ("verdict.txt", "rankings.png", "rankings.html"):
        assert (tmp_path / "evaluation" / name).stat().st_size > 0


@pytest.mark.slow
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


@pytest.mark.slow
def test_recall_evaluator_does_not_push_the_model_already_served(tmp_path, eval_examples):
    serving = tmp_path / "serving/cgd"
    candidate = stand_in_model(tmp_path / "model", seed=3)
    push(candidate, serving, 100)
    blessing, metrics = run_evaluator(tmp_path, eval_examples, candidate, serving)
    assert blessing.get_int_custom_property("blessed") == 0
    assert os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
    assert "ALREADY SERVING" in metrics["reason"] and metrics["production_version"] == 100


@pytest.mark.slow
def test_recall_evaluator_refuses_an_eval_split_of_one_class(tmp_path, eval_examples):
    """The issue's case: one eval class, every neighbour a match, Recall@1 1.0: once
    BLESSED on the threshold, now NOT BLESSED, naming the count, minimum and key."""
    one_class = tmp_path / "one_class"
    os.makedirs(one_class / "Split-eval")
    with tf.io.TFRecordWriter(str(one_class / "Split-eval" / "data.gz"), "GZIP") as writer:
        for raw in tf.data.TFRecordDataset(
                tf.io.gfile.glob(os.path.join(eval_examples.uri, "Split-eval", "*.gz")),
                compression_type="GZIP"):
            example = tf.train.Example.FromString(raw.numpy())
            example.features.feature["label"].int64_list.value[:] = [0]
            writer.write(example.SerializeToString())
    examples = artifact(standard_artifacts.Examples, one_class, split_names=["eval"])
    model = stand_in_model(tmp_path / "model", seed=1)
    blessing, metrics = run_evaluator(tmp_path, examples, model, tmp_path / "serving/cgd")
    assert metrics["candidate"]["recall@1"] == 1.0
    assert blessing.get_int_custom_property("blessed") == 0
    assert os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
    assert metrics["reason"].startswith("NOT BLESSED: the eval split has 1 class(es)")
    assert "evaluator.min_eval_classes 2" in metrics["reason"]
    assert metrics["can_judge"] is False and metrics["eval_split"]["num_classes"] == 1
    assert (tmp_path / "evaluation" / "verdict.txt").read_text().startswith("NOT BLESSED")


@pytest.mark.slow
def test_recall_evaluator_states_the_rule_and_the_detectable_difference(tmp_path,
                                                                         eval_examples):
    serving = tmp_path / "serving/cgd"
    push(stand_in_model(tmp_path / "prod", seed=6), serving, 200)
    blessing, metrics = run_evaluator(tmp_path, eval_examples,
                                      stand_in_model(tmp_path / "model", seed=7), serving)
    sig = metrics["significance"]
    assert sig["baseline_rule"] == "non_inferior" and sig["baseline_tolerance"] == 0.02
    assert sig["detectable_difference"] > 0
    assert f"detects differences of about {sig['detectable_difference']:.4f}" in (
        metrics["reason"])
    low = metrics["difference"]["intervals"]["recall@1"][0]
    # Non-inferiority: blessed exactly when the lower bound is within the tolerance.
    assert blessing.get_int_custom_property("blessed") == int(low >= -0.02)


# ------------------------------------------------------------------ Trainer

def test_trainer_refuses_a_validation_split_it_cannot_select_on(tmp_path):
    from core.config import TrainerJob
    from tests.trainer.test_streaming_sampler import write_split
    from trainer import task

    cfg = small_config(tmp_path, tmp_path / "source", trainer={"epochs": 1,
                                                               "steps_per_epoch": 1})
    job = TrainerJob.of(cfg)
    assert (job.validation_classes, job.min_valid_classes, job.min_valid_queries) == (3, 2, 20)
    train = write_split(tmp_path / "train", np.repeat([0, 1, 2, 3], 4), size=32, shards=1)
    one_class = write_split(tmp_path / "one", np.repeat([7], 30), size=32, shards=1)
    with pytest.raises(ValueError, match=r"the validation split \('valid', "
                       r"data.validation_classes 3\) has 1 class\(es\) and 30 queries.*"
                       r"at least 2 classes \(evaluator.min_eval_classes\)"):
        task.train(job, [train], [one_class], str(tmp_path / "run"))
    few = write_split(tmp_path / "few", np.repeat([7, 8, 9], 3), size=32, shards=1)
    with pytest.raises(ValueError, match=r"3 class\(es\) and 9 queries.*20 queries "
                                         r"\(evaluator.min_queries\).*data.validation_classes"):
        task.train(job, [train], [few], str(tmp_path / "run"))
    # data.validation_classes 0: selection on the training split, as before, with a warning.
    task.check_selection_split(TrainerJob.of(cfg.replace(data={"validation_classes": 0})),
                               np.repeat([0], 4))
    task.check_selection_split(job, np.repeat([7, 8], 10))  # 2 classes, 20 queries: enough


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
