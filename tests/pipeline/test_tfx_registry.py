"""pipeline/tfx_registry.py: which registered pipeline `tfx run create` runs, and the refusal."""
import json

import pytest

from core.errors import CliError
from cli import tfx_cli as tfx_digest
from pipeline import tfx_registry as tfx_cli
from tests.support.paths import REPO_ROOT


@pytest.mark.parametrize("cmdline, name", [
    (["tfx", "run", "create", "--engine", "local", "--pipeline_name", "cgd-demo"], "cgd-demo"),
    (["tfx", "run", "create", "--pipeline_name=cgd-x"], "cgd-x"),
    (["tfx", "pipeline", "create", "--pipeline_path", "p.py"], None),
    (["python", "local_runner.py"], None),
])
def test_the_pipeline_name_comes_from_the_tfx_run_create_command_line(cmdline, name):
    assert tfx_cli.pipeline_name_from_cli(cmdline) == name


def test_the_registered_pipeline_args_are_read_from_local_home(tmp_path):
    (tmp_path / "cgd-demo").mkdir()
    (tmp_path / "cgd-demo" / "pipeline_args.json").write_text(json.dumps(
        {"pipeline_name": "cgd-demo", "pipeline_root": "/out/demo/pipelines/cgd-demo"}))
    assert tfx_cli.registered_pipeline_args("cgd-demo", str(tmp_path))["pipeline_root"] == \
        "/out/demo/pipelines/cgd-demo"
    assert tfx_cli.registered_pipeline_args("other", str(tmp_path)) is None


def test_a_different_pipeline_is_refused_in_one_line_and_the_same_one_runs():
    registered = {"pipeline_name": "cgd-demo", "pipeline_root": "/out/demo/pipelines/cgd-demo"}
    tfx_cli.check_registered_pipeline("cgd-demo", "/out/demo/pipelines/cgd-demo", registered, "x")
    with pytest.raises(CliError) as refused:
        tfx_cli.check_registered_pipeline(
            "cgd-cars196", "/root/cgd/pipelines/cgd-cars196", registered,
            "the packaged defaults (CGD_CONFIG is not set)")
    message = str(refused.value)
    assert "\n" not in message and "export CGD_CONFIG=" in message
    assert "/out/demo/pipelines/cgd-demo" in message and "packaged defaults" in message


# ------------------------------------------------------------------ the digest of a run
#
# `tfx run create` runs the DSL file with the CLI's own stdout and stderr: the run's absl INFO
# log (2,238 lines on the README's demo, most of them "Running launcher for node_info {"
# protobuf dumps) reached the terminal. The venv's hook sends it through the digest filter.

import os
import subprocess
import sys
from pathlib import Path

ROOT = REPO_ROOT

FAKE_TFX = '''#!{python}
"""What `tfx run create` prints (tfx/tools/cli), then a DSL-file child on the same output."""
import subprocess, sys
print("CLI")
print("Creating a run for pipeline: cgd-demo", flush=True)
code = subprocess.call([sys.executable, "-c", {child!r}])
if code:
    sys.exit('Error while running "python local_runner.py" ')
'''
DSL_CHILD = '''
import os, sys
for i in range(700):
    print("INFO:absl:Running launcher for node_info {", file=sys.stderr)
    print('  type { name: "tfx.components.trainer.component.Trainer" }', file=sys.stderr)
    print("}", file=sys.stderr)
print("INFO:absl:Component Trainer is running.", file=sys.stderr)
print("INFO:absl:Going to run a new execution 3", file=sys.stderr)
print("Epoch 1/2", flush=True)
print("INFO:trainer.task:epoch 1/2: loss 0.1000, validation Recall@1 0.5000", file=sys.stderr)
mode = os.environ.get("FAKE_RUN")
if mode == "fail":
    print("Traceback (most recent call last):", file=sys.stderr)
    print('  File "trainer/task.py", line 1, in run_fn', file=sys.stderr)
    print("ValueError: transformed examples are empty", file=sys.stderr)
    sys.exit(1)
if mode == "locked":
    print("error: pipeline cgd-demo is already running: pid 1", file=sys.stderr)
    sys.exit(1)
print("INFO:absl:Component Trainer is finished.", file=sys.stderr)
print("pipeline cgd-demo: trained; nothing pushed; nothing served yet", flush=True)
'''


