"""Sample archives in the real layout, parsed by TFDS's own cars196 code; bad input."""
import hashlib
import shutil
import tarfile

import numpy as np
import pytest
import scipy.io

from components.cars196 import tfds_source
from components.cars196.sample_data import make_sample_data
from core.names import CARS196_FILES
from tests.conftest import SAMPLE


def _digests(directory):
    return {f: hashlib.sha256((directory / f).read_bytes()).hexdigest() for f in CARS196_FILES}


def test_sample_data_has_the_original_layout(sample_data):
    for name in CARS196_FILES:
        assert (sample_data_dir(sample_data) / name).is_file()
    with tarfile.open(sample_data_dir(sample_data) / "cars_train.tgz") as tar:
        names = tar.getnames()
    assert "cars_train/00001.jpg" in names
    with tarfile.open(sample_data_dir(sample_data) / "car_devkit.tgz") as tar:
        assert {"devkit/cars_train_annos.mat", "devkit/cars_meta.mat"} <= set(tar.getnames())
    mat = scipy.io.loadmat(sample_data_dir(sample_data) / "cars_test_annos_withlabels.mat")
    assert mat["annotations"].dtype.names == tfds_source.ANNOTATION_FIELDS


def sample_data_dir(summary):
    from pathlib import Path
    return Path(summary.out_dir)


def test_sample_data_is_deterministic_for_a_seed(tmp_path):
    a = make_sample_data(tmp_path / "a", 3, 4, seed=1, corrupt=1)
    b = make_sample_data(tmp_path / "b", 3, 4, seed=1, corrupt=1)
    c = make_sample_data(tmp_path / "c", 3, 4, seed=2, corrupt=1)
    da, db, dc = (_digests(sample_data_dir(s)) for s in (a, b, c))
    assert da == db
    assert da["cars_train.tgz"] != dc["cars_train.tgz"]


def test_images_vary_in_size_aspect_and_mode(sample_data, tmp_path):
    from PIL import Image
    with tarfile.open(sample_data_dir(sample_data) / "cars_train.tgz") as tar:
        tar.extractall(tmp_path)
    sizes, modes = set(), set()
    for path in sorted((tmp_path / "cars_train").glob("*.jpg")):
        try:
            with Image.open(path) as im:
                im.load()
                sizes.add(im.size)
                modes.add(im.mode)
        except OSError:
            continue  # the corrupt ones
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)
    assert len(sizes) > 10
    assert {"RGB", "L", "CMYK"} <= modes


def test_tfds_parsing_round_trips_every_annotation(sample_data, tmp_path):
    records = list(tfds_source.iter_records(sample_data.out_dir, str(tmp_path)))
    expected = ({("train", f, c) for f, c in sample_data.train}
                | {("test", f, c) for f, c in sample_data.test})
    got = {(r["source_split"], r["image_path"].rsplit("/", 1)[1], r["class_id"] + 1)
           for r in records}
    assert got == expected and len(records) == len(expected)
    assert len({r["image_id"] for r in records}) == len(records)
    names = {r["class_id"]: r["class_name"] for r in records}
    assert names[0] == "AM General Hummer SUV 2000"  # TFDS's class names, 0-based ids
    valid = [r for r in records if r["bbox"] is not None]
    assert len(valid) >= sample_data.num_valid
    boxes = np.array([r["bbox"] for r in valid])
    assert ((boxes >= 0) & (boxes <= 1)).all()
    assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()
    assert SAMPLE["num_classes"] == len(names)


def test_missing_directory_lists_the_four_files(tmp_path):
    with pytest.raises(tfds_source.Cars196SourceError) as e:
        tfds_source.check_source_dir(str(tmp_path / "nope"))
    assert "does not exist" in str(e.value)
    assert all(name in str(e.value) for name in CARS196_FILES)


def test_missing_file_names_it_and_what_was_found(sample_data, tmp_path):
    for name in CARS196_FILES[:3]:
        shutil.copy(sample_data_dir(sample_data) / name, tmp_path / name)
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(tfds_source.Cars196SourceError) as e:
        tfds_source.check_source_dir(str(tmp_path))
    message = str(e.value)
    assert "missing cars_test_annos_withlabels.mat" in message
    assert "found: car_devkit.tgz, cars_test.tgz, cars_train.tgz, readme.txt" in message


@pytest.mark.parametrize("variables, field", [
    ({"something_else": np.zeros(3)}, "annotations"),
    ({"annotations": np.zeros((1, 2), dtype=[("bbox_x1", "O"), ("fname", "O")])}, "bbox_y1"),
])
def test_mat_without_expected_fields_names_file_and_field(tmp_path, variables, field):
    path = tmp_path / "cars_test_annos_withlabels.mat"
    if "annotations" in variables:
        for i in range(2):
            variables["annotations"][0, i] = (np.array([[1]]), np.array(["00001.jpg"]))
    scipy.io.savemat(path, variables)
    with pytest.raises(tfds_source.Cars196SourceError) as e:
        tfds_source.check_annotations(str(path))
    assert str(path) in str(e.value) and f"'{field}'" in str(e.value)


def test_not_a_mat_file(tmp_path):
    path = tmp_path / "x.mat"
    path.write_bytes(b"garbage")
    with pytest.raises(tfds_source.Cars196SourceError, match="x.mat: not a readable"):
        tfds_source.check_annotations(str(path))


def _replace_in_devkit(source, tmp_path, member, data: bytes):
    """A copy of the sample data whose car_devkit.tgz has ``member`` replaced by ``data``."""
    import io
    out = tmp_path / "source"
    shutil.copytree(source, out)
    with tarfile.open(source / "car_devkit.tgz") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    with tarfile.open(out / "car_devkit.tgz", "w:gz") as tar:
        for info, payload in members:
            payload = data if info.name == member else payload
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return out


@pytest.mark.parametrize("replacement, message", [
    (b"class_names: a text file, not MATLAB", "devkit/cars_meta.mat: not a readable"),
    ("wrong_names", "first difference at class 1"),
])
def test_a_bad_cars_meta_mat_is_refused_naming_the_file(sample_data, tmp_path, replacement,
                                                        message):
    import io
    from pathlib import Path
    if replacement == "wrong_names":
        buffer = io.BytesIO()
        names = np.array([[np.array([f"car {i}"]) for i in range(196)]], dtype=object)
        scipy.io.savemat(buffer, {"class_names": names})
        replacement = buffer.getvalue()
    source = _replace_in_devkit(Path(sample_data.out_dir), tmp_path, "devkit/cars_meta.mat",
                                replacement)
    with pytest.raises(tfds_source.Cars196SourceError, match=message):
        list(tfds_source.iter_records(str(source), str(tmp_path / "work")))


def test_the_sample_cars_meta_mat_passes(sample_data, tmp_path):
    import glob
    from pathlib import Path
    with tarfile.open(Path(sample_data.out_dir) / "car_devkit.tgz") as tar:
        tar.extract("devkit/cars_meta.mat", tmp_path)
    names = tfds_source.check_class_names(str(tmp_path / "devkit" / "cars_meta.mat"))
    assert names == list(tfds_source.CLASS_NAMES) and len(names) == 196
    assert glob.glob(str(tmp_path / "devkit" / "*.mat"))
