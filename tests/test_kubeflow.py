"""Kubeflow: compile with TFX's KubeflowV2DagRunner, validate against the KFP protos,
submit/schedule through a fake kfp client (no cluster here), static Dockerfile checks
(no docker engine here)."""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import small_config

IMAGE = "europe-docker.pkg.dev/cgd-test/cgd/cgd:1.2.3"
ROOT = "gs://cgd-test-bucket/pipelines"
BEAM_ARGS = ["--runner=DataflowRunner", "--project=cgd-test", "--region=europe-west4",
             "--temp_location=gs://cgd-test-bucket/tmp"]
KUBEFLOW = {"pipeline_root": ROOT, "beam_args": BEAM_ARGS, "gpus": 2,
            "gpu_limit_resource": "nvidia.com/gpu", "memory": "30Gi", "cpu": "7500m",
            "host": "", "image": ""}
RUN_EXECUTOR = ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
TASKS = {"Cars196ExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
         "Transform", "Trainer", "latest_blessed_model_resolver-model-blessing-resolver",
         "latest_blessed_model_resolver-model-resolver", "RecallEvaluator", "Pusher"}
DOCKERFILE = Path(__file__).resolve().parent.parent / "kubeflow" / "Dockerfile"


def write_config(tmp_path, **kubeflow) -> tuple[str, object]:
    """A config file for the CLI (every key written out) and the Config it loads to."""
    cfg = small_config(tmp_path, tmp_path / "cars196", kubeflow=dict(KUBEFLOW, **kubeflow))
    path = tmp_path / "kubeflow.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return str(path), cfg


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """`cgd kubeflow compile` once; the parsed PipelineJob, its path and the config."""
    from pipeline.cli import main

    tmp = tmp_path_factory.mktemp("kubeflow")
    config_file, cfg = write_config(tmp)
    out = tmp / "out" / "pipeline.json"
    assert main(["kubeflow", "compile", "--config", config_file, "--image", IMAGE,
                 "--output", str(out)]) == 0
    return json.loads(out.read_text()), out, cfg


def executors(job):
    return job["pipelineSpec"]["deploymentSpec"]["executors"]


def tasks(job):
    return job["pipelineSpec"]["root"]["dag"]["tasks"]


# ------------------------------------------------------------------ compiled pipeline

def test_compiled_file_is_a_kfp_pipeline_job(compiled):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    job, _, cfg = compiled
    # Strict parsing: an unknown or mistyped field fails.
    parsed = json_format.ParseDict(job, pipeline_spec_pb2.PipelineJob())
    spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    assert parsed.display_name == spec.pipeline_info.name == cfg.pipeline.name
    assert spec.schema_version == "2.0.0" and spec.sdk_version == "tfx-1.16.0"
    assert set(spec.components) == TASKS and len(spec.deployment_spec.fields["executors"]
                                                  .struct_value.fields) == len(TASKS)


def test_compile_pipeline_returns_what_it_writes(compiled, tmp_path):
    from kubeflow.runner import compile_pipeline

    job, _, cfg = compiled
    out = tmp_path / "again.json"
    returned = compile_pipeline(cfg, IMAGE, str(out))
    assert returned == json.loads(out.read_text())
    assert returned["pipelineSpec"]["root"] == job["pipelineSpec"]["root"]


def test_all_components_present_and_wired(compiled):
    job, _, _ = compiled
    t = tasks(job)
    assert set(t) == TASKS
    assert set(t["Pusher"]["dependentTasks"]) == {"Trainer", "RecallEvaluator"}
    assert set(t["RecallEvaluator"]["dependentTasks"]) == {
        "Cars196ExampleGen", "Trainer", "latest_blessed_model_resolver-model-resolver"}
    assert all(task["cachingOptions"]["enableCache"] for task in t.values()
               if "cachingOptions" in task)


def test_every_step_runs_our_image_with_the_tfx_v2_entrypoint(compiled):
    job, _, _ = compiled
    containers = {k: v["container"] for k, v in executors(job).items() if "container" in v}
    assert len(containers) == 8  # all but the two resolver halves
    for label, c in containers.items():
        assert c["image"] == IMAGE, label
        assert c["command"] == RUN_EXECUTOR, label  # so the Dockerfile's ENTRYPOINT is unused
    hook = containers["Cars196ExampleGen_executor"]["lifecycle"]["preCacheCheck"]
    assert hook["command"] == ["python", "-m",
                               "tfx.orchestration.kubeflow.v2.file_based_example_gen.driver"]
    assert "gcr.io/tfx-oss-public" not in json.dumps(job)


