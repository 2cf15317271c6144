"""Typed request errors and the one table that maps them to gRPC and HTTP status codes.

A request that fails raises a ``RequestError`` subclass (``NotFound``,
``InvalidArgument``, ...) wherever the failure is found; the protocol adapters
(``serving.grpc_api``, ``serving.rest_api``) turn it into a wire status only
through ``grpc_status`` and ``http_status`` here, and ``as_request_error`` turns
anything else into ``Internal``. Status codes are named as in gRPC
(``"NOT_FOUND"``), which is also what TF Serving reports and counts.

The gallery index's own errors (``search.index``: a duplicate id, an unknown id,
k out of range, a missing, corrupt or mismatched index) get their codes here too,
in ``_search_error_codes``; ``as_request_error`` applies it.

Imports nothing of ours at import time (every serving module may import it);
``search.index`` only once one of its errors is being mapped, so processes that
never search do not load faiss.
"""

from __future__ import annotations

import grpc

# TF Serving's ToHTTPStatusCode (model_servers/http_rest_api_handler), by gRPC code name.
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
    "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}

# TF error codes are gRPC's numbers (tensorflow/core/protobuf/error_codes.proto).
_CODE_NAME_BY_NUMBER = {code.value[0]: code.name for code in grpc.StatusCode}


class RequestError(Exception):
    """A request failed with a gRPC status code (by name, e.g. ``"NOT_FOUND"``).

    Subclasses fix ``code``; the base takes one explicitly for codes that come
    from elsewhere (a TensorFlow op error), see ``from_tf_error_code``.
    """

    code = "UNKNOWN"

    def __init__(self, message: str, code: str | None = None):
        if code is not None:
            if code not in HTTP_STATUS:
                raise ValueError(f"not a gRPC status code name: {code!r}")
            self.code = code
        super().__init__(f"{self.code}: {message}")
        self.message = message


class NotFound(RequestError):
    """Unknown model, version or path."""
    code = "NOT_FOUND"


class InvalidArgument(RequestError):
    """Malformed request: input names, dtypes, shapes, JSON, undecodable data."""
    code = "INVALID_ARGUMENT"


class FailedPrecondition(RequestError):
    """The model has no signature of the requested name."""
    code = "FAILED_PRECONDITION"


class ResourceExhausted(RequestError):
    code = "RESOURCE_EXHAUSTED"


class RequestTooLarge(ResourceExhausted):
    """A REST body over ``max_request_bytes`` (gRPC enforces its limit in the transport)."""


class AlreadyExists(RequestError):
    """An id to add to the gallery is there already."""
    code = "ALREADY_EXISTS"


class Unavailable(RequestError):
    """No version of the model is loaded yet."""
    code = "UNAVAILABLE"


class Unimplemented(RequestError):
    code = "UNIMPLEMENTED"


class Internal(RequestError):
    """A bug on the server side (an exception that is not a ``RequestError``)."""
    code = "INTERNAL"


# Where an error type answers differently from its code's HTTP status. TF Serving's REST
# layer answers an oversized body with 413 (Payload Too Large), not RESOURCE_EXHAUSTED's 429.
_HTTP_STATUS_BY_TYPE = {RequestTooLarge: 413}


def grpc_status(error: RequestError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code]


def http_status(error: RequestError) -> int:
    for error_type, status in _HTTP_STATUS_BY_TYPE.items():
        if isinstance(error, error_type):
            return status
    return HTTP_STATUS.get(error.code, 500)


def _search_error_codes() -> tuple:
    """(search.index error type, code name), most specific first."""
    from search import index
    return (
        (index.DuplicateIdError, "ALREADY_EXISTS"),     # add of an id the gallery has
        (index.UnknownIdError, "NOT_FOUND"),            # remove of an id it has not
        (index.IndexQueryError, "INVALID_ARGUMENT"),    # k outside [1, size], bad query shape
        (index.ModelMismatchError, "FAILED_PRECONDITION"),  # index of another model / dimension
        (index.CorruptIndexError, "DATA_LOSS"),         # a file differs from the manifest
        (index.MissingIndexError, "FAILED_PRECONDITION"),   # no manifest: never taken as complete
        (index.GalleryIndexError, "FAILED_PRECONDITION"),
    )


def as_request_error(exc: BaseException) -> RequestError:
    """``exc`` itself if it is a ``RequestError``, a gallery index error with its code from
    ``_search_error_codes``, otherwise ``Internal`` naming it."""
    if isinstance(exc, RequestError):
        return exc
    if type(exc).__module__.startswith("search."):
        for error_type, code in _search_error_codes():
            if isinstance(exc, error_type):
                return RequestError(str(exc), code)
    return Internal(f"{type(exc).__name__}: {exc}")


def from_tf_error_code(error_code: int, message: str) -> RequestError:
    """A ``tf.errors.OpError`` (its ``error_code`` and message) as a ``RequestError``."""
    return RequestError(message, _CODE_NAME_BY_NUMBER.get(error_code, "UNKNOWN"))


def status_number(code: str) -> int:
    """A code name as its number, as ``GetModelStatus`` reports it (``"NOT_FOUND"`` -> 5)."""
    return grpc.StatusCode[code].value[0]
