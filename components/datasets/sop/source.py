"""Stanford Online Products (SOP) from its original archive, parsed by TFDS's own code.

The user downloads ``Stanford_Online_Products.zip`` into the source directory. Inside,
``Stanford_Online_Products/`` holds

    Ebay_train.txt, Ebay_test.txt, Ebay_info.txt
        header ``image_id class_id super_class_id path``, then one line per image, e.g.
        ``1 1 1 bicycle_final/111085122871_0.JPG``
    <super class>_final/<eBay product id>_<n>.JPG

11,318 training products (class ids 1..11318) and 11,316 test products (11319..22634) in
12 super-classes (TFDS's ``_SUPER_CLASSES``, ids 1..12 in that order).

As for Cars196, TFDS's ``stanford_online_products`` builder is subclassed and only *where
the file comes from* is replaced: a download-manager stand-in extracts the local zip
(``_LocalZip``, the zip equivalent of ``local_files.LocalFiles``), then TFDS's own
``_split_generators`` and ``_generate_examples`` read Ebay_train.txt and Ebay_test.txt
(neither opens an image). Before TFDS reads a file, every line is checked here, since TFDS
reports a malformed line as a bare ValueError/IndexError with no file or line; and the two
files are checked against each other (disjoint classes, numbered as records.py asks).

Records: class_id = SOP class_id - 1, so training classes are 0..T-1 and test classes T..
(contiguous, as records.py requires); class_name = "<super class> <SOP class id>", e.g.
"bicycle 1" (a product has no name in SOP; its super class and SOP's own id identify it
for a person); image_id = path without extension (e.g. "bicycle_final/111085122871_0");
source_split "train"/"test" and protocol_split "train"/"eval" from the file; super_class the
super-class name; bbox the whole image (SOP has no boxes); eval_role "" (SOP's protocol
queries every test image against all the others).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import shutil
import zipfile
import zlib
from typing import Iterator

import tensorflow as tf
from tensorflow_datasets.datasets.stanford_online_products import (
    stanford_online_products_dataset_builder as tfds_sop)

from components.datasets import records
from components.datasets import source_dir as source_dir_lib
from components.datasets.records import DatasetSourceError

log = logging.getLogger(__name__)

ARCHIVE = "Stanford_Online_Products.zip"
FILES = (ARCHIVE,)
ROOT = "Stanford_Online_Products"  # the archive's top directory
HEADER = ("image_id", "class_id", "super_class_id", "path")
SUPER_CLASSES = tuple(tfds_sop._SUPER_CLASSES)
# TFDS split name -> (list file, source_split, protocol_split)
SPLITS = {"train": ("Ebay_train.txt", "train", "train"),
          "test": ("Ebay_test.txt", "test", "eval")}


def check_source_dir(source_dir: str) -> dict[str, str]:
    """Paths of the SOP files in ``source_dir``, or an error naming what was found."""
    return source_dir_lib.check_source_dir(source_dir, "Stanford Online Products", FILES,
                                           f"{', '.join(FILES)} (Stanford's release)")


class _LocalZip:
    """Stands in for TFDS's DownloadManager: 'downloads' are local zips, extracted once.

    Like ``local_files.LocalFiles`` (for .tgz): idempotent across retries (a ``.done``
    marker written last, so an interrupted extraction is redone) and never writing outside
    the target directory, whatever names the archive holds.
    """

    def __init__(self, files: dict[str, str], extract_dir: str):
        self._files = files
        self._extract_dir = extract_dir

    def download_and_extract(self, url_or_urls):
        return tf.nest.map_structure(self._resolve, url_or_urls)

    def _resolve(self, url: str) -> str:
        name = os.path.basename(url)
        path = self._files[name]
        target = os.path.join(self._extract_dir, name[: -len(".zip")])
        done = target + ".done"
        if tf.io.gfile.exists(done):
            return target
        log.info("extracting %s to %s", path, target)
        with tf.io.gfile.GFile(path, "rb") as f:
            try:  # reads the central directory, at the end: a cut download fails here
                archive = zipfile.ZipFile(f)
            except (zipfile.BadZipFile, EOFError, tf.errors.OpError) as e:
                raise DatasetSourceError(f"{name}: not a readable zip archive ({e})") from None
            with archive:
                for info in archive.infolist():
                    try:
                        _extract_zip_member(archive, info, target, name)
                    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
                        raise DatasetSourceError(
                            f"{name}: member {info.filename} is unreadable ({e})") from None
        with tf.io.gfile.GFile(done, "w") as f:
            f.write("ok")
        return target


def _extract_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: str,
                        archive_name: str) -> None:
    # Never write outside target: no absolute names, no '..', no backslash tricks. The name
    # is normalised alone, not joined to target first: normpath would mangle gs://.
    relative = posixpath.normpath(info.filename.replace("\\", "/"))
    if posixpath.isabs(relative) or relative == ".." or relative.startswith("../"):
        raise DatasetSourceError(
            f"{archive_name}: archive member {info.filename!r} escapes the extraction dir")
    if relative == ".":
        return
    path = os.path.join(target, *relative.split("/"))
    if info.is_dir():
        tf.io.gfile.makedirs(path)
        return
    tf.io.gfile.makedirs(os.path.dirname(path))
    # Streamed: SOP's members are small, but the archive is 3 GB.
    with archive.open(info) as source, tf.io.gfile.GFile(path, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)


class LocalStanfordOnlineProducts(tfds_sop.Builder, skip_registration=True):
    """TFDS's stanford_online_products builder reading the zip from a local directory."""

    # TFDS finds a builder's README/CITATIONS next to its module: use the original's.
    pkg_dir_path = tfds_sop.Builder._get_pkg_dir_path()

    def __init__(self, source_dir: str, work_dir: str, **kwargs):
        self._source_files = check_source_dir(source_dir)
        self._work_dir = work_dir
        super().__init__(data_dir=os.path.join(work_dir, "tfds"), **kwargs)

    def split_gen_kwargs(self) -> dict[str, dict]:
        """TFDS's own split generators over the local zip: {split: gen_kwargs}."""
        local = _LocalZip(self._source_files, os.path.join(self._work_dir, "extracted"))
        return {g.name: g.gen_kwargs for g in self._split_generators(local)}


