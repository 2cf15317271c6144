"""The protocol-independent core (serving.dataplane): an undecodable image named by its row,
the same on gRPC and REST, without TensorFlow's graph internals."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.support.serving import MODEL, predict_request, rest, stubs


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
