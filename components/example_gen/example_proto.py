"""``tf.train.Example`` without importing TensorFlow.

RetrievalExampleGen's Beam workers build one tf.Example per image. TensorFlow's
generated classes for it live inside the ``tensorflow`` package, and importing that in
every worker process costs seconds of start-up (and 400 MB) for a few protobuf
messages. These are the same messages, built from the same definitions
(``tensorflow/core/example/feature.proto`` and ``example.proto``: names, field
numbers, types, packing) in a private descriptor pool, so they never clash with
TensorFlow's classes when both are loaded; the serialized bytes parse as
``tf.train.Example`` (tests/components/test_executors.py).
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, label: int = _F.LABEL_OPTIONAL,
           type_name: str = "", packed: bool = False, oneof: int | None = None):
    field = _F(name=name, number=number, type=kind, label=label, json_name=name)
    if type_name:
        field.type_name = type_name
    if packed:
        field.options.packed = True
    if oneof is not None:
        field.oneof_index = oneof
    return field


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name="cgd/tensorflow_example.proto", package="tensorflow", syntax="proto3")
    repeated = _F.LABEL_REPEATED
    f.message_type.add(name="BytesList").field.append(
        _field("value", 1, _F.TYPE_BYTES, repeated))
    f.message_type.add(name="FloatList").field.append(
        _field("value", 1, _F.TYPE_FLOAT, repeated, packed=True))
    f.message_type.add(name="Int64List").field.append(
        _field("value", 1, _F.TYPE_INT64, repeated, packed=True))
    feature = f.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    feature.field.extend([
        _field("bytes_list", 1, _F.TYPE_MESSAGE, type_name=".tensorflow.BytesList", oneof=0),
        _field("float_list", 2, _F.TYPE_MESSAGE, type_name=".tensorflow.FloatList", oneof=0),
        _field("int64_list", 3, _F.TYPE_MESSAGE, type_name=".tensorflow.Int64List", oneof=0),
    ])
    features = f.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.extend([_field("key", 1, _F.TYPE_STRING),
                        _field("value", 2, _F.TYPE_MESSAGE, type_name=".tensorflow.Feature")])
    features.field.append(_field("feature", 1, _F.TYPE_MESSAGE, repeated,
                                 type_name=".tensorflow.Features.FeatureEntry"))
    f.message_type.add(name="Example").field.append(
        _field("features", 1, _F.TYPE_MESSAGE, type_name=".tensorflow.Features"))
    return f


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())
_FACTORY = message_factory.MessageFactory(_POOL)


def _message(name: str):
    return _FACTORY.GetPrototype(_POOL.FindMessageTypeByName(f"tensorflow.{name}"))


Example = _message("Example")
Features = _message("Features")
Feature = _message("Feature")
BytesList = _message("BytesList")
FloatList = _message("FloatList")
Int64List = _message("Int64List")
