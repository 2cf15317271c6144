"""Cars196 annotations through TFDS's own cars196 builder, from local files.

TFDS's builder downloads four files from Stanford URLs that are dead, and its
``manual_dir`` route only accepts files whose sha256 matches the originals. We
subclass the builder and replace only *where the files come from*: a download
manager stand-in that extracts the four local files. TFDS's own
``_split_generators`` and ``_generate_examples`` then parse the ``.mat``
annotations (labels, class names, normalised bounding boxes, ids) exactly as
for the real dataset.

One deliberate change: TFDS's ``returnBbox`` opens every image to normalise
its box and aborts the whole build on the first unreadable file. Ours skips
such files (their bbox is left unset) so the Beam stage can count and skip, or
fail on, corrupt images by configuration.
"""

from __future__ import annotations

import logging
import os
import tarfile
from typing import Iterator

import numpy as np
import scipy.io
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import cars196

from components.datasets import records
from core.names import CARS196_FILES

log = logging.getLogger(__name__)

ANNOTATION_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
CLASS_NAMES = tuple(cars196._NAMES)


class Cars196SourceError(records.DatasetSourceError):
    """The Cars196 source files are missing or malformed."""


def check_source_dir(source_dir: str) -> dict[str, str]:
    """Paths of the four Cars196 files in ``source_dir``, or a clear error."""
    if not tf.io.gfile.isdir(source_dir):
        raise Cars196SourceError(
            f"Cars196 source directory {source_dir} does not exist; it must hold the four "
            f"files {', '.join(CARS196_FILES)}")
    found = sorted(tf.io.gfile.listdir(source_dir))
    missing = [f for f in CARS196_FILES if f not in found]
    if missing:
        raise Cars196SourceError(
            f"Cars196 source directory {source_dir} is missing {', '.join(missing)}. "
            f"Expected the four files {', '.join(CARS196_FILES)}; found: "
            f"{', '.join(found) if found else 'nothing'}")
    return {f: os.path.join(source_dir, f) for f in CARS196_FILES}


def _mat_variable(mat_path: str, name: str, variable: str):
    """One variable of a MATLAB .mat file; errors name the file (as ``name``) and variable."""
    try:
        with tf.io.gfile.GFile(mat_path, "rb") as f:
            mat = scipy.io.loadmat(f)
    except Exception as e:  # scipy raises several types for non-.mat input
        raise Cars196SourceError(f"{name}: not a readable MATLAB .mat file ({e})") from None
    if variable not in mat:
        keys = [k for k in mat if not k.startswith("__")]
        raise Cars196SourceError(
            f"{name}: missing variable '{variable}' (found: {', '.join(keys) or 'none'})")
    return mat[variable]


def check_annotations(mat_path: str, display_name: str | None = None) -> int:
    """Validate a Cars196 annotation ``.mat``; returns the number of records.

    TFDS indexes the struct by position (class = field 4, fname = last), so
    the exact field order is checked, and errors name the file and field.
    """
    name = display_name or mat_path
    annotations = _mat_variable(mat_path, name, "annotations")
    fields = annotations.dtype.names or ()
    for field in ANNOTATION_FIELDS:
        if field not in fields:
            raise Cars196SourceError(
                f"{name}: 'annotations' has no field '{field}' (fields: {', '.join(fields) or 'none'})")
    if tuple(fields[:6]) != ANNOTATION_FIELDS or len(fields) != 6:
        raise Cars196SourceError(
            f"{name}: 'annotations' fields must be {', '.join(ANNOTATION_FIELDS)} in this order, "
            f"got {', '.join(fields)}")
    classes = [int(np.asarray(r["class"]).item()) for r in annotations[0]]
    bad = [c for c in classes if not 1 <= c <= len(CLASS_NAMES)]
    if bad:
        raise Cars196SourceError(f"{name}: field 'class' must be in 1..196, got {bad[0]}")
    return annotations.shape[1]


def check_class_names(mat_path: str, display_name: str | None = None) -> list[str]:
    """Validate the devkit's ``cars_meta.mat``: 'class_names', the 196 Cars196 names in order.

    TFDS takes the names from its own list, so a damaged meta file would otherwise
    pass unnoticed; it is checked against that list.
    """
    name = display_name or mat_path
    class_names = _mat_variable(mat_path, name, "class_names")
    try:
        names = [str(np.asarray(n).item()) for n in np.asarray(class_names).ravel()]
    except ValueError:
        raise Cars196SourceError(f"{name}: 'class_names' must hold one string per class") \
            from None
    if names != list(CLASS_NAMES):
        first = next((i for i, (a, b) in enumerate(zip(names, CLASS_NAMES)) if a != b),
                     min(len(names), len(CLASS_NAMES)))
        raise Cars196SourceError(
            f"{name}: 'class_names' must be the {len(CLASS_NAMES)} Cars196 class names in "
            f"order; got {len(names)} names, the first difference at class {first + 1}")
    return names


