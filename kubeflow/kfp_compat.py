"""Make the spec TFX's KubeflowV2DagRunner compiles runnable on open-source KFP 2.x and Vertex AI.

TFX 1.16 compiles for Vertex AI ("currently for managed pipelines"). What it
emits and what open-source Kubeflow Pipelines runs differ in ways listed in
../shared/DESIGN.md ("Kubeflow Pipelines 2.x"); this module holds every change
we make to the compiled ``PipelineJob``, each for a reason in the backend's source:

- schema 2.1.0 (``use_pipeline_spec_2_1``, set by the runner): KFP's API server
  accepts nothing else (backend/src/apiserver/template/v2_template.go), and
  parameters then travel as ``runtimeValue.constant`` / ``parameterValues``,
  the only forms KFP's driver takes;
- no resolver executors: KFP's compiler implements container and importer only
  (backend/src/v2/compiler). The pipeline has none (the evaluator reads the
  model in production from the serving directory); ``check_runnable`` refuses any;
- no ``lifecycle`` hooks: KFP never runs ``preCacheCheck``. ExampleGen's driver
  becomes a step of its own (kubeflow/span_driver.py), never cached, whose
  outputs (resolved input_config, span, fingerprint) are ExampleGen's inputs,
  so ExampleGen's cache key changes exactly when its data does;
- every executor runs our entrypoint (kubeflow/entrypoint.py) around TFX's, told
  where its artifacts are to be read and written (``--artifact_access``,
  kubeflow/storage.py): on KFP the launcher's local copies, since TensorFlow's
  GCS directory markers break the launcher's downloads
  (backend/src/v2/objectstore/object_store.go, kubeflow/pipelines#13476);
- the RecallEvaluator is never cached: its verdict depends on the model in
  production, which no cache key sees.
"""

from __future__ import annotations

import copy
import json

