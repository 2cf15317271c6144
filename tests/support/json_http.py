"""The HTTP side of the local API stand-ins (tests/support/kfp_api_server.py, tests/support/vertex_api_server.py).

Each stand-in's protocol is a pure ``handle(...) -> (status, JSON)``; this handler turns a
request into that call and the answer into a JSON reply. A subclass says how an undecodable
body is refused (each server's own error shape) and what the call passes on.
"""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit


class JsonApiHandler(BaseHTTPRequestHandler):
    content_type = "application/json"

    def do_GET(self) -> None:
        self._reply("GET")

    def do_POST(self) -> None:
        self._reply("POST")

    def refuse_body(self, error: ValueError) -> tuple[int, Any]:
        """(status, JSON) for a body that is not JSON."""
        raise NotImplementedError

    def call(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return self.server.api.handle(method, path, query, body)  # type: ignore[attr-defined]

    def _reply(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0))
                              or b"{}")
        except ValueError as error:
            status, reply = self.refuse_body(error)
        else:
            status, reply = self.call(method, url.path, query, body)
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass
