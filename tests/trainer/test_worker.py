"""MultiWorkerMirroredStrategy over 2 local CPU worker processes vs one worker."""
import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from tests.conftest import latest_output
from tests.support.paths import REPO_ROOT

# Slow tier: two training workers in subprocesses on the data pipeline's output.
pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_cmd(config_path, cfg, out):
    transformed = latest_output(cfg, "Transform", "transformed_examples")
    return [sys.executable, "-m", "trainer.worker", "--config", str(config_path),
            "--train", os.path.join(transformed, "Split-train", "*.gz"),
            "--valid", os.path.join(transformed, "Split-valid", "*.gz"), "--out", str(out)]


def _env(tf_config=None):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def test_two_cpu_workers_train_as_well_as_one(data_pipeline, tmp_path):
    cfg = data_pipeline
    config_path = tmp_path / "cfg.yaml"
    config_path.write_text(yaml.safe_dump(cfg.to_dict()))
    root = str(REPO_ROOT)

    single = subprocess.run(_worker_cmd(config_path, cfg, tmp_path / "single"), cwd=root,
                            env=_env(), capture_output=True, text=True, timeout=400)
    assert single.returncode == 0, single.stderr[-3000:]

    workers = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
    procs = [subprocess.Popen(
        _worker_cmd(config_path, cfg, tmp_path / f"multi{i}"), cwd=root,
        env=_env({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=500)[0])
        finally:
            proc.kill()
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
    assert "with 2 replica(s)" in outputs[0]  # both workers joined one collective

    one = json.loads((tmp_path / "single" / "validation.json").read_text())
    two = json.loads((tmp_path / "multi0" / "validation.json").read_text())
    # Same quality: both learn (beat the untrained model) and end up close.
    assert one["best_recall@1"] > one["untrained_recall@1"]
    assert two["best_recall@1"] > two["untrained_recall@1"]
    assert abs(one["best_recall@1"] - two["best_recall@1"]) <= 0.2, (one, two)
