"""An embedded, TensorFlow-Serving-compatible model server.

Production serves the Pusher's output with the official ``tensorflow/serving``
image (see ``serving/deploy``). The ``tensorflow_model_server`` binary is not
installable here, so local runs, the demo and the tests use this server, which
answers the same protocol, so that one client (``serving.client``) talks to both:

* gRPC ``tensorflow.serving.PredictionService`` (``Predict``, ``GetModelMetadata``)
  and ``tensorflow.serving.ModelService`` (``GetModelStatus``), with the stubs
  generated in ``tensorflow-serving-api``;
* REST on a second port: ``GET /v1/models/NAME[/versions/V][/metadata]``,
  ``POST /v1/models/NAME[/versions/V]:predict`` (``instances`` or ``inputs``).

Model layout and policy are TF Serving's: ``<base_path>/<model_name>/<int version>/``,
the newest complete version is served (``model_version_policy { latest { num_versions: 1 } }``),
the directory is polled, a new version is loaded fully before it replaces the
old one, and requests in flight finish on the version they started with.
A version directory counts as complete once ``saved_model.pb`` exists (the
Pusher copies it last). Error codes follow TF Serving: unknown model or version
NOT_FOUND, bad inputs INVALID_ARGUMENT, unknown signature FAILED_PRECONDITION,
request over ``max_request_bytes`` RESOURCE_EXHAUSTED (REST: 413), and, before
the first version is loaded, UNAVAILABLE.

Optional server-side batching (``max_batch_size > 0``) merges concurrent Predict
calls on the same version and signature (and equal per-row shapes) into one call
of up to ``max_batch_size`` rows, waiting at most ``batch_timeout_ms`` for peers.

    with ModelServer("/srv/models", "cgd", grpc_port=0, rest_port=0) as server:
        print(server.grpc_target, server.rest_url)
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import os
import re
import threading
import time
import weakref
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from core.names import SERVING_SIGNATURE

log = logging.getLogger("cgd.serving")

DEFAULT_SIGNATURE = SERVING_SIGNATURE
SAVED_MODEL_FILE = "saved_model.pb"
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024

# TF error codes are gRPC's numbers (tensorflow/core/protobuf/error_codes.proto).
_GRPC_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

# TF Serving's ToHTTPStatusCode (model_servers/http_rest_api_handler).
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
    "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}

State = get_model_status_pb2.ModelVersionStatus.State


class ServingStatus(Exception):
    """A request failed with a gRPC status code (by name, e.g. ``"NOT_FOUND"``)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return grpc.StatusCode[self.code]


# --------------------------------------------------------------------------- model versions


@dataclasses.dataclass(eq=False)
class Servable:
    """One loaded version: the SavedModel, its signatures and their SignatureDefs."""

    version: int
    path: str
    loaded: Any
    signatures: dict  # name -> ConcreteFunction
    input_specs: dict  # name -> {input: tf.TensorSpec}
    signature_defs: Mapping  # name -> tensorflow.SignatureDef (from saved_model.pb)


