"""Kubeflow: compile with TFX's KubeflowV2DagRunner + kubeflow/kfp_compat.py, validate
against the KFP protos, submit/schedule with the real kfp.Client through `cgd kubeflow`
against the local fake KFP 2.0.5 API server (tests/support/kfp_api_server.py; no cluster here),
static Dockerfile checks (no docker engine here)."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

import kfp_server_api
import pytest
import yaml

from tests.conftest import small_config
from tests.support.kfp_api_server import KfpApiServer
from tests.support.paths import REPO_ROOT

IMAGE = "europe-docker.pkg.dev/cgd-test/cgd/cgd:1.2.3"
ROOT = "gs://cgd-test-bucket/pipelines"
MINIO_ROOT = "minio://mlpipeline/v2/artifacts"
BEAM_ARGS = ["--runner=DataflowRunner", "--project=cgd-test", "--region=europe-west4",
             "--temp_location=gs://cgd-test-bucket/tmp"]
KUBEFLOW = {"target": "kfp", "pipeline_root": ROOT, "beam_args": BEAM_ARGS, "gpus": 2,
            "gpu_limit_resource": "nvidia.com/gpu", "memory": "30Gi", "cpu": "7500m",
            "gpu_node_selector": [], "volumes": [], "host": "", "image": ""}
VOLUMES = ["cars196-data:/mnt/data", "cgd-serving:/mnt/serving"]
GPU_NODES = ["cloud.google.com/gke-accelerator=nvidia-tesla-t4"]
DRIVER, EXAMPLE_GEN = "RetrievalExampleGen-driver", "RetrievalExampleGen"
TASKS = {DRIVER, EXAMPLE_GEN, "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
         "Transform", "Trainer", "RecallEvaluator", "GalleryIndexer", "Pusher"}
DRIVER_OUTPUTS = {"input_config": "STRING", "span": "NUMBER_INTEGER",
                  "input_fingerprint": "STRING"}
RESOLVER = "latest_blessed_model_resolver-model-blessing-resolver"
# What KFP 2.0.5's API server answers for a spec compiled the old way (tests/support/kfp_api_server.py).
REFUSALS = {
    "schema 2.0.0": "KFP only supports schema version 2.1.0, but the pipeline spec has "
                    "version 2.0.0",
    "resolver executor": f'error processing component name="{RESOLVER}": executor(label='
                         f'"{RESOLVER}_executor"): non-container and non-importer executor '
                         "not implemented",
}
DOCKERFILE = REPO_ROOT / "kubeflow" / "Dockerfile"


def config_dict(tmp_path, **kubeflow) -> dict:
    """The full config of the tests, unvalidated (to write bad values to a file)."""
    cfg = small_config(tmp_path, tmp_path / "cars196", kubeflow=KUBEFLOW).to_dict()
    cfg["kubeflow"].update(kubeflow)
    return cfg


def write_config(tmp_path, data: dict | None = None, **kubeflow) -> tuple[str, object]:
    """A config file for the CLI (every key written out) and the Config it loads to."""
    cfg = small_config(tmp_path, tmp_path / "cars196", kubeflow=dict(KUBEFLOW, **kubeflow),
                       **({"data": data} if data else {}))
    path = tmp_path / "kubeflow.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return str(path), cfg


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """`cgd kubeflow compile` to .json once; the parsed PipelineJob, its path and the config."""
    from cli.main import main

    tmp = tmp_path_factory.mktemp("kubeflow")
    config_file, cfg = write_config(tmp)
    out = tmp / "out" / "pipeline.json"
    assert main(["kubeflow", "compile", "--config", config_file, "--image", IMAGE,
                 "--output", str(out)]) == 0
    return json.loads(out.read_text()), out, cfg


@pytest.fixture(scope="module")
def yaml_package(tmp_path_factory):
    """compile_pipeline once to .yaml for a KFP cluster with MinIO artifacts, PVCs, a GPU
    node pool, versioned input files, no Trainer limits and the image from kubeflow.image.

    (YAML documents, returned PipelineJob, path, config)."""
    from pipeline.kubeflow_runner import compile_for_kubeflow

    tmp = tmp_path_factory.mktemp("kubeflow_yaml")
    _, cfg = write_config(tmp, data={"file_pattern": "span-{SPAN}/ver-{VERSION}/*"},
                          pipeline_root=MINIO_ROOT, volumes=VOLUMES, gpu_node_selector=GPU_NODES,
                          gpus=0, memory="", cpu="", image=IMAGE)
    out = tmp / "pipeline.yaml"
    job = compile_for_kubeflow(cfg, None, str(out))
    return list(yaml.safe_load_all(out.read_text())), job, out, cfg


@pytest.fixture
def server():
    with KfpApiServer() as running:
        yield running


def executors(job):
    return job["pipelineSpec"]["deploymentSpec"]["executors"]


def tasks(job):
    return job["pipelineSpec"]["root"]["dag"]["tasks"]


def components(job):
    return job["pipelineSpec"]["components"]


def constant(job, task, name):
    """A task's constant input parameter (schema 2.1.0: runtimeValue.constant)."""
    return tasks(job)[task]["inputs"]["parameters"][name]["runtimeValue"]["constant"]


def inputs_spec_arg(args: list) -> dict:
    """The JSON after --json_serialized_inputs_spec_args in an executor's args."""
    return json.loads(args[args.index("--json_serialized_inputs_spec_args") + 1])


