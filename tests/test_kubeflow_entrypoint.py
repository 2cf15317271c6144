"""Our container entrypoint and span driver, one function at a time (no cluster, no subprocess)."""
from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

EXAMPLES_SCHEMA = "title: tfx.Examples\ntype: object\n"


def executor_input(doc: dict) -> pipeline_spec_pb2.ExecutorInput:
    return json_format.ParseDict(doc, pipeline_spec_pb2.ExecutorInput())


def inputs_spec(doc: dict) -> pipeline_spec_pb2.ComponentInputsSpec:
    return json_format.ParseDict(doc, pipeline_spec_pb2.ComponentInputsSpec())


# ------------------------------------------------------------------ storage

@pytest.mark.parametrize("uri, local", [
    ("minio://mlpipeline/v2/artifacts/p/r/T/out", "/root/minio/mlpipeline/v2/artifacts/p/r/T/out"),
    ("s3://bucket/a/b", "/root/s3/bucket/a/b"),
    ("gs://bucket/a", "/root/gcs/bucket/a"),
])
def test_launcher_local_paths_are_kfps(uri, local):
    from kubeflow import storage
    assert storage.launcher_local_path(uri, "/root") == local


def test_only_stores_gfile_cannot_open_are_mapped_and_the_mapping_inverts():
    from kubeflow import storage
    assert storage.to_executor_uri("gs://b/x", "/pod") == "gs://b/x"
    for uri in ("minio://mlpipeline/v2/x", "s3://b/y/z"):
        local = storage.to_executor_uri(uri, "/pod")
        assert local.startswith("/pod/") and storage.to_store_uri(local, "/pod") == uri
    assert storage.to_store_uri("/elsewhere/file", "/pod") == "/elsewhere/file"
    with pytest.raises(ValueError, match="file:///x"):
        storage.launcher_local_path("file:///x", "/pod")


# ------------------------------------------------------------------ entrypoint

def test_untyped_input_artifacts_get_the_type_their_input_definition_declares():
    from kubeflow.entrypoint import restore_input_types

    ei = executor_input({"inputs": {"artifacts": {"examples": {"artifacts": [
        {"name": "12", "type": {"instanceSchema": ""}, "uri": "minio://b/e"}]}}}})
    restore_input_types(ei, inputs_spec({"artifacts": {"examples": {
        "artifactType": {"instanceSchema": EXAMPLES_SCHEMA}}}}))
    assert ei.inputs.artifacts["examples"].artifacts[0].type.instance_schema == EXAMPLES_SCHEMA


def test_a_typed_input_artifact_is_left_alone_and_an_undeclared_one_is_named():
    from kubeflow.entrypoint import EntrypointError, restore_input_types

    typed = executor_input({"inputs": {"artifacts": {"model": {"artifacts": [
        {"type": {"schemaTitle": "tfx.Model"}, "uri": "gs://b/m"}]}}}})
    restore_input_types(typed, None)
    assert typed.inputs.artifacts["model"].artifacts[0].type.schema_title == "tfx.Model"
    untyped = executor_input({"inputs": {"artifacts": {"model": {"artifacts": [
        {"type": {"instanceSchema": ""}, "uri": "gs://b/m"}]}}}})
    with pytest.raises(EntrypointError, match="input artifact 'model' \\(gs://b/m\\)"):
        restore_input_types(untyped, inputs_spec({"artifacts": {}}))


def test_tfx_parses_the_restored_artifact_but_not_the_one_kfp_sends():
    """What KFP sends crashes TFX's own parser; after restore_input_types it parses."""
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as tfx_utils

    from kubeflow.entrypoint import restore_input_types

    doc = {"inputs": {"artifacts": {"examples": {"artifacts": [
        {"name": "7", "type": {"instanceSchema": ""}, "uri": "minio://b/e",
         "metadata": {"span": 3.0, "split_names": '["train","eval"]'}}]}}}}
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'get'"):
        tfx_utils.parse_raw_artifact_dict(executor_input(doc).inputs.artifacts)
    ei = executor_input(doc)
    restore_input_types(ei, inputs_spec({"artifacts": {"examples": {
        "artifactType": {"instanceSchema": EXAMPLES_SCHEMA}}}}))
    [examples] = tfx_utils.parse_raw_artifact_dict(ei.inputs.artifacts)["examples"]
    assert examples.type_name == "Examples" and examples.span == 3
    assert examples.split_names == '["train","eval"]'


