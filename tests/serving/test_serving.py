"""Serving: the embedded TF-Serving-compatible server, the gRPC client, gallery search, deploy files.

The model is a small stand-in with the trainer's export contract (built here,
not trained): ``serving_default`` images string [N] -> embedding float32 [N, 16]
(decode, resize to 32x32, fixed random projection, L2 norm) and ``pixels``
uint8 [N, H, W, 3] -> embedding. Servers bind 127.0.0.1 on free ports; every
request loop is bounded in count and time.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from serving import standin
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
DEPLOY = ROOT / "serving" / "deploy"
SIZE, DIM = 32, 16
MODEL = "cgd"
PNG_MAGIC = b"\x89PNG"
# The installed `cgd` entry point, run with this interpreter.
CGD_MAIN = "import sys; from cli.main import main; sys.exit(main())"


# --------------------------------------------------------------------------- fixtures


def write_stand_in_model(export_dir, seed: int) -> None:
    """A SavedModel with the trainer's signatures; ``seed`` picks the projection."""
    standin.write_stand_in_model(str(export_dir), size=SIZE, dim=DIM, seed=seed)


def push_like_pusher(src: Path, dst: Path, pause_s: float = 0.0) -> None:
    """Copy a SavedModel the way the Pusher does: everything, then saved_model.pb last."""
    shutil.copytree(src, dst, ignore=lambda d, names: ["saved_model.pb"] if d == str(src) else [])
    time.sleep(pause_s)
    shutil.copyfile(src / "saved_model.pb", dst / "saved_model.pb")


