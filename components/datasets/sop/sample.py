"""Generate a small ``Stanford_Online_Products.zip`` in exactly the original layout.

Tests and the demo cannot download SOP (3 GB), so they use an archive made here, laid out
and named as Stanford's release:

    Stanford_Online_Products/Ebay_info.txt    every image
    Stanford_Online_Products/Ebay_train.txt   the training products' images
    Stanford_Online_Products/Ebay_test.txt    the test products' images
        header ``image_id class_id super_class_id path``, then e.g.
        ``1 1 1 bicycle_final/111085122871_0.JPG``
    Stanford_Online_Products/<super class>_final/<12-digit eBay product id>_<n>.JPG

As in the original: class (product) ids run 1..num_classes, the first half in
Ebay_train.txt and the rest in Ebay_test.txt; within each file products are grouped by
super class in TFDS's super-class order (ids 1..12), each product's images numbered from 0;
image ids run 1.. through Ebay_train.txt and go on through Ebay_test.txt, Ebay_info.txt
listing all of them with the same ids. A few super classes (up to 3, spread over the 12) are
used. Images are real JPEGs of varied sizes (some grayscale) drawn by ``synthetic.py`` so
each product has its own look. Byte-identical for a seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from components.datasets import records
from components.datasets.synthetic import (class_look, corrupt_bytes, draw_object, encode,
                                          image_size, write_zip)

ARCHIVE = "Stanford_Online_Products.zip"
ROOT = "Stanford_Online_Products"
HEADER = "image_id class_id super_class_id path"
# TFDS's stanford_online_products._SUPER_CLASSES (super_class_id = index + 1); a copy, so
# that generating data does not import TensorFlow.
SUPER_CLASSES = ("bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle", "lamp", "mug",
                 "sofa", "stapler", "table", "toaster")
MAX_SUPER_CLASSES = 3


def make_sample_data(out_dir: str | os.PathLike, num_classes: int = 8,
                     images_per_class: int = 4, seed: int = 0, corrupt: int = 0,
                     progress=None) -> records.SampleSummary:
    """Write ``Stanford_Online_Products.zip`` with ``num_classes`` products into ``out_dir``.

    Products 1..ceil(n/2) are training products, the rest test products. ``corrupt`` extra
    listed files (alternately truncated JPEGs and non-images) are added to training and test
    products in turn; their image ids are in the summary's ``corrupt``.
    """
    if not 2 <= num_classes <= 22634:
        raise ValueError(f"num_classes must be in [2, 22634], got {num_classes}")
    if images_per_class < 2:
        raise ValueError(f"images_per_class must be >= 2, got {images_per_class}")
    if corrupt < 0:
        raise ValueError(f"corrupt must be >= 0, got {corrupt}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    num_train = (num_classes + 1) // 2
    split_classes = {"train": list(range(1, num_train + 1)),
                     "test": list(range(num_train + 1, num_classes + 1))}
    num_super = min(MAX_SUPER_CLASSES, len(split_classes["test"]))
    supers = [i * len(SUPER_CLASSES) // num_super for i in range(num_super)]  # 0-based
    super_of = {}
    for classes in split_classes.values():
        for j, class_id in enumerate(classes):  # grouped by super class within a file
            super_of[class_id] = supers[j * num_super // len(classes)]
    product_ids = set()
    while len(product_ids) < num_classes:
        product_ids.add(int(rng.integers(10**11, 10**12)))
    product_of = dict(zip(range(1, num_classes + 1), sorted(product_ids)))
    corrupt_of = {c: [] for c in super_of}
    for k in range(corrupt):
        classes = split_classes["train" if k % 2 == 0 else "test"]
        corrupt_of[classes[(k // 2) % len(classes)]].append(k)

    looks = {c: class_look(c, num_classes, rng) for c in range(1, num_classes + 1)}
    # class_id -> [(path, bytes, is_corrupt)]
    images = {}
    for class_id in range(1, num_classes + 1):
        folder = f"{SUPER_CLASSES[super_of[class_id]]}_final"
        files = []
        for n in range(images_per_class):
            width, height = image_size(rng)
            image, _ = draw_object(looks[class_id], rng, width, height)
            data = encode(image, "L" if rng.uniform() < 0.1 else "RGB", rng)
            files.append((f"{folder}/{product_of[class_id]}_{n}.JPG", data, False))
        for k in corrupt_of[class_id]:
            files.append((f"{folder}/{product_of[class_id]}_{len(files)}.JPG",
                          corrupt_bytes(files[0][1], k), True))
        images[class_id] = files
        if progress:
            progress(class_id, num_classes)

    lines = {"train": [], "test": []}
    image_id = 0
    for split, classes in split_classes.items():
        for class_id in classes:
            for path, _, _ in images[class_id]:
                image_id += 1
                lines[split].append(f"{image_id} {class_id} {super_of[class_id] + 1} {path}\n")

    def list_file(rows):
        return (HEADER + "\n" + "".join(rows)).encode()

    members = [
        (f"{ROOT}/Ebay_info.txt", list_file(lines["train"] + lines["test"])),
        (f"{ROOT}/Ebay_test.txt", list_file(lines["test"])),
        (f"{ROOT}/Ebay_train.txt", list_file(lines["train"])),
    ]
    members += [(f"{ROOT}/{path}", data) for class_id in sorted(images)
                for path, data, _ in images[class_id]]
    write_zip(out / ARCHIVE, members)

    split_of = {c: split for split, classes in split_classes.items() for c in classes}
    return records.SampleSummary(
        out_dir=str(out),
        images=[(os.path.splitext(path)[0], class_id - 1, split_of[class_id])
                for class_id in sorted(images) for path, _, bad in images[class_id] if not bad],
        corrupt=[os.path.splitext(path)[0] for class_id in sorted(images)
                 for path, _, bad in images[class_id] if bad],
    )
