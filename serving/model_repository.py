"""The model repository: versions on disk, which one is served, polling and the hot swap.

Layout and policy are TF Serving's: ``<base_path>/<model_name>/<int version>/``,
the newest complete version is served (``model_version_policy { latest {
num_versions: 1 } }``), a new version is loaded fully before it replaces the
old one, and requests in flight finish on the version they started with. A
version directory counts as complete once ``saved_model.pb`` exists (the
Pusher copies it last).

Imports ``serving.errors`` only; ``serving.dataplane`` and
``serving.model_server`` import it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import weakref
from typing import Any, Mapping

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_status_pb2

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
        if os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
            versions[int(name)] = path
    return versions


class ModelRepository:
    """Serves the newest complete version of one model and swaps in new ones.

    ``current`` is replaced by one reference assignment after the new version is
    fully loaded; a request takes the reference once and uses it to the end, so
    an old version stays alive until its last request finishes.
    """

    def __init__(self, base_path: str, model_name: str):
        self.base_path = os.path.abspath(base_path)
        self.model_name = model_name
        self.model_dir = os.path.join(self.base_path, model_name)
        self.current: Servable | None = None
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
            self.current = servable  # the atomic swap
            self._set_state(newest, State.AVAILABLE)
            log.info("loaded version %d of model %s in %.1f s (signatures: %s)", newest,
                     self.model_name, time.monotonic() - start, ", ".join(sorted(servable.signatures)))
            if current is not None:
                self._set_state(current.version, State.END)
                log.info("unloading version %d of model %s (freed when its requests in flight finish)",
                         current.version, self.model_name)
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
            raise NotFound(f"Servable not found for request: Specific({self.model_name}, {version})")
        return servable


def _file_identity(path: str) -> tuple:
    """(mtime_ns, size): a failed load is retried once saved_model.pb changes (a copy finished)."""
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)
