"""TF Serving's REST JSON codec: predict request bodies to NumPy, outputs back to JSON.

Request: ``{"instances": [...]}`` (row format) or ``{"inputs": ...}`` (columnar),
strings as UTF-8 or ``{"b64": ...}``; reply: ``{"predictions": ...}`` or
``{"outputs": ...}`` to match. Bad JSON values raise
``serving.errors.InvalidArgument`` naming the input.

Imports ``serving.errors`` and ``serving.dataplane`` (for shape wording); only
``serving.rest_api`` imports it.
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np
import tensorflow as tf

from serving.dataplane import shape_str
from serving.errors import InvalidArgument

_TOO_DEEP = "arrays or objects nested too deeply (more than about 1,000 levels)"

# TF Serving's rule: string outputs whose alias ends with this are binary, so always base64.
BINARY_OUTPUT_SUFFIX = "_bytes"


def decode_json_body(data: bytes) -> dict:
    """The request body as a JSON object."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"JSON Parse error: {e}") from None
    except RecursionError:
        # Python's parser recurses per level; rapidjson (TF Serving's) does not, but a body
        # this deep is no tensor either: the client's mistake, answered in one line.
        raise InvalidArgument(f"JSON Parse error: {_TOO_DEEP}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("request body must be a JSON object")
    return body


def parse_predict_body(body: dict, specs: dict) -> tuple[bool, dict]:
    """(row_format, {name: (dtype, ndarray)}) from a predict body, given the signature's input specs."""
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances == has_inputs:
        raise InvalidArgument("Missing 'inputs' or 'instances' key" if not has_instances else
                              "Not both 'inputs' and 'instances' may be specified")
    names = sorted(specs)
    if has_instances:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidArgument("'instances' must be a non-empty JSON list")
        named = all(isinstance(i, dict) and not _is_b64(i) for i in instances)
        if named:
            keys = set(instances[0])
            if any(set(i) != keys for i in instances):
                raise InvalidArgument("all 'instances' must name the same inputs")
            columns = {k: [i[k] for i in instances] for k in keys}
        elif len(names) == 1:
            columns = {names[0]: instances}
        else:
            raise InvalidArgument(f"the signature has {len(names)} inputs ({', '.join(names)}): "
                                  "each instance must be an object naming them")
        return True, {k: _json_to_array(k, v, specs.get(k)) for k, v in columns.items()}
    inputs = body["inputs"]
    if isinstance(inputs, dict) and not _is_b64(inputs):
        columns = inputs
    elif len(names) == 1:
        columns = {names[0]: inputs}
    else:
        raise InvalidArgument(f"the signature has {len(names)} inputs ({', '.join(names)}): "
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
        raise InvalidArgument(f"input '{name}': cannot convert JSON to {dtype.name}: {e}") from None
    except RecursionError:  # JSON that parsed, but nests deeper than the conversion recurses
        raise InvalidArgument(f"input '{name}': cannot convert JSON to {dtype.name}: "
                              f"{_TOO_DEEP}") from None
    if array.ndim == 0 and spec.shape.rank not in (None, 0):
        raise InvalidArgument(f"input '{name}': expects shape {shape_str(spec.shape)} but got a scalar")
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
            if name.endswith(BINARY_OUTPUT_SUFFIX):
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


def predict_reply(outputs: dict, row_format: bool) -> dict:
    """The reply body for ``outputs`` in the request's format."""
    if row_format:
        return {"predictions": _rows_json(outputs)}
    return {"outputs": _columns_json(outputs)}
