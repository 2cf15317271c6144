"""REST adapter: TF Serving's ``/v1/models`` API and the Prometheus page over ``DataPlane``.

Routes (as in ``tensorflow_model_server --rest_api_port``):

* ``GET  /v1/models/NAME[/versions/V]``            model status (api ``rest_get``)
* ``GET  /v1/models/NAME[/versions/V]/metadata``   signature defs (api ``rest_get``)
* ``POST /v1/models/NAME[/versions/V]:predict``    ``instances`` or ``inputs`` (api ``rest_post``)
* ``GET  /monitoring/prometheus/metrics``          ``serving.metrics.prometheus_text``

Any other ``/v1/`` path or verb is TF Serving's 400 ``Malformed request: POST /v1/...``.
A POST body is read whole before anything is answered (an unread body would be taken
for the next request on the connection); one over ``max_request_bytes`` is read and
dropped up to twice that size, then answered 413 and the connection closed.

Every model route runs through ``RequestCounter.counted``; a ``RequestError``
becomes ``{"error": message}`` with ``serving.errors.http_status``. JSON
conversion is ``serving.rest_codec``'s.

Imports ``serving.errors``, ``serving.dataplane``, ``serving.model_repository``
(state names), ``serving.metrics`` and ``serving.rest_codec``; only
``serving.model_server`` imports it.
"""

from __future__ import annotations

import json
import logging
import re
from http.server import BaseHTTPRequestHandler
from typing import Callable

from google.protobuf import json_format

from serving.dataplane import DataPlane, reject_version_label
from serving.errors import (InvalidArgument, RequestError, RequestTooLarge, Unimplemented,
                            http_status)
from serving.metrics import RequestCounter
from serving.model_repository import State
from serving.rest_codec import decode_json_body, parse_predict_body, predict_reply

log = logging.getLogger("cgd.serving")

METRICS_PATH = "/monitoring/prometheus/metrics"  # serving/deploy/monitoring.config's path
_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<rest>/metadata|:[a-z]+)?$")
# An oversized body is read and dropped up to this many times the limit before the 413:
# a client that sends its whole body before reading (urllib, requests) would otherwise
# get a broken pipe, as closing a socket with unread data resets the connection. Beyond
# it the 413 is sent without reading, and the client may not see it.
_DRAIN_LIMITS = 2
# TF Serving's verbs (prediction_api_regex_ in http_rest_api_handler.cc); only :predict
# is implemented here.
_POST_VERBS = (":predict", ":classify", ":regress")


class RestHandler(BaseHTTPRequestHandler):
    """One HTTP request; ``make_handler`` sets the class attributes below."""

    protocol_version = "HTTP/1.1"
    server_version = "cgd-model-server"
    dataplane: DataPlane
    requests: RequestCounter
    metrics_text: Callable[[], str]
    max_request_bytes: int

    def log_message(self, fmt, *args):  # access logs go to logging, at debug level
        log.debug("rest %s - %s", self.address_string(), fmt % args)

    def do_GET(self):  # noqa: N802
        if self.path.split("?", 1)[0] == METRICS_PATH:
            # Not a model API, and not counted: scrapes would show up in what they measure.
            self._send(200, self.metrics_text(), "text/plain; version=0.0.4")
            return
        self._answer("rest_get", self._get)

    def do_POST(self):  # noqa: N802
        self._answer("rest_post", self._post)

    def _answer(self, api: str, route: Callable[[], dict]) -> None:
        try:
            body = self.requests.counted(api, route)
        except RequestError as e:
            self._send(http_status(e), {"error": e.message})
            return
        self._send(200, body)

    def _send(self, code: int, body: dict | str, content_type="application/json") -> None:
        data = (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> tuple[str, int | None, str] | None:
        """(model name, version or None, "" | "/metadata" | ":verb"), None if no model path."""
        match = _MODEL_PATH.match(self.path.split("?", 1)[0])
        if not match:
            return None
        reject_version_label(match["label"] or "")
        version = int(match["version"]) if match["version"] is not None else None
        return match["name"], version, match["rest"] or ""

    def _get(self) -> dict:
        route = self._route()
        if route is None or route[2] not in ("", "/metadata"):
            raise InvalidArgument(f"Malformed request: GET {self.path}")
        name, version, rest = route
        if rest == "/metadata":
            servable = self.dataplane.servable(name, version)
            return {
                "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
                "metadata": {"signature_def": json_format.MessageToDict(
                    self.dataplane.signature_def_map(servable), preserving_proto_field_name=True)},
            }
        return {"model_version_status": [
            {"version": str(v), "state": State.Name(state),
             "status": {"error_code": code, "error_message": message}}
            for v, state, code, message in self.dataplane.model_status(name, version)]}

    def _post(self) -> dict:
        data = self._read_body()
        route = self._route()
        if route is None or route[2] not in _POST_VERBS:
            raise InvalidArgument(f"Malformed request: POST {self.path}")
        name, version, rest = route
        if rest != ":predict":
            raise Unimplemented(f"{rest[1:]} is not supported by this server (only :predict)")
        body = decode_json_body(data)
        servable = self.dataplane.servable(name, version)
        signature = self.dataplane.signature(servable, body.get("signature_name") or "")
        row_format, inputs = parse_predict_body(body, servable.input_specs[signature])
        return predict_reply(self.dataplane.predict(servable, signature, inputs), row_format)

    def _read_body(self) -> bytes:
        header = self.headers.get("Content-Length") or "0"
        length = int(header) if header.strip().isdigit() else -1
        if length < 0:
            self.close_connection = True  # where this body ends is unknown
            raise InvalidArgument(f"Malformed request: POST {self.path}: Content-Length "
                                  f"{header!r} is not a number of bytes")
        if length > self.max_request_bytes:
            self.close_connection = True
            self._drain(length)
            raise RequestTooLarge(f"request body of {length} bytes is larger than the "
                                  f"limit of {self.max_request_bytes} bytes")
        return self.rfile.read(length)

    def _drain(self, length: int) -> None:
        left = min(length, _DRAIN_LIMITS * self.max_request_bytes)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            left -= len(chunk)


def make_handler(dataplane: DataPlane, requests: RequestCounter, metrics_text: Callable[[], str],
                 max_request_bytes: int) -> type[RestHandler]:
    """A ``RestHandler`` class bound to one server's parts (``http.server`` wants a class)."""
    return type("BoundRestHandler", (RestHandler,), {
        "dataplane": dataplane, "requests": requests,
        "metrics_text": staticmethod(metrics_text), "max_request_bytes": max_request_bytes})