def as_spec(doc: dict):
    """A PipelineSpec proto (compare specs as KFP does: kfp.Client re-serialises them, which
    drops fields at their default, e.g. cachingOptions.enableCache: false)."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    return json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec())


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if re.match(r"cgd kubeflow( \w+)?: error: ", line)]


# ------------------------------------------------------------------ compiled pipeline

def test_compiled_file_is_a_kfp_pipeline_job_with_schema_2_1_0(compiled):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    job, _, cfg = compiled
    # Strict parsing: an unknown or mistyped field fails.
    parsed = json_format.ParseDict(job, pipeline_spec_pb2.PipelineJob())
    spec = as_spec(job["pipelineSpec"])
    assert parsed.display_name == spec.pipeline_info.name == cfg.pipeline.name
    assert spec.schema_version == "2.1.0" and spec.sdk_version == "tfx-1.16.0"
    assert set(spec.components) == set(spec.root.dag.tasks) == TASKS
    assert len(executors(job)) == len(TASKS)


def test_parameters_are_runtime_value_constants_never_the_2_0_constant_value(compiled):
    job, _, _ = compiled
    for name, task in tasks(job).items():
        for key, parameter in task["inputs"]["parameters"].items():
            assert set(parameter) <= {"runtimeValue", "taskOutputParameter"}, (name, key)
            if "runtimeValue" in parameter:
                assert list(parameter["runtimeValue"]) == ["constant"], (name, key)
    assert "constantValue" not in json.dumps(job)


def test_tasks_are_wired_without_any_resolver(compiled):
    job, _, _ = compiled
    t = tasks(job)
    assert set(t) == TASKS
    assert "dependentTasks" not in t[DRIVER]
    assert t[EXAMPLE_GEN]["dependentTasks"] == [DRIVER]
    # The Pusher pushes the GalleryIndexer's model (the candidate with its index) on its
    # blessing (the evaluator's and the index's recall floor).
    assert set(t["Pusher"]["dependentTasks"]) == {"GalleryIndexer"}
    assert set(t["GalleryIndexer"]["dependentTasks"]) == {EXAMPLE_GEN, "Trainer",
                                                          "RecallEvaluator"}
    assert set(t["RecallEvaluator"]["dependentTasks"]) == {EXAMPLE_GEN, "Trainer"}
    assert all(list(executor) == ["container"] for executor in executors(job).values())
    assert "resolver" not in json.dumps(job["pipelineSpec"]).lower()


def test_only_the_span_driver_and_the_recall_evaluator_are_never_cached(compiled):
    job, _, _ = compiled
    caching = {name: task["cachingOptions"]["enableCache"] for name, task in tasks(job).items()}
    assert caching == {name: name not in (DRIVER, "RecallEvaluator") for name in TASKS}


def test_every_executor_runs_our_entrypoint_in_our_image_without_lifecycle_hooks(compiled):
    from kubeflow import kfp_compat

    job, _, _ = compiled
    for label, executor in executors(job).items():
        container = executor["container"]
        assert container["image"] == IMAGE, label
        assert "lifecycle" not in container, label  # KFP never runs preCacheCheck
        expected = kfp_compat.SPAN_DRIVER if label == f"{DRIVER}_executor" \
            else kfp_compat.ENTRYPOINT
        assert container["command"] == expected, label
    assert kfp_compat.ENTRYPOINT == ["python", "-m", "kubeflow.entrypoint"]
    assert kfp_compat.SPAN_DRIVER == ["python", "-m", "kubeflow.span_driver"]
    assert "gcr.io/tfx-oss-public" not in json.dumps(job)
    assert "kubeflow_v2_run_executor" not in json.dumps(job)


def test_span_driver_outputs_become_example_gen_inputs(compiled):
    job, _, _ = compiled
    gen_inputs = tasks(job)[EXAMPLE_GEN]["inputs"]["parameters"]
    for key in DRIVER_OUTPUTS:
        assert gen_inputs[key] == {"taskOutputParameter": {
            "producerTask": DRIVER, "outputParameterKey": key}}, key
    declared = components(job)[EXAMPLE_GEN]["inputDefinitions"]
    assert {k: declared["parameters"][k]["parameterType"] for k in DRIVER_OUTPUTS} == \
        DRIVER_OUTPUTS
    assert components(job)[DRIVER]["outputDefinitions"] == {"parameters": {
        k: {"parameterType": t} for k, t in DRIVER_OUTPUTS.items()}}
    # ExampleGen's executor learns the parameter types from this JSON (kubeflow/entrypoint.py).
    args = executors(job)[f"{EXAMPLE_GEN}_executor"]["container"]["args"]
    assert inputs_spec_arg(args) == declared
    # data.file_pattern has no {VERSION}: no version anywhere.
    assert "version" not in gen_inputs and "version" not in declared["parameters"]


def test_span_driver_reads_the_unresolved_example_gen_inputs(compiled):
    job, _, cfg = compiled
    driver_task = tasks(job)[DRIVER]
    gen_only = set(DRIVER_OUTPUTS) - {"input_config"}
    assert set(driver_task["inputs"]["parameters"]) == \
        set(tasks(job)[EXAMPLE_GEN]["inputs"]["parameters"]) - gen_only
    assert all("runtimeValue" in p for p in driver_task["inputs"]["parameters"].values())
    input_config = json.loads(constant(job, DRIVER, "input_config"))
    assert [split["pattern"] for split in input_config["splits"]] == [cfg.data.file_pattern]
    args = executors(job)[f"{DRIVER}_executor"]["container"]["args"]
    assert args[args.index("--json_serialized_invocation_args") + 1] == "{{$}}"
    assert inputs_spec_arg(args) == components(job)[DRIVER]["inputDefinitions"]


def test_recall_evaluator_reads_the_production_model_from_the_serving_dir(compiled):
    job, _, cfg = compiled
    serving_model_dir = f"{cfg.pipeline.serving_dir}/{cfg.serving.model_name}"
    assert constant(job, "RecallEvaluator", "serving_model_dir") == serving_model_dir
    push_destination = json.loads(constant(job, "Pusher", "push_destination"))
    assert push_destination["filesystem"]["base_directory"] == serving_model_dir
    assert set(tasks(job)["RecallEvaluator"]["inputs"]["artifacts"]) == {"examples", "model"}
    assert constant(job, "GalleryIndexer", "serving_model_dir") == serving_model_dir
    assert set(tasks(job)["GalleryIndexer"]["inputs"]["artifacts"]) == {
        "examples", "model", "model_blessing"}


def test_trainer_requests_gpus_memory_and_cpu_by_kfp_resource_name(compiled):
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
              if "resources" in v["container"] and k != "Trainer_executor"]
    assert others == []


def test_beam_components_and_the_span_driver_get_the_kubeflow_beam_args(compiled):
    job, _, cfg = compiled
    ex = executors(job)
    for label in (f"{EXAMPLE_GEN}_executor", "StatisticsGen_executor", "Transform_executor",
                  f"{DRIVER}_executor"):  # the driver ignores them
        assert ex[label]["container"]["args"][-len(BEAM_ARGS):] == BEAM_ARGS, label
    # The local run's Beam args stay local.
    local = cfg.pipeline.beam_args[0]
    assert all(local not in v["container"]["args"] for v in ex.values())


def test_pipeline_root_and_trainer_checkpoints_on_gcs(compiled):
    job, _, _ = compiled
    assert job["runtimeConfig"]["gcsOutputDirectory"] == ROOT
    custom = json.loads(constant(job, "Trainer", "custom_config"))
    assert custom["checkpoint_root"] == f"{ROOT}/Trainer/.checkpoints"


@pytest.mark.parametrize("root, checkpoints", [
    ("gs://bucket/cgd/", "gs://bucket/cgd/Trainer/.checkpoints"),
    (MINIO_ROOT, ""),
    ("s3://bucket/cgd", ""),
])
def test_trainer_checkpoints_only_on_gcs(root, checkpoints):
    from kubeflow.compiler import checkpoint_root
    assert checkpoint_root(root) == checkpoints


def test_schema_file_points_into_the_image(compiled):
    from kubeflow.compiler import IMAGE_PROJECT_DIR

    job, _, _ = compiled
    schema_file = constant(job, "ImportSchemaGen", "schema_file")
    assert schema_file == f"{IMAGE_PROJECT_DIR}/components/example_gen/schema.pbtxt"
    assert REPO_ROOT.joinpath(
        "components/example_gen/schema.pbtxt").is_file()
    workdirs = re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), re.M)
    assert workdirs == [IMAGE_PROJECT_DIR]


# ------------------------------------------------------------------ YAML package, platform spec

def test_yaml_output_is_the_returned_pipeline_spec_then_the_kubernetes_platform_spec(
        yaml_package):
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s
    from kfp.pipeline_spec import pipeline_spec_pb2

    docs, job, _, _ = yaml_package
    spec, platform = docs
    assert spec == job["pipelineSpec"]
    as_spec(spec)
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    for config in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
        json_format.ParseDict(config, k8s.KubernetesExecutorConfig())  # strict


def test_platform_spec_mounts_every_volume_everywhere_and_pins_only_the_trainer_to_gpu_nodes(
        yaml_package):
    docs, job, _, _ = yaml_package
    platform_executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(platform_executors) == set(executors(job))
    mounts = [{"constant": "cars196-data", "mountPath": "/mnt/data"},
              {"constant": "cgd-serving", "mountPath": "/mnt/serving"}]
    for label, config in platform_executors.items():
        assert config["pvcMount"] == mounts, label
        if label == "Trainer_executor":
            assert config["nodeSelector"] == {
                "labels": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}}
        else:
            assert "nodeSelector" not in config, label


def test_versioned_file_pattern_makes_the_driver_also_output_the_version(yaml_package):
    docs, job, _, _ = yaml_package
    assert components(job)[DRIVER]["outputDefinitions"]["parameters"]["version"] == {
        "parameterType": "NUMBER_INTEGER"}
    assert tasks(job)[EXAMPLE_GEN]["inputs"]["parameters"]["version"] == {
        "taskOutputParameter": {"producerTask": DRIVER, "outputParameterKey": "version"}}
    declared = components(job)[EXAMPLE_GEN]["inputDefinitions"]
    assert declared["parameters"]["version"] == {"parameterType": "NUMBER_INTEGER"}
    args = executors(job)[f"{EXAMPLE_GEN}_executor"]["container"]["args"]
    assert inputs_spec_arg(args) == declared


def test_minio_root_keeps_no_trainer_checkpoints(yaml_package):
    _, job, _, _ = yaml_package
    assert json.loads(constant(job, "Trainer", "custom_config"))["checkpoint_root"] == ""


def test_zero_gpus_and_no_limits_request_no_resources_and_the_image_comes_from_config(
        yaml_package):
    _, job, _, _ = yaml_package
    trainer = executors(job)["Trainer_executor"]["container"]
    assert trainer["image"] == IMAGE and "resources" not in trainer


def test_vertex_target_names_the_trainer_gpu_as_vertex_does(tmp_path):
    from kubeflow import kfp_compat
    from pipeline.kubeflow_runner import compile_for_kubeflow

    _, cfg = write_config(tmp_path, target="vertex", gpus=1,
                          vertex_accelerator="NVIDIA_TESLA_T4")
    job = compile_for_kubeflow(cfg, IMAGE, str(tmp_path / "vertex.json"))
    accelerator = executors(job)["Trainer_executor"]["container"]["resources"]["accelerator"]
    assert accelerator == {"type": "NVIDIA_TESLA_T4", "count": "1"}
    kfp_compat.check_runnable(job["pipelineSpec"])  # the same runnable spec otherwise


def test_json_output_refuses_volumes_and_gpu_node_selector_naming_the_keys(tmp_path, capsys):
    from cli.main import main

    config_file, _ = write_config(tmp_path, volumes=VOLUMES[:1])
    out = tmp_path / "pipeline.json"
    assert main(["kubeflow", "compile", "--config", config_file, "--image", IMAGE,
                 "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "kubeflow.gpu_node_selector" in err and "kubeflow.volumes" in err
    assert "--output pipeline.yaml" in err
    assert not out.exists()


# ------------------------------------------------------------------ compile errors

def test_compile_without_image_names_flag_and_key(tmp_path, capsys):
    from cli.main import main

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
    ({"pipeline_root": "file:///data/cgd"}, "kubeflow.pipeline_root"),
    ({"target": "vertex", "pipeline_root": "s3://bucket/cgd"}, "kubeflow.pipeline_root"),
    ({"target": "vertex", "pipeline_root": MINIO_ROOT}, "kubeflow.pipeline_root"),
    ({"gpu_limit_resource": ""}, "kubeflow.gpu_limit_resource"),
])
def test_compile_setting_errors_name_the_key(tmp_path, capsys, kubeflow, expected):
    from cli.main import main

    config_file, _ = write_config(tmp_path, **kubeflow)
    assert main(["kubeflow", "compile", "--config", config_file, "--image", IMAGE,
                 "--output", str(tmp_path / "p.json")]) == 1
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("kubeflow, expected", [
    ({"target": "kubernetes"}, "kubeflow.target"),
    ({"target": "vertex", "gpus": 1, "vertex_accelerator": "nvidia.com/gpu"},
     "kubeflow.vertex_accelerator"),
    ({"gpu_node_selector": ["pool=gpu", "nvidia-tesla-t4"]}, "kubeflow.gpu_node_selector[1]"),
    ({"volumes": ["cars196-data"]}, "kubeflow.volumes[0]"),
    ({"volumes": ["cars196-data:mnt/data"]}, "kubeflow.volumes[0]"),
])
def test_config_validation_names_the_bad_kubeflow_key(tmp_path, capsys, kubeflow, expected):
    from cli.main import main

    config_file = tmp_path / "bad.yaml"
    config_file.write_text(yaml.safe_dump(config_dict(tmp_path, **kubeflow)))
    assert main(["kubeflow", "compile", "--config", str(config_file), "--image", IMAGE,
                 "--output", str(tmp_path / "p.yaml")]) == 1
    assert expected in capsys.readouterr().err


def test_compile_with_the_packaged_defaults_refuses_to_guess_the_pipeline_root(tmp_path, capsys):
    from cli.main import main

    assert main(["kubeflow", "compile", "--image", IMAGE,
                 "--output", str(tmp_path / "p.json")]) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith("cgd kubeflow compile: error:")
    assert "'kubeflow.pipeline_root' must be set" in line and "minio://" in line
    assert not (tmp_path / "p.json").exists()


def test_compile_rejects_a_pipeline_name_kubeflow_refuses(tmp_path):
    from kubeflow.errors import KubeflowError
    from pipeline.kubeflow_runner import compile_for_kubeflow

    cfg = small_config(tmp_path, tmp_path, pipeline={"name": "cgd_Test"}, kubeflow=KUBEFLOW)
    with pytest.raises(KubeflowError, match="pipeline.name"):
        compile_for_kubeflow(cfg, IMAGE, str(tmp_path / "p.json"))


@pytest.mark.parametrize("text, gb", [("32G", 32.0), ("30Gi", 32.21225472), ("512M", 0.512),
                                       ("1024Mi", 1.073741824), ("2000000000", 2.0)])
def test_parse_memory_gb(text, gb):
    from kubeflow.compiler import parse_memory_gb
    assert parse_memory_gb(text) == pytest.approx(gb)


@pytest.mark.parametrize("text, cores", [("8", 8.0), ("0.5", 0.5), ("500m", 0.5)])
def test_parse_cpu(text, cores):
    from kubeflow.compiler import parse_cpu
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
    from kubeflow.client import to_kfp_cron
    from tests.support.kfp_api_server import cron_error

    assert to_kfp_cron(cron) == kfp
    assert cron_error(kfp) is None  # and KFP's scheduler (robfig/cron) takes it


@pytest.mark.parametrize("cron, message", [
    ("0 3 * *", "expected 5 fields"),
    ("", "expected 5 fields"),
    ("0 0 0 3 * * 0", "got 7"),
    ("0 24 * * 0", "out of range"),
    ("60 3 * * 0", "out of range"),
    ("0 3 0 * *", "out of range"),
    ("0 3 * 13 *", "out of range"),
    ("0 3 * * FUNDAY", "not acceptable"),
    ("*/0 3 * * *", "step '0'"),
    ("? 3 * * *", "Question mark can only"),
])
def test_bad_cron_is_refused_naming_the_expression(cron, message):
    """Validated by croniter (6 fields, seconds first, as KFP reads them)."""
    from kubeflow.client import to_kfp_cron
    from kubeflow.errors import KubeflowError
    with pytest.raises(KubeflowError, match=re.escape(message)) as refused:
        to_kfp_cron(cron)
    assert repr(cron) in str(refused.value)


@pytest.mark.slow
def test_a_cron_croniter_takes_but_kfp_refuses_is_reported_in_one_line(compiled, server,
                                                                       tmp_path, capsys):
    """croniter reads day-of-week 7 as Sunday, KFP's robfig/cron refuses it: KFP's word wins."""
    from cli.main import main

    _, out, _ = compiled
    config_file, _ = write_config(tmp_path)
    assert main(["kubeflow", "schedule", "--config", config_file, "--pipeline", str(out),
                 "--host", server.host, "--cron", "0 3 * * 7"]) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert "refused to create the recurring run" in line and "above maximum (6)" in line
    assert server.recurring_runs == []


# ------------------------------------------------------------------ submit / schedule (fake KFP)

@pytest.mark.slow
def test_submit_sends_our_schema_2_1_0_spec_and_the_pipeline_root_to_kfp(compiled, server,
                                                                           tmp_path):
    from cli.main import main

    job, out, _ = compiled
    config_file, _ = write_config(tmp_path)
    assert main(["kubeflow", "submit", "--config", config_file, "--pipeline", str(out),
                 "--host", server.host, "--experiment", "cars", "--run-name", "nightly"]) == 0
    assert server.refusals == []
    [run] = server.runs
    assert run["pipeline_spec"]["schemaVersion"] == "2.1.0"
    received = as_spec(run["pipeline_spec"])
    assert received == as_spec(job["pipelineSpec"])
    caching = {name: task.caching_options.enable_cache
               for name, task in received.root.dag.tasks.items()}
    assert caching == {name: name not in (DRIVER, "RecallEvaluator") for name in TASKS}
    assert run["runtime_config"] == {"pipeline_root": ROOT, "parameters": {}}
    assert run["display_name"] == "nightly"
    assert server.experiments[run["experiment_id"]]["display_name"] == "cars"


@pytest.mark.slow
def test_submit_defaults_experiment_and_run_name_and_the_host_flag_wins(compiled, server,
                                                                         tmp_path):
    from cli.main import main

    _, out, cfg = compiled
    config_file, _ = write_config(tmp_path, host="http://127.0.0.1:9")  # nothing listens
    assert main(["kubeflow", "submit", "--config", config_file, "--pipeline", str(out),
                 "--host", server.host]) == 0
    [run] = server.runs
    assert server.experiments[run["experiment_id"]]["display_name"] == cfg.pipeline.name
    assert re.fullmatch(rf"{cfg.pipeline.name} \d{{4}}-\d\d-\d\d \d\d-\d\d-\d\d",
                        run["display_name"])


@pytest.mark.slow
def test_submit_uses_kubeflow_host_from_the_config(compiled, server, tmp_path):
    from cli.main import main

    _, out, _ = compiled
    config_file, _ = write_config(tmp_path, host=server.host)
    assert main(["kubeflow", "submit", "--config", config_file, "--pipeline", str(out)]) == 0
    assert len(server.runs) == 1


@pytest.mark.slow
def test_schedule_creates_a_recurring_run_on_kfps_six_field_cron_one_at_a_time_without_catchup(
        compiled, server, tmp_path):
    from cli.main import main

    job, out, _ = compiled
    config_file, _ = write_config(tmp_path)
    assert main(["kubeflow", "schedule", "--config", config_file, "--pipeline", str(out),
                 "--host", server.host, "--cron", "0 3 * * 0", "--experiment", "retraining",
                 "--job-name", "weekly-retrain"]) == 0
    assert server.refusals == [] and server.runs == []
    [recurring] = server.recurring_runs
    assert recurring["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 0"}}
    assert (recurring["max_concurrency"], recurring["no_catchup"], recurring["mode"]) == (
        "1", True, "ENABLE")
    assert recurring["display_name"] == "weekly-retrain"
    assert server.experiments[recurring["experiment_id"]]["display_name"] == "retraining"
    assert as_spec(recurring["pipeline_spec"]) == as_spec(job["pipelineSpec"])
    assert recurring["runtime_config"] == {"pipeline_root": ROOT, "parameters": {}}


@pytest.mark.slow
def test_schedule_defaults_to_the_config_cron_job_name_and_experiment(compiled, server,
                                                                       tmp_path):
    from cli.main import main

    _, out, cfg = compiled
    config_file, _ = write_config(tmp_path, host=server.host, schedule_cron="30 1 * * 1-5")
    assert main(["kubeflow", "schedule", "--config", config_file, "--pipeline", str(out)]) == 0
    [recurring] = server.recurring_runs
    assert recurring["trigger"] == {"cron_schedule": {"cron": "0 30 1 * * 1-5"}}
    assert recurring["display_name"] == f"{cfg.pipeline.name}-retrain"
    assert server.experiments[recurring["experiment_id"]]["display_name"] == cfg.pipeline.name


@pytest.mark.slow
@pytest.mark.parametrize("argv, kubeflow, message", [
    (["submit"], {}, "--host"),
    (["schedule", "--cron", "0 3 * * 0"], {}, "kubeflow.host"),
    (["schedule", "--host", "SERVER", "--cron", "0 3 * * 8"], {}, "out of range"),
    (["schedule", "--host", "SERVER", "--cron", "0 3 * *"], {}, "expected 5 fields"),
    (["schedule", "--host", "SERVER"], {"schedule_cron": ""}, "kubeflow.schedule_cron"),
])
def test_submit_and_schedule_errors_come_before_any_call_to_kfp(compiled, server, tmp_path,
                                                                capsys, argv, kubeflow, message):
    from cli.main import main

    _, out, _ = compiled
    config_file, _ = write_config(tmp_path, **kubeflow)
    argv = [server.host if arg == "SERVER" else arg for arg in argv]
    assert main(["kubeflow", argv[0], "--config", config_file, "--pipeline", str(out),
                 *argv[1:]]) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert message in line
    assert (server.experiments, server.runs, server.recurring_runs, server.refusals) == (
        {}, [], [], [])


@pytest.mark.slow
def test_submit_refuses_a_missing_or_malformed_pipeline_file(server, tmp_path, capsys):
    from cli.main import main

    config_file, _ = write_config(tmp_path, host=server.host)
    missing = tmp_path / "nope.json"
    assert main(["kubeflow", "submit", "--config", config_file, "--pipeline",
                 str(missing)]) == 1
    assert str(missing) in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pipelineSpec": {"pipelineInfo": {"name": "x"},
                                                "notAField": 1}}))
    assert main(["kubeflow", "submit", "--config", config_file, "--pipeline", str(bad)]) == 1
    assert f"{bad}: not a KFP PipelineJob" in capsys.readouterr().err
    assert (server.experiments, server.runs) == ({}, [])


@pytest.mark.slow
def test_compiled_yaml_package_reaches_kfp_as_pipeline_spec_and_platform_spec(yaml_package,
                                                                              server):
    """What `kfp` itself does with our .yaml (kfp.Client reads both documents)."""
    import kfp

    docs, _, out, _ = yaml_package
    kfp.Client(host=server.host).create_run_from_pipeline_package(
        pipeline_file=str(out), arguments={}, run_name="k8s", experiment_name="cgd",
        pipeline_root=MINIO_ROOT)
    [run] = server.runs
    assert set(run["pipeline_spec"]) == {"pipeline_spec", "platform_spec"}
    assert as_spec(run["pipeline_spec"]["pipeline_spec"]) == as_spec(docs[0])
    assert run["pipeline_spec"]["platform_spec"] == docs[1]


@pytest.mark.slow
def test_cgd_kubeflow_submit_sends_the_yaml_platform_spec_to_kfp(yaml_package, server, tmp_path):
    from cli.main import main

    docs, _, out, cfg = yaml_package
    config_file, _ = write_config(
        tmp_path, **dict(dataclasses.asdict(cfg.kubeflow), host=server.host))
    assert main(["kubeflow", "submit", "--config", config_file, "--pipeline", str(out)]) == 0
    [run] = server.runs
    assert as_spec(run["pipeline_spec"]["pipeline_spec"]) == as_spec(docs[0])
    assert run["pipeline_spec"]["platform_spec"] == docs[1]


@pytest.mark.slow
def test_cgd_kubeflow_submit_of_a_yaml_spec_runs_under_kubeflow_pipeline_root(
        yaml_package, server, tmp_path):
    from cli.main import main

    docs, _, _, cfg = yaml_package
    single = tmp_path / "spec-only.yaml"  # what compile writes without volumes/node selector
    single.write_text(yaml.safe_dump(docs[0]))
    config_file, _ = write_config(
        tmp_path, **dict(dataclasses.asdict(cfg.kubeflow), host=server.host))
    assert main(["kubeflow", "submit", "--config", config_file, "--pipeline", str(single)]) == 0
    [run] = server.runs
    assert run["runtime_config"].get("pipeline_root") == MINIO_ROOT


# ------------------------------------------------------------------ the old spec is refused

def compiled_the_old_way(job: dict, problem: str) -> dict:
    """Our PipelineJob with what TFX's default KubeflowV2DagRunner config (and our old
    latest_blessed_model_resolver) put in it: schema 2.0.0, or a resolver executor."""
    job = copy.deepcopy(job)
    spec = job["pipelineSpec"]
    if problem == "schema 2.0.0":
        spec["schemaVersion"] = "2.0.0"
    else:
        spec["deploymentSpec"]["executors"][f"{RESOLVER}_executor"] = {"resolver": {
            "outputArtifactQueries": {"model_blessing": {"filter": (
                'schema_title="tfx.ModelBlessing" AND state=LIVE AND '
                'metadata.blessed.number_value=1')}}}}
        spec["components"][RESOLVER] = {
            "executorLabel": f"{RESOLVER}_executor",
            "outputDefinitions": {"artifacts": {"model_blessing": {"artifactType": {
                "instanceSchema": "title: tfx.ModelBlessing\ntype: object\n"}}}}}
        spec["root"]["dag"]["tasks"][RESOLVER] = {
            "taskInfo": {"name": RESOLVER}, "componentRef": {"name": RESOLVER}}
    return job


@pytest.fixture(params=sorted(REFUSALS))
def old_spec(request, compiled, tmp_path):
    """(path of a spec compiled the old way, what is wrong with it)."""
    path = tmp_path / "old-pipeline.json"
    path.write_text(json.dumps(compiled_the_old_way(compiled[0], request.param)))
    return path, request.param


@pytest.mark.slow
def test_kfp_refuses_a_spec_compiled_the_old_way(old_spec, server, tmp_path):
    """The cluster's verdict on the old spec, sent as kfp itself would send it."""
    import kfp

    path, problem = old_spec
    package = tmp_path / "old.yaml"
    package.write_text(yaml.safe_dump(json.loads(path.read_text())["pipelineSpec"]))
    client = kfp.Client(host=server.host)
    with pytest.raises(kfp_server_api.ApiException) as run_refused:
        client.create_run_from_pipeline_package(
            pipeline_file=str(package), arguments={}, run_name="old", experiment_name="cgd",
            pipeline_root=ROOT)
    assert run_refused.value.status == 500
    with pytest.raises(kfp_server_api.ApiException):
        client.create_recurring_run(
            experiment_id=client.create_experiment(name="cgd").experiment_id,
            job_name="weekly-retrain", cron_expression="0 0 3 * * 0",
            pipeline_package_path=str(package), params={}, pipeline_root=ROOT)
    assert [path for path, _ in server.refusals] == [
        "/apis/v2beta1/runs", "/apis/v2beta1/recurringruns"]
    assert all(REFUSALS[problem] in message for _, message in server.refusals)
    assert server.runs == server.recurring_runs == []


