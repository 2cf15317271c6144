"""Kubeflow Pipelines (v2) DSL: the same pipeline, compiled by TFX's KubeflowV2DagRunner.

    cgd kubeflow compile  --config prod.yaml --image REGISTRY/cgd:TAG --output pipeline.json
    cgd kubeflow submit   --config prod.yaml --pipeline pipeline.json
    cgd kubeflow schedule --config prod.yaml --pipeline pipeline.json --cron "0 3 * * 0"

What differs from the local run (pipeline/local_runner.py):

- pipeline root: ``kubeflow.pipeline_root`` (shared storage such as gs://), not
  ``pipeline.root``; no SQLite metadata (the cluster provides ML Metadata);
- Beam components get ``kubeflow.beam_args`` (Dataflow or Flink), not ``pipeline.beam_args``;
- every step runs in our image (``kubeflow/Dockerfile``), whose project copy lives
  at ``IMAGE_PROJECT_DIR``; the raw schema file is referenced there;
- the Trainer asks for GPUs, memory and CPU through ``with_platform_config`` with a
  ``ResourceSpec``, which the V2 compiler copies into the Trainer's container spec.

The compiled .json file is a ``PipelineJob`` (what Vertex AI Pipelines takes) whose
``pipelineSpec`` is what Kubeflow Pipelines runs; the pipeline root is only in its
``runtimeConfig.gcsOutputDirectory``. ``kfp.Client`` (2.5) reads only a YAML
``PipelineSpec``, so ``submit``/``schedule`` extract the spec into a temporary YAML
package and pass the root as the run's ``pipeline_root``.

Everything here takes its collaborators as arguments (the kfp client in
particular) so that tests need no cluster.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import re
from typing import Any

from core.config import Config

log = logging.getLogger("cgd")

# Where kubeflow/Dockerfile puts the project (WORKDIR); keep the two in sync.
IMAGE_PROJECT_DIR = "/opt/cgd"
TRAINER_ID, SCHEMA_GEN_ID = "Trainer", "ImportSchemaGen"
EXAMPLE_GEN_ID, EVALUATOR_ID = "Cars196ExampleGen", "RecallEvaluator"
# KubeflowV2DagRunner's rule for pipeline names (its own error message is garbled).
PIPELINE_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")


class KubeflowError(ValueError):
    """A Kubeflow setting or file is wrong; the message names the flag, key or file."""


# --------------------------------------------------------------------------- compile

_MEMORY_UNITS = {  # bytes per unit, Kubernetes quantity suffixes
    "": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def parse_memory_gb(value: str, key: str = "kubeflow.memory") -> float:
    """A Kubernetes memory quantity ('32G', '30Gi', '512M') in GB, the ResourceSpec unit."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTPE]i?)?\s*", str(value))
    if not m:
        raise KubeflowError(
            f"'{key}' must be a number of bytes with an optional unit K, M, G, T, Ki, Mi, "
            f"Gi, Ti (e.g. '32G' or '30Gi'), got {value!r}")
    return float(m.group(1)) * _MEMORY_UNITS[m.group(2) or ""] / 10**9


