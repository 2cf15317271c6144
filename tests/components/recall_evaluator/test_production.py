"""components/recall_evaluator/production.py: which version is the model in production."""
from __future__ import annotations

import hashlib
import json

from components.recall_evaluator.production import newest_served_version
from core.names import INDEX_DIR
from search.index import MANIFEST


def _version(base, version: int, model: bytes, index_fingerprint: str | None = None,
             manifest: bool = True):
    path = base / str(version)
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(model)
    if index_fingerprint is not None:
        index = path / "assets.extra" / INDEX_DIR
        index.mkdir(parents=True)
        if manifest:
            (index / MANIFEST).write_text(json.dumps({"model": {
                "fingerprint": index_fingerprint}}))
    return path


def test_the_newest_version_with_a_saved_model_is_production(tmp_path):
    _version(tmp_path, 1, b"one")
    _version(tmp_path, 2, b"two")
    (tmp_path / "3").mkdir()  # a push that has not reached saved_model.pb
    assert newest_served_version(str(tmp_path)).version == 2


def test_a_version_whose_model_does_not_match_its_index_is_not_production(tmp_path):
    """A push killed inside saved_model.pb leaves it torn; the index's manifest, written
    before the copy, holds the whole file's sha256."""
    whole = b"the whole graph"
    _version(tmp_path, 1, b"one", hashlib.sha256(b"one").hexdigest())
    _version(tmp_path, 2, whole[:5], hashlib.sha256(whole).hexdigest())
    assert newest_served_version(str(tmp_path)).version == 1
    (tmp_path / "2" / "saved_model.pb").write_bytes(whole)  # the copy finished
    assert newest_served_version(str(tmp_path)).version == 2


def test_an_index_still_being_copied_keeps_the_previous_version(tmp_path):
    _version(tmp_path, 1, b"one")
    _version(tmp_path, 2, b"two", hashlib.sha256(b"two").hexdigest(), manifest=False)
    assert newest_served_version(str(tmp_path)).version == 1