def load_servable(path: str, version: int) -> Servable:
    with open(os.path.join(path, SAVED_MODEL_FILE), "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    if not saved_model.meta_graphs:
        raise ValueError(f"{path}: saved_model.pb holds no MetaGraphDef")
    loaded = tf.saved_model.load(path)
    signatures = dict(loaded.signatures)
    if not signatures:
        raise ValueError(f"{path}: the SavedModel has no signatures")
    input_specs = {}
    for name, fn in signatures.items():
        _, kwargs = fn.structured_input_signature
        input_specs[name] = dict(kwargs)
    return Servable(version, path, loaded, signatures, input_specs,
                    saved_model.meta_graphs[0].signature_def)


def scan_versions(model_dir: str) -> dict[int, str]:
    """Complete version directories under ``model_dir``: {version: path}.

    Non-numeric names are ignored, and so are directories without
    ``saved_model.pb`` (a push in progress).
    """
    try:
        names = os.listdir(model_dir)
    except FileNotFoundError:
        return {}
    versions = {}
    for name in names:
        if not name.isdigit():
            continue
        path = os.path.join(model_dir, name)
        if os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
            versions[int(name)] = path
    return versions


class ModelManager:
    """Serves the newest complete version of one model and swaps in new ones.

    ``current`` is replaced by one reference assignment after the new version is
    fully loaded; a request takes the reference once and uses it to the end, so
    an old version stays alive until its last request finishes.
    """

    def __init__(self, base_path: str, model_name: str):
        self.base_path = os.path.abspath(base_path)
        self.model_name = model_name
        self.model_dir = os.path.join(self.base_path, model_name)
        self.current: Servable | None = None
        self._states: dict[int, tuple[int, str, str]] = {}  # version -> (state, code, message)
        self._failed: dict[int, tuple] = {}  # version -> (mtime, size) of the saved_model.pb that failed
        self._lock = threading.Lock()  # one poll at a time
        self._warned_empty = False

    def poll(self) -> bool:
        """Load the newest complete version if it is not the one served. True if swapped."""
        with self._lock:
            versions = scan_versions(self.model_dir)
            candidates = [v for v in versions if not self._failed_unchanged(v, versions[v])]
            if not candidates:
                if not versions and not self._warned_empty:
                    log.warning("no versions of model %s found under %s yet", self.model_name,
                                self.model_dir)
                    self._warned_empty = True
                return False
            self._warned_empty = False
            newest = max(candidates)
            current = self.current
            if current is not None and current.version == newest:
                return False
            path = versions[newest]
            self._set_state(newest, State.LOADING)
            log.info("loading version %d of model %s from %s", newest, self.model_name, path)
            start = time.monotonic()
            try:
                servable = load_servable(path, newest)
            except Exception as e:  # noqa: BLE001 - any load failure keeps the old version
                self._failed[newest] = _mtime(os.path.join(path, SAVED_MODEL_FILE))
                self._set_state(newest, State.END, "UNKNOWN", f"failed to load {path}: {e}")
                log.error("failed to load version %d of model %s from %s: %s (still serving %s)",
                          newest, self.model_name, path, e,
                          current.version if current else "nothing")
                return False
            weakref.finalize(servable, log.info, "released version %d of model %s "
                             "(its last request finished)", newest, self.model_name).atexit = False
            self.current = servable  # the atomic swap
            self._set_state(newest, State.AVAILABLE)
            log.info("loaded version %d of model %s in %.1f s (signatures: %s)", newest,
                     self.model_name, time.monotonic() - start, ", ".join(sorted(servable.signatures)))
            if current is not None:
                self._set_state(current.version, State.END)
                log.info("unloading version %d of model %s (freed when its requests in flight finish)",
                         current.version, self.model_name)
            return True

    def _failed_unchanged(self, version: int, path: str) -> bool:
        return (version in self._failed
                and self._failed[version] == _mtime(os.path.join(path, SAVED_MODEL_FILE)))

    def _set_state(self, version: int, state: int, code: str = "OK", message: str = "") -> None:
        self._states[version] = (state, code, message)

    def version_states(self) -> dict[int, tuple[int, str, str]]:
        return dict(self._states)

    def get(self, version: int | None) -> Servable:
        servable = self.current
        if servable is None:
            raise ServingStatus("UNAVAILABLE", f"model {self.model_name} has no version loaded yet "
                                               f"(waiting for a version under {self.model_dir})")
        if version is not None and version != servable.version:
            raise ServingStatus("NOT_FOUND", f"Servable not found for request: "
                                             f"Specific({self.model_name}, {version})")
        return servable


def _mtime(path: str) -> tuple:
    """(mtime_ns, size): a failed load is retried once saved_model.pb changes (a copy finished)."""
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)


# --------------------------------------------------------------------------- batching


class _Task:
    __slots__ = ("inputs", "rows", "outputs", "error", "done")

    def __init__(self, inputs, rows):
        self.inputs, self.rows = inputs, rows
        self.outputs = self.error = None
        self.done = False


class _Queue:
    __slots__ = ("tasks", "rows", "leader", "deadline")

    def __init__(self):
        self.tasks: list[_Task] = []
        self.rows = 0
        self.leader: _Task | None = None
        self.deadline = 0.0