def parse_cpu(value: str, key: str = "kubeflow.cpu") -> float:
    """A Kubernetes CPU quantity ('8', '0.5', '500m') in cores."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)(m?)\s*", str(value))
    if not m:
        raise KubeflowError(
            f"'{key}' must be a number of cores or millicores (e.g. '8', '0.5', '500m'), "
            f"got {value!r}")
    return float(m.group(1)) / (1000 if m.group(2) else 1)


def trainer_resources(cfg: Config):
    """The Trainer's ``ResourceSpec``: GPUs (accelerator type/count), memory and CPU limits.

    The accelerator type is written the way the target backend reads it: KFP's
    driver puts it verbatim into the pod's resource limits (``kubeflow.gpu_limit_resource``,
    e.g. ``nvidia.com/gpu``); Vertex AI wants its own accelerator names
    (``kubeflow.vertex_accelerator``, e.g. ``NVIDIA_TESLA_T4``).
    Empty ``memory``/``cpu`` and ``gpus: 0`` leave that part unset; None if all are.
    """
    from kfp.pipeline_spec import pipeline_spec_pb2

    k = cfg.kubeflow
    spec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec()
    if k.memory:
        spec.memory_limit = parse_memory_gb(k.memory)
    if k.cpu:
        spec.cpu_limit = parse_cpu(k.cpu)
    if k.gpus:
        key, accelerator = (("kubeflow.vertex_accelerator", k.vertex_accelerator)
                            if k.target == "vertex"
                            else ("kubeflow.gpu_limit_resource", k.gpu_limit_resource))
        if not accelerator:
            raise KubeflowError(f"'{key}' must name the GPU type when 'kubeflow.gpus' is "
                                f"{k.gpus} (kubeflow.target: {k.target})")
        spec.accelerator.type = accelerator
        spec.accelerator.count = k.gpus
    return spec if spec.ByteSize() else None


def resolve_image(cfg: Config, image: str | None) -> str:
    """``--image`` wins over ``kubeflow.image``; one of them must be set."""
    image = (image or cfg.kubeflow.image or "").strip()
    if not image:
        raise KubeflowError(
            "no container image: pass --image REGISTRY/NAME:TAG or set 'kubeflow.image' in "
            "the config (build it from kubeflow/Dockerfile)")
    return image


# Pipeline-root schemes each backend's launcher accepts (KFP: launcher_v2.go, objectstore).
ROOT_SCHEMES = {"kfp": ("gs://", "s3://", "minio://"), "vertex": ("gs://",)}


def check_pipeline_root(cfg: Config) -> str:
    root = cfg.kubeflow.pipeline_root
    if not root:
        raise KubeflowError("'kubeflow.pipeline_root' must be set (shared storage, e.g. "
                            "gs://BUCKET/cgd): every step reads and writes artifacts there")
    schemes = ROOT_SCHEMES[cfg.kubeflow.target]
    if not root.startswith(schemes):
        raise KubeflowError(
            f"'kubeflow.pipeline_root' {root!r}: kubeflow.target {cfg.kubeflow.target} stores "
            f"artifacts only on {', '.join(schemes)}")
    return root


def checkpoint_root(pipeline_root: str) -> str:
    """Where the Trainer keeps epoch checkpoints to resume a restarted pod, or "" for none.

    Only on gs://, which ``tf.io.gfile`` writes directly: on minio:// and s3:// a
    step sees only the launcher's local copies of its artifacts, and checkpoints
    are not artifacts, so a restarted pod would not find them anyway.
    """
    if pipeline_root.startswith("gs://"):
        return pipeline_root.rstrip("/") + "/Trainer/.checkpoints"
    return ""


def create_kubeflow_pipeline(cfg: Config):
    """``create_pipeline`` with the Kubeflow root, Beam args, metadata, schema and resources."""
    from pipeline import definition

    name = cfg.pipeline.name
    if not PIPELINE_NAME_PATTERN.fullmatch(name):
        raise KubeflowError(
            f"'pipeline.name' {name!r} is not a valid Kubeflow pipeline name: use lowercase "
            "letters, digits and '-', starting with a letter or digit, at most 128 characters")
    root = check_pipeline_root(cfg)
    tfx_pipeline = definition.create_pipeline(
        cfg, beam_pipeline_args=list(cfg.kubeflow.beam_args),
        root=root, local_metadata=False, checkpoint_root=checkpoint_root(root))
    by_id = {c.id: c for c in tfx_pipeline.components}
    missing = {TRAINER_ID, SCHEMA_GEN_ID, EXAMPLE_GEN_ID, EVALUATOR_ID} - set(by_id)
    if missing:  # a renamed component would silently lose its settings
        raise KubeflowError(
            f"pipeline has no component(s) {sorted(missing)}: update kubeflow/runner.py")
    resources = trainer_resources(cfg)
    if resources is not None:  # an empty spec would still compile to `resources: {}`
        by_id[TRAINER_ID].with_platform_config(resources)
    # The schema ships with the code: point at the copy inside the image, not this machine's.
    by_id[SCHEMA_GEN_ID].exec_properties["schema_file"] = image_path(definition.RAW_SCHEMA)
    return tfx_pipeline


def image_path(local_path: str) -> str:
    """Where a file of this project lies inside the image (under IMAGE_PROJECT_DIR).

    Relative to the directory holding our top-level packages: the checkout for an
    editable install, site-packages otherwise; both map to the image's project copy.
    """
    packages_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rel = os.path.relpath(os.path.abspath(local_path), packages_dir)
    if rel.startswith(".."):
        raise KubeflowError(f"{local_path} is not part of the project: cannot map it into "
                            "the image")
    return f"{IMAGE_PROJECT_DIR}/{rel.replace(os.sep, '/')}"


def local_path_warnings(cfg: Config) -> list[str]:
    """Settings that name this machine's disk, which the cluster's containers do not see."""
    found = []
    for key, value in (("data.source_dir", cfg.data.source_dir),
                       ("pipeline.serving_dir", cfg.pipeline.serving_dir)):
        if value and "://" not in value:
            found.append(f"'{key}' is a local path ({value}): on Kubeflow each step runs in its "
                         "own container, use shared storage (e.g. gs://) or a mounted volume")
    return found


def platform_spec(cfg: Config, job: dict) -> dict:
    """KFP's kubernetes platform spec (kfp-kubernetes protos): GPU node pool, volumes.

    {} when nothing is set. Vertex AI has no such spec: it schedules by accelerator.
    """
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s

    k = cfg.kubeflow
    executors = {}
    for label in job["pipelineSpec"]["deploymentSpec"]["executors"]:
        config = k8s.KubernetesExecutorConfig()
        for item in k.volumes:
            claim, _, mount_path = item.partition(":")
            config.pvc_mount.add(constant=claim, mount_path=mount_path)
        if label == f"{TRAINER_ID}_executor":
            for item in k.gpu_node_selector:
                label_name, _, value = item.partition("=")
                config.node_selector.labels[label_name] = value
        if config.ByteSize():
            executors[label] = json_format.MessageToDict(config)
    if not executors:
        return {}
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}}


def compile_pipeline(cfg: Config, image: str | None, output_path: str) -> dict:
    """Compile the pipeline for Kubeflow Pipelines into ``output_path``; return the PipelineJob.

    TFX's KubeflowV2DagRunner compiles schema 2.1.0; kubeflow/kfp_compat.py then
    makes the spec runnable on open-source KFP and Vertex AI. ``output_path``
    ending in .json gets a ``PipelineJob`` (what Vertex AI takes); .yaml/.yml gets
    the ``PipelineSpec``, followed by the kubernetes platform spec when
    ``kubeflow.gpu_node_selector`` or ``kubeflow.volumes`` is set (what ``kfp``
    writes and KFP's API server reads).
    """
    image = resolve_image(cfg, image)  # before the slow TFX import
    import tempfile

    import yaml
    from tfx import v1 as tfx

    from kubeflow import kfp_compat

    tfx_pipeline = create_kubeflow_pipeline(cfg)
    for warning in local_path_warnings(cfg):
        log.warning("kubeflow compile: %s", warning)
    yaml_output = output_path.endswith((".yaml", ".yml"))
    with tempfile.TemporaryDirectory(prefix="cgd-compile-") as tmp:
        runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
            config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
                default_image=image, use_pipeline_spec_2_1=True),
            output_dir=tmp, output_filename="pipeline.json")
        compiled = runner.run(tfx_pipeline)
    job = kfp_compat.make_runnable(
        compiled, example_gen_id=EXAMPLE_GEN_ID, evaluator_id=EVALUATOR_ID,
        uses_version="{VERSION}" in cfg.data.file_pattern)
    platform = platform_spec(cfg, job) if cfg.kubeflow.target == "kfp" else {}
    if platform and not yaml_output:
        raise KubeflowError(
            "'kubeflow.gpu_node_selector' / 'kubeflow.volumes' go into KFP's platform spec, "
            "which only the YAML package carries: use --output pipeline.yaml")
    output_path = os.path.abspath(output_path)
    os.makedirs(os.path.dirname(output_path), exist_ok=True)
    with open(output_path, "w") as f:
        if yaml_output:
            yaml.safe_dump_all([job["pipelineSpec"]] + ([platform] if platform else []), f,
                               sort_keys=True)
        else:
            json.dump(job, f, indent=2, sort_keys=True)
    return job


# --------------------------------------------------------------------------- submit

@dataclasses.dataclass(frozen=True)
class PipelinePackage:
    """A compiled pipeline as submitted: the spec, its platform spec and pipeline root."""
    spec: dict
    platform: dict
    root: str


def load_pipeline_file(path: str) -> PipelinePackage:
    """The compiled file (PipelineJob .json, or .yaml spec + optional platform spec).

    Validated against the kfp-pipeline-spec protos and checked for what Kubeflow
    Pipelines refuses (kfp_compat.check_runnable), so that a file compiled by an
    older version fails here with the reason, not on the cluster. Errors name the file.
    """
    import yaml
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    from kubeflow import kfp_compat

    if not os.path.isfile(path):
        raise KubeflowError(f"pipeline file {path} does not exist (create it with "
                            "`cgd kubeflow compile`)")
    try:
        with open(path) as f:
            docs = [json.load(f)] if path.endswith(".json") else list(yaml.safe_load_all(f))
    except (ValueError, yaml.YAMLError) as e:
        raise KubeflowError(f"{path}: not valid JSON/YAML: {e}") from None
    if not docs or not all(isinstance(d, dict) for d in docs) or len(docs) > 2:
        raise KubeflowError(f"{path}: not a compiled pipeline (expected a PipelineJob, or a "
                            "PipelineSpec optionally followed by a platform spec)")
    doc, platform = docs[0], (docs[1] if len(docs) == 2 else {})
    root = ""
    try:
        if "pipelineSpec" in doc:  # a PipelineJob, as `cgd kubeflow compile` writes .json
            job = json_format.ParseDict(doc, pipeline_spec_pb2.PipelineJob())
            spec = doc["pipelineSpec"]  # a Struct in PipelineJob: check it on its own
            root = job.runtime_config.gcs_output_directory
        else:
            spec = doc
        json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
        json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    except json_format.ParseError as e:
        raise KubeflowError(f"{path}: not a KFP PipelineJob or PipelineSpec: {e}") from None
    if not spec.get("pipelineInfo", {}).get("name") or "root" not in spec:
        raise KubeflowError(f"{path}: the pipeline spec has no pipelineInfo.name or root")
    try:
        kfp_compat.check_runnable(spec)
    except kfp_compat.SpecError as e:
        raise KubeflowError(f"{path}: {e}; compile it again with `cgd kubeflow compile`") \
            from None
    return PipelinePackage(spec, platform, root or spec.get("defaultPipelineRoot", ""))


def write_pipeline_package(package: PipelinePackage, directory: str) -> str:
    """Write the package as the YAML ``kfp.Client`` 2.5 reads (spec, then platform spec)."""
    import yaml

    path = os.path.join(directory, "pipeline.yaml")
    with open(path, "w") as f:
        yaml.safe_dump_all([package.spec] + ([package.platform] if package.platform else []),
                           f, sort_keys=True)
    return path


def default_run_name(spec: dict, now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"{spec['pipelineInfo']['name']} {now:%Y-%m-%d %H-%M-%S}"


def _kfp_call(what: str, call):
    """Run a kfp.Client call; an API refusal becomes one KubeflowError line with KFP's reason."""
    import kfp_server_api

    try:
        return call()
    except kfp_server_api.ApiException as e:
        reason = e.reason
        try:
            reason = json.loads(e.body).get("message") or reason
        except (TypeError, ValueError):
            pass
        raise KubeflowError(f"Kubeflow Pipelines refused to {what} (HTTP {e.status}): "
                            f"{reason}") from None


def submit(client: Any, pipeline_file: str, experiment: str, run_name: str | None = None,
           default_root: str = ""):
    """One run of the compiled pipeline on the client's cluster; returns the client's result.

    The run's pipeline root is the file's (a .json PipelineJob carries it), else
    ``default_root`` (``kubeflow.pipeline_root``, what the spec was compiled for).
    """
    import tempfile

    package = load_pipeline_file(pipeline_file)
    with tempfile.TemporaryDirectory(prefix="cgd-kfp-") as tmp:
        return _kfp_call("create the run", lambda: client.create_run_from_pipeline_package(
            pipeline_file=write_pipeline_package(package, tmp),
            arguments={},
            run_name=run_name or default_run_name(package.spec),
            experiment_name=experiment,
            pipeline_root=package.root or default_root or None,
        ))


def schedule(client: Any, pipeline_file: str, experiment: str, job_name: str, cron: str,
             default_root: str = ""):
    """A recurring run on KFP's cron (5- or 6-field ``cron``); returns the client's result.

    One run at a time (``max_concurrency=1``) and no catch-up of missed runs: a
    retraining that was skipped must not be replayed in a burst.
    """
    import tempfile

    kfp_cron = to_kfp_cron(cron)
    package = load_pipeline_file(pipeline_file)
    experiment_id = _kfp_call("create the experiment",
                              lambda: client.create_experiment(name=experiment).experiment_id)
    with tempfile.TemporaryDirectory(prefix="cgd-kfp-") as tmp:
        return _kfp_call("create the recurring run", lambda: client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job_name,
            cron_expression=kfp_cron,
            pipeline_package_path=write_pipeline_package(package, tmp),
            params={},
            pipeline_root=package.root or default_root or None,
            max_concurrency=1,
            no_catchup=True,
            enabled=True,
        ))


