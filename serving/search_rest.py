"""REST adapter of the search service, in TF Serving's ``/v1/models`` style.

* ``POST /v1/models/NAME[/versions/V]:search``
  ``{"instances": [{"b64": ...}, ...], "k": 10}`` or ``{"embeddings": [[...], ...], "k": 10}``
  -> ``{"results": [[{"id", "distance", "metadata"}, ...], ...], "model_version": V}``
* ``POST /v1/models/NAME/gallery:add``  ``{"items": [{"id", "b64", "metadata"}, ...]}``
* ``POST /v1/models/NAME/gallery:remove``  ``{"ids": [...]}``
  -> ``{"model_version": V, "catalogue_seq": S}``
* ``GET  /v1/models/NAME[/versions/V]``  status: every version seen, a refused one with why
* ``GET  /monitoring/prometheus/metrics``

Body reading, counting and error replies (``{"error": message}`` with
``serving.errors.http_status``) are ``serving.rest_api.RestHandler``'s; this
class only routes and converts JSON.

Imports ``serving.errors``, ``serving.rest_api``, ``serving.rest_codec``,
``serving.metrics``, ``serving.model_repository`` (state names),
``serving.search_client`` (the default k) and ``serving.search_service``;
``serving.search_server`` imports it.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Callable

import numpy as np

from serving.errors import InvalidArgument
from serving.metrics import RequestCounter
from serving.model_repository import State
from serving.rest_api import RestHandler
from serving.rest_codec import decode_json_body
from serving.search_protocol import DEFAULT_K
from serving.search_service import SearchService

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
                   r"(?P<rest>:search|/gallery:add|/gallery:remove)?$")


def _b64(value, where: str, wrapped: bool = True) -> bytes:
    """Image bytes from ``{"b64": text}`` (an instance), or from the text (an item's "b64")."""
    if wrapped:
        if not isinstance(value, dict) or set(value) != {"b64"}:
            raise InvalidArgument(f"{where} must be {{\"b64\": <base64 of the encoded image>}}")
        value = value["b64"]
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{where} must be the base64 text of the encoded image")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidArgument(f"{where}: invalid base64: {e}") from None


def _k(body: dict) -> int:
    k = body.get("k", DEFAULT_K)
    if isinstance(k, bool) or not isinstance(k, int):
        raise InvalidArgument(f"'k' must be an integer, got {k!r}")
    return k


class SearchRestHandler(RestHandler):
    service: SearchService
    server_version = "cgd-search-server"

    def _route(self):
        match = _PATH.match(self.path.split("?", 1)[0])
        if not match:
            return None
        version = int(match["version"]) if match["version"] is not None else None
        return match["name"], version, match["rest"] or ""

    def _get(self) -> dict:
        route = self._route()
        if route is None or route[2]:
            raise InvalidArgument(f"Malformed request: GET {self.path}")
        name, version, _ = route
        return {"model_version_status": [
            {"version": str(v), "state": State.Name(state),
             "status": {"error_code": code, "error_message": message}}
            for v, state, code, message in self.service.model_status(name, version)]}

    def _post(self) -> dict:
        data = self._read_body()
        route = self._route()
        if route is None or not route[2]:
            raise InvalidArgument(f"Malformed request: POST {self.path} (the search service "
                                  f"answers :search, /gallery:add and /gallery:remove)")
        name, version, verb = route
        body = decode_json_body(data)
        if verb == ":search":
            return self._search(name, version, body)
        if version is not None:
            raise InvalidArgument(f"POST {self.path}: gallery edits apply to the served version; "
                                  f"leave /versions/ out")
        if verb == "/gallery:add":
            items = body.get("items")
            if not isinstance(items, list) or not items or not all(isinstance(i, dict)
                                                                   for i in items):
                raise InvalidArgument("'items' must be a non-empty list of "
                                      "{\"id\", \"b64\", \"metadata\"} objects")
            answered, seq = self.service.add(
                name, [i.get("id") for i in items],
                [_b64(i.get("b64"), f"items[{n}].b64", wrapped=False)
                 for n, i in enumerate(items)],
                [i.get("metadata") for i in items])
        else:
            ids = body.get("ids")
            if not isinstance(ids, list):
                raise InvalidArgument("'ids' must be a list of ids")
            answered, seq = self.service.remove(name, ids)
        return {"model_version": answered, "catalogue_seq": seq}

    def _search(self, name, version, body) -> dict:
        k = _k(body)
        if ("instances" in body) == ("embeddings" in body):
            raise InvalidArgument("a search body has either 'instances' ([{\"b64\": ...}]) "
                                  "or 'embeddings' ([[float, ...]])")
        if "instances" in body:
            instances = body["instances"]
            if not isinstance(instances, list) or not instances:
                raise InvalidArgument("'instances' must be a non-empty list of {\"b64\": ...}")
            images = [_b64(v, f"instances[{n}]") for n, v in enumerate(instances)]
            answered, hits = self.service.search(name, version, k, images=images)
        else:
            try:
                embeddings = np.asarray(body["embeddings"], np.float32)
            except (TypeError, ValueError) as e:
                raise InvalidArgument(f"'embeddings' must be [[float, ...], ...]: {e}") from None
            answered, hits = self.service.search(name, version, k, embeddings=embeddings)
        return {"results": [[{"id": h.id, "distance": float(h.distance), "metadata": h.metadata}
                             for h in row] for row in hits],
                "model_version": answered}


def make_search_handler(service: SearchService, requests: RequestCounter,
                        metrics_text: Callable[[], str],
                        max_request_bytes: int) -> type[SearchRestHandler]:
    return type("BoundSearchRestHandler", (SearchRestHandler,), {
        "service": service, "requests": requests,
        "metrics_text": staticmethod(metrics_text), "max_request_bytes": max_request_bytes})