class Batcher:
    """Merges concurrent calls with the same key into one call of at most ``max_batch_size`` rows.

    No extra threads: the first request of a batch (the leader) waits up to the
    timeout for peers, runs the merged batch on its own thread and hands each
    peer its rows. If a merged batch fails, its requests are rerun one by one so
    that an error (say, one corrupt image) is reported only to the request that
    caused it.
    """

    def __init__(self, max_batch_size: int, batch_timeout_ms: float):
        self.max_batch_size = int(max_batch_size)
        self.timeout_s = max(0.0, float(batch_timeout_ms)) / 1000.0
        self._cond = threading.Condition()
        self._queues: dict[Any, _Queue] = {}
        self.batches_run = 0
        self.requests_merged = 0  # requests that ran in a batch of two or more

    def run(self, key, fn: Callable[[dict], dict], inputs: dict, rows: int) -> dict:
        if rows >= self.max_batch_size:
            return fn(inputs)  # too big to merge: run alone
        task = _Task(inputs, rows)
        with self._cond:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue()
            queue.tasks.append(task)
            queue.rows += rows
            if queue.leader is None:
                queue.leader = task
                queue.deadline = time.monotonic() + self.timeout_s
            self._cond.notify_all()
            while True:
                if task.done:
                    break
                queue = self._queues.get(key)
                if queue is not None and queue.leader is task:
                    remaining = queue.deadline - time.monotonic()
                    if queue.rows >= self.max_batch_size or remaining <= 0:
                        batch = self._take(key, queue)
                        break
                    self._cond.wait(remaining)
                else:
                    self._cond.wait()
        if task.done:
            return self._result(task)
        self._execute(fn, batch)
        with self._cond:
            self._cond.notify_all()
        return self._result(task)

    def _take(self, key, queue: _Queue) -> list[_Task]:
        batch, rows = [], 0
        while queue.tasks and (not batch or rows + queue.tasks[0].rows <= self.max_batch_size):
            task = queue.tasks.pop(0)
            batch.append(task)
            rows += task.rows
        queue.rows -= rows
        if queue.tasks:  # the rest form the next batch, which is due now
            queue.leader = queue.tasks[0]
            queue.deadline = time.monotonic()
            self._cond.notify_all()
        else:
            del self._queues[key]
        return batch

    def _execute(self, fn, batch: list[_Task]) -> None:
        self.batches_run += 1
        if len(batch) == 1:
            self._run_one(fn, batch[0])
            return
        self.requests_merged += len(batch)
        total = sum(t.rows for t in batch)
        try:
            merged = {k: np.concatenate([t.inputs[k] for t in batch]) for k in batch[0].inputs}
            outputs = fn(merged)
            if any(np.ndim(v) == 0 or np.shape(v)[0] != total for v in outputs.values()):
                raise ValueError("an output has no batch dimension")
        except Exception:  # noqa: BLE001 - rerun alone so the error reaches its own request
            for task in batch:
                self._run_one(fn, task)
            return
        start = 0
        for task in batch:
            task.outputs = {k: v[start:start + task.rows] for k, v in outputs.items()}
            task.done = True
            start += task.rows

    @staticmethod
    def _run_one(fn, task: _Task) -> None:
        try:
            task.outputs = fn(task.inputs)
        except Exception as e:  # noqa: BLE001 - re-raised on the request's own thread
            task.error = e
        task.done = True

    @staticmethod
    def _result(task: _Task) -> dict:
        if task.error is not None:
            raise task.error
        return task.outputs


# --------------------------------------------------------------------------- prediction core


