"""Training-batch augmentation (no TFX imports): stateless TensorFlow ops seeded by
(seed, batch number), so a run is reproducible and a resumed run continues the stream.

``augment`` makes the view of each image (random crop at native resolution or a
rescaled crop, flip); ``class_hue_rotation`` changes colours per class, not per image.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from components.preprocessing import image_ops


def augment(images: tf.Tensor, seed: tf.Tensor, random_crop: bool, random_flip: bool,
            crop_size: int = 0):
    """uint8 [B, S, S, 3] -> float32 [B, C, C, 3] in 0..255; seed: int [2] (stateless).

    With ``crop_size`` C < S, ``random_crop`` takes a C x C window at a random place
    of each image at native resolution (leftthomas/CGD: resize to 252, crop 224),
    and without ``random_crop`` the centre window. Otherwise (C = S) it crops
    80-100% of the side and resizes back to S.
    """
    x = tf.cast(images, tf.float32)
    size = tf.shape(x)[1]
    if crop_size and random_crop:
        batch = tf.shape(x)[0]
        seeds = tf.random.experimental.stateless_split(seed, 2)
        span = tf.cast(size - crop_size + 1, tf.float32)
        y0 = tf.floor(tf.random.stateless_uniform([batch, 1], seeds[0]) * span)
        x0 = tf.floor(tf.random.stateless_uniform([batch, 1], seeds[1]) * span)
        last = tf.cast(size - 1, tf.float32)
        # Pixel-aligned boxes of exactly crop_size pixels: crop_and_resize copies them.
        boxes = tf.concat([y0, x0, y0 + crop_size - 1, x0 + crop_size - 1], axis=1) / last
        x = tf.image.crop_and_resize(x, boxes, tf.range(batch), [crop_size, crop_size])
        seed = tf.random.experimental.stateless_fold_in(seed, 1)
    elif crop_size:
        x = image_ops.center_crop(x, crop_size)
    elif random_crop:
        # Crop 80-100% of the side at a random place, resize back to S.
        seeds = tf.random.experimental.stateless_split(seed, 3)
        batch = tf.shape(x)[0]
        scale = tf.random.stateless_uniform([batch, 1], seeds[0], 0.8, 1.0)
        y0 = tf.random.stateless_uniform([batch, 1], seeds[1]) * (1.0 - scale)
        x0 = tf.random.stateless_uniform([batch, 1], seeds[2]) * (1.0 - scale)
        boxes = tf.concat([y0, x0, y0 + scale, x0 + scale], axis=1)
        x = tf.image.crop_and_resize(x, boxes, tf.range(batch), tf.stack([size, size]))
        seed = tf.random.experimental.stateless_fold_in(seed, 1)
    if random_flip:
        flip = tf.random.stateless_uniform([tf.shape(x)[0], 1, 1, 1], seed) < 0.5
        x = tf.where(flip, tf.reverse(x, axis=[2]), x)
    return x


def class_hue_rotation(pixels: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor,
                       max_turn: float) -> tf.Tensor:
    """Rotate the hue of each class's images in a batch by one random angle per class.

    pixels float32 [B, S, S, 3] RGB 0..255, labels [B], seed int [2] (stateless).
    Every image of a class gets the same rotation, uniform in +-``max_turn`` of a full
    turn (0.5: any hue), about the grey axis of RGB space (greys keep their value; the
    result is clipped to 0..255). Positives keep matching colours, so colour stays a
    cue for the ranking loss, but the absolute colours of the training classes cannot
    be memorised: the embedding learns to tell colours apart over the whole hue circle,
    also those no training class has.
    """
    _, class_index = tf.unique(tf.reshape(labels, [-1]))
    turns = tf.random.stateless_uniform([tf.shape(pixels)[0]], seed, -max_turn, max_turn)
    angle = 2.0 * np.pi * tf.gather(turns, class_index)  # per class, not per image
    cos, sin = tf.cos(angle)[:, None, None], tf.sin(angle)[:, None, None]
    # Rodrigues' rotation about the unit grey axis (1, 1, 1) / sqrt(3).
    grey = tf.fill([1, 3, 3], 1.0 / 3.0)
    cross = tf.constant([[0., -1., 1.], [1., 0., -1.], [-1., 1., 0.]])[None] / np.sqrt(3.0)
    rotation = cos * tf.eye(3)[None] + (1.0 - cos) * grey + sin * cross  # [B, 3, 3]
    rotated = tf.einsum("bhwc,bdc->bhwd", pixels, rotation)
    return tf.clip_by_value(rotated, 0.0, 255.0)
