"""The fake KFP API server, driven by the real kfp 2.5.0 client (127.0.0.1 only)."""
from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request

import kfp
import kfp_server_api
import pytest
import yaml

from tests.support.kfp_api_server import KfpApiServer, cron_error

ROOT = "gs://cgd-test-bucket/pipelines"
# The smallest spec KFP 2.0.5 runs: one task, one container executor, schema 2.1.0.
SPEC = {
    "pipelineInfo": {"name": "tiny-pipeline"},
    "schemaVersion": "2.1.0",
    "sdkVersion": "kfp-2.5.0",
    "root": {"dag": {"tasks": {"train": {"componentRef": {"name": "comp-train"},
                                          "taskInfo": {"name": "train"}}}}},
    "components": {"comp-train": {"executorLabel": "exec-train"}},
    "deploymentSpec": {"executors": {"exec-train": {"container": {
        "image": "python:3.10", "command": ["python", "-c", "print('trained')"]}}}},
}
SCHEMA_MESSAGE = "KFP only supports schema version 2.1.0, but the pipeline spec has version 2.0.0"
RESOLVER_MESSAGE = ('error processing component name="comp-latest-model": '
                    'executor(label="exec-latest-model"): non-container and non-importer '
                    'executor not implemented')


def with_resolver(spec: dict) -> dict:
    """SPEC plus a TFX-style resolver task (Vertex-only; KFP's Argo compiler refuses it)."""
    spec = copy.deepcopy(spec)
    spec["root"]["dag"]["tasks"]["latest-model"] = {
        "componentRef": {"name": "comp-latest-model"}, "taskInfo": {"name": "latest-model"}}
    spec["components"]["comp-latest-model"] = {"executorLabel": "exec-latest-model"}
    spec["deploymentSpec"]["executors"]["exec-latest-model"] = {"resolver": {
        "outputArtifactQueries": {"model": {"filter": 'schema_title="tfx.Model" AND state=LIVE'}}}}
    return spec


def write_package(tmp_path, spec: dict, *extra_docs: dict) -> str:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump_all([spec, *extra_docs], sort_keys=False))
    return str(path)


def refusal(error: pytest.ExceptionInfo) -> dict:
    """The grpc-gateway JSON body of a refused call."""
    return json.loads(error.value.body)


@pytest.fixture
def server():
    with KfpApiServer() as running:
        yield running


@pytest.fixture
def client(server):
    return kfp.Client(host=server.host)


@pytest.mark.slow
def test_experiments_are_created_once_and_found_by_name(server, client):
    first = client.create_experiment(name="cgd")
    again = client.create_experiment(name="cgd")  # looked up by name, not re-created
    assert first.experiment_id == again.experiment_id
    assert list(server.experiments) == [first.experiment_id]
    assert client.get_experiment(experiment_id=first.experiment_id).display_name == "cgd"
    assert client.get_experiment(experiment_name="cgd").experiment_id == first.experiment_id
    with pytest.raises(ValueError, match="No experiment is found with name other"):
        client.get_experiment(experiment_name="other")
    with pytest.raises(kfp_server_api.ApiException) as missing:
        client.get_experiment(experiment_id="nope")
    assert missing.value.status == 404
    assert refusal(missing)["message"] == (
        "Failed to fetch experiment: ResourceNotFoundError: Experiment nope not found")


@pytest.mark.slow
def test_run_from_package_is_accepted_and_recorded(tmp_path, server, client):
    result = client.create_run_from_pipeline_package(
        pipeline_file=write_package(tmp_path, SPEC), arguments={}, run_name="cgd-run",
        experiment_name="cgd", pipeline_root=ROOT)
    [run] = server.runs
    assert run["pipeline_spec"] == SPEC
    assert run["runtime_config"] == {"pipeline_root": ROOT, "parameters": {}}
    assert server.experiments[run["experiment_id"]]["display_name"] == "cgd"
    fetched = client.get_run(result.run_id)
    assert (fetched.display_name, fetched.state) == ("cgd-run", "PENDING")
    assert server.refusals == []