class ModelServerCore:
    """Protocol-independent request handling shared by gRPC and REST."""

    def __init__(self, manager: ModelManager, batcher: Batcher | None = None):
        self.manager = manager
        self.batcher = batcher
        self.model_name = manager.model_name
        self._metrics_lock = threading.Lock()
        self.request_counts: dict[tuple[str, str], int] = {}  # (api, status) -> count

    def count(self, api: str, status: str) -> None:
        with self._metrics_lock:
            self.request_counts[(api, status)] = self.request_counts.get((api, status), 0) + 1

    def servable(self, model_name: str, version: int | None) -> Servable:
        if model_name != self.model_name:
            raise ServingStatus("NOT_FOUND", f"Servable not found for request: "
                                             f"{'Latest' if version is None else 'Specific'}"
                                             f"({model_name}{'' if version is None else f', {version}'})")
        return self.manager.get(version)

    def signature(self, servable: Servable, signature_name: str) -> str:
        name = signature_name or DEFAULT_SIGNATURE
        if name not in servable.signatures:
            raise ServingStatus("FAILED_PRECONDITION",
                                f"Serving signature name: \"{name}\" not found in signature def "
                                f"(available: {', '.join(sorted(servable.signatures))})")
        return name

    def predict(self, servable: Servable, signature_name: str, inputs: dict,
                output_filter=()) -> dict:
        """Validate ``inputs`` ({name: (tf.DType, np.ndarray)}) and run the signature."""
        specs = servable.input_specs[signature_name]
        sent, expected = set(inputs), set(specs)
        if sent != expected:
            extra, missing = sorted(sent - expected), sorted(expected - sent)
            raise ServingStatus(
                "INVALID_ARGUMENT",
                f"input size does not match signature \"{signature_name}\": {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}.")
        arrays = {}
        for name, (dtype, array) in inputs.items():
            spec = specs[name]
            if dtype != spec.dtype:
                raise ServingStatus("INVALID_ARGUMENT",
                                    f"input '{name}': expects dtype {spec.dtype.name} but "
                                    f"{dtype.name} is provided")
            if not spec.shape.is_compatible_with(array.shape):
                raise ServingStatus("INVALID_ARGUMENT",
                                    f"input '{name}': expects shape {_shape_str(spec.shape)} but "
                                    f"shape {list(array.shape)} is provided")
            arrays[name] = array
        fn = servable.signatures[signature_name]
        outputs_available = sorted(fn.structured_outputs)
        for name in output_filter:
            if name not in outputs_available:
                raise ServingStatus("INVALID_ARGUMENT",
                                    f"output tensor alias not found in signature: {name} "
                                    f"(outputs: {', '.join(outputs_available)})")

        def call(batch_inputs):
            return _call_signature(fn, specs, batch_inputs)

        rows = {a.shape[0] if a.ndim else -1 for a in arrays.values()}
        if self.batcher is not None and len(rows) == 1 and -1 not in rows:
            key = (id(servable), signature_name,
                   tuple(sorted((k, a.dtype.str, a.shape[1:]) for k, a in arrays.items())))
            outputs = self.batcher.run(key, call, arrays, rows.pop())
        else:
            outputs = call(arrays)
        if output_filter:
            outputs = {k: outputs[k] for k in output_filter}
        return outputs

    def status(self, model_name: str, version: int | None) -> list[tuple[int, int, str, str]]:
        states = self.manager.version_states() if model_name == self.model_name else {}
        if not states:
            raise ServingStatus("NOT_FOUND", f"Could not find any versions of model {model_name}")
        if version is not None:
            if version not in states:
                raise ServingStatus("NOT_FOUND", f"Could not find version {version} of model {model_name}")
            states = {version: states[version]}
        return [(v, *states[v]) for v in sorted(states, reverse=True)]

    def signature_def_map(self, servable: Servable) -> get_model_metadata_pb2.SignatureDefMap:
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in servable.signature_defs.items():
            sig_map.signature_def[name].CopyFrom(sig)
        return sig_map


def _call_signature(fn, specs: dict, inputs: dict) -> dict:
    try:
        tensors = {k: tf.convert_to_tensor(v, dtype=specs[k].dtype) for k, v in inputs.items()}
        outputs = fn(**tensors)
    except tf.errors.OpError as e:
        raise ServingStatus(_GRPC_CODE_BY_NUMBER.get(e.error_code, grpc.StatusCode.UNKNOWN).name,
                            _clean_tf_message(e.message)) from None
    except (TypeError, ValueError) as e:
        raise ServingStatus("INVALID_ARGUMENT", str(e)) from None
    return {k: v.numpy() for k, v in outputs.items()}


def _clean_tf_message(message: str) -> str:
    """The op's own error, without eager's "Graph execution error" header and Python stack."""
    if "Detected at node" not in message:
        return message
    kept = [line for line in message.splitlines()
            if line.strip() and not line.startswith((" ", "Graph execution error",
                                                      "Detected at node", "<stack traces"))]
    return "\n".join(kept) or message


def _shape_str(shape: tf.TensorShape) -> str:
    if shape.rank is None:
        return "<unknown>"
    return "[" + ",".join("-1" if d is None else str(d) for d in shape.as_list()) + "]"


# --------------------------------------------------------------------------- gRPC


def _abort(context, status: ServingStatus):
    context.abort(status.grpc_code, status.message)


