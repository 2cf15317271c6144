"""CUB-200-2011: a sample archive in the real layout, parsed into records; bad input refused."""
import hashlib
import io
import re
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from components.datasets import records
from components.datasets.cub200 import source as cub200
from components.datasets.cub200.sample import make_sample_data
from components.datasets.records import DatasetSourceError
from components.datasets.synthetic import write_tgz

ARCHIVE = "CUB_200_2011.tgz"
SAMPLE = dict(num_classes=6, images_per_class=6, seed=3, corrupt=2)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return make_sample_data(tmp_path_factory.mktemp("cub200_sample"), **SAMPLE)


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _text(sample, name: str) -> str:
    return _members(Path(sample.out_dir) / ARCHIVE)[f"CUB_200_2011/{name}"].decode()


def _modified(sample, tmp_path, changes: dict) -> str:
    """A source dir whose archive is the sample's with members replaced (bytes) or removed
    (None); returns its path."""
    members = _members(Path(sample.out_dir) / ARCHIVE)
    for name, data in changes.items():
        if data is None:
            del members[name]
        else:
            members[name] = data
    source = tmp_path / "source"
    source.mkdir()
    write_tgz(source / ARCHIVE, list(members.items()))
    return str(source)


def _with_line(sample, name: str, number: int, line: str | None) -> dict:
    """{member: the list file ``name`` with line ``number`` replaced (or removed if None)}."""
    lines = _text(sample, name).splitlines()
    if line is None:
        del lines[number - 1]
    else:
        lines[number - 1] = line
    return {f"CUB_200_2011/{name}": ("\n".join(lines) + "\n").encode()}


def _records(source_dir, tmp_path):
    return list(cub200.iter_records(str(source_dir), str(tmp_path / "work")))


@pytest.mark.slow
def test_the_sample_has_the_original_layout_and_line_formats(sample):
    names = set(_members(Path(sample.out_dir) / ARCHIVE))
    for member in ("images.txt", "image_class_labels.txt", "train_test_split.txt",
                   "bounding_boxes.txt", "classes.txt", "README", "parts/parts.txt",
                   "attributes/certainties.txt"):
        assert f"CUB_200_2011/{member}" in names
    assert "attributes.txt" in names
    assert _text(sample, "classes.txt").splitlines()[:2] == [
        "1 001.Black_footed_Albatross", "2 002.Laysan_Albatross"]
    images = [line.split() for line in _text(sample, "images.txt").splitlines()]
    assert [int(i) for i, _ in images] == list(range(1, len(images) + 1))
    for _, path in images:
        assert re.fullmatch(r"\d{3}\.\w+/[A-Z]\w+_\d{4}_\d+\.jpg", path), path
        assert f"CUB_200_2011/images/{path}" in names
    assert images[0][1].startswith("001.Black_footed_Albatross/Black_Footed_Albatross_")
    box = _text(sample, "bounding_boxes.txt").splitlines()[0].split()
    assert len(box) == 5 and all(re.fullmatch(r"\d+\.\d", v) for v in box[1:])
    # Half/half per class (odd counts favour train), by train_test_split.txt's 1 = train.
    labels = dict(line.split() for line in _text(sample, "image_class_labels.txt").splitlines())
    is_train = dict(line.split() for line in _text(sample, "train_test_split.txt").splitlines())
    corrupt_ids = {i for i, path in images if path[:-4] in sample.corrupt}
    for class_id in range(1, SAMPLE["num_classes"] + 1):
        flags = [is_train[i] for i, c in labels.items()
                 if c == str(class_id) and i not in corrupt_ids]
        assert sorted(flags) == ["0"] * 3 + ["1"] * 3


