"""Predict responses: output tensors' JSON, by dtype."""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from ...dtypes import DType, from_numpy, tf_name
from ...errors import InvalidArgument, ServingError
from .float_matrix import f32_texts, join_matrix
from .floats import join_double, join_float32

Array = npt.NDArray[Any]


_NUMPY_OPTS = orjson.OPT_SERIALIZE_NUMPY
_VECTOR_MIN = 1000  # the numpy path costs ~150 array operations; lists are faster up to ~1000 values
_FLOAT32 = np.dtype(np.float32)


def render_outputs(arrays: Mapping[str, Array], *, split: bool) -> list[list[bytes]]:
    """render_output of each tensor, in order.

    The values of all small float32 tensors are formatted in one join_float32 call, whose
    fixed cost (a few microseconds) would otherwise be paid per output.
    """
    shared = [
        (name, array) for name, array in arrays.items() if array.dtype == _FLOAT32 and 0 < array.size < _VECTOR_MIN
    ]
    if len(shared) < 2:
        return [render_output(name, array, split=split) for name, array in arrays.items()]
    values: list[Any] = []
    for _, array in shared:
        values += array.ravel().tolist()
    texts = join_float32(values).split(",")
    rendered, start = {}, 0
    for name, array in shared:
        end = start + array.size
        rendered[name] = _layout(",".join(texts[start:end]), array.shape, split)
        start = end
    return [rendered.get(name) or render_output(name, array, split=split) for name, array in arrays.items()]


def render_output(name: str, array: Array, *, split: bool) -> list[bytes]:
    """The tensor's JSON as one item, or (``split``) one item per entry along dim 0."""
    if array.size == 0:
        return _render_empty(array.shape, split)  # nothing is written, so no dtype error
    renderer = _RENDERERS.get(array.dtype)
    if renderer is not None:
        return renderer(array, split)
    if array.dtype.type.__module__ == "ml_dtypes" and from_numpy(array.dtype) == DType.DT_BFLOAT16:
        return _render_as_float32(array, split)  # not in the table: that would import ml_dtypes at start-up
    if array.dtype.kind in "OSU":
        return _render_strings(array, split, as_bytes=name.endswith("_bytes"))
    if not array.dtype.isnative:
        return render_output(name, array.astype(array.dtype.newbyteorder("=")), split=split)
    raise InvalidArgument(f"Failed to write JSON value for tensor type: {_type_label(array)}")


def _type_label(array: Array) -> str:
    try:
        return tf_name(from_numpy(array.dtype))
    except ServingError:
        return str(array.dtype)


def _render_empty(shape: tuple[int, ...], split: bool) -> list[bytes]:
    if not split:
        return [_empty_json(shape)]
    return [_empty_json(shape[1:])] * shape[0] if shape[0] else []


def _empty_json(shape: tuple[int, ...]) -> bytes:
    # Only called for shapes holding a 0, so the recursion ends there.
    if shape[0] == 0:
        return b"[]"
    return b"[" + b",".join([_empty_json(shape[1:])] * shape[0]) + b"]"


def _layout(items: str, shape: tuple[int, ...], split: bool) -> list[bytes]:
    """Comma-joined JSON values nested in ``shape``: one item, or one per entry of dim 0."""
    dims = shape[1:] if split else shape
    if dims and dims[-1] == math.prod(shape):  # all in one innermost list, e.g. (1, 10)
        return [("[" * len(dims) + items + "]" * len(dims)).encode()]
    texts = items.split(",")
    for dim in reversed(dims):
        if dim == len(texts):
            texts = ["[" + ",".join(texts) + "]"]
        else:
            texts = ["[" + ",".join(texts[i : i + dim]) + "]" for i in range(0, len(texts), dim)]
    return [text.encode() for text in texts]


def _render_as_float32(array: Array, split: bool) -> list[bytes]:
    # DT_HALF and DT_BFLOAT16 are written as their float32 value (a signalling NaN
    # raises the invalid flag when widened).
    with np.errstate(invalid="ignore"):
        return _render_float32(array.astype(np.float32), split)


def _render_float32(array: Array, split: bool) -> list[bytes]:
    if array.size < _VECTOR_MIN:
        return _layout(join_float32(array.ravel().tolist()), array.shape, split)
    if split:
        return join_matrix(f32_texts(array.ravel()), array.shape[1:], array.shape[0])
    return join_matrix(f32_texts(array.ravel()), array.shape, 1)


def _render_float64(array: Array, split: bool) -> list[bytes]:
    return _layout(join_double(array.ravel().tolist()), array.shape, split)


def _render_plain(array: Array, split: bool) -> list[bytes]:
    # orjson writes integer and bool arrays natively, when C-contiguous and not 0-d.
    if array.ndim == 0:
        return [orjson.dumps(array.item())]
    array = np.ascontiguousarray(array)
    if not split:
        return [orjson.dumps(array, option=_NUMPY_OPTS)]
    if array.ndim == 1:
        return orjson.dumps(array, option=_NUMPY_OPTS)[1:-1].split(b",")
    return [orjson.dumps(row, option=_NUMPY_OPTS) for row in array]


def _render_strings(array: Array, split: bool, *, as_bytes: bool) -> list[bytes]:
    convert = _b64_value if as_bytes else text_value
    flat = np.empty(array.size, dtype=object)
    flat[:] = [convert(v) for v in array.ravel().tolist()]
    nested = flat.reshape(array.shape).tolist()
    if not split:
        return [orjson.dumps(nested)]
    return [orjson.dumps(row) for row in nested]


def _as_bytes(value: Any) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidArgument("Failed to write JSON value for tensor type: string")


def text_value(value: Any) -> str:
    # TF writes the bytes unchecked; JSON text must be UTF-8, so invalid bytes become U+FFFD.
    return _as_bytes(value).decode("utf-8", "replace")


def _b64_value(value: Any) -> dict[str, str]:
    return {"b64": base64.b64encode(_as_bytes(value)).decode("ascii")}


_Renderer = Callable[[Array, bool], list[bytes]]
# The supported output dtypes but DT_STRING (any object, bytes or str array) and bfloat16.
_RENDERERS: dict[np.dtype[Any], _Renderer] = {
    np.dtype(np.float32): _render_float32,
    np.dtype(np.float16): _render_as_float32,
    np.dtype(np.float64): _render_float64,
    **{
        np.dtype(t): _render_plain
        for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64, np.bool_)
    },
}