@pytest.fixture
def fake_tfx(tmp_path):
    """A `tfx` program in the venv's interpreter (so the venv's .pth hook runs in it, as in
    the real CLI) and a copy of the demo config: run(mode, **env) -> (code, stdout, stderr)."""
    from core.config import DEMO_FILE

    program = tmp_path / "bin" / "tfx"
    program.parent.mkdir()
    program.write_text(FAKE_TFX.format(python=sys.executable, child=DSL_CHILD))
    program.chmod(0o755)
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "demo.yaml"
    config.write_text(DEMO_FILE.read_text())

    def run(mode: str = "ok", *args: str, **extra):
        env = {k: v for k, v in os.environ.items()
               if k not in ("CGD_VERBOSE", "CGD_OUTPUT_SHOWN", "CGD_QUIET_TFX_CHILD")}
        env.update(CGD_CONFIG=str(config), FAKE_RUN=mode, **extra)
        proc = subprocess.run([str(program), "run", "create", "--engine", "local",
                               "--pipeline_name", "cgd-demo", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        return proc.returncode, proc.stdout.splitlines(), proc.stderr.splitlines()

    run.log = tmp_path / "out" / "demo" / "logs" / "cgd-demo.log"
    return run


@pytest.mark.slow
def test_tfx_run_create_shows_the_digest_and_keeps_the_whole_output_in_the_log(fake_tfx):
    code, out, err = fake_tfx()
    log = str(fake_tfx.log)
    assert code == 0 and err == []
    assert out == [
        "CLI", "Creating a run for pipeline: cgd-demo",
        f"==> pipeline cgd-demo (local orchestrator); full log: {log}",
        "    Component Trainer: running",
        "    epoch 1/2: loss 0.1000, validation Recall@1 0.5000",
        "    Component Trainer: finished",
        "pipeline cgd-demo: trained; nothing pushed; nothing served yet"]
    text = fake_tfx.log.read_text()
    assert text.count("Running launcher for node_info {") == 700
    assert "Epoch 1/2" in text and "pipeline cgd-demo: trained" in text
    assert text.startswith("===== ") and "tfx run create --engine local" in text.splitlines()[0]


@pytest.mark.slow
def test_a_failed_run_ends_with_its_components_error_and_the_log(fake_tfx):
    code, out, err = fake_tfx("fail")
    log = str(fake_tfx.log)
    assert code == 1 and err == []
    assert out[-6:] == [
        "    Component Trainer: running",
        "    epoch 1/2: loss 0.1000, validation Recall@1 0.5000",
        "    error in component Trainer:",
        "      ValueError: transformed examples are empty",
        f"    full log: {log}",
        f"error: tfx run create --pipeline_name cgd-demo failed in component Trainer: "
        f"ValueError; full log: {log}"]
    assert not [line for line in out if "node_info" in line or "Error while running" in line]
    assert 'Error while running "python local_runner.py"' in fake_tfx.log.read_text()


@pytest.mark.slow
def test_our_one_line_refusal_is_shown_as_it_is(fake_tfx):
    code, out, err = fake_tfx("locked")
    assert code == 1 and err == []
    assert out[-1] == "error: pipeline cgd-demo is already running: pid 1"
    assert not [line for line in out if "error in" in line or "failed" in line]


@pytest.mark.slow
def test_verbose_and_cgd_demo_get_the_whole_output(fake_tfx):
    for env in ({"CGD_VERBOSE": "1"}, {"CGD_OUTPUT_SHOWN": "1"}):
        code, out, err = fake_tfx("ok", **env)
        assert code == 0 and sum("node_info {" in line for line in err) == 700, env
        assert out[-1] == "pipeline cgd-demo: trained; nothing pushed; nothing served yet"
        assert "Epoch 1/2" in out and not fake_tfx.log.exists()


@pytest.mark.parametrize("cmdline, env, digested", [
    (["tfx", "run", "create", "--engine", "local", "--pipeline_name", "cgd-demo"], {}, True),
    (["tfx", "run", "create", "--engine=beam", "--pipeline_name=cgd-demo"], {}, True),
    (["tfx", "run", "create", "--engine", "kubeflow", "--pipeline_name", "cgd-demo"], {},
     False),
    (["tfx", "run", "create", "--pipeline_name", "cgd-demo"], {}, False),  # auto: maybe KFP
    (["tfx", "pipeline", "update", "--engine", "local", "--pipeline_path", "p.py"], {}, False),
    (["tfx", "run", "create", "--engine", "local", "--pipeline_name", "other"], {}, False),
    (["tfx", "run", "create", "--engine", "local", "--pipeline_name", "cgd-demo"],
     {"CGD_OUTPUT_SHOWN": "1"}, False),
])
def test_which_commands_are_digested(cmdline, env, digested):
    from core.config import DEMO_FILE, load_config
    from pipeline.run import pipeline_log_path

    target = tfx_digest.run_digest_log(cmdline, dict(env, CGD_CONFIG=str(DEMO_FILE)))
    assert target == (("cgd-demo", pipeline_log_path(load_config(DEMO_FILE)))
                      if digested else None)
