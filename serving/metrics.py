"""Request counts and the Prometheus text page.

``RequestCounter.counted`` is the one place a request is counted: every gRPC
method (``serving.grpc_api``) and every REST model route (``serving.rest_api``)
runs its handler through it, so each API is counted once per request, with
``OK`` or the status code of the error it failed with. ``prometheus_text``
renders a ``RequestCounter.snapshot()``, so it needs nobody's lock.

Imports ``serving.errors`` only; imported by the adapters and ``serving.model_server``.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Mapping, TypeVar

from serving.errors import as_request_error

log = logging.getLogger("cgd.serving")

T = TypeVar("T")

# TF Serving's counter name, so that dashboards built for tensorflow_model_server work.
REQUEST_COUNT = ":tensorflow:serving:request_count"


class RequestCounter:
    """Thread-safe counts of requests by (api, status code name)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def count(self, api: str, status: str) -> None:
        with self._lock:
            self._counts[(api, status)] = self._counts.get((api, status), 0) + 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        """A copy of the counts, {(api, status): n}, consistent at one instant."""
        with self._lock:
            return dict(self._counts)

    def counted(self, api: str, handler: Callable[[], T]) -> T:
        """``handler()``, counted under ``api`` as ``OK`` or as its error's code.

        Any exception leaves as a ``RequestError`` (a gallery index error with its
        code, an unexpected one as ``Internal``, logged with its traceback), so the
        caller only has to put a ``RequestError`` on the wire.
        """
        try:
            result = handler()
        except Exception as e:  # noqa: BLE001 - every failure is answered and counted
            error = as_request_error(e)
            if error.code == "INTERNAL":  # a bug, not a refused request: keep its traceback
                log.exception("%s failed", api)
            self.count(api, error.code)
            if error is e:
                raise
            raise error from e
        self.count(api, "OK")
        return result


def prometheus_text(model_name: str, request_counts: Mapping[tuple[str, str], int],
                    served_version: int | None, batch_stats: Mapping[str, int] | None) -> str:
    """The ``/monitoring/prometheus/metrics`` page (text format 0.0.4).

    Args:
        request_counts: ``RequestCounter.snapshot()``.
        served_version: the version being served, None before the first one loads.
        batch_stats: ``Batcher.stats()``, None when batching is off.
    """
    lines = [f"# TYPE {REQUEST_COUNT} counter"]
    for (api, status), n in sorted(request_counts.items()):
        lines.append(f'{REQUEST_COUNT}{{model_name="{model_name}",api="{api}",status="{status}"}} {n}')
    lines.append("# TYPE cgd_serving_model_version gauge")
    lines.append(f'cgd_serving_model_version{{model_name="{model_name}"}} {served_version or 0}')
    if batch_stats is not None:
        lines.append(f"cgd_serving_batches_run {batch_stats['batches_run']}")
        lines.append(f"cgd_serving_requests_merged {batch_stats['requests_merged']}")
    return "\n".join(lines) + "\n"