# --------------------------------------------------------------------------- cron

_MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
_DAYS = "SUN MON TUE WED THU FRI SAT".split()
# KFP's scheduler (robfig/cron with seconds): field name, low, high, names.
_CRON_FIELDS = (
    ("second", 0, 59, None), ("minute", 0, 59, None), ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None), ("month", 1, 12, _MONTHS), ("day-of-week", 0, 6, _DAYS),
)
_CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight",
                     "@hourly")


def to_kfp_cron(expr: str) -> str:
    """Standard 5-field cron -> KFP's 6-field form (seconds first), validated.

    "0 3 * * 0" -> "0 0 3 * * 0". A 6-field expression is taken as KFP's form already;
    @daily-style descriptors pass through. Day-of-week is 0-6 (Sunday = 0) or SUN-SAT.
    """
    text = " ".join(str(expr).split())
    if text.lower() in _CRON_DESCRIPTORS:
        return text.lower()
    fields = text.split(" ") if text else []
    if len(fields) == 5:
        fields = ["0"] + fields
    elif len(fields) != 6:
        raise KubeflowError(
            f"cron {expr!r}: expected 5 fields (minute hour day-of-month month day-of-week, "
            f"e.g. '0 3 * * 0') or KFP's 6 (seconds first), got {len(fields)}")
    for value, (name, low, high, names) in zip(fields, _CRON_FIELDS):
        problem = _cron_field_problem(value, low, high, names,
                                      allow_question=name in ("day-of-month", "day-of-week"))
        if problem:
            raise KubeflowError(f"cron {expr!r}: {name} field {value!r}: {problem}")
    return " ".join(fields)


def _cron_field_problem(value: str, low: int, high: int, names, allow_question: bool):
    def number(token: str) -> int | None:
        if token.isdigit():
            return int(token)
        if names and token.upper() in names:
            return names.index(token.upper()) + (low if names is _MONTHS else 0)
        return None

    for part in value.split(","):
        base, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) < 1):
            return f"step {step!r} must be a positive integer"
        if base in ("*", "?"):
            if base == "?" and not allow_question:
                return "'?' is allowed only in day-of-month and day-of-week"
            continue
        lo_hi = base.split("-")
        if len(lo_hi) > 2 or not all(lo_hi):
            return f"{part!r} is not a value, a range a-b, '*' or a list of them"
        bounds = [number(t) for t in lo_hi]
        if any(b is None for b in bounds):
            expected = f"{low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")
            return f"{part!r} is not a number ({expected})"
        if not all(low <= b <= high for b in bounds):
            return f"{part!r} is out of range {low}-{high}"
        if len(bounds) == 2 and bounds[0] > bounds[1]:
            return f"range {part!r} runs backwards"
    return None
