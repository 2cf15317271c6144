"""One dataset record -> one tf.Example: read, check that it decodes, encode (a Beam DoFn).

The Beam part of RetrievalExampleGen's executor; no TFX imports, and no TensorFlow
(``example_proto``): a Beam worker process that imports neither starts seconds sooner.
"""

from __future__ import annotations

import io
import json
import logging

import apache_beam as beam
from PIL import Image

from components.datasets import archive
from components.datasets import records as R
from components.example_gen import example_proto as pb
from core.names import (BBOX_KEY, CLASS_NAME_KEY, EVAL_ROLE_KEY, IMAGE_ID_KEY, IMAGE_KEY,
                        LABEL_KEY)

log = logging.getLogger(__name__)
COUNTER_NAMESPACE = "retrieval_example_gen"


class CorruptImageError(ValueError):
    """An image file does not decode and the config says to fail the run."""


def _bytes_feature(values):
    return pb.Feature(bytes_list=pb.BytesList(value=values))


def to_example(record: dict, image_bytes: bytes, bbox):
    """The raw example schema every downstream component reads (example_gen/schema.pbtxt):
    a ``tf.train.Example`` (``example_proto.Example``, the same message)."""
    return pb.Example(features=pb.Features(feature={
        IMAGE_KEY: _bytes_feature([image_bytes]),
        LABEL_KEY: pb.Feature(int64_list=pb.Int64List(value=[record[R.CLASS_ID]])),
        CLASS_NAME_KEY: _bytes_feature([record[R.CLASS_NAME].encode()]),
        BBOX_KEY: pb.Feature(float_list=pb.FloatList(value=list(bbox))),
        IMAGE_ID_KEY: _bytes_feature([record[R.IMAGE_ID].encode()]),
        "source_split": _bytes_feature([record[R.SOURCE_SPLIT].encode()]),
        EVAL_ROLE_KEY: _bytes_feature([record[R.EVAL_ROLE].encode()]),
        "super_class": _bytes_feature([record[R.SUPER_CLASS].encode()]),
    }))


def normalised_box(bbox_pixels, width: int, height: int) -> tuple[float, ...]:
    """(x_min, y_min, x_max, y_max) pixels -> (ymin, xmin, ymax, xmax) in [0, 1], clipped
    to the image (annotation files put corners on or past the last pixel)."""
    x1, y1, x2, y2 = bbox_pixels
    clip = lambda v: min(max(float(v), 0.0), 1.0)  # noqa: E731
    return (clip(y1 / height), clip(x1 / width), clip(y2 / height), clip(x2 / width))


def _decode_check(image_bytes: bytes) -> tuple[str | None, tuple[int, int]]:
    """(None, (width, height)) if the bytes are a complete JPEG/PNG, else (reason, (0, 0)).

    The image is decoded, not just opened: ``open()`` reads the header only and misses
    truncated or damaged data. A JPEG is decoded at 1/8 scale (libjpeg's DCT scaling,
    PIL's ``draft``): every scan is still entropy-decoded, which is where truncation and
    damage show, but the full-size inverse DCT and colour conversion, which nothing here
    uses, are skipped; twice as fast on photo-sized images, and the same verdict as a full
    decode on every damaged image tested (tests/components/test_executors.py).
    """
    try:
        with Image.open(io.BytesIO(image_bytes)) as im:
            if im.format not in ("JPEG", "PNG"):
                return f"format {im.format} is not JPEG or PNG", (0, 0)
            size = im.size
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
            return None, size
    except Exception as e:  # PIL raises many types for bad data
        return f"{type(e).__name__}: {e}", (0, 0)


class ReadAndEncode(beam.DoFn):
    """record -> (split, serialized tf.Example); corrupt images go to a side output."""

    CORRUPT = "corrupt"

    def __init__(self, on_corrupt: str):
        self._on_corrupt = on_corrupt
        self._images = beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "images_written")
        self._corrupt = beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "corrupt_images")

    def process(self, keyed):
        split, record = keyed
        name = record[R.FILE_NAME]
        size = (0, 0)
        try:
            image_bytes = archive.read_image(record[R.IMAGE_PATH])
            reason, size = _decode_check(image_bytes)
        except OSError as e:
            reason = f"unreadable: {e}"
        bbox = record[R.BBOX]
        if reason is None and bbox is None:
            if record[R.BBOX_PIXELS] is None:
                reason = "image header unreadable"
            else:  # the box in pixels: normalised by the size decoded here, not in the driver
                bbox = normalised_box(record[R.BBOX_PIXELS], *size)
        if reason is not None:
            if self._on_corrupt == "fail":
                raise CorruptImageError(
                    f"corrupt image {name}: {reason} (set data.on_corrupt_image: skip to skip it)")
            self._corrupt.inc()
            log.warning("skipping corrupt image %s: %s", name, reason)
            yield beam.pvalue.TaggedOutput(self.CORRUPT, name)
            return
        self._images.inc()
        yield split, to_example(record, image_bytes, bbox).SerializeToString()


def write_json(obj, path: str) -> None:
    with archive.open_file(path, "w") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True))
