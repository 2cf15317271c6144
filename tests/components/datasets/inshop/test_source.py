"""In-shop Clothes Retrieval: sample files in the benchmark's layout, parsed into records;
bad input."""
import hashlib
import io
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from components.datasets import records
from components.datasets.inshop import source as inshop
from components.datasets.inshop.sample import make_sample_data
from components.datasets.records import DatasetSourceError

MEMBER = re.compile(r"img/(MEN|WOMEN)/[A-Za-z_]+/id_\d{8}/\d{2}_\d_[a-z]+\.jpg")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return make_sample_data(tmp_path_factory.mktemp("inshop_sample"), num_classes=8,
                            images_per_class=4, seed=3, corrupt=2)


@pytest.fixture(scope="module")
def parsed(sample, tmp_path_factory):
    return list(inshop.iter_records(sample.out_dir, str(tmp_path_factory.mktemp("inshop_work"))))


def _copy(sample, tmp_path) -> Path:
    out = tmp_path / "source"
    shutil.copytree(sample.out_dir, out)
    return out


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def _error(source, tmp_path) -> str:
    with pytest.raises(DatasetSourceError) as e:
        list(inshop.iter_records(str(source), str(tmp_path / "work")))
    return str(e.value)


@pytest.mark.slow
def test_sample_data_has_the_benchmark_layout(sample):
    out = Path(sample.out_dir)
    assert sorted(p.name for p in out.iterdir()) == [
        "img.zip", "list_bbox_inshop.txt", "list_eval_partition.txt"]
    with zipfile.ZipFile(out / "img.zip") as archive:
        names = archive.namelist()
        files = [n for n in names if not n.endswith("/")]
        assert all(MEMBER.fullmatch(n) for n in files), files
        assert "img/" in names  # directory entries, as zip tools write them
        with Image.open(io.BytesIO(archive.read(files[0]))) as image:
            assert (image.format, image.size) == ("JPEG", (256, 256))
    partition = _lines(out / "list_eval_partition.txt")
    assert partition[1] == "image_name item_id evaluation_status"
    assert int(partition[0]) == len(partition) - 2 == len(files)
    assert sorted(line.split()[0] for line in partition[2:]) == sorted(files)
    bbox = _lines(out / "list_bbox_inshop.txt")
    assert bbox[1] == "image_name clothes_type pose_type x_1 y_1 x_2 y_2"
    assert int(bbox[0]) == len(bbox) - 2 == len(files)
    # Rows as the release writes them: names padded to a column, zero-padded pixels.
    assert re.fullmatch(r"img/\S+ +id_\d{8} (train|query|gallery)", partition[2])
    assert re.fullmatch(r"img/\S+ +[123]  [1-6](  \d{3}){4}", bbox[2])


@pytest.mark.slow
def test_sample_splits_items_and_test_images_as_the_benchmark_does(sample):
    rows = [line.split() for line in _lines(Path(sample.out_dir) / "list_eval_partition.txt")[2:]]
    train = {item for _, item, status in rows if status == "train"}
    test = {item for _, item, status in rows if status != "train"}
    assert len(train) == len(test) == 4 and not train & test
    for item in test:
        assert {status for _, i, status in rows if i == item} == {"query", "gallery"}
    # Each item's folder is named by its id.
    assert all(name.split("/")[3] == item for name, item, _ in rows)


@pytest.mark.slow
def test_parsing_round_trips_every_image_of_the_sample(sample, parsed):
    got = {(r["image_id"], r["class_id"], r["source_split"]) for r in parsed}
    assert set(sample.images) <= got and len(parsed) == sample.num_valid + len(sample.corrupt)
    assert {r["image_id"] for r in parsed} - {i for i, _, _ in sample.images} == set(sample.corrupt)
    for r in parsed:
        assert set(r) == set(records.record("p", "i", 0, "c"))
        assert r["protocol_split"] == ("train" if r["source_split"] == "train" else "eval")
        assert r["eval_role"] == ("" if r["source_split"] == "train" else r["source_split"])
        assert r["class_name"] == r["image_id"].split("/")[2]
        assert Path(r["image_path"]).is_file()
        if r["image_id"] in sample.boxes:
            assert r["super_class"] == sample.super_classes[r["image_id"]]
            assert r["bbox_pixels"] == tuple(map(float, sample.boxes[r["image_id"]]))
            assert r["bbox"] is None
    # The extracted file is the zip's member, byte for byte.
    first = parsed[0]
    with zipfile.ZipFile(Path(sample.out_dir) / "img.zip") as archive:
        assert Path(first["image_path"]).read_bytes() == archive.read(
            f"img/{first['image_id']}.jpg")


