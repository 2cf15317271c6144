"""Transform's module file: ``preprocessing_fn``, raw tf.Examples -> square uint8 images.

Referenced by name (``components.preprocessing.tft_module.preprocessing_fn``) so
it is imported from the installed package, also on Kubeflow. ``custom_config``
carries the transform section of the config (``core.config.TransformJob``): the stored
size, the padding and the crop protocol.
"""

from __future__ import annotations

import tensorflow as tf

from components.preprocessing import image_ops
from core.config import TransformJob
from core.names import (BBOX_KEY, CLASS_NAME_KEY, IMAGE_ID_KEY, IMAGE_KEY, LABEL_KEY,
                        TRANSFORM_JOB_KEY, TRANSFORMED_IMAGE_KEY)


def _flat(tensor: tf.Tensor) -> tf.Tensor:
    # Single-valued features come as [N, 1] with an inferred schema shape.
    return tf.reshape(tensor, [-1])


def preprocessing_fn(inputs: dict, custom_config: dict) -> dict:
    t = TransformJob.from_dict(custom_config[TRANSFORM_JOB_KEY]).transform
    boxes = None
    if t.crop == "bbox":  # the cropped protocol
        boxes = tf.reshape(inputs[BBOX_KEY], [-1, 4])
    images = image_ops.preprocess_bytes(_flat(inputs[IMAGE_KEY]), int(t.image_size),
                                        [int(v) for v in t.pad_value], boxes,
                                        float(t.crop_margin))
    outputs = {TRANSFORMED_IMAGE_KEY: image_ops.serialize_images(images)}
    # The serving signature feeds only images: labels and ids are optional there.
    if LABEL_KEY in inputs:
        outputs[LABEL_KEY] = _flat(inputs[LABEL_KEY])
    if IMAGE_ID_KEY in inputs:
        outputs[IMAGE_ID_KEY] = _flat(inputs[IMAGE_ID_KEY])
    # The Trainer writes the names of the classes it saw into the model's contract, so
    # that a later evaluator knows which eval classes production has trained on.
    if CLASS_NAME_KEY in inputs:
        outputs[CLASS_NAME_KEY] = _flat(inputs[CLASS_NAME_KEY])
    return outputs
