"""CUB-200-2011 from its original archive: one record per image, before any image is read.

The user downloads ``CUB_200_2011.tgz`` (Caltech's release) into the source directory.
Inside, ``CUB_200_2011/`` holds the list files this module reads:

    images.txt              <image_id> <class folder>/<file>.jpg
    image_class_labels.txt  <image_id> <class_id>            (classes 1..200)
    train_test_split.txt    <image_id> <is_training_image>   (1 = train, 0 = test)
    bounding_boxes.txt      <image_id> <x> <y> <width> <height>   (pixels, from the top left)
    classes.txt             <class_id> <class name>          (e.g. 001.Black_footed_Albatross)
    images/<NNN.Name>/<file>.jpg

and README, attributes/, parts/ (and ``attributes.txt`` beside ``CUB_200_2011/``), which
retrieval does not use. Records: class_id = CUB class id - 1; image_id = the image's path
under images/ without extension (stable across releases and runs); source_split from
train_test_split.txt; protocol_split None, since retrieval on CUB splits by class ranges
(1-100 train, 101-200 eval) set in the configuration; bbox_pixels = (x, y, x+w, y+h).

Why not TFDS's ``caltech_birds2011`` builder (unlike Cars196, whose TFDS code we reuse):
its ``_split_generators`` requires the separate segmentations archive (it decodes every
mask PNG with OpenCV), and its ``_generate_examples`` takes each image's size from its
mask to normalise the box and reads every image out of the archive; its list parsing
zips the three list files by line position and keys boxes by file-name stem, with no
line-level errors. Here the list files are parsed directly, joined by image id, and every
line is checked; ``tests/components/datasets/cub200/test_source.py`` shows TFDS's own list parsing agrees on
the sample data. Images are never opened here: Beam decodes each once and normalises the
pixel box by the decoded size.
"""

from __future__ import annotations

import math
import os
import tarfile
import zlib
from typing import Callable, Iterator

import tensorflow as tf

from components.datasets import records
from components.datasets import source_dir as source_dir_lib
from components.datasets.archive import ArchiveError
from components.datasets.local_files import LocalFiles
from components.datasets.records import DatasetSourceError

ARCHIVE = "CUB_200_2011.tgz"
FILES = (ARCHIVE,)
ROOT = "CUB_200_2011"        # the archive's top directory
IMAGES_DIR = "images"        # under ROOT; images.txt paths are relative to it

IMAGES_TXT = "images.txt"
LABELS_TXT = "image_class_labels.txt"
SPLIT_TXT = "train_test_split.txt"
BOXES_TXT = "bounding_boxes.txt"
CLASSES_TXT = "classes.txt"
LIST_FILES = (IMAGES_TXT, LABELS_TXT, SPLIT_TXT, BOXES_TXT, CLASSES_TXT)


def check_source_dir(source_dir: str) -> dict[str, str]:
    """Paths of the CUB-200-2011 files in ``source_dir``, or an error naming what was found."""
    return source_dir_lib.check_source_dir(source_dir, "CUB-200-2011", FILES,
                                           f"{', '.join(FILES)} (Caltech's release)")


def extract(source_dir: str, work_dir: str) -> str:
    """Extract the archive under ``work_dir`` once; returns the path of its ``CUB_200_2011/``.

    The shared ``.tgz`` extractor (``local_files.LocalFiles``, also Cars196's): idempotent
    (a ``.done`` marker, written last, so an interrupted extraction is redone) and it
    refuses members that would land outside the target directory.
    """
    files = check_source_dir(source_dir)
    try:
        # Every member as a file: the list files name the images by path.
        local = LocalFiles(files, os.path.join(work_dir, "extracted"),
                           images_in_archive=False)
        target = local.download_and_extract(ARCHIVE)
        local.wait(target)
    except DatasetSourceError as e:  # the shared extractor's error
        if isinstance(e.__cause__, ArchiveError):
            raise DatasetSourceError(f"{ARCHIVE}: not a readable gzip'd tar archive "
                                     f"({e.__cause__.reason})") from None
        raise DatasetSourceError(f"{ARCHIVE}: {e}") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DatasetSourceError(f"{ARCHIVE}: not a readable gzip'd tar archive ({e})") from None
    return os.path.join(target, ROOT)


def _lines(root: str, name: str) -> Iterator[tuple[int, list[str], str]]:
    """(1-based line number, whitespace-separated fields, where) of each non-blank line."""
    where = f"{ARCHIVE}:{ROOT}/{name}"
    path = os.path.join(root, name)
    if not tf.io.gfile.exists(path):
        raise DatasetSourceError(f"{ARCHIVE} has no {ROOT}/{name}; the archive is incomplete "
                                 f"(expected {', '.join(LIST_FILES)} in {ROOT}/)")
    with tf.io.gfile.GFile(path, "r") as f:
        text = f.read()
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line.split(), f"{where} line {number}"