@pytest.mark.slow
@pytest.mark.parametrize("action", [["submit"], ["schedule", "--cron", "0 3 * * 0"]])
def test_cgd_kubeflow_reports_the_refusal_of_an_old_spec_in_one_error_line(
        old_spec, server, tmp_path, capsys, action):
    from cli.main import main

    path, problem = old_spec
    config_file, _ = write_config(tmp_path, host=server.host)
    assert main(["kubeflow", *action, "--config", config_file, "--pipeline", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = error_lines(err)
    if problem == "schema 2.0.0":  # our own check, before anything is sent
        assert "2.0.0" in line and "2.1.0" in line
    else:
        assert f"{RESOLVER}_executor" in line and "importer" in line
    assert "cgd kubeflow compile" in line and str(path) in line
    assert server.runs == server.recurring_runs == server.refusals == []


@pytest.mark.slow
def test_a_kfp_api_refusal_is_one_line_with_kfps_reason(server):
    import kfp

    from kubeflow.client import _kfp_call
    from kubeflow.errors import KubeflowError

    client = kfp.Client(host=server.host)
    with pytest.raises(KubeflowError, match=r"refused to get the run \(HTTP 404\): .*no-such-run"):
        _kfp_call("get the run", lambda: client.get_run("no-such-run"))


# ------------------------------------------------------------------ failures to reach the API

CGD_MAIN = "import sys; from cli.main import main; sys.exit(main())"


class StatusServer:
    """127.0.0.1 stand-in for what may sit at a wrong --host: an auth proxy refusing (401,
    403: Istio's "RBAC: access denied" is text), a gateway without KFP at that path (404),
    or a TLS endpoint (``tls``: a certificate file pair, self-signed)."""

    def __init__(self, status: int = 404, body: bytes = b"", tls: tuple | None = None):
        import http.server
        import ssl
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.http.socket = context.wrap_socket(self.http.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.http.shutdown()
        self.http.server_close()


def self_signed_certificate(directory: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (so that only trust fails, not the name) and its key."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cgd_subprocess(tmp_path, *args: str):
    """`cgd` as a user runs it (its stderr whole, warnings and log records included), with no
    kfp context file and no credential from this machine."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KF_PIPELINES") and k not in ("PYTHONWARNINGS",)}
    env.update(HOME=str(tmp_path), TF_USE_LEGACY_KERAS="1",
               PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-c", CGD_MAIN, *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stderr.splitlines()


def test_a_malformed_pipeline_file_is_reported_before_any_connection(tmp_path, capsys):
    """The file is checked first: nothing listens at the host, and the error is the file's."""
    from cli.main import main

    host = f"http://127.0.0.1:{closed_port()}"
    config_file, _ = write_config(tmp_path, host=host)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pipelineSpec": {"pipelineInfo": {"name": "x"}, "notAField": 1}}))
    for action in (["submit"], ["schedule", "--cron", "0 3 * * 0"]):
        assert main(["kubeflow", *action, "--config", config_file, "--pipeline", str(bad)]) == 1
        [line] = error_lines(capsys.readouterr().err)
        assert f"{bad}: not a KFP PipelineJob" in line, line


CONNECTION_FAILURES = {
    # what is at the host -> the host to pass -> what the one line must say
    "nothing listens": "cannot connect to Kubeflow Pipelines at {host} (Connection refused): "
                       "check --host / 'kubeflow.host'",
    "https to plain HTTP": "TLS with Kubeflow Pipelines at {host} failed (",
    "self-signed TLS": "TLS with Kubeflow Pipelines at {host} failed (",
    "http to TLS": "Kubeflow Pipelines at {host} closed the connection without an HTTP answer",
    "401 auth proxy": "Kubeflow Pipelines at {host} refused to answer GET /apis/v2beta1/healthz "
                      "(HTTP 401): Unauthorized; the identity comes from KF_PIPELINES_SA_TOKEN_PATH",
    "403 auth proxy": "Kubeflow Pipelines at {host} refused to answer GET /apis/v2beta1/healthz "
                      "(HTTP 403): Forbidden; check the identity sent "
                      "(KF_PIPELINES_SA_TOKEN_PATH, KF_PIPELINES_TOKEN or KF_PIPELINES_COOKIE)",
    "404 wrong path": "no Kubeflow Pipelines API at {host} (HTTP 404 for GET "
                      "/apis/v2beta1/healthz): check the path in --host / 'kubeflow.host' "
                      "(behind the Kubeflow dashboard it ends in /pipeline",
}
HINTS = {"https to plain HTTP": "the server does not speak TLS there: use http://",
         "self-signed TLS": "its certificate is not trusted here (self-signed",
         "http to TLS": "if it speaks TLS, use https://",
         "403 auth proxy": "may use the namespace (--namespace / 'kubeflow.namespace'"}


@pytest.fixture
def unusable_host(request, server, tmp_path):
    """(host to pass, message) for CONNECTION_FAILURES[request.param]."""
    import contextlib

    case = request.param
    with contextlib.ExitStack() as stack:
        if case == "nothing listens":
            host = f"http://127.0.0.1:{closed_port()}"
        elif case == "https to plain HTTP":
            host = server.host.replace("http://", "https://")
        elif case in ("self-signed TLS", "http to TLS"):
            tls = stack.enter_context(StatusServer(200, tls=self_signed_certificate(tmp_path)))
            host = tls.url if case == "self-signed TLS" else tls.url.replace("https", "http")
        elif case == "404 wrong path":  # a gateway with KFP under /pipeline, host without it
            host = stack.enter_context(StatusServer(404, b"404 page not found")).url
        else:
            status = int(case[:3])
            body = b"Jwt is missing" if status == 401 else b"RBAC: access denied"
            host = stack.enter_context(StatusServer(status, body)).url
        yield host, CONNECTION_FAILURES[case].format(host=host)
    assert (server.experiments, server.runs, server.recurring_runs) == ({}, [], [])


@pytest.mark.slow
@pytest.mark.parametrize("unusable_host", sorted(CONNECTION_FAILURES), indirect=True)
def test_a_host_that_cannot_be_used_is_one_line_naming_it_and_what_to_check(
        compiled, unusable_host, tmp_path, request):
    host, message = unusable_host
    case = request.node.callspec.params["unusable_host"]
    _, out, _ = compiled
    config_file, _ = write_config(tmp_path)
    code, err = cgd_subprocess(tmp_path, "kubeflow", "submit", "--config", config_file,
                               "--pipeline", str(out), "--host", host)
    # No FutureWarning, no urllib3 "Retrying" warnings, no traceback: the error line alone.
    assert code == 1 and len(err) == 1, "\n".join(err)
    assert err[0].startswith(f"cgd kubeflow submit: error: {message}"), err[0]
    assert HINTS.get(case, "") in err[0], err[0]


@pytest.mark.slow
def test_schedule_reports_an_unreachable_host_in_one_line_too(compiled, tmp_path):
    _, out, _ = compiled
    host = f"http://127.0.0.1:{closed_port()}"
    config_file, _ = write_config(tmp_path, host=host)
    code, err = cgd_subprocess(tmp_path, "kubeflow", "schedule", "--config", config_file,
                               "--pipeline", str(out), "--cron", "0 3 * * 0")
    assert code == 1 and err == [
        f"cgd kubeflow schedule: error: cannot connect to Kubeflow Pipelines at {host} "
        "(Connection refused): check --host / 'kubeflow.host' (scheme, address, port) and that "
        "the KFP API server is reachable from here (e.g. through `kubectl port-forward`)"], err


@pytest.mark.slow
def test_a_connection_lost_after_healthz_is_one_line_too(server, compiled):
    """With a namespace and a credential kfp.Client asks nothing at first: the first call
    (creating the run) meets the closed server, and that too is one line naming the host."""
    from kubeflow.client import make_client, submit
    from kubeflow.errors import KubeflowError

    _, out, _ = compiled
    client, _ = make_client(server.host, "team-a")
    server.__exit__(None, None, None)
    with pytest.raises(KubeflowError, match=re.escape(
            f"cannot connect to Kubeflow Pipelines at {server.host} (Connection refused)")):
        submit(client, str(out), "cgd")


def test_kubeflow_without_action_prints_help(capsys):
    from cli.main import main
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
    # Only the lock's hashed files, with no resolver: the project itself adds nothing.
    assert project and all("--no-deps" in i for i in project)
    assert any("--require-hashes" in i and "requirements-gpu.lock" in i for i in installs)
    assert all("--no-deps" in i for i in installs)
    assert "COPY requirements-gpu.lock" in text


def test_dockerfile_fetches_the_imagenet_weights_into_the_keras_cache_at_build_time():
    from trainer.model import IMAGENET_NOTOP_FILE

    text = DOCKERFILE.read_text()
    assert "ENV KERAS_HOME=/opt/keras" in text
    assert "ResNet50(weights='imagenet', include_top=False)" in text
    assert f"/opt/keras/models/{IMAGENET_NOTOP_FILE}" in text


def test_dockerfile_copies_every_package_setup_py_installs():
    from setuptools import find_packages

    root = DOCKERFILE.parent.parent
    copied = set(re.findall(r"^COPY\s+(\w+)\s+\./\1$", DOCKERFILE.read_text(), re.M))
    top_level = {p.split(".")[0] for p in find_packages(
        str(root), include=["core*", "pipeline*", "components*", "trainer*", "serving*", "kubeflow*"])}
    assert top_level == copied
    assert "setup.py" in DOCKERFILE.read_text()
