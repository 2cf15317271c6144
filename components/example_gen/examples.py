"""One dataset record -> one tf.Example: read, check that it decodes, encode (a Beam DoFn).

The Beam part of RetrievalExampleGen's executor; no TFX imports.
"""

from __future__ import annotations

import io
import json
import logging

import apache_beam as beam
import tensorflow as tf
from PIL import Image

from components.datasets import records as R
from core.names import BBOX_KEY, EVAL_ROLE_KEY, IMAGE_ID_KEY, IMAGE_KEY, LABEL_KEY

log = logging.getLogger(__name__)
COUNTER_NAMESPACE = "retrieval_example_gen"


class CorruptImageError(ValueError):
    """An image file does not decode and the config says to fail the run."""


def _bytes_feature(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def to_example(record: dict, image_bytes: bytes, bbox) -> tf.train.Example:
    """The raw example schema every downstream component reads (example_gen/schema.pbtxt)."""
    return tf.train.Example(features=tf.train.Features(feature={
        IMAGE_KEY: _bytes_feature([image_bytes]),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[record[R.CLASS_ID]])),
        "class_name": _bytes_feature([record[R.CLASS_NAME].encode()]),
        BBOX_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=list(bbox))),
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
    """(None, (width, height)) if the bytes are a complete JPEG/PNG, else (reason, (0, 0))."""
    try:
        with Image.open(io.BytesIO(image_bytes)) as im:
            if im.format not in ("JPEG", "PNG"):
                return f"format {im.format} is not JPEG or PNG", (0, 0)
            im.load()  # full decode: catches truncated data, which open() does not
            return None, im.size
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
            with tf.io.gfile.GFile(record[R.IMAGE_PATH], "rb") as f:
                image_bytes = f.read()
            reason, size = _decode_check(image_bytes)
        except (OSError, tf.errors.OpError) as e:
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
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True))
