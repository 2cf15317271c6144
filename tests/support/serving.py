"""The serving tests' stand-in model, images and wire helpers, and their shared fixtures.

The model is a small stand-in with the trainer's export contract (built here,
not trained): ``serving_default`` images string [N] -> embedding float32 [N, 16]
(decode, resize to 32x32, fixed random projection, L2 norm) and ``pixels``
uint8 [N, H, W, 3] -> embedding. Servers bind 127.0.0.1 on free ports; every
request loop is bounded in count and time.

The fixtures are defined here, not in tests/serving/conftest.py, because the tests of
the `cgd serve`, `cgd embed` and `cgd index` commands (tests/cli/test_serving_commands.py)
use them too: tests/serving/conftest.py and that file import them by name.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from serving import standin
from tests.support.paths import REPO_ROOT

DEPLOY = REPO_ROOT / "serving" / "deploy"
SIZE, DIM = 32, 16
MODEL = "cgd"
PNG_MAGIC = b"\x89PNG"
# The installed `cgd` entry point, run with this interpreter.
CGD_MAIN = "import sys; from cli.main import main; sys.exit(main())"


# --------------------------------------------------------------------------- models and images


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


# --------------------------------------------------------------------------- fixtures


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


# --------------------------------------------------------------------------- wire helpers


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


@contextlib.contextmanager
def cgd_serve(*args: str, timeout_s: float = 90.0):
    """`cgd serve ARGS` in a subprocess, its stderr read up to the "serve: ready" line (or
    its end, or ``timeout_s``): yields (process, the lines read). Killed on the way out
    if still running; a test that stops it itself asserts the exit code."""
    cmd = [sys.executable, "-c", CGD_MAIN, "serve", *args]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "serve: ready" in line:
                break
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()

