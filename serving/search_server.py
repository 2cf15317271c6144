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

Imports ``serving.metrics``, ``serving.model_server`` (``url_host``),
``serving.search_embeddings``, ``serving.search_grpc``,
``serving.search_rest`` and ``serving.search_service``; ``cli.serving_commands``,
the tests and the benchmark import it.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from http.server import ThreadingHTTPServer

import grpc

from serving.metrics import RequestCounter, prometheus_text
from serving.model_server import url_host
from serving.search_protocol import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT
from serving.search_embeddings import EmbeddingServer
from serving.search_grpc import add_search_servicers
from serving.search_rest import make_search_handler
from serving.search_service import SearchService

log = logging.getLogger("cgd.serving.search")


class SearchServer:
    """gRPC + REST search over ``<base_path>/<model_name>/``; ports 0 pick free ones."""

    def __init__(self, base_path: str, model_name: str, embedding_target: str,
                 host: str = "127.0.0.1", grpc_port: int = DEFAULT_GRPC_PORT,
                 rest_port: int | None = DEFAULT_REST_PORT, poll_seconds: float = 2.0,
                 max_request_bytes: int = 64 * 1024 * 1024, grpc_workers: int = 16,
                 embedding_timeout_s: float = 30.0):
        if poll_seconds <= 0 or max_request_bytes <= 0:
            raise ValueError("poll_seconds and max_request_bytes must be > 0")
        self.embedder = EmbeddingServer(embedding_target, model_name, timeout_s=embedding_timeout_s)
        self.service = SearchService(base_path, model_name, self.embedder)
        self.requests = RequestCounter()
        self.host, self.model_name = host, model_name
        self.poll_seconds = float(poll_seconds)
        self.max_request_bytes = int(max_request_bytes)
        self._requested_ports = (grpc_port, rest_port)
        self._grpc_workers = grpc_workers
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc_server = None
        self._http_server = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    @property
    def grpc_target(self) -> str:
        return f"{url_host(self.host)}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{url_host(self.host)}:{self.rest_port}"

    def start(self) -> "SearchServer":
        if self._grpc_server is not None:
            raise RuntimeError("server already started")
        self._poll()
        grpc_port, rest_port = self._requested_ports
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._grpc_workers,
                                       thread_name_prefix="search-grpc"),
            options=[("grpc.max_receive_message_length", self.max_request_bytes),
                     ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)])
        add_search_servicers(server, self.service, self.requests)
        bound = server.add_insecure_port(f"{url_host(self.host)}:{grpc_port}")
        if bound == 0:
            raise OSError(f"cannot bind the search gRPC port {self.host}:{grpc_port}")
        server.start()
        self._grpc_server, self.grpc_port = server, bound
        try:
            if rest_port is not None:
                handler = make_search_handler(self.service, self.requests, self.metrics_text,
                                              self.max_request_bytes)
                httpd = ThreadingHTTPServer((self.host, rest_port), handler)
                httpd.daemon_threads = True
                self._http_server, self.rest_port = httpd, httpd.server_address[1]
                self._spawn(httpd.serve_forever, "rest")
        except Exception:
            self.stop()
            raise
        self._spawn(self._poll_loop, "poll")
        log.info("search service for model %s from %s: gRPC %s%s (embeddings from %s)",
                 self.model_name, self.service.model_dir, self.grpc_target,
                 f", HTTP {self.rest_url}" if self.rest_port else "", self.embedder.target)
        return self

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

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self._poll()

    def _spawn(self, target, name) -> None:
        thread = threading.Thread(target=target, name=f"cgd-search-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, grace_s: float = 2.0) -> None:
        self._stop.set()
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._grpc_server is not None:
            self._grpc_server.stop(grace_s).wait()
            self._grpc_server = None
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        self.embedder.close()
        log.info("search server for %s stopped", self.model_name)

    def __enter__(self) -> "SearchServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

