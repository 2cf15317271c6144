"""``PortsServer``: one gRPC port, an optional HTTP port, a polling thread, and their
lifecycle: what the model server and the search server share.

A subclass says what the ports serve (``_add_servicers``, ``_make_handler``) and what
its poll does (``_poll``); ``start`` polls once before opening the ports, as
tensorflow_model_server loads what is there before it listens. Ports 0 pick free ones
(``grpc_port``/``rest_port`` after ``start``); ``rest_port=None`` opens no HTTP port.
Imports nothing of serving; ``model_server`` and ``search_server`` build on it.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc

log = logging.getLogger("cgd.serving")


def url_host(host: str) -> str:
    """``host`` as it goes in a URL or gRPC target: an IPv6 literal needs brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class PortsServer:
    """The two ports and the poll thread; ``with server:`` starts and stops them."""

    # What a subclass names itself in thread names, log lines and bind errors.
    LABEL = "serving"

    def __init__(self, host: str, grpc_port: int, rest_port: int | None, poll_seconds: float,
                 max_request_bytes: int, grpc_workers: int):
        if poll_seconds <= 0 or max_request_bytes <= 0:
            raise ValueError("poll_seconds and max_request_bytes must be > 0")
        self.host = host
        self.poll_seconds = float(poll_seconds)
        self.max_request_bytes = int(max_request_bytes)
        self._requested_ports = (grpc_port, rest_port)
        self._grpc_workers = int(grpc_workers)
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc_server = None
        self._http_server = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # ------------------------------------------------------------------ what a subclass serves

    def _add_servicers(self, server: grpc.Server) -> None:
        raise NotImplementedError

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def _poll(self) -> None:
        raise NotImplementedError

    def _started(self) -> None:
        """Called once both ports are open (a log line)."""

    def _stopped(self) -> None:
        """Called after the ports are closed and the threads joined."""

    # ------------------------------------------------------------------ the lifecycle

    @property
    def grpc_target(self) -> str:
        return f"{url_host(self.host)}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{url_host(self.host)}:{self.rest_port}"

    def start(self):
        if self._grpc_server is not None:
            raise RuntimeError("server already started")
        self._poll()
        grpc_port, rest_port = self._requested_ports
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._grpc_workers,
                                       thread_name_prefix=f"{self.LABEL}-grpc"),
            options=[("grpc.max_receive_message_length", self.max_request_bytes),
                     ("grpc.max_send_message_length", -1),
                     # Without it a second server could bind the same port and share its calls.
                     ("grpc.so_reuseport", 0)])
        self._add_servicers(server)
        bound = server.add_insecure_port(f"{url_host(self.host)}:{grpc_port}")
        if bound == 0:
            raise OSError(f"cannot bind the {self.LABEL} gRPC port {self.host}:{grpc_port}")
        server.start()
        self._grpc_server, self.grpc_port = server, bound
        try:
            if rest_port is not None:
                httpd = ThreadingHTTPServer((self.host, rest_port), self._make_handler())
                httpd.daemon_threads = True
                self._http_server, self.rest_port = httpd, httpd.server_address[1]
                self._spawn(httpd.serve_forever, "rest")
        except Exception:
            self.stop()
            raise
        self._spawn(self._poll_loop, "poll")
        self._started()
        return self

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self._poll()
            except Exception:  # noqa: BLE001 - keep serving; a bad push must not kill the server
                log.exception("%s: polling failed", self.LABEL)

    def _spawn(self, target, name) -> None:
        thread = threading.Thread(target=target, name=f"cgd-{self.LABEL}-{name}", daemon=True)
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
        self._stopped()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