def _spec_version(spec) -> int | None:
    """model_spec.version, or None for the newest; version labels are not configured here."""
    if spec.HasField("version_label"):
        raise ServingStatus("INVALID_ARGUMENT",
                            f"Unrecognized servable version label: {spec.version_label}")
    return spec.version.value if spec.HasField("version") else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ModelServerCore):
        self.core = core

    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        try:
            spec = request.model_spec
            servable = self.core.servable(spec.name, _spec_version(spec))
            signature = self.core.signature(servable, spec.signature_name)
            inputs = {}
            for name, proto in request.inputs.items():
                try:
                    dtype = tf.dtypes.as_dtype(proto.dtype)
                    array = tf.make_ndarray(proto)
                except (TypeError, ValueError) as e:
                    raise ServingStatus("INVALID_ARGUMENT",
                                        f"input '{name}': not a valid TensorProto: {e}") from None
                inputs[name] = (dtype, array)
            outputs = self.core.predict(servable, signature, inputs, list(request.output_filter))
            response = predict_pb2.PredictResponse()
            response.model_spec.name = self.core.model_name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        except ServingStatus as e:
            self.core.count("grpc_predict", e.code)
            _abort(context, e)
        self.core.count("grpc_predict", "OK")
        return response

    def GetModelMetadata(self, request, context):  # noqa: N802
        try:
            spec = request.model_spec
            if not request.metadata_field:
                raise ServingStatus("INVALID_ARGUMENT",
                                    "GetModelMetadataRequest must specify at least one metadata_field")
            for field in request.metadata_field:
                if field != "signature_def":
                    raise ServingStatus("INVALID_ARGUMENT", f"Metadata field {field} is not supported")
            servable = self.core.servable(spec.name, _spec_version(spec))
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = self.core.model_name
            response.model_spec.version.value = servable.version
            response.metadata["signature_def"].Pack(self.core.signature_def_map(servable))
        except ServingStatus as e:
            self.core.count("grpc_metadata", e.code)
            _abort(context, e)
        self.core.count("grpc_metadata", "OK")
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ModelServerCore):
        self.core = core

    def GetModelStatus(self, request, context):  # noqa: N802
        spec = request.model_spec
        try:
            rows = self.core.status(spec.name, _spec_version(spec))
        except ServingStatus as e:
            _abort(context, e)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state, code, message in rows:
            status = response.model_version_status.add()
            status.version = version
            status.state = state
            status.status.error_code = _grpc_code_number(code)
            status.status.error_message = message
        return response


def _grpc_code_number(name: str) -> int:
    return grpc.StatusCode[name].value[0]


# --------------------------------------------------------------------------- REST

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<rest>/metadata|:[a-z]+)?$")


class _RestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cgd-model-server"
    core: ModelServerCore  # set on the subclass
    max_request_bytes: int

    def log_message(self, fmt, *args):  # route access logs to logging at debug level
        log.debug("rest %s - %s", self.address_string(), fmt % args)

    def _send(self, code: int, body: dict | str, content_type="application/json") -> None:
        data = (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: ServingStatus, http_code: int | None = None) -> None:
        self.core.count(f"rest_{self.command.lower()}", status.code)
        self._send(http_code or HTTP_STATUS.get(status.code, 500), {"error": status.message})

    def _route(self):
        path = self.path.split("?", 1)[0]
        match = _MODEL_PATH.match(path)
        if not match:
            return None
        if match["label"] is not None:
            raise ServingStatus("INVALID_ARGUMENT",
                                f"Unrecognized servable version label: {match['label']}")
        version = int(match["version"]) if match["version"] is not None else None
        return match["name"], version, match["rest"] or ""

    def do_GET(self):  # noqa: N802
        self._guarded(self._get)

    def do_POST(self):  # noqa: N802
        self._guarded(self._post)

    def _guarded(self, handler) -> None:
        try:
            handler()
        except ServingStatus as e:
            self._error(e)
        except Exception as e:  # noqa: BLE001 - answer 500 instead of dropping the connection
            log.exception("REST %s %s failed", self.command, self.path)
            self._error(ServingStatus("INTERNAL", f"{type(e).__name__}: {e}"))

    def _get(self):
        if self.path.split("?", 1)[0] == "/monitoring/prometheus/metrics":
            self._send(200, self.core_metrics(), "text/plain; version=0.0.4")
            return
        route = self._route()
        if route is None or route[2] not in ("", "/metadata"):
            raise ServingStatus("NOT_FOUND", f"Malformed request: GET {self.path}")
        name, version, rest = route
        if rest == "/metadata":
            servable = self.core.servable(name, version)
            body = {
                "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
                "metadata": {"signature_def": json_format.MessageToDict(
                    self.core.signature_def_map(servable), preserving_proto_field_name=True)},
            }
        else:
            body = {"model_version_status": [
                {"version": str(v), "state": State.Name(state),
                 "status": {"error_code": code, "error_message": message}}
                for v, state, code, message in self.core.status(name, version)]}
        self.core.count("rest_get", "OK")
        self._send(200, body)

    def _post(self):
        route = self._route()
        if route is None or not route[2].startswith(":"):
            raise ServingStatus("NOT_FOUND", f"Malformed request: POST {self.path}")
        name, version, rest = route
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.max_request_bytes:
            self.close_connection = True
            self._drain(length)  # so that the client reads the answer, not a reset
            self._error(ServingStatus(
                "RESOURCE_EXHAUSTED", f"request body of {length} bytes is larger than the "
                                      f"limit of {self.max_request_bytes} bytes"), 413)
            return
        data = self.rfile.read(length)
        if rest != ":predict":
            raise ServingStatus("UNIMPLEMENTED", f"{rest[1:]} is not supported by this server "
                                                 "(only :predict)")
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ServingStatus("INVALID_ARGUMENT", f"JSON Parse error: {e}") from None
        if not isinstance(body, dict):
            raise ServingStatus("INVALID_ARGUMENT", "request body must be a JSON object")
        servable = self.core.servable(name, version)
        signature = self.core.signature(servable, body.get("signature_name") or "")
        specs = servable.input_specs[signature]
        row_format, inputs = _parse_rest_inputs(body, specs)
        outputs = self.core.predict(servable, signature, inputs)
        if row_format:
            reply = {"predictions": _rows_json(outputs)}
        else:
            reply = {"outputs": _columns_json(outputs)}
        self.core.count("rest_post", "OK")
        self._send(200, reply)

    def _drain(self, length: int, cap: int = 64 * 1024 * 1024) -> None:
        left = min(length, cap)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            left -= len(chunk)

    def core_metrics(self) -> str:
        return prometheus_text(self.core)


