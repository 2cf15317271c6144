"""Trainer: learning on sample data, the exported signatures, run_fn helpers."""
import glob
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from PIL import Image

from components.preprocessing import image_ops
from core.config import TrainerJob
from trainer import export, sampler, task
from trainer.model import embedding_model
from tests.conftest import latest_output


def split_files(cfg, split):
    return [os.path.join(latest_output(cfg, "Transform", "transformed_examples"),
                         f"Split-{split}", "*.gz")]


@pytest.fixture(scope="module")
def trained(data_pipeline, tmp_path_factory):
    cfg = data_pipeline
    run_dir = tmp_path_factory.mktemp("model_run")
    model, validation = task.train(TrainerJob.of(cfg), split_files(cfg, "train"),
                                   split_files(cfg, "valid"), str(run_dir))
    return cfg, model, validation, run_dir


@pytest.mark.slow
def test_training_raises_validation_recall_above_untrained(trained):
    cfg, model, validation, run_dir = trained
    assert len(validation.history) == cfg.trainer.epochs
    assert validation.best > validation.untrained, (validation.untrained, validation.history)
    # The restored weights are the best epoch's: re-measuring gives the best value.
    assert validation.recall_at_1() == pytest.approx(validation.best)
    assert glob.glob(os.path.join(run_dir, "**", "events.out.tfevents*"), recursive=True)


@pytest.mark.slow
def test_exported_signature_on_jpeg_bytes_equals_the_in_memory_model(trained, tmp_path):
    cfg, model, _, _ = trained
    tft_output = tft.TFTransformOutput(latest_output(cfg, "Transform", "transform_graph"))
    export.export_saved_model(embedding_model(model), tft_output, str(tmp_path / "export"),
                              cfg.transform.image_size, cfg.transform.pad_value)
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    rng = np.random.default_rng(0)
    jpegs = []
    for h, w in [(40, 70), (90, 50), (33, 33)]:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8)).save(buf, "JPEG")
        jpegs.append(buf.getvalue())
    served = loaded.signatures["serving_default"](images=tf.constant(jpegs))["embedding"].numpy()
    pixels = image_ops.preprocess_bytes(tf.constant(jpegs), cfg.transform.image_size,
                                        cfg.transform.pad_value)
    direct = model.predict(tf.cast(pixels, tf.float32), verbose=0)["embedding"]
    assert served.shape == (3, cfg.trainer.embedding_dim) and served.dtype == np.float32
    np.testing.assert_allclose(served, direct, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    # The uint8 pixel signature pads and resizes the same way.
    decoded = tf.io.decode_jpeg(jpegs[0], channels=3)[None]
    by_pixels = loaded.signatures[export.PIXELS_SIGNATURE](pixels=decoded)["embedding"].numpy()
    np.testing.assert_allclose(by_pixels[0], served[0], atol=1e-5)


@pytest.mark.slow
def test_checkpoint_dir_is_stable_and_keyed_by_config_and_data(data_pipeline):
    job = TrainerJob.of(data_pipeline)
    a = task.checkpoint_dir("/ckpt", job, ["b", "a"])
    assert a == task.checkpoint_dir("/ckpt", job, ["a", "b"])
    assert a != task.checkpoint_dir("/ckpt", TrainerJob.of(data_pipeline.replace(
        trainer={"epochs": 9})), ["a", "b"])
    assert a != task.checkpoint_dir("/ckpt", job, ["c"])


def test_strategy_from_environment(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert isinstance(task.choose_strategy(), type(tf.distribute.get_strategy()))
    assert task.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["localhost:1", "localhost:2"]},
         "task": {"type": "worker", "index": 1}}))
    assert not task.is_chief()


@pytest.mark.slow
def test_validation_split_is_never_the_eval_classes(data_pipeline):
    from pipeline.definition import create_components
    [trainer] = [c for c in create_components(data_pipeline) if c.id == "Trainer"]
    eval_args = trainer.exec_properties["eval_args"]
    assert "valid" in str(eval_args) and "eval" not in str(eval_args).replace("EvalArgs", "")
    data = sampler.load_image_set(split_files(data_pipeline, "valid"), 32)
    assert {data_pipeline.data.split_of_class(int(c) + 1) for c in data.labels} == {"valid"}


@pytest.mark.slow
def test_model_selection_state_survives_a_restart(data_pipeline, tmp_path):
    """A resumed run keeps the best epoch found before the interruption."""
    cfg = data_pipeline.replace(trainer={"epochs": 1, "steps_per_epoch": 2})
    state = str(tmp_path / "selection")
    valid = sampler.load_image_set(split_files(cfg, "valid"), cfg.transform.image_size)
    model = task.build_model(cfg.trainer, cfg.data.num_train_classes, cfg.transform.image_size)
    first = task.ValidationRecall(valid, patience=0, state_dir=state)
    first.set_model(model)
    first.set_params({"epochs": 1})
    first.on_train_begin()
    first.on_epoch_end(0, {})
    assert os.path.exists(os.path.join(state, "best.json"))
    # Another process resumes: the best epoch and its weights come back from disk.
    model.set_weights([w * 0 for w in model.get_weights()])
    second = task.ValidationRecall(valid, patience=0, state_dir=state)
    second.set_model(model)
    second.on_train_begin()
    assert (second.best, second.best_epoch, second.history) == (
        first.best, first.best_epoch, first.history)
    second.on_train_end()
    for restored, saved in zip(model.get_weights(), first.best_weights):
        np.testing.assert_array_equal(restored, saved)
    assert not os.path.exists(state)  # finished: nothing left to resume


@pytest.mark.slow
def test_export_contract_names_the_classes_trained_and_validated_on(trained, tmp_path):
    from components.recall_evaluator import production
    from components.recall_evaluator.embedding import read_class_names
    from core.names import CONTRACT_CLASSES_KEY, CONTRACT_FILE

    cfg, model, _, _ = trained
    tft_output = tft.TFTransformOutput(latest_output(cfg, "Transform", "transform_graph"))
    task.export_model(model, TrainerJob.of(cfg), tft_output, str(tmp_path / "export"),
                      split_files(cfg, "train"), split_files(cfg, "valid"))
    # The names as RetrievalExampleGen wrote them on the raw examples of each split
    # (Transform passes them through to what the Trainer reads).
    raw = latest_output(cfg, "RetrievalExampleGen", "examples")
    expected = {s: sorted(set(read_class_names(raw, s))) for s in ("train", "valid", "eval")}
    assert len(expected["train"]) == 7 and len(expected["valid"]) == 3  # classes 1-7, 8-10
    with open(tmp_path / "export" / "assets.extra" / CONTRACT_FILE) as f:
        seen = json.load(f)[CONTRACT_CLASSES_KEY]
    assert seen["train"] == expected["train"] and seen["valid"] == expected["valid"]
    assert seen["digest"] == export.seen_classes_entry(expected["train"],
                                                       expected["valid"])["digest"]
    known = production.seen_classes(str(tmp_path / "export"))
    assert known == set(expected["train"]) | set(expected["valid"])
    assert not known & set(expected["eval"])
