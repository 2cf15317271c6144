"""Stanford Online Products: a sample zip in the real layout, parsed by TFDS's own code into
records; bad input refused."""
import hashlib
import re
import zipfile
from pathlib import Path

import pytest

from components.datasets import records
from components.datasets.sop import source as sop
from components.datasets.records import DatasetSourceError
from components.datasets.sop.sample import make_sample_data
from components.datasets.synthetic import write_zip

ARCHIVE = "Stanford_Online_Products.zip"
HEADER = "image_id class_id super_class_id path"
SAMPLE = dict(num_classes=8, images_per_class=4, seed=3, corrupt=2)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return make_sample_data(tmp_path_factory.mktemp("sop_sample"), **SAMPLE)


def _members(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as z:
        return {i.filename: z.read(i) for i in z.infolist() if not i.is_dir()}


def _text(sample, name: str) -> str:
    return _members(Path(sample.out_dir) / ARCHIVE)[f"Stanford_Online_Products/{name}"].decode()


def _modified(sample, tmp_path, changes: dict) -> str:
    """A source dir whose zip is the sample's with members replaced (bytes) or removed (None)."""
    members = _members(Path(sample.out_dir) / ARCHIVE)
    for name, data in changes.items():
        if data is None:
            del members[name]
        else:
            members[name] = data
    source = tmp_path / "source"
    source.mkdir()
    write_zip(source / ARCHIVE, list(members.items()))
    return str(source)


def _with_line(sample, name: str, number: int, line: str) -> dict:
    """{member: the list file ``name`` with line ``number`` (1 = the header) replaced}."""
    lines = _text(sample, name).splitlines()
    lines[number - 1] = line
    return {f"Stanford_Online_Products/{name}": ("\n".join(lines) + "\n").encode()}


def _records(source_dir, tmp_path):
    return list(sop.iter_records(str(source_dir), str(tmp_path / "work")))


def _rows(text):
    return [line.split(" ") for line in text.splitlines()[1:]]


@pytest.mark.slow
def test_the_sample_has_the_original_layout_and_numbering(sample):
    names = set(_members(Path(sample.out_dir) / ARCHIVE))
    train, test, info = (_text(sample, f"Ebay_{n}.txt") for n in ("train", "test", "info"))
    for text in (train, test, info):
        assert text.splitlines()[0] == HEADER
    assert info.splitlines()[1:] == train.splitlines()[1:] + test.splitlines()[1:]
    rows = _rows(info)
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))  # ids run on into test
    # The first half of the products train, the rest test; grouped, numbered from 1.
    assert sorted({int(r[1]) for r in _rows(train)}) == [1, 2, 3, 4]
    assert sorted({int(r[1]) for r in _rows(test)}) == [5, 6, 7, 8]
    assert [int(r[1]) for r in rows] == sorted(int(r[1]) for r in rows)
    super_ids = set()
    for _, class_id, super_id, path in rows:
        match = re.fullmatch(r"(\w+)_final/(\d{12})_(\d+)\.JPG", path)
        assert match, path
        assert match.group(1) == sop.SUPER_CLASSES[int(super_id) - 1]
        assert f"Stanford_Online_Products/{path}" in names
        super_ids.add(int(super_id))
    assert 1 < len(super_ids) <= 3
    first = [r[3] for r in rows if r[1] == "1"]
    assert [p.rsplit("_", 1)[1] for p in first] == [f"{n}.JPG" for n in range(len(first))]


@pytest.mark.slow
def test_every_sample_image_comes_back_with_class_splits_and_super_class(sample, tmp_path):
    got = _records(sample.out_dir, tmp_path)
    assert len(got) == sample.num_valid + len(sample.corrupt) == len({r["image_id"] for r in got})
    valid = {r[records.IMAGE_ID]: r for r in got if r[records.IMAGE_ID] not in sample.corrupt}
    assert {(i, r[records.CLASS_ID], r[records.SOURCE_SPLIT]) for i, r in valid.items()} \
        == set(sample.images)
    assert {r[records.IMAGE_ID] for r in got} - set(valid) == set(sample.corrupt)
    for r in got:
        super_class = r[records.IMAGE_ID].split("/")[0][: -len("_final")]
        assert r[records.SUPER_CLASS] == super_class
        assert r[records.CLASS_NAME] == f"{super_class} {r[records.CLASS_ID] + 1}"
        assert r[records.PROTOCOL_SPLIT] == {"train": "train", "test": "eval"}[
            r[records.SOURCE_SPLIT]]
        assert r[records.BBOX] == records.WHOLE_IMAGE and r[records.BBOX_PIXELS] is None
        assert r[records.EVAL_ROLE] == ""
        assert Path(r[records.IMAGE_PATH]).read_bytes() == _members(
            Path(sample.out_dir) / ARCHIVE)[f"Stanford_Online_Products/{r['image_id']}.JPG"]
    # records.py: training classes 0..T-1, evaluation classes T.. (contiguous).
    assert sorted({r[records.CLASS_ID] for r in got if r[records.PROTOCOL_SPLIT] == "train"}) \
        == [0, 1, 2, 3]


