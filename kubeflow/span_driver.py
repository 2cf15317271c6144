"""The span driver step: what TFX's ExampleGen driver does, as a task KFP really runs.

Open-source KFP never runs the ``lifecycle.preCacheCheck`` hook TFX compiles for
ExampleGen (nothing in its backend reads it), so ``{SPAN}`` would stay
unresolved and the input would never be fingerprinted. `cgd kubeflow compile`
therefore adds this step before ExampleGen, never cached:

    python -m kubeflow.span_driver --json_serialized_invocation_args '{{$}}' \\
        --json_serialized_inputs_spec_args '{...}'

It resolves the newest span (and version) with TFX's own FileBasedInputProcessor
and outputs the resolved ``input_config``, ``span``, ``input_fingerprint``
(and ``version``) as parameters that ExampleGen takes as inputs. ExampleGen's
KFP cache key includes its input parameters, so a new span or a changed file
reruns it, and an unchanged one may be served from the cache.
"""

from __future__ import annotations

import os
import sys

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from kubeflow import exit_status
from kubeflow.entrypoint import FINGERPRINT_KEY, SPAN_KEY, VERSION_KEY, parse_invocation

INPUT_CONFIG_KEY = "input_config"


def resolve(exec_properties: dict) -> dict:
    """{input_config (resolved JSON), span, input_fingerprint[, version]} for the inputs."""
    from tfx.components.example_gen import input_processor
    from tfx.proto import example_gen_pb2, range_config_pb2
    from tfx.types import standard_component_specs as keys
    from tfx.utils import proto_utils

    input_config = proto_utils.json_to_proto(exec_properties[keys.INPUT_CONFIG_KEY],
                                             example_gen_pb2.Input())
    range_config = None
    if exec_properties.get(keys.RANGE_CONFIG_KEY):
        range_config = proto_utils.json_to_proto(exec_properties[keys.RANGE_CONFIG_KEY],
                                                 range_config_pb2.RangeConfig())
    processor = input_processor.FileBasedInputProcessor(
        exec_properties[keys.INPUT_BASE_KEY], input_config.splits, range_config)
    span, version = processor.resolve_span_and_version()
    resolved = {SPAN_KEY: span, FINGERPRINT_KEY: processor.get_input_fingerprint(span, version)}
    for split in input_config.splits:
        split.pattern = processor.get_pattern_for_span_version(split.pattern, span, version)
    resolved[INPUT_CONFIG_KEY] = proto_utils.proto_to_json(input_config)
    if version is not None:
        resolved[VERSION_KEY] = version
    return resolved


def main(argv: list[str] | None = None) -> None:
    import tensorflow as tf
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils

    _, _, executor_input, inputs_spec = parse_invocation(sys.argv[1:] if argv is None else argv)
    exec_properties = kubeflow_v2_entrypoint_utils.parse_execution_properties(
        executor_input.inputs.parameter_values, executor_input.inputs.parameters, inputs_spec)
    resolved = resolve(exec_properties)
    print(f"span driver: span {resolved[SPAN_KEY]}, fingerprint "
          f"{resolved[FINGERPRINT_KEY][:120]}", flush=True)

    output = pipeline_spec_pb2.ExecutorOutput()
    for key, value in resolved.items():
        if key not in executor_input.outputs.parameters:
            continue
        if isinstance(value, str):
            output.parameter_values[key].string_value = value
        else:
            output.parameter_values[key].number_value = value
        # Also the per-parameter file, the other place KFP's launcher reads outputs from.
        path = executor_input.outputs.parameters[key].output_file
        if path:
            tf.io.gfile.makedirs(os.path.dirname(path))
            with tf.io.gfile.GFile(path, "w") as f:
                f.write(value if isinstance(value, str) else str(value))
    path = executor_input.outputs.output_file
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json_format.MessageToJson(output))


if __name__ == "__main__":
    exit_status.run_then_exit(main)
