"""The deploy files (serving/deploy) read with serving.deploy_config's TF Serving protos."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.serving import DEPLOY, MODEL


def test_deploy_text_protos_parse():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from serving.deploy_config import deploy_proto_classes, read_batching_parameters
    config = text_format.Parse((DEPLOY / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == MODEL and model.base_path == "/models/cgd"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 1

    classes = deploy_proto_classes()
    # The rebuilt messages carry TF Serving's field numbers.
    fields = {f.name: f.number for f in classes["BatchingParameters"].DESCRIPTOR.fields}
    assert fields["max_batch_size"] == 1 and fields["batch_timeout_micros"] == 2
    assert fields["max_enqueued_batches"] == 3 and fields["num_batch_threads"] == 4
    batching = text_format.Parse((DEPLOY / "batching_parameters.txt").read_text(),
                                 classes["BatchingParameters"]())
    assert batching.max_batch_size.value == 32 and batching.batch_timeout_micros.value == 5000
    assert batching.num_batch_threads.value >= 1
    assert read_batching_parameters(str(DEPLOY / "batching_parameters.txt")) == (32, 5.0)
    monitoring = text_format.Parse((DEPLOY / "monitoring.config").read_text(),
                                   classes["MonitoringConfig"]())
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"
    with pytest.raises(text_format.ParseError):  # a typo is caught
        text_format.Parse("prometheus_config { enabled: true }", classes["MonitoringConfig"]())


@pytest.mark.slow
def test_deploy_k8s_and_docker():
    import yaml
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from serving.deploy_config import deploy_proto_classes
    docs = list(yaml.safe_load_all((DEPLOY / "k8s.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"} <= set(kinds)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "tensorflow/serving:2.16.1"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 8500, "rest": 8501}
    probe = container["readinessProbe"]["httpGet"]
    assert probe == {"path": "/v1/models/cgd", "port": 8501}
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    args = container["args"]
    for flag in ("--model_config_file=/config/models.config", "--enable_batching=true",
                 "--batching_parameters_file=/config/batching_parameters.txt",
                 "--monitoring_config_file=/config/monitoring.config"):
        assert flag in args
    assert any(a.startswith("--model_config_file_poll_wait_seconds=") for a in args)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
    assert claim == kinds["PersistentVolumeClaim"]["metadata"]["name"] and mounts["models"] == "/models"
    assert volumes["config"]["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    assert mounts["config"] == "/config"
    service = kinds["Service"]["spec"]
    assert {p["name"]: p["port"] for p in service["ports"]} == {"grpc": 8500, "rest": 8501}
    assert service["selector"] == kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]

    # The ConfigMap says what the files next to it say.
    data = kinds["ConfigMap"]["data"]
    classes = deploy_proto_classes()
    for name, cls in (("models.config", model_server_config_pb2.ModelServerConfig),
                      ("batching_parameters.txt", classes["BatchingParameters"]),
                      ("monitoring.config", classes["MonitoringConfig"])):
        assert text_format.Parse(data[name], cls()) == text_format.Parse(
            (DEPLOY / name).read_text(), cls()), name

    script = (DEPLOY / "docker_run.sh").read_text()
    assert subprocess.run(["bash", "-n", str(DEPLOY / "docker_run.sh")]).returncode == 0
    assert os.access(DEPLOY / "docker_run.sh", os.X_OK)
    for part in ("docker run", "tensorflow/serving:2.16.1", "-p 8500:8500", "-p 8501:8501",
                 "target=/models/cgd", "--model_config_file=", "--enable_batching",
                 "--batching_parameters_file=", "--monitoring_config_file=",
                 "--model_config_file_poll_wait_seconds="):
        assert part in script, part
