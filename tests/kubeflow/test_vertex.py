"""Vertex AI Pipelines: `cgd kubeflow submit|schedule` with `kubeflow.target: vertex` go
through the real google-cloud-aiplatform SDK (REST transport) to the local stand-in of
Vertex's API (tests/support/vertex_api_server.py); no network but 127.0.0.1.

How the SDK is kept off the network: CGD_VERTEX_API_ENDPOINT points it at the stand-in;
Application Default Credentials (google.auth.default) resolve to AnonymousCredentials
instead of reading this machine's gcloud files or asking a metadata server; the pipeline
root's bucket check that PipelineJob.submit makes on Cloud Storage and Resource Manager
is replaced by a recorder; and any socket to an address other than 127.0.0.1, or any
name lookup other than localhost, fails and is recorded (the test then fails).
"""

from __future__ import annotations

import json
import logging
import socket

import pytest

from tests.kubeflow.test_compiler_and_client import DRIVER, IMAGE, TASKS, as_spec, error_lines, write_config
from tests.support.vertex_api_server import VertexApiServer, cron_error

ROOT = "gs://cgd-test-bucket/vertex"
PROJECT, LOCATION = "cgd-test-project", "europe-west4"
ACCOUNT = f"pipelines@{PROJECT}.iam.gserviceaccount.com"
OTHER_ACCOUNT = f"retrain@{PROJECT}.iam.gserviceaccount.com"
VERTEX = {"target": "vertex", "pipeline_root": ROOT, "gpus": 1,
          "vertex_accelerator": "NVIDIA_TESLA_T4", "vertex_project": PROJECT,
          "vertex_location": LOCATION, "vertex_service_account": ACCOUNT}
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """`cgd kubeflow compile` of a vertex-target pipeline to .json, once."""
    from cli.main import main

    tmp = tmp_path_factory.mktemp("vertex")
    config_file, cfg = write_config(tmp, **VERTEX)
    out = tmp / "out" / "pipeline.json"
    assert main(["kubeflow", "compile", "--config", config_file, "--image", IMAGE,
                 "--output", str(out)]) == 0
    return json.loads(out.read_text()), out, cfg