def test_trainer_requests_gpus_memory_and_cpu(compiled):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    job, _, _ = compiled
    container = json_format.ParseDict(
        executors(job)["Trainer_executor"]["container"],
        pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec())
    res = container.resources
    assert res.accelerator.type == "nvidia.com/gpu" and res.accelerator.count == 2
    assert res.memory_limit == pytest.approx(30 * 2**30 / 1e9)  # 30Gi in GB
    assert res.cpu_limit == pytest.approx(7.5)
    others = [k for k, v in executors(job).items()
              if "resources" in v.get("container", {}) and k != "Trainer_executor"]
    assert others == []


def test_resolver_compiles_as_latest_blessed_model_strategy(compiled):
    job, _, _ = compiled
    ex, t = executors(job), tasks(job)
    blessing_q = ex["latest_blessed_model_resolver-model-blessing-resolver_executor"][
        "resolver"]["outputArtifactQueries"]["model_blessing"]["filter"]
    assert blessing_q == ('schema_title="tfx.ModelBlessing" AND state=LIVE AND '
                          'metadata.blessed.number_value=1')
    model_q = ex["latest_blessed_model_resolver-model-resolver_executor"][
        "resolver"]["outputArtifactQueries"]["model"]["filter"]
    assert model_q == ('schema_title="tfx.Model" AND state=LIVE AND '
                       'name="{{$.inputs.artifacts[\'input\'].metadata[\'current_model_id\']}}"')
    model_resolver = t["latest_blessed_model_resolver-model-resolver"]
    assert model_resolver["inputs"]["artifacts"]["input"]["taskOutputArtifact"] == {
        "producerTask": "latest_blessed_model_resolver-model-blessing-resolver",
        "outputArtifactKey": "model_blessing"}
    assert t["RecallEvaluator"]["inputs"]["artifacts"]["baseline_model"][
        "taskOutputArtifact"]["producerTask"] == "latest_blessed_model_resolver-model-resolver"


def test_beam_components_get_the_kubeflow_beam_args(compiled):
    job, _, cfg = compiled
    ex = executors(job)
    for label in ("Cars196ExampleGen_executor", "StatisticsGen_executor",
                  "Transform_executor"):
        assert ex[label]["container"]["args"][-len(BEAM_ARGS):] == BEAM_ARGS, label
    hook = ex["Cars196ExampleGen_executor"]["container"]["lifecycle"]["preCacheCheck"]
    assert hook["args"][-len(BEAM_ARGS):] == BEAM_ARGS
    # The local run's Beam args stay local.
    local = cfg.pipeline.beam_args[0]
    assert all(local not in v["container"]["args"] for v in ex.values() if "container" in v)


def test_pipeline_root_and_trainer_checkpoints_on_shared_storage(compiled):
    job, _, _ = compiled
    assert job["runtimeConfig"]["gcsOutputDirectory"] == ROOT
    custom = json.loads(tasks(job)["Trainer"]["inputs"]["parameters"]["custom_config"][
        "runtimeValue"]["constantValue"]["stringValue"])
    assert custom["checkpoint_root"] == f"{ROOT}/Trainer/.checkpoints"


def test_schema_file_points_into_the_image(compiled):
    from kubeflow.runner import IMAGE_PROJECT_DIR

    job, _, _ = compiled
    schema_file = tasks(job)["ImportSchemaGen"]["inputs"]["parameters"]["schema_file"][
        "runtimeValue"]["constantValue"]["stringValue"]
    assert schema_file == f"{IMAGE_PROJECT_DIR}/components/cars196/schema.pbtxt"
    assert Path(__file__).resolve().parent.parent.joinpath(
        "components/cars196/schema.pbtxt").is_file()
    workdirs = re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), re.M)
    assert workdirs == [IMAGE_PROJECT_DIR]


def test_yaml_output_is_a_pipeline_spec_and_gpus_zero_requests_none(tmp_path):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    from kubeflow.runner import compile_pipeline

    _, cfg = write_config(tmp_path, gpus=0, memory="", cpu="", image=IMAGE)
    out = tmp_path / "pipeline.yaml"
    job = compile_pipeline(cfg, None, str(out))  # image from kubeflow.image
    spec = yaml.safe_load(out.read_text())
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    assert spec["root"] == job["pipelineSpec"]["root"]
    trainer = spec["deploymentSpec"]["executors"]["Trainer_executor"]["container"]
    assert trainer["image"] == IMAGE and "resources" not in trainer