def encode(image: np.ndarray, fmt: str = "JPEG") -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def make_images(n: int, seed: int = 0) -> list[bytes]:
    """Varied sizes and aspect ratios, JPEG and PNG, smooth enough to embed distinctly."""
    rng = np.random.RandomState(seed)
    out = []
    for i in range(n):
        h, w = rng.randint(24, 90), rng.randint(24, 90)
        base = rng.randint(0, 256, size=(4, 4, 3)).astype(np.float32)
        yy, xx = np.meshgrid(np.linspace(0, 3, h), np.linspace(0, 3, w), indexing="ij")
        img = base[yy.round().astype(int), xx.round().astype(int)] + rng.randn(h, w, 3) * 8
        out.append(encode(np.clip(img, 0, 255).astype(np.uint8), "PNG" if i % 3 == 2 else "JPEG"))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two stand-in versions under staging/ (v1, v2) and a base dir serving v1."""
    root = tmp_path_factory.mktemp("serving")
    staging = root / "staging"
    write_stand_in_model(staging / "1", seed=1)
    write_stand_in_model(staging / "2", seed=2)
    base = root / "base"
    shutil.copytree(staging / "1", base / MODEL / "1")
    (base / MODEL / "notes").mkdir()  # non-numeric: ignored
    return {"root": root, "staging": staging, "base": base}


@pytest.fixture(scope="module")
def direct(models):
    """Direct in-process SavedModel calls: direct[version](images=..., signature=...)."""
    import tensorflow as tf
    loaded = {v: tf.saved_model.load(str(models["staging"] / str(v))) for v in (1, 2)}

    def call(version, images=None, pixels=None):
        if pixels is not None:
            return loaded[version].signatures["pixels"](pixels=tf.constant(pixels))["embedding"].numpy()
        return loaded[version].signatures["serving_default"](
            images=tf.constant(images, dtype=tf.string))["embedding"].numpy()
    return call


@pytest.fixture(scope="module")
def server(models):
    from serving.model_server import ModelServer
    with ModelServer(str(models["base"]), MODEL, grpc_port=0, rest_port=0, poll_seconds=0.2,
                     max_request_bytes=1 << 20) as srv:
        yield srv


@pytest.fixture(scope="module")
def images():
    return make_images(6)


def stubs(target):
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)])
    return (channel, prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel))


def predict_request(inputs: dict, name=MODEL, signature="", version=None):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    for key, value in inputs.items():
        req.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return req


def rest(server, method, path, body=None, raw: bytes | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json"} if data is not None else {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- gRPC


@pytest.mark.slow
def test_grpc_predict_matches_direct_savedmodel(server, images, direct):
    import tensorflow as tf
    channel, predict, _ = stubs(server.grpc_target)
    with channel:
        response = predict.Predict(predict_request({"images": np.asarray(images, dtype=object)}),
                                   timeout=30)
    got = tf.make_ndarray(response.outputs["embedding"])
    assert got.dtype == np.float32 and got.shape == (len(images), DIM)
    np.testing.assert_allclose(got, direct(1, images), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"

    # The second signature, pinned version, and the client's embed_bytes.
    from serving.client import EmbeddingClient
    pixels = np.random.RandomState(3).randint(0, 256, (3, 40, 50, 3)).astype(np.uint8)
    with EmbeddingClient(server.grpc_target, MODEL, signature_name="pixels", version=1) as c:
        out = c.predict({"pixels": pixels})
        assert c.last_model_version == 1
    np.testing.assert_allclose(out["embedding"], direct(1, pixels=pixels), atol=1e-6)
    with EmbeddingClient(server.grpc_target, MODEL, batch_size=4) as c:  # 6 images: 2 requests
        np.testing.assert_allclose(c.embed_bytes(images), direct(1, images), atol=1e-6)


@pytest.mark.slow
def test_grpc_metadata_and_status(server):
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2)

    from serving.client import EmbeddingClient
    channel, predict, model = stubs(server.grpc_target)
    with channel:
        req = get_model_metadata_pb2.GetModelMetadataRequest()
        req.model_spec.name = MODEL
        req.metadata_field.append("signature_def")
        resp = predict.GetModelMetadata(req, timeout=30)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        assert resp.metadata["signature_def"].Unpack(sig_map)
        assert resp.model_spec.version.value == 1
        sigs = sig_map.signature_def
        assert {"serving_default", "pixels"} <= set(sigs)
        assert list(sigs["serving_default"].inputs) == ["images"]
        assert list(sigs["serving_default"].outputs) == ["embedding"]
        assert list(sigs["pixels"].inputs) == ["pixels"]

        sreq = get_model_status_pb2.GetModelStatusRequest()
        sreq.model_spec.name = MODEL
        status = model.GetModelStatus(sreq, timeout=30)
        (v,) = status.model_version_status
        assert v.version == 1 and v.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert v.status.error_code == 0

    with EmbeddingClient(server.grpc_target, MODEL) as c:
        assert c.model_status() == [{"version": 1, "state": "AVAILABLE", "error_code": "OK",
                                     "error_message": ""}]
        meta = c.metadata()
    assert meta["version"] == 1
    assert meta["signature_def"]["serving_default"]["inputs"] == {
        "images": {"dtype": "string", "shape": [-1]}}
    assert meta["signature_def"]["pixels"]["inputs"]["pixels"] == {
        "dtype": "uint8", "shape": [-1, -1, -1, 3]}
    assert meta["signature_def"]["serving_default"]["outputs"]["embedding"]["shape"] == [-1, DIM]


@pytest.mark.slow
def test_grpc_error_codes_like_tf_serving(server, images):
    import grpc
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2
    one = np.asarray(images[:1], dtype=object)
    cases = {
        "unknown model": (predict_request({"images": one}, name="nope"), "NOT_FOUND", "nope"),
        "unknown version": (predict_request({"images": one}, version=99), "NOT_FOUND", "99"),
        "bad input name": (predict_request({"imgs": one}), "INVALID_ARGUMENT", "imgs"),
        "extra input": (predict_request({"images": one, "extra": one}), "INVALID_ARGUMENT", "extra"),
        "bad dtype": (predict_request({"images": np.zeros(1, np.float32)}), "INVALID_ARGUMENT",
                      "images"),
        "bad shape": (predict_request({"images": one.reshape(1, 1)}), "INVALID_ARGUMENT", "images"),
        "unknown signature": (predict_request({"images": one}, signature="nope"),
                              "FAILED_PRECONDITION", "nope"),
        "corrupt image": (predict_request({"images": np.asarray([b"not an image"], dtype=object)}),
                          "INVALID_ARGUMENT", ""),
        "oversized": (predict_request({"images": np.asarray([b"x" * (2 << 20)], dtype=object)}),
                      "RESOURCE_EXHAUSTED", ""),
    }
    labelled = predict_request({"images": one})
    labelled.model_spec.version_label = "canary"  # no labels configured
    cases["unknown version label"] = (labelled, "INVALID_ARGUMENT", "canary")
    channel, predict, model = stubs(server.grpc_target)
    with channel:
        for case, (request, code, mention) in cases.items():
            with pytest.raises(grpc.RpcError) as err:
                predict.Predict(request, timeout=30)
            assert err.value.code() == grpc.StatusCode[code], (case, err.value.details())
            assert mention in err.value.details(), (case, err.value.details())

        meta = get_model_metadata_pb2.GetModelMetadataRequest()
        meta.model_spec.name = MODEL
        with pytest.raises(grpc.RpcError) as err:  # no metadata_field
            predict.GetModelMetadata(meta, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        for name, version in (("nope", None), (MODEL, 99)):
            sreq = get_model_status_pb2.GetModelStatusRequest()
            sreq.model_spec.name = name
            if version:
                sreq.model_spec.version.value = version
            with pytest.raises(grpc.RpcError) as err:
                model.GetModelStatus(sreq, timeout=30)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        # The server still answers after all that.
        assert predict.Predict(predict_request({"images": one}), timeout=30).model_spec.version.value == 1


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


# --------------------------------------------------------------------------- REST


@pytest.mark.slow
def test_rest_predict_status_metadata(server, images, direct):
    b64 = [{"b64": base64.b64encode(i).decode()} for i in images]
    code, body = rest(server, "POST", f"/v1/models/{MODEL}:predict", {"instances": b64})
    assert code == 200, body
    np.testing.assert_allclose(np.asarray(body["predictions"], np.float32), direct(1, images),
                               atol=1e-6)
    code, body = rest(server, "POST", f"/v1/models/{MODEL}/versions/1:predict",
                      {"inputs": {"images": b64[:2]}, "signature_name": "serving_default"})
    assert code == 200, body
    np.testing.assert_allclose(np.asarray(body["outputs"], np.float32), direct(1, images[:2]),
                               atol=1e-6)
    pixels = np.random.RandomState(4).randint(0, 256, (2, 20, 30, 3)).astype(np.uint8)
    code, body = rest(server, "POST", f"/v1/models/{MODEL}:predict",
                      {"signature_name": "pixels", "instances": [{"pixels": p} for p in pixels.tolist()]})
    assert code == 200, body
    np.testing.assert_allclose(np.asarray(body["predictions"], np.float32),
                               direct(1, pixels=pixels), atol=1e-6)

    ok = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                    "status": {"error_code": "OK", "error_message": ""}}]}
    assert rest(server, "GET", f"/v1/models/{MODEL}") == (200, ok)
    assert rest(server, "GET", f"/v1/models/{MODEL}/versions/1") == (200, ok)
    code, meta = rest(server, "GET", f"/v1/models/{MODEL}/metadata")
    assert code == 200 and meta["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    assert sigs["serving_default"]["inputs"]["images"]["dtype"] == "DT_STRING"
    assert sigs["pixels"]["outputs"]["embedding"]["dtype"] == "DT_FLOAT"
    code, text = 200, None
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    conn.request("GET", "/monitoring/prometheus/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    assert ':tensorflow:serving:request_count{model_name="cgd",api="rest_post",status="OK"}' in text


@pytest.mark.slow
def test_rest_errors_like_tf_serving(server, images):
    b64 = [{"b64": base64.b64encode(images[0]).decode()}]
    cases = [
        ("GET", "/v1/models/nope", None, 404),
        ("GET", f"/v1/models/{MODEL}/versions/7", None, 404),
        ("GET", f"/v1/models/{MODEL}/labels/canary", None, 400),
        ("POST", "/v1/models/nope:predict", {"instances": b64}, 404),
        ("POST", f"/v1/models/{MODEL}/versions/7:predict", {"instances": b64}, 404),
        ("POST", f"/v1/models/{MODEL}:predict", {"inputs": {"imgs": b64}}, 400),
        ("POST", f"/v1/models/{MODEL}:predict", {"instances": [[1.5]]}, 400),
        ("POST", f"/v1/models/{MODEL}:predict", {"instances": b64, "signature_name": "nope"}, 400),
        ("POST", f"/v1/models/{MODEL}:predict", {"instances": b64, "inputs": b64}, 400),
        ("POST", f"/v1/models/{MODEL}:predict", {"instances": [{"b64": "%%%"}]}, 400),
        ("POST", f"/v1/models/{MODEL}:predict", {"instances": ["not an image"]}, 400),
    ]
    for method, path, body, want in cases:
        code, reply = rest(server, method, path, body)
        assert code == want, (path, body, reply)
        assert isinstance(reply["error"], str) and reply["error"]
    assert rest(server, "POST", f"/v1/models/{MODEL}:predict", raw=b"{not json")[0] == 400
    code, reply = rest(server, "POST", f"/v1/models/{MODEL}:predict", raw=b"x" * (2 << 20))
    assert code == 413 and "larger" in reply["error"]
    assert rest(server, "GET", f"/v1/models/{MODEL}")[0] == 200


# --------------------------------------------------------------------------- counting and error mapping


@pytest.mark.slow
def test_every_api_counts_its_requests_with_their_status(models, images, monkeypatch):
    """One counting wrapper: each gRPC method and REST route counts OK and its error code,
    unexpected exceptions included (INTERNAL, HTTP 500); the metrics page is not counted."""
    import grpc
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    from serving.model_server import ModelServer
    one = np.asarray(images[:1], dtype=object)
    b64 = [{"b64": base64.b64encode(images[0]).decode()}]

    def status_request(name=MODEL):
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = name
        return req

    def metadata_request(field="signature_def"):
        req = get_model_metadata_pb2.GetModelMetadataRequest()
        req.model_spec.name = MODEL
        if field:
            req.metadata_field.append(field)
        return req

    with ModelServer(str(models["base"]), MODEL, grpc_port=0, rest_port=0,
                     max_request_bytes=1 << 20) as srv:
        channel, predict, model = stubs(srv.grpc_target)
        with channel:
            calls = [
                (model.GetModelStatus, status_request(), None),
                (model.GetModelStatus, status_request("nope"), grpc.StatusCode.NOT_FOUND),
                (predict.GetModelMetadata, metadata_request(), None),
                (predict.GetModelMetadata, metadata_request(""), grpc.StatusCode.INVALID_ARGUMENT),
                (predict.Predict, predict_request({"images": one}), None),
                (predict.Predict, predict_request({"images": one}, name="nope"),
                 grpc.StatusCode.NOT_FOUND),
            ]
            for method, request, code in calls:
                if code is None:
                    method(request, timeout=30)
                else:
                    with pytest.raises(grpc.RpcError) as err:
                        method(request, timeout=30)
                    assert err.value.code() == code
            assert rest(srv, "POST", f"/v1/models/{MODEL}:predict", {"instances": b64})[0] == 200
            assert rest(srv, "POST", "/v1/models/nope:predict", {"instances": b64})[0] == 404
            assert rest(srv, "POST", f"/v1/models/{MODEL}:predict", raw=b"x" * (2 << 20))[0] == 413
            assert rest(srv, "GET", f"/v1/models/{MODEL}")[0] == 200
            assert rest(srv, "GET", "/v1/models/nope")[0] == 404

            # A bug (not a RequestError) is INTERNAL on both protocols, and counted.
            def broken(*args, **kwargs):
                raise RuntimeError("boom")
            monkeypatch.setattr(srv.dataplane, "model_status", broken)
            with pytest.raises(grpc.RpcError) as err:
                model.GetModelStatus(status_request(), timeout=30)
            assert err.value.code() == grpc.StatusCode.INTERNAL and "boom" in err.value.details()
            assert rest(srv, "GET", f"/v1/models/{MODEL}") == (500, {"error": "RuntimeError: boom"})

        expected = {
            ("grpc_status", "OK"): 1, ("grpc_status", "NOT_FOUND"): 1, ("grpc_status", "INTERNAL"): 1,
            ("grpc_metadata", "OK"): 1, ("grpc_metadata", "INVALID_ARGUMENT"): 1,
            ("grpc_predict", "OK"): 1, ("grpc_predict", "NOT_FOUND"): 1,
            ("rest_post", "OK"): 1, ("rest_post", "NOT_FOUND"): 1,
            ("rest_post", "RESOURCE_EXHAUSTED"): 1,
            ("rest_get", "OK"): 1, ("rest_get", "NOT_FOUND"): 1, ("rest_get", "INTERNAL"): 1,
        }
        assert srv.requests.snapshot() == expected
        conn = http.client.HTTPConnection("127.0.0.1", srv.rest_port, timeout=30)
        conn.request("GET", "/monitoring/prometheus/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        assert srv.requests.snapshot() == expected  # scraping is not a model request
    for (api, status), n in expected.items():
        assert (f':tensorflow:serving:request_count{{model_name="{MODEL}",api="{api}",'
                f'status="{status}"}} {n}') in text
    assert f'cgd_serving_model_version{{model_name="{MODEL}"}} 1' in text


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


def test_request_counter_snapshot_is_a_consistent_copy():
    from serving.metrics import RequestCounter, prometheus_text
    counter = RequestCounter()
    threads = [threading.Thread(target=lambda: [counter.count("grpc_predict", "OK")
                                                for _ in range(500)]) for _ in range(8)]
    for t in threads:
        t.start()
    snapshots = [counter.snapshot() for _ in range(50)]
    for t in threads:
        t.join()
    assert counter.snapshot() == {("grpc_predict", "OK"): 4000}
    seen = [s.get(("grpc_predict", "OK"), 0) for s in snapshots]
    assert seen == sorted(seen)
    copy = counter.snapshot()
    copy[("grpc_predict", "OK")] = 0
    assert counter.snapshot() == {("grpc_predict", "OK"): 4000}
    text = prometheus_text(MODEL, counter.snapshot(), None, {"batches_run": 2, "requests_merged": 3})
    assert ('request_count{model_name="cgd",api="grpc_predict",status="OK"} 4000' in text
            and 'cgd_serving_model_version{model_name="cgd"} 0' in text
            and "cgd_serving_requests_merged 3" in text)


# --------------------------------------------------------------------------- versions


@pytest.mark.slow
def test_unavailable_until_first_push_then_serves(models, images, direct, tmp_path):
    import grpc

    from serving.client import EmbeddingClient, ServingError
    from serving.model_server import ModelServer
    (tmp_path / MODEL / "3").mkdir(parents=True)  # a push in progress: no saved_model.pb yet
    with ModelServer(str(tmp_path), MODEL, grpc_port=0, rest_port=0, poll_seconds=0.1) as srv:
        with EmbeddingClient(srv.grpc_target, MODEL, retries=1, backoff_s=0.05) as c:
            with pytest.raises(ServingError) as err:
                c.embed_bytes(images[:1])
            assert err.value.code == grpc.StatusCode.UNAVAILABLE and err.value.attempts == 2
            assert rest(srv, "GET", f"/v1/models/{MODEL}")[0] == 404  # not ready
            code, _ = rest(srv, "POST", f"/v1/models/{MODEL}:predict",
                           {"instances": [{"b64": base64.b64encode(images[0]).decode()}]})
            assert code == 503
            shutil.rmtree(tmp_path / MODEL / "3")
            push_like_pusher(models["staging"] / "2", tmp_path / MODEL / "3", pause_s=0.3)
            assert srv.wait_for_version(3, timeout_s=30) == 3
            np.testing.assert_allclose(c.embed_bytes(images), direct(2, images), atol=1e-6)
            assert c.last_model_version == 3


@pytest.mark.slow
def test_new_version_under_concurrent_load_no_failed_requests(models, images, direct, tmp_path):
    """4 client threads, bounded requests; push v2 like the Pusher mid-stream."""
    from serving.client import EmbeddingClient
    from serving.model_server import ModelServer
    base = tmp_path / "base"
    shutil.copytree(models["staging"] / "1", base / MODEL / "1")
    (base / MODEL / "9").mkdir()  # newer but incomplete: must be ignored
    (base / MODEL / "latest").mkdir()  # non-numeric: ignored
    expected = {1: direct(1, images), 2: direct(2, images)}
    results, errors = [[] for _ in range(4)], []
    stop = threading.Event()
    deadline = time.monotonic() + 90

    with ModelServer(str(base), MODEL, grpc_port=0, rest_port=None, poll_seconds=0.05) as srv:
        def worker(k):
            with EmbeddingClient(srv.grpc_target, MODEL, retries=0, timeout_s=30) as c:
                for i in range(400):  # bounded
                    if stop.is_set() or time.monotonic() > deadline:
                        break
                    j = (i + k) % len(images)
                    try:
                        emb = c.embed_bytes([images[j]])
                    except Exception as e:  # noqa: BLE001
                        errors.append(repr(e))
                        continue
                    results[k].append((c.last_model_version, j, emb[0], time.monotonic()))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        while sum(map(len, results)) < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
        push_started = time.monotonic()
        push_like_pusher(models["staging"] / "2", base / MODEL / "2", pause_s=0.5)
        srv.wait_for_version(2, timeout_s=60)
        swapped = time.monotonic()
        mark = [len(r) for r in results]
        while min(len(r) - m for r, m in zip(results, mark)) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        status = {s["version"]: s["state"] for s in EmbeddingClient(srv.grpc_target, MODEL).model_status()}

    assert errors == []
    assert status == {2: "AVAILABLE", 1: "END"}
    # Requests kept being answered (by v1) while v2 was copied and loaded.
    assert sum(push_started < t < swapped and v == 1 for r in results for v, _, _, t in r) >= 4
    for per_thread in results:
        versions = [v for v, _, _, _ in per_thread]
        assert versions == sorted(versions), "a client went back to the old version"
        assert versions[0] == 1 and versions[-1] == 2
        for v, j, emb, _ in per_thread:
            np.testing.assert_allclose(emb, expected[v][j], atol=1e-6)


@pytest.mark.slow
def test_batching_gives_same_results_as_unbatched(models, images, direct):
    """8 concurrent clients; batching merges their requests but not their answers."""
    import grpc

    from serving.client import EmbeddingClient, ServingError
    from serving.model_server import ModelServer
    expected = direct(1, images)
    requests = [[(k + r) % len(images) for r in range(1 + k % 2)] for k in range(8)]
    for batching in (0, 8):
        with ModelServer(str(models["base"]), MODEL, grpc_port=0, rest_port=None,
                         max_batch_size=batching, batch_timeout_ms=100) as srv:
            out, errors = {}, {}
            barrier = threading.Barrier(8, timeout=30)

            def worker(k):
                with EmbeddingClient(srv.grpc_target, MODEL, retries=0) as c:
                    for rnd in range(3):
                        barrier.wait()
                        blobs = [images[j] for j in requests[k]]
                        if rnd == 2 and k == 5:
                            blobs[-1] = b"corrupt"  # must fail alone
                        try:
                            out[(k, rnd)] = c.embed_bytes(blobs)
                        except ServingError as e:
                            errors[(k, rnd)] = e.code

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert errors == {(5, 2): grpc.StatusCode.INVALID_ARGUMENT}
            assert len(out) == 8 * 3 - 1
            for (k, _), emb in out.items():
                np.testing.assert_allclose(emb, expected[requests[k]], atol=1e-6)
            if batching:
                assert srv.batcher.requests_merged >= 2, "no requests were merged"
                assert srv.batcher.batches_run < 8 * 3


# --------------------------------------------------------------------------- CLI


def write_gallery(directory: Path, images: list[bytes]) -> list[Path]:
    paths = []
    for i, data in enumerate(images):
        sub = directory / f"class_{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        ext = "png" if data.startswith(PNG_MAGIC) else "jpg"
        path = sub / f"img_{i}.{ext}"
        path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.mark.slow
def test_cli_embed(server, images, direct, tmp_path, capsys):
    from cli.main import main
    paths = [str(p) for p in write_gallery(tmp_path / "g", images[:3])]
    args = ["embed", "--server", server.grpc_target, "--model-name", MODEL]
    assert main(args + paths) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == paths
    np.testing.assert_allclose(np.asarray([out[p] for p in paths], np.float32), direct(1, images[:3]),
                               atol=1e-6)
    assert main(args + ["--output", str(tmp_path / "e.npy")] + paths) == 0
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), direct(1, images[:3]), atol=1e-6)
    assert main(args + [str(tmp_path / "missing.jpg")]) == 1
    assert "missing.jpg" in capsys.readouterr().err
    assert main(["embed", "--server", server.grpc_target, "--model-name", "nope", paths[0]]) == 1
    err = capsys.readouterr().err
    assert "NOT_FOUND" in err and server.grpc_target in err


@pytest.mark.slow
def test_cli_index_build_writes_a_gallery_index_of_the_served_model(models, server, tmp_path,
                                                                    capsys, caplog):
    """`cgd index build`: every image under the folder embedded by the served version (a
    corrupt one named once and skipped), into a search.index directory stamped with that
    version's fingerprint; --strict fails naming the file and writes nothing."""
    from cli.main import main
    from search.index import GalleryIndex, model_fingerprint
    caplog.set_level("INFO", logger="cgd")
    gallery = write_gallery(tmp_path / "gallery", make_images(20, seed=5))
    (tmp_path / "gallery" / "class_0" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "gallery" / "notes.txt").write_text("not an image")
    index = tmp_path / "out" / "gallery_index"
    common = ["--server", server.grpc_target, "--model-name", MODEL,
              "--model-base-path", str(models["base"])]
    assert main(["index", "build", *common, "--images", str(tmp_path / "gallery"),
                 "--out", str(index), "--batch-size", "8"]) == 0
    capsys.readouterr()
    assert "indexed 20 of 21 images (1 skipped)" in caplog.text  # one summary line
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert len(skips) == 1 and "broken.jpg" in skips[0]  # skipped once, named
    assert "not a decodable JPEG/PNG image" in skips[0]
    assert sorted(os.listdir(index.parent)) == ["gallery_index"]  # no temp directory left

    idx = GalleryIndex.load(str(index))
    assert idx.size == 20 and idx.dimension == DIM and idx.kind == "exact"
    assert (idx.model.name, idx.model.version) == (MODEL, "1")
    assert idx.model.fingerprint == model_fingerprint(str(models["base"] / MODEL / "1"))
    root = tmp_path / "gallery"
    assert sorted(idx.ids()) == sorted(str(p.relative_to(root)) for p in gallery)
    [hit] = idx.search(idx_query(server, gallery[7]), 1)[0]
    assert hit.id == str(gallery[7].relative_to(root))
    assert hit.metadata == {"path": str(gallery[7]), "class": gallery[7].parent.name}

    assert main(["index", "build", *common, "--images", str(tmp_path / "gallery"),
                 "--out", str(tmp_path / "strict"), "--strict"]) == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "not a decodable JPEG/PNG image" in err
    assert not (tmp_path / "strict").exists()
    assert main(["index", "build", *common[:4], "--model-base-path", str(tmp_path),
                 "--images", str(tmp_path / "gallery"), "--out", str(tmp_path / "x")]) == 1
    assert "saved_model.pb does not exist" in capsys.readouterr().err


