"""What every dataset source yields: one annotated image record, before the image is read.

A source (``components/datasets/<name>/source.py``) parses its dataset's list and
annotation files in the ExampleGen driver process (cheap) and yields one record per image;
Beam then reads, checks and encodes the image (``components/example_gen/examples.py``).
Records are plain dicts so that Beam can pickle them; the keys are the constants below.

Class ids: for datasets whose own protocol fixes the split (SOP, In-shop, a user's
folder), a source numbers the training classes 0..T-1 and the evaluation classes
T.. (both contiguous), so that, as for Cars196, the last ``validation_classes``
training classes can be held out for model selection.
"""

from __future__ import annotations

import dataclasses

# Record keys.
IMAGE_PATH = "image_path"          # local path of the image file (archives extracted)
IMAGE_ID = "image_id"              # unique and stable within the dataset
CLASS_ID = "class_id"              # 0-based, dataset-global
CLASS_NAME = "class_name"
BBOX = "bbox"                      # (ymin, xmin, ymax, xmax) in [0, 1]; None: header unreadable
# Or a box in pixels as the annotation files give it, (x_min, y_min, x_max, y_max) from the
# top-left corner: the Beam stage normalises it by the decoded image's size, so the driver
# never opens an image (set BBOX to None then).
BBOX_PIXELS = "bbox_pixels"
SOURCE_SPLIT = "source_split"      # the original files' split: train/test, train/query/gallery, ""
PROTOCOL_SPLIT = "protocol_split"  # "train" | "eval" by the dataset's protocol; None: class ranges
EVAL_ROLE = "eval_role"            # "query" | "gallery" | "" (all-vs-all)
SUPER_CLASS = "super_class"        # e.g. SOP's "bicycle"; "" when the dataset has none
FILE_NAME = "file_name"            # the file as the user knows it (archive member); messages

# The box of a dataset without boxes: the whole image.
WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)
PROTOCOL_SPLITS = ("train", "eval")
EVAL_ROLES = ("query", "gallery", "")


class DatasetSourceError(ValueError):
    """A dataset's source files are missing or malformed; the message names the file
    (and the field or line) and what was expected."""


def record(image_path: str, image_id: str, class_id: int, class_name: str,
           bbox=WHOLE_IMAGE, source_split: str = "", protocol_split: str | None = None,
           eval_role: str = "", super_class: str = "", bbox_pixels=None,
           file_name: str | None = None) -> dict:
    """One record with every key set (the one way sources build them).

    Give ``bbox_pixels`` (and no ``bbox``) when the box is known in pixels only.
    ``file_name`` (default: the image id) names the file in messages, e.g. a corrupt one.
    """
    if bbox_pixels is not None:
        bbox = None
    return {IMAGE_PATH: image_path, IMAGE_ID: image_id, CLASS_ID: int(class_id),
            CLASS_NAME: class_name, BBOX: None if bbox is None else tuple(map(float, bbox)),
            BBOX_PIXELS: None if bbox_pixels is None else tuple(map(float, bbox_pixels)),
            SOURCE_SPLIT: source_split, PROTOCOL_SPLIT: protocol_split,
            EVAL_ROLE: eval_role, SUPER_CLASS: super_class,
            FILE_NAME: image_id if file_name is None else file_name}


@dataclasses.dataclass
class SampleSummary:
    """What a sample-data generator wrote: the expected records, for tests to compare.

    ``images``: (image_id, 0-based class_id, source_split) of every valid image, as the
    dataset's source will report them; ``corrupt``: image ids of the corrupt files.
    """
    out_dir: str
    images: list[tuple[str, int, str]]
    corrupt: list[str]

    @property
    def num_valid(self) -> int:
        return len(self.images)
