"""Compile the pipeline for Kubeflow Pipelines 2.x and Vertex AI (TFX's V2 runner + kfp_compat).

    cgd kubeflow compile --config prod.yaml --image REGISTRY/cgd:TAG --output pipeline.json

What differs from the local run (pipeline/local_runner.py):

- pipeline root: ``kubeflow.pipeline_root`` (gs://, s3:// or minio://; Vertex: gs://),
  not ``pipeline.root``; no SQLite metadata (the cluster provides ML Metadata);
- Beam components get ``kubeflow.beam_args`` (Dataflow or Flink), not ``pipeline.beam_args``;
- every step runs in our image (``kubeflow/Dockerfile``), whose project copy lives
  at ``IMAGE_PROJECT_DIR``; the raw schema file is referenced there;
- the Trainer asks for GPUs, memory and CPU through ``with_platform_config`` with a
  ``ResourceSpec``, written the way ``kubeflow.target`` reads it; volumes and a GPU
  node selector go into KFP's kubernetes platform spec (kfp-kubernetes protos);
- TFX's compiled spec is made runnable on open-source KFP by ``kfp_compat``.

This package sits below ``pipeline/``: the caller (pipeline/kubeflow_runner.py)
builds the TFX pipeline and hands it in.
"""

from __future__ import annotations

import json
import logging
import os
import re

from core.config import Config
from kubeflow.errors import KubeflowError

log = logging.getLogger("cgd")

# Where kubeflow/Dockerfile puts the project (WORKDIR); keep the two in sync.
IMAGE_PROJECT_DIR = "/opt/cgd"
TRAINER_ID, SCHEMA_GEN_ID = "Trainer", "ImportSchemaGen"
EXAMPLE_GEN_ID, EVALUATOR_ID = "RetrievalExampleGen", "RecallEvaluator"
# KubeflowV2DagRunner's rule for pipeline names (its own error message is garbled).
PIPELINE_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")


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
# Where each backend's executors read and write artifacts (kubeflow/storage.py): KFP's
# launcher copies every artifact in and out, Vertex AI copies nothing.
ARTIFACT_ACCESS = {"kfp": "launcher_copies", "vertex": "store"}


def check_pipeline_root(cfg: Config) -> str:
    root = cfg.kubeflow.pipeline_root
    if not root:
        raise KubeflowError("'kubeflow.pipeline_root' must be set to storage the cluster reads "
                            "and writes (gs://YOUR-BUCKET/cgd, or minio://mlpipeline/v2/artifacts "
                            "on a default KFP install): every step's artifacts go there")
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


def check_pipeline_name(cfg: Config) -> None:
    name = cfg.pipeline.name
    if not PIPELINE_NAME_PATTERN.fullmatch(name):
        raise KubeflowError(
            f"'pipeline.name' {name!r} is not a valid Kubeflow pipeline name: use lowercase "
            "letters, digits and '-', starting with a letter or digit, at most 128 characters")


def prepare_pipeline(tfx_pipeline, cfg: Config):
    """The Trainer's resources and the schema's path inside the image, set on ``tfx_pipeline``.

    ``tfx_pipeline`` is ``pipeline.definition.create_pipeline`` built for Kubeflow
    (pipeline/kubeflow_runner.py): this package never imports the definition.
    """
    by_id = {c.id: c for c in tfx_pipeline.components}
    missing = {TRAINER_ID, SCHEMA_GEN_ID, EXAMPLE_GEN_ID, EVALUATOR_ID} - set(by_id)
    if missing:  # a renamed component would silently lose its settings
        raise KubeflowError(
            f"pipeline has no component(s) {sorted(missing)}: update kubeflow/compiler.py")
    resources = trainer_resources(cfg)
    if resources is not None:  # an empty spec would still compile to `resources: {}`
        by_id[TRAINER_ID].with_platform_config(resources)
    # The schema ships with the code: point at the copy inside the image, not this machine's.
    schema_gen = by_id[SCHEMA_GEN_ID]
    schema_gen.exec_properties["schema_file"] = image_path(
        schema_gen.exec_properties["schema_file"])
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


def compile_pipeline(tfx_pipeline, cfg: Config, image: str, output_path: str) -> dict:
    """Compile ``tfx_pipeline`` (prepared) into ``output_path``; return the PipelineJob.

    TFX's KubeflowV2DagRunner compiles schema 2.1.0; kubeflow/kfp_compat.py then
    makes the spec runnable on open-source KFP and Vertex AI. ``output_path``
    ending in .json gets a ``PipelineJob`` (what Vertex AI takes); .yaml/.yml gets
    the ``PipelineSpec``, followed by the kubernetes platform spec when
    ``kubeflow.gpu_node_selector`` or ``kubeflow.volumes`` is set (what ``kfp``
    writes and KFP's API server reads).
    """
    import tempfile

    import yaml
    from tfx import v1 as tfx

    from kubeflow import kfp_compat

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
        uses_version="{VERSION}" in cfg.data.file_pattern,
        artifact_access=ARTIFACT_ACCESS[cfg.kubeflow.target])
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
