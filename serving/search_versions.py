"""The version directories as the search service sees them: which carry an index, and where.

A version's index lives inside its SavedModel, ``<version>/assets.extra/gallery_index/``
(``core.names.INDEX_DIR``), published with the model by the Pusher as one directory.

Imports ``serving.model_repository`` (the layout's file names);
``serving.search_service`` and ``cli.serving_commands`` import it.
"""

from __future__ import annotations

import os

from core.names import INDEX_DIR
from serving.model_repository import SAVED_MODEL_FILE, scan_versions


def index_dir(version_dir: str) -> str:
    """Where a version keeps the index built with its model."""
    return os.path.join(version_dir, "assets.extra", INDEX_DIR)


def pushed_versions(model_dir: str) -> dict[int, str]:
    """{version: path} of the version directories whose ``saved_model.pb`` is there.

    Wider than ``model_repository.scan_versions``, which also leaves out a version whose
    index is not whole or not its model's: the search service looks at those too, to
    refuse them with the reason (the file, both fingerprints) instead of passing them by.
    """
    try:
        names = os.listdir(model_dir)
    except FileNotFoundError:
        return {}
    return {int(n): os.path.join(model_dir, n) for n in names
            if n.isdigit() and os.path.isfile(os.path.join(model_dir, n, SAVED_MODEL_FILE))}


def versions_with_index(model_dir: str) -> list[int]:
    """The complete versions under ``model_dir`` that carry an index directory."""
    return sorted(v for v, path in scan_versions(model_dir).items()
                  if os.path.isdir(index_dir(path)))


def version_identity(version_dir: str) -> tuple:
    """What a refused version is remembered by: retried once its model or index files change."""
    directory = index_dir(version_dir)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        names = []
    out = []
    for path in [os.path.join(version_dir, SAVED_MODEL_FILE)] + \
            [os.path.join(directory, name) for name in names]:
        try:
            st = os.stat(path)
            out.append((path, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((path, None))
    return tuple(out)
