"""SavedModel export: serving signatures that embed raw images.

    serving_default: images  string [N] (encoded JPEG/PNG)  -> embedding float32 [N, D]
    pixels:          pixels  uint8 [N, H, W, 3] (any H, W)  -> embedding float32 [N, D]

``serving_default`` runs the TF Transform graph (pad to square, resize) through
the TFT layer, so serving applies exactly the training-time preprocessing;
``pixels`` applies the same image ops to already-decoded images.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

import tensorflow as tf

from components.preprocessing import image_ops
from core.names import (BBOX_KEY, CLASS_NAME_KEY, CONTRACT_CLASSES_KEY, CONTRACT_FILE,
                        EMBEDDING_OUTPUT, IMAGE_KEY, IMAGES_INPUT, PIXELS_INPUT,
                        PIXELS_SIGNATURE, SERVING_SIGNATURE, TRANSFORMED_IMAGE_KEY)

_NAMES_BATCH = 1024


class EmbeddingExport(tf.Module):
    """Saves the signatures with the model's variables and the TFT layer.

    Only the variables are tracked, not the Keras model object: saving a
    tracked Keras model makes Keras trace every layer's call (15-30 s even for
    the small model), while the signatures need just one traced call.
    """

    def __init__(self, embedding_model, tft_layer, image_size: int, pad_value,
                 input_size: int = 0, crop: str = "none"):
        super().__init__()
        # A plain closure is not trackable, so the Keras model is not saved as such.
        self._call_model = lambda pixels: embedding_model(pixels, training=False)
        self.model_variables = list(embedding_model.variables)
        self.tft_layer = tft_layer
        self._size = int(image_size)
        self._input_size = int(input_size) or self._size
        self._pad_value = [int(v) for v in pad_value]
        self._crop = crop

    def _embed(self, pixels_u8):
        # The centre view of the stored square, as in validation (training takes random crops).
        pixels_u8 = image_ops.center_crop(pixels_u8, self._input_size)
        embedding = self._call_model(tf.cast(pixels_u8, tf.float32))
        return {EMBEDDING_OUTPUT: tf.cast(embedding, tf.float32)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGES_INPUT)])
    def serve_images(self, images):
        # The raw schema has image as a [1]-shaped feature; label and id are not
        # needed and TFT fills in missing raw features.
        features = {IMAGE_KEY: tf.reshape(images, [-1, 1])}
        if self._crop == "bbox":  # cropped protocol: clients send the car already cropped
            features[BBOX_KEY] = tf.tile([[0.0, 0.0, 1.0, 1.0]], [tf.size(images), 1])
        transformed = self.tft_layer(features)
        return self._embed(image_ops.parse_images(
            tf.reshape(transformed[TRANSFORMED_IMAGE_KEY], [-1]), self._size))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8,
                                                name=PIXELS_INPUT)])
    def serve_pixels(self, pixels):
        square = tf.map_fn(
            lambda image: image_ops.preprocess_pixels(image, self._size, self._pad_value),
            pixels, fn_output_signature=tf.TensorSpec([self._size, self._size, 3], tf.uint8))
        return self._embed(square)


def split_class_names(file_patterns) -> list[str] | None:
    """The sorted distinct class names of transformed (gzip TFRecord) examples.

    One pass that parses only the name (the images are not decoded). None when the
    examples carry no class name (a Transform output from before names were passed
    through): the contract then says nothing about the classes.
    """
    patterns = [file_patterns] if isinstance(file_patterns, str) else list(file_patterns)
    files = sorted(f for p in patterns for f in glob.glob(p) or tf.io.gfile.glob(p))
    if not files:
        return None
    first = next(iter(tf.data.TFRecordDataset(files[:1], compression_type="GZIP")), None)
    if first is None or CLASS_NAME_KEY not in tf.train.Example.FromString(
            first.numpy()).features.feature:
        return None
    spec = {CLASS_NAME_KEY: tf.io.FixedLenFeature([], tf.string)}
    names: set[str] = set()
    for batch in (tf.data.TFRecordDataset(files, compression_type="GZIP")
                  .batch(_NAMES_BATCH)
                  .map(lambda s: tf.io.parse_example(s, spec)[CLASS_NAME_KEY])
                  .as_numpy_iterator()):
        names.update(batch.tolist())
    return sorted(name.decode("utf-8") for name in names)


def seen_classes_entry(train: list[str], valid: list[str]) -> dict:
    """The contract's ``seen_classes``: the names of the training and validation classes
    and a sha256 of both lists (equal digests: the same classes seen)."""
    train, valid = sorted(set(train)), sorted(set(valid))
    digest = hashlib.sha256(json.dumps([train, valid]).encode("utf-8")).hexdigest()
    return {"train": train, "valid": valid, "digest": digest}


def export_saved_model(embedding_model, tft_output, export_dir: str, image_size: int,
                       pad_value, input_size: int = 0, crop: str = "none",
                       seen_classes: dict | None = None) -> None:
    """Write the SavedModel with both signatures to ``export_dir``, and its contract.

    ``assets.extra/contract.json`` says how images must look for this model: the
    crop protocol it was trained for (``bbox``: send the car cropped to its box),
    the stored and input sizes, the pad colour; and, with ``seen_classes``
    (``seen_classes_entry``), the classes it was trained and validated on, so that
    the evaluator of a later run can tell which eval classes this model has seen.
    """
    module = EmbeddingExport(embedding_model, tft_output.transform_features_layer(),
                             image_size, pad_value, input_size, crop)
    tf.saved_model.save(module, export_dir, signatures={
        SERVING_SIGNATURE: module.serve_images,
        PIXELS_SIGNATURE: module.serve_pixels,
    })
    contract = {"crop_protocol": crop, "image_size": int(image_size),
                "input_size": int(input_size) or int(image_size),
                "pad_value": [int(v) for v in pad_value],
                "signatures": [SERVING_SIGNATURE, PIXELS_SIGNATURE]}
    if seen_classes is not None:
        contract[CONTRACT_CLASSES_KEY] = seen_classes
    tf.io.gfile.makedirs(os.path.join(export_dir, "assets.extra"))
    with tf.io.gfile.GFile(os.path.join(export_dir, "assets.extra", CONTRACT_FILE), "w") as f:
        json.dump(contract, f, indent=1, sort_keys=True)