@pytest.mark.slow
def test_every_sample_image_comes_back_with_its_class_split_and_box(sample, tmp_path):
    got = _records(sample.out_dir, tmp_path)
    assert len(got) == sample.num_valid + len(sample.corrupt) == len({r["image_id"] for r in got})
    valid = {r[records.IMAGE_ID]: r for r in got if r[records.IMAGE_ID] not in sample.corrupt}
    assert {(i, r[records.CLASS_ID], r[records.SOURCE_SPLIT]) for i, r in valid.items()} \
        == set(sample.images)
    assert {r[records.IMAGE_ID] for r in got} - set(valid) == set(sample.corrupt)
    boxes = {}
    for line in _text(sample, "bounding_boxes.txt").splitlines():
        image, x, y, w, h = line.split()
        boxes[image] = (float(x), float(y), float(x) + float(w), float(y) + float(h))
    image_numbers = {path[:-4]: i for i, path in
                     (line.split() for line in _text(sample, "images.txt").splitlines())}
    for image_id, r in valid.items():
        assert r[records.CLASS_NAME] == image_id.split("/")[0]
        assert r[records.CLASS_NAME].startswith(f"{r[records.CLASS_ID] + 1:03d}.")
        assert r[records.PROTOCOL_SPLIT] is None and r[records.EVAL_ROLE] == ""
        assert r[records.SUPER_CLASS] == "" and r[records.BBOX] is None
        assert r[records.BBOX_PIXELS] == boxes[image_numbers[image_id]]
        with Image.open(r[records.IMAGE_PATH]) as image:  # the box lies inside the image
            width, height = image.size
        x1, y1, x2, y2 = r[records.BBOX_PIXELS]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


@pytest.mark.slow
def test_tfds_caltech_birds_list_parsing_agrees_on_the_sample(sample, tmp_path):
    # TFDS's CaltechBirds2011._split_generators, run with its segmentations download
    # standing in as an empty directory (see cub200's docstring for why it is not used).
    from tensorflow_datasets.image_classification import caltech_birds
    got = _records(sample.out_dir, tmp_path)
    extracted = str(tmp_path / "work" / "extracted" / "CUB_200_2011")

    class Downloads:
        def download(self, urls):
            return [str(Path(sample.out_dir) / ARCHIVE)]

        def download_and_extract(self, urls):
            (tmp_path / "no_segmentations").mkdir(exist_ok=True)
            return [extracted, str(tmp_path / "no_segmentations")]

        def iter_archive(self, path):
            return None  # only read by _generate_examples, which needs the masks

    builder = caltech_birds.CaltechBirds2011(data_dir=str(tmp_path / "tfds"))
    splits = {g.name: g.gen_kwargs for g in builder._split_generators(Downloads())}
    for split in ("train", "test"):
        ours = sorted(r[records.IMAGE_ID] + ".jpg" for r in got
                      if r[records.SOURCE_SPLIT] == split)
        assert sorted(splits[split]["file_names"]) == ours
    annotations = splits["train"]["annotations"]
    for r in got:
        stem = r[records.IMAGE_ID].split("/")[1]
        # Unnormalised (size 1x1): TFDS's (ymin, xmin, ymax, xmax) in pixels.
        ymin, xmin, ymax, xmax = builder._get_bounding_box_values(annotations[stem][0], 1, 1)
        assert (xmin, ymin, xmax, ymax) == r[records.BBOX_PIXELS]
        label = caltech_birds._NAME_RE.match(r[records.IMAGE_ID] + ".jpg").groups()[-3]
        assert int(label) - 1 == r[records.CLASS_ID]


@pytest.mark.slow
def test_the_sample_is_byte_identical_for_a_seed_and_differs_for_another(tmp_path):
    def digest(seed, name):
        summary = make_sample_data(tmp_path / name, 2, 2, seed=seed, corrupt=1)
        return hashlib.sha256((Path(summary.out_dir) / ARCHIVE).read_bytes()).hexdigest()
    assert digest(5, "a") == digest(5, "b") != digest(6, "c")


def test_a_missing_directory_names_the_archive(tmp_path):
    with pytest.raises(DatasetSourceError, match=f"does not exist.*{ARCHIVE}"):
        cub200.check_source_dir(str(tmp_path / "nope"))


def test_a_missing_archive_is_named_with_what_was_found(tmp_path):
    (tmp_path / "CUB_200_2011").mkdir()
    (tmp_path / "segmentations.tgz").write_bytes(b"")
    with pytest.raises(DatasetSourceError) as e:
        list(cub200.iter_records(str(tmp_path), str(tmp_path / "work")))
    assert str(tmp_path) in str(e.value)
    assert f"missing {ARCHIVE}" in str(e.value)
    assert "found: CUB_200_2011, segmentations.tgz" in str(e.value)


