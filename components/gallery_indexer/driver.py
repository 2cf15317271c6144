"""Local-orchestrator driver of the GalleryIndexer: puts the gallery's state into the cache key.

The catalogue (``<serving_model_dir>/catalogue``) and a gallery folder or CSV change
outside anything TFX's cache key sees; without this driver a rerun would reuse an index
built from older items. (A reused index would still be served right with the catalogue:
its manifest records the last catalogue op it holds and the service replays the later
ones; a folder has no such journal.) The local launcher runs the driver before its cache
lookup and adds the returned execution property to the key.

Kubeflow Pipelines never runs TFX drivers; there the indexer's blessing input is a new
artifact every run (the RecallEvaluator is never cached), so the task reruns.
"""

from __future__ import annotations

import hashlib
import json
import os

import tensorflow as tf
from tfx.dsl.components.base import base_driver
from tfx.orchestration.portable import base_driver as ir_base_driver
from tfx.proto.orchestration import driver_output_pb2

from components.gallery_indexer import constants
from components.recall_evaluator import constants as evaluator_keys
from core.names import CATALOGUE_DIR, EVAL_GALLERY


def gallery_state(gallery: str, serving_model_dir: str) -> str:
    """A digest of what the gallery reads besides the examples: the catalogue's last
    sequence number (every add and remove moves it) and, for a folder or CSV gallery,
    every file's name, size and modification time."""
    catalogue, seq = os.path.join(serving_model_dir, CATALOGUE_DIR), 0
    if tf.io.gfile.isdir(catalogue):
        from search.catalogue import Catalogue
        seq = Catalogue(catalogue).last_seq
    state: list = [["catalogue", seq]]
    if gallery != EVAL_GALLERY and tf.io.gfile.exists(gallery):
        paths = ([gallery] if not tf.io.gfile.isdir(gallery) else
                 [os.path.join(d, f) for d, _, files in tf.io.gfile.walk(gallery) for f in files])
        for path in sorted(paths):
            stat = tf.io.gfile.stat(path)
            state.append([path, stat.length, stat.mtime_nsec])
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:16]


class GalleryStateDriver(base_driver.BaseDriver, ir_base_driver.BaseDriver):

    def __init__(self, metadata_handle):
        base_driver.BaseDriver.__init__(self, metadata_handle)
        ir_base_driver.BaseDriver.__init__(self, metadata_handle)

    def run(self, execution_info) -> driver_output_pb2.DriverOutput:
        props = execution_info.exec_properties
        gallery = json.loads(props[constants.GALLERY_INDEX_JSON_KEY])["gallery"]
        result = driver_output_pb2.DriverOutput()
        result.exec_properties[constants.GALLERY_STATE_KEY].string_value = gallery_state(
            gallery, props[evaluator_keys.SERVING_MODEL_DIR_KEY])
        return result
