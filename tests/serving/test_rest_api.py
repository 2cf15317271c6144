"""REST adapter (serving.rest_api, with serving.rest_codec's JSON): TF Serving's /v1/models
routes and errors, and the README's REST example run as written against the server."""

from __future__ import annotations

import base64
import http.client
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.support.paths import REPO_ROOT
from tests.support.serving import MODEL, rest

ROOT = REPO_ROOT


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
