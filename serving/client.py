"""gRPC embedding client for TensorFlow Serving (or the embedded ``serving.model_server``).

Uses only the standard TF Serving API (``PredictionService.Predict``,
``GetModelMetadata``, ``ModelService.GetModelStatus`` from
``tensorflow-serving-api``), so it works unchanged against the official
``tensorflow/serving`` image.

    with EmbeddingClient("localhost:8500", model_name="cgd") as client:
        embeddings = client.embed_files(["a.jpg", "b.jpg"])   # float32 [2, D]

Every call has a deadline (``timeout_s``); calls that fail with UNAVAILABLE
(server starting, no version loaded yet, connection refused) are retried
``retries`` times with exponential backoff. Other errors are not retried.
Failures raise ``ServingError`` naming the server, the model, the method and
the gRPC status.
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Iterable, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from core.names import EMBEDDING_OUTPUT, IMAGES_INPUT, SERVING_SIGNATURE

log = logging.getLogger("cgd.serving.client")



class ServingError(RuntimeError):
    """A call to the model server failed; ``code`` is the ``grpc.StatusCode``."""

    def __init__(self, target: str, model_name: str, method: str, code: grpc.StatusCode,
                 details: str, attempts: int = 1):
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{method} on server {target}, model {model_name!r} failed{tries}: "
                         f"{code.name}: {details}")
        self.target, self.model_name, self.method = target, model_name, method
        self.code, self.details, self.attempts = code, details, attempts


class EmbeddingClient:
    """Embeds encoded images (JPEG/PNG bytes) through a TF Serving ``Predict`` call.

    Args:
        target: ``host:port`` of the gRPC endpoint.
        model_name: the served model's name (``model_spec.name``).
        signature_name: defaults to ``serving_default`` (input ``images``, output ``embedding``).
        timeout_s: deadline of each call.
        retries: extra attempts on UNAVAILABLE only; backoff ``backoff_s * 2**attempt``
            with jitter, capped at 5 s.
        version: pin a model version (``model_spec.version``); None = the newest served.
        batch_size: images per Predict request in ``embed_bytes``/``embed_files``.
    """

    def __init__(self, target: str = "localhost:8500", model_name: str = "cgd",
                 signature_name: str = SERVING_SIGNATURE, timeout_s: float = 30.0,
                 retries: int = 3, backoff_s: float = 0.2, version: int | None = None,
                 batch_size: int = 32, input_key: str = IMAGES_INPUT,
                 output_key: str = EMBEDDING_OUTPUT,
                 max_message_bytes: int = 256 * 1024 * 1024):
        if retries < 0 or timeout_s <= 0 or batch_size <= 0:
            raise ValueError("retries must be >= 0, timeout_s and batch_size > 0")
        self.target = target
        self.model_name = model_name
        self.last_batch_start = 0  # first image of the last request (embed_bytes)
        self.signature_name = signature_name
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.version = version
        self.batch_size = int(batch_size)
        self.input_key, self.output_key = input_key, output_key
        self.last_model_version: int | None = None  # from the last Predict response
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ])
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    # -- plumbing

    def _spec(self, spec, signature: bool = True, version: int | None = None,
              signature_name: str | None = None) -> None:
        spec.name = self.model_name
        if signature:
            spec.signature_name = signature_name or self.signature_name
        version = self.version if version is None else version
        if version is not None:
            spec.version.value = int(version)

    def _call(self, method: str, rpc, request):
        attempt = 0
        while True:
            try:
                return rpc(request, timeout=self.timeout_s)
            except grpc.RpcError as e:
                code = e.code() if callable(getattr(e, "code", None)) else grpc.StatusCode.UNKNOWN
                details = e.details() if callable(getattr(e, "details", None)) else str(e)
                if code == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    delay = min(5.0, self.backoff_s * 2 ** attempt) * (0.5 + random.random() / 2)
                    log.info("%s on %s: UNAVAILABLE (%s), retry %d/%d in %.2f s", method,
                             self.target, details, attempt + 1, self.retries, delay)
                    time.sleep(delay)
                    attempt += 1
                    continue
                raise ServingError(self.target, self.model_name, method, code, details,
                                   attempt + 1) from None

    # -- embeddings

    def predict(self, inputs: dict, output_filter: Sequence[str] = (),
                version: int | None = None, signature_name: str | None = None) -> dict:
        """Raw Predict: {name: array-like} -> {name: np.ndarray}; sets ``last_model_version``.

        ``version`` pins this call's model version (over the client's ``version``); the
        search service asks for the version its index belongs to this way, from many threads.
        """
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, version=version, signature_name=signature_name)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        request.output_filter.extend(output_filter)
        response = self._call("Predict", self._predict.Predict, request)
        if response.model_spec.HasField("version"):
            self.last_model_version = response.model_spec.version.value
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def embed_bytes(self, images: Sequence[bytes], version: int | None = None) -> np.ndarray:
        """Encoded images -> float32 [N, D] (requests of at most ``batch_size`` images).

        ``version`` pins the model version of these calls (see ``predict``).
        """
        images = list(images)
        if not images:
            return np.zeros((0, 0), np.float32)
        chunks = []
        for start in range(0, len(images), self.batch_size):
            self.last_batch_start = start  # where a failing request's rows begin
            batch = images[start:start + self.batch_size]
            outputs = self.predict({self.input_key: np.asarray(batch, dtype=object)},
                                   version=version)
            if self.output_key not in outputs:
                raise ServingError(self.target, self.model_name, "Predict",
                                   grpc.StatusCode.FAILED_PRECONDITION,
                                   f"response has no output {self.output_key!r} "
                                   f"(outputs: {', '.join(sorted(outputs))})")
            embedding = np.asarray(outputs[self.output_key], dtype=np.float32)
            if embedding.ndim != 2 or embedding.shape[0] != len(batch):
                raise ServingError(self.target, self.model_name, "Predict",
                                   grpc.StatusCode.FAILED_PRECONDITION,
                                   f"output {self.output_key!r} has shape {embedding.shape}, "
                                   f"expected [{len(batch)}, D]")
            chunks.append(embedding)
        return np.concatenate(chunks)

    def embed_files(self, paths: Iterable[str]) -> np.ndarray:
        """Read and embed image files; float32 [N, D] in the order given.

        A file the server cannot decode is named in the error (the server names the row).
        """
        paths = list(paths)
        images = []
        for path in paths:
            with open(path, "rb") as f:
                images.append(f.read())
        try:
            return self.embed_bytes(images)
        except ServingError as e:
            rows = [int(r) for r in re.findall(r"row (\d+) \(", e.details)]
            if e.code != grpc.StatusCode.INVALID_ARGUMENT or not rows:
                raise
            offset = self.last_batch_start
            files = ", ".join(paths[offset + r] for r in rows)
            raise ServingError(e.target, e.model_name, e.method, e.code,
                               f"not a decodable JPEG/PNG image: {files}") from None

    # -- model information

    def model_status(self) -> list[dict]:
        """[{"version": int, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}, ...]"""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, signature=False)
        response = self._call("GetModelStatus", self._models.GetModelStatus, request)
        out = []
        for status in response.model_version_status:
            out.append({
                "version": status.version,
                "state": get_model_status_pb2.ModelVersionStatus.State.Name(status.state),
                "error_code": _error_code_name(status.status.error_code),
                "error_message": status.status.error_message,
            })
        return out

    def metadata(self, version: int | None = None) -> dict:
        """{"name", "version", "signature_def": {signature: {"inputs"|"outputs": {key: {"dtype", "shape"}}}}}.

        ``version`` asks about that version (NOT_FOUND while the server has not loaded it).
        """
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(request.model_spec, signature=False, version=version)
        request.metadata_field.append("signature_def")
        response = self._call("GetModelMetadata", self._predict.GetModelMetadata, request)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata["signature_def"].Unpack(sig_map):
            raise ServingError(self.target, self.model_name, "GetModelMetadata",
                               grpc.StatusCode.INTERNAL, "metadata holds no SignatureDefMap")

        def tensors(infos):
            return {key: {"dtype": tf.dtypes.as_dtype(info.dtype).name if info.dtype else "invalid",
                          "shape": None if info.tensor_shape.unknown_rank
                          else [d.size for d in info.tensor_shape.dim]}
                    for key, info in infos.items()}

        return {
            "name": response.model_spec.name,
            "version": response.model_spec.version.value,
            "signature_def": {name: {"method_name": sig.method_name, "inputs": tensors(sig.inputs),
                                     "outputs": tensors(sig.outputs)}
                              for name, sig in sig_map.signature_def.items()},
        }

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "EmbeddingClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _error_code_name(number: int) -> str:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.name
    return str(number)
