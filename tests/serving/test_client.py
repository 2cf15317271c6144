"""The gRPC embedding client (serving.client): errors that name the server, the model and
the status, retried only when the server is unavailable."""

from __future__ import annotations

import time

import pytest

from tests.support.serving import MODEL, free_port


@pytest.mark.slow
def test_client_errors_name_server_model_and_status(server):
    import grpc

    from serving.client import EmbeddingClient, ServingError
    with EmbeddingClient(server.grpc_target, "nope", retries=3) as c:
        with pytest.raises(ServingError) as err:
            c.embed_bytes([b"x"])
    assert err.value.code == grpc.StatusCode.NOT_FOUND and err.value.attempts == 1  # no retry
    assert server.grpc_target in str(err.value) and "'nope'" in str(err.value)
    assert "NOT_FOUND" in str(err.value)

    target = f"127.0.0.1:{free_port()}"  # nothing listens: UNAVAILABLE, retried
    start = time.monotonic()
    with EmbeddingClient(target, MODEL, retries=2, backoff_s=0.05, timeout_s=5) as c:
        with pytest.raises(ServingError) as err:
            c.model_status()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE and err.value.attempts == 3
    assert target in str(err.value) and "GetModelStatus" in str(err.value)
    assert time.monotonic() - start < 20