def test_artifact_uris_map_to_local_copies_and_the_output_file_gets_store_uris(tmp_path,
                                                                              monkeypatch):
    from kubeflow import entrypoint, storage

    monkeypatch.setenv(storage.LOCAL_ROOT_ENV, str(tmp_path))
    ei = executor_input({
        "inputs": {"artifacts": {"examples": {"artifacts": [{"uri": "minio://b/run/Gen/ex"}]}}},
        "outputs": {"artifacts": {"model": {"artifacts": [{"uri": "minio://b/run/T/model"}]}},
                    "outputFile": str(tmp_path / "output_metadata.json")}})
    entrypoint.map_artifact_uris(ei)
    model_local = ei.outputs.artifacts["model"].artifacts[0].uri
    assert ei.inputs.artifacts["examples"].artifacts[0].uri == str(tmp_path / "minio/b/run/Gen/ex")
    assert model_local == str(tmp_path / "minio/b/run/T/model")

    output = pipeline_spec_pb2.ExecutorOutput()
    output.artifacts["model"].artifacts.add(uri=model_local)
    (tmp_path / "output_metadata.json").write_text(json_format.MessageToJson(output))
    entrypoint.restore_store_uris(str(tmp_path / "output_metadata.json"))
    written = json.loads((tmp_path / "output_metadata.json").read_text())
    assert written["artifacts"]["model"]["artifacts"][0]["uri"] == "minio://b/run/T/model"


def test_span_parameters_are_recorded_on_the_examples_output_only():
    from kubeflow.entrypoint import record_span

    ei = executor_input({
        "inputs": {"parameterValues": {"span": 4, "input_fingerprint": "fp", "input_base": "/d"}},
        "outputs": {"artifacts": {"examples": {"artifacts": [{"uri": "minio://b/e"}]}}}})
    record_span(ei)
    metadata = json_format.MessageToDict(ei.outputs.artifacts["examples"].artifacts[0].metadata)
    assert metadata == {"span": 4, "input_fingerprint": "fp"}


# ------------------------------------------------------------------ span driver

def test_span_driver_picks_the_newest_span_and_fingerprints_its_files(tmp_path):
    from tfx.proto import example_gen_pb2
    from tfx.utils import proto_utils

    from kubeflow.span_driver import resolve

    for span, size in ((1, 10), (2, 20), (10, 30)):
        (tmp_path / f"span-{span}").mkdir()
        (tmp_path / f"span-{span}" / "a.tgz").write_bytes(b"x" * size)
    config = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(
        name="cars196", pattern="span-{SPAN}/*")])
    resolved = resolve({"input_base": str(tmp_path),
                        "input_config": proto_utils.proto_to_json(config)})
    assert resolved["span"] == 10 and "version" not in resolved
    assert "span-10/*" in resolved["input_config"]
    assert "total_bytes:30" in resolved["input_fingerprint"]
    (tmp_path / "span-10" / "a.tgz").write_bytes(b"y" * 31)  # a changed delivery
    again = resolve({"input_base": str(tmp_path),
                     "input_config": proto_utils.proto_to_json(config)})
    assert again["span"] == 10 and again["input_fingerprint"] != resolved["input_fingerprint"]


# ------------------------------------------------------------------ emulator fidelity

def test_emulated_cache_key_follows_inputs_not_output_uris():
    from tests.kfp_emulator import KfpEmulator

    container = {"image": "img", "command": ["python"], "args": ["{{$}}"]}
    component = {"outputDefinitions": {"parameters": {"n": {"parameterType": "STRING"}}}}

    def key(span, run):
        ei = {"inputs": {"parameterValues": {"span": span}, "artifacts": {}},
              "outputs": {"artifacts": {"x": {"artifacts": [
                  {"type": {"schemaTitle": "t"}, "uri": f"minio://b/{run}/x"}]}}}}
        return KfpEmulator._fingerprint(ei, component, container)

    assert key(1, "run-a") == key(1, "run-b")
    assert key(1, "run-a") != key(2, "run-a")


def test_emulated_driver_refuses_a_vertex_accelerator_name_as_a_pod_resource():
    from tests.kfp_emulator import KfpEmulator, TaskFailed

    limits = KfpEmulator.pod_resources("Trainer", {"resources": {
        "accelerator": {"type": "nvidia.com/gpu", "count": "2"}, "memoryLimit": 32.0}})
    assert limits == {"nvidia.com/gpu": "2", "memory": "32G"}
    with pytest.raises(TaskFailed, match="NVIDIA_TESLA_T4"):
        KfpEmulator.pod_resources("Trainer", {"resources": {
            "accelerator": {"type": "NVIDIA_TESLA_T4", "count": "1"}}})
