"""Generate small Cars196 archives in exactly the original layout.

The real Stanford files are no longer downloadable, and TFDS ships no fake
data, so tests and the demo use archives made here:

    cars_train.tgz                  cars_train/00001.jpg ...
    cars_test.tgz                   cars_test/00001.jpg ...
    car_devkit.tgz                  devkit/cars_train_annos.mat, cars_test_annos.mat, cars_meta.mat
    cars_test_annos_withlabels.mat  annotations: bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname

Images are real JPEGs of varied sizes and aspect ratios (landscape, portrait,
some grayscale, one CMYK): small by default (long side 96-240 px, for tests and
the demo), or real-photo sized with ``real_size`` (long side 400-1,000 px, mostly
4:3 to 16:9 landscape, about 55 KB each: Cars196's sizes, for benchmarks), drawn so that each class has its own look (body
colour, shape, stripes, wheels) with intra-class variation (position, scale,
colour jitter, background). Like the original, each class is split about
half/half between the TFDS train and test files. Output is byte-identical for
a seed (fixed tar/gzip metadata).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import multiprocessing
import os
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from components.datasets.synthetic import (class_look, corrupt_bytes, draw_object, encode,
                                          image_size, texture_tile, write_tgz)

ANNOTATION_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


@dataclasses.dataclass
class SampleSummary:
    """What was written: per TFDS split, the (fname, 1-based class) of every file."""
    out_dir: str
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]
    corrupt: list[str]  # "cars_train/00042.jpg" style names of the corrupt files

    @property
    def num_valid(self) -> int:
        return len(self.train) + len(self.test) - len(self.corrupt)


def _annotations(records: list[tuple[str, int, tuple[int, int, int, int]]],
                 with_class: bool = True) -> np.ndarray:
    """A 1xN MATLAB struct array laid out like the Stanford devkit files.

    The field order matters: TFDS reads class as field 4 and fname as the last.
    The devkit's unlabeled cars_test_annos.mat has no class field.
    """
    fields = [f for f in ANNOTATION_FIELDS if with_class or f != "class"]
    struct = np.zeros((1, len(records)), dtype=[(f, "O") for f in fields])
    for i, (fname, class_id, (x1, y1, x2, y2)) in enumerate(records):
        values = [np.array([[v]], np.uint16) for v in (x1, y1, x2, y2)]
        if with_class:
            values.append(np.array([[class_id]], np.uint8))
        struct[0, i] = tuple(values + [np.array([fname])])
    return struct


def _write_mat(path_or_buf, variables: dict) -> None:
    scipy.io.savemat(path_or_buf, variables, do_compression=False, oned_as="row")


def _mat_bytes(variables: dict) -> bytes:
    buf = io.BytesIO()
    _write_mat(buf, variables)
    # savemat stamps the creation time into the header: zero it for reproducibility.
    data = bytearray(buf.getvalue())
    header = bytes(data[:116]).split(b", Created on:")[0].ljust(116, b" ")
    data[:116] = header
    return bytes(data)


def _draw_class(look, count: int, rng: np.random.Generator, texture=None):
    """``count`` encoded JPEGs of one class: [(bytes, 1-based inclusive bbox)]."""
    images = []
    for _ in range(count):
        width, height = image_size(rng, texture is not None)
        image, bbox = draw_object(look, rng, width, height, texture)
        mode = "L" if rng.uniform() < 0.1 else "RGB"
        images.append((encode(image, mode, rng), bbox))
    return images


_TEXTURE = None


def _draw_real_size_class(job):
    """One class at real-photo sizes, in a worker process; its own random stream (from the
    seed and the class id), so the output does not depend on the number of processes."""
    global _TEXTURE
    seed, class_id, look, count = job
    if _TEXTURE is None:
        _TEXTURE = texture_tile(np.random.default_rng([seed, 0]))
    return _draw_class(look, count, np.random.default_rng([seed, class_id]), _TEXTURE)


def _draw_real_size(seed: int, looks: dict, count: int, progress):
    """Each class's images, in class order, drawn by one process per CPU core."""
    jobs = [(seed, class_id, look, count) for class_id, look in looks.items()]
    workers = min(len(jobs), os.cpu_count() or 1)
    context = multiprocessing.get_context("spawn")  # no fork of a process running threads
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        for done, images in enumerate(pool.map(_draw_real_size_class, jobs), start=1):
            if progress:
                progress(done, len(jobs))
            yield images