@pytest.mark.slow
def test_training_items_take_the_first_class_ids_each_range_sorted_by_item(parsed):
    listed = list(dict.fromkeys(r["class_name"] for r in parsed))
    assert listed != sorted(listed)  # the premise: the list is not in item order
    ids = {}
    for r in parsed:
        assert ids.setdefault(r["class_name"], (r["class_id"], r["protocol_split"])) == \
            (r["class_id"], r["protocol_split"])
    train = sorted(name for name, (_, split) in ids.items() if split == "train")
    test = sorted(name for name, (_, split) in ids.items() if split == "eval")
    assert [ids[n][0] for n in train] == list(range(len(train)))
    assert [ids[n][0] for n in test] == list(range(len(train), len(train) + len(test)))


@pytest.mark.slow
def test_without_the_bbox_list_every_box_is_the_whole_image(sample, tmp_path):
    source = _copy(sample, tmp_path)
    (source / "list_bbox_inshop.txt").unlink()
    assert inshop.BBOX_FILE not in inshop.check_source_dir(str(source))
    parsed = list(inshop.iter_records(str(source), str(tmp_path / "work")))
    assert {(r["bbox"], r["bbox_pixels"]) for r in parsed} == {(records.WHOLE_IMAGE, None)}


@pytest.mark.slow
def test_sample_data_is_byte_identical_for_a_seed(tmp_path):
    def digests(seed, name):
        out = Path(make_sample_data(tmp_path / name, 3, 2, seed=seed, corrupt=2).out_dir)
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    a, b, c = digests(1, "a"), digests(1, "b"), digests(2, "c")
    assert a == b and len(a) == 3
    assert a["img.zip"] != c["img.zip"]


@pytest.mark.slow
def test_corrupt_files_are_listed_half_truncated_half_not_images(sample):
    assert len(sample.corrupt) == 2
    with zipfile.ZipFile(Path(sample.out_dir) / "img.zip") as archive:
        data = [archive.read(f"img/{image_id}.jpg") for image_id in sample.corrupt]
    assert data[0][:2] == b"\xff\xd8"          # a JPEG header, cut short
    assert data[1].startswith(b"this is not an image")
    listed = (Path(sample.out_dir) / "list_eval_partition.txt").read_text()
    assert all(f"img/{image_id}.jpg" in listed for image_id in sample.corrupt)


@pytest.mark.slow
def test_extraction_is_done_once_and_stays_in_the_work_dir(sample, tmp_path):
    work = tmp_path / "work"
    first = list(inshop.iter_records(sample.out_dir, str(work)))
    assert sorted(p.name for p in work.iterdir()) == ["inshop_images", "inshop_images.done"]
    marked = Path(first[0]["image_path"])
    marked.write_bytes(b"left alone")  # a second run must not extract again
    second = list(inshop.iter_records(sample.out_dir, str(work)))
    assert second == first and marked.read_bytes() == b"left alone"


def test_an_archive_member_escaping_the_work_dir_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "img.zip", "w") as archive:
        archive.writestr("../evil.jpg", b"x")
    with pytest.raises(DatasetSourceError, match="escapes the extraction dir"):
        inshop.extract_images(str(tmp_path / "img.zip"), ["../evil.jpg"], str(tmp_path / "t"))
    assert not (tmp_path / "evil.jpg").exists()


def test_missing_directory_names_the_expected_files(tmp_path):
    with pytest.raises(DatasetSourceError) as e:
        inshop.check_source_dir(str(tmp_path / "nope"))
    assert "does not exist" in str(e.value)
    assert "img.zip" in str(e.value) and "list_eval_partition.txt" in str(e.value)


@pytest.mark.slow
def test_missing_file_is_named_with_what_was_found(sample, tmp_path):
    shutil.copy(Path(sample.out_dir) / "img.zip", tmp_path / "img.zip")
    (tmp_path / "Eval").mkdir()
    with pytest.raises(DatasetSourceError) as e:
        inshop.check_source_dir(str(tmp_path))
    message = str(e.value)
    assert f"{tmp_path} is missing list_eval_partition.txt" in message
    assert "found: Eval, img.zip" in message
    assert "Eval/" in message  # the hint: the benchmark's download keeps lists in folders


@pytest.mark.slow
def test_a_listed_image_not_in_the_zip_is_refused_naming_file_line_and_image(sample, tmp_path):
    source = _copy(sample, tmp_path)
    path = source / "list_eval_partition.txt"
    lines = _lines(path)
    missing = "img/WOMEN/Dresses/id_09999999/01_1_front.jpg"
    lines[0] = str(int(lines[0]) + 1)
    lines.insert(5, f"{missing} id_09999999 train")
    _write_lines(path, lines)
    message = _error(source, tmp_path)
    assert f"{path} line 6: names image {missing}, which is not in {source / 'img.zip'}" in message


