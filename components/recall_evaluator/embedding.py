"""The eval split and its embeddings through the exported signature (what is served).

Used by the RecallEvaluator's executor and by `cgd analyze`.
"""

from __future__ import annotations

import glob
import logging
import os

import numpy as np
import tensorflow as tf

from core.names import (EMBEDDING_OUTPUT, IMAGE_ID_KEY, IMAGE_KEY, IMAGES_INPUT, LABEL_KEY,
                        SERVING_SIGNATURE)

log = logging.getLogger(__name__)
EMBED_BATCH = 64


def read_eval_images(examples_uri: str, split: str) -> tuple[list[bytes], np.ndarray, list[str]]:
    """Encoded image bytes, 0-based labels and ids of one split of raw Examples."""
    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"no examples in split '{split}' under {examples_uri}")
    images, labels, ids = [], [], []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        feature = tf.train.Example.FromString(record).features.feature
        images.append(feature[IMAGE_KEY].bytes_list.value[0])
        labels.append(feature[LABEL_KEY].int64_list.value[0])
        ids.append(feature[IMAGE_ID_KEY].bytes_list.value[0].decode())
    return images, np.asarray(labels, np.int64), ids


def embed_with_signature(model_dir: str, images: list[bytes]) -> np.ndarray:
    """[N, D] embeddings from the SavedModel's serving signature (what is served)."""
    signature = tf.saved_model.load(model_dir).signatures[SERVING_SIGNATURE]
    out = []
    for start in range(0, len(images), EMBED_BATCH):
        batch = tf.constant(images[start:start + EMBED_BATCH])
        out.append(signature(**{IMAGES_INPUT: batch})[EMBEDDING_OUTPUT].numpy())
        done = min(start + EMBED_BATCH, len(images))
        if done == len(images) or done % (EMBED_BATCH * 32) == 0:  # progress, not a flood
            log.info("embedded %d/%d images", done, len(images))
    return np.concatenate(out)