@dataclasses.dataclass(frozen=True)
class _Row:
    line: int
    class_id: int
    super_class_id: int
    path: str


def check_list_file(file_path: str, display_name: str | None = None) -> list[_Row]:
    """Every image line of an Ebay_*.txt file, checked; errors name the file and line.

    Fields are split on single spaces, as TFDS's csv reader does, so a line passing here
    parses the same there.
    """
    name = display_name or file_path
    if not tf.io.gfile.exists(file_path):
        raise DatasetSourceError(f"{name} does not exist; the archive is incomplete")
    with tf.io.gfile.GFile(file_path, "r") as f:
        lines = f.read().splitlines()
    # Trailing spaces are tolerated (TFDS's csv reader puts them in an ignored extra field).
    if not lines or tuple(lines[0].rstrip(" ").split(" ")) != HEADER:
        raise DatasetSourceError(
            f"{name} line 1: expected the header {' '.join(HEADER)!r}, got "
            f"{lines[0] if lines else ''!r}")
    rows = []
    expected = "<image_id> <class_id> <super_class_id:1..12> <folder/file>"
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue  # csv skips empty lines too
        fields = line.rstrip(" ").split(" ")
        try:
            if len(fields) != 4:
                raise ValueError
            _, class_id, super_class_id = (int(v) for v in fields[:3])
            path = fields[3]
            parts = path.split("/")
            if (class_id < 1 or not 1 <= super_class_id <= len(SUPER_CLASSES)
                    or len(parts) != 2 or not all(parts) or ".." in parts
                    or "\\" in path or '"' in path):  # csv would unquote what we keep
                raise ValueError
        except ValueError:
            raise DatasetSourceError(f"{name} line {number}: expected '{expected}', got "
                                     f"{line!r}") from None
        rows.append(_Row(number, class_id, super_class_id, path))
    return rows


