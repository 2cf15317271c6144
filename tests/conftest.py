"""Shared fixtures. TFT 1.16 needs Keras 2: set before TensorFlow is imported.

All data is generated here (`make_sample_data`); nothing is downloaded.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

# Fixtures, by name, that run a pipeline, start a server or a stand-in (KFP, Vertex, GCS),
# spawn a process or generate sample archives. A test using one, directly or through
# another fixture, belongs to the slow tier; collection fails if it is not marked slow, so
# that `make test-fast` cannot silently grow slow tests. tests/test_architecture.py keeps
# this list in step with the fixtures defined under tests/.
SLOW_FIXTURES = frozenset({
    "sample_data", "data_pipeline",                   # here: sample archives, a pipeline run
    "server", "servers", "vertex", "cluster",         # model/search servers, KFP/Vertex/GCS
    "kfp_runs", "kfp_split_change", "runs",           # pipelines on the KFP stand-in or local
    "fake_tfx", "fake_tensorflow",                    # scripts run in a subprocess
    "sample", "folders", "csv_sample",                # per-dataset generated sample archives
})


def unmarked_slow_tests(items) -> list[str]:
    """'<test id> uses <fixtures>' for each test not marked slow that uses a slow fixture."""
    found = []
    for item in items:
        used = SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if used and item.get_closest_marker("slow") is None:
            found.append(f"{item.nodeid} uses {', '.join(sorted(used))}")
    return found


# tryfirst: before `-m "not slow"` deselects, so the fast tier's own run checks every test.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    unmarked = unmarked_slow_tests(items)
    if unmarked:
        raise pytest.UsageError(
            "these tests use a slow fixture (tests/conftest.py SLOW_FIXTURES) but are not "
            "marked @pytest.mark.slow:\n  " + "\n  ".join(unmarked))

# Models for the retraining tests, whose quality difference is by construction, not luck:
# with the backbone's caffe preprocessing, black padding is a strong constant that
# dominates a random-init network's features (the reason transform.pad_value defaults to
# the ImageNet mean), so its embedding mostly encodes the images' aspect ratios. Measured
# on 48 eval queries: Recall@1 0.27 with black padding against 0.33 with the ImageNet mean,
# told apart on RETRAIN_SAMPLE's 144 queries. (Training 100 steps on 7 classes does not beat
# random features on this tiny data: 0.23-0.27.)
# The random-init network, nearly: one step at lr 1e-6 (its BatchNorm statistics move a
# little with the data, so two runs on different spans rank a little differently).
UNTRAINED = {"epochs": 1, "steps_per_epoch": 1, "learning_rate": 1e-6}
BLACK_PADDING = {"pad_value": [0, 0, 0]}


# Small but class-structured: 16 classes x 8 images, 2 corrupt files.
# Retrieval split in small_config: train classes 1-7, valid 8-10, eval 11-16.
SAMPLE = dict(num_classes=16, images_per_class=8, seed=7, corrupt=2)
# The retraining tests compare two models on the eval split: 24 images per class give 144
# eval queries (48 with SAMPLE could not tell these models apart even at 50% confidence).
RETRAIN_SAMPLE = dict(SAMPLE, images_per_class=24)


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory):
    from components.datasets.cars196.sample import make_sample_data
    out = tmp_path_factory.mktemp("cars196_sample")
    return make_sample_data(out, **SAMPLE)


def small_config(tmp_path, source_dir, **sections):
    """A validated Config for tests: small images, tmp dirs, DirectRunner in-process."""
    from core.config import load_config
    overrides = {
        "pipeline": {"name": "cgd-test", "root": str(tmp_path / "pipelines"),
                     "metadata_path": str(tmp_path / "metadata.sqlite"),
                     "serving_dir": str(tmp_path / "serving"),
                     "beam_args": ["--direct_num_workers=1"]},
        "data": {"source_dir": str(source_dir), "train_classes": [1, 10],
                 "eval_classes": [11, 16], "validation_classes": 3},
        "transform": {"image_size": 32},
        # Random init: BatchNorm statistics must train (freezing is for pretrained weights).
        "trainer": {"backbone": "small", "backbone_weights": "none", "input_size": 0,
                    "freeze_batchnorm": False,
                    "lr_schedule": "constant", "embedding_dim": 32, "classes_per_batch": 4,
                    "images_per_class": 4, "learning_rate": 0.001, "epochs": 4,
                    "steps_per_epoch": 25, "early_stopping_patience": 0},
    }
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    return load_config(None, overrides)


def latest_output(cfg, component, output):
    """URI of the newest artifact a component wrote; fails the test if there is none."""
    from pipeline.artifacts import newest_output
    uri = newest_output(cfg, component, output)
    assert uri, f"{component} wrote no {output} artifact"
    return uri


@pytest.fixture(scope="session")
def data_pipeline(sample_data, tmp_path_factory):
    """One LocalDagRunner run of ExampleGen -> ... -> Transform, shared by tests."""
    from tfx import v1 as tfx

    from pipeline.definition import create_components, create_pipeline
    cfg = small_config(tmp_path_factory.mktemp("data_pipeline"), sample_data.out_dir)
    pipeline = create_pipeline(cfg)
    pipeline.components = create_components(cfg)[:5]  # up to Transform
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return cfg
