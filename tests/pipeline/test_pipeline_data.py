"""LocalDagRunner: RetrievalExampleGen -> StatisticsGen -> ImportSchemaGen ->
ExampleValidator -> Transform on small generated sample data."""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx import v1 as tfx
from tfx.orchestration import metadata

from components.preprocessing import image_ops
from pipeline.definition import create_components, create_pipeline
from tests.conftest import SAMPLE, latest_output, small_config

# Slow tier: the data pipeline (ExampleGen to Transform) on the sample data.
pytestmark = pytest.mark.slow


def read_examples(uri_glob):
    files = sorted(glob.glob(uri_glob)) if isinstance(uri_glob, str) else uri_glob
    assert files, f"no TFRecords under {uri_glob}"
    return [tf.train.Example.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def _feature(example, key):
    f = example.features.feature[key]
    return list(f.bytes_list.value or f.int64_list.value or f.float_list.value)


@pytest.fixture(scope="module")
def data_run(data_pipeline):
    return data_pipeline


_latest = latest_output


def test_every_valid_image_once_in_class_disjoint_splits(data_run, sample_data):
    cfg = data_run
    examples_uri = _latest(cfg, "RetrievalExampleGen", "examples")
    seen, classes_by_split = [], {}
    for split in ("train", "valid", "eval"):
        examples = read_examples(os.path.join(examples_uri, f"Split-{split}", "*.gz"))
        labels = {_feature(e, "label")[0] + 1 for e in examples}
        classes_by_split[split] = labels
        assert {cfg.data.split_of_class(c) for c in labels} == {split}
        seen += [_feature(e, "image_id")[0].decode() for e in examples]
        for e in examples:
            assert _feature(e, "source_split")[0] in (b"train", b"test")
            assert len(_feature(e, "bbox")) == 4
    assert len(seen) == len(set(seen)) == sample_data.num_valid
    corrupt_ids = {c.replace("cars_", "").replace(".jpg", "") for c in sample_data.corrupt}
    assert not corrupt_ids & set(seen)
    assert classes_by_split == {"train": set(range(1, 8)), "valid": {8, 9, 10},
                                "eval": set(range(11, 17))}


def test_counts_per_split_and_corrupt_recorded_on_the_artifact(data_run, sample_data):
    cfg = data_run
    store = metadata.Metadata(tfx.orchestration.metadata.sqlite_metadata_connection_config(
        cfg.pipeline.metadata_path))
    with store:
        [artifact] = [a for a in store.store.get_artifacts_by_type("Examples")
                      if "RetrievalExampleGen" in a.uri]
    props = {k: v.int_value or v.string_value for k, v in artifact.custom_properties.items()}
    per_class = SAMPLE["images_per_class"]  # corrupt files are extra, so classes stay full
    expected = {"train": 7 * per_class, "valid": 3 * per_class, "eval": 6 * per_class}
    assert props["corrupt_images"] == SAMPLE["corrupt"] == len(sample_data.corrupt)
    for split, n in expected.items():
        assert props[f"num_examples_{split}"] == n
    assert set(props["corrupt_files"].split(",")) == set(sample_data.corrupt)


def test_transform_output_is_the_padded_resized_image(data_run):
    cfg = data_run
    size = cfg.transform.image_size
    raw = {_feature(e, "image_id")[0]: e for e in read_examples(
        os.path.join(_latest(cfg, "RetrievalExampleGen", "examples"), "Split-eval", "*.gz"))}
    transformed = read_examples(os.path.join(
        _latest(cfg, "Transform", "transformed_examples"), "Split-eval", "*.gz"))
    assert len(transformed) == len(raw)
    for e in transformed[:5]:
        image = image_ops.parse_images(tf.constant(_feature(e, "image_u8")), size)[0].numpy()
        source = raw[_feature(e, "image_id")[0]]
        expected = image_ops.preprocess_bytes(
            tf.constant(_feature(source, "image")), size, cfg.transform.pad_value)[0].numpy()
        assert image.shape == (size, size, 3)
        np.testing.assert_array_equal(image, expected)
        assert _feature(e, "label") == _feature(source, "label")


def _per_split(data_run, component, output, file_name, proto_class):
    """(path, parsed proto) of ``file_name`` in each of the three splits' directories."""
    files = glob.glob(os.path.join(_latest(data_run, component, output), "Split-*", file_name))
    assert len(files) == 3, files
    return [(path, proto_class.FromString(open(path, "rb").read())) for path in files]


def test_statistics_treat_the_image_bytes_as_images_not_as_categorical_strings(data_run):
    # Without the schema's image_domain, TFDV counts the distinct values of every BYTES
    # feature: one Beam key per image, the whole split held in memory at Cars196 scale.
    from tensorflow_metadata.proto.v0 import statistics_pb2
    for path, stats in _per_split(data_run, "StatisticsGen", "statistics", "FeatureStats.pb",
                                  statistics_pb2.DatasetFeatureStatisticsList):
        features = {f.path.step[0]: f for f in stats.datasets[0].features}
        image, image_id = features["image"], features["image_id"]
        assert image.WhichOneof("stats") == "bytes_stats", (path, image)
        assert image.bytes_stats.avg_num_bytes > 500
        # Other BYTES features keep their string statistics.
        assert image_id.WhichOneof("stats") == "string_stats"


def test_no_anomalies_on_the_curated_schema(data_run):
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    for path, anomalies in _per_split(data_run, "ExampleValidator", "anomalies",
                                      "SchemaDiff.pb", anomalies_pb2.Anomalies):
        assert not anomalies.anomaly_info, (path, anomalies.anomaly_info)


def test_corrupt_image_fails_the_run_when_configured(sample_data, tmp_path):
    cfg = small_config(tmp_path, sample_data.out_dir, data={"on_corrupt_image": "fail"})
    pipeline = create_pipeline(cfg)
    pipeline.components = create_components(cfg)[:1]
    with pytest.raises(Exception) as e:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    assert "corrupt image cars_" in str(e.value)
    examples_root = os.path.join(cfg.pipeline.root, cfg.pipeline.name, "RetrievalExampleGen")
    # Nothing was published: the failed execution's output is not a valid artifact.
    store = metadata.Metadata(tfx.orchestration.metadata.sqlite_metadata_connection_config(
        cfg.pipeline.metadata_path))
    with store:
        live = [a for a in store.store.get_artifacts_by_type("Examples")
                if a.uri.startswith(examples_root) and a.state == a.LIVE]
    assert not live


def test_transformed_examples_read_back_identical_at_another_compression_level(
        data_run, tmp_path):
    """Our Transform executor (TFX's, writing at transform.compression_level) called
    directly on the run's raw examples at gzip level 6 (TFX's own writer's level): the
    records read back are exactly those of the run (written at the configured level), and
    the files are gzip TFRecords every reader takes."""
    from google.protobuf import message
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import artifact_utils, standard_artifacts
    from tfx.utils import proto_utils

    from components.preprocessing import transform_executor
    from core.names import TRANSFORM_JOB_KEY

    cfg = data_run
    [transform] = [c for c in create_components(cfg) if c.id == "Transform"]
    props = {k: proto_utils.proto_to_json(v) if isinstance(v, message.Message) else v
             for k, v in transform.exec_properties.items()}
    custom = json.loads(props["custom_config"])
    job = custom[TRANSFORM_JOB_KEY]["transform"]
    assert job["compression_level"] == cfg.transform.compression_level
    job["compression_level"] = 6
    props["custom_config"] = json.dumps(custom)

    def artifact(cls, uri, splits=None):
        a = cls()
        a.uri = str(uri)
        if splits:
            a.split_names = artifact_utils.encode_split_names(splits)
        return a

    splits = list(cfg.data.output_splits)
    examples = artifact(standard_artifacts.Examples,
                        _latest(cfg, "RetrievalExampleGen", "examples"), splits)
    schema = artifact(standard_artifacts.Schema, _latest(cfg, "ImportSchemaGen", "schema"))
    out = artifact(standard_artifacts.Examples, tmp_path / "transformed")
    graph = artifact(standard_artifacts.TransformGraph, tmp_path / "graph")
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=["--direct_num_workers=1"], tmp_dir=str(tmp_path / "tmp"),
        unique_id="t6")
    transform_executor.Executor(context).Do(
        {"examples": [examples], "schema": [schema]},
        {"transform_graph": [graph], "transformed_examples": [out]}, props)

    run = _latest(cfg, "Transform", "transformed_examples")
    for split in splits:
        ours = sorted(glob.glob(os.path.join(run, f"Split-{split}", "*.gz")))
        level6 = sorted(glob.glob(os.path.join(out.uri, f"Split-{split}", "*.gz")))
        assert level6 and all(os.path.basename(f).startswith("transformed_examples")
                              for f in level6)

        def records(files):
            return sorted((_feature(e, "image_id"), _feature(e, "label"),
                           _feature(e, "image_u8")) for e in read_examples(files))
        got, want = records(level6), records(ours)
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a[0] == b[0] and a[1] == b[1], (a[:2], b[:2])
            assert a[2] == b[2], a[0]
        if cfg.transform.compression_level == 0:  # stored: larger than compressed
            assert sum(map(os.path.getsize, ours)) > sum(map(os.path.getsize, level6))


