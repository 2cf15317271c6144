"""``ModelServer``: the embedded, TensorFlow-Serving-compatible server, composed of its parts.

Production serves the Pusher's output with the official ``tensorflow/serving``
image (see ``serving/deploy``). The ``tensorflow_model_server`` binary is not
installable here, so local runs, the demo and the tests use this server, which
answers the same protocol, so that one client (``serving.client``) talks to both:

* gRPC ``tensorflow.serving.PredictionService`` (``Predict``, ``GetModelMetadata``)
  and ``tensorflow.serving.ModelService`` (``GetModelStatus``): ``serving.grpc_api``;
* REST on a second port: ``GET /v1/models/NAME[/versions/V][/metadata]``,
  ``POST /v1/models/NAME[/versions/V]:predict``: ``serving.rest_api``.

Versions, polling and the hot swap are ``serving.model_repository``'s; request
handling common to both protocols is ``serving.dataplane``'s; optional
server-side batching (``max_batch_size > 0``) is ``serving.batching``'s; error
codes (TF Serving's: unknown model or version NOT_FOUND, bad inputs
INVALID_ARGUMENT, unknown signature FAILED_PRECONDITION, oversized request
RESOURCE_EXHAUSTED, REST 413, and UNAVAILABLE before the first version loads)
are mapped in ``serving.errors``; counts and the Prometheus page are
``serving.metrics``'s.

    with ModelServer("/srv/models", "cgd", grpc_port=0, rest_port=0) as server:
        print(server.grpc_target, server.rest_url)

Imports the serving modules above; imported by ``cli.serving_commands``, the demo and tests.
"""

from __future__ import annotations

import logging
import time

from serving.batching import Batcher
from serving.dataplane import DataPlane
from serving.grpc_api import add_servicers
from serving.metrics import RequestCounter, prometheus_text
from serving.model_repository import ModelRepository
from serving.ports import PortsServer
from serving.rest_api import make_handler

log = logging.getLogger("cgd.serving")

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024


class ModelServer(PortsServer):
    """gRPC + REST model server for ``<base_path>/<model_name>/<version>/``.

    Args:
        base_path: directory holding ``<model_name>/`` (the Pusher's serving dir).
            TF Serving's ``--model_base_path`` is ``base_path/model_name``.
        grpc_port, rest_port: 0 picks a free port (see ``grpc_port``/``rest_port``
            after ``start()``); ``rest_port=None`` disables REST.
        poll_seconds: how often to look for new versions.
        max_batch_size, batch_timeout_ms: server-side batching, off when 0.
        max_request_bytes: larger requests fail with RESOURCE_EXHAUSTED (REST: 413).
        num_versions: versions kept loaded (TF Serving's ``latest { num_versions }``): 2
            beside the search service, which answers from the previous version until the
            new one's index is loaded (``serving.search_service``).
    """

    def __init__(self, base_path: str, model_name: str, host: str = "127.0.0.1",
                 grpc_port: int = 8500, rest_port: int | None = 8501, poll_seconds: float = 2.0,
                 max_batch_size: int = 0, batch_timeout_ms: float = 5.0,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, grpc_workers: int = 16,
                 num_versions: int = 1):
        if not model_name or "/" in model_name:
            raise ValueError(f"model_name must be non-empty without '/': {model_name!r}")
        if max_batch_size < 0:
            raise ValueError("max_batch_size must be >= 0")
        # A request waiting for its batch holds a worker thread, so a batch can only fill
        # if at least max_batch_size requests can wait at once (twice that keeps one filling
        # while the previous one runs).
        super().__init__(host, grpc_port, rest_port, poll_seconds, max_request_bytes,
                         max(int(grpc_workers), 2 * max_batch_size))
        self.repository = ModelRepository(base_path, model_name, num_versions)
        self.batcher = Batcher(max_batch_size, batch_timeout_ms) if max_batch_size > 0 else None
        self.dataplane = DataPlane(self.repository, self.batcher)
        self.requests = RequestCounter()
        self.model_name = model_name

    def _add_servicers(self, server) -> None:
        add_servicers(server, self.dataplane, self.requests)

    def _make_handler(self):
        return make_handler(self.dataplane, self.requests, self.metrics_text,
                            self.max_request_bytes)

    def _poll(self) -> None:
        # At start, like tensorflow_model_server: load what is there before opening the ports.
        self.repository.poll()

    def _started(self) -> None:
        log.info("serving model %s from %s: gRPC %s%s", self.model_name, self.repository.model_dir,
                 self.grpc_target, f", REST {self.rest_url}" if self.rest_port else "")

    def _stopped(self) -> None:
        log.info("model server for %s stopped", self.model_name)

    def metrics_text(self) -> str:
        """The Prometheus page: request counts, the served version, batching counters."""
        return prometheus_text(self.model_name, self.requests.snapshot(),
                               self.repository.served_version(),
                               self.batcher.stats() if self.batcher is not None else None)

    def wait_for_version(self, version: int | None = None, timeout_s: float = 30.0) -> int:
        """Block until ``version`` (or any version) is served; returns the served version."""
        deadline = time.monotonic() + timeout_s
        while True:
            served = self.repository.served_version()
            if served is not None and (version is None or served >= version):
                return served
            if time.monotonic() > deadline:
                raise TimeoutError(f"model {self.model_name}: version {version or 'any'} not "
                                   f"loaded within {timeout_s} s")
            time.sleep(0.05)
