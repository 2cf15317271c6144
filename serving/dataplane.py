"""The protocol-independent core: resolve a model version and signature, validate, predict.

``DataPlane`` takes and returns NumPy arrays and raises ``serving.errors``
types; the gRPC and REST adapters (``serving.grpc_api``, ``serving.rest_api``)
only convert their wire formats to and from it, so both protocols validate
the same way and report the same errors. Error messages follow TF Serving's
wording where clients may match on them.

Imports ``serving.errors``, ``serving.model_repository`` and ``serving.batching``;
imported by the two adapters, ``serving.rest_codec`` and ``serving.model_server``.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2

from core.names import SERVING_SIGNATURE
from serving.batching import Batcher
from serving.errors import FailedPrecondition, InvalidArgument, NotFound, from_tf_error_code
from serving.model_repository import ModelRepository, Servable

log = logging.getLogger("cgd.serving")


class DataPlane:
    """Request handling for one model, shared by gRPC and REST.

    Args:
        repository: where the served version comes from.
        batcher: merges concurrent predictions; None runs each request alone.
    """

    def __init__(self, repository: ModelRepository, batcher: Batcher | None = None):
        self.repository = repository
        self.batcher = batcher
        self.model_name = repository.model_name

    def servable(self, model_name: str, version: int | None, version_label: str = "") -> Servable:
        """The served version for a request naming ``model_name`` (and maybe a version)."""
        reject_version_label(version_label)
        if model_name != self.model_name:
            raise NotFound(f"Servable not found for request: "
                           f"{'Latest' if version is None else 'Specific'}"
                           f"({model_name}{'' if version is None else f', {version}'})")
        return self.repository.get(version)

    def signature(self, servable: Servable, signature_name: str) -> str:
        """``signature_name`` checked against the servable ("" = the default signature)."""
        name = signature_name or SERVING_SIGNATURE
        if name not in servable.signatures:
            raise FailedPrecondition(f"Serving signature name: \"{name}\" not found in signature def "
                                     f"(available: {', '.join(sorted(servable.signatures))})")
        return name

    def predict(self, servable: Servable, signature_name: str, inputs: dict,
                output_filter=()) -> dict:
        """Validate ``inputs`` ({name: (tf.DType, np.ndarray)}) and run the signature.

        Returns {output name: np.ndarray}, only the ``output_filter`` ones if given.
        """
        specs = servable.input_specs[signature_name]
        sent, expected = set(inputs), set(specs)
        if sent != expected:
            extra, missing = sorted(sent - expected), sorted(expected - sent)
            raise InvalidArgument(
                f"input size does not match signature \"{signature_name}\": {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}.")
        arrays = {}
        for name, (dtype, array) in inputs.items():
            spec = specs[name]
            if dtype != spec.dtype:
                raise InvalidArgument(f"input '{name}': expects dtype {spec.dtype.name} but "
                                      f"{dtype.name} is provided")
            if not spec.shape.is_compatible_with(array.shape):
                raise InvalidArgument(f"input '{name}': expects shape {shape_str(spec.shape)} but "
                                      f"shape {list(array.shape)} is provided")
            arrays[name] = array
        fn = servable.signatures[signature_name]
        outputs_available = sorted(fn.structured_outputs)
        for name in output_filter:
            if name not in outputs_available:
                raise InvalidArgument(f"output tensor alias not found in signature: {name} "
                                      f"(outputs: {', '.join(outputs_available)})")

        def call(batch_inputs):
            return _call_signature(fn, specs, batch_inputs)

        rows = {a.shape[0] if a.ndim else -1 for a in arrays.values()}
        if self.batcher is not None and len(rows) == 1 and -1 not in rows:
            # Only requests whose rows can be concatenated share a batch.
            key = (id(servable), signature_name,
                   tuple(sorted((k, a.dtype.str, a.shape[1:]) for k, a in arrays.items())))
            outputs = self.batcher.run(key, call, arrays, rows.pop())
        else:
            outputs = call(arrays)
        if output_filter:
            outputs = {k: outputs[k] for k in output_filter}
        return outputs

    def model_status(self, model_name: str, version: int | None,
                     version_label: str = "") -> list[tuple[int, int, str, str]]:
        """[(version, State, status code name, message)], newest first."""
        reject_version_label(version_label)
        states = self.repository.version_states() if model_name == self.model_name else {}
        if not states:
            raise NotFound(f"Could not find any versions of model {model_name}")
        if version is not None:
            if version not in states:
                raise NotFound(f"Could not find version {version} of model {model_name}")
            states = {version: states[version]}
        return [(v, *states[v]) for v in sorted(states, reverse=True)]

    def signature_def_map(self, servable: Servable) -> get_model_metadata_pb2.SignatureDefMap:
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in servable.signature_defs.items():
            sig_map.signature_def[name].CopyFrom(sig)
        return sig_map


def reject_version_label(version_label: str) -> None:
    """No version labels are configured here, so a request naming one fails (as in TF Serving)."""
    if version_label:
        raise InvalidArgument(f"Unrecognized servable version label: {version_label}")


def shape_str(shape: tf.TensorShape) -> str:
    """A signature's shape as TF Serving writes it in errors: ``[-1,32,32,3]``."""
    if shape.rank is None:
        return "<unknown>"
    return "[" + ",".join("-1" if d is None else str(d) for d in shape.as_list()) + "]"


def _call_signature(fn, specs: dict, inputs: dict) -> dict:
    try:
        tensors = {k: tf.convert_to_tensor(v, dtype=specs[k].dtype) for k, v in inputs.items()}
        outputs = fn(**tensors)
    except tf.errors.OpError as e:  # e.g. a corrupt image: the op's own code (INVALID_ARGUMENT)
        bad = _undecodable_rows(specs, inputs) if isinstance(e, tf.errors.InvalidArgumentError) \
            else ""
        if bad:
            # The one server-side line of a rejected upload, with its time (the log format's);
            # libjpeg's own bare lines about it are dropped (serving.stderr_filter).
            log.warning("rejected a request: %s", bad)
        raise from_tf_error_code(e.error_code, bad or _clean_tf_message(e.message)) from None
    except (TypeError, ValueError) as e:
        raise InvalidArgument(str(e)) from None
    return {k: v.numpy() for k, v in outputs.items()}


def _undecodable_rows(specs: dict, inputs: dict) -> str:
    """Which rows of the string inputs are no JPEG/PNG image, in words; "" if none.

    An image op's own error names graph nodes and functions, not the request: when a
    signature fails, the encoded-image inputs are checked row by row to say which.
    """
    problems = []
    for name, array in inputs.items():
        if specs[name].dtype != tf.string:
            continue
        for row, data in enumerate(np.asarray(array, dtype=object).reshape(-1)):
            try:
                tf.io.decode_image(data, channels=3, expand_animations=False)
            except (tf.errors.OpError, ValueError):
                problems.append(f"input '{name}' row {row} ({len(data)} bytes) is not a "
                                f"decodable JPEG/PNG image")
    return "; ".join(problems)


def _clean_tf_message(message: str) -> str:
    """The op's own error, without eager's "Graph execution error" header and Python stack."""
    if "Detected at node" not in message:
        return message
    kept = [line for line in message.splitlines()
            if line.strip() and not line.startswith((" ", "Graph execution error",
                                                      "Detected at node", "<stack traces"))]
    return "\n".join(kept) or message

