"""Our container entrypoint and span driver, one function at a time (no cluster, no subprocess)."""
from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tests.support.paths import REPO_ROOT

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

@pytest.mark.slow
def test_emulated_cache_key_follows_inputs_not_output_uris():
    from tests.support.kfp_emulator import KfpEmulator

    container = {"image": "img", "command": ["python"], "args": ["{{$}}"]}
    component = {"outputDefinitions": {"parameters": {"n": {"parameterType": "STRING"}}}}

    def key(span, run):
        ei = {"inputs": {"parameterValues": {"span": span}, "artifacts": {}},
              "outputs": {"artifacts": {"x": {"artifacts": [
                  {"type": {"schemaTitle": "t"}, "uri": f"minio://b/{run}/x"}]}}}}
        return KfpEmulator._fingerprint(ei, component, container)

    assert key(1, "run-a") == key(1, "run-b")
    assert key(1, "run-a") != key(2, "run-a")


@pytest.mark.slow
def test_emulated_driver_refuses_a_vertex_accelerator_name_as_a_pod_resource():
    from tests.support.kfp_emulator import KfpEmulator, TaskFailed

    limits = KfpEmulator.pod_resources("Trainer", {"resources": {
        "accelerator": {"type": "nvidia.com/gpu", "count": "2"}, "memoryLimit": 32.0}})
    assert limits == {"nvidia.com/gpu": "2", "memory": "32G"}
    with pytest.raises(TaskFailed, match="NVIDIA_TESLA_T4"):
        KfpEmulator.pod_resources("Trainer", {"resources": {
            "accelerator": {"type": "NVIDIA_TESLA_T4", "count": "1"}}})


# ------------------------------------------------------------------ a step's exit status

CRASH_AT_EXIT = "import atexit, os\natexit.register(os.abort)\n"


def run_step(tmp_path, executor: str, module: str = "kubeflow.entrypoint",
             crash_at_exit: bool = True):
    """One step as KFP's launcher runs it: our entrypoint (or TFX's own) in a subprocess,
    optionally in a pod whose processes abort at interpreter exit (sitecustomize's atexit
    hook runs after everything TFX registers), as TFX's sometimes do on KFP v2."""
    import os
    import subprocess
    import sys

    root = str(REPO_ROOT)
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    if crash_at_exit:
        (hooks / "sitecustomize.py").write_text(CRASH_AT_EXIT)
    output_file = tmp_path / "kfp_outputs" / "output_metadata.json"
    invocation = {"outputs": {"artifacts": {"examples": {"artifacts": [{
        "type": {"instanceSchema": EXAMPLES_SCHEMA}, "uri": str(tmp_path / "out" / "examples"),
        "name": "examples"}]}}, "outputFile": str(output_file)}}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hooks), root]))
    proc = subprocess.run(
        [sys.executable, "-m", module, "--executor_class_path",
         f"tests.support.kfp_step_executors.{executor}",
         "--json_serialized_invocation_args", json.dumps(invocation)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return proc, output_file


@pytest.mark.slow
def test_a_crash_at_exit_fails_tfxs_own_entrypoint_after_its_work_is_done(tmp_path):
    """The failure this guards against, reproduced: outputs written, then SIGABRT."""
    proc, output_file = run_step(
        tmp_path, "WritesItsOutput",
        module="tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor")
    assert output_file.exists() and (tmp_path / "out/examples/done.txt").exists()
    assert proc.returncode == -6, proc.stderr[-2000:]  # SIGABRT: KFP reports the step failed


@pytest.mark.slow
def test_a_finished_step_ends_with_its_executors_status_whatever_happens_at_exit(tmp_path):
    proc, output_file = run_step(tmp_path, "WritesItsOutput")
    assert proc.returncode == 0, proc.stderr[-2000:]
    output = json.loads(output_file.read_text())
    assert output["artifacts"]["examples"]["artifacts"][0]["uri"].endswith("out/examples")
    assert (tmp_path / "out/examples/done.txt").read_text() == "done"


@pytest.mark.slow
def test_a_step_whose_executor_raised_still_fails_with_the_executors_error(tmp_path):
    proc, output_file = run_step(tmp_path, "Raises")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "ValueError: the executor's own error: no usable images in the split" in proc.stderr
    assert not output_file.exists()


def test_exit_status_of_main(capsys):
    from kubeflow.exit_status import status_of

    assert status_of(lambda: None) == 0
    assert status_of(lambda: sys_exit(3)) == 3
    assert status_of(lambda: sys_exit("bad flag")) == 1
    assert "bad flag" in capsys.readouterr().err
    assert status_of(lambda: 1 / 0) == 1
    assert "ZeroDivisionError" in capsys.readouterr().err


def sys_exit(code):
    import sys
    sys.exit(code)


# ------------------------------------------------------------------ artifact access

def test_on_kfp_every_store_uri_becomes_the_launchers_local_copy_and_maps_back():
    from kubeflow import storage
    for uri in ("gs://b/root/p/r/Trainer/model", "minio://mlpipeline/v2/x", "s3://b/y/z"):
        local = storage.to_executor_uri(uri, "/pod", access="launcher_copies")
        assert local == storage.launcher_local_path(uri, "/pod")
        assert storage.to_store_uri(local, "/pod") == uri


def test_the_entrypoint_maps_uris_as_its_artifact_access_flag_says():
    from kubeflow import entrypoint

    def mapped(access):
        ei = executor_input({"outputs": {"artifacts": {"model": {"artifacts": [
            {"type": {"schemaTitle": "tfx.Model"}, "uri": "gs://b/root/Trainer/model"}]}}}})
        entrypoint.map_artifact_uris(ei, access)
        return ei.outputs.artifacts["model"].artifacts[0].uri

    args, _, _, _ = entrypoint.parse_invocation(["--json_serialized_invocation_args", "{}"])
    assert args.artifact_access == "store"  # a spec compiled before the flag: as before
    assert mapped("store") == "gs://b/root/Trainer/model"
    assert mapped("launcher_copies").endswith("/gcs/b/root/Trainer/model")
