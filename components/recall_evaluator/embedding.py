"""The eval split and its embeddings through the exported signature (what is served).

Used by the RecallEvaluator's executor and by `cgd analyze`.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from core.names import (CLASS_NAME_KEY, EMBEDDING_OUTPUT, EVAL_ROLE_KEY, IMAGE_ID_KEY,
                        IMAGE_KEY, IMAGES_INPUT, LABEL_KEY, SERVING_SIGNATURE)

log = logging.getLogger(__name__)
EMBED_BATCH = 64


class EvalImages(NamedTuple):
    """One split of raw Examples: encoded images, 0-based labels, ids, and the roles
    ("query"/"gallery" per image for In-shop's protocol; None: all-vs-all)."""
    images: list[bytes]
    labels: np.ndarray
    ids: list[str]
    roles: Optional[np.ndarray]


def read_eval_images(examples_uri: str, split: str) -> EvalImages:
    """The images, labels, ids and evaluation roles of one split of raw Examples."""
    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"no examples in split '{split}' under {examples_uri}")
    images, labels, ids, roles = [], [], [], []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        feature = tf.train.Example.FromString(record).features.feature
        images.append(feature[IMAGE_KEY].bytes_list.value[0])
        labels.append(feature[LABEL_KEY].int64_list.value[0])
        ids.append(feature[IMAGE_ID_KEY].bytes_list.value[0].decode())
        # Examples written before the role feature existed are all-vs-all.
        role = feature[EVAL_ROLE_KEY].bytes_list.value if EVAL_ROLE_KEY in feature else [b""]
        roles.append(role[0].decode())
    return EvalImages(images, np.asarray(labels, np.int64), ids,
                      np.asarray(roles) if any(roles) else None)


def read_class_names(examples_uri: str, split: str) -> Optional[list[str]]:
    """The class name of every image of one split, in ``read_eval_images``' order.

    None when the examples carry no class names (examples written by hand in tests).
    """
    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    names = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        feature = tf.train.Example.FromString(record).features.feature
        if CLASS_NAME_KEY not in feature:
            return None
        names.append(feature[CLASS_NAME_KEY].bytes_list.value[0].decode("utf-8"))
    return names


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
