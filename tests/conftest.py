"""Shared fixtures. TFT 1.16 needs Keras 2: set before TensorFlow is imported.

All data is generated here (`make_sample_data`); nothing is downloaded.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

# Small but class-structured: 8 classes x 6 images, 2 corrupt files.
SAMPLE = dict(num_classes=8, images_per_class=6, seed=7, corrupt=2)


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory):
    from components.cars196.sample_data import make_sample_data
    out = tmp_path_factory.mktemp("cars196_sample")
    return make_sample_data(out, **SAMPLE)


def small_config(tmp_path, source_dir, **sections):
    """A validated Config for tests: small images, tmp dirs, DirectRunner in-process."""
    from pipeline.config import load_config
    overrides = {
        "pipeline": {"name": "cgd-test", "root": str(tmp_path / "pipelines"),
                     "metadata_path": str(tmp_path / "metadata.sqlite"),
                     "serving_dir": str(tmp_path / "serving"),
                     "beam_args": ["--direct_num_workers=1"]},
        "data": {"source_dir": str(source_dir), "train_classes": [1, 5],
                 "eval_classes": [6, 8], "validation_classes": 2},
        "transform": {"image_size": 32},
        "trainer": {"backbone": "small", "embedding_dim": 32, "classes_per_batch": 3,
                    "images_per_class": 2, "epochs": 1, "steps_per_epoch": 2},
    }
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    return load_config(None, overrides)
