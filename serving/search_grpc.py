"""gRPC adapter of the search service: TF Serving's ``PredictionService`` and ``ModelService``.

``Predict`` with ``signature_name`` ``search`` (the default), ``gallery_add`` or
``gallery_remove`` (tensor names in ``serving.search_client``); the answer's
``model_spec.version`` is the version whose model and index answered.
``GetModelStatus`` lists the versions seen, a refused one with its reason.
The servicers only convert ``TensorProto`` <-> NumPy; everything else is
``serving.search_service``'s, errors go through ``serving.grpc_api.counted_rpc``.

Imports ``serving.errors``, ``serving.grpc_api`` (its decorator and status reply),
``serving.metrics``, ``serving.search_client`` (names) and ``serving.search_service``;
``serving.search_server`` imports it.
"""

from __future__ import annotations

import json

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from core.names import IMAGES_INPUT
from serving.errors import FailedPrecondition, InvalidArgument, Unimplemented
from serving.grpc_api import counted_rpc, spec_version, status_response
from serving.metrics import RequestCounter
from serving.search_protocol import (ADD_SIGNATURE, DEFAULT_K, DISTANCES_OUTPUT, EMBEDDINGS_INPUT,
                                   IDS, K_INPUT, METADATA, REMOVE_SIGNATURE, SEARCH_SIGNATURE,
                                   SEQ_OUTPUT, SIGNATURES)
from serving.search_service import SearchService

# Which inputs each signature takes: (required, optional).
_INPUTS = {
    SEARCH_SIGNATURE: ((), (IMAGES_INPUT, EMBEDDINGS_INPUT, K_INPUT)),
    ADD_SIGNATURE: ((IDS, IMAGES_INPUT), (METADATA,)),
    REMOVE_SIGNATURE: ((IDS,), ()),
}


def _arrays(request, signature: str) -> dict:
    required, optional = _INPUTS[signature]
    sent = set(request.inputs)
    missing, extra = sorted(set(required) - sent), sorted(sent - set(required) - set(optional))
    if missing or extra:
        raise InvalidArgument(f"signature \"{signature}\" takes inputs {list(required)} and "
                              f"optionally {list(optional)}: missing {missing}, not known {extra}")
    arrays = {}
    for name, proto in request.inputs.items():
        try:
            arrays[name] = tf.make_ndarray(proto)
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"input '{name}': not a valid TensorProto: {e}") from None
    return arrays


def texts(array, name: str) -> list[str]:
    """A string [N] input as text."""
    if array.dtype != object or array.ndim != 1:
        raise InvalidArgument(f"input '{name}' must be string [N], got {array.dtype} "
                              f"{list(array.shape)}")
    try:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in array]
    except UnicodeDecodeError:
        raise InvalidArgument(f"input '{name}' is not UTF-8 text") from None


def blobs(array, name: str) -> list[bytes]:
    if array.dtype != object or array.ndim != 1 or array.shape[0] == 0:
        raise InvalidArgument(f"input '{name}' must be string [N] with N >= 1 (encoded images), "
                              f"got {array.dtype} {list(array.shape)}")
    return [bytes(v) for v in array]


def parse_k(value) -> int:
    array = np.asarray(value)
    if array.size != 1 or not np.issubdtype(array.dtype, np.integer):
        raise InvalidArgument(f"input '{K_INPUT}' must be one integer, got {array.dtype} "
                              f"{list(array.shape)}")
    return int(array.reshape(-1)[0])


def parse_metadata(rows: list[str]) -> list[dict]:
    out = []
    for row, text in enumerate(rows):
        try:
            value = json.loads(text) if text else {}
        except json.JSONDecodeError as e:
            raise InvalidArgument(f"input '{METADATA}' row {row} is not JSON: {e}") from None
        if not isinstance(value, dict):
            raise InvalidArgument(f"input '{METADATA}' row {row} is not a JSON object")
        out.append(value)
    return out


class SearchPredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, service: SearchService, requests: RequestCounter):
        self.service = service
        self.requests = requests

    @counted_rpc("grpc_predict")
    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        spec = request.model_spec
        version, label = spec_version(spec)
        if label:
            raise InvalidArgument(f"Unrecognized servable version label: {label}")
        signature = spec.signature_name or SEARCH_SIGNATURE
        if signature not in SIGNATURES:
            raise FailedPrecondition(f"Serving signature name: \"{signature}\" not found in the "
                                     f"search service (available: {', '.join(SIGNATURES)})")
        arrays = _arrays(request, signature)
        response = predict_pb2.PredictResponse()
        if signature == SEARCH_SIGNATURE:
            answered, hits = self._search(spec.name, version, arrays)
            outputs = hit_arrays(hits)
        else:
            if version is not None:
                raise InvalidArgument(f"{signature} edits the served version's gallery: "
                                      f"leave model_spec.version unset")
            ids = texts(arrays[IDS], IDS)
            if signature == ADD_SIGNATURE:
                metadata = parse_metadata(texts(arrays[METADATA], METADATA)) \
                    if METADATA in arrays else None
                answered, seq = self.service.add(spec.name, ids, blobs(arrays[IMAGES_INPUT],
                                                                       IMAGES_INPUT), metadata)
            else:
                answered, seq = self.service.remove(spec.name, ids)
            outputs = {SEQ_OUTPUT: np.int64(seq)}
        response.model_spec.name = spec.name
        response.model_spec.version.value = answered
        response.model_spec.signature_name = signature
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def _search(self, model_name, version, arrays):
        k = parse_k(arrays[K_INPUT]) if K_INPUT in arrays else DEFAULT_K
        if (IMAGES_INPUT in arrays) == (EMBEDDINGS_INPUT in arrays):
            raise InvalidArgument(f"signature \"{SEARCH_SIGNATURE}\" takes either "
                                  f"'{IMAGES_INPUT}' or '{EMBEDDINGS_INPUT}'")
        if IMAGES_INPUT in arrays:
            return self.service.search(model_name, version, k,
                                       images=blobs(arrays[IMAGES_INPUT], IMAGES_INPUT))
        embeddings = arrays[EMBEDDINGS_INPUT]
        if not np.issubdtype(embeddings.dtype, np.floating):
            raise InvalidArgument(f"input '{EMBEDDINGS_INPUT}' must be float [N, D], got "
                                  f"{embeddings.dtype}")
        return self.service.search(model_name, version, k, embeddings=embeddings)

    @counted_rpc("grpc_metadata")
    def GetModelMetadata(self, request, context):  # noqa: N802
        raise Unimplemented("the search service has no signature defs to report: its signatures "
                            f"are {', '.join(SIGNATURES)} (serving.search_client)")


def hit_arrays(hits) -> dict:
    """[[Hit]] as the search signature's three [N, k] outputs.

    A row an approximate index fills with fewer than k hits is padded with id "",
    distance +inf and metadata {} (tensors are rectangular; REST lists just end).
    """
    k = max((len(row) for row in hits), default=0)
    ids = np.full((len(hits), k), "", dtype=object)
    distances = np.full((len(hits), k), np.inf, np.float32)
    metadata = np.full((len(hits), k), "{}", dtype=object)
    for r, row in enumerate(hits):
        for c, hit in enumerate(row):
            ids[r, c], distances[r, c] = hit.id, hit.distance
            metadata[r, c] = json.dumps(hit.metadata or {})
    return {IDS: ids, DISTANCES_OUTPUT: distances, METADATA: metadata}


class SearchModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, service: SearchService, requests: RequestCounter):
        self.service = service
        self.requests = requests

    @counted_rpc("grpc_status")
    def GetModelStatus(self, request, context):  # noqa: N802
        version, _ = spec_version(request.model_spec)
        return status_response(self.service.model_status(request.model_spec.name, version))


def add_search_servicers(server: grpc.Server, service: SearchService,
                         requests: RequestCounter) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        SearchPredictionServicer(service, requests), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        SearchModelServicer(service, requests), server)