@pytest.mark.slow
def test_a_list_naming_an_image_missing_from_the_archive_names_file_line_and_image(
        sample, tmp_path):
    number, path = _text(sample, "images.txt").splitlines()[4].split()
    source = _modified(sample, tmp_path, {f"CUB_200_2011/images/{path}": None})
    with pytest.raises(DatasetSourceError) as e:
        _records(source, tmp_path)
    assert f"CUB_200_2011/images.txt line {number} names image {path}" in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("name, number, line, message", [
    ("bounding_boxes.txt", 3, "3 1.0 2.0 wide 4.0",
     "bounding_boxes.txt line 3: expected '<image_id> <x> <y> <width> <height>', got "
     "'3 1.0 2.0 wide 4.0'"),
    ("bounding_boxes.txt", 2, "2 1.0 2.0 -3.0 4.0", "bounding_boxes.txt line 2: expected"),
    ("train_test_split.txt", 2, "2 7", "train_test_split.txt line 2: expected"),
    ("images.txt", 4, "4", "images.txt line 4: expected '<image_id> <class_folder/file.jpg>'"),
    ("images.txt", 4, "4 ../../etc/passwd", "images.txt line 4: expected"),
    ("classes.txt", 1, "one 001.Black_footed_Albatross", "classes.txt line 1: expected"),
    ("image_class_labels.txt", 5, "5 99", "image_class_labels.txt line 5: class 99 is not in "
     "classes.txt"),
    ("image_class_labels.txt", 2, "1 1", "image_class_labels.txt line 2: id 1 is already on "
     "line 1"),
    ("image_class_labels.txt", 3, None, "image_class_labels.txt has no line for image 3"),
    ("train_test_split.txt", 1, "999 1", "train_test_split.txt line 1: image id 999 is not in "
     "images.txt"),
    ("image_class_labels.txt", 1, "1 2", "image_class_labels.txt line 1: image 1 is labelled "
     "class 2 (002.Laysan_Albatross) but images.txt line 1 puts it in folder "
     "001.Black_footed_Albatross"),
])
def test_a_bad_list_line_is_refused_naming_archive_member_and_line(sample, tmp_path, name,
                                                                  number, line, message):
    source = _modified(sample, tmp_path, _with_line(sample, name, number, line))
    with pytest.raises(DatasetSourceError) as e:
        _records(source, tmp_path)
    assert f"{ARCHIVE}:CUB_200_2011/{message}" in str(e.value)


@pytest.mark.slow
def test_an_archive_without_a_list_file_names_it(sample, tmp_path):
    source = _modified(sample, tmp_path, {"CUB_200_2011/bounding_boxes.txt": None})
    with pytest.raises(DatasetSourceError, match="has no CUB_200_2011/bounding_boxes.txt"):
        _records(source, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["not an archive", "cut in half"])
def test_an_unreadable_archive_is_named(sample, tmp_path, damage):
    data = (Path(sample.out_dir) / ARCHIVE).read_bytes()
    (tmp_path / ARCHIVE).write_bytes(b"not a tar archive" if damage == "not an archive"
                                     else data[: len(data) // 2])
    with pytest.raises(DatasetSourceError, match=f"{ARCHIVE}: not a readable gzip'd tar"):
        _records(tmp_path, tmp_path)
    assert not (tmp_path / "work" / "extracted" / "CUB_200_2011.done").exists()


def test_extraction_never_writes_outside_the_work_dir(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    (source / ARCHIVE).write_bytes(buffer.getvalue())
    with pytest.raises(DatasetSourceError, match="escapes the extraction dir"):
        _records(source, tmp_path)
    assert not list(tmp_path.rglob("escaped.txt"))


@pytest.mark.slow
def test_the_archive_is_extracted_once(sample, tmp_path):
    first = _records(sample.out_dir, tmp_path)
    Path(first[0][records.IMAGE_PATH]).write_bytes(b"changed after extraction")
    again = _records(sample.out_dir, tmp_path)
    assert again == first
    assert Path(again[0][records.IMAGE_PATH]).read_bytes() == b"changed after extraction"