@pytest.mark.slow
def test_recurring_run_is_accepted_and_recorded(tmp_path, server, client):
    experiment = client.create_experiment(name="cgd")
    created = client.create_recurring_run(
        experiment_id=experiment.experiment_id, job_name="nightly",
        cron_expression="0 0 3 * * *", pipeline_package_path=write_package(tmp_path, SPEC),
        params={}, pipeline_root=ROOT, max_concurrency=1, no_catchup=True, enabled=True)
    [recurring] = server.recurring_runs
    assert recurring["pipeline_spec"] == SPEC
    assert recurring["runtime_config"]["pipeline_root"] == ROOT
    assert recurring["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert (recurring["max_concurrency"], recurring["no_catchup"], recurring["mode"]) == (
        "1", True, "ENABLE")
    fetched = client.get_recurring_run(created.recurring_run_id)
    assert (fetched.display_name, fetched.status, fetched.max_concurrency) == (
        "nightly", "ENABLED", "1")


@pytest.mark.slow
def test_platform_spec_document_is_accepted(tmp_path, server, client):
    kubernetes = {"platforms": {"kubernetes": {"deploymentSpec": {"executors": {
        "exec-train": {"nodeSelector": {"labels": {"accelerator": "nvidia-tesla-t4"}}}}}}}}
    client.create_run_from_pipeline_package(
        pipeline_file=write_package(tmp_path, SPEC, kubernetes), arguments={},
        run_name="k8s", experiment_name="cgd", pipeline_root=ROOT)
    [run] = server.runs  # kfp 2.5 wraps both documents in one Struct
    assert run["pipeline_spec"] == {"pipeline_spec": SPEC, "platform_spec": kubernetes}


@pytest.mark.slow
def test_schema_version_2_0_0_is_refused(tmp_path, server, client):
    package = write_package(tmp_path, dict(SPEC, schemaVersion="2.0.0"))
    with pytest.raises(kfp_server_api.ApiException) as run_refused:
        client.create_run_from_pipeline_package(
            pipeline_file=package, arguments={}, run_name="old", experiment_name="cgd",
            pipeline_root=ROOT)
    assert SCHEMA_MESSAGE in str(run_refused.value)
    assert run_refused.value.status == 500
    body = refusal(run_refused)
    assert body["code"] == 13 and body["error"] == body["message"]
    assert body["message"] == (
        "Failed to create a new run: InternalServerError: Failed to create a run due to error "
        "fetching manifest: Failed to fetch a template with an invalid pipeline spec manifest: "
        f"InvalidInputError: {SCHEMA_MESSAGE}: pipeline spec is invalid")
    assert body["details"] == [{"@type": "type.googleapis.com/google.rpc.Status", "code": 13,
                                "message": "Internal Server Error"}]
    experiment_id = next(iter(server.experiments))
    with pytest.raises(kfp_server_api.ApiException) as recurring_refused:
        client.create_recurring_run(
            experiment_id=experiment_id, job_name="old", cron_expression="0 0 3 * * *",
            pipeline_package_path=package, params={}, pipeline_root=ROOT)
    assert SCHEMA_MESSAGE in refusal(recurring_refused)["message"]
    assert (server.runs, server.recurring_runs, len(server.refusals)) == ([], [], 2)


@pytest.mark.slow
def test_resolver_executor_is_refused_by_the_compiler(tmp_path, server, client):
    package = write_package(tmp_path, with_resolver(SPEC))
    with pytest.raises(kfp_server_api.ApiException) as run_refused:
        client.create_run_from_pipeline_package(
            pipeline_file=package, arguments={}, run_name="tfx", experiment_name="cgd",
            pipeline_root=ROOT)
    body = refusal(run_refused)
    assert (run_refused.value.status, body["code"]) == (500, 13)
    assert body["message"] == (f"Internal error: {RESOLVER_MESSAGE}\nFailed to compile job\n"
                               "Failed to generate the ExecutionSpec\nFailed to create a new run")
    with pytest.raises(kfp_server_api.ApiException) as recurring_refused:
        client.create_recurring_run(
            experiment_id=next(iter(server.experiments)), job_name="tfx",
            cron_expression="@daily", pipeline_package_path=package, pipeline_root=ROOT)
    assert RESOLVER_MESSAGE in refusal(recurring_refused)["message"]
    assert server.runs == server.recurring_runs == []


