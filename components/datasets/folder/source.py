"""A user's own labelled images ("folder" dataset): class folders or a CSV, split by class.

Two forms, both read from ``source_dir``:

* class folders: ``source_dir/<class name>/<image files>`` (also in sub-folders of a
  class folder). Files ending .jpg, .jpeg or .png (any case) are images; hidden
  entries (".DS_Store", ".git/") and other files (notes, ``Thumbs.db``, top-level
  files) are skipped but counted, and reported in one log line, because a catalogue
  exported by hand usually carries some.
* a CSV (option ``labels_csv``, relative to ``source_dir`` or absolute) with a header
  holding ``path`` and ``label``; paths are relative to the CSV's directory or absolute.

A user's catalogue has no protocol of its own, so the split is made here, class-
disjoint as retrieval needs: a class goes to evaluation when a seeded hash of its name,
sha256(f"{split_seed}:{name}") read as a number in [0, 1), falls below
``eval_fraction``. The hash depends on the name alone, so adding classes later never
moves an existing class between training and evaluation (its class id may shift: ids
are positions in the sorted names, training classes 0..T-1 then evaluation classes
T.., as ``records.py`` prescribes).

Images are never opened here (Beam decodes each once); a file that does not decode is
counted as corrupt there. Every box is the whole image.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
import os
import posixpath
from typing import Iterator

import tensorflow as tf

from components.datasets import records
from components.datasets.records import DatasetSourceError
from components.datasets.folder.spec import SPEC
from components.datasets.source_dir import summarize_names

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CSV_COLUMNS = ("path", "label")
DEFAULT_EVAL_FRACTION = SPEC.option("eval_fraction").default
DEFAULT_SPLIT_SEED = SPEC.option("split_seed").default
EXPECTED = ("one folder per class holding .jpg/.jpeg/.png files, or a CSV (option labels_csv) "
            "with the header path,label")


@dataclasses.dataclass
class FolderListing:
    """What a folder source holds, before the split.

    ``images``: (path, image_id, class_name) sorted by image id; ``ignored``: paths
    (relative to source_dir) of hidden entries and files that are not images, skipped.
    """
    images: list[tuple[str, str, str]]
    ignored: list[str]
    empty_classes: list[str] = dataclasses.field(default_factory=list)


def _is_url(path: str) -> bool:
    return "://" in path


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _listdir(path: str) -> list[str]:
    # GCS lists sub-directories with a trailing slash.
    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(path))


def _relative(path: str, source_dir: str) -> str:
    """The path relative to source_dir, '/'-separated (as given when outside it, for URLs)."""
    if _is_url(path) or _is_url(source_dir):
        prefix = source_dir.rstrip("/") + "/"
        return path[len(prefix):] if path.startswith(prefix) else path
    rel = os.path.relpath(os.path.normpath(path), os.path.normpath(source_dir))
    return rel.replace(os.sep, "/")


def _image_id(path: str, source_dir: str) -> str:
    """The image's path relative to source_dir, '/'-separated, extension kept: the file as
    the user named it (3/truncated.jpg), and x.jpg beside x.png are two ids."""
    return _relative(path, source_dir)


def _csv_path(source_dir: str, labels_csv: str) -> str:
    if _is_url(labels_csv) or os.path.isabs(labels_csv):
        return labels_csv
    return os.path.join(source_dir, labels_csv)


def check_source_dir(source_dir: str, labels_csv: str | None = None) -> dict[str, str]:
    """{"source_dir": ...} (class folders) or {"source_dir": ..., "labels_csv": ...}, or an
    error naming the directory, what was expected and what was found."""
    if not tf.io.gfile.isdir(source_dir):
        raise DatasetSourceError(
            f"folder source directory {source_dir} does not exist; it must hold {EXPECTED}")
    found = _listdir(source_dir)
    if labels_csv:
        path = _csv_path(source_dir, labels_csv)
        if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
            raise DatasetSourceError(
                f"folder source: labels_csv {path} does not exist; expected a CSV with the "
                f"header path,label (found in {source_dir}: {summarize_names(found)})")
        return {"source_dir": source_dir, "labels_csv": path}
    if not found:
        raise DatasetSourceError(f"folder source directory {source_dir} is empty; it must hold "
                                 f"{EXPECTED}")
    classes = [n for n in found if not n.startswith(".")
               and tf.io.gfile.isdir(os.path.join(source_dir, n))]
    if not classes:
        csvs = [n for n in found if n.lower().endswith(".csv")]
        hint = f" (for the CSV form, set the option labels_csv, e.g. to {csvs[0]})" if csvs else ""
        raise DatasetSourceError(
            f"folder source directory {source_dir} has no class folders; expected {EXPECTED}"
            f"{hint}; found: {summarize_names(found)}")
    return {"source_dir": source_dir}


def _list_folders(source_dir: str) -> FolderListing:
    images, ignored, empty = [], [], []
    for entry in _listdir(source_dir):
        path = os.path.join(source_dir, entry)
        if entry.startswith(".") or not tf.io.gfile.isdir(path):
            ignored.append(entry)  # hidden entries and top-level files belong to no class
            continue
        count = 0
        for directory, subdirs, files in tf.io.gfile.walk(path):
            hidden = [d for d in subdirs if d.rstrip("/").startswith(".")]
            # walk recurses into the list it yielded: pruning it skips hidden folders.
            subdirs[:] = [d for d in subdirs if d not in hidden]
            for name in sorted(hidden) + sorted(files):
                file_path = os.path.join(directory, name.rstrip("/"))
                if name.startswith(".") or not _is_image(name):
                    ignored.append(_relative(file_path, source_dir))
                else:
                    images.append((file_path, _image_id(file_path, source_dir), entry))
                    count += 1
        if not count:
            empty.append(entry)
    return FolderListing(images=images, ignored=sorted(ignored), empty_classes=empty)


def _list_csv(source_dir: str, csv_path: str) -> FolderListing:
    try:
        with tf.io.gfile.GFile(csv_path, "r") as f:
            text = f.read()
    except (OSError, tf.errors.OpError, UnicodeDecodeError) as e:
        raise DatasetSourceError(f"{csv_path}: unreadable ({e})") from None
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))  # spreadsheets write a BOM
    header = next(reader, None)
    columns = [c.strip().lower() for c in header or []]
    missing = [c for c in CSV_COLUMNS if c not in columns]
    if missing:
        raise DatasetSourceError(
            f"{csv_path} line 1: the header must name the columns path and label; missing "
            f"{', '.join(missing)} in header {','.join(header or [])!r}")
    at = {c: columns.index(c) for c in CSV_COLUMNS}
    csv_dir = posixpath.dirname(csv_path) if _is_url(csv_path) else os.path.dirname(csv_path)
    listings: dict[str, set[str]] = {}  # one listing per directory, not one stat per image
    images, first_line = [], {}
    for row in reader:
        number = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            raise DatasetSourceError(
                f"{csv_path} line {number}: expected {len(columns)} fields "
                f"({','.join(columns)}), got {len(row)}: {','.join(row)[:120]!r}")
        rel, label = row[at["path"]].strip(), row[at["label"]].strip()
        if not rel or not label:
            raise DatasetSourceError(
                f"{csv_path} line {number}: empty {'path' if not rel else 'label'}")
        if not _is_image(rel):
            raise DatasetSourceError(
                f"{csv_path} line {number}: {rel} is not a .jpg, .jpeg or .png file")
        path = rel if _is_url(rel) or os.path.isabs(rel) else os.path.join(csv_dir, rel)
        if not _is_url(path):
            path = os.path.normpath(path)
        directory, name = os.path.split(path)
        if directory not in listings:
            listings[directory] = (set(_listdir(directory)) if tf.io.gfile.isdir(directory)
                                   else set())
        if name not in listings[directory]:
            raise DatasetSourceError(
                f"{csv_path} line {number}: names image {rel}, which does not exist ({path})")
        if path in first_line:
            raise DatasetSourceError(
                f"{csv_path} line {number}: image {rel} is listed again (first on line "
                f"{first_line[path]})")
        first_line[path] = number
        image_id = _image_id(path, source_dir)
        images.append((path, image_id, label))
    if not images:
        raise DatasetSourceError(f"{csv_path}: lists no images (only the header)")
    return FolderListing(images=images, ignored=[])


def list_images(source_dir: str, labels_csv: str | None = None) -> FolderListing:
    """Every image with its class name (and the skipped files), either form; checked."""
    paths = check_source_dir(source_dir, labels_csv)
    listing = (_list_csv(source_dir, paths["labels_csv"]) if "labels_csv" in paths
               else _list_folders(source_dir))
    where = paths.get("labels_csv", source_dir)
    if not listing.images:
        raise DatasetSourceError(
            f"folder source {where}: no .jpg, .jpeg or .png image in any class folder "
            f"(skipped {len(listing.ignored)} other file(s): {summarize_names(listing.ignored)})")
    listing.images.sort(key=lambda image: image[1])
    return listing


def split_of(class_name: str, eval_fraction: float, split_seed: int) -> str:
    """'eval' or 'train' for a class, from its name alone (so stable as classes are added)."""
    digest = hashlib.sha256(f"{split_seed}:{class_name}".encode("utf-8")).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2.0 ** 64 < eval_fraction else "train"


def class_ids(class_names, eval_fraction: float = DEFAULT_EVAL_FRACTION,
              split_seed: int = DEFAULT_SPLIT_SEED) -> dict[str, tuple[int, str]]:
    """{class name: (class id, protocol split)}: training classes sorted by name take
    0..T-1, evaluation classes T.. (records.py's convention). No emptiness check."""
    names = sorted(set(class_names))
    train = [n for n in names if split_of(n, eval_fraction, split_seed) == "train"]
    evaluation = [n for n in names if split_of(n, eval_fraction, split_seed) == "eval"]
    return {name: (i, split) for split, group in (("train", train), ("eval", evaluation))
            for i, name in enumerate(group, start=0 if split == "train" else len(train))}


def _check_options(**options) -> None:
    """The spec's checks, for callers that skip the config (tests, the demo)."""
    for name, value in options.items():
        problem = SPEC.option(name).problem(value)
        if problem:
            raise DatasetSourceError(f"folder source: {name} {problem}")


def iter_records(source_dir: str, work_dir: str, labels_csv: str | None = None,
                 eval_fraction: float = DEFAULT_EVAL_FRACTION,
                 split_seed: int = DEFAULT_SPLIT_SEED) -> Iterator[dict]:
    """One ``records.record`` per image, by class id then image id. ``work_dir`` is unused
    (the images are read where they are); it is taken for the common source interface."""
    del work_dir
    _check_options(eval_fraction=eval_fraction, split_seed=split_seed)
    listing = list_images(source_dir, labels_csv)
    where = _csv_path(source_dir, labels_csv) if labels_csv else source_dir
    ids = class_ids((name for *_, name in listing.images), eval_fraction, split_seed)
    train = sorted(n for n, (_, s) in ids.items() if s == "train")
    evaluation = sorted(n for n, (_, s) in ids.items() if s == "eval")
    if len(ids) < 2:
        raise DatasetSourceError(
            f"folder source {where}: a class-disjoint train/eval split needs at least 2 "
            f"classes, found {len(ids)} ({summarize_names(sorted(ids))})")
    if not train or not evaluation:
        side, other = ("evaluation", "training") if not train else ("training", "evaluation")
        raise DatasetSourceError(
            f"folder source {where}: eval_fraction={eval_fraction} with split_seed={split_seed} "
            f"puts all {len(ids)} classes in {side} and none in {other}; change split_seed "
            f"(or eval_fraction) so both splits get classes")
    # Files, not images: none is opened here, so a corrupt one is still counted; Beam
    # decodes each, and RetrievalExampleGen reports the corrupt ones apart, by id.
    log.info("folder source %s: %d image files in %d classes (%d training, %d evaluation; "
             "eval_fraction=%s, split_seed=%d; each is decoded next, corrupt ones are "
             "counted and named apart); skipped %d file(s) that are hidden or not "
             ".jpg/.jpeg/.png%s%s", where, len(listing.images), len(ids), len(train),
             len(evaluation), eval_fraction, split_seed, len(listing.ignored),
             f" ({summarize_names(listing.ignored, 5)})" if listing.ignored else "",
             f"; {len(listing.empty_classes)} folder(s) without images are not classes: "
             f"{summarize_names(listing.empty_classes, 5)}" if listing.empty_classes else "")
    ordered = sorted(listing.images, key=lambda image: (ids[image[2]][0], image[1]))
    for path, image_id, name in ordered:
        class_id, split = ids[name]
        yield records.record(image_path=path, image_id=image_id, class_id=class_id,
                             class_name=name, bbox=records.WHOLE_IMAGE, source_split="",
                             protocol_split=split)
