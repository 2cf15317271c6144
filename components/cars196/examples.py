"""One Cars196 record -> one tf.Example: read, check that it decodes, encode (a Beam DoFn).

The Beam part of Cars196ExampleGen's executor; no TFX imports.
"""

from __future__ import annotations

import io
import json
import logging
import os

import apache_beam as beam
import tensorflow as tf
from PIL import Image

from core.names import BBOX_KEY, IMAGE_ID_KEY, IMAGE_KEY, LABEL_KEY

log = logging.getLogger(__name__)
COUNTER_NAMESPACE = "cars196_example_gen"


class CorruptImageError(ValueError):
    """An image file does not decode and the config says to fail the run."""


def _bytes_feature(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def to_example(record: dict, image_bytes: bytes) -> tf.train.Example:
    """The raw example schema every downstream component reads."""
    return tf.train.Example(features=tf.train.Features(feature={
        IMAGE_KEY: _bytes_feature([image_bytes]),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[record["class_id"]])),
        "class_name": _bytes_feature([record["class_name"].encode()]),
        BBOX_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=list(record["bbox"]))),
        IMAGE_ID_KEY: _bytes_feature([record["image_id"].encode()]),
        "tfds_split": _bytes_feature([record["tfds_split"].encode()]),
    }))


def _decode_check(image_bytes: bytes) -> str | None:
    """None if the bytes are a complete JPEG/PNG, else the reason."""
    try:
        with Image.open(io.BytesIO(image_bytes)) as im:
            if im.format not in ("JPEG", "PNG"):
                return f"format {im.format} is not JPEG or PNG"
            im.load()  # full decode: catches truncated data, which open() does not
    except Exception as e:  # PIL raises many types for bad data
        return f"{type(e).__name__}: {e}"
    return None


class ReadAndEncode(beam.DoFn):
    """record -> (split, serialized tf.Example); corrupt images go to a side output."""

    CORRUPT = "corrupt"

    def __init__(self, on_corrupt: str):
        self._on_corrupt = on_corrupt
        self._images = beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "images_written")
        self._corrupt = beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "corrupt_images")

    def process(self, keyed):
        split, record = keyed
        name = f"cars_{record['tfds_split']}/{os.path.basename(record['image_path'])}"
        try:
            with tf.io.gfile.GFile(record["image_path"], "rb") as f:
                image_bytes = f.read()
            reason = _decode_check(image_bytes)
        except (OSError, tf.errors.OpError) as e:
            reason = f"unreadable: {e}"
        if reason is None and record["bbox"] is None:
            reason = "image header unreadable"
        if reason is not None:
            if self._on_corrupt == "fail":
                raise CorruptImageError(
                    f"corrupt image {name}: {reason} (set data.on_corrupt_image: skip to skip it)")
            self._corrupt.inc()
            log.warning("skipping corrupt image %s: %s", name, reason)
            yield beam.pvalue.TaggedOutput(self.CORRUPT, name)
            return
        self._images.inc()
        yield split, to_example(record, image_bytes).SerializeToString()


def write_json(obj, path: str) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True))
