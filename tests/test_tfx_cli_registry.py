"""pipeline/tfx_cli.py: which registered pipeline `tfx run create` runs, and the refusal."""
import json

import pytest

from core.errors import CliError
from pipeline import tfx_cli


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
