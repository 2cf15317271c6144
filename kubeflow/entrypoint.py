"""The container command of every executor step on Kubeflow Pipelines (and Vertex AI).

    python -m kubeflow.entrypoint --executor_class_path X \\
        --json_serialized_invocation_args '{{$}}' --json_serialized_inputs_spec_args '{...}' [beam args]

A thin wrapper around TFX's own ``kubeflow_v2_run_executor`` (same arguments),
mending what open-source KFP hands a step and TFX 1.16 cannot take:

1. Upstream artifacts arrive with an empty type (KFP's driver reads them back
   from ML Metadata with ``instanceSchema: ""``; backend/src/v2/metadata/client.go),
   and TFX's entrypoint needs the type to pick the artifact class. The type is
   restored from the step's own input definitions (the compiled spec passes them
   as ``--json_serialized_inputs_spec_args``).
2. Artifact URIs are replaced by the launcher's local copies as
   ``--artifact_access`` says (kubeflow/storage.py): on KFP for every scheme, so
   no executor writes GCS directory markers into an artifact; on Vertex AI for
   minio:// and s3:// only. The executor output file gets the store URIs back.
3. ExampleGen's span, version and input fingerprint, resolved by the span driver
   step (kubeflow/span_driver.py) and passed as parameters, are recorded on the
   Examples artifact, as TFX's own driver does where it runs.
4. The process ends with the executor's status as soon as the output metadata
   is written (kubeflow/exit_status.py): a crash in interpreter teardown cannot
   fail a finished step.
"""

from __future__ import annotations

import argparse
import sys

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from kubeflow import exit_status, storage

# Parameters the span driver adds to ExampleGen's inputs (TFX's ExampleGen utils names).
SPAN_KEY, VERSION_KEY, FINGERPRINT_KEY = "span", "version", "input_fingerprint"
EXAMPLES_KEY = "examples"


class EntrypointError(RuntimeError):
    """The step's invocation cannot be run; the message names the artifact or flag."""


def parse_invocation(argv: list[str]):
    """(args, beam args, ExecutorInput, ComponentInputsSpec or None) from TFX's flags."""
    parser = argparse.ArgumentParser(prog="python -m kubeflow.entrypoint")
    parser.add_argument("--executor_class_path")
    parser.add_argument("--json_serialized_invocation_args", required=True)
    parser.add_argument("--json_serialized_inputs_spec_args")
    parser.add_argument("--artifact_access", choices=sorted(storage.LOCAL_COPY_SCHEMES),
                        default=storage.DEFAULT_ACCESS)
    args, beam_args = parser.parse_known_args(argv)
    executor_input = pipeline_spec_pb2.ExecutorInput()
    json_format.Parse(args.json_serialized_invocation_args, executor_input,
                      ignore_unknown_fields=True)
    inputs_spec = None
    if args.json_serialized_inputs_spec_args:
        inputs_spec = pipeline_spec_pb2.ComponentInputsSpec()
        json_format.Parse(args.json_serialized_inputs_spec_args, inputs_spec,
                          ignore_unknown_fields=True)
    return args, beam_args, executor_input, inputs_spec


def _has_type(artifact: pipeline_spec_pb2.RuntimeArtifact) -> bool:
    kind = artifact.type.WhichOneof("kind")
    return bool(kind and getattr(artifact.type, kind))


def restore_input_types(executor_input: pipeline_spec_pb2.ExecutorInput,
                        inputs_spec: pipeline_spec_pb2.ComponentInputsSpec | None) -> None:
    """Give every input artifact without a type the type its input definition declares."""
    for key, artifact_list in executor_input.inputs.artifacts.items():
        for artifact in artifact_list.artifacts:
            if _has_type(artifact):
                continue
            if inputs_spec is None or key not in inputs_spec.artifacts:
                raise EntrypointError(
                    f"input artifact '{key}' ({artifact.uri}) arrived without a type and the "
                    "step's --json_serialized_inputs_spec_args does not declare it: compile "
                    "the pipeline with `cgd kubeflow compile`")
            artifact.type.CopyFrom(inputs_spec.artifacts[key].artifact_type)


def map_artifact_uris(executor_input: pipeline_spec_pb2.ExecutorInput,
                      access: str = storage.DEFAULT_ACCESS) -> None:
    """Input and output artifact URIs -> what the executors open (storage.to_executor_uri)."""
    for artifact_map in (executor_input.inputs.artifacts, executor_input.outputs.artifacts):
        for artifact_list in artifact_map.values():
            for artifact in artifact_list.artifacts:
                artifact.uri = storage.to_executor_uri(artifact.uri, access=access)


def record_span(executor_input: pipeline_spec_pb2.ExecutorInput) -> None:
    """Span, version and fingerprint parameters -> metadata of the Examples output."""
    params = executor_input.inputs.parameter_values
    if SPAN_KEY not in params or EXAMPLES_KEY not in executor_input.outputs.artifacts:
        return
    for artifact in executor_input.outputs.artifacts[EXAMPLES_KEY].artifacts:
        for key in (SPAN_KEY, VERSION_KEY, FINGERPRINT_KEY):
            if key in params:
                artifact.metadata.fields[key].CopyFrom(params[key])


def restore_store_uris(output_file: str) -> None:
    """Artifact URIs in the executor output file back to the store URIs KFP assigned."""
    import tensorflow as tf

    if not tf.io.gfile.exists(output_file):
        return
    with tf.io.gfile.GFile(output_file) as f:
        executor_output = json_format.Parse(f.read(), pipeline_spec_pb2.ExecutorOutput(),
                                            ignore_unknown_fields=True)
    for artifact_list in executor_output.artifacts.values():
        for artifact in artifact_list.artifacts:
            artifact.uri = storage.to_store_uri(artifact.uri)
    with tf.io.gfile.GFile(output_file, "w") as f:
        f.write(json_format.MessageToJson(executor_output))


def main(argv: list[str] | None = None) -> None:
    args, beam_args, executor_input, inputs_spec = parse_invocation(
        sys.argv[1:] if argv is None else argv)
    if not args.executor_class_path:
        raise EntrypointError("--executor_class_path is required")
    restore_input_types(executor_input, inputs_spec)
    map_artifact_uris(executor_input, args.artifact_access)
    record_span(executor_input)
    args.json_serialized_invocation_args = json_format.MessageToJson(executor_input)
    del args.artifact_access  # ours, not TFX's

    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor
    kubeflow_v2_run_executor.main((args, beam_args))
    restore_store_uris(executor_input.outputs.output_file)


if __name__ == "__main__":
    exit_status.run_then_exit(main)