def _table(root: str, name: str, layout: str, parse: Callable[[list[str]], object]
           ) -> dict[int, tuple[int, object]]:
    """A list file keyed by its first column: {id: (line number, parsed rest of the line)}.

    ``layout`` is the expected line, one field per space-separated part, quoted in
    errors; ``parse`` raises ValueError on bad fields. Ids must be positive integers, each
    on one line only.
    """
    num_fields = len(layout.split())
    table: dict[int, tuple[int, object]] = {}
    for number, fields, where in _lines(root, name):
        try:
            key = int(fields[0])
            if key < 1 or len(fields) != num_fields:
                raise ValueError
            value = parse(fields[1:])
        except ValueError:
            raise DatasetSourceError(
                f"{where}: expected '{layout}', got {' '.join(fields)!r}") from None
        if key in table:
            raise DatasetSourceError(
                f"{where}: id {key} is already on line {table[key][0]}")
        table[key] = (number, value)
    return table


def _image_path(fields: list[str]) -> str:
    path = fields[0]
    parts = path.split("/")
    # <class folder>/<file>: never absolute, never climbing out of images/.
    if len(parts) != 2 or not all(parts) or ".." in parts or "\\" in path:
        raise ValueError(path)
    return path


def _box(fields: list[str]) -> tuple[float, float, float, float]:
    x, y, width, height = (float(v) for v in fields)
    if not all(math.isfinite(v) for v in (x, y, width, height)) or width < 0 or height < 0:
        raise ValueError(fields)
    return x, y, width, height


def _is_training(fields: list[str]) -> bool:
    if fields[0] not in ("0", "1"):
        raise ValueError(fields[0])
    return fields[0] == "1"


def _walk_files(directory: str) -> set[str]:
    """Every file under ``directory`` as a '/'-separated relative path (one listing)."""
    found = set()
    for root, _, names in tf.io.gfile.walk(directory):
        relative = os.path.relpath(root, directory).replace(os.sep, "/")
        prefix = "" if relative == "." else relative + "/"
        found.update(prefix + n for n in names)
    return found


def iter_records(source_dir: str, work_dir: str) -> Iterator[dict]:
    """One ``records.record`` per image of images.txt, in its order."""
    root = extract(source_dir, work_dir)
    images = _table(root, IMAGES_TXT, "<image_id> <class_folder/file.jpg>", _image_path)
    labels = _table(root, LABELS_TXT, "<image_id> <class_id>", lambda f: int(f[0]))
    splits = _table(root, SPLIT_TXT, "<image_id> <is_training_image:0|1>", _is_training)
    boxes = _table(root, BOXES_TXT, "<image_id> <x> <y> <width> <height>", _box)
    classes = _table(root, CLASSES_TXT, "<class_id> <class_name>", lambda f: f[0])

    # The files are joined by image id (not by line position): every image needs a line
    # in each, and no file may name an image images.txt does not list.
    # A stray id is reported first: it names the line at fault.
    for name, table in ((LABELS_TXT, labels), (SPLIT_TXT, splits), (BOXES_TXT, boxes)):
        for image_id, (line, _) in table.items():
            if image_id not in images:
                raise DatasetSourceError(
                    f"{ARCHIVE}:{ROOT}/{name} line {line}: image id {image_id} is not in "
                    f"{IMAGES_TXT}")
        for image_id, (line, path) in images.items():
            if image_id not in table:
                raise DatasetSourceError(
                    f"{ARCHIVE}:{ROOT}/{name} has no line for image {image_id} "
                    f"({path}, {IMAGES_TXT} line {line})")

    # image_id (the record's) is the path: two lines naming one file would collide.
    first_line: dict[str, int] = {}
    for line, path in images.values():
        if path in first_line:
            raise DatasetSourceError(
                f"{ARCHIVE}:{ROOT}/{IMAGES_TXT} line {line}: image {path} is already on line "
                f"{first_line[path]}")
        first_line[path] = line

    images_dir = os.path.join(root, IMAGES_DIR)
    present = _walk_files(images_dir)  # one listing, not a stat per image
    for image_id, (line, path) in images.items():
        label_line, class_id = labels[image_id]
        if class_id not in classes:
            raise DatasetSourceError(
                f"{ARCHIVE}:{ROOT}/{LABELS_TXT} line {label_line}: class {class_id} is not "
                f"in {CLASSES_TXT}")
        class_name = classes[class_id][1]
        # A class's images lie in its folder: a mismatch means the list files disagree.
        if path.split("/")[0] != class_name:
            raise DatasetSourceError(
                f"{ARCHIVE}:{ROOT}/{LABELS_TXT} line {label_line}: image {image_id} is "
                f"labelled class {class_id} ({class_name}) but {IMAGES_TXT} line {line} "
                f"puts it in folder {path.split('/')[0]}")
        if path not in present:
            raise DatasetSourceError(
                f"{ARCHIVE}:{ROOT}/{IMAGES_TXT} line {line} names image {path}, which is not "
                f"in the archive's {ROOT}/{IMAGES_DIR}/")
        x, y, width, height = boxes[image_id][1]
        yield records.record(
            image_path=os.path.join(images_dir, *path.split("/")),
            image_id=os.path.splitext(path)[0],
            class_id=class_id - 1,
            class_name=class_name,
            bbox_pixels=(x, y, x + width, y + height),
            source_split="train" if splits[image_id][1] else "test",
            protocol_split=None,
        )
