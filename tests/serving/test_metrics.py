"""Request counts and the Prometheus page (serving.metrics): every API counted once per
request with its status, and the counter's snapshot."""

from __future__ import annotations

import base64
import http.client
import threading

import numpy as np
import pytest

from tests.support.serving import MODEL, predict_request, rest, stubs


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
