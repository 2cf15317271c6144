"""A small "user's own catalogue" in either form ``components/datasets/folder/source.py`` reads.

Class-folder form (default):

    <class name>/img_001.jpg, img_002.png, img_003.JPG, ..., detail/...  (a sub-folder, once)
    README.txt, .hidden/, <class>/.DS_Store, <class>/notes.txt, ...     (skipped, counted)

CSV form (``csv=True``): the images flat in ``images/`` and ``labels.csv`` with the
header ``path,label`` and paths relative to the CSV, so the labels can only come from it.

What a hand-made catalogue holds: JPEGs and PNGs (the first class's with an alpha
channel), upper-case extensions, varied sizes, some grayscale, class names with spaces,
a comma and a non-ASCII letter, stray files. Images are drawn with ``synthetic.py`` so
each class has its own look. Every file's bytes are identical for a seed.
"""

from __future__ import annotations

import csv as _csv  # not `csv`: make_sample_data's flag of that name would hide it
import dataclasses
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from components.datasets.folder import source as folder
from components.datasets.records import SampleSummary
from components.datasets.synthetic import (class_look, corrupt_bytes, draw_object, encode,
                                          image_size)

# Products a user might photograph. Ordered so that under the folder source's default
# split (eval_fraction 0.5, split_seed 0) the names alternate training, evaluation, ...:
# any first n classes split about half/half, as a useful sample needs.
CLASS_NAMES = ("armchair", "café table", "backpack", "lamp, floor", "messenger bag",
               "espresso cup", "sofa", "garden chair", "wall clock", "hiking boot",
               "wool scarf", "desk lamp", "bar stool", "rain jacket", "bookshelf", "tea kettle",
               "coffee grinder", "water bottle", "flower vase", "yoga mat", "ice bucket",
               "cutting board", "jewelry box", "duffel bag", "kitchen scale", "ceiling fan",
               "night stand", "hand mixer", "table runner", "laundry basket", "toaster",
               "mirror", "umbrella", "picture frame", "wine glass", "road bike")
EXTENSIONS = (".jpg", ".png", ".JPG", ".jpeg")
CSV_NAME = "labels.csv"


@dataclasses.dataclass
class FolderSampleSummary(SampleSummary):
    """``SampleSummary`` plus the class name of each image id and the skipped files
    (paths relative to out_dir) the source should count."""
    class_names: dict[str, str] = dataclasses.field(default_factory=dict)
    ignored: list[str] = dataclasses.field(default_factory=list)


def class_name(index: int) -> str:
    return CLASS_NAMES[index] if index < len(CLASS_NAMES) else f"class {index:03d}"


def _png(image: Image.Image, mode: str) -> bytes:
    buf = io.BytesIO()
    image.convert(mode).save(buf, format="PNG")  # PIL writes no timestamp: deterministic
    return buf.getvalue()


def make_sample_data(out_dir: str | os.PathLike, num_classes: int = 8, images_per_class: int = 4,
                     seed: int = 0, corrupt: int = 0, progress=None, csv: bool = False,
                     eval_fraction: float = folder.DEFAULT_EVAL_FRACTION,
                     split_seed: int = folder.DEFAULT_SPLIT_SEED) -> FolderSampleSummary:
    """Write ``num_classes`` classes of ``images_per_class`` images into the empty or new
    ``out_dir``, in the class-folder form or (``csv``) the CSV form.

    ``corrupt`` extra files named .jpg (alternately truncated JPEGs and non-image bytes)
    go to the classes in turn. ``eval_fraction`` and ``split_seed`` only decide the class
    ids reported in the summary (the folder source's split); the files do not depend on them.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (a training and an evaluation class), "
                         f"got {num_classes}")
    if images_per_class < 1:
        raise ValueError(f"images_per_class must be >= 1, got {images_per_class}")
    if corrupt < 0:
        raise ValueError(f"corrupt must be >= 0, got {corrupt}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        # Leftovers from another run would become classes or images of this one.
        raise ValueError(f"{out} is not empty: the folder sample needs a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [class_name(i) for i in range(num_classes)]

    files: list[tuple[str, bytes]] = []          # (path relative to out, bytes)
    labelled: list[tuple[str, str]] = []         # (image id, class name) of valid images
    rows: list[tuple[str, str]] = []             # CSV rows (path, label)
    first_jpeg = None
    counter = 0
    for index, name in enumerate(names):
        look = class_look(index + 1, num_classes, rng)
        for j in range(images_per_class):
            width, height = image_size(rng)
            image, _ = draw_object(look, rng, width, height)
            extension = EXTENSIONS[(index + j) % len(EXTENSIONS)]
            if extension == ".png":
                # The first class's PNGs have an alpha channel, as exported cut-outs do.
                data = _png(image, "RGBA" if index == 0 else "RGB")
            else:
                data = encode(image, "L" if rng.uniform() < 0.1 else "RGB", rng)
                first_jpeg = first_jpeg or data
            counter += 1
            if csv:
                rel = f"images/{counter:04d}{extension}"
                rows.append((rel, name))
            elif index == 0 and j == images_per_class - 1 and images_per_class > 1:
                rel = f"{name}/detail/img_{j + 1:03d}{extension}"  # a class's sub-folder
            else:
                rel = f"{name}/img_{j + 1:03d}{extension}"
            files.append((rel, data))
            labelled.append((rel, name))  # image ids keep the extension (folder.py)
        if progress:
            progress(index + 1, num_classes)

    corrupt_ids = []
    for k in range(corrupt):
        name = names[k % num_classes]
        counter += 1
        rel = (f"images/{counter:04d}.jpg" if csv
               else f"{name}/img_{images_per_class + 1 + k // num_classes:03d}.jpg")
        if csv:
            rows.append((rel, name))
        files.append((rel, corrupt_bytes(first_jpeg or b"", k)))
        corrupt_ids.append(rel)

    ignored = []
    if not csv:
        # Stray files a hand-made catalogue carries: skipped by the source, but counted.
        strays = [("README.txt", b"my product photos\n"), (f"{names[0]}/.DS_Store", b"\0" * 16),
                  (f"{names[1]}/notes.txt", b"shot on a white table\n"),
                  (".hidden/img_001.jpg", first_jpeg or b""),
                  (f"{names[-1]}/.thumbnails/img_001.jpg", first_jpeg or b"")]
        files += strays
        ignored = sorted({"README.txt", ".hidden", f"{names[0]}/.DS_Store",
                          f"{names[1]}/notes.txt", f"{names[-1]}/.thumbnails"})
    else:
        buf = io.StringIO()
        writer = _csv.writer(buf, lineterminator="\n")  # the same bytes on every platform
        writer.writerow(folder.CSV_COLUMNS)
        writer.writerows(rows)
        files.append((CSV_NAME, buf.getvalue().encode("utf-8")))

    for rel, data in files:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    ids = folder.class_ids(names, eval_fraction, split_seed)
    return FolderSampleSummary(
        out_dir=str(out),
        images=[(image_id, ids[name][0], "") for image_id, name in labelled],
        corrupt=corrupt_ids,
        class_names=dict(labelled),
        ignored=ignored,
    )

