"""Embeddings for the search service: the embedding server it asks, and a per-version cache.

``EmbeddingServer`` asks any TF-Serving-protocol server (tensorflow/serving in production,
``cgd serve`` locally) for one pinned version's embeddings, and turns its failures into
``RequestError`` with the server's status code. ``EmbeddingCache`` keeps the catalogue's
embeddings per version on disk, so a restart replays the catalogue without re-embedding.

Imports ``serving.client`` and ``serving.errors``; ``serving.search_service`` and
``serving.search_server`` import it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Sequence

import numpy as np

from core.names import EMBEDDING_OUTPUT, SERVING_SIGNATURE
from serving.client import EmbeddingClient, ServingError
from serving.errors import RequestError


class EmbeddingServer:
    """The TF-Serving-protocol server that embeds queries: tensorflow/serving, or `cgd serve`."""

    def __init__(self, target: str, model_name: str, timeout_s: float = 30.0,
                 batch_size: int = 64):
        self.target = target
        self._client = EmbeddingClient(target, model_name, timeout_s=timeout_s, retries=1,
                                       batch_size=batch_size)

    def embed(self, images: Sequence[bytes], version: int) -> np.ndarray:
        try:
            return self._client.embed_bytes(images, version=version)
        except ServingError as e:
            raise RequestError(f"embedding server {self.target}, version {version}: {e.details}",
                               e.code.name) from None

    def dimension(self, version: int) -> int | None:
        """The embedding's size in ``version``'s serving signature (None if the signature leaves
        it open); NOT_FOUND/UNAVAILABLE while the server does not serve ``version``."""
        try:
            metadata = self._client.metadata(version=version)
        except ServingError as e:
            raise RequestError(f"embedding server {self.target}, version {version}: {e.details}",
                               e.code.name) from None
        shape = (metadata["signature_def"].get(SERVING_SIGNATURE, {}).get("outputs", {})
                 .get(EMBEDDING_OUTPUT, {}).get("shape"))
        return shape[-1] if shape and shape[-1] > 0 else None

    def close(self) -> None:
        self._client.close()


class EmbeddingCache:
    """Catalogue images' embeddings by version: ``<catalogue>/embeddings/<version>/<sha256>.npy``.

    A restart replays the catalogue without re-embedding what it embedded before; each
    file is written whole (temp file, ``os.replace``), so a crash leaves none half-written.
    """

    def __init__(self, directory: str):
        self.directory = directory

    def _path(self, version: int, image: bytes) -> str:
        name = hashlib.sha256(image).hexdigest() + ".npy"
        return os.path.join(self.directory, str(version), name)

    def get(self, version: int, image: bytes) -> np.ndarray | None:
        try:
            return np.load(self._path(version, image), allow_pickle=False)
        except (OSError, ValueError):
            return None  # not cached (or unreadable): embed again

    def put(self, version: int, image: bytes, vector: np.ndarray) -> None:
        path = self._path(version, image)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=os.path.dirname(path))
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.asarray(vector, np.float32))
        os.replace(tmp, path)