class _LocalFiles:
    """Stands in for TFDS's DownloadManager: 'downloads' are the local files."""

    def __init__(self, files: dict[str, str], extract_dir: str):
        self._files = files
        self._extract_dir = extract_dir

    def download_and_extract(self, url_or_urls):
        return tf.nest.map_structure(self._resolve, url_or_urls)

    def _resolve(self, url: str) -> str:
        path = self._files[os.path.basename(url)]
        if not path.endswith(".tgz"):
            return path
        target = os.path.join(self._extract_dir, os.path.basename(path)[: -len(".tgz")])
        done = target + ".done"
        if not tf.io.gfile.exists(done):  # extraction is idempotent across retries
            log.info("extracting %s to %s", path, target)
            with tf.io.gfile.GFile(path, "rb") as f, tarfile.open(fileobj=f, mode="r:gz") as tar:
                for member in tar:
                    _extract_member(tar, member, target)
            with tf.io.gfile.GFile(done, "w") as f:
                f.write("ok")
        return target


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
    # Never write outside target, whatever names the archive holds.
    path = os.path.normpath(os.path.join(target, member.name))
    if not path.startswith(os.path.normpath(target) + os.sep):
        raise Cars196SourceError(f"archive member {member.name!r} escapes the extraction dir")
    if member.isdir():
        tf.io.gfile.makedirs(path)
    elif member.isfile():
        tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(path, "wb") as out:
            out.write(tar.extractfile(member).read())


class LocalCars196(cars196.Cars196):
    """TFDS's cars196 builder reading the four files from a local directory."""

    # Same features and version as cars196; registered under a distinct name.
    def __init__(self, source_dir: str, work_dir: str, **kwargs):
        self._source_files = check_source_dir(source_dir)
        self._work_dir = work_dir
        super().__init__(data_dir=os.path.join(work_dir, "tfds"), **kwargs)

    def split_gen_kwargs(self) -> dict[str, dict]:
        """TFDS's own split generators over the local files: {split: gen_kwargs}."""
        local = _LocalFiles(self._source_files, os.path.join(self._work_dir, "extracted"))
        return {g.name: g.gen_kwargs for g in self._split_generators(local)}

    def returnBbox(self, filename, image_dict):  # noqa: N802 (TFDS's name)
        # TFDS's version, minus the abort on an unreadable image (see module doc).
        bbox_dict = {}
        with tf.io.gfile.GFile(filename, "rb") as f:
            data = scipy.io.loadmat(f)
        for example in data["annotations"][0]:
            image_name = example[-1].item().split(".")[0]
            if image_name not in image_dict:
                continue  # reported as missing by iter_records
            try:
                with tf.io.gfile.GFile(image_dict[image_name], "rb") as fp:
                    width, height = tfds.core.lazy_imports.PIL_Image.open(fp).size
            except Exception:  # unreadable header: left for the Beam stage to count
                continue
            bbox_dict[image_name] = tfds.features.BBox(
                float(example[1].item()) / height, float(example[0].item()) / width,
                float(example[3].item()) / height, float(example[2].item()) / width)
        return _Lenient(bbox_dict)


class _Lenient(dict):
    """bbox lookups for unreadable images give None instead of a KeyError."""

    def __missing__(self, key):
        return None


def iter_records(source_dir: str, work_dir: str) -> Iterator[dict]:
    """Every annotated image of both TFDS splits, parsed by TFDS's cars196 code.

    Yields ``records.record`` dicts: source_split ('train'/'test', TFDS's split),
    image_path, image_id, class_id (0-based), class_name, bbox (ymin, xmin, ymax, xmax
    normalised, or None when the image header is unreadable), file_name
    ("cars_train/00001.jpg"); the retrieval split is by configured class ranges.
    """
    files = check_source_dir(source_dir)
    check_annotations(files["cars_test_annos_withlabels.mat"])
    builder = LocalCars196(source_dir, work_dir)
    gen_kwargs = builder.split_gen_kwargs()
    check_annotations(gen_kwargs["train"]["data_annotations_path"],
                      "car_devkit.tgz:devkit/cars_train_annos.mat")
    check_class_names(os.path.join(os.path.dirname(gen_kwargs["train"]["data_annotations_path"]),
                                   "cars_meta.mat"), "car_devkit.tgz:devkit/cars_meta.mat")
    label_feature = builder.info.features["label"]
    for split, kwargs in gen_kwargs.items():
        image_dir = kwargs["data_dir_path"]
        if not tf.io.gfile.isdir(image_dir):
            raise Cars196SourceError(
                f"archive for split '{split}' has no directory {os.path.basename(image_dir)}/")
        try:
            for key, example in builder._generate_examples(**kwargs):
                yield records.record(
                    image_path=example["image"], image_id=f"{split}/{example['id']}",
                    class_id=label_feature.str2int(example["label"]),
                    class_name=example["label"], bbox=example["bbox"], source_split=split,
                    file_name=f"cars_{split}/{os.path.basename(example['image'])}")
        except KeyError as e:
            raise Cars196SourceError(
                f"split '{split}': annotation names image {e.args[0]!r}, which is not in "
                f"{os.path.basename(image_dir)}/") from None
