"""The model in production: the newest complete version in the serving directory.

TF Serving serves the newest integer version under ``<serving_dir>/<model_name>/``,
and the Pusher writes ``<unix time>/`` copying ``saved_model.pb`` last, so the
newest directory holding a ``saved_model.pb`` (and, when it carries a gallery index, one
that matches it) is exactly what production serves.
The RecallEvaluator compares every candidate with it. Reading it from storage
instead of an ML Metadata resolver works on every orchestrator: open-source
Kubeflow Pipelines has no resolver executor, and its metadata is not ours to query.

Works on any path ``tf.io.gfile`` opens (local, gs://). No TFX imports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import tensorflow as tf

from core.names import CONTRACT_CLASSES_KEY, CONTRACT_FILE, INDEX_DIR
from search.index import MANIFEST

SAVED_MODEL_FILE = "saved_model.pb"
_HASH_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class ProductionModel:
    version: int
    path: str          # the version directory, a SavedModel
    fingerprint: str   # saved_model_fingerprint(path)


def saved_model_fingerprint(saved_model_dir: str) -> str:
    """sha256 over the graph and the variables of a SavedModel (not its assets.extra).

    Equal for a model and the Pusher's copy of it, different for any retrained
    model: what decides "the candidate is already in production".
    """
    digest = hashlib.sha256()
    files = [os.path.join(saved_model_dir, SAVED_MODEL_FILE)]
    variables = os.path.join(saved_model_dir, "variables")
    if tf.io.gfile.isdir(variables):
        files += [os.path.join(variables, name) for name in sorted(tf.io.gfile.listdir(variables))]
    for path in files:
        digest.update(os.path.basename(path).encode())
        with tf.io.gfile.GFile(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def newest_served_version(model_base_dir: str) -> ProductionModel | None:
    """The newest complete version under ``model_base_dir`` (``<serving_dir>/<model>``).

    None when the directory does not exist or holds no complete version (the
    first model of a pipeline). Versions still being copied (no saved_model.pb
    yet) are skipped, as TF Serving skips them.
    """
    if not tf.io.gfile.isdir(model_base_dir):
        return None
    versions = sorted((int(name.rstrip("/")) for name in tf.io.gfile.listdir(model_base_dir)
                       if name.rstrip("/").isdigit()), reverse=True)
    for version in versions:
        path = os.path.join(model_base_dir, str(version))
        if _complete(path):
            return ProductionModel(version, path, saved_model_fingerprint(path))
    return None


def _complete(version_dir: str) -> bool:
    """``saved_model.pb`` is there and, when the version carries a gallery index, whole.

    The Pusher copies ``saved_model.pb`` last but not atomically: a push killed inside it
    leaves a torn file. A version with an index can tell: the index's manifest (written
    last, search/index.py) holds the sha256 of the model's ``saved_model.pb``, so a torn
    model, or an index still being copied, does not become the baseline (the serving
    side's rule, serving/model_repository.version_complete, checks the same).
    """
    model = os.path.join(version_dir, SAVED_MODEL_FILE)
    if not tf.io.gfile.exists(model):
        return False
    index = os.path.join(version_dir, "assets.extra", INDEX_DIR)
    if not tf.io.gfile.isdir(index):
        return True
    try:
        with tf.io.gfile.GFile(os.path.join(index, MANIFEST)) as f:
            fingerprint = json.load(f)["model"]["fingerprint"]
    except (tf.errors.OpError, ValueError, KeyError, TypeError):
        return False  # no manifest yet, or a torn one: the copy is not finished
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(model, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest() == fingerprint


def seen_classes(saved_model_dir: str) -> frozenset[str] | None:
    """The class names a model was trained and validated on, from its contract.

    None when unknown: no ``assets.extra/contract.json``, or a contract written before
    models carried their classes. Unknown is not "none seen": the evaluator says so.
    """
    path = os.path.join(saved_model_dir, "assets.extra", CONTRACT_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        try:
            contract = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: not a JSON contract ({e})") from None
    seen = contract.get(CONTRACT_CLASSES_KEY)
    if seen is None:
        return None
    if not isinstance(seen, dict) or not all(
            isinstance(seen.get(key), list) for key in ("train", "valid")):
        raise ValueError(f"{path}: '{CONTRACT_CLASSES_KEY}' must hold the lists 'train' and "
                         f"'valid' of class names, got {str(seen)[:120]}")
    return frozenset(str(name) for key in ("train", "valid") for name in seen[key])
