"""Generate a small ``CUB_200_2011.tgz`` in exactly the original layout.

Tests and the demo cannot download CUB-200-2011, so they use an archive made here, laid
out and named as Caltech's release:

    attributes.txt                          <attribute_id> <name>      (abridged: 9 of 312)
    CUB_200_2011/README
    CUB_200_2011/images.txt                 <image_id> <class folder>/<file>.jpg
    CUB_200_2011/image_class_labels.txt     <image_id> <class_id>
    CUB_200_2011/train_test_split.txt       <image_id> <is_training_image>
    CUB_200_2011/bounding_boxes.txt         <image_id> <x> <y> <width> <height>
    CUB_200_2011/classes.txt                <class_id> <NNN.Name>
    CUB_200_2011/images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg ...
    CUB_200_2011/attributes/certainties.txt, image_attribute_labels.txt (the 9 attributes)
    CUB_200_2011/parts/parts.txt, part_locs.txt (every part "not visible")

Classes are 1..num_classes with CUB's folder names (``NNN.Name``; the real names for the
classes listed in ``CLASS_NAMES``, plausible placeholders for the others, as TFDS ships no
CUB class names); file names follow CUB's ``<Name>_<NNNN>_<number>.jpg``. Image ids run
class by class, and each class is split half/half (odd counts favour train) by
train_test_split.txt, chosen at random within the class as in the original. Images are
real JPEGs of varied sizes (some grayscale) drawn by ``synthetic.py`` so each class has its
own look; boxes are the drawn object's, in CUB's pixel convention. Byte-identical for a
seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from components.datasets import records
from components.datasets.synthetic import (class_look, corrupt_bytes, draw_object, encode,
                                          image_size, write_tgz)

ARCHIVE = "CUB_200_2011.tgz"
ROOT = "CUB_200_2011"
NUM_CLASSES = 200

# Real CUB-200-2011 class folder names; the sample uses them where known.
CLASS_NAMES = {
    1: "Black_footed_Albatross", 2: "Laysan_Albatross", 3: "Sooty_Albatross",
    4: "Groove_billed_Ani", 5: "Crested_Auklet", 6: "Least_Auklet", 7: "Parakeet_Auklet",
    8: "Rhinoceros_Auklet", 9: "Brewer_Blackbird", 10: "Red_winged_Blackbird",
    11: "Rusty_Blackbird", 12: "Yellow_headed_Blackbird", 13: "Bobolink",
    14: "Indigo_Bunting", 15: "Lazuli_Bunting", 16: "Painted_Bunting", 17: "Cardinal",
    18: "Spotted_Catbird", 19: "Gray_Catbird", 20: "Yellow_breasted_Chat",
    200: "Common_Yellowthroat",
}
PARTS = ("back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg",
         "left wing", "nape", "right eye", "right leg", "right wing", "tail", "throat")
ATTRIBUTES = ("has_bill_shape::curved_(up_or_down)", "has_bill_shape::dagger",
              "has_bill_shape::hooked", "has_bill_shape::needle",
              "has_bill_shape::hooked_seabird", "has_bill_shape::spatulate",
              "has_bill_shape::all-purpose", "has_bill_shape::cone",
              "has_bill_shape::specialized")
CERTAINTIES = ("not visible", "guessing", "probably", "definitely")

README = """\
CUB-200-2011 layout sample (synthetic images, generated for tests).

images.txt              <image_id> <image_name>
image_class_labels.txt  <image_id> <class_id>
train_test_split.txt    <image_id> <is_training_image>
bounding_boxes.txt      <image_id> <x> <y> <width> <height>
classes.txt             <class_id> <class_name>
attributes/, parts/     attribute and part annotations (abridged here)
"""


def class_folder(class_id: int) -> str:
    """CUB's class folder (and classes.txt) name, e.g. ``001.Black_footed_Albatross``."""
    return f"{class_id:03d}.{CLASS_NAMES.get(class_id, f'Sample_Bird_{class_id:03d}')}"


def _file_stem(class_id: int) -> str:
    # CUB capitalises every word in file names: Black_Footed_Albatross_0046_18.jpg.
    name = class_folder(class_id).split(".", 1)[1]
    return "_".join(word[:1].upper() + word[1:] for word in name.split("_"))


def _lines(rows) -> bytes:
    return "".join(" ".join(str(v) for v in row) + "\n" for row in rows).encode()


