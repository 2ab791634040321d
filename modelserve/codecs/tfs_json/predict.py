"""Predict requests (rows and columns) and predict responses."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from orjson import Fragment

from ...dtypes import DType
from ...errors import InvalidArgument, ServingError
from .json_text import debug_json, value_error
from .render import render_output, render_outputs
from .tensors import MAX_RANK, BodyHints, exact_tensor, fast_array, is_b64, to_array

Array = npt.NDArray[Any]


class Format(enum.Enum):
    """Which request layout a predict call used; the response mirrors it."""

    ROW = "instances"
    COLUMNAR = "inputs"


def signature_name(doc: Mapping[str, Any]) -> str:
    """The request's ``signature_name``; "" when absent (the caller picks the default)."""
    if "signature_name" not in doc:
        return ""
    name = doc["signature_name"]
    if type(name) is not str:
        raise value_error(doc, "not formatted correctly. 'signature_name' key must be a string value.")
    return name


def decode_predict(
    doc: Mapping[str, Any], inputs: Mapping[str, DType], *, body: bytes = b""
) -> tuple[dict[str, Array], Format]:
    """Decode a predict request into one array per signature input.

    ``inputs`` maps the signature's input aliases to their dtypes. ``body`` is
    the raw request: with it the fast path can rule out JSON booleans cheaply;
    without it every non-bool numeric input takes the exact (slower) path.
    """
    if not inputs:
        name = signature_name(doc)
        raise InvalidArgument(f"Failed to get input map for signature: {name or 'DEFAULT'}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise value_error(doc, "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ")
    hints = BodyHints(body)
    if has_instances:
        instances = doc["instances"]
        if type(instances) is not list:
            raise value_error(doc, "Expecting 'instances' to be an list/array")
        if not instances:
            raise value_error(doc, "No values in 'instances' array")
        return _decode_rows(instances, inputs, hints), Format.ROW
    if has_inputs:
        return _decode_columns(doc["inputs"], inputs, hints), Format.COLUMNAR
    raise InvalidArgument("Missing 'inputs' or 'instances' key")


def _is_named(value: Any) -> bool:
    return type(value) is dict and not is_b64(value)


# ---- row format ("instances") --------------------------------------------------------------


def _decode_rows(instances: list[Any], inputs: Mapping[str, DType], hints: BodyHints) -> dict[str, Array]:
    fast = _fast_rows(instances, inputs, hints)
    if fast is not None:
        return fast
    return _exact_rows(instances, inputs)


def _fast_rows(instances: list[Any], inputs: Mapping[str, DType], hints: BodyHints) -> dict[str, Array] | None:
    names = inputs.keys()
    if not _is_named(instances[0]):
        if len(inputs) > 1:
            return None
        name = next(iter(inputs))
        array = fast_array(instances, inputs[name], hints)
        return None if array is None else {name: array}
    if not all(type(item) is dict and item.keys() == names for item in instances):
        return None
    result = {}
    for name, dtype in inputs.items():
        array = fast_array([item[name] for item in instances], dtype, hints)
        if array is None:
            return None
        result[name] = array
    return result


def _exact_rows(instances: list[Any], inputs: Mapping[str, DType]) -> dict[str, Array]:
    """FillTensorMapFromInstancesList: every element checked, TF's first error raised."""
    first = instances[0]
    objects = _is_named(first)
    if len(inputs) > 1 and not objects:
        # TF checks IsObject() here and lets a lone {"b64": ...} through to fail later.
        raise InvalidArgument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    batch = _RowBatch(inputs)
    for index, item in enumerate(instances):
        if objects:
            _add_object_row(batch, index, item, inputs)
        else:
            if _is_named(item):
                raise InvalidArgument(f"Expecting value/list but got object at item {index} of input list")
            name = next(iter(inputs))
            try:
                batch.add(name, item)
            except ServingError as exc:
                raise _wrap(exc, f"Failed to process element: {index} of 'instances' list. Error: ") from None
    return batch.arrays(len(instances))


def _add_object_row(batch: _RowBatch, index: int, item: Any, inputs: Mapping[str, DType]) -> None:
    if not _is_named(item):
        raise InvalidArgument(f"Expecting object but got list at item {index} of input list")
    for key, value in item.items():
        try:
            batch.add(key, value)
        except ServingError as exc:
            raise _wrap(exc, f"Failed to process element: {index} key: {key} of 'instances' list. Error: ") from None
    if item.keys() != inputs.keys():
        raise InvalidArgument(
            f"Failed to process element: {index} of 'instances' list. JSON object: "
            f"{debug_json(item)} keys must be equal to: {','.join(sorted(inputs))}"
        )


def _wrap(exc: ServingError, prefix: str) -> InvalidArgument:
    # TF re-raises every element error as INVALID_ARGUMENT (even UNIMPLEMENTED, so an
    # unsupported dtype is a 400 here and a 501 in the columnar format); absl's
    # Status::ToString() puts the inner code's name before its message.
    return InvalidArgument(f"{prefix}{exc.code.name}: {exc}")


class _RowBatch:
    """AddInstanceItem's bookkeeping: per input, the first element's size and shape rule."""

    def __init__(self, inputs: Mapping[str, DType]) -> None:
        self._inputs = inputs
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._values: dict[str, list[Any]] = {}

    def add(self, name: str, item: Any) -> None:
        if name not in self._inputs:
            raise InvalidArgument(f"JSON object: does not have named input: {name}")
        shape, values = exact_tensor(item, self._inputs[name], MAX_RANK - 1)
        if name not in self._shapes:
            self._shapes[name] = shape
            self._values[name] = values
            return
        expected = self._shapes[name]
        if math.prod(expected) != len(values):
            raise InvalidArgument(f"Expecting tensor size: {math.prod(expected)} but got: {len(values)}")
        if expected != shape:
            raise InvalidArgument(f"Expecting shape {_shape_text(expected)} but got: {_shape_text(shape)}")
        self._values[name].extend(values)

    def arrays(self, count: int) -> dict[str, Array]:
        return {
            name: to_array((count, *self._shapes[name]), self._values[name], self._inputs[name])
            for name in self._shapes
        }


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


# ---- columnar format ("inputs") ----------------------------------------------------------


def _decode_columns(value: Any, inputs: Mapping[str, DType], hints: BodyHints) -> dict[str, Array]:
    """FillTensorMapFromInputsMap: a bare value for one input, else an object of inputs."""
    if not _is_named(value):
        if len(inputs) > 1:
            raise InvalidArgument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        name = next(iter(inputs))
        return {name: _column(value, inputs[name], hints)}
    result = {}
    for name, dtype in inputs.items():
        if name not in value:
            raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        result[name] = _column(value[name], dtype, hints)
    return result


def _column(value: Any, dtype: DType, hints: BodyHints) -> Array:
    array = fast_array(value, dtype, hints)
    if array is not None:
        return array
    shape, values = exact_tensor(value, dtype, MAX_RANK)
    return to_array(shape, values, dtype)


# Output names may be str subclasses (numpy.str_): orjson takes those as keys only with this.
_NAMES = orjson.OPT_NON_STR_KEYS

# What encode_predict allocates per element at its peak (RSS high-water mark over the outputs,
# 2M elements, docs/security.md "Memory budget"): float32 166 (its text is made through Python
# floats and strings), float64 132, int64 33, bool 10, strings of 10 bytes 88 (text and escapes
# besides); these round them up. A string's own bytes are counted three times (escaped text, b64).
_ENCODE_PER_ELEMENT = {"f": 176, "i": 40, "u": 40, "b": 16, "c": 352, "O": 96, "S": 96, "U": 96}


def encode_bytes(outputs: Mapping[str, Array]) -> int:
    """An upper estimate of what ``encode_predict`` allocates for ``outputs`` (the answer included)."""
    total = 0
    for array in outputs.values():
        total += array.size * _ENCODE_PER_ELEMENT.get(array.dtype.kind, 176)
        if array.dtype.kind in "OSU":
            total += 3 * _payload(array)
    return total


def _payload(array: Array) -> int:
    if array.dtype.kind != "O":
        return int(array.nbytes)
    try:
        return sum(map(len, array.flat))
    except TypeError:  # not strings: render_output refuses it anyway
        return 0


def encode_predict(outputs: Mapping[str, Array], fmt: Format) -> bytes:
    """``{"predictions": ...}`` for a row request, ``{"outputs": ...}`` for a columnar one.

    Outputs are written in the mapping's order (TF's is its proto map's order).
    """
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    arrays = {name: np.asarray(value) for name, value in outputs.items()}
    if fmt is Format.COLUMNAR:
        return _encode_columns(arrays)
    return _encode_rows(arrays)


def _encode_columns(arrays: dict[str, Array]) -> bytes:
    if len(arrays) == 1:
        ((name, array),) = arrays.items()
        return b'{"outputs":' + render_output(name, array, split=False)[0] + b"}"
    # orjson writes the keys and the braces; each tensor's JSON goes in as is.
    rendered = render_outputs(arrays, split=False)
    fields = {name: Fragment(json[0]) for name, json in zip(arrays, rendered, strict=True)}
    return orjson.dumps({"outputs": fields}, option=_NAMES)


def _encode_rows(arrays: dict[str, Array]) -> bytes:
    batch = -1
    for name, array in arrays.items():
        if array.ndim == 0:
            raise InvalidArgument(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise InvalidArgument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}"
            )
        batch = array.shape[0]
    if len(arrays) == 1:
        # The list of per-example values is the tensor itself in nested form.
        ((name, array),) = arrays.items()
        return b'{"predictions":' + render_output(name, array, split=False)[0] + b"}"
    # One object per example; orjson writes the keys and the braces.
    columns = [map(Fragment, json) for json in render_outputs(arrays, split=True)]
    rows = [dict(zip(arrays, row, strict=True)) for row in zip(*columns, strict=True)]
    return orjson.dumps({"predictions": rows}, option=_NAMES)
