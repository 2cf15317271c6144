"""TF Transform preprocessing_fn: raw Cars196 tf.Examples -> square uint8 images.

Referenced by name (``components.transform.preprocessing.preprocessing_fn``) so
it is imported from the installed package, also on Kubeflow. ``custom_config``
carries ``image_size`` and ``pad_value`` from the pipeline config.
"""

from __future__ import annotations

import tensorflow as tf

from components.transform import image_ops

IMAGE_KEY = "image"          # raw: encoded JPEG/PNG bytes
LABEL_KEY = "label"          # raw and transformed: 0-based class id
IMAGE_ID_KEY = "image_id"
TRANSFORMED_IMAGE_KEY = "image_u8"  # serialized uint8 [S, S, 3] (image_ops.serialize_images)


def _flat(tensor: tf.Tensor) -> tf.Tensor:
    # Single-valued features come as [N, 1] with an inferred schema shape.
    return tf.reshape(tensor, [-1])


def preprocessing_fn(inputs: dict, custom_config: dict) -> dict:
    size = int(custom_config["image_size"])
    pad_value = [int(v) for v in custom_config["pad_value"]]
    images = image_ops.preprocess_bytes(_flat(inputs[IMAGE_KEY]), size, pad_value)
    outputs = {TRANSFORMED_IMAGE_KEY: image_ops.serialize_images(images)}
    # The serving signature feeds only images: labels and ids are optional there.
    if LABEL_KEY in inputs:
        outputs[LABEL_KEY] = _flat(inputs[LABEL_KEY])
    if IMAGE_ID_KEY in inputs:
        outputs[IMAGE_ID_KEY] = _flat(inputs[IMAGE_ID_KEY])
    return outputs
