"""gRPC adapters: TF Serving's ``PredictionService`` and ``ModelService`` over ``DataPlane``.

The servicers only convert protos (``TensorProto`` <-> NumPy, status rows <->
``GetModelStatusResponse``); validation and errors come from
``serving.dataplane``. Every method goes through ``counted_rpc``, which counts it
(``RequestCounter.counted``) and turns a ``RequestError`` into its gRPC status
with ``serving.errors.grpc_status``.

Imports ``serving.errors``, ``serving.dataplane`` and ``serving.metrics``;
``serving.model_server`` imports it, and ``serving.search_grpc`` its ``counted_rpc``,
``spec_version`` and ``status_response``.
"""

from __future__ import annotations

import functools

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from serving.dataplane import DataPlane
from serving.errors import InvalidArgument, RequestError, grpc_status, status_number
from serving.metrics import RequestCounter

# The metadata field GetModelMetadata can return (TF Serving's only one, too).
SIGNATURE_DEF_FIELD = "signature_def"


def counted_rpc(api: str):
    """Decorates a servicer method: counted under ``api``, its ``RequestError`` aborts the call."""
    def decorate(method):
        @functools.wraps(method)
        def rpc(self, request, context):
            try:
                return self.requests.counted(api, lambda: method(self, request, context))
            except RequestError as e:
                context.abort(grpc_status(e), e.message)
        return rpc
    return decorate


def spec_version(spec) -> tuple[int | None, str]:
    """(model_spec.version or None for the newest, model_spec.version_label or "")."""
    version = spec.version.value if spec.HasField("version") else None
    return version, spec.version_label if spec.HasField("version_label") else ""


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, dataplane: DataPlane, requests: RequestCounter):
        self.dataplane = dataplane
        self.requests = requests

    @counted_rpc("grpc_predict")
    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        spec = request.model_spec
        servable = self.dataplane.servable(spec.name, *spec_version(spec))
        signature = self.dataplane.signature(servable, spec.signature_name)
        inputs = {}
        for name, proto in request.inputs.items():
            try:
                dtype = tf.dtypes.as_dtype(proto.dtype)
                array = tf.make_ndarray(proto)
            except (TypeError, ValueError) as e:
                raise InvalidArgument(f"input '{name}': not a valid TensorProto: {e}") from None
            inputs[name] = (dtype, array)
        outputs = self.dataplane.predict(servable, signature, inputs, list(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.dataplane.model_name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    @counted_rpc("grpc_metadata")
    def GetModelMetadata(self, request, context):  # noqa: N802
        spec = request.model_spec
        if not request.metadata_field:
            raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise InvalidArgument(f"Metadata field {field} is not supported")
        servable = self.dataplane.servable(spec.name, *spec_version(spec))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.dataplane.model_name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(self.dataplane.signature_def_map(servable))
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, dataplane: DataPlane, requests: RequestCounter):
        self.dataplane = dataplane
        self.requests = requests

    @counted_rpc("grpc_status")
    def GetModelStatus(self, request, context):  # noqa: N802
        spec = request.model_spec
        return status_response(self.dataplane.model_status(spec.name, *spec_version(spec)))


def status_response(rows) -> get_model_status_pb2.GetModelStatusResponse:
    """[(version, State, code name, message)] as TF Serving's ``GetModelStatusResponse``."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, state, code, message in rows:
        status = response.model_version_status.add()
        status.version = version
        status.state = state
        status.status.error_code = status_number(code)
        status.status.error_message = message
    return response


def add_servicers(server: grpc.Server, dataplane: DataPlane, requests: RequestCounter) -> None:
    """Registers both services on ``server``."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(dataplane, requests), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(dataplane, requests), server)
