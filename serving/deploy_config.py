"""TF Serving's deploy-time config protos, for checking ``serving/deploy`` and ``cgd serve``.

``tensorflow-serving-api`` ships ``ModelServerConfig`` but not ``BatchingParameters``
or ``MonitoringConfig``; ``deploy_proto_classes`` rebuilds those two, and
``read_batching_parameters`` reads a ``--batching_parameters_file`` the way
``tensorflow_model_server`` does.

Imports nothing of ours and no TensorFlow; ``cli.serving_commands`` and the tests import it.
"""

from __future__ import annotations

from google.protobuf import (descriptor_pb2, descriptor_pool, message_factory, text_format,
                             wrappers_pb2)

# What tensorflow_model_server uses for a field the file leaves unset
# (the defaults documented in session_bundle_config.proto).
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0


def deploy_proto_classes() -> dict:
    """Message classes for the TF Serving config protos that tensorflow-serving-api does not ship.

    ``BatchingParameters`` (tensorflow_serving/servables/tensorflow/session_bundle_config.proto)
    and ``MonitoringConfig`` (tensorflow_serving/config/monitoring_config.proto), rebuilt
    with the same package, field names, numbers and types in a private descriptor
    pool, so that ``text_format`` checks ``serving/deploy`` files the way
    ``tensorflow_model_server`` parses them.
    """
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
    params = deploy_proto_classes()["BatchingParameters"]()
    with open(path) as f:
        text_format.Parse(f.read(), params)
    max_batch_size = (params.max_batch_size.value if params.HasField("max_batch_size")
                      else DEFAULT_MAX_BATCH_SIZE)
    timeout_micros = (params.batch_timeout_micros.value if params.HasField("batch_timeout_micros")
                      else DEFAULT_BATCH_TIMEOUT_MICROS)
    timeout_ms = timeout_micros / 1000.0
    return int(max_batch_size), timeout_ms
