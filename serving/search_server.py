"""``SearchServer``: the search service on its own gRPC and REST ports, beside a model server.

Query embeddings come from any TF-Serving-protocol server at ``embedding_target``:
the official ``tensorflow/serving`` in production (``cgd search-serve``), or the
embedded ``serving.model_server.ModelServer`` in the same process (``cgd serve
--search``). Both read the same ``<base_path>/<model_name>/<version>/``; the
search service also writes the catalogue at ``<model_name>/catalogue/``.

    with ModelServer(base, "cgd", grpc_port=0, num_versions=2) as models, \\
            SearchServer(base, "cgd", models.grpc_target, grpc_port=0, rest_port=0) as search:
        print(search.grpc_target, search.rest_url)

The embedding server should keep the previous version loaded (TF Serving's
``latest { num_versions: 2 }``): the search answers from the previous pair until
the new version's index is loaded, and asks for that version by number.

Imports ``serving.metrics``, ``serving.ports`` (the ports' lifecycle),
``serving.search_embeddings``, ``serving.search_grpc``,
``serving.search_rest`` and ``serving.search_service``; ``cli.serving_commands``,
the tests and the benchmark import it.
"""

from __future__ import annotations

import logging

from serving.metrics import RequestCounter, prometheus_text
from serving.ports import PortsServer
from serving.search_protocol import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT
from serving.search_embeddings import EmbeddingServer
from serving.search_grpc import add_search_servicers
from serving.search_rest import make_search_handler
from serving.search_service import SearchService

log = logging.getLogger("cgd.serving.search")


class SearchServer(PortsServer):
    """gRPC + REST search over ``<base_path>/<model_name>/``; ports 0 pick free ones."""

    LABEL = "search"

    def __init__(self, base_path: str, model_name: str, embedding_target: str,
                 host: str = "127.0.0.1", grpc_port: int = DEFAULT_GRPC_PORT,
                 rest_port: int | None = DEFAULT_REST_PORT, poll_seconds: float = 2.0,
                 max_request_bytes: int = 64 * 1024 * 1024, grpc_workers: int = 16,
                 embedding_timeout_s: float = 30.0):
        super().__init__(host, grpc_port, rest_port, poll_seconds, max_request_bytes,
                         grpc_workers)
        self.embedder = EmbeddingServer(embedding_target, model_name, timeout_s=embedding_timeout_s)
        self.service = SearchService(base_path, model_name, self.embedder)
        self.requests = RequestCounter()
        self.model_name = model_name

    def _add_servicers(self, server) -> None:
        add_search_servicers(server, self.service, self.requests)

    def _make_handler(self):
        return make_search_handler(self.service, self.requests, self.metrics_text,
                                   self.max_request_bytes)

    def _started(self) -> None:
        log.info("search service for model %s from %s: gRPC %s%s (embeddings from %s)",
                 self.model_name, self.service.model_dir, self.grpc_target,
                 f", HTTP {self.rest_url}" if self.rest_port else "", self.embedder.target)

    def _stopped(self) -> None:
        self.embedder.close()
        log.info("search server for %s stopped", self.model_name)

    def metrics_text(self) -> str:
        """TF Serving's request counter and the served version, plus the gallery's size and
        how many versions were refused (their reasons: the status call)."""
        refused = sum(1 for _, code, _ in self.service.version_states().values() if code != "OK")
        return (prometheus_text(self.model_name, self.requests.snapshot(),
                                self.service.served_version(), None)
                + f'cgd_search_gallery_size{{model_name="{self.model_name}"}} '
                  f'{self.service.gallery_size()}\n'
                + f'cgd_search_versions_refused{{model_name="{self.model_name}"}} {refused}\n')

    def _poll(self) -> None:
        try:
            self.service.poll()
        except Exception:  # noqa: BLE001 - keep serving the current pair; say why in the log
            log.exception("search: polling %s failed", self.service.model_dir)