def _parse_rest_inputs(body: dict, specs: dict) -> tuple[bool, dict]:
    """(row_format, {name: (dtype, ndarray)}) from a TF Serving REST predict body."""
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances == has_inputs:
        raise ServingStatus("INVALID_ARGUMENT",
                            "Missing 'inputs' or 'instances' key" if not has_instances else
                            "Not both 'inputs' and 'instances' may be specified")
    names = sorted(specs)
    if has_instances:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise ServingStatus("INVALID_ARGUMENT", "'instances' must be a non-empty JSON list")
        named = all(isinstance(i, dict) and not _is_b64(i) for i in instances)
        if named:
            keys = set(instances[0])
            if any(set(i) != keys for i in instances):
                raise ServingStatus("INVALID_ARGUMENT",
                                    "all 'instances' must name the same inputs")
            columns = {k: [i[k] for i in instances] for k in keys}
        elif len(names) == 1:
            columns = {names[0]: instances}
        else:
            raise ServingStatus("INVALID_ARGUMENT",
                                f"the signature has {len(names)} inputs ({', '.join(names)}): "
                                "each instance must be an object naming them")
        return True, {k: _json_to_array(k, v, specs.get(k)) for k, v in columns.items()}
    inputs = body["inputs"]
    if isinstance(inputs, dict) and not _is_b64(inputs):
        columns = inputs
    elif len(names) == 1:
        columns = {names[0]: inputs}
    else:
        raise ServingStatus("INVALID_ARGUMENT",
                            f"the signature has {len(names)} inputs ({', '.join(names)}): "
                            "'inputs' must be an object naming them")
    return False, {k: _json_to_array(k, v, specs.get(k)) for k, v in columns.items()}


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _json_to_array(name: str, value, spec) -> tuple:
    if spec is None:  # an unknown input: the name check in predict reports it
        return tf.string, np.asarray([], dtype=object)
    dtype = spec.dtype
    try:
        if dtype == tf.string:
            array = np.asarray(_decode_strings(value), dtype=object)
        else:
            array = np.asarray(value)
            if array.dtype == object or array.dtype.kind in "USV":
                raise ValueError("not a uniform numeric array (ragged rows or strings)")
            if dtype.is_integer and array.dtype.kind == "f":
                if not np.all(np.mod(array, 1) == 0):
                    raise ValueError(f"non-integer values for {dtype.name}")
            if dtype.is_integer and array.size and (array.min() < dtype.min or array.max() > dtype.max):
                raise ValueError(f"values out of range for {dtype.name}")
            if dtype == tf.bool and array.dtype != np.bool_:
                raise ValueError("expects true/false values")
            array = array.astype(dtype.as_numpy_dtype)
    except (ValueError, TypeError, binascii.Error) as e:
        raise ServingStatus("INVALID_ARGUMENT", f"input '{name}': cannot convert JSON to "
                                                f"{dtype.name}: {e}") from None
    if array.ndim == 0 and spec.shape.rank not in (None, 0):
        raise ServingStatus("INVALID_ARGUMENT",
                            f"input '{name}': expects shape {_shape_str(spec.shape)} but got a scalar")
    return dtype, array