SCHEMA_VERSION = "2.1.0"
TFX_RUN_EXECUTOR = ["python", "-m",
                    "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
ENTRYPOINT = ["python", "-m", "kubeflow.entrypoint"]
SPAN_DRIVER = ["python", "-m", "kubeflow.span_driver"]
INPUTS_SPEC_FLAG = "--json_serialized_inputs_spec_args"
ARTIFACT_ACCESS_FLAG = "--artifact_access"
DRIVER_SUFFIX = "-driver"
# The span driver's outputs, which become ExampleGen's inputs (kubeflow/span_driver.py).
DRIVER_OUTPUTS = {"input_config": "STRING", "span": "NUMBER_INTEGER",
                  "input_fingerprint": "STRING"}
VERSION_OUTPUT = {"version": "NUMBER_INTEGER"}


class SpecError(ValueError):
    """The compiled spec cannot run on Kubeflow Pipelines; the message says where."""


def check_runnable(spec: dict) -> None:
    """Refuse what KFP's API server or compiler refuses (schema, executor kinds, hooks)."""
    if spec.get("schemaVersion") != SCHEMA_VERSION:
        raise SpecError(f"schemaVersion is {spec.get('schemaVersion')!r}: Kubeflow Pipelines "
                        f"accepts only {SCHEMA_VERSION}")
    for label, executor in spec["deploymentSpec"]["executors"].items():
        kinds = set(executor) - {"container", "importer"}
        if kinds:
            raise SpecError(f"executor {label} is a {sorted(kinds)[0]}: Kubeflow Pipelines runs "
                            "only container and importer executors")
        container = executor.get("container", {})
        if "lifecycle" in container:
            raise SpecError(f"executor {label} has a lifecycle hook, which Kubeflow Pipelines "
                            "never runs")
        if container.get("command") == ENTRYPOINT and \
                ARTIFACT_ACCESS_FLAG not in container.get("args", []):
            raise SpecError(f"executor {label} does not say where its artifacts are read and "
                            f"written ({ARTIFACT_ACCESS_FLAG}): on a gs:// root its steps "
                            "would write directory markers that break KFP's launcher")


def _set_inputs_spec_arg(args: list, inputs_definitions: dict) -> None:
    """Rewrite the JSON after --json_serialized_inputs_spec_args (the parameter types)."""
    at = args.index(INPUTS_SPEC_FLAG) + 1
    args[at] = json.dumps(inputs_definitions, indent=2, sort_keys=True)


def make_runnable(job: dict, example_gen_id: str, evaluator_id: str, artifact_access: str,
                  uses_version: bool = False) -> dict:
    """A copy of the compiled ``PipelineJob`` that runs on KFP 2.x and Vertex AI.

    ``example_gen_id``: the file-based ExampleGen whose driver hook becomes a
    step; ``evaluator_id``: the task never to cache; ``uses_version``: the input
    pattern has ``{VERSION}`` (the driver then also outputs the version);
    ``artifact_access``: the entrypoint's ``--artifact_access`` (kubeflow/storage.py).
    """
    job = copy.deepcopy(job)
    spec = job["pipelineSpec"]
    executors = spec["deploymentSpec"]["executors"]
    components, tasks = spec["components"], spec["root"]["dag"]["tasks"]
    if spec.get("schemaVersion") != SCHEMA_VERSION:
        raise SpecError(f"compiled with schemaVersion {spec.get('schemaVersion')!r}; "
                        f"compile with use_pipeline_spec_2_1 for {SCHEMA_VERSION}")

    hook = None
    for label, executor in executors.items():
        container = executor.get("container")
        if container is None:
            continue
        if container.get("command") == TFX_RUN_EXECUTOR:
            container["command"] = list(ENTRYPOINT)
            # First, so that the Beam args stay last, as TFX writes them.
            container["args"] = [ARTIFACT_ACCESS_FLAG, artifact_access] + list(
                container.get("args", []))
        lifecycle = container.pop("lifecycle", None)
        if lifecycle:
            if label != components[example_gen_id]["executorLabel"]:
                raise SpecError(f"executor {label} has a lifecycle hook we do not know how "
                                "to run on Kubeflow Pipelines")
            hook = lifecycle["preCacheCheck"]
    if hook is None:
        raise SpecError(f"{example_gen_id} has no driver hook to turn into a step")

    # The span driver step: ExampleGen's inputs in, the resolved ones out.
    driver = example_gen_id + DRIVER_SUFFIX
    outputs = dict(DRIVER_OUTPUTS, **(VERSION_OUTPUT if uses_version else {}))
    gen_component = components[example_gen_id]
    components[driver] = {
        "executorLabel": f"{driver}_executor",
        "inputDefinitions": copy.deepcopy(gen_component["inputDefinitions"]),
        "outputDefinitions": {"parameters": {k: {"parameterType": t}
                                             for k, t in outputs.items()}},
    }
    gen_container = executors[gen_component["executorLabel"]]["container"]
    executors[f"{driver}_executor"] = {"container": {
        "image": gen_container["image"], "command": list(SPAN_DRIVER), "args": hook["args"]}}
    tasks[driver] = {
        "taskInfo": {"name": driver},
        "componentRef": {"name": driver},
        "inputs": copy.deepcopy(tasks[example_gen_id]["inputs"]),
        "cachingOptions": {"enableCache": False},  # it must look at the files every run
    }

    gen_task = tasks[example_gen_id]
    for key, parameter_type in outputs.items():
        gen_task["inputs"]["parameters"][key] = {"taskOutputParameter": {
            "producerTask": driver, "outputParameterKey": key}}
        gen_component["inputDefinitions"]["parameters"][key] = {"parameterType": parameter_type}
    gen_task["dependentTasks"] = sorted(set(gen_task.get("dependentTasks", [])) | {driver})
    _set_inputs_spec_arg(gen_container["args"], gen_component["inputDefinitions"])

    tasks[evaluator_id]["cachingOptions"] = {"enableCache": False}
    check_runnable(spec)
    return job