def make_sample_data(out_dir: str | os.PathLike, num_classes: int = 6,
                     images_per_class: int = 6, seed: int = 0, corrupt: int = 0,
                     progress=None) -> records.SampleSummary:
    """Write ``CUB_200_2011.tgz`` for classes 1..``num_classes`` into ``out_dir``.

    ``corrupt`` extra listed files (alternately truncated JPEGs and non-images, alternately
    train and test) go to classes 1, 2, ... in turn; their image ids are in the summary's
    ``corrupt``, the valid images in its ``images``.
    """
    if not 1 <= num_classes <= NUM_CLASSES:
        raise ValueError(f"num_classes must be in [1, {NUM_CLASSES}], got {num_classes}")
    if images_per_class < 2:
        raise ValueError(f"images_per_class must be >= 2, got {images_per_class}")
    if corrupt < 0:
        raise ValueError(f"corrupt must be >= 0, got {corrupt}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    looks = {c: class_look(c, num_classes, rng) for c in range(1, num_classes + 1)}

    # (path under images/, bytes, class_id, is_training, (x, y, width, height), is_corrupt)
    entries = []
    for class_id in range(1, num_classes + 1):
        corrupt_here = [k for k in range(corrupt) if k % num_classes == class_id - 1]
        count = images_per_class + len(corrupt_here)
        # CUB numbers files <Name>_<4 digits>_<a photo number of varying length>.
        serials = rng.choice(np.arange(1, 10000), size=count, replace=False)
        names = [f"{_file_stem(class_id)}_{int(s):04d}_{int(rng.integers(1, 900000))}.jpg"
                 for s in serials]
        train = set(rng.permutation(images_per_class)[: (images_per_class + 1) // 2].tolist())
        first_jpeg = None
        for i in range(images_per_class):
            width, height = image_size(rng)
            image, (x1, y1, x2, y2) = draw_object(looks[class_id], rng, width, height)
            data = encode(image, "L" if rng.uniform() < 0.1 else "RGB", rng)
            first_jpeg = first_jpeg or data
            # draw_object's box is 1-based inclusive; CUB's is x, y from the top-left
            # corner (0-based) with width and height, so x + width = x2.
            box = (x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1)
            entries.append((f"{class_folder(class_id)}/{names[i]}", data, class_id, i in train,
                            box, False))
        for j, k in enumerate(corrupt_here):
            entries.append((f"{class_folder(class_id)}/{names[images_per_class + j]}",
                            corrupt_bytes(first_jpeg, k), class_id, k % 2 == 0,
                            (1, 1, 10, 10), True))
        if progress:
            progress(class_id, num_classes)

    ids = range(1, len(entries) + 1)
    members = [
        ("attributes.txt", _lines((a, name) for a, name in enumerate(ATTRIBUTES, 1))),
        (f"{ROOT}/README", README.encode()),
        (f"{ROOT}/images.txt", _lines((i, e[0]) for i, e in zip(ids, entries))),
        (f"{ROOT}/image_class_labels.txt", _lines((i, e[2]) for i, e in zip(ids, entries))),
        (f"{ROOT}/train_test_split.txt", _lines((i, int(e[3])) for i, e in zip(ids, entries))),
        (f"{ROOT}/bounding_boxes.txt",
         _lines((i, *(f"{float(v):.1f}" for v in e[4])) for i, e in zip(ids, entries))),
        (f"{ROOT}/classes.txt", _lines((c, class_folder(c)) for c in range(1, num_classes + 1))),
        (f"{ROOT}/attributes/certainties.txt",
         _lines((c, name) for c, name in enumerate(CERTAINTIES, 1))),
        (f"{ROOT}/attributes/image_attribute_labels.txt",
         _lines((i, a, int(rng.integers(0, 2)), int(rng.integers(1, 5)),
                 f"{rng.uniform(1, 30):.4f}")
                for i in ids for a in range(1, len(ATTRIBUTES) + 1))),
        (f"{ROOT}/parts/parts.txt", _lines((p, name) for p, name in enumerate(PARTS, 1))),
        (f"{ROOT}/parts/part_locs.txt",
         _lines((i, p, "0.0", "0.0", 0) for i in ids for p in range(1, len(PARTS) + 1))),
    ]
    members += [(f"{ROOT}/images/{e[0]}", e[1]) for e in entries]
    write_tgz(out / ARCHIVE, members)

    def image_id(entry):
        return os.path.splitext(entry[0])[0]

    return records.SampleSummary(
        out_dir=str(out),
        images=[(image_id(e), e[2] - 1, "train" if e[3] else "test")
                for e in entries if not e[5]],
        corrupt=[image_id(e) for e in entries if e[5]],
    )
