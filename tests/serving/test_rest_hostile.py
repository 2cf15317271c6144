"""The REST port under hostile bodies: TF Serving's answers, no tracebacks, still serving.

Each case goes through a real HTTP client (http.client or urllib) to the embedded
server on 127.0.0.1, and is followed by a good request that must still succeed.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import urllib.error
import urllib.request

import numpy as np
import pytest

from serving import standin

# Slow tier: a model server on a saved model.
pytestmark = pytest.mark.slow

MODEL = "cgd"


def _jpeg(seed: int = 0) -> bytes:
    from PIL import Image
    pixels = np.random.RandomState(seed).randint(0, 256, (40, 50, 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


GOOD_BODY = json.dumps({"instances": [{"b64": base64.b64encode(_jpeg()).decode()}]}).encode()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    standin.write_stand_in_model(str(base / MODEL / "1"), size=16, dim=8, seed=1)
    return base


@pytest.fixture(scope="module")
def server(base_dir):
    from serving.model_server import ModelServer
    with ModelServer(str(base_dir), MODEL, grpc_port=0, rest_port=0,
                     max_request_bytes=1 << 20) as srv:
        yield srv


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, dict]:
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def assert_still_serving(server, conn: http.client.HTTPConnection | None = None) -> None:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        status, body = post(conn, f"/v1/models/{MODEL}:predict", GOOD_BODY)
    finally:
        if own:
            conn.close()
    assert status == 200, body
    assert np.asarray(body["predictions"]).shape == (1, 8)


@pytest.mark.parametrize("kind", ["array", "object", "instances"])
def test_deeply_nested_json_is_400_in_one_line_without_traceback(server, kind, caplog):
    depth = 5000
    body = {
        "array": "[" * depth + "]" * depth,
        "object": '{"a":' * depth + "1" + "}" * depth,
        # Shallow enough for the parser, too deep for the conversion to a tensor.
        "instances": '{"instances": ' + "[" * 990 + '"x"' + "]" * 990 + "}",
    }[kind].encode()
    caplog.set_level(logging.DEBUG, logger="cgd")
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        status, reply = post(conn, f"/v1/models/{MODEL}:predict", body)
        assert status == 400, reply
        assert "\n" not in reply["error"] and "nested too deeply" in reply["error"], reply
        assert "RecursionError" not in reply["error"]
        assert_still_serving(server, conn)  # the same keep-alive connection
    finally:
        conn.close()
    assert not [r for r in caplog.records if r.exc_info], caplog.text  # no traceback logged


def test_unknown_verb_and_path_are_malformed_requests_like_tf_serving(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        status, reply = post(conn, f"/v1/models/{MODEL}:explode", GOOD_BODY)
        assert (status, reply) == (400, {"error": f"Malformed request: POST /v1/models/{MODEL}:explode"})
        # Its body was read: the next request on this connection is parsed as one.
        assert_still_serving(server, conn)
        status, reply = post(conn, f"/v1/models/{MODEL}/metadata", GOOD_BODY)
        assert (status, reply) == (400, {"error": f"Malformed request: POST /v1/models/{MODEL}/metadata"})
        conn.request("GET", f"/v1/models/{MODEL}:predict")
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())) == (
            400, {"error": f"Malformed request: GET /v1/models/{MODEL}:predict"})
        assert_still_serving(server, conn)
    finally:
        conn.close()


def test_bad_content_length_is_400_not_a_crash(server, caplog):
    import socket
    caplog.set_level(logging.DEBUG, logger="cgd")
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as sock:
        sock.sendall(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Length: lots\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), reply
    assert "Content-Length 'lots'" in json.loads(body)["error"]
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert_still_serving(server)


def test_an_oversized_body_sent_whole_before_reading_gets_its_413(base_dir):
    """urllib sends the whole body before reading the answer: the server must read (and
    drop) it before the 413, for bodies up to twice the limit, here 80 MiB over 48 MiB,
    more than the 64 MiB the server used to drain."""
    from serving.model_server import ModelServer
    limit = 48 << 20
    with ModelServer(str(base_dir), MODEL, grpc_port=0, rest_port=0,
                     max_request_bytes=limit) as srv:
        url = f"{srv.rest_url}/v1/models/{MODEL}:predict"
        request = urllib.request.Request(url, data=b"x" * (80 << 20), method="POST",
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=60)
        assert err.value.code == 413
        assert f"limit of {limit} bytes" in json.loads(err.value.read())["error"]
        good = urllib.request.Request(url, data=GOOD_BODY, method="POST")
        with urllib.request.urlopen(good, timeout=60) as resp:
            assert resp.status == 200
            assert np.asarray(json.loads(resp.read())["predictions"]).shape == (1, 8)