def idx_query(server, path) -> np.ndarray:
    from serving.client import EmbeddingClient
    with EmbeddingClient(server.grpc_target, MODEL) as client:
        return client.embed_files([str(path)])


def test_gallery_search_is_the_evaluators_exact_top_k(monkeypatch):
    """The demo's NpzGallery.search ranks like brute force (ties by gallery index, self not
    excluded) and delegates to search.exact.nearest_neighbours."""
    import serving.index
    from search import exact
    from serving.index import NpzGallery
    rng = np.random.RandomState(0)
    gallery = rng.randn(200, 8).astype(np.float32)
    gallery[50] = gallery[10]  # a tie: the lower index ranks first
    paths = [f"/g/{i}.jpg" for i in range(200)]
    index = NpzGallery(gallery, paths, MODEL, 1)
    query = gallery[10]
    hits = index.search(query, 10)
    full = np.linalg.norm(gallery.astype(np.float64) - query, axis=1)
    order = np.argsort(full, kind="stable")[:10]
    assert [h[0] for h in hits] == list(range(1, 11))
    assert [h[2] for h in hits] == [paths[i] for i in order]
    assert hits[0][2] == "/g/10.jpg" and hits[1][2] == "/g/50.jpg" and hits[0][1] < 1e-6
    np.testing.assert_allclose([h[1] for h in hits], full[order], atol=1e-5)
    assert len(index.search(query, 500)) == 200 and index.search(query, 0) == []

    calls = []
    monkeypatch.setattr(serving.index, "nearest_neighbours",
                        lambda *a, **kw: calls.append(kw) or exact.nearest_neighbours(*a, **kw))
    index.search(query, 3)
    assert len(calls) == 1 and not calls[0].get("exclude_self")
    assert not hasattr(serving.index, "top_k")