@pytest.fixture
def offline(monkeypatch):
    """No network but 127.0.0.1; the list of what was refused."""
    attempts = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] != "127.0.0.1":
            attempts.append(address)
            raise OSError(f"test: no network ({address})")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            attempts.append(host)
            raise socket.gaierror(f"test: no name lookups ({host})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    assert attempts == []


@pytest.fixture
def vertex(offline, monkeypatch):
    """The stand-in, with the SDK pointed at it; `.buckets` records the bucket checks."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.aiplatform import initializer
    from google.cloud.aiplatform.utils import gcs_utils

    from kubeflow.vertex import API_ENDPOINT_ENV

    with VertexApiServer({PROJECT}, {ACCOUNT, OTHER_ACCOUNT}) as server:
        server.buckets = []
        monkeypatch.setenv(API_ENDPOINT_ENV, server.endpoint)
        monkeypatch.setattr(google.auth, "default",
                            lambda *args, **kwargs: (AnonymousCredentials(), None))
        monkeypatch.setattr(gcs_utils,
                            "create_gcs_bucket_for_pipeline_artifacts_if_it_does_not_exist",
                            lambda **kwargs: server.buckets.append(kwargs))
        yield server
        initializer.global_config.__init__()  # aiplatform.init's state is process-wide


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.INFO, logger="cgd")
    return caplog


def config(tmp_path, **kubeflow) -> str:
    return write_config(tmp_path, **dict(VERTEX, **kubeflow))[0]


def caching(spec: dict) -> dict:
    return {name: task.get("cachingOptions", {}).get("enableCache", False)
            for name, task in spec["root"]["dag"]["tasks"].items()}


def test_the_compiled_vertex_file_names_the_trainer_gpu_as_vertex_does(compiled):
    job, _, _ = compiled
    trainer = job["pipelineSpec"]["deploymentSpec"]["executors"]["Trainer_executor"]
    assert trainer["container"]["resources"]["accelerator"] == {
        "type": "NVIDIA_TESLA_T4", "count": "1"}
    assert job["runtimeConfig"]["gcsOutputDirectory"] == ROOT


# ------------------------------------------------------------------ submit

@pytest.mark.slow
def test_submit_creates_the_pipeline_job_as_compiled_in_the_configured_project(
        compiled, vertex, tmp_path, log):
    from cli.main import main

    job, out, _ = compiled
    assert main(["kubeflow", "submit", "--config", config(tmp_path), "--pipeline", str(out),
                 "--run-name", "nightly"]) == 0
    assert vertex.refusals == []
    [created] = vertex.pipeline_jobs
    assert created["name"].startswith(f"{PARENT}/pipelineJobs/cgd-test-")
    assert created["displayName"] == "nightly"
    assert created["runtimeConfig"] == {"gcsOutputDirectory": ROOT}
    assert created["serviceAccount"] == ACCOUNT
    assert as_spec(created["pipelineSpec"]) == as_spec(job["pipelineSpec"])
    # Caching as compiled: the span driver and the evaluator are never served from the cache.
    assert caching(created["pipelineSpec"]) == {
        name: name not in (DRIVER, "RecallEvaluator") for name in TASKS}
    assert [(method, path) for method, path, _ in vertex.requests] == [
        ("POST", f"/v1/{PARENT}/pipelineJobs")]
    assert [b["output_artifacts_gcs_dir"] for b in vertex.buckets] == [ROOT]
    assert f"submitted to Vertex AI Pipelines as {created['name']}" in log.text


@pytest.mark.slow
def test_submit_flags_win_over_the_config_and_the_run_name_defaults(compiled, vertex,
                                                                     tmp_path):
    from cli.main import main

    _, out, _ = compiled
    other = "cgd-other-project"
    vertex.projects.add(other)
    assert main(["kubeflow", "submit", "--config", config(tmp_path), "--pipeline", str(out),
                 "--project", other, "--location", "us-east1",
                 "--service-account", OTHER_ACCOUNT]) == 0
    [created] = vertex.pipeline_jobs
    assert created["name"].startswith(f"projects/{other}/locations/us-east1/pipelineJobs/")
    assert created["serviceAccount"] == OTHER_ACCOUNT
    assert created["displayName"].startswith("cgd-test ")  # pipeline name and UTC time


@pytest.mark.slow
def test_submit_without_a_service_account_leaves_it_to_vertex(compiled, vertex, tmp_path):
    from cli.main import main

    _, out, _ = compiled
    assert main(["kubeflow", "submit", "--config", config(tmp_path, vertex_service_account=""),
                 "--pipeline", str(out)]) == 0
    [created] = vertex.pipeline_jobs
    assert "serviceAccount" not in created


# ------------------------------------------------------------------ schedule

@pytest.mark.slow
def test_schedule_creates_a_vertex_schedule_one_run_at_a_time(compiled, vertex, tmp_path,
                                                               log):
    from cli.main import main

    job, out, _ = compiled
    assert main(["kubeflow", "schedule", "--config", config(tmp_path), "--pipeline", str(out),
                 "--cron", "TZ=Europe/Berlin 0 3 * * 0", "--job-name", "weekly-retrain"]) == 0
    assert vertex.refusals == [] and vertex.pipeline_jobs == []  # no run now
    [schedule] = vertex.schedules
    assert schedule["cron"] == "TZ=Europe/Berlin 0 3 * * 0"
    assert schedule["displayName"] == "weekly-retrain"
    assert schedule["maxConcurrentRunCount"] == "1"
    assert not schedule.get("allowQueueing")  # a run due while one runs is skipped
    request = schedule["createPipelineJobRequest"]
    assert request["parent"] == PARENT
    assert request["pipelineJob"]["serviceAccount"] == ACCOUNT
    assert request["pipelineJob"]["runtimeConfig"] == {"gcsOutputDirectory": ROOT}
    assert as_spec(request["pipelineJob"]["pipelineSpec"]) == as_spec(job["pipelineSpec"])
    assert vertex.buckets == []  # only submit() checks the bucket
    assert schedule["name"] in log.text


@pytest.mark.slow
def test_schedule_defaults_to_the_config_cron_and_job_name_and_takes_kfps_form(
        compiled, vertex, tmp_path):
    from cli.main import main

    _, out, cfg = compiled
    for cron in ("30 1 * * 1-5", "0 30 1 ? * 1-5"):  # KFP's 6 fields, seconds 0: converted
        assert main(["kubeflow", "schedule", "--config", config(tmp_path, schedule_cron=cron),
                     "--pipeline", str(out)]) == 0
    assert [s["cron"] for s in vertex.schedules] == ["30 1 * * 1-5"] * 2
    assert {s["displayName"] for s in vertex.schedules} == {f"{cfg.pipeline.name}-retrain"}


# ------------------------------------------------------------------ cron

@pytest.mark.parametrize("cron, expected", [
    ("0 3 * * 0", "0 3 * * 0"),
    ("  30   2 1,15 * MON-FRI ", "30 2 1,15 * MON-FRI"),
    ("*/15 * * * *", "*/15 * * * *"),
    ("0 4 * jan-mar 6", "0 4 * jan-mar 6"),
    ("TZ=America/New_York 0 3 * * 0", "TZ=America/New_York 0 3 * * 0"),
    ("CRON_TZ=Europe/Berlin  0 3 * * *", "CRON_TZ=Europe/Berlin 0 3 * * *"),
    ("0 0 3 * * 0", "0 3 * * 0"),               # KFP's 6 fields with seconds 0
    ("0 0 3 ? * SUN", "0 3 * * SUN"),           # robfig's '?' is '*'
    ("TZ=Asia/Tokyo 0 0 3 * * 0", "TZ=Asia/Tokyo 0 3 * * 0"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("TZ=Europe/Paris @hourly", "TZ=Europe/Paris 0 * * * *"),
])
def test_cron_to_vertex(cron, expected):
    from kubeflow.vertex import to_vertex_cron

    assert to_vertex_cron(cron) == expected
    assert cron_error(expected) is None  # and the stand-in (Vertex's grammar) takes it


@pytest.mark.parametrize("cron, message", [
    ("0 3 * *", "expected 5 fields"),
    ("", "expected 5 fields"),
    ("0 0 0 3 * * 0", "got 7"),
    ("30 0 3 * * 0", "minute resolution"),
    ("TZ=Mars/Olympus 0 3 * * 0", "not an IANA time zone"),
    ("0 24 * * 0", "out of range"),
    ("0 3 0 * *", "out of range"),
    ("0 3 * 13 *", "out of range"),
    ("0 3 * * FUNDAY", "not unix-cron"),
    ("0 3 * * SUN-FUN", "not unix-cron"),
    ("0 3 * MON *", "not unix-cron"),
    ("*/0 3 * * *", "step '0'"),
    ("? 3 * * *", "not unix-cron"),
    ("0 3 L * *", "not unix-cron"),
    ("0 3 * * 5#2", "not unix-cron"),
    ("@every 1h", "expected 5 fields"),
])
def test_bad_cron_is_refused_naming_the_expression(cron, message):
    from kubeflow.errors import KubeflowError
    from kubeflow.vertex import to_vertex_cron

    with pytest.raises(KubeflowError, match=message.replace("?", r"\?")) as refused:
        to_vertex_cron(cron)
    assert repr(cron) in str(refused.value)


# ------------------------------------------------------------------ refusals before any call

def rewritten(compiled, tmp_path, change, suffix=".json"):
    """A copy of the compiled PipelineJob with `change(job)` applied."""
    job = json.loads(json.dumps(compiled[0]))
    change(job)
    path = tmp_path / f"changed{suffix}"
    path.write_text(json.dumps(job))
    return path


def kfp_accelerator(job):
    job["pipelineSpec"]["deploymentSpec"]["executors"]["Trainer_executor"]["container"][
        "resources"]["accelerator"]["type"] = "nvidia.com/gpu"


@pytest.mark.slow
@pytest.mark.parametrize("argv, kubeflow, change, messages", [
    (["submit"], {"vertex_project": ""}, None, ["--project", "kubeflow.vertex_project"]),
    (["schedule", "--cron", "0 3 * * 0"], {"vertex_project": ""}, None,
     ["--project", "kubeflow.vertex_project"]),
    (["submit", "--project", "Not_A_Project"], {}, None, ["--project", "'Not_A_Project'"]),
    (["submit", "--location", "mars-north1"], {}, None,
     ["--location", "kubeflow.vertex_location", "not a Vertex AI region"]),
    (["submit", "--service-account", "pipelines"], {}, None,
     ["--service-account", "kubeflow.vertex_service_account"]),
    (["submit"], {}, lambda job: job["runtimeConfig"].update(gcsOutputDirectory="s3://b/r"),
     ["FILE", "'s3://b/r'", "gs://", "kubeflow.pipeline_root"]),
    (["submit"], {}, kfp_accelerator, ["FILE", "'nvidia.com/gpu'", "kubeflow.target: vertex"]),
    (["submit"], {}, ".yaml", ["FILE", ".json"]),
    (["schedule", "--cron", "0 3 * * 8"], {}, None, ["'0 3 * * 8'", "out of range"]),
    (["schedule", "--cron", "15 0 3 * * 0"], {}, None, ["minute resolution"]),
])
def test_submit_and_schedule_errors_come_before_any_call_to_vertex(
        compiled, vertex, tmp_path, capsys, argv, kubeflow, change, messages):
    import yaml

    from cli.main import main

    _, out, _ = compiled
    if change == ".yaml":
        out = tmp_path / "pipeline.yaml"
        out.write_text(yaml.safe_dump(compiled[0]["pipelineSpec"]))
    elif change:
        out = rewritten(compiled, tmp_path, change)
    assert main(["kubeflow", argv[0], "--config", config(tmp_path, **kubeflow),
                 "--pipeline", str(out), *argv[1:]]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = error_lines(err)
    for message in messages:
        assert message.replace("FILE", str(out)) in line
    assert vertex.requests == [] and vertex.buckets == []


@pytest.mark.slow
def test_a_missing_pipeline_file_is_named(vertex, tmp_path, capsys):
    from cli.main import main

    missing = tmp_path / "nope.json"
    assert main(["kubeflow", "submit", "--config", config(tmp_path), "--pipeline",
                 str(missing)]) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert str(missing) in line and "cgd kubeflow compile" in line
    assert vertex.requests == []


@pytest.mark.slow
def test_a_kfp_only_flag_is_ignored_with_a_warning(compiled, vertex, tmp_path, log):
    from cli.main import main

    _, out, _ = compiled
    assert main(["kubeflow", "submit", "--config", config(tmp_path), "--pipeline", str(out),
                 "--host", "http://127.0.0.1:9"]) == 0
    assert "--host not used with kubeflow.target: vertex" in log.text
    assert len(vertex.pipeline_jobs) == 1


# ------------------------------------------------------------------ Vertex's refusals

@pytest.mark.slow
@pytest.mark.parametrize("argv, message", [
    (["submit", "--service-account", f"nobody@{PROJECT}.iam.gserviceaccount.com"],
     "refused to create the pipeline job (HTTP 400): Service account nobody@"),
    (["schedule", "--cron", "0 3 * * 0", "--service-account", f"nobody@{PROJECT}.iam."
      "gserviceaccount.com"], "refused to create the schedule (HTTP 400): Service account"),
    (["submit", "--project", "someone-elses-project"],
     "refused to create the pipeline job (HTTP 403): Permission denied on resource "
     "'//aiplatform.googleapis.com/projects/someone-elses-project/locations/europe-west4'"),
])
def test_a_vertex_refusal_is_one_error_line_with_its_reason(compiled, vertex, tmp_path, capsys,
                                                            argv, message):
    from cli.main import main

    _, out, _ = compiled
    assert main(["kubeflow", argv[0], "--config", config(tmp_path), "--pipeline", str(out),
                 *argv[1:]]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = error_lines(err)
    assert message in line
    assert "http://127.0.0.1" not in line  # api_core's "POST URL: " prefix is dropped
    assert vertex.pipeline_jobs == vertex.schedules == [] and len(vertex.refusals) == 1


def sdk_job(template, root=ROOT):
    from google.cloud import aiplatform

    return aiplatform.PipelineJob(display_name="direct", template_path=str(template),
                                  job_id="direct-run", pipeline_root=root, project=PROJECT,
                                  location=LOCATION)


@pytest.fixture
def sdk(vertex):
    """The SDK pointed at the stand-in, as kubeflow/vertex.py points it."""
    from google.cloud import aiplatform

    aiplatform.init(project=PROJECT, location=LOCATION, api_endpoint=vertex.endpoint,
                    api_transport="rest")
    return vertex


@pytest.mark.slow
@pytest.mark.parametrize("what, message", [
    ("s3 root", "gcs_output_directory must be a Cloud Storage path"),
    ("no pipeline name", "must have schemaVersion, pipelineInfo.name and root"),
    ("unknown field", "not a valid PipelineSpec"),
    ("kfp accelerator", "accelerator type 'nvidia.com/gpu' is not supported"),
    ("bad service account", "is not an email address"),
    ("six-field cron", "expected 5 fields, got 6"),
    ("quartz cron", "day of month 'L' is out of range 1-31"),
    ("bad zone", "unknown time zone 'Mars/Olympus'"),
])
def test_the_stand_in_refuses_what_vertex_refuses_sent_by_the_sdk_itself(
        compiled, sdk, tmp_path, what, message):
    from google.api_core import exceptions

    change = {"no pipeline name": lambda job: job["pipelineSpec"]["pipelineInfo"].update(
                  name=""),
              "unknown field": lambda job: job["pipelineSpec"].update(notAField=1),
              "kfp accelerator": kfp_accelerator}.get(what, lambda job: None)
    job = sdk_job(rewritten(compiled, tmp_path, change),
                  root="s3://b/r" if what == "s3 root" else ROOT)
    with pytest.raises(exceptions.BadRequest, match=message):
        if what.endswith("cron") or what == "bad zone":
            cron = {"six-field cron": "0 0 3 * * 0", "quartz cron": "0 3 L * *",
                    "bad zone": "TZ=Mars/Olympus 0 3 * * *"}[what]
            job.create_schedule(cron=cron, display_name="direct")
        else:
            job.submit(service_account="not-an-email" if what == "bad service account"
                       else None)
    assert sdk.pipeline_jobs == sdk.schedules == []


@pytest.mark.slow
def test_the_stand_in_answers_get_for_what_it_created(compiled, sdk):
    from google.cloud import aiplatform

    job = sdk_job(compiled[1])
    job.submit()
    fetched = aiplatform.PipelineJob.get(job.resource_name, project=PROJECT, location=LOCATION)
    assert fetched.display_name == "direct"
    assert fetched.state.name == "PIPELINE_STATE_PENDING"
    schedule = job.create_schedule(cron="0 3 * * 0", display_name="weekly")
    assert aiplatform.PipelineJobSchedule.get(schedule.resource_name).cron == "0 3 * * 0"


# ------------------------------------------------------------------ config and endpoint

@pytest.mark.parametrize("kubeflow, key", [
    ({"vertex_location": "US Central"}, "kubeflow.vertex_location"),
    ({"vertex_location": ""}, "kubeflow.vertex_location"),
    ({"vertex_project": "My_Project"}, "kubeflow.vertex_project"),
    ({"vertex_service_account": "pipelines"}, "kubeflow.vertex_service_account"),
])
def test_config_validation_names_the_bad_vertex_key(tmp_path, kubeflow, key):
    from core.errors import ConfigError
    from tests.conftest import small_config

    with pytest.raises(ConfigError, match=key):
        small_config(tmp_path, tmp_path, kubeflow=dict(VERTEX, **kubeflow))


def test_the_sdk_default_endpoint_unless_cgd_vertex_api_endpoint_is_set(tmp_path):
    from kubeflow.vertex import API_ENDPOINT_ENV, vertex_target
    from tests.conftest import small_config

    k = small_config(tmp_path, tmp_path, kubeflow=VERTEX).kubeflow
    assert vertex_target(k, environ={}) == vertex_target(k, environ={}).__class__(
        PROJECT, LOCATION, ACCOUNT, "")
    assert vertex_target(k, environ={API_ENDPOINT_ENV: "10.0.0.8:443"}).api_endpoint == \
        "10.0.0.8:443"


def test_the_network_guard_refuses_anything_but_loopback(offline):
    with pytest.raises(OSError):
        socket.create_connection(("storage.googleapis.com", 443), timeout=1)
    assert offline == ["storage.googleapis.com"]
    offline.clear()