# ------------------------------------------------------------------ compile errors

def test_compile_without_image_names_flag_and_key(tmp_path, capsys):
    from pipeline.cli import main

    config_file, _ = write_config(tmp_path)
    out = tmp_path / "pipeline.json"
    assert main(["kubeflow", "compile", "--config", config_file, "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--image" in err and "kubeflow.image" in err
    assert not out.exists()


@pytest.mark.parametrize("kubeflow, expected", [
    ({"memory": "32 gigs"}, "kubeflow.memory"),
    ({"cpu": "eight"}, "kubeflow.cpu"),
    ({"pipeline_root": ""}, "kubeflow.pipeline_root"),
    ({"gpu_limit_resource": ""}, "kubeflow.gpu_limit_resource"),
])
def test_compile_setting_errors_name_the_key(tmp_path, capsys, kubeflow, expected):
    from pipeline.cli import main

    config_file, _ = write_config(tmp_path, **kubeflow)
    assert main(["kubeflow", "compile", "--config", config_file, "--image", IMAGE,
                 "--output", str(tmp_path / "p.json")]) == 1
    assert expected in capsys.readouterr().err


def test_compile_rejects_a_pipeline_name_kubeflow_refuses(tmp_path):
    from kubeflow.runner import KubeflowError, compile_pipeline

    cfg = small_config(tmp_path, tmp_path, pipeline={"name": "cgd_Test"}, kubeflow=KUBEFLOW)
    with pytest.raises(KubeflowError, match="pipeline.name"):
        compile_pipeline(cfg, IMAGE, str(tmp_path / "p.json"))


@pytest.mark.parametrize("text, gb", [("32G", 32.0), ("30Gi", 32.21225472), ("512M", 0.512),
                                       ("1024Mi", 1.073741824), ("2000000000", 2.0)])
def test_parse_memory_gb(text, gb):
    from kubeflow.runner import parse_memory_gb
    assert parse_memory_gb(text) == pytest.approx(gb)


@pytest.mark.parametrize("text, cores", [("8", 8.0), ("0.5", 0.5), ("500m", 0.5)])
def test_parse_cpu(text, cores):
    from kubeflow.runner import parse_cpu
    assert parse_cpu(text) == pytest.approx(cores)


# ------------------------------------------------------------------ cron

@pytest.mark.parametrize("cron, kfp", [
    ("0 3 * * 0", "0 0 3 * * 0"),
    ("  30   2 1,15 * MON-FRI ", "0 30 2 1,15 * MON-FRI"),
    ("*/15 * * * *", "0 */15 * * * *"),
    ("0 0 3 ? * SUN", "0 0 3 ? * SUN"),        # already KFP's 6 fields
    ("0 4 * jan-mar 6", "0 0 4 * jan-mar 6"),
    ("@weekly", "@weekly"),
])
def test_cron_to_kfp(cron, kfp):
    from kubeflow.runner import to_kfp_cron
    assert to_kfp_cron(cron) == kfp


@pytest.mark.parametrize("cron, message", [
    ("0 3 * *", "expected 5 fields"),
    ("", "expected 5 fields"),
    ("0 0 0 3 * * 0", "got 7"),
    ("0 24 * * 0", "hour field '24'"),
    ("60 3 * * 0", "minute field '60'"),
    ("0 3 0 * *", "day-of-month field '0'"),
    ("0 3 * 13 *", "month field '13'"),
    ("0 3 * * 7", "day-of-week field '7'"),
    ("0 3 * * FUNDAY", "day-of-week field 'FUNDAY'"),
    ("0 3 * * 5-1", "runs backwards"),
    ("*/0 3 * * *", "step '0'"),
    ("? 3 * * *", "'?' is allowed only"),
])
def test_bad_cron_is_refused_with_the_field(cron, message):
    from kubeflow.runner import KubeflowError, to_kfp_cron
    with pytest.raises(KubeflowError, match=re.escape(message)):
        to_kfp_cron(cron)


# ------------------------------------------------------------------ submit / schedule

class FakeClient:
    """Records kfp.Client calls; reads the package while it exists (a temp file)."""

    def __init__(self, host):
        self.host, self.calls, self.packages = host, [], []

    def _read(self, path):
        assert path.endswith(".yaml") and os.path.isfile(path)
        self.packages.append(yaml.safe_load(Path(path).read_text()))

    def create_run_from_pipeline_package(self, **kwargs):
        self._read(kwargs["pipeline_file"])
        self.calls.append(("create_run_from_pipeline_package", kwargs))
        return type("Result", (), {"run_id": "run-1"})()

    def create_experiment(self, **kwargs):
        self.calls.append(("create_experiment", kwargs))
        return type("Experiment", (), {"experiment_id": "exp-7"})()

    def create_recurring_run(self, **kwargs):
        self._read(kwargs["pipeline_package_path"])
        self.calls.append(("create_recurring_run", kwargs))
        return type("RecurringRun", (), {"recurring_run_id": "rr-1"})()


@pytest.fixture
def fake_kfp(monkeypatch):
    clients = []

    def make_client(host):
        clients.append(FakeClient(host))
        return clients[-1]

    monkeypatch.setattr("kubeflow.commands.make_client", make_client)
    return clients


def test_submit_passes_the_spec_and_root_to_kfp(compiled, fake_kfp, tmp_path):
    from pipeline.cli import main

    job, out, _ = compiled
    config_file, _ = write_config(tmp_path, host="http://kfp.example:8888")
    assert main(["kubeflow", "submit", "--config", config_file, "--pipeline", str(out),
                 "--experiment", "cars", "--run-name", "nightly"]) == 0
    (client,) = fake_kfp
    assert client.host == "http://kfp.example:8888"
    (name, kwargs), = client.calls
    assert name == "create_run_from_pipeline_package"
    assert kwargs == {"pipeline_file": kwargs["pipeline_file"], "arguments": {},
                      "run_name": "nightly", "experiment_name": "cars", "pipeline_root": ROOT}
    assert client.packages == [job["pipelineSpec"]]  # kfp 2.5 reads a YAML PipelineSpec


def test_submit_defaults_experiment_run_name_and_host_flag(compiled, fake_kfp, tmp_path):
    from pipeline.cli import main

    _, out, cfg = compiled
    config_file, _ = write_config(tmp_path, host="http://from-config")
    assert main(["kubeflow", "submit", "--config", config_file, "--pipeline", str(out),
                 "--host", "https://kfp.prod"]) == 0
    (client,) = fake_kfp
    assert client.host == "https://kfp.prod"
    kwargs = client.calls[0][1]
    assert kwargs["experiment_name"] == cfg.pipeline.name
    assert re.fullmatch(rf"{cfg.pipeline.name} \d{{4}}-\d\d-\d\d \d\d-\d\d-\d\d",
                        kwargs["run_name"])


def test_schedule_converts_cron_and_creates_a_recurring_run(compiled, fake_kfp, tmp_path):
    from pipeline.cli import main

    job, out, _ = compiled
    config_file, _ = write_config(tmp_path, host="http://kfp")
    assert main(["kubeflow", "schedule", "--config", config_file, "--pipeline", str(out),
                 "--cron", "0 3 * * 0", "--experiment", "retraining",
                 "--job-name", "weekly-retrain"]) == 0
    (client,) = fake_kfp
    assert client.calls[0] == ("create_experiment", {"name": "retraining"})
    name, kwargs = client.calls[1]
    assert name == "create_recurring_run"
    assert kwargs == {"experiment_id": "exp-7", "job_name": "weekly-retrain",
                      "cron_expression": "0 0 3 * * 0",
                      "pipeline_package_path": kwargs["pipeline_package_path"],
                      "params": {}, "pipeline_root": ROOT, "max_concurrency": 1,
                      "no_catchup": True, "enabled": True}
    assert client.packages == [job["pipelineSpec"]]


def test_schedule_defaults_to_config_cron_and_job_name(compiled, fake_kfp, tmp_path):
    from pipeline.cli import main

    _, out, cfg = compiled
    config_file, _ = write_config(tmp_path, host="http://kfp", schedule_cron="30 1 * * 1-5")
    assert main(["kubeflow", "schedule", "--config", config_file, "--pipeline", str(out)]) == 0
    kwargs = fake_kfp[0].calls[1][1]
    assert kwargs["cron_expression"] == "0 30 1 * * 1-5"
    assert kwargs["job_name"] == f"{cfg.pipeline.name}-retrain"
    assert fake_kfp[0].calls[0][1] == {"name": cfg.pipeline.name}


@pytest.mark.parametrize("argv, kubeflow, message", [
    (["submit"], {}, "--host"),
    (["schedule", "--cron", "0 3 * * 0"], {}, "kubeflow.host"),
    (["schedule", "--host", "http://kfp", "--cron", "0 3 * * 8"], {}, "day-of-week"),
    (["schedule", "--host", "http://kfp", "--cron", "0 3 * *"], {}, "expected 5 fields"),
    (["schedule", "--host", "http://kfp"], {"schedule_cron": ""}, "kubeflow.schedule_cron"),
])
def test_submit_schedule_errors_before_any_client_call(compiled, fake_kfp, tmp_path, capsys,
                                                       argv, kubeflow, message):
    from pipeline.cli import main

    _, out, _ = compiled
    config_file, _ = write_config(tmp_path, **kubeflow)
    assert main(["kubeflow", argv[0], "--config", config_file, "--pipeline", str(out),
                 *argv[1:]]) == 1
    assert message in capsys.readouterr().err
    assert fake_kfp == []


def test_submit_missing_or_bad_pipeline_file(fake_kfp, tmp_path, capsys):
    from pipeline.cli import main

    config_file, _ = write_config(tmp_path, host="http://kfp")
    missing = tmp_path / "nope.json"
    assert main(["kubeflow", "submit", "--config", config_file, "--pipeline",
                 str(missing)]) == 1
    assert str(missing) in capsys.readouterr().err and fake_kfp == []
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pipelineSpec": {"pipelineInfo": {"name": "x"},
                                                "notAField": 1}}))
    assert main(["kubeflow", "submit", "--config", config_file, "--pipeline", str(bad)]) == 1
    assert f"{bad}: not a KFP PipelineJob" in capsys.readouterr().err


