"""Sample archives in the real layout, parsed by TFDS's own cars196 code; bad input."""
import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from components.datasets.cars196 import source as tfds_source
from components.datasets import archive
from components.datasets.cars196.sample import make_sample_data
from core.names import CARS196_FILES
from tests.conftest import SAMPLE


def _digests(directory):
    return {f: hashlib.sha256((directory / f).read_bytes()).hexdigest() for f in CARS196_FILES}


@pytest.mark.slow
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


@pytest.mark.slow
def test_sample_data_is_deterministic_for_a_seed(tmp_path):
    a = make_sample_data(tmp_path / "a", 3, 4, seed=1, corrupt=1)
    b = make_sample_data(tmp_path / "b", 3, 4, seed=1, corrupt=1)
    c = make_sample_data(tmp_path / "c", 3, 4, seed=2, corrupt=1)
    da, db, dc = (_digests(sample_data_dir(s)) for s in (a, b, c))
    assert da == db
    assert da["cars_train.tgz"] != dc["cars_train.tgz"]


def test_real_size_images_follow_cars196s_size_distribution():
    """--real-size: long side 400-1,000 px around 700; mostly 4:3 to 16:9 landscape, a few
    wider, a few portrait."""
    from components.datasets.synthetic import image_size
    rng = np.random.default_rng(0)
    sizes = np.array([image_size(rng, real_size=True) for _ in range(4000)])
    width, height = sizes[:, 0], sizes[:, 1]
    long_side = np.maximum(width, height)
    assert long_side.min() >= 400 and long_side.max() <= 1000
    assert 650 <= np.median(long_side) <= 750
    assert np.percentile(long_side, 10) < 600 and np.percentile(long_side, 90) > 800
    aspect = long_side / np.minimum(width, height)
    landscape = width > height
    assert 0.02 < 1 - landscape.mean() < 0.08             # portrait: about 5%
    usual = landscape & (aspect >= 4 / 3 - 0.01) & (aspect <= 16 / 9 + 0.01)
    assert 0.85 < usual.mean() < 0.95                      # 4:3 to 16:9 landscape: about 90%
    assert aspect.max() <= 2.0 + 0.01 and aspect.min() >= 4 / 3 - 0.01


@pytest.mark.slow
def test_real_size_sample_is_photo_sized_and_independent_of_the_process_count(
        tmp_path, monkeypatch):
    """Photo-sized JPEGs of about Cars196's file size (55 KB on average); the classes are
    drawn in parallel processes, each from its own random stream, so the archives are
    byte-identical whatever the number of processes."""
    from PIL import Image
    a = make_sample_data(tmp_path / "a", 3, 6, seed=1, real_size=True)
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    b = make_sample_data(tmp_path / "b", 3, 6, seed=1, real_size=True)
    assert _digests(sample_data_dir(a)) == _digests(sample_data_dir(b))
    sizes, lengths = [], []
    for name in ("cars_train.tgz", "cars_test.tgz"):
        with tarfile.open(sample_data_dir(a) / name) as tar:
            for member in tar:
                if member.isfile():
                    data = tar.extractfile(member).read()
                    lengths.append(len(data))
                    sizes.append(Image.open(io.BytesIO(data)).size)
    assert len(sizes) == a.num_valid == 18
    assert all(400 <= max(s) <= 1000 for s in sizes)
    assert 35_000 < np.mean(lengths) < 90_000


@pytest.mark.slow
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


