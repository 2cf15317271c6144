"""P x K batches from the transformed examples (no TFX imports).

Batch-hard and HAP2S losses need every class in a batch to have positives:
each batch holds P distinct classes x K images. The training split is held
in memory as uint8 (S*S*3 bytes per image: 1.2 GB for Cars196's 8k training
images at 224 px), which makes class-balanced sampling an index operation;
augmentation (random crop, flip) runs in tf.data with stateless ops seeded by
(seed, batch number), so a run is reproducible.
"""

from __future__ import annotations

import itertools

import dataclasses
import glob
import logging

import numpy as np
import tensorflow as tf

from components.preprocessing import image_ops
from core.names import LABEL_KEY, TRANSFORMED_IMAGE_KEY

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ImageSet:
    """images uint8 [N, S, S, 3], labels int64 [N] (0-based Cars196 class ids)."""
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _expand(file_patterns) -> list[str]:
    if isinstance(file_patterns, str):
        file_patterns = [file_patterns]
    files = sorted(f for p in file_patterns for f in glob.glob(p) or tf.io.gfile.glob(p))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {list(file_patterns)}")
    return files


def load_image_set(file_patterns, image_size: int, batch_size: int = 256) -> ImageSet:
    """Read transformed (gzip TFRecord) examples into memory."""
    spec = {TRANSFORMED_IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
            LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    dataset = (tf.data.TFRecordDataset(_expand(file_patterns), compression_type="GZIP")
               .batch(batch_size)
               .map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)
               .map(lambda f: (image_ops.parse_images(f[TRANSFORMED_IMAGE_KEY], image_size),
                               f[LABEL_KEY]), num_parallel_calls=tf.data.AUTOTUNE))
    images, labels = [], []
    for x, y in dataset.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    if not labels:
        raise ValueError(f"transformed examples {list(file_patterns)} are empty")
    return ImageSet(np.concatenate(images), np.concatenate(labels).astype(np.int64))


def pk_index_batches(labels: np.ndarray, p: int, k: int, seed: int, start_step: int = 0):
    """Endless index batches [P*K]: P distinct classes, K indices each, class-grouped.

    A class with fewer than K images is sampled with replacement; classes with
    a single image are never drawn (they give an anchor no positive). Batch ``s``
    depends only on (seed, s), so a resumed training continues the stream at
    ``start_step`` instead of replaying the first epoch.
    """
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    usable = sorted(c for c, idx in by_class.items() if len(idx) >= 2)
    if len(usable) < p:
        raise ValueError(
            f"P x K sampling needs {p} classes with at least 2 images, the data has "
            f"{len(usable)}: lower trainer.classes_per_batch")
    for step in itertools.count(start_step):
        rng = np.random.default_rng([seed, step])
        classes = rng.choice(usable, size=p, replace=False)
        yield np.concatenate([
            rng.choice(by_class[c], size=k, replace=len(by_class[c]) < k) for c in classes])


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


def pk_dataset(data: ImageSet, p: int, k: int, seed: int, random_crop: bool = True,
               random_flip: bool = True, label_offset: int = 0, crop_size: int = 0,
               start_step: int = 0) -> tf.data.Dataset:
    """Endless dataset of (pixels float32 [P*K, S, S, 3], {"embedding": y, "logits": y - offset}).

    ``label_offset`` maps Cars196 class ids to the classification head's
    0-based range (the first training class id).
    """
    size = data.images.shape[1:]

    def batches():
        for index in pk_index_batches(data.labels, p, k, seed, start_step):
            yield data.images[index], data.labels[index]

    dataset = tf.data.Dataset.from_generator(
        batches, output_signature=(tf.TensorSpec((p * k, *size), tf.uint8),
                                   tf.TensorSpec((p * k,), tf.int64)))

    def prepare(step, batch):
        images, labels = batch
        pixels = augment(images, tf.stack([tf.cast(seed, tf.int64), step]),
                         random_crop, random_flip, crop_size)
        return pixels, {"embedding": labels, "logits": labels - label_offset}

    return (dataset.enumerate(start=start_step)
            .map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))
