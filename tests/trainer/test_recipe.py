"""The reference recipe's mechanics: crops, schedule, early stopping, resume, recipe configs."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components.preprocessing import image_ops
from trainer import augmentation, sampler, task
from tests.support.paths import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"


def test_native_random_crops_are_exact_windows_of_the_stored_image():
    images = np.random.default_rng(0).integers(0, 256, (6, 20, 20, 3)).astype(np.uint8)
    crops = augmentation.augment(tf.constant(images), tf.constant([3, 4], tf.int64),
                            random_crop=True, random_flip=False, crop_size=12).numpy()
    assert crops.shape == (6, 12, 12, 3)
    offsets = set()
    for image, crop in zip(images, crops):
        found = [(y, x) for y in range(9) for x in range(9)
                 if np.allclose(image[y:y + 12, x:x + 12], crop, atol=1e-3)]
        assert found, "a crop is not a window of its image at native resolution"
        offsets.add(found[0])
    assert len(offsets) > 1  # random places, not one fixed window


def test_without_random_crop_training_sees_the_centre_view_as_evaluation_does():
    images = np.random.default_rng(1).integers(0, 256, (2, 20, 20, 3)).astype(np.uint8)
    view = augmentation.augment(tf.constant(images), tf.constant([1, 2], tf.int64),
                           random_crop=False, random_flip=False, crop_size=12).numpy()
    np.testing.assert_array_equal(view, images[:, 4:16, 4:16].astype(np.float32))
    np.testing.assert_array_equal(image_ops.center_crop(images, 12).numpy(), images[:, 4:16, 4:16])


def test_a_resumed_pk_stream_continues_where_it_stopped():
    labels = np.repeat(np.arange(10), 5)
    whole = list(itertools.islice(sampler.pk_index_batches(labels, 4, 3, seed=9), 12))
    resumed = list(itertools.islice(sampler.pk_index_batches(labels, 4, 3, seed=9,
                                                             start_step=7), 5))
    for a, b in zip(whole[7:], resumed):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(whole[0], resumed[0])


@pytest.mark.parametrize("box, margin, expected", [
    ([0.0, 0.0, 1.0, 1.0], 0.0, (slice(0, 40), slice(0, 60))),
    ([0.25, 0.5, 0.75, 1.0], 0.0, (slice(10, 30), slice(30, 60))),
    ([0.25, 0.5, 0.75, 0.75], 0.2, (slice(6, 34), slice(27, 48))),   # widened by 20%
    ([0.5, 0.5, 0.5, 0.5], 0.0, (slice(20, 21), slice(30, 31))),     # at least one pixel
])
def test_crop_to_box_takes_the_annotated_box_with_its_margin(box, margin, expected):
    image = np.arange(40 * 60 * 3, dtype=np.int32).reshape(40, 60, 3)
    cropped = image_ops.crop_to_box(tf.constant(image), tf.constant(box), margin).numpy()
    np.testing.assert_array_equal(cropped, image[expected])


def test_the_cropped_protocol_crops_before_padding_in_transform():
    from components.preprocessing.tft_module import preprocessing_fn

    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[10:30, 20:60] = 200  # the "car": a bright box in a dark photo
    jpeg = tf.io.encode_png(pixels)
    inputs = {"image": tf.reshape(jpeg, [1, 1]),
              "bbox": tf.constant([[0.25, 0.25, 0.75, 0.75]], tf.float32)}
    from core.config import TransformJob, load_config
    from core.names import TRANSFORM_JOB_KEY

    def custom_config(crop):
        cfg = load_config(overrides={"transform": {"image_size": 16, "pad_value": [0, 0, 0],
                                                   "crop": crop, "crop_margin": 0.0},
                                     "trainer": {"input_size": 16}})
        return {TRANSFORM_JOB_KEY: TransformJob.of(cfg).to_dict()}  # as the pipeline gives it

    whole = image_ops.parse_images(preprocessing_fn(inputs, custom_config("none"))["image_u8"], 16)
    cropped = image_ops.parse_images(preprocessing_fn(
        inputs, custom_config("bbox"))["image_u8"], 16)
    # Cropped: the box is half of its padded square; whole: an eighth of the photo's.
    assert cropped.numpy().mean() == pytest.approx(100, abs=8)
    assert whole.numpy().mean() == pytest.approx(25, abs=8)


def test_step_schedule_divides_by_ten_at_60_and_80_percent():
    from core.config import load_config

    t = load_config(None, {"trainer": {"epochs": 10, "steps_per_epoch": 10,
                                       "learning_rate": 1.0}}).trainer
    lr = task.learning_rate_schedule(t)
    values = {step: float(lr(step)) for step in (0, 60, 61, 80, 81, 99)}  # steps done so far
    assert values == pytest.approx({0: 1.0, 60: 1.0, 61: 0.1, 80: 0.1, 81: 0.01, 99: 0.01})


class _FakeModel:
    stop_training = False


@pytest.mark.parametrize("no_stop_before, stopped_after", [(0, 3), (6, 6)])
def test_early_stopping_waits_for_the_first_learning_rate_drop(no_stop_before, stopped_after,
                                                               monkeypatch):
    valid = sampler.ImageSet(np.zeros((4, 8, 8, 3), np.uint8), np.arange(4))
    callback = task.ValidationRecall(valid, patience=2, no_stop_before_epoch=no_stop_before)
    callback.model, callback.params = _FakeModel(), {"epochs": 10}
    scores = iter([0.5] + [0.4] * 9)  # best at epoch 1, no improvement after
    monkeypatch.setattr(callback, "recall_at_1", lambda: next(scores))
    monkeypatch.setattr(_FakeModel, "get_weights", lambda self: [], raising=False)
    for epoch in range(10):
        callback.on_epoch_end(epoch, {"loss": 1.0})
        if callback.model.stop_training:
            break
    assert epoch + 1 == stopped_after


@pytest.mark.parametrize("name", ["cars196_uncropped.yaml", "cars196_cropped.yaml"])
def test_recipe_configs_load_and_are_leftthomas_recipe(name):
    from core.config import load_config

    cfg = load_config(CONFIGS / name)
    t = cfg.trainer
    assert (t.backbone, t.backbone_weights, t.descriptors, t.embedding_dim) == (
        "resnet50", "imagenet", "SG", 1536)
    assert (t.classes_per_batch, t.images_per_class, t.learning_rate, t.epochs) == (
        32, 4, 1e-4, 20)
    assert t.lr_schedule == "step" and t.freeze_batchnorm and not t.freeze_batchnorm_affine
    assert t.loss == {"name": "batch_hard", "margin": 0.1}  # CGD's batch-hard triplet
    assert (cfg.transform.image_size, t.input_size) == (252, 224)
    assert cfg.transform.crop == ("bbox" if "cropped" in name and "un" not in name else "none")


@pytest.mark.parametrize("name", ["cars196_uncropped.yaml", "cars196_cropped.yaml"])
def test_recipe_configs_compile_for_kubeflow(name, tmp_path):
    from core.config import load_config
    from pipeline.kubeflow_runner import compile_for_kubeflow

    cfg = load_config(CONFIGS / name).replace(
        data={"source_dir": "gs://cgd-test/cars196"},
        pipeline={"serving_dir": "gs://cgd-test/serving"},
        kubeflow={"image": "registry.example/cgd:1", "pipeline_root": "gs://cgd-test/root"})
    job = compile_for_kubeflow(cfg, None, str(tmp_path / "pipeline.json"))
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    transform = tasks["Transform"]["inputs"]["parameters"]["custom_config"]
    assert f'"crop": "{cfg.transform.crop}"' in transform["runtimeValue"]["constant"]
    assert job["pipelineSpec"]["schemaVersion"] == "2.1.0"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cars196_uncropped.yaml", "cars196_cropped.yaml"])
def test_recipe_configs_train_a_few_steps_with_a_small_backbone(name, data_pipeline, tmp_path):
    """The recipe's training path (native crops of the stored image, frozen BN statistics,
    step schedule) on the session's transformed sample data, with a small backbone."""
    import glob
    import os

    from core.config import TrainerJob, load_config
    from tests.conftest import latest_output

    stored = data_pipeline.transform.image_size
    cfg = load_config(CONFIGS / name).replace(
        data=dict(train_classes=data_pipeline.data.train_range,
                  eval_classes=data_pipeline.data.eval_range,
                  validation_classes=data_pipeline.data.validation_classes),
        transform={"image_size": stored},
        trainer={"backbone": "small", "backbone_weights": "none", "input_size": stored - 8,
                 "embedding_dim": 32, "classes_per_batch": 4, "images_per_class": 4,
                 "epochs": 2, "steps_per_epoch": 2})
    transformed = latest_output(data_pipeline, "Transform", "transformed_examples")
    files = {split: glob.glob(os.path.join(transformed, f"Split-{split}", "*.gz"))
             for split in ("train", "valid")}
    model, validation = task.train(TrainerJob.of(cfg), files["train"], files["valid"],
                                   str(tmp_path / "run"))
    assert model.input_shape == (None, stored - 8, stored - 8, 3)
    assert len(validation.history) == 2 and 0 <= validation.best <= 1
