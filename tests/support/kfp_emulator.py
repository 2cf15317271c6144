"""Kubeflow Pipelines 2.x, emulated on one machine: a compiled spec run task by task.

This is the boundary we can test without a cluster. It does what KFP's backend
does with a submitted pipeline (kubeflow/pipelines at 2.0.5; file references are
to that tree), and each step runs in a subprocess with this venv standing in
for the image:

- API server (backend/src/apiserver/template/v2_template.go): the spec must be
  schema 2.1.0 and parse as a PipelineSpec; compiler (backend/src/v2/compiler):
  only container and importer executors.
- Root DAG driver: pipeline root from ``runtimeConfig.gcsOutputDirectory``; the
  launcher accepts only gs://, s3:// and minio:// (objectstore/object_store.go).
- Container driver (backend/src/v2/driver/driver.go): the ExecutorInput is built
  from the spec. Parameters: ``runtimeValue.constant``, ``taskOutputParameter``,
  ``componentInputParameter`` into ``parameterValues`` only; the 2.0 form
  ``runtimeValue.constantValue`` fails the task. Upstream artifacts are read back
  from ML Metadata (a real MLMD store here) with ``name`` = the artifact id,
  ``type`` = ``{"instanceSchema": ""}`` and metadata from the custom properties
  (metadata/converter.go: numbers come back as doubles, bools as 1/0).
  Outputs: ``<root>/<pipeline>/<run id>/<task>/<output key>``, the types of the
  output definitions, parameter files and ``output_metadata.json``.
  Resources: ``accelerator.type`` becomes the pod's resource limit name verbatim.
- Cache (backend/src/v2/cacheutils/cache.go): when ``cachingOptions.enableCache``,
  the key covers input artifact names, input parameter values, output artifact
  specs without URIs, output parameter types, image and command+args before
  substitution; a hit reuses the earlier execution's artifacts and parameters.
- Launcher (backend/src/v2/component/launcher_v2.go): placeholders substituted
  (``{{$}}`` is the ExecutorInput with the store URIs), inputs downloaded to
  ``/gcs/...``, ``/minio/...``, ``/s3/...`` (here: under the pod's own directory,
  named by ``CGD_KFP_LOCAL_ROOT``), the command run, ``output_metadata.json`` read
  back strictly (parameterValues first, then parameter files; artifact URI and
  metadata merged; a URI outside the root's bucket fails), outputs uploaded,
  artifacts recorded in MLMD with their metadata as custom properties.
- Object store (backend/src/v2/objectstore/object_store.go, the same at 2.0.5 and
  at the newest 2.x tag for what matters here): buckets of flat object names
  (tests/support/gcs_emulator.py's ``ObjectStore``). ``DownloadBlob`` lists every object
  under the artifact's key prefix and writes each to ``localDir/Rel(prefix, key)``
  with Go's ``os.MkdirAll`` of its parent and ``os.Create``, directory markers
  (``<dir>/`` objects) included: a marker becomes an empty file, and a later
  object beneath it fails with ``mkdir ...: not a directory``
  (kubeflow/pipelines#13476). ``UploadBlob`` walks the local directory and
  uploads files only; a missing local path uploads nothing ("We allow components
  to not produce output files"). gs:// is also served to the steps over GCS's
  JSON API (tests/support/gcs_emulator.py), so a step that writes gs:// itself, through
  TensorFlow's own GCS filesystem, writes the markers TensorFlow really writes.

Not emulated: Argo, Kubernetes scheduling, retries, the UI, object store
credentials; ``/gcs``-style mounts are per pod, never shared.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml
from google.protobuf import json_format, struct_pb2
from kfp.pipeline_spec import pipeline_spec_pb2
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from tests.support.gcs_emulator import GcsEmulator, ObjectStore

LOCAL_ROOT_ENV = "CGD_KFP_LOCAL_ROOT"  # kubeflow/storage.py; "/" in a real pod
MOUNTS = {"gs://": "gcs", "s3://": "s3", "minio://": "minio"}
ROOT_PATTERN = re.compile(r"(^[a-z][a-z0-9]+:///?)([^/?]+)(/[^?]*)?(\?.+)?$")
# Kubernetes resource names: optional DNS prefix, then a qualified name.
RESOURCE_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
PARAMETER_TYPES = {"STRING", "NUMBER_INTEGER", "NUMBER_DOUBLE", "BOOLEAN", "LIST", "STRUCT"}


class Refused(Exception):
    """KFP's API server or compiler refuses the pipeline (nothing runs)."""