def make_sample_data(out_dir: str | os.PathLike, num_classes: int = 18,
                     images_per_class: int = 10, seed: int = 0, corrupt: int = 0,
                     progress=None, real_size: bool = False) -> SampleSummary:
    """Write the four Cars196 files for ``num_classes`` classes into ``out_dir``.

    Each class gets ``images_per_class`` images, split half/half (odd counts
    favour train) between cars_train and cars_test. ``corrupt`` extra annotated
    files (alternately truncated JPEGs and non-image bytes) are added, half to
    each TFDS split. Classes use the first ``num_classes`` Cars196 class ids.
    ``real_size``: real-photo sizes (``synthetic.image_size``); 196 classes x 83 images
    is Cars196's scale (16,268 images, about 0.9 GB of archives).
    """
    if not 1 <= num_classes <= 196:
        raise ValueError(f"--classes must be in [1, 196], got {num_classes}")
    if images_per_class < 2:
        raise ValueError(f"--images-per-class must be >= 2, got {images_per_class}")
    if corrupt < 0:
        raise ValueError(f"--corrupt must be >= 0, got {corrupt}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    looks = {c: class_look(c, num_classes, rng) for c in range(1, num_classes + 1)}

    files = {"train": [], "test": []}     # (fname, bytes)
    records = {"train": [], "test": []}   # (fname, class, bbox)
    if real_size:  # photo-sized: the classes are drawn in parallel processes
        drawn = _draw_real_size(seed, looks, images_per_class, progress)
    else:
        drawn = (_draw_class(looks[c], images_per_class, rng) for c in looks)
    for class_id, images in zip(looks, drawn):
        for i, (data, bbox) in enumerate(images):
            split = "train" if i < (images_per_class + 1) // 2 else "test"
            fname = f"{len(files[split]) + 1:05d}.jpg"
            files[split].append((fname, data))
            records[split].append((fname, class_id, bbox))
        if progress and not real_size:
            progress(class_id, num_classes)
    # One CMYK JPEG, as a few real Cars196 images are.
    fname, _ = files["train"][0]
    image = Image.open(io.BytesIO(files["train"][0][1])).convert("RGB")
    files["train"][0] = (fname, encode(image, "CMYK", rng))

    corrupt_names = []
    for k in range(corrupt):
        split = "train" if k % 2 == 0 else "test"
        fname = f"{len(files[split]) + 1:05d}.jpg"
        files[split].append((fname, corrupt_bytes(files[split][0][1], k)))
        records[split].append((fname, int(rng.integers(1, num_classes + 1)), (1, 1, 10, 10)))
        corrupt_names.append(f"cars_{split}/{fname}")

    # Photo-sized archives: gzip's default level (9 gains nothing on JPEGs but time), the
    # two written at the same time (zlib releases the GIL).
    level = 6 if real_size else 9
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda split: write_tgz(
            out / f"cars_{split}.tgz", [(f"cars_{split}/{n}", b) for n, b in files[split]],
            level), ("train", "test")))
    from tensorflow_datasets.image_classification import cars196  # class names only
    class_names = np.array([[np.array([name]) for name in cars196._NAMES]], dtype=object)
    test_annos_unlabeled = _annotations(records["test"], with_class=False)
    write_tgz(out / "car_devkit.tgz", [
        ("devkit/cars_train_annos.mat", _mat_bytes({"annotations": _annotations(records["train"])})),
        ("devkit/cars_test_annos.mat", _mat_bytes({"annotations": test_annos_unlabeled})),
        ("devkit/cars_meta.mat", _mat_bytes({"class_names": class_names})),
    ])
    tmp = out / "cars_test_annos_withlabels.mat.partial"
    tmp.write_bytes(_mat_bytes({"annotations": _annotations(records["test"])}))
    os.replace(tmp, out / "cars_test_annos_withlabels.mat")
    return SampleSummary(
        out_dir=str(out),
        train=[(f, c) for f, c, _ in records["train"]],
        test=[(f, c) for f, c, _ in records["test"]],
        corrupt=corrupt_names,
    )