@pytest.mark.slow
def test_tfds_parsing_round_trips_every_annotation(sample_data, tmp_path):
    records = list(tfds_source.iter_records(sample_data.out_dir, str(tmp_path)))
    expected = ({("train", f, c) for f, c in sample_data.train}
                | {("test", f, c) for f, c in sample_data.test})
    got = {(r["source_split"], r["file_name"].rsplit("/", 1)[1], r["class_id"] + 1)
           for r in records}
    assert {r["file_name"].split("/")[0] for r in records} == {"cars_train", "cars_test"}
    assert got == expected and len(records) == len(expected)
    assert len({r["image_id"] for r in records}) == len(records)
    names = {r["class_id"]: r["class_name"] for r in records}
    assert names[0] == "AM General Hummer SUV 2000"  # TFDS's class names, 0-based ids
    # No image is opened in the driver: every box stays in pixels, as annotated.
    assert all(r["bbox"] is None for r in records)
    boxes = np.array([r["bbox_pixels"] for r in records])
    assert (boxes >= 1).all()
    assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()
    mat = scipy.io.loadmat(Path(sample_data.out_dir) / "cars_test_annos_withlabels.mat")
    annotated = {f"test/{a['fname'].item().split('.')[0]}":
                 tuple(float(a[k].item()) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
                 for a in mat["annotations"][0]}
    assert {r["image_id"]: r["bbox_pixels"] for r in records
            if r["source_split"] == "test"} == annotated
    assert SAMPLE["num_classes"] == len(names)


@pytest.mark.slow
def test_boxes_normalised_in_beam_agree_with_tfds_own_parsing(tmp_path):
    """TFDS's own returnBbox (which opens every image for its size) and ours (pixel boxes
    from the same .mat fields, normalised by the size Beam decodes) give the same boxes."""
    from tensorflow_datasets.image_classification import cars196

    from components.example_gen import examples

    summary = make_sample_data(tmp_path / "src", 4, 6, seed=3)  # no corrupt file: TFDS aborts
    records = {r["image_id"]: r for r in tfds_source.iter_records(
        summary.out_dir, str(tmp_path / "a"), images_in_archive=True)}
    # TFDS's version needs image files: the builder's other mode writes them out.
    builder = tfds_source.LocalCars196(summary.out_dir, str(tmp_path / "b"))
    compared = 0
    for split, kwargs in builder.split_gen_kwargs().items():
        image_dict = builder.returnImageDict(kwargs["data_dir_path"])
        theirs = cars196.Cars196.returnBbox(builder, kwargs["data_annotations_path"], image_dict)
        for name, box in theirs.items():
            record = records[f"{split}/{name}"]
            image = archive.read_image(record["image_path"])  # as the Beam stage reads it
            assert image == Path(image_dict[name]).read_bytes()
            reason, size = examples._decode_check(image)
            assert reason is None
            assert examples.normalised_box(record["bbox_pixels"], *size) == tuple(box)
            compared += 1
    assert compared == summary.num_valid == len(records)


@pytest.mark.slow
def test_images_stay_in_the_inflated_archives(sample_data, tmp_path):
    """ExampleGen's mode: one .tar per archive and no file per image; every record reads
    back the bytes the original archive holds."""
    in_archive = list(tfds_source.iter_records(sample_data.out_dir, str(tmp_path / "a"),
                                               images_in_archive=True))
    as_files = {r["image_id"]: r for r in tfds_source.iter_records(sample_data.out_dir,
                                                                   str(tmp_path / "b"))}
    assert all(r["image_path"].startswith(archive.MEMBER_SCHEME) for r in in_archive)
    assert not list((tmp_path / "a").rglob("*.jpg"))
    originals = {}
    for name in ("cars_train.tgz", "cars_test.tgz"):
        with tarfile.open(sample_data_dir(sample_data) / name) as tar:
            originals.update({m.name: tar.extractfile(m).read() for m in tar if m.isfile()})
    for r in in_archive:
        assert archive.read_image(r["image_path"]) == originals[r["file_name"]]
        other = as_files[r["image_id"]]
        assert Path(other["image_path"]).read_bytes() == originals[r["file_name"]]
        assert {k: v for k, v in r.items() if k != "image_path"} == \
            {k: v for k, v in other.items() if k != "image_path"}


@pytest.mark.slow
def test_an_image_archive_without_its_directory_is_named(sample_data, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(sample_data.out_dir, source)
    with tarfile.open(source / "cars_train.tgz", "w:gz") as tar:
        info = tarfile.TarInfo("elsewhere/00001.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(tfds_source.Cars196SourceError, match="no archive has a directory "
                                                             "cars_train/"):
        list(tfds_source.iter_records(str(source), str(tmp_path / "work"),
                                      images_in_archive=True))


@pytest.mark.slow
def test_a_truncated_archive_is_named(sample_data, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(sample_data.out_dir, source)
    data = (source / "cars_test.tgz").read_bytes()
    (source / "cars_test.tgz").write_bytes(data[: len(data) // 2])
    with pytest.raises(tfds_source.Cars196SourceError, match="cars_test.tgz: the gzip stream "
                                                             "is truncated"):
        list(tfds_source.iter_records(str(source), str(tmp_path / "work"),
                                      images_in_archive=True))


def test_missing_directory_lists_the_four_files(tmp_path):
    with pytest.raises(tfds_source.Cars196SourceError) as e:
        tfds_source.check_source_dir(str(tmp_path / "nope"))
    assert "does not exist" in str(e.value)
    assert all(name in str(e.value) for name in CARS196_FILES)


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_sample_cars_meta_mat_passes(sample_data, tmp_path):
    import glob
    from pathlib import Path
    with tarfile.open(Path(sample_data.out_dir) / "car_devkit.tgz") as tar:
        tar.extract("devkit/cars_meta.mat", tmp_path)
    names = tfds_source.check_class_names(str(tmp_path / "devkit" / "cars_meta.mat"))
    assert names == list(tfds_source.CLASS_NAMES) and len(names) == 196
    assert glob.glob(str(tmp_path / "devkit" / "*.mat"))