@pytest.mark.slow
def test_tfds_own_stanford_online_products_builder_agrees_on_the_sample(sample, tmp_path):
    from tensorflow_datasets.datasets.stanford_online_products import (
        stanford_online_products_dataset_builder as tfds_sop)
    got = _records(sample.out_dir, tmp_path)
    folder = tmp_path / "work" / "extracted" / "Stanford_Online_Products" / \
        "Stanford_Online_Products"
    builder = tfds_sop.Builder(data_dir=str(tmp_path / "tfds"))  # the unmodified builder
    theirs = [(e["class_id"], e["super_class_id"], Path(e["image"]))
              for name in ("Ebay_train.txt", "Ebay_test.txt")
              for _, e in builder._generate_examples(str(folder / name))]
    ours = [(r[records.CLASS_ID], r[records.SUPER_CLASS], Path(r[records.IMAGE_PATH]))
            for r in got]
    assert ours == theirs


@pytest.mark.slow
def test_the_sample_is_byte_identical_for_a_seed_and_differs_for_another(tmp_path):
    def digest(seed, name):
        summary = make_sample_data(tmp_path / name, 2, 2, seed=seed, corrupt=1)
        return hashlib.sha256((Path(summary.out_dir) / ARCHIVE).read_bytes()).hexdigest()
    assert digest(5, "a") == digest(5, "b") != digest(6, "c")


def test_a_missing_directory_names_the_archive(tmp_path):
    with pytest.raises(DatasetSourceError, match=f"does not exist.*{ARCHIVE}"):
        sop.check_source_dir(str(tmp_path / "nope"))


def test_a_missing_archive_is_named_with_what_was_found(tmp_path):
    (tmp_path / "Stanford_Online_Products").mkdir()
    (tmp_path / "Ebay_train.txt").write_text(HEADER + "\n")
    with pytest.raises(DatasetSourceError) as e:
        list(sop.iter_records(str(tmp_path), str(tmp_path / "work")))
    assert str(tmp_path) in str(e.value)
    assert f"missing {ARCHIVE}" in str(e.value)
    assert "found: Ebay_train.txt, Stanford_Online_Products" in str(e.value)


@pytest.mark.slow
def test_a_list_naming_an_image_missing_from_the_archive_names_file_line_and_image(
        sample, tmp_path):
    path = _text(sample, "Ebay_test.txt").splitlines()[3].split(" ")[3]
    source = _modified(sample, tmp_path, {f"Stanford_Online_Products/{path}": None})
    with pytest.raises(DatasetSourceError) as e:
        _records(source, tmp_path)
    assert f"{ARCHIVE}:Stanford_Online_Products/Ebay_test.txt line 4 names image {path}" \
        in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("name, number, line, message", [
    ("Ebay_train.txt", 1, "image_id class_id path",
     "Ebay_train.txt line 1: expected the header 'image_id class_id super_class_id path'"),
    ("Ebay_train.txt", 3, "2 1 1", "Ebay_train.txt line 3: expected '<image_id> <class_id> "
     "<super_class_id:1..12> <folder/file>', got '2 1 1'"),
    ("Ebay_test.txt", 2, "17 five 1 bicycle_final/1_0.JPG", "Ebay_test.txt line 2: expected"),
    ("Ebay_test.txt", 2, "17 5 13 bicycle_final/1_0.JPG", "Ebay_test.txt line 2: expected"),
    ("Ebay_test.txt", 2, "17  5 1 bicycle_final/1_0.JPG", "Ebay_test.txt line 2: expected"),
    ("Ebay_train.txt", 2, "1 1 1 ../outside.JPG", "Ebay_train.txt line 2: expected"),
])
def test_a_malformed_list_line_is_refused_naming_archive_member_and_line(
        sample, tmp_path, name, number, line, message):
    source = _modified(sample, tmp_path, _with_line(sample, name, number, line))
    with pytest.raises(DatasetSourceError) as e:
        _records(source, tmp_path)
    assert f"{ARCHIVE}:Stanford_Online_Products/{message}" in str(e.value)


