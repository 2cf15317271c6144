"""DeepFashion In-shop Clothes Retrieval Benchmark: its list files parsed into records.

The user puts the benchmark's own files, unchanged, in ``source_dir``:

    img.zip                   (from Img/) members
                              img/<MEN|WOMEN>/<Category>/<item_id>/<NN>_<k>_<view>.jpg
    list_eval_partition.txt   (from Eval/) line 1 the number of images, line 2 the header
                              ``image_name item_id evaluation_status``, then one row per image:
                              ``img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train``
    list_bbox_inshop.txt      (from Anno/, optional) line 1 the count, line 2 the header
                              ``image_name clothes_type pose_type x_1 y_1 x_2 y_2``

The benchmark fixes a class-disjoint protocol: 3,997 training items (25,882 images)
and 3,985 test items whose 26,830 images are split into 14,218 queries and 12,612
gallery images. An item is a class. Records follow ``records.py``: training items
sorted by id take class ids 0..T-1, test items T.. (so the last training items can be
held out for model selection), test images carry their query/gallery role, and the
super class is the ``<MEN|WOMEN>/<Category>`` folder.

Everything is checked in the driver before any image is touched (list syntax, counts,
train/test disjointness, every listed image present in img.zip), so a bad source fails
in seconds with the file and line named; only then is img.zip extracted under the
work dir (idempotent, never outside it) for Beam, which decodes each image once.
Images are never opened here: boxes go out in pixels (``bbox_pixels``) for Beam to
normalise by the decoded size.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import zipfile
from typing import Iterator

import tensorflow as tf

from components.datasets import records
from components.datasets import source_dir as source_dir_lib
from components.datasets.records import DatasetSourceError

log = logging.getLogger(__name__)

IMAGES_ZIP = "img.zip"
PARTITION_FILE = "list_eval_partition.txt"
BBOX_FILE = "list_bbox_inshop.txt"
FILES = (IMAGES_ZIP, PARTITION_FILE)
PARTITION_HEADER = ("image_name", "item_id", "evaluation_status")
BBOX_HEADER = ("image_name", "clothes_type", "pose_type", "x_1", "y_1", "x_2", "y_2")
STATUSES = ("train", "query", "gallery")
# Where img.zip is extracted inside work_dir; the list's "img/..." names resolve under it.
EXTRACT_DIR = "inshop_images"


def check_source_dir(source_dir: str) -> dict[str, str]:
    """Paths of the In-shop files in ``source_dir`` (the bbox list only when present),
    or an error naming the directory, the expected files and what was found."""
    expected = (f"{IMAGES_ZIP} and {PARTITION_FILE} (from the benchmark's Img/ and Eval/ "
                f"folders), optionally {BBOX_FILE} (from Anno/), directly in it")

    def hint(found):
        # The benchmark's download keeps them in sub-folders; we read them flat.
        if {"Img", "Eval", "Anno"} & set(found):
            return " (copy them out of the benchmark's Img/, Eval/ and Anno/ folders)"
        return ""

    paths = source_dir_lib.check_source_dir(source_dir, "In-shop", FILES, expected, hint)
    if tf.io.gfile.exists(os.path.join(source_dir, BBOX_FILE)):
        paths[BBOX_FILE] = os.path.join(source_dir, BBOX_FILE)
    return paths


def _read_list(path: str, header: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """Rows of a DeepFashion list file as (1-based line number, fields).

    The format of every In-shop list: line 1 the number of rows, line 2 the column
    names, then whitespace-separated rows (the release pads names with spaces).
    """
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            lines = f.read().splitlines()
    except (OSError, tf.errors.OpError, UnicodeDecodeError) as e:
        raise DatasetSourceError(f"{path}: unreadable ({e})") from None
    what = (f"line 1 the number of images, line 2 the header '{' '.join(header)}', "
            f"then one row per image")
    if not lines or not lines[0].strip():
        raise DatasetSourceError(f"{path} line 1: expected the number of images; the file "
                                 f"{'is empty' if not lines else 'starts with a blank line'} "
                                 f"(expected {what})")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DatasetSourceError(
            f"{path} line 1: expected the number of images, got {lines[0].strip()[:80]!r} "
            f"(expected {what})") from None
    got_header = lines[1].split() if len(lines) > 1 else []
    if tuple(got_header) != header:
        raise DatasetSourceError(
            f"{path} line 2: expected the header '{' '.join(header)}', got "
            f"{' '.join(got_header)[:120]!r}")
    rows = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue  # a trailing blank line is harmless
        if len(fields) != len(header):
            raise DatasetSourceError(
                f"{path} line {number}: expected {len(header)} whitespace-separated fields "
                f"({' '.join(header)}), got {len(fields)}: {line.strip()[:120]!r}")
        rows.append((number, fields))
    if count != len(rows):
        raise DatasetSourceError(
            f"{path} line 1: says {count} images but the file lists {len(rows)}; "
            f"the file is truncated or was edited")
    return rows


def _check_image_name(path: str, number: int, name: str) -> None:
    # Names become paths under the extraction dir: refuse anything but the release's
    # img/<gender>/<category>/<item>/<file> shape (and so any "..").
    parts = name.split("/")
    if (len(parts) != 5 or parts[0] != "img"
            or any(p in ("", ".", "..") for p in parts) or "\\" in name):
        raise DatasetSourceError(
            f"{path} line {number}: image_name must look like "
            f"img/<MEN|WOMEN>/<Category>/<item_id>/<file>.jpg, got {name!r}")


def image_id_of(image_name: str) -> str:
    """'img/WOMEN/Dresses/id_00000002/02_1_front.jpg' -> 'WOMEN/Dresses/id_00000002/02_1_front'."""
    return posixpath.splitext(image_name[len("img/"):])[0]


def parse_partition(path: str) -> list[tuple[int, str, str, str]]:
    """list_eval_partition.txt as (line, image_name, item_id, status) rows, checked:
    count line, header, fields, statuses, unique images, train/test items disjoint."""
    rows = _read_list(path, PARTITION_HEADER)
    if not rows:
        raise DatasetSourceError(f"{path}: lists no images")
    seen: dict[str, int] = {}
    first_train: dict[str, int] = {}
    first_test: dict[str, int] = {}
    parsed = []
    for number, (name, item_id, status) in rows:
        if status not in STATUSES:
            raise DatasetSourceError(
                f"{path} line {number}: evaluation_status must be train, query or gallery, "
                f"got {status!r}")
        _check_image_name(path, number, name)
        if name in seen:
            raise DatasetSourceError(
                f"{path} line {number}: image {name} is listed again (first on line {seen[name]})")
        seen[name] = number
        (first_train if status == "train" else first_test).setdefault(item_id, number)
        parsed.append((number, name, item_id, status))
    both = sorted(set(first_train) & set(first_test))
    if both:
        item = both[0]
        raise DatasetSourceError(
            f"{path}: item {item} is both a training item (line {first_train[item]}) and a "
            f"query/gallery item (line {first_test[item]}); the benchmark's training and test "
            f"items must be disjoint ({len(both)} item(s) overlap)")
    return parsed


def parse_boxes(path: str) -> dict[str, tuple[int, tuple[int, int, int, int]]]:
    """list_bbox_inshop.txt as {image_name: (line, (x_1, y_1, x_2, y_2))} in pixels."""
    boxes = {}
    for number, fields in _read_list(path, BBOX_HEADER):
        name = fields[0]
        _check_image_name(path, number, name)
        try:
            values = [int(v) for v in fields[1:]]  # the release zero-pads: "050" is 50
        except ValueError:
            raise DatasetSourceError(
                f"{path} line {number}: clothes_type, pose_type, x_1, y_1, x_2, y_2 must be "
                f"integers, got {' '.join(fields[1:])!r}") from None
        if min(values[2:]) < 0:
            raise DatasetSourceError(
                f"{path} line {number}: x_1 y_1 x_2 y_2 must be pixel coordinates >= 0, "
                f"got {' '.join(fields[3:])}")
        if name in boxes:
            raise DatasetSourceError(
                f"{path} line {number}: image {name} is listed again (first on line "
                f"{boxes[name][0]})")
        boxes[name] = (number, tuple(values[2:]))
    return boxes


def _zip_names(zip_path: str) -> set[str]:
    try:
        with tf.io.gfile.GFile(zip_path, "rb") as f, zipfile.ZipFile(f) as archive:
            return {info.filename for info in archive.infolist() if not info.is_dir()}
    except (zipfile.BadZipFile, OSError, tf.errors.OpError) as e:
        raise DatasetSourceError(f"{zip_path}: not a readable zip archive ({e})") from None


def _safe_join(target: str, member: str) -> str:
    # Never write outside target, whatever names the archive or the list hold. (The
    # normalised path is only compared: normpath would turn gs://b into gs:/b.)
    path = os.path.join(target, member)
    if not os.path.normpath(path).startswith(os.path.normpath(target) + os.sep):
        raise DatasetSourceError(f"archive member {member!r} escapes the extraction dir")
    return path


def extract_images(zip_path: str, names: list[str], target: str) -> None:
    """Extract ``names`` from img.zip into ``target`` (names keep their img/... path).

    Idempotent across retries: a ``.done`` marker next to ``target`` records which
    members were extracted, so a finished extraction of the same list is skipped and
    an interrupted one is redone.
    """
    done = target + ".done"
    signature = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()
    if tf.io.gfile.exists(done):
        with tf.io.gfile.GFile(done, "r") as f:
            if f.read().strip() == signature:
                return
    log.info("extracting %d images from %s to %s", len(names), zip_path, target)
    made: set[str] = set()
    with tf.io.gfile.GFile(zip_path, "rb") as f, zipfile.ZipFile(f) as archive:
        for name in names:
            path = _safe_join(target, name)
            directory = os.path.dirname(path)
            if directory not in made:
                tf.io.gfile.makedirs(directory)
                made.add(directory)
            with tf.io.gfile.GFile(path, "wb") as out:
                out.write(archive.read(name))
    with tf.io.gfile.GFile(done, "w") as f:
        f.write(signature)


def iter_records(source_dir: str, work_dir: str) -> Iterator[dict]:
    """One ``records.record`` per listed image, in the partition file's order.

    All checks run before img.zip is extracted under ``work_dir``; see the module doc.
    """
    files = check_source_dir(source_dir)
    partition_path = files[PARTITION_FILE]
    rows = parse_partition(partition_path)

    zip_path = files[IMAGES_ZIP]
    in_zip = _zip_names(zip_path)
    for number, name, _, _ in rows:
        if name not in in_zip:
            example = sorted(in_zip)[:2]
            raise DatasetSourceError(
                f"{partition_path} line {number}: names image {name}, which is not in "
                f"{zip_path} (it holds {len(in_zip)} files"
                f"{', e.g. ' + ', '.join(example) if example else ''})")

    boxes = {}
    if BBOX_FILE in files:
        bbox_path = files[BBOX_FILE]
        boxes = parse_boxes(bbox_path)
        for number, name, _, _ in rows:
            if name not in boxes:
                raise DatasetSourceError(
                    f"{bbox_path}: has no box for image {name} ({partition_path} line "
                    f"{number}); the two lists must cover the same images")
    else:
        log.info("In-shop: no %s in %s; every image's box is the whole image",
                 BBOX_FILE, source_dir)

    train_items = sorted({item for _, _, item, status in rows if status == "train"})
    test_items = sorted({item for _, _, item, status in rows if status != "train"})
    class_ids = {item: i for i, item in enumerate(train_items + test_items)}
    roles: dict[str, set[str]] = {item: set() for item in test_items}
    for _, _, item, status in rows:
        if status != "train":
            roles[item].add(status)
    # Every test item should have a query and a gallery image (the benchmark's do);
    # one without either cannot be scored, which Recall@K would silently absorb.
    lacking = [item for item in test_items if roles[item] != {"query", "gallery"}]
    if lacking:
        log.warning("In-shop: %d test item(s) lack a query or a gallery image, e.g. %s",
                    len(lacking), ", ".join(lacking[:5]))
    degenerate = [name for _, name, _, _ in rows if name in boxes
                  and (boxes[name][1][2] <= boxes[name][1][0]
                       or boxes[name][1][3] <= boxes[name][1][1])]
    if degenerate:
        # An empty box would crop to nothing: those images use the whole image instead.
        log.warning("In-shop: %d box(es) in %s are empty (x_2 <= x_1 or y_2 <= y_1), using "
                    "the whole image for them, e.g. %s", len(degenerate),
                    files.get(BBOX_FILE), ", ".join(degenerate[:3]))
    degenerate = set(degenerate)

    target = os.path.join(work_dir, EXTRACT_DIR)
    extract_images(zip_path, [name for _, name, _, _ in rows], target)
    log.info("In-shop: %d images, %d training items, %d test items (%d query, %d gallery "
             "images)%s", len(rows), len(train_items), len(test_items),
             sum(status == "query" for *_, status in rows),
             sum(status == "gallery" for *_, status in rows),
             ", boxes from " + files[BBOX_FILE] if boxes else "")
    for _, name, item, status in rows:
        parts = name.split("/")
        box = boxes.get(name)
        yield records.record(
            image_path=os.path.join(target, *parts),
            image_id=image_id_of(name),
            class_id=class_ids[item],
            class_name=item,
            bbox_pixels=box[1] if box and name not in degenerate else None,
            source_split=status,
            protocol_split="train" if status == "train" else "eval",
            eval_role="" if status == "train" else status,
            super_class=f"{parts[1]}/{parts[2]}",
        )