@pytest.mark.slow
def test_cgd_serve_command_starts_answers_and_stops(models, tmp_path):
    """`cgd serve` in a subprocess: logs its ports, answers, exits cleanly on SIGTERM."""
    cmd = [sys.executable, "-c", CGD_MAIN, "serve", "--model-base-path", str(models["base"]),
           "--model-name", MODEL, "--port", "0", "--rest-port", "0", "--poll-seconds", "1",
           "--batching-parameters-file", str(DEPLOY / "batching_parameters.txt")]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines, rest_port = [], None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"REST http://127\.0\.0\.1:(\d+)", line)
            if m:
                rest_port = int(m.group(1))
            if "serve: ready" in line:
                break
        assert rest_port, "".join(lines)
        assert "max 32 rows / 5.0 ms" in "".join(lines)
        conn = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=30)
        conn.request("GET", f"/v1/models/{MODEL}")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.mark.slow
def test_cgd_serve_logs_a_rejected_jpeg_once_without_libjpegs_bare_lines(models, images):
    """libjpeg prints its errors straight to fd 2 ("Improper call to JPEG library in state
    201"); `cgd serve` drops those and logs one timestamped line per rejected request."""
    cmd = [sys.executable, "-c", CGD_MAIN, "serve", "--model-base-path", str(models["base"]),
           "--model-name", MODEL, "--port", "0", "--rest-port", "0"]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines, rest_port = [], None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "serve: ready" not in "".join(lines[-1:]):
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"REST http://127\.0\.0\.1:(\d+)", line)
            rest_port = int(m.group(1)) if m else rest_port
        assert rest_port, "".join(lines)
        server = type("Rest", (), {"rest_port": rest_port})
        truncated = images[0][:200]  # a JPEG header cut short: libjpeg's "state 201"
        assert truncated.startswith(b"\xff\xd8")
        for _ in range(2):
            status, body = rest(server, "POST", f"/v1/models/{MODEL}:predict",
                                {"instances": [{"b64": base64.b64encode(images[1]).decode()},
                                               {"b64": base64.b64encode(truncated).decode()}]})
            assert status == 400 and "row 1 (200 bytes)" in body["error"], body
        good = {"instances": [{"b64": base64.b64encode(images[0]).decode()}]}
        assert rest(server, "POST", f"/v1/models/{MODEL}:predict", good)[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        lines += proc.stderr.readlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    log = "".join(lines)
    assert "JPEG library" not in log and "Corrupt JPEG" not in log, log
    rejected = [l for l in lines if "rejected a request" in l]
    assert len(rejected) == 2, log  # one per rejected request
    assert all(re.match(r"\d\d:\d\d:\d\d WARNING cgd.serving: rejected a request: input "
                        r"'images' row 1 \(200 bytes\) is not a decodable JPEG/PNG image$",
                        l.rstrip("\n")) for l in rejected), rejected


def test_serve_command_rejects_bad_paths(models, tmp_path, capsys):
    from cli.main import main
    assert main(["serve", "--model-base-path", str(tmp_path / "nope")]) == 1
    assert "nope" in capsys.readouterr().err
    # Passing the model directory itself (TF Serving's --model_base_path) is caught.
    assert main(["serve", "--model-base-path", str(models["base"] / MODEL), "--model-name", MODEL]) == 1
    assert "BASE/NAME/<version>" in capsys.readouterr().err


# --------------------------------------------------------------------------- deploy files


def test_deploy_text_protos_parse():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from serving.deploy_config import deploy_proto_classes, read_batching_parameters
    config = text_format.Parse((DEPLOY / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == MODEL and model.base_path == "/models/cgd"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 1

    classes = deploy_proto_classes()
    # The rebuilt messages carry TF Serving's field numbers.
    fields = {f.name: f.number for f in classes["BatchingParameters"].DESCRIPTOR.fields}
    assert fields["max_batch_size"] == 1 and fields["batch_timeout_micros"] == 2
    assert fields["max_enqueued_batches"] == 3 and fields["num_batch_threads"] == 4
    batching = text_format.Parse((DEPLOY / "batching_parameters.txt").read_text(),
                                 classes["BatchingParameters"]())
    assert batching.max_batch_size.value == 32 and batching.batch_timeout_micros.value == 5000
    assert batching.num_batch_threads.value >= 1
    assert read_batching_parameters(str(DEPLOY / "batching_parameters.txt")) == (32, 5.0)
    monitoring = text_format.Parse((DEPLOY / "monitoring.config").read_text(),
                                   classes["MonitoringConfig"]())
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"
    with pytest.raises(text_format.ParseError):  # a typo is caught
        text_format.Parse("prometheus_config { enabled: true }", classes["MonitoringConfig"]())


@pytest.mark.slow
def test_deploy_k8s_and_docker():
    import yaml
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from serving.deploy_config import deploy_proto_classes
    docs = list(yaml.safe_load_all((DEPLOY / "k8s.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"} <= set(kinds)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "tensorflow/serving:2.16.1"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 8500, "rest": 8501}
    probe = container["readinessProbe"]["httpGet"]
    assert probe == {"path": "/v1/models/cgd", "port": 8501}
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    args = container["args"]
    for flag in ("--model_config_file=/config/models.config", "--enable_batching=true",
                 "--batching_parameters_file=/config/batching_parameters.txt",
                 "--monitoring_config_file=/config/monitoring.config"):
        assert flag in args
    assert any(a.startswith("--model_config_file_poll_wait_seconds=") for a in args)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
    assert claim == kinds["PersistentVolumeClaim"]["metadata"]["name"] and mounts["models"] == "/models"
    assert volumes["config"]["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    assert mounts["config"] == "/config"
    service = kinds["Service"]["spec"]
    assert {p["name"]: p["port"] for p in service["ports"]} == {"grpc": 8500, "rest": 8501}
    assert service["selector"] == kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]

    # The ConfigMap says what the files next to it say.
    data = kinds["ConfigMap"]["data"]
    classes = deploy_proto_classes()
    for name, cls in (("models.config", model_server_config_pb2.ModelServerConfig),
                      ("batching_parameters.txt", classes["BatchingParameters"]),
                      ("monitoring.config", classes["MonitoringConfig"])):
        assert text_format.Parse(data[name], cls()) == text_format.Parse(
            (DEPLOY / name).read_text(), cls()), name

    script = (DEPLOY / "docker_run.sh").read_text()
    assert subprocess.run(["bash", "-n", str(DEPLOY / "docker_run.sh")]).returncode == 0
    assert os.access(DEPLOY / "docker_run.sh", os.X_OK)
    for part in ("docker run", "tensorflow/serving:2.16.1", "-p 8500:8500", "-p 8501:8501",
                 "target=/models/cgd", "--model_config_file=", "--enable_batching",
                 "--batching_parameters_file=", "--monitoring_config_file=",
                 "--model_config_file_poll_wait_seconds="):
        assert part in script, part


# --------------------------------------------------------------------------- module layout

def _serving_modules():
    import ast
    for path in sorted((ROOT / "serving").glob("*.py")):
        yield path.stem, path, ast.parse(path.read_text())


def test_shared_names_are_not_spelled_out_in_serving():
    """Signature and tensor names come from core.names, never as string literals."""
    import ast

    from core import names
    spelled = {names.SERVING_SIGNATURE, names.PIXELS_SIGNATURE, names.IMAGES_INPUT,
               names.PIXELS_INPUT, names.EMBEDDING_OUTPUT}
    found = [(path.name, node.lineno, node.value) for _, path, tree in _serving_modules()
             for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and node.value in spelled]
    assert found == []


@pytest.mark.slow
def test_an_undecodable_image_is_named_by_row_without_graph_internals(server, images):
    import grpc
    batch = np.asarray([images[0], b"not an image", images[1]], dtype=object)
    channel, predict, _ = stubs(server.grpc_target)
    with channel:
        with pytest.raises(grpc.RpcError) as err:
            predict.Predict(predict_request({"images": batch}), timeout=30)
    details = err.value.details()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'images' row 1 (12 bytes) is not a decodable JPEG/PNG image" == details
    status, body = rest(server, "POST", f"/v1/models/{MODEL}:predict",
                        {"instances": [{"b64": base64.b64encode(images[0]).decode()},
                                       {"b64": base64.b64encode(b"junk").decode()}]})
    assert status == 400 and "row 1" in body["error"]
    for internal in ("{{node", "Op:__inference", "DecodeImage"):
        assert internal not in details and internal not in body["error"]


@pytest.mark.slow
def test_cgd_embed_skips_and_names_an_undecodable_file_strict_fails(server, images, direct,
                                                                    tmp_path, capsys, caplog):
    """As `cgd index build`: the good files are embedded, the bad one named (once), and
    --strict fails naming it instead."""
    from cli.main import main
    caplog.set_level("INFO", logger="cgd")
    paths = []
    for name, data in (("good.jpg", images[0]), ("notimage.jpg", b"text"),
                       ("good2.jpg", images[1])):
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    common = ["embed", "--server", server.grpc_target, "--model-name", MODEL]
    assert main(common + paths) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == [paths[0], paths[2]]
    np.testing.assert_allclose(np.asarray(list(out.values()), np.float32),
                               direct(1, [images[0], images[1]]), atol=1e-6)
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert len(skips) == 1 and paths[1] in skips[0] and "not a decodable JPEG/PNG image" in skips[0]
    assert "embed: 2 of 3 images" in caplog.text and f"not in the output: {paths[1]}" in caplog.text
    assert main(common + ["--output", str(tmp_path / "e.npy")] + paths) == 0
    assert np.load(tmp_path / "e.npy").shape == (2, DIM)

    assert main(common + ["--strict", "--output", str(tmp_path / "strict.npy")] + paths) == 1
    [line] = [l for l in capsys.readouterr().err.splitlines() if "error" in l]
    assert line.startswith(f"cgd embed: error: {paths[1]}: the server rejected the image")
    assert "good.jpg" not in line and "{{node" not in line
    assert not (tmp_path / "strict.npy").exists()


def _readme_block(path: Path, marker: str) -> str:
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), re.S)
    [block] = [b for b in blocks if marker in b]
    return block


@pytest.mark.slow
@pytest.mark.parametrize("readme", ["README.md", "serving/deploy/README.md"])
def test_readme_rest_predict_example_runs_against_the_server(server, images, direct, tmp_path,
                                                            readme):
    """The README's REST :predict block, run as written with curl (only the port and the
    image file differ), answers with the embedding a direct SavedModel call gives."""
    block = _readme_block(ROOT / readme, ":predict")
    assert '{"b64": ' in block and "127.0.0.1:8501/v1/models/cgd:predict" in block
    (tmp_path / "car.jpg").write_bytes(images[0])
    script = block.replace("127.0.0.1:8501", f"127.0.0.1:{server.rest_port}")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    reply = json.loads(run.stdout)
    np.testing.assert_allclose(np.asarray(reply["predictions"], np.float32),
                               direct(1, images[:1]), atol=1e-6)
