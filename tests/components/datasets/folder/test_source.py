"""A user's own catalogue: class folders or a CSV, a seeded class-disjoint split; bad input."""
import hashlib
import shutil
from pathlib import Path

import pytest

from components.datasets import records
from components.datasets.folder import source as folder
from components.datasets.folder.sample import make_sample_data
from components.datasets.records import DatasetSourceError


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_sample_data(tmp_path_factory.mktemp("folder_sample") / "data", seed=5, corrupt=2)


@pytest.fixture(scope="module")
def csv_sample(tmp_path_factory):
    return make_sample_data(tmp_path_factory.mktemp("csv_sample") / "data", seed=5, corrupt=2,
                            csv=True)


def _records(source, **options):
    return list(folder.iter_records(str(source), "/unused", **options))


def _error(source, **options) -> str:
    with pytest.raises(DatasetSourceError) as e:
        _records(source, **options)
    return str(e.value)


def _digests(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _check_round_trip(sample, parsed):
    valid = {image_id for image_id, _, _ in sample.images}
    got = {(r["image_id"], r["class_id"], r["source_split"]) for r in parsed}
    assert set(sample.images) <= got
    assert {r["image_id"] for r in parsed} == valid | set(sample.corrupt)
    assert len(parsed) == sample.num_valid + len(sample.corrupt)
    for r in parsed:
        assert set(r) == set(records.record("p", "i", 0, "c"))
        assert Path(r["image_path"]).is_file()
        assert r["bbox"] == records.WHOLE_IMAGE and r["bbox_pixels"] is None
        assert (r["eval_role"], r["super_class"]) == ("", "")
        assert r["protocol_split"] == folder.split_of(r["class_name"], 0.5, 0)
        if r["image_id"] in valid:
            assert r["class_name"] == sample.class_names[r["image_id"]]
    # The image id is the path relative to source_dir, extension kept (the file's own name).
    assert all(Path(r["image_path"]).relative_to(sample.out_dir).as_posix()
               == r["image_id"] for r in parsed)
    assert all(i.endswith(".jpg") for i in sample.corrupt) and sample.corrupt


@pytest.mark.slow
def test_class_folder_sample_has_jpegs_pngs_and_stray_files(folders):
    out = Path(folders.out_dir)
    classes = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(classes) == 8 and "lamp, floor" in classes and "café table" in classes
    suffixes = {p.suffix for p in out.rglob("img_*")}
    assert {".jpg", ".png", ".JPG", ".jpeg"} <= suffixes
    assert (out / "armchair" / "detail").is_dir()  # images in a class's sub-folder
    assert (out / "README.txt").is_file() and (out / "armchair" / ".DS_Store").is_file()


@pytest.mark.slow
def test_parsing_class_folders_round_trips_every_image(folders):
    _check_round_trip(folders, _records(folders.out_dir))


@pytest.mark.slow
def test_csv_sample_puts_labels_only_in_the_csv(csv_sample):
    out = Path(csv_sample.out_dir)
    assert sorted(p.name for p in out.iterdir()) == ["images", "labels.csv"]
    lines = (out / "labels.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "path,label" and len(lines) == 1 + csv_sample.num_valid + 2
    assert any(line.endswith(',"lamp, floor"') for line in lines)  # quoted: it holds a comma


@pytest.mark.slow
@pytest.mark.parametrize("absolute", [False, True])
def test_parsing_the_csv_round_trips_every_image(csv_sample, absolute):
    labels = str(Path(csv_sample.out_dir) / "labels.csv") if absolute else "labels.csv"
    _check_round_trip(csv_sample, _records(csv_sample.out_dir, labels_csv=labels))


@pytest.mark.slow
def test_csv_paths_are_relative_to_the_csv_or_absolute(csv_sample, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(csv_sample.out_dir, source)
    images = sorted((source / "images").glob("*"))
    (source / "meta").mkdir()
    (source / "meta" / "labels.csv").write_text(
        "label,path\n"  # column order is free
        f"café table,../images/{images[0].name}\n"
        f"café table,{images[1]}\n"
        f"armchair,../images/{images[2].name}\n", encoding="utf-8")
    parsed = _records(source, labels_csv="meta/labels.csv", eval_fraction=0.5, split_seed=0)
    assert {r["image_id"] for r in parsed} == {f"images/{p.name}" for p in images[:3]}
    assert {r["class_name"] for r in parsed} == {"café table", "armchair"}


@pytest.mark.slow
@pytest.mark.parametrize("csv", [False, True])
def test_sample_files_are_byte_identical_for_a_seed(tmp_path, csv):
    a, b, c = (Path(make_sample_data(tmp_path / name, 3, 2, seed=seed, corrupt=2, csv=csv).out_dir)
               for name, seed in (("a", 1), ("b", 1), ("c", 2)))
    assert _digests(a) == _digests(b)
    assert _digests(a) != _digests(c)


@pytest.mark.slow
def test_skipped_files_are_counted_and_logged_once(folders, caplog):
    listing = folder.list_images(folders.out_dir)
    assert listing.ignored == folders.ignored and len(listing.ignored) == 5
    with caplog.at_level("INFO", logger="components.datasets.folder.source"):
        _records(folders.out_dir)
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1 and "skipped 5 file(s)" in lines[0]
    # Nothing is decoded here: the count is of files, and says the corrupt ones come apart.
    listed = len(folders.images) + len(folders.corrupt)
    assert f"{listed} image files in 8 classes" in lines[0], lines[0]
    assert f"{listed} images" not in lines[0] and "corrupt ones are counted and named apart" in lines[0]


@pytest.mark.slow
def test_class_ids_are_training_classes_sorted_then_evaluation_classes(folders):
    ids = {r["class_name"]: (r["class_id"], r["protocol_split"]) for r in _records(folders.out_dir)}
    train = sorted(n for n, (_, s) in ids.items() if s == "train")
    evaluation = sorted(n for n, (_, s) in ids.items() if s == "eval")
    assert train and evaluation
    assert [ids[n][0] for n in train + evaluation] == list(range(len(ids)))


def test_the_split_is_a_seeded_hash_of_the_class_name():
    for name in ("sofa", "lamp, floor", "café table"):
        digest = hashlib.sha256(f"7:{name}".encode()).digest()
        side = "eval" if int.from_bytes(digest[:8], "big") / 2 ** 64 < 0.3 else "train"
        assert folder.split_of(name, 0.3, 7) == side
    names = [f"class {i}" for i in range(40)]
    seed_0 = [folder.split_of(n, 0.5, 0) for n in names]
    assert seed_0 != [folder.split_of(n, 0.5, 1) for n in names]
    assert 10 < seed_0.count("eval") < 30


@pytest.mark.slow
def test_adding_classes_never_moves_an_old_class_between_splits(tmp_path):
    source = Path(make_sample_data(tmp_path / "data", num_classes=6, images_per_class=2).out_dir)
    before = {r["class_name"]: r["protocol_split"] for r in _records(source, split_seed=3)}
    image = next(source.glob("armchair/*.jpg"))
    for i in range(30):
        (source / f"new product {i}").mkdir()
        shutil.copy(image, source / f"new product {i}" / "a.jpg")
    after = {r["class_name"]: r["protocol_split"] for r in _records(source, split_seed=3)}
    assert len(after) == 36
    assert {name: after[name] for name in before} == before
    assert {"train", "eval"} <= {after[f"new product {i}"] for i in range(30)}


@pytest.mark.slow
def test_a_folder_without_images_is_not_a_class(folders, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(folders.out_dir, source)
    (source / "empty class").mkdir()
    assert "empty class" not in {r["class_name"] for r in _records(source)}


def test_files_differing_only_in_extension_are_two_images(tmp_path):
    for name in ("a/x.jpg", "a/x.png", "b/y.jpg", "b/truncated.JPG"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    ids = [image_id for _, image_id, _ in folder.list_images(str(tmp_path)).images]
    assert ids == ["a/x.jpg", "a/x.png", "b/truncated.JPG", "b/y.jpg"]


def test_missing_directory_is_named(tmp_path):
    message = _error(tmp_path / "nope")
    assert f"{tmp_path / 'nope'} does not exist" in message and "labels_csv" in message


def test_an_empty_directory_is_refused(tmp_path):
    assert f"{tmp_path} is empty" in _error(tmp_path)


def test_no_class_folders_names_what_was_found_and_the_csv_option(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"")
    (tmp_path / "labels.csv").write_text("path,label\n")
    message = _error(tmp_path)
    assert f"{tmp_path} has no class folders" in message
    assert "found: labels.csv, photo.jpg" in message and "labels_csv" in message


def test_class_folders_without_images_are_refused(tmp_path):
    (tmp_path / "sofa").mkdir()
    (tmp_path / "sofa" / "notes.txt").write_text("x")
    assert "no .jpg, .jpeg or .png image" in _error(tmp_path)


def _csv_source(tmp_path, text: str) -> Path:
    for name in ("a.jpg", "b.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "labels.csv").write_text(text)
    return tmp_path


@pytest.mark.parametrize("text, expected", [
    ("file,class\na.jpg,sofa\n",
     "line 1: the header must name the columns path and label; missing path, label in "
     "header 'file,class'"),
    ("path,label\na.jpg,sofa\nmissing.jpg,chair\n",
     "line 3: names image missing.jpg, which does not exist"),
    ("path,label\na.jpg,sofa\nb.png\n", "line 3: expected 2 fields (path,label), got 1"),
    ("path,label\na.jpg,sofa\nb.png,\n", "line 3: empty label"),
    ("path,label\na.jpg,sofa\nnotes.txt,chair\n", "line 3: notes.txt is not a .jpg, .jpeg or .png"),
    ("path,label\na.jpg,sofa\nb.png,chair\n./a.jpg,sofa\n",
     "line 4: image ./a.jpg is listed again (first on line 2)"),
    ("path,label\n", "lists no images"),
])
def test_csv_errors_name_the_file_and_line(tmp_path, text, expected):
    source = _csv_source(tmp_path, text)
    assert f"{source / 'labels.csv'}" in _error(source, labels_csv="labels.csv")
    assert expected in _error(source, labels_csv="labels.csv")


def test_a_missing_labels_csv_is_named(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    message = _error(tmp_path, labels_csv="labels.csv")
    assert f"labels_csv {tmp_path / 'labels.csv'} does not exist" in message
    assert "found in" in message and "a.jpg" in message


def test_a_single_class_cannot_be_split(tmp_path):
    (tmp_path / "sofa").mkdir()
    (tmp_path / "sofa" / "a.jpg").write_bytes(b"")
    assert "needs at least 2 classes, found 1 (sofa)" in _error(tmp_path)


@pytest.mark.slow
def test_a_split_left_empty_names_fraction_and_seed(folders):
    message = _error(folders.out_dir, eval_fraction=1e-12, split_seed=4)
    assert "eval_fraction=1e-12 with split_seed=4 puts all 8 classes in training" in message
    assert "change split_seed (or eval_fraction)" in message


@pytest.mark.slow
@pytest.mark.parametrize("options", [{"eval_fraction": 0}, {"eval_fraction": 1.5},
                                     {"split_seed": "7"}])
def test_bad_split_options_are_refused(folders, options):
    assert "folder source: " in _error(folders.out_dir, **options)