def test_package_is_accepted_by_the_real_kfp_client(compiled, tmp_path):
    """The fake's call shapes match kfp 2.5's Client, whose own parser reads our package."""
    import kfp
    from kfp.client import client as kfp_client

    from kubeflow.runner import load_pipeline_file, write_pipeline_package

    job, out, _ = compiled
    spec, root = load_pipeline_file(str(out))
    assert (spec, root) == (job["pipelineSpec"], ROOT)
    doc = kfp_client._extract_pipeline_yaml(write_pipeline_package(spec, str(tmp_path)))
    assert doc.pipeline_spec.pipeline_info.name == job["displayName"]
    assert set(doc.pipeline_spec.root.dag.tasks) == TASKS
    used = {
        "create_run_from_pipeline_package": {"pipeline_file", "arguments", "run_name",
                                             "experiment_name", "pipeline_root"},
        "create_experiment": {"name"},
        "create_recurring_run": {"experiment_id", "job_name", "cron_expression",
                                 "pipeline_package_path", "params", "pipeline_root",
                                 "max_concurrency", "no_catchup", "enabled"},
    }
    for method, names in used.items():
        assert names <= set(inspect.signature(getattr(kfp.Client, method)).parameters), method


def test_kubeflow_without_action_prints_help(capsys):
    from pipeline.cli import main
    assert main(["kubeflow"]) == 2
    assert "compile" in capsys.readouterr().out