@pytest.mark.slow
def test_train_and_test_sharing_a_class_is_refused_naming_both_files(sample, tmp_path):
    _, _, super_id, path = _text(sample, "Ebay_test.txt").splitlines()[1].split(" ")
    source = _modified(sample, tmp_path,
                       _with_line(sample, "Ebay_test.txt", 2, f"17 1 {super_id} {path}"))
    with pytest.raises(DatasetSourceError) as e:
        _records(source, tmp_path)
    message = str(e.value)
    assert (f"{ARCHIVE}:Stanford_Online_Products/Ebay_train.txt and "
            f"{ARCHIVE}:Stanford_Online_Products/Ebay_test.txt both list class 1 "
            f"({ARCHIVE}:Stanford_Online_Products/Ebay_train.txt line 2, "
            f"{ARCHIVE}:Stanford_Online_Products/Ebay_test.txt line 2)") in message


@pytest.mark.slow
def test_classes_not_numbered_train_first_are_refused(sample, tmp_path):
    lines = _text(sample, "Ebay_test.txt").splitlines()
    renumbered = [lines[0]] + [" ".join([i, "50" if c == "8" else c, s, p])
                               for i, c, s, p in (line.split(" ") for line in lines[1:])]
    source = _modified(sample, tmp_path, {
        "Stanford_Online_Products/Ebay_test.txt": ("\n".join(renumbered) + "\n").encode()})
    with pytest.raises(DatasetSourceError, match=r"classes 5\.\.8, as in the original release; "
                                                 r"got 1\.\.4 and 5\.\.7, 50"):
        _records(source, tmp_path)


@pytest.mark.slow
def test_a_class_in_two_super_classes_is_refused(sample, tmp_path):
    image_id, class_id, super_id, path = _text(sample, "Ebay_train.txt").splitlines()[2].split()
    other = 12 if super_id != "12" else 1
    source = _modified(sample, tmp_path, _with_line(
        sample, "Ebay_train.txt", 3, f"{image_id} {class_id} {other} {path}"))
    with pytest.raises(DatasetSourceError, match=f"Ebay_train.txt line 3: class {class_id} has "
                                                 f"super class {other}, but {super_id} on line 2"):
        _records(source, tmp_path)


@pytest.mark.slow
def test_an_image_listed_twice_is_refused(sample, tmp_path):
    path = _text(sample, "Ebay_train.txt").splitlines()[1].split()[3]
    source = _modified(sample, tmp_path,
                       _with_line(sample, "Ebay_train.txt", 3, f"2 1 1 {path}"))
    with pytest.raises(DatasetSourceError, match=f"line 3: image {path} is already listed in "
                                                 f".*Ebay_train.txt line 2"):
        _records(source, tmp_path)


@pytest.mark.slow
def test_an_archive_without_a_list_file_names_it(sample, tmp_path):
    source = _modified(sample, tmp_path, {"Stanford_Online_Products/Ebay_test.txt": None})
    with pytest.raises(DatasetSourceError, match="Ebay_test.txt does not exist"):
        _records(source, tmp_path)


def test_an_unreadable_archive_is_named(tmp_path):
    (tmp_path / ARCHIVE).write_bytes(b"not a zip archive")
    with pytest.raises(DatasetSourceError, match=f"{ARCHIVE}: not a readable zip"):
        _records(tmp_path, tmp_path)


@pytest.mark.slow
def test_a_damaged_member_is_named_and_extraction_is_not_marked_done(sample, tmp_path):
    member = "Stanford_Online_Products/Ebay_test.txt"
    data = (Path(sample.out_dir) / ARCHIVE).read_bytes()
    at = data.index(HEADER.encode(), data.index(member.encode()))  # its stored bytes
    (tmp_path / ARCHIVE).write_bytes(data[:at] + b"X" + data[at + 1:])
    with pytest.raises(DatasetSourceError, match=f"{ARCHIVE}: member {member} is unreadable"):
        _records(tmp_path, tmp_path)
    assert not (tmp_path / "work" / "extracted" / "Stanford_Online_Products.done").exists()


def test_extraction_never_writes_outside_the_work_dir(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    with zipfile.ZipFile(source / ARCHIVE, "w") as z:
        z.writestr("Stanford_Online_Products/../../escaped.txt", b"hi")
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
