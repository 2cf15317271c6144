"""The model repository: versions on disk, which one is served, polling and the hot swap.

Layout and policy are TF Serving's: ``<base_path>/<model_name>/<int version>/``,
the newest complete version is served (``model_version_policy { latest {
num_versions: 1 } }``), a new version is loaded fully before it replaces the
old one, and requests in flight finish on the version they started with. A
version directory counts as complete once ``saved_model.pb`` exists (the
Pusher copies it last) and its gallery index, if any, matches its manifest
(``version_complete``). With ``num_versions=2`` the version before the newest
stays loaded for requests that name it: the search service pins the version its
index belongs to, and switches after the model server does.

Imports ``serving.errors`` only; ``serving.dataplane`` and
``serving.model_server`` import it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
import weakref
from typing import Any, Mapping

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_status_pb2

from core.names import INDEX_DIR
from search.index import GalleryIndexError, model_fingerprint, read_manifest
from serving.errors import NotFound, Unavailable

log = logging.getLogger("cgd.serving")

SAVED_MODEL_FILE = "saved_model.pb"

# ModelVersionStatus.State: LOADING, AVAILABLE, END, ... (the numbers GetModelStatus reports).
State = get_model_status_pb2.ModelVersionStatus.State


@dataclasses.dataclass(eq=False)
class Servable:
    """One loaded version: the SavedModel, its signatures and their SignatureDefs."""

    version: int
    path: str
    loaded: Any
    signatures: dict  # name -> ConcreteFunction
    input_specs: dict  # name -> {input: tf.TensorSpec}
    signature_defs: Mapping  # name -> tensorflow.SignatureDef (from saved_model.pb)


def load_servable(path: str, version: int) -> Servable:
    with open(os.path.join(path, SAVED_MODEL_FILE), "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    if not saved_model.meta_graphs:
        raise ValueError(f"{path}: saved_model.pb holds no MetaGraphDef")
    loaded = tf.saved_model.load(path)
    signatures = dict(loaded.signatures)
    if not signatures:
        raise ValueError(f"{path}: the SavedModel has no signatures")
    input_specs = {}
    for name, fn in signatures.items():
        _, kwargs = fn.structured_input_signature
        input_specs[name] = dict(kwargs)
    return Servable(version, path, loaded, signatures, input_specs,
                    saved_model.meta_graphs[0].signature_def)


def scan_versions(model_dir: str) -> dict[int, str]:
    """Complete version directories under ``model_dir``: {version: path}.

    Non-numeric names are ignored, and so are directories without
    ``saved_model.pb`` (a push in progress).
    """
    try:
        names = os.listdir(model_dir)
    except FileNotFoundError:
        return {}
    versions = {}
    for name in names:
        if not name.isdigit():
            continue
        path = os.path.join(model_dir, name)
        if version_complete(path):
            versions[int(name)] = path
    return versions


def version_complete(path: str) -> bool:
    """A version directory is complete once ``saved_model.pb`` exists and, when the model
    carries a gallery index (``assets.extra/gallery_index/``), that index is whole too.

    TFX's Pusher copies a version file by file, ``saved_model.pb`` last and not
    atomically (tfx/components/pusher/executor.py): a push killed before that file has
    none; one killed inside it leaves it torn. The index's manifest (search/index.py,
    written last) lists every file's size and the sha256 of the model's
    ``saved_model.pb``: both must match, so neither a torn model nor an index copied in
    part (by any copier, in any order) counts. Checked once per state of the files.
    """
    model = os.path.join(path, SAVED_MODEL_FILE)
    if not os.path.isfile(model):
        return False
    index = os.path.join(path, "assets.extra", INDEX_DIR)
    if not os.path.isdir(index):
        return True
    files = sorted(os.listdir(index))
    return _index_matches(index, _file_identity(model),
                          tuple((f, _file_identity(os.path.join(index, f))) for f in files))


@functools.lru_cache(maxsize=1024)
def _index_matches(index: str, model_identity: tuple, file_identities: tuple) -> bool:
    try:
        manifest = read_manifest(index)
        fingerprint = model_fingerprint(os.path.dirname(os.path.dirname(index)))
    except GalleryIndexError:
        return False
    sizes = {name: identity[1] for name, identity in file_identities}
    return (fingerprint == manifest["model"]["fingerprint"] and
            all(sizes.get(name) == entry["bytes"] for name, entry in manifest["files"].items()))


class ModelRepository:
    """Serves the newest complete version of one model and swaps in new ones.

    ``current`` is replaced by one reference assignment after the new version is
    fully loaded; a request takes the reference once and uses it to the end, so
    an old version stays alive until its last request finishes.
    """

    def __init__(self, base_path: str, model_name: str, num_versions: int = 1):
        if num_versions < 1:
            raise ValueError(f"num_versions must be >= 1: {num_versions}")
        self.base_path = os.path.abspath(base_path)
        self.model_name = model_name
        self.model_dir = os.path.join(self.base_path, model_name)
        self.num_versions = int(num_versions)
        self.current: Servable | None = None
        self._loaded: dict[int, Servable] = {}  # the newest num_versions loaded, current among them
        self._states: dict[int, tuple[int, str, str]] = {}  # version -> (state, code, message)
        self._failed: dict[int, tuple] = {}  # version -> (mtime, size) of the saved_model.pb that failed
        self._lock = threading.Lock()  # one poll at a time
        self._warned_empty = False

    def poll(self) -> bool:
        """Load the newest complete version if it is not the one served. True if swapped."""
        with self._lock:
            versions = scan_versions(self.model_dir)
            candidates = [v for v in versions if not self._failed_unchanged(v, versions[v])]
            if not candidates:
                if not versions and not self._warned_empty:
                    log.warning("no versions of model %s found under %s yet", self.model_name,
                                self.model_dir)
                    self._warned_empty = True
                return False
            self._warned_empty = False
            newest = max(candidates)
            current = self.current
            if current is not None and current.version == newest:
                return False
            path = versions[newest]
            self._set_state(newest, State.LOADING)
            log.info("loading version %d of model %s from %s", newest, self.model_name, path)
            start = time.monotonic()
            try:
                servable = load_servable(path, newest)
            except Exception as e:  # noqa: BLE001 - any load failure keeps the old version
                self._failed[newest] = _file_identity(os.path.join(path, SAVED_MODEL_FILE))
                self._set_state(newest, State.END, "UNKNOWN", f"failed to load {path}: {e}")
                log.error("failed to load version %d of model %s from %s: %s (still serving %s)",
                          newest, self.model_name, path, e,
                          current.version if current else "nothing")
                return False
            weakref.finalize(servable, log.info, "released version %d of model %s "
                             "(its last request finished)", newest, self.model_name).atexit = False
            loaded = {**self._loaded, newest: servable}
            kept = sorted(loaded, reverse=True)[:self.num_versions]
            self._loaded = {v: loaded[v] for v in kept}
            self.current = servable  # the atomic swap
            self._set_state(newest, State.AVAILABLE)
            log.info("loaded version %d of model %s in %.1f s (signatures: %s)", newest,
                     self.model_name, time.monotonic() - start, ", ".join(sorted(servable.signatures)))
            for version in sorted(set(loaded) - set(kept)):
                self._set_state(version, State.END)
                log.info("unloading version %d of model %s (freed when its requests in flight finish)",
                         version, self.model_name)
            return True

    def _failed_unchanged(self, version: int, path: str) -> bool:
        return (version in self._failed
                and self._failed[version] == _file_identity(os.path.join(path, SAVED_MODEL_FILE)))

    def _set_state(self, version: int, state: int, code: str = "OK", message: str = "") -> None:
        self._states[version] = (state, code, message)

    def version_states(self) -> dict[int, tuple[int, str, str]]:
        """{version: (State, status code name, message)} of every version seen."""
        return dict(self._states)

    def served_version(self) -> int | None:
        current = self.current
        return current.version if current is not None else None

    def get(self, version: int | None) -> Servable:
        """The served version, checked against ``version`` (None = whichever is served)."""
        servable = self.current
        if servable is None:
            raise Unavailable(f"model {self.model_name} has no version loaded yet "
                              f"(waiting for a version under {self.model_dir})")
        if version is not None and version != servable.version:
            servable = self._loaded.get(version)
            if servable is None:
                raise NotFound(f"Servable not found for request: Specific({self.model_name}, "
                               f"{version})")
        return servable


def _file_identity(path: str) -> tuple:
    """(mtime_ns, size): a failed load is retried once saved_model.pb changes (a copy finished)."""
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)
