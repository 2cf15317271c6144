"""Typed request errors (serving.errors): the one table mapping them to gRPC and HTTP status."""

from __future__ import annotations

import pytest


def test_one_table_maps_errors_to_grpc_and_http_status():
    import grpc
    import tensorflow as tf

    from serving import errors
    cases = [(errors.NotFound, grpc.StatusCode.NOT_FOUND, 404),
             (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, 400),
             (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, 400),
             (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
             (errors.RequestTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
             (errors.Unavailable, grpc.StatusCode.UNAVAILABLE, 503),
             (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED, 501),
             (errors.Internal, grpc.StatusCode.INTERNAL, 500)]
    for error_type, grpc_code, http_code in cases:
        error = error_type("why")
        assert (errors.grpc_status(error), errors.http_status(error)) == (grpc_code, http_code)
        assert error.message == "why" and str(error) == f"{grpc_code.name}: why"
        assert errors.as_request_error(error) is error
    bug = errors.as_request_error(KeyError("x"))
    assert isinstance(bug, errors.Internal) and bug.message == "KeyError: 'x'"
    op_error = errors.from_tf_error_code(tf.errors.INVALID_ARGUMENT, "bad jpeg")
    assert op_error.code == "INVALID_ARGUMENT" and errors.http_status(op_error) == 400
    assert errors.from_tf_error_code(12345, "?").code == "UNKNOWN"
    assert errors.status_number("NOT_FOUND") == 5
    with pytest.raises(ValueError):
        errors.RequestError("x", code="NOPE")