class TaskFailed(Exception):
    """A task's driver or launcher failed; the run stops, as KFP's does."""

    def __init__(self, task: str, message: str):
        super().__init__(f"task {task}: {message}")
        self.task = task


@dataclasses.dataclass
class TaskResult:
    state: str                 # COMPLETE or CACHED
    artifacts: dict            # output key -> MLMD artifact id
    parameters: dict           # output key -> value
    executor_input: dict       # what the step was given (empty when cached)
    pod_resources: dict        # the container's resource limits, as the driver sets them
    log: str = ""


@dataclasses.dataclass
class RunResult:
    run_id: str
    tasks: dict[str, TaskResult]

    def state(self, task: str) -> str:
        return self.tasks[task].state


def _struct_to_mlmd(value: struct_pb2.Value) -> metadata_store_pb2.Value:
    """StructValueToMLMDValue (metadata/converter.go): lossy, as KFP's is."""
    kind = value.WhichOneof("kind")
    out = metadata_store_pb2.Value()
    if kind == "string_value":
        out.string_value = value.string_value
    elif kind == "number_value":
        out.double_value = value.number_value
    elif kind == "bool_value":
        out.int_value = int(value.bool_value)
    elif kind == "list_value":
        out.struct_value.update({"list": json_format.MessageToDict(value.list_value)})
    elif kind == "struct_value":
        out.struct_value.update({"struct": json_format.MessageToDict(value.struct_value)})
    else:
        raise ValueError(f"unknown/unsupported value type {kind}")
    return out


def _mlmd_to_json(value: metadata_store_pb2.Value):
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind in ("double_value", "int_value"):
        return float(getattr(value, kind))
    if kind == "struct_value":
        return json_format.MessageToDict(value.struct_value)
    raise ValueError(f"unknown property type in MLMD artifact: {kind}")


def _schema_title(artifact_type: dict) -> str:
    if "schemaTitle" in artifact_type:
        return artifact_type["schemaTitle"]
    return (yaml.safe_load(artifact_type.get("instanceSchema", "")) or {}).get("title", "")


def _text_to_value(text: str, parameter_type: str):
    """TextToPbValue (metadata/converter.go): an output parameter file -> its value."""
    if parameter_type == "STRING":
        return text
    if parameter_type in ("NUMBER_INTEGER", "NUMBER_DOUBLE"):
        return float(int(text.strip()) if parameter_type == "NUMBER_INTEGER" else text)
    if parameter_type == "BOOLEAN":
        return text.strip().lower() == "true"
    return json.loads(text)


def _placeholder_text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() else repr(value)
    return json.dumps(value, separators=(",", ":"))