def _decode_strings(value):
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    if _is_b64(value):
        return base64.b64decode(value["b64"], validate=True)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ValueError(f"expects a string or {{\"b64\": ...}}, got {type(value).__name__}")


def _json_value(array: np.ndarray, name: str):
    if array.dtype == object or array.dtype.kind == "S":
        def conv(v):
            if name.endswith("_bytes"):
                return {"b64": base64.b64encode(v).decode()}
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(v).decode()}
        return np.vectorize(conv, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def _rows_json(outputs: dict) -> list:
    if len(outputs) == 1:
        (name, value), = outputs.items()
        return _json_value(value, name)
    columns = {k: _json_value(v, k) for k, v in outputs.items()}
    n = len(next(iter(columns.values())))
    return [{k: columns[k][i] for k in columns} for i in range(n)]


def _columns_json(outputs: dict):
    if len(outputs) == 1:
        (name, value), = outputs.items()
        return _json_value(value, name)
    return {k: _json_value(v, k) for k, v in outputs.items()}


def prometheus_text(core: ModelServerCore) -> str:
    lines = ["# TYPE :tensorflow:serving:request_count counter"]
    with core._metrics_lock:  # noqa: SLF001
        counts = dict(core.request_counts)
    for (api, status), n in sorted(counts.items()):
        lines.append(f':tensorflow:serving:request_count{{model_name="{core.model_name}",'
                     f'api="{api}",status="{status}"}} {n}')
    current = core.manager.current
    lines.append("# TYPE cgd_serving_model_version gauge")
    lines.append(f'cgd_serving_model_version{{model_name="{core.model_name}"}} '
                 f'{current.version if current else 0}')
    if core.batcher is not None:
        lines.append(f"cgd_serving_batches_run {core.batcher.batches_run}")
        lines.append(f"cgd_serving_requests_merged {core.batcher.requests_merged}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the server


class ModelServer:
    """gRPC + REST model server for ``<base_path>/<model_name>/<version>/``.

    Args:
        base_path: directory holding ``<model_name>/`` (the Pusher's serving dir).
            TF Serving's ``--model_base_path`` is ``base_path/model_name``.
        grpc_port, rest_port: 0 picks a free port (see ``grpc_port``/``rest_port``
            after ``start()``); ``rest_port=None`` disables REST.
        poll_seconds: how often to look for new versions.
        max_batch_size, batch_timeout_ms: server-side batching, off when 0.
        max_request_bytes: larger requests fail with RESOURCE_EXHAUSTED (REST: 413).
    """

    def __init__(self, base_path: str, model_name: str, host: str = "127.0.0.1",
                 grpc_port: int = 8500, rest_port: int | None = 8501, poll_seconds: float = 2.0,
                 max_batch_size: int = 0, batch_timeout_ms: float = 5.0,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, grpc_workers: int = 16):
        if not model_name or "/" in model_name:
            raise ValueError(f"model_name must be non-empty without '/': {model_name!r}")
        if poll_seconds <= 0 or max_request_bytes <= 0 or max_batch_size < 0:
            raise ValueError("poll_seconds and max_request_bytes must be > 0, max_batch_size >= 0")
        self.manager = ModelManager(base_path, model_name)
        self.batcher = Batcher(max_batch_size, batch_timeout_ms) if max_batch_size > 0 else None
        self.core = ModelServerCore(self.manager, self.batcher)
        self.host = host
        self.model_name = model_name
        self.poll_seconds = float(poll_seconds)
        self.max_request_bytes = int(max_request_bytes)
        self._requested_ports = (grpc_port, rest_port)
        self._grpc_workers = max(int(grpc_workers), 2 * max_batch_size)
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc_server = None
        self._http_server = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    @property
    def grpc_target(self) -> str:
        return f"{_url_host(self.host)}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.rest_port}"

    def start(self) -> "ModelServer":
        if self._grpc_server is not None:
            raise RuntimeError("server already started")
        # Like tensorflow_model_server: load what is there before opening the ports.
        self.manager.poll()
        grpc_port, rest_port = self._requested_ports
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._grpc_workers, thread_name_prefix="grpc"),
            options=[("grpc.max_receive_message_length", self.max_request_bytes),
                     ("grpc.max_send_message_length", -1),
                     ("grpc.so_reuseport", 0)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.core), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.core), server)
        bound = server.add_insecure_port(f"{_url_host(self.host)}:{grpc_port}")
        if bound == 0:
            raise OSError(f"cannot bind gRPC port {self.host}:{grpc_port}")
        server.start()
        self._grpc_server, self.grpc_port = server, bound
        try:
            if rest_port is not None:
                handler = type("RestHandler", (_RestHandler,),
                               {"core": self.core, "max_request_bytes": self.max_request_bytes})
                httpd = ThreadingHTTPServer((self.host, rest_port), handler)
                httpd.daemon_threads = True
                self._http_server, self.rest_port = httpd, httpd.server_address[1]
                self._spawn(httpd.serve_forever, "rest")
        except Exception:
            self.stop()
            raise
        self._spawn(self._poll_loop, "version-poll")
        log.info("serving model %s from %s: gRPC %s%s", self.model_name, self.manager.model_dir,
                 self.grpc_target, f", REST {self.rest_url}" if self.rest_port else "")
        return self

    def _spawn(self, target, name):
        thread = threading.Thread(target=target, name=f"cgd-serving-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll_loop(self):
        while not self._stop.wait(self.poll_seconds):
            try:
                self.manager.poll()
            except Exception:  # noqa: BLE001 - keep polling; a bad push must not kill the server
                log.exception("polling %s failed", self.manager.model_dir)

    def wait_for_version(self, version: int | None = None, timeout_s: float = 30.0) -> int:
        """Block until ``version`` (or any version) is served; returns the served version."""
        deadline = time.monotonic() + timeout_s
        while True:
            current = self.manager.current
            if current is not None and (version is None or current.version >= version):
                return current.version
            if time.monotonic() > deadline:
                raise TimeoutError(f"model {self.model_name}: version {version or 'any'} not "
                                   f"loaded within {timeout_s} s")
            time.sleep(0.05)

    def stop(self, grace_s: float = 2.0) -> None:
        self._stop.set()
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._grpc_server is not None:
            self._grpc_server.stop(grace_s).wait()
            self._grpc_server = None
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        log.info("model server for %s stopped", self.model_name)

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# --------------------------------------------------------------------------- deploy config protos

def deploy_proto_classes() -> dict:
    """Message classes for the TF Serving config protos that tensorflow-serving-api does not ship.

    ``BatchingParameters`` (tensorflow_serving/servables/tensorflow/session_bundle_config.proto)
    and ``MonitoringConfig`` (tensorflow_serving/config/monitoring_config.proto), rebuilt
    with the same package, field names, numbers and types in a private descriptor
    pool, so that ``text_format`` checks ``serving/deploy`` files the way
    ``tensorflow_model_server`` parses them.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.AddSerializedFile(wrappers.SerializeToString())
    F = descriptor_pb2.FieldDescriptorProto
    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED

    def message(file, name, fields):
        msg = file.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            field = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name

    batching = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving", syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    i64 = (F.TYPE_MESSAGE, opt, ".google.protobuf.Int64Value")
    message(batching, "BatchingParameters", [
        ("max_batch_size", 1, *i64), ("batch_timeout_micros", 2, *i64),
        ("max_enqueued_batches", 3, *i64), ("num_batch_threads", 4, *i64),
        ("thread_pool_name", 5, F.TYPE_MESSAGE, opt, ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, F.TYPE_INT64, rep, None),
        ("pad_variable_length_inputs", 7, F.TYPE_BOOL, opt, None),
    ])
    pool.AddSerializedFile(batching.SerializeToString())
    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving", syntax="proto3")
    message(monitoring, "PrometheusConfig", [
        ("enable", 1, F.TYPE_BOOL, opt, None), ("path", 2, F.TYPE_STRING, opt, None)])
    message(monitoring, "MonitoringConfig", [
        ("prometheus_config", 1, F.TYPE_MESSAGE, opt, ".tensorflow.serving.PrometheusConfig")])
    pool.AddSerializedFile(monitoring.SerializeToString())
    factory = message_factory.MessageFactory(pool)
    return {name: factory.GetPrototype(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
            for name in ("BatchingParameters", "MonitoringConfig")}


def read_batching_parameters(path: str) -> tuple[int, float]:
    """(max_batch_size, batch_timeout_ms) from a TF Serving ``--batching_parameters_file``."""
    from google.protobuf import text_format

    params = deploy_proto_classes()["BatchingParameters"]()
    with open(path) as f:
        text_format.Parse(f.read(), params)
    max_batch_size = params.max_batch_size.value if params.HasField("max_batch_size") else 1000
    timeout_ms = (params.batch_timeout_micros.value / 1000.0
                  if params.HasField("batch_timeout_micros") else 0.0)
    return int(max_batch_size), timeout_ms
