"""The README's tfx CLI block runs as written, in a new shell, after `make demo`.

A sandbox stands in for the repository after `make demo`: the real `pipeline/`, `core/`
and `.venv` (symlinks), a copy of `configs/demo.yaml` (its paths are relative to it, so the
demo's outputs land in the sandbox), the demo's sample data, and the pipeline registered
with the tfx CLI as `make demo` leaves it. Then the README's bash block is run verbatim by
bash, with the PATH of a new shell (no venv on it: the block sets it).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.paths import REPO_ROOT

# Slow tier: the README's commands in subprocesses on a generated sample.
pytestmark = pytest.mark.slow

ROOT = REPO_ROOT
VENV_BIN = Path(sys.executable).parent


def readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_the_tfx_cli_block_runs_as_written_after_make_demo(tmp_path):
    from components.datasets.cars196.sample import make_sample_data

    repo = tmp_path / "repo"
    (repo / "configs").mkdir(parents=True)
    shutil.copy(ROOT / "configs" / "demo.yaml", repo / "configs" / "demo.yaml")
    for name in ("pipeline", "core", "components", "trainer", "serving", "kubeflow"):
        (repo / name).symlink_to(ROOT / name)
    (repo / ".venv").symlink_to(VENV_BIN.parent)
    # What `make demo` leaves: the sample data and the pipeline registered as cgd-demo.
    make_sample_data(repo / "out" / "demo" / "cars196_sample", num_classes=18,
                     images_per_class=10, seed=0, corrupt=2)
    new_shell = {k: v for k, v in os.environ.items()
                 if k not in ("CGD_CONFIG", "LOCAL_HOME", "VIRTUAL_ENV")}
    new_shell["PATH"] = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != VENV_BIN)
    registered = subprocess.run(
        [str(VENV_BIN / "tfx"), "pipeline", "create", "--engine", "local", "--pipeline_path",
         str(repo / "pipeline" / "local_runner.py")], cwd=repo, capture_output=True, text=True,
        env=dict(new_shell, CGD_CONFIG=str(repo / "configs" / "demo.yaml"),
                 LOCAL_HOME=str(repo / "out" / "demo" / "tfx_home")), timeout=600)
    assert registered.returncode == 0, registered.stderr[-2000:]
    # The tfx CLI process is quieted by the venv's .pth hook (cli/tfx_cli_quiet.py):
    # the command prints TFX's own lines only.
    assert [line for line in (registered.stdout + registered.stderr).splitlines()
            if line.strip()] == ["CLI", "Creating pipeline",
                                 'Pipeline "cgd-demo" created successfully.'], registered.stderr

    block = readme_block("### The tfx CLI (local orchestrator)")
    assert "tfx pipeline update" in block and "export PATH=" in block
    result = subprocess.run(["bash", "-e", "-c", block], cwd=repo, env=new_shell,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    output = result.stdout + result.stderr
    assert 'Pipeline "cgd-demo" updated successfully' in output
    # Neither the CLI nor the processes it starts (the DSL file, Beam's workers) print
    # Google's Python-version warnings or TensorFlow's CUDA-plugin lines.
    assert "FutureWarning" not in output and "Unable to register cu" not in output
    summary = [line for line in output.splitlines() if line.startswith("pipeline cgd-demo: ")]
    assert len(summary) == 1 and "serving version" in summary[0], summary
    assert (repo / "out" / "demo" / "serving" / "cgd").is_dir()
    # `tfx run create` shows the digest `cgd pipeline run` shows (the components' states, our
    # progress lines, the summary), not the DSL file's absl INFO log (2,000+ lines of
    # "Running launcher for node_info {" protobuf dumps); that log goes to the log file.
    lines = [line for line in output.splitlines() if line.strip()]
    log_path = repo / "out" / "demo" / "logs" / "cgd-demo.log"
    assert not [line for line in lines if "INFO:absl:" in line or "node_info" in line], \
        "\n".join(lines[:40])
    assert len(lines) <= 80, f"{len(lines)} lines:\n" + "\n".join(lines[:40])
    assert f"==> pipeline cgd-demo (local orchestrator); full log: {log_path}" in lines, lines
    shown = [line.strip() for line in lines]
    for component in ("RetrievalExampleGen", "Transform", "Trainer", "RecallEvaluator",
                      "Pusher"):
        assert f"Component {component}: running" in shown, lines
        assert f"Component {component}: finished" in shown, lines
    assert any(re.fullmatch(r"epoch 1/\d+: loss .*", line) for line in shown), lines
    assert lines[-1] == summary[0], lines[-5:]
    full_log = log_path.read_text()
    assert "Running launcher for node_info" in full_log
    assert "Component Pusher is finished." in full_log