def _check_splits(rows: dict[str, list[_Row]], names: dict[str, str]) -> None:
    """Train and test classes disjoint and numbered 1..T, T+1..; one super class per class;
    no image listed twice."""
    classes = {split: {} for split in rows}  # split -> {class_id: first row}
    seen: dict[str, tuple[str, int]] = {}
    for split, split_rows in rows.items():
        for row in split_rows:
            first = classes[split].setdefault(row.class_id, row)
            if first.super_class_id != row.super_class_id:
                raise DatasetSourceError(
                    f"{names[split]} line {row.line}: class {row.class_id} has super class "
                    f"{row.super_class_id}, but {first.super_class_id} on line {first.line}")
            if row.path in seen:
                other, line = seen[row.path]
                raise DatasetSourceError(
                    f"{names[split]} line {row.line}: image {row.path} is already listed "
                    f"in {other} line {line}")
            seen[row.path] = (names[split], row.line)
    shared = sorted(classes["train"].keys() & classes["test"].keys())
    if shared:
        c = shared[0]
        more = f" (and {len(shared) - 1} more shared classes)" if len(shared) > 1 else ""
        raise DatasetSourceError(
            f"{names['train']} and {names['test']} both list class {c} ({names['train']} "
            f"line {classes['train'][c].line}, {names['test']} line "
            f"{classes['test'][c].line}){more}; SOP's training and test products must be "
            f"disjoint")
    # records.py: training classes 0..T-1, evaluation classes T.. (as in the original).
    train, test = sorted(classes["train"]), sorted(classes["test"])
    if train != list(range(1, len(train) + 1)) or test != list(
            range(len(train) + 1, len(train) + len(test) + 1)):
        raise DatasetSourceError(
            f"{names['train']} must list classes 1..{len(train)} and {names['test']} classes "
            f"{len(train) + 1}..{len(train) + len(test)}, as in the original release; got "
            f"{_ranges(train)} and {_ranges(test)}")


def _ranges(ids: list[int]) -> str:
    """Sorted ids as '1..4, 7, 9..10' (at most a few runs shown)."""
    runs, start = [], None
    for i, c in enumerate(ids):
        start = c if start is None else start
        if i + 1 == len(ids) or ids[i + 1] != c + 1:
            runs.append(f"{start}..{c}" if c != start else str(c))
            start = None
    return ", ".join(runs[:4]) + (", ..." if len(runs) > 4 else "") if runs else "none"


def _walk_files(directory: str) -> set[str]:
    """Every file under ``directory`` as a '/'-separated relative path (one listing)."""
    found = set()
    for root, _, names in tf.io.gfile.walk(directory):
        relative = os.path.relpath(root, directory).replace(os.sep, "/")
        prefix = "" if relative == "." else relative + "/"
        found.update(prefix + n for n in names)
    return found


def iter_records(source_dir: str, work_dir: str) -> Iterator[dict]:
    """One ``records.record`` per line of Ebay_train.txt, then of Ebay_test.txt."""
    builder = LocalStanfordOnlineProducts(source_dir, work_dir)
    gen_kwargs = builder.split_gen_kwargs()
    names = {split: f"{ARCHIVE}:{ROOT}/{SPLITS[split][0]}" for split in SPLITS}
    rows = {split: check_list_file(gen_kwargs[split]["file_path"], names[split])
            for split in SPLITS}
    _check_splits(rows, names)
    root = os.path.dirname(gen_kwargs["train"]["file_path"])
    present = _walk_files(root)  # one listing, not a stat per image
    for split, split_rows in rows.items():
        for row in split_rows:
            if row.path not in present:
                raise DatasetSourceError(
                    f"{names[split]} line {row.line} names image {row.path}, which is not in "
                    f"the archive's {ROOT}/")

    for split, split_rows in rows.items():
        _, source_split, protocol_split = SPLITS[split]
        examples = builder._generate_examples(**gen_kwargs[split])
        for row, (_, example) in zip(split_rows, examples, strict=True):
            image_path = os.path.join(root, *row.path.split("/"))
            # TFDS read the same line (both skip only empty lines): a mismatch is our bug.
            assert os.path.normpath(example["image"]) == os.path.normpath(image_path), (
                example["image"], image_path)
            sop_class_id = example["class_id"] + 1
            yield records.record(
                image_path=image_path,
                image_id=os.path.splitext(row.path)[0],
                class_id=example["class_id"],
                class_name=f"{example['super_class_id']} {sop_class_id}",
                bbox=records.WHOLE_IMAGE,
                source_split=source_split,
                protocol_split=protocol_split,
                eval_role="",
                super_class=example["super_class_id"],
            )
