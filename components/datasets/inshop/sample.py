"""Small In-shop Clothes Retrieval data in exactly the benchmark's layout, for tests and demos.

The real benchmark (52,712 images) is behind a manual download, so tests use files
written here in the layout ``components/datasets/inshop/source.py`` reads:

    img.zip                   img/<MEN|WOMEN>/<Category>/<item_id>/<NN>_<k>_<view>.jpg
    list_eval_partition.txt   count line, header line, rows "<image_name> <item_id> <status>"
    list_bbox_inshop.txt      count line, header line,
                              rows "<image_name> <clothes_type> <pose_type> <x_1> <y_1> <x_2> <y_2>"

As in the benchmark, items (the classes) are split into training and test items, and
each test item's images into query and gallery images (at least one of each); images
are 256x256 JPEGs like the release's, drawn with ``synthetic.py`` so each item has its
own look; boxes are 0-based pixel corners written zero-padded like the release's.
Output is byte-identical for a seed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from components.datasets.inshop import source as inshop
from components.datasets.records import SampleSummary
from components.datasets.synthetic import class_look, corrupt_bytes, draw_object, encode, write_zip

# The release's categories per gender, and each one's clothes_type
# (1 upper-body, 2 lower-body, 3 full-body) as list_bbox_inshop.txt codes it.
CATEGORIES = {
    "MEN": {"Denim": 2, "Jackets_Vests": 1, "Pants": 2, "Shirts_Polos": 1, "Shorts": 2,
            "Suiting": 3, "Sweaters": 1, "Sweatshirts_Hoodies": 1, "Tees_Tanks": 1},
    "WOMEN": {"Blouses_Shirts": 1, "Cardigans": 1, "Denim": 2, "Dresses": 3,
              "Graphic_Tees": 1, "Jackets_Coats": 1, "Leggings": 2, "Pants": 2,
              "Rompers_Jumpsuits": 3, "Shorts": 2, "Skirts": 2, "Sweaters": 1,
              "Sweatshirts_Hoodies": 1, "Tees_Tanks": 1},
}
# (<k> in the file name, <view>, pose_type as list_bbox_inshop.txt codes it).
VIEWS = ((1, "front", 1), (2, "side", 2), (3, "back", 3), (4, "full", 4), (7, "additional", 6))
IMAGE_SIZE = 256  # the release's images are all 256x256
# The release pads image names to one column width before the next field.
NAME_WIDTH = 70


@dataclasses.dataclass
class InShopSampleSummary(SampleSummary):
    """``SampleSummary`` plus what In-shop records carry beyond (id, class, split),
    keyed by image id: the super class and the pixel box (x_1, y_1, x_2, y_2)."""
    super_classes: dict[str, str] = dataclasses.field(default_factory=dict)
    boxes: dict[str, tuple[int, int, int, int]] = dataclasses.field(default_factory=dict)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_bytes(text.encode("ascii"))
    os.replace(tmp, path)


def make_sample_data(out_dir: str | os.PathLike, num_classes: int = 8, images_per_class: int = 4,
                     seed: int = 0, corrupt: int = 0, progress=None) -> InShopSampleSummary:
    """Write img.zip and the two lists for ``num_classes`` items into ``out_dir``.

    Half the items (rounded up) are training items, the rest test items; each test
    item's ``images_per_class`` images are split about half/half into query and gallery
    images, at least one of each. ``corrupt`` extra listed files (alternately truncated
    JPEGs and non-image bytes) are added to the items in turn; a test item's corrupt
    files are gallery images.
    """
    if num_classes < 2:
        raise ValueError(
            f"num_classes must be >= 2 (a training and a test item), got {num_classes}")
    if images_per_class < 2:
        raise ValueError(f"images_per_class must be >= 2 (a test item needs a query and a "
                         f"gallery image), got {images_per_class}")
    if corrupt < 0:
        raise ValueError(f"corrupt must be >= 0, got {corrupt}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    # Item numbers spread like the release's (id_00000001..id_00007982), in list order.
    numbers = np.sort(rng.choice(np.arange(1, max(7982, 2 * num_classes) + 1), num_classes,
                                 replace=False))
    items = [f"id_{int(n):08d}" for n in numbers]
    # Training and test items interleave in id order, as in the release.
    is_train = np.zeros(num_classes, bool)
    is_train[rng.permutation(num_classes)[: (num_classes + 1) // 2]] = True

    rows = []   # (image_name, item_id, status, clothes_type, pose_type, box)
    members = []  # (image_name, bytes)
    valid: list[tuple[str, str, str]] = []  # (image_id, item_id, status)
    super_classes, boxes = {}, {}
    next_group = {}
    first_jpeg = None
    for index, item in enumerate(items):
        gender = ("MEN", "WOMEN")[int(rng.integers(0, 2))]
        categories = sorted(CATEGORIES[gender])
        category = categories[int(rng.integers(0, len(categories)))]
        look = class_look(index + 1, num_classes, rng)
        if is_train[index]:
            statuses = ["train"] * images_per_class
        else:
            queries = min(images_per_class - 1, max(1, images_per_class // 2))
            statuses = ["query"] * queries + ["gallery"] * (images_per_class - queries)
            statuses = [statuses[i] for i in rng.permutation(images_per_class)]
        group = int(rng.integers(1, 5))
        for j, status in enumerate(statuses):
            k, view, pose = VIEWS[j % len(VIEWS)]
            name = f"img/{gender}/{category}/{item}/{group + j // len(VIEWS):02d}_{k}_{view}.jpg"
            image, (x1, y1, x2, y2) = draw_object(look, rng, IMAGE_SIZE, IMAGE_SIZE)
            data = encode(image, "RGB", rng)
            first_jpeg = first_jpeg or data
            # draw_object's box is 1-based inclusive; the sample writes 0-based corners.
            box = (x1 - 1, y1 - 1, x2 - 1, y2 - 1)
            rows.append((name, item, status, CATEGORIES[gender][category], pose, box))
            members.append((name, data))
            image_id = inshop.image_id_of(name)
            valid.append((image_id, item, status))
            super_classes[image_id] = f"{gender}/{category}"
            boxes[image_id] = box
        next_group[item] = (gender, category, group + (images_per_class - 1) // len(VIEWS) + 1)
        if progress:
            progress(index + 1, num_classes)

    corrupt_ids = []
    for k in range(corrupt):
        index = k % num_classes
        item = items[index]
        gender, category, group = next_group[item]
        name = f"img/{gender}/{category}/{item}/{group + k // num_classes:02d}_1_front.jpg"
        rows.append((name, item, "train" if is_train[index] else "gallery",
                     CATEGORIES[gender][category], 1, (10, 10, 100, 100)))
        members.append((name, corrupt_bytes(first_jpeg, k)))
        corrupt_ids.append(inshop.image_id_of(name))
    # Each item's images together in the lists, folders in name order (a stable sort keeps
    # an item's own images in the order drawn): so the lists are not in item-id order,
    # and a source numbering items by first appearance would be caught.
    rows.sort(key=lambda row: row[0].rsplit("/", 1)[0])

    write_zip(out / inshop.IMAGES_ZIP, sorted(members, key=lambda m: m[0]))
    partition = [str(len(rows)), " ".join(inshop.PARTITION_HEADER)]
    partition += [f"{name:<{NAME_WIDTH}} {item} {status}" for name, item, status, *_ in rows]
    _write_text(out / inshop.PARTITION_FILE, "\n".join(partition) + "\n")
    bbox = [str(len(rows)), " ".join(inshop.BBOX_HEADER)]
    bbox += [f"{name:<{NAME_WIDTH}} {clothes}  {pose}  "
             + "  ".join(f"{v:03d}" for v in box)
             for name, _, _, clothes, pose, box in rows]
    _write_text(out / inshop.BBOX_FILE, "\n".join(bbox) + "\n")

    train_items = sorted(item for item, t in zip(items, is_train) if t)
    test_items = sorted(item for item, t in zip(items, is_train) if not t)
    class_ids = {item: i for i, item in enumerate(train_items + test_items)}
    return InShopSampleSummary(
        out_dir=str(out),
        images=[(image_id, class_ids[item], status) for image_id, item, status in valid],
        corrupt=corrupt_ids,
        super_classes=super_classes,
        boxes=boxes,
    )