@pytest.mark.slow
@pytest.mark.parametrize("row, expected", [
    ("img/WOMEN/Dresses/id_00000001/01_1_front.jpg id_00000001",
     "line 3: expected 3 whitespace-separated fields "
     "(image_name item_id evaluation_status), got 2"),
    ("img/WOMEN/Dresses/id_00000001/01_1_front.jpg id_00000001 test",
     "line 3: evaluation_status must be train, query or gallery, got 'test'"),
    ("img/../../etc/passwd/x.jpg id_00000001 train", "line 3: image_name must look like"),
    ("WOMEN/Dresses/id_00000001/01_1_front.jpg id_00000001 train",
     "line 3: image_name must look like"),
])
def test_a_malformed_partition_line_is_named(sample, tmp_path, row, expected):
    source = _copy(sample, tmp_path)
    path = source / "list_eval_partition.txt"
    lines = _lines(path)
    lines[2] = row
    _write_lines(path, lines)
    assert f"{path} {expected}" in _error(source, tmp_path)


@pytest.mark.slow
def test_a_malformed_bbox_line_is_named(sample, tmp_path):
    source = _copy(sample, tmp_path)
    path = source / "list_bbox_inshop.txt"
    lines = _lines(path)
    lines[4] = lines[4].rsplit(" ", 1)[0] + " 2x5"
    _write_lines(path, lines)
    assert f"{path} line 5: clothes_type, pose_type, x_1, y_1, x_2, y_2 must be integers" in \
        _error(source, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["list_eval_partition.txt", "list_bbox_inshop.txt"])
def test_the_count_line_must_match_the_rows(sample, tmp_path, name):
    source = _copy(sample, tmp_path)
    path = source / name
    lines = _lines(path)
    rows = len(lines) - 2
    _write_lines(path, [str(rows + 1)] + lines[1:])
    assert f"{path} line 1: says {rows + 1} images but the file lists {rows}" in \
        _error(source, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("line, index, expected", [
    ("fifty", 0, "line 1: expected the number of images, got 'fifty'"),
    ("image_name item evaluation_status", 1,
     "line 2: expected the header 'image_name item_id evaluation_status', got "
     "'image_name item evaluation_status'"),
])
def test_count_and_header_lines_are_checked(sample, tmp_path, line, index, expected):
    source = _copy(sample, tmp_path)
    path = source / "list_eval_partition.txt"
    lines = _lines(path)
    lines[index] = line
    _write_lines(path, lines)
    assert f"{path} {expected}" in _error(source, tmp_path)


@pytest.mark.slow
def test_an_item_in_both_training_and_test_is_refused_naming_it(sample, tmp_path):
    source = _copy(sample, tmp_path)
    path = source / "list_eval_partition.txt"
    lines = _lines(path)
    rows = [line.split() for line in lines[2:]]
    train_item = next(item for _, item, status in rows if status == "train")
    # Relabel one test image as belonging to a training item.
    at = next(i for i, (_, _, status) in enumerate(rows) if status == "query")
    lines[at + 2] = f"{rows[at][0]} {train_item} query"
    _write_lines(path, lines)
    message = _error(source, tmp_path)
    assert f"item {train_item} is both a training item" in message
    assert f"query/gallery item (line {at + 3})" in message


@pytest.mark.slow
def test_an_image_listed_twice_is_refused(sample, tmp_path):
    source = _copy(sample, tmp_path)
    path = source / "list_eval_partition.txt"
    lines = _lines(path)
    _write_lines(path, [str(int(lines[0]) + 1)] + lines[1:] + [lines[2]])
    assert f"line {len(lines) + 1}: image {lines[2].split()[0]} is listed again (first on " \
           f"line 3)" in _error(source, tmp_path)


@pytest.mark.slow
def test_a_bbox_list_without_a_listed_image_is_refused(sample, tmp_path):
    source = _copy(sample, tmp_path)
    path = source / "list_bbox_inshop.txt"
    lines = _lines(path)
    dropped = lines.pop(3).split()[0]
    _write_lines(path, [str(int(lines[0]) - 1)] + lines[1:])
    message = _error(source, tmp_path)
    assert f"{path}: has no box for image {dropped}" in message


@pytest.mark.slow
def test_a_damaged_zip_is_refused_naming_it(sample, tmp_path):
    source = _copy(sample, tmp_path)
    (source / "img.zip").write_bytes(b"not a zip")
    assert f"{source / 'img.zip'}: not a readable zip archive" in _error(source, tmp_path)


@pytest.mark.slow
def test_an_empty_box_falls_back_to_the_whole_image(sample, tmp_path, caplog):
    source = _copy(sample, tmp_path)
    path = source / "list_bbox_inshop.txt"
    lines = _lines(path)
    name, clothes, pose, *_ = lines[2].split()
    lines[2] = f"{name} {clothes} {pose} 100 050 100 200"  # x_2 == x_1: no width
    _write_lines(path, lines)
    with caplog.at_level("WARNING", logger="components.datasets.inshop.source"):
        parsed = {r["image_id"]: r for r in inshop.iter_records(str(source), str(tmp_path / "w"))}
    image_id = inshop.image_id_of(name)
    record = parsed[image_id]
    assert (record["bbox"], record["bbox_pixels"]) == (records.WHOLE_IMAGE, None)
    assert "1 box(es)" in caplog.text and name in caplog.text