# ------------------------------------------------------------------ Dockerfile (static)

def test_dockerfile_base_env_and_pinned_install():
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines()]
    froms = [line.split()[1] for line in lines if line.startswith("FROM ")]
    # Python 3.10 (TFX 1.16) + CUDA 12.3 (what TF 2.16.2 is built against).
    assert froms[-1] == "nvidia/cuda:12.3.2-base-ubuntu22.04"
    assert "ENV TF_USE_LEGACY_KERAS=1" in lines
    assert "python3.10" in text
    installs = re.findall(r"pip install ([^\n\\]*)", text)
    project = [i for i in installs if i.rstrip().endswith(" .")]
    assert project and all("-c constraints.txt" in i for i in project)
    assert any('"tensorflow[and-cuda]"' in i and "-c constraints.txt" in i for i in installs)
    assert "COPY constraints.txt" in text


def test_dockerfile_copies_every_package_setup_py_installs():
    from setuptools import find_packages

    root = DOCKERFILE.parent.parent
    copied = set(re.findall(r"^COPY\s+(\w+)\s+\./\1$", DOCKERFILE.read_text(), re.M))
    top_level = {p.split(".")[0] for p in find_packages(
        str(root), include=["pipeline*", "components*", "trainer*", "serving*", "kubeflow*"])}
    assert top_level == copied
    assert "setup.py" in DOCKERFILE.read_text()