class KfpEmulator:
    """Runs compiled pipelines as KFP 2.x does; state (store, MLMD, cache) persists across runs."""

    def __init__(self, work_dir: Path, env: dict | None = None, python: str = sys.executable,
                 task_timeout_s: float = 1200):
        self.work_dir = Path(work_dir)
        self.stores = {scheme: ObjectStore(self.work_dir / "store" / mount)
                       for scheme, mount in MOUNTS.items()}
        self.pods = self.work_dir / "pods"
        # gs:// is also reachable from the steps, as GCS is from a pod.
        self.gcs = GcsEmulator(self.stores["gs://"], self.work_dir / "gcs-tls").__enter__()
        self.env = dict(os.environ if env is None else env, **self.gcs.environment())
        self.python = python
        self.task_timeout_s = task_timeout_s
        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = str(self.work_dir / "mlmd.sqlite")
        config.sqlite.connection_mode = 3  # READWRITE_OPENCREATE
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.mlmd = metadata_store.MetadataStore(config)
        self.cache: dict[str, TaskResult] = {}  # fingerprint -> first execution's outputs

    # ------------------------------------------------------------------ API server

    @staticmethod
    def load(path: str | Path) -> tuple[dict, str]:
        """(PipelineSpec dict, pipeline root) of a compiled file, as submitted."""
        text = Path(path).read_text()
        doc = json.loads(text) if str(path).endswith(".json") else yaml.safe_load_all(text)
        if not isinstance(doc, dict):
            doc = next(iter(doc))
        if "pipelineSpec" in doc:
            return doc["pipelineSpec"], doc.get("runtimeConfig", {}).get("gcsOutputDirectory", "")
        return doc, doc.get("defaultPipelineRoot", "")

    @staticmethod
    def validate(spec: dict) -> None:
        """What the API server and the Argo compiler refuse at run creation."""
        if spec.get("schemaVersion") != "2.1.0":
            raise Refused("KFP only supports schema version 2.1.0, but the pipeline spec has "
                          f"version {spec.get('schemaVersion')}")
        try:
            json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
        except json_format.ParseError as e:
            raise Refused(f"unknown template format: {e}") from None
        for label, executor in spec["deploymentSpec"]["executors"].items():
            if "container" not in executor and "importer" not in executor:
                raise Refused(f"{label}: non-container and non-importer executor not implemented")

    # ------------------------------------------------------------------ a run

    def run(self, spec: dict, pipeline_root: str, parameters: dict | None = None) -> RunResult:
        self.validate(spec)
        match = ROOT_PATTERN.match(pipeline_root or "")
        if not match:
            raise Refused(f"parse bucket config failed: unrecognized pipeline root format: "
                          f"{pipeline_root!r}")
        if match.group(1) not in MOUNTS:
            raise Refused(f"parse bucket config failed: unsupported Cloud bucket: {pipeline_root!r}")
        run_id = str(uuid.uuid4())
        run_root = f"{pipeline_root.rstrip('/')}/{spec['pipelineInfo']['name']}/{run_id}"
        bucket_prefix = match.group(1) + match.group(2) + "/"
        self.stores[match.group(1)].create_bucket(match.group(2))
        tasks = spec["root"]["dag"]["tasks"]
        results: dict[str, TaskResult] = {}
        for name in self._order(tasks):
            results[name] = self._run_task(spec, name, tasks[name], run_root, bucket_prefix,
                                           results, parameters or {})
        return RunResult(run_id, results)

    @staticmethod
    def _order(tasks: dict) -> list[str]:
        def upstream(task):
            found = set(task.get("dependentTasks", []))
            for kind in ("parameters", "artifacts"):
                for spec in task.get("inputs", {}).get(kind, {}).values():
                    ref = spec.get("taskOutputParameter") or spec.get("taskOutputArtifact")
                    if ref:
                        found.add(ref["producerTask"])
            return found

        order, pending = [], dict(tasks)
        while pending:
            ready = sorted(n for n, t in pending.items() if upstream(t) <= set(order))
            if not ready:
                raise Refused(f"the DAG has a cycle or a missing task among {sorted(pending)}")
            order += ready
            for n in ready:
                del pending[n]
        return order

    # ------------------------------------------------------------------ driver

    def _input_parameters(self, name, task, results, pipeline_parameters) -> dict:
        values = {}
        for key, spec in task.get("inputs", {}).get("parameters", {}).items():
            if "runtimeValue" in spec:
                if "constant" not in spec["runtimeValue"]:
                    kind = next(iter(spec["runtimeValue"]), "")
                    raise TaskFailed(name, "param runtime value spec of type "
                                           f"*pipelinespec.ValueOrRuntimeParameter_"
                                           f"{kind[:1].upper() + kind[1:]} not implemented")
                values[key] = spec["runtimeValue"]["constant"]
            elif "taskOutputParameter" in spec:
                ref = spec["taskOutputParameter"]
                values[key] = results[ref["producerTask"]].parameters[ref["outputParameterKey"]]
            elif "componentInputParameter" in spec:
                values[key] = pipeline_parameters[spec["componentInputParameter"]]
            else:
                raise TaskFailed(name, f"parameter {key}: spec {spec} not implemented")
        return values

    def _runtime_artifact(self, artifact_id: int) -> dict:
        """toRuntimeArtifact + the TODO in GetOutputArtifactsByExecutionId: no type schema."""
        [artifact] = self.mlmd.get_artifacts_by_id([artifact_id])
        metadata = {k: _mlmd_to_json(v) for k, v in artifact.properties.items()}
        metadata.update({k: _mlmd_to_json(v) for k, v in artifact.custom_properties.items()})
        return {"name": str(artifact.id), "type": {"instanceSchema": ""}, "uri": artifact.uri,
                "metadata": metadata}

    def _executor_input(self, name, task, component, run_root, results, pipeline_parameters,
                        pod: Path) -> dict:
        artifacts = {}
        for key, spec in task.get("inputs", {}).get("artifacts", {}).items():
            if "taskOutputArtifact" not in spec:
                raise TaskFailed(name, f"artifact spec of type {list(spec)} not implemented yet")
            ref = spec["taskOutputArtifact"]
            artifact_id = results[ref["producerTask"]].artifacts[ref["outputArtifactKey"]]
            artifacts[key] = {"artifacts": [self._runtime_artifact(artifact_id)]}
        outputs = component.get("outputDefinitions", {})
        return {
            "inputs": {"parameterValues": self._input_parameters(
                name, task, results, pipeline_parameters), "artifacts": artifacts},
            "outputs": {
                "artifacts": {key: {"artifacts": [dict(
                    type=d["artifactType"], uri=f"{run_root}/{name}/{key}",
                    **({"metadata": d["metadata"]} if "metadata" in d else {}))]}
                    for key, d in outputs.get("artifacts", {}).items()},
                # KFP: /tmp/kfp/outputs/<name> and /tmp/kfp_outputs/...; here inside the pod dir.
                "parameters": {key: {"outputFile": str(pod / "tmp/kfp/outputs" / key)}
                               for key in outputs.get("parameters", {})},
                "outputFile": str(pod / "tmp/kfp_outputs/output_metadata.json"),
            },
        }

    @staticmethod
    def _fingerprint(executor_input: dict, component: dict, container: dict) -> str:
        """GenerateCacheKey + sha256 of its JSON with sorted keys (cacheutils/cache.go)."""
        outputs = executor_input["outputs"]
        key = {
            "inputArtifactNames": {
                k: {"artifactNames": [a["name"] for a in v["artifacts"]]}
                for k, v in executor_input["inputs"]["artifacts"].items()},
            "inputParameterValues": executor_input["inputs"]["parameterValues"],
            "outputArtifactsSpec": {k: {kk: vv for kk, vv in v["artifacts"][0].items()
                                        if kk != "uri"}
                                    for k, v in outputs["artifacts"].items()},
            "outputParametersSpec": {
                k: d["parameterType"]
                for k, d in component.get("outputDefinitions", {}).get("parameters", {}).items()},
            "containerSpec": {"image": container["image"],
                              "cmdArgs": list(container.get("command", []))
                              + list(container.get("args", []))},
        }
        text = json.dumps(key, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @staticmethod
    def pod_resources(name: str, container: dict) -> dict:
        """The driver's resource limits (driver.go): accelerator type verbatim as the name."""
        resources = container.get("resources", {})
        limits = {}
        if "memoryLimit" in resources:
            limits["memory"] = f"{resources['memoryLimit']:g}G"
        if "cpuLimit" in resources:
            limits["cpu"] = f"{resources['cpuLimit']:g}"
        accelerator = resources.get("accelerator", {})
        if accelerator.get("type"):
            if not RESOURCE_NAME.match(accelerator["type"]) or "_" in accelerator["type"]:
                raise TaskFailed(name, f"pod spec invalid: resource name "
                                       f"{accelerator['type']!r} is not a valid Kubernetes "
                                       "resource name (e.g. nvidia.com/gpu)")
            limits[accelerator["type"]] = str(int(accelerator.get("count", 1)))
        return limits

    # ------------------------------------------------------------------ launcher

    def _locate(self, uri: str) -> tuple[ObjectStore, str, str]:
        """(store, bucket, key) of a store URI (ParseBucketConfig + KeyFromURI)."""
        for scheme in MOUNTS:
            if uri.startswith(scheme):
                bucket, _, key = uri[len(scheme):].partition("/")
                return self.stores[scheme], bucket, key.rstrip("/")
        raise ValueError(f"{uri}: unsupported storage scheme")

    @staticmethod
    def _local_path(pod: Path, uri: str) -> Path:
        for scheme, mount in MOUNTS.items():
            if uri.startswith(scheme):
                return pod / mount / uri[len(scheme):]
        raise ValueError(f"failed to generate local path for URI {uri}: unsupported storage scheme")

    @staticmethod
    def _mkdir_all(path: str) -> None:
        """Go's os.MkdirAll: an existing non-directory on the way is ENOTDIR, named."""
        if os.path.isdir(path):
            return
        if os.path.exists(path):
            raise OSError(f"mkdir {path}: not a directory")
        parent = os.path.dirname(path.rstrip("/"))
        if parent and parent != path:
            KfpEmulator._mkdir_all(parent)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            if not os.path.isdir(path):
                raise OSError(f"mkdir {path}: not a directory") from None

    def _download_blob(self, uri: str, local_dir: Path) -> None:
        """objectstore.DownloadBlob: every object under the key prefix, markers included."""
        store, bucket, blob_dir = self._locate(uri)
        for key in store.names(bucket, blob_dir):  # bucket.List(Prefix: blobDir)
            relative = os.path.relpath(key, blob_dir) if key != blob_dir else "."
            local = os.path.normpath(os.path.join(local_dir, relative))  # filepath.Join
            where = f'downloadFile(): unable to complete copying "{key}" to local storage ' \
                    f'"{local}"'
            try:
                self._mkdir_all(os.path.dirname(local))
            except OSError as e:
                raise OSError(f'{where}: failed to create local directory '
                              f'"{os.path.dirname(local)}": {e}') from None
            try:
                with open(local, "wb") as f:  # os.Create
                    f.write(store.get(bucket, key) or b"")
            except IsADirectoryError:
                raise OSError(f'{where}: unable to open local file "{local}" for writing: '
                              f'open {local}: is a directory') from None

    def _upload_blob(self, local_path: Path, uri: str) -> None:
        """objectstore.UploadBlob: files only, directories walked; nothing when absent."""
        store, bucket, blob_path = self._locate(uri)
        if not local_path.exists():
            return  # launcher_v2.go: "We allow components to not produce output files"
        if local_path.is_file():
            store.put(bucket, blob_path, local_path.read_bytes())
            return
        for entry in sorted(local_path.iterdir()):
            self._upload_blob(entry, f"{uri.rstrip('/')}/{entry.name}")

    def download(self, uri: str) -> Path:
        """A fresh local copy of the artifact at ``uri``, made as the launcher makes it."""
        target = self.work_dir / "inspect" / uuid.uuid4().hex
        self._download_blob(uri, target)
        return target

    def close(self) -> None:
        self.gcs.__exit__(None, None, None)

    def _substitute(self, text: str, executor_input: dict, pod: Path) -> str:
        """getPlaceholders + strings.ReplaceAll (launcher_v2.go)."""
        text = text.replace("{{$}}", json.dumps(executor_input, separators=(",", ":")))
        for key, value in executor_input["inputs"]["parameterValues"].items():
            text = text.replace(f"{{{{$.inputs.parameters['{key}']}}}}", _placeholder_text(value))
        for direction in ("inputs", "outputs"):
            for key, lst in executor_input[direction]["artifacts"].items():
                uri = lst["artifacts"][0]["uri"]
                text = text.replace(f"{{{{$.{direction}.artifacts['{key}'].uri}}}}", uri)
                text = text.replace(f"{{{{$.{direction}.artifacts['{key}'].path}}}}",
                                    str(self._local_path(pod, uri)))
        for key, p in executor_input["outputs"]["parameters"].items():
            text = text.replace(f"{{{{$.outputs.parameters['{key}'].output_file}}}}",
                                p["outputFile"])
        return text

    def _run_task(self, spec, name, task, run_root, bucket_prefix, results,
                  pipeline_parameters) -> TaskResult:
        component = spec["components"][task["componentRef"]["name"]]
        executor = spec["deploymentSpec"]["executors"][component["executorLabel"]]
        if "container" not in executor:
            raise TaskFailed(name, "only container executors are emulated")
        container = executor["container"]
        pod = self.pods / f"{name}-{uuid.uuid4().hex[:8]}"
        executor_input = self._executor_input(name, task, component, run_root, results,
                                              pipeline_parameters, pod)
        limits = self.pod_resources(name, container)
        fingerprint = None
        if task.get("cachingOptions", {}).get("enableCache"):
            fingerprint = self._fingerprint(executor_input, component, container)
            if fingerprint in self.cache:
                hit = self.cache[fingerprint]
                return TaskResult("CACHED", dict(hit.artifacts), dict(hit.parameters), {}, limits)

        # Launcher: download inputs, prepare output folders, run, read the output file.
        for key, lst in executor_input["inputs"]["artifacts"].items():
            for artifact in lst["artifacts"]:
                try:
                    self._download_blob(artifact["uri"], self._local_path(pod, artifact["uri"]))
                except OSError as e:
                    raise TaskFailed(name, f"failed to download input artifact \"{key}\" from "
                                           f"remote storage URI \"{artifact['uri']}\": {e}") \
                        from None
        for lst in executor_input["outputs"]["artifacts"].values():
            self._local_path(pod, lst["artifacts"][0]["uri"]).parent.mkdir(parents=True,
                                                                         exist_ok=True)
        for p in executor_input["outputs"]["parameters"].values():
            Path(p["outputFile"]).parent.mkdir(parents=True, exist_ok=True)
        command = [self._substitute(c, executor_input, pod)
                   for c in container.get("command", []) + container.get("args", [])]
        if command and command[0] == "python":  # the venv stands in for the image's python
            command[0] = self.python
        log_path = pod / "log.txt"
        started = time.monotonic()
        with open(log_path, "w") as log:
            proc = subprocess.run(command, cwd=pod, stdout=log, stderr=subprocess.STDOUT,
                                  env=dict(self.env, **{LOCAL_ROOT_ENV: str(pod)}),
                                  timeout=self.task_timeout_s)
        log_text = log_path.read_text()
        if proc.returncode != 0:
            raise TaskFailed(name, f"exit code {proc.returncode} after "
                                   f"{time.monotonic() - started:.0f} s; log {log_path}:\n"
                                   + log_text[-4000:])

        output_file = Path(executor_input["outputs"]["outputFile"])
        executor_output = pipeline_spec_pb2.ExecutorOutput()
        if output_file.exists():
            try:  # protojson.Unmarshal: strict
                json_format.Parse(output_file.read_text(), executor_output)
            except json_format.ParseError as e:
                raise TaskFailed(name, f"failed to unmarshall ExecutorOutput in file "
                                       f"{output_file}: {e}") from None
        parameters = {}
        for key, d in component.get("outputDefinitions", {}).get("parameters", {}).items():
            if key in executor_output.parameter_values:
                parameters[key] = json_format.MessageToDict(executor_output.parameter_values[key])
            else:
                path = Path(executor_input["outputs"]["parameters"][key]["outputFile"])
                if not path.exists():
                    raise TaskFailed(name, f"failed to read output parameter name={key!r} "
                                           f"type={d['parameterType']!r} path={str(path)!r}")
                parameters[key] = _text_to_value(path.read_text(), d["parameterType"])

        artifacts = {}
        for key, lst in executor_input["outputs"]["artifacts"].items():
            provisioned = lst["artifacts"][0]
            uri, metadata = provisioned["uri"], struct_pb2.Struct()
            metadata.update(provisioned.get("metadata", {}))
            if key in executor_output.artifacts and executor_output.artifacts[key].artifacts:
                produced = executor_output.artifacts[key].artifacts[0]
                uri = produced.uri or uri
                for field, value in produced.metadata.fields.items():
                    metadata.fields[field].CopyFrom(value)
            if not uri.startswith(bucket_prefix):
                raise TaskFailed(name, f"failed to upload output artifact {key!r}: URI {uri!r} "
                                       f"does not have expected bucket prefix {bucket_prefix!r}")
            self._upload_blob(self._local_path(pod, uri), uri)
            artifacts[key] = self._record_artifact(
                key, _schema_title(provisioned["type"]), uri, metadata)
        result = TaskResult("COMPLETE", artifacts, parameters, executor_input, limits, log_text)
        if fingerprint is not None:
            self.cache.setdefault(fingerprint, result)
        return result

    def _record_artifact(self, output_key: str, title: str, uri: str,
                         metadata: struct_pb2.Struct) -> int:
        """RecordArtifact (metadata/client.go): type by title, metadata as custom properties."""
        type_id = self.mlmd.put_artifact_type(metadata_store_pb2.ArtifactType(name=title),
                                              can_add_fields=True)
        artifact = metadata_store_pb2.Artifact(type_id=type_id, uri=uri,
                                               state=metadata_store_pb2.Artifact.LIVE)
        artifact.custom_properties["display_name"].string_value = output_key
        for field, value in metadata.fields.items():
            artifact.custom_properties[field].CopyFrom(_struct_to_mlmd(value))
        [artifact_id] = self.mlmd.put_artifacts([artifact])
        return artifact_id

    def artifact(self, artifact_id: int) -> dict:
        """An artifact as the next task would receive it."""
        return self._runtime_artifact(artifact_id)