def _previous_driver_boxes(source_dir: str) -> dict:
    """The boxes as the driver computed them before they moved into Beam (TFDS's
    returnBbox: every image's header opened for its size, in the driver process), by
    image id; unreadable headers left out. Kept as the reference."""
    import tarfile
    from io import BytesIO

    import scipy.io
    from PIL import Image

    mats = {"test": scipy.io.loadmat(os.path.join(source_dir,
                                                  "cars_test_annos_withlabels.mat"))}
    with tarfile.open(os.path.join(source_dir, "car_devkit.tgz")) as tar:
        mats["train"] = scipy.io.loadmat(tar.extractfile("devkit/cars_train_annos.mat"))
    boxes = {}
    for split, mat in mats.items():
        with tarfile.open(os.path.join(source_dir, f"cars_{split}.tgz")) as tar:
            images = {os.path.basename(m.name).split(".")[0]: tar.extractfile(m).read()
                      for m in tar if m.isfile()}
        for example in mat["annotations"][0]:
            name = example[-1].item().split(".")[0]
            try:
                width, height = Image.open(BytesIO(images[name])).size
            except Exception:
                continue
            boxes[f"{split}/{name}"] = (
                float(example[1].item()) / height, float(example[0].item()) / width,
                float(example[3].item()) / height, float(example[2].item()) / width)
    return boxes


def test_boxes_normalised_in_beam_equal_the_previous_drivers(data_run):
    expected = _previous_driver_boxes(data_run.data.source_dir)
    examples = read_examples(os.path.join(_latest(data_run, "RetrievalExampleGen", "examples"),
                                          "Split-*", "*.gz"))
    assert len(examples) == SAMPLE["num_classes"] * SAMPLE["images_per_class"]
    for e in examples:
        image_id = _feature(e, "image_id")[0].decode()
        # tf.Example stores float32: the previous driver's float64 rounded once.
        np.testing.assert_array_equal(np.float32(_feature(e, "bbox")),
                                      np.float32(expected[image_id]))