@pytest.mark.slow
def test_spec_that_does_not_parse_strictly_is_refused(server):
    # kfp.Client parses packages strictly itself, so post the body directly.
    body = {"display_name": "bad", "pipeline_spec": dict(SPEC, notAField=1),
            "experiment_id": "", "runtime_config": {}}
    request = urllib.request.Request(f"{server.host}/apis/v2beta1/runs", method="POST",
                                     data=json.dumps(body).encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 500
    assert "InvalidInputError: unknown template format: pipeline spec is invalid" in (
        json.loads(refused.value.read())["message"])


@pytest.mark.slow
def test_job_inputs_and_schedule_fields_are_checked(tmp_path, server, client):
    package = write_package(tmp_path, SPEC)
    with pytest.raises(kfp_server_api.ApiException) as extra:
        client.create_run_from_pipeline_package(
            pipeline_file=package, arguments={"epochs": 3}, run_name="x", experiment_name="cgd")
    assert (extra.value.status, refusal(extra)["details"][0]["message"]) == (
        400, "parameter(s) provided are not required by pipeline: epochs")
    experiment_id = next(iter(server.experiments))
    schedule = dict(experiment_id=experiment_id, job_name="x", pipeline_package_path=package)
    with pytest.raises(kfp_server_api.ApiException) as bad_cron:
        client.create_recurring_run(cron_expression="0 3 * *", **schedule)
    assert refusal(bad_cron)["message"] == (
        "Failed to create a recurring run due to conversion error: Invalid input error: Schedule "
        "cron is not a supported format(https://godoc.org/github.com/robfig/cron). Error: "
        "Expected 5 to 6 fields, found 4: 0 3 * *")
    with pytest.raises(kfp_server_api.ApiException) as too_many:
        client.create_recurring_run(cron_expression="@hourly", max_concurrency=11, **schedule)
    assert (too_many.value.status, refusal(too_many)["details"][0]["message"]) == (
        400, "Max concurrency of a recurring run must be at leas 1 and at most 10. Received 11")
    with pytest.raises(kfp_server_api.ApiException) as no_experiment:
        client.create_recurring_run(cron_expression="@hourly",
                                    **dict(schedule, experiment_id="gone"))
    assert no_experiment.value.status == 404
    assert server.recurring_runs == []


@pytest.mark.parametrize("cron, error", [
    ("0 0 3 * * *", None), ("0 0 3 * * mon-fri", None), ("*/5 * * * *", None),  # 5: no weekday
    ("@daily", None), ("@every 1h30m", None), ("0 0 3 ? * 2-6", None),
    ("0 3 * * ? * *", "Expected 5 to 6 fields, found 7: 0 3 * * ? * *"),
    ("0 0 25 * * *", "End of range (25) above maximum (23): 25"),
    ("0 0 x * * *", 'Failed to parse int from x: strconv.Atoi: parsing "x": invalid syntax'),
    ("@often", "Unrecognized descriptor: @often"),
])
def test_cron_grammar_matches_robfig_cron_v1(cron, error):
    assert cron_error(cron) == error


@pytest.mark.slow
def test_malformed_field_is_a_400_not_a_dropped_connection(server):
    request = urllib.request.Request(
        f"{server.host}/apis/v2beta1/recurringruns", method="POST",
        data=json.dumps({"display_name": "x", "max_concurrency": "many"}).encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["code"] == 3


@pytest.mark.slow
def test_unknown_path_is_404(server):
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{server.host}/apis/v2beta1/pipelines", timeout=5)
    assert missing.value.code == 404
    assert json.loads(missing.value.read())["code"] == 5
