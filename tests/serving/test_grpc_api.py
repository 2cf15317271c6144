"""gRPC adapters (serving.grpc_api): Predict, GetModelMetadata and GetModelStatus as TF
Serving answers them, against direct SavedModel calls on the stand-in model
(tests/support/serving.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.serving import DIM, MODEL, predict_request, stubs


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
