"""A gRPC client of the search service (the protocol: ``serving.search_protocol``).

    with SearchClient("localhost:8510", "cgd") as client:
        version, hits = client.search_images([open("car.jpg", "rb").read()], k=8)

An ``EmbeddingClient`` (deadlines, retries on UNAVAILABLE, ``ServingError``) that
sends the search signatures. Imports ``serving.client`` and ``serving.search_protocol``;
``cli.serving_commands`` and the benchmark import it.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from core.names import IMAGES_INPUT
from serving.client import EmbeddingClient
from serving.search_protocol import (ADD_SIGNATURE, DEFAULT_GRPC_PORT, DEFAULT_K,
                                     DISTANCES_OUTPUT, EMBEDDINGS_INPUT, IDS, K_INPUT, METADATA,
                                     REMOVE_SIGNATURE, SEARCH_SIGNATURE, SEQ_OUTPUT)

class SearchClient(EmbeddingClient):
    """Top-k search and catalogue edits through the search service (gRPC).

    ``search_*`` return ``(model version that answered, [[{"id", "distance",
    "metadata"}] per query])``. Failures raise ``serving.client.ServingError``
    with the service's status code (ALREADY_EXISTS, NOT_FOUND, INVALID_ARGUMENT...).
    """

    def __init__(self, target: str = f"localhost:{DEFAULT_GRPC_PORT}", model_name: str = "cgd",
                 **kwargs):
        super().__init__(target, model_name, signature_name=SEARCH_SIGNATURE, **kwargs)

    def _signed(self, signature: str, inputs: dict) -> dict:
        return self.predict(inputs, signature_name=signature)

    def search_images(self, images: Sequence[bytes], k: int = DEFAULT_K):
        return self._search({IMAGES_INPUT: np.asarray(list(images), dtype=object)}, k)

    def search_embeddings(self, embeddings: np.ndarray, k: int = DEFAULT_K):
        return self._search({EMBEDDINGS_INPUT: np.asarray(embeddings, np.float32)}, k)

    def _search(self, inputs: dict, k: int):
        outputs = self._signed(SEARCH_SIGNATURE, {**inputs, K_INPUT: np.int32(k)})
        return self.last_model_version, decode_hits(outputs)

    def add(self, ids: Sequence[str], images: Sequence[bytes],
            metadata: Sequence[dict | None] | None = None) -> int:
        """Adds images to the gallery by id; the catalogue's sequence number of the add."""
        inputs = {IDS: np.asarray(list(ids), dtype=object),
                  IMAGES_INPUT: np.asarray(list(images), dtype=object)}
        if metadata is not None:
            inputs[METADATA] = np.asarray([json.dumps(m or {}) for m in metadata], dtype=object)
        return int(self._signed(ADD_SIGNATURE, inputs)[SEQ_OUTPUT])

    def remove(self, ids: Sequence[str]) -> int:
        return int(self._signed(REMOVE_SIGNATURE, {IDS: np.asarray(list(ids), dtype=object)})
                   [SEQ_OUTPUT])


def decode_hits(outputs: dict) -> list[list[dict]]:
    """A search answer's three [N, k] outputs as [[{"id", "distance", "metadata"}]]."""
    ids, distances, metadata = outputs[IDS], outputs[DISTANCES_OUTPUT], outputs[METADATA]
    return [[{"id": _text(i), "distance": float(d), "metadata": json.loads(_text(m))}
             for i, d, m in zip(ids[row], distances[row], metadata[row])]
            for row in range(ids.shape[0])]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
