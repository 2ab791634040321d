"""One JSON tensor -> numpy: the dtype rules, the fast path and the exact walker."""

from __future__ import annotations

import array as pyarray
import binascii
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from ...dtypes import DType, tf_name, to_numpy
from ...errors import InvalidArgument, Unimplemented
from .json_text import debug_json, json_type, value_error
from .parser import INT64_MAX, INT64_MIN, UINT64_MAX

Array = npt.NDArray[Any]
_END = object()  # next(children, _END): no more children


class BodyHints:
    """What the raw body tells the fast path; computed lazily, once per request."""

    def __init__(self, body: bytes) -> None:
        self._body = body if type(body) is bytes else bytes(body)
        self._may_hold_bool: bool | None = None

    @property
    def may_hold_bool(self) -> bool:
        # np.array([True, 1.5]) silently gives floats, so any true/false in the body
        # (even inside a string) sends numeric inputs to the exact path.
        if self._may_hold_bool is None:
            body = self._body
            self._may_hold_bool = not body or _contains(body, b"true") or _contains(body, b"false")
        return self._may_hold_bool


def _contains(body: bytes, word: bytes) -> bool:
    # bytes.find with one byte is a memchr; a multi-byte search is ~20x slower here.
    first = word[:1]
    i = body.find(first)
    while i != -1:
        if body.startswith(word, i):
            return True
        i = body.find(first, i + 1)
    return False


def is_b64(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


_FLOAT_TYPES = frozenset({DType.DT_FLOAT, DType.DT_DOUBLE, DType.DT_HALF, DType.DT_BFLOAT16})
# Inclusive ranges of the JSON integers each integer dtype accepts; the narrow types
# take any int32 and wrap, as TF stores them in int_val.
_INT_RANGES: dict[DType, tuple[int, int]] = {
    DType.DT_INT32: (-(2**31), 2**31 - 1),
    DType.DT_INT16: (-(2**31), 2**31 - 1),
    DType.DT_INT8: (-(2**31), 2**31 - 1),
    DType.DT_UINT8: (-(2**31), 2**31 - 1),
    DType.DT_INT64: (INT64_MIN, INT64_MAX),
    DType.DT_UINT32: (0, 2**32 - 1),
    DType.DT_UINT64: (0, UINT64_MAX),
}
MAX_RANK = 64  # numpy's limit on dimensions (TF's is 254)


def fast_array(value: Any, dtype: DType, hints: BodyHints) -> Array | None:
    """Vectorised conversion plus cheap checks; None whenever validity is not proven."""
    if dtype is DType.DT_BOOL:
        return _fast_bools(value)
    if dtype is DType.DT_STRING or hints.may_hold_bool:
        return None  # np.array([True, 1.5]) silently gives floats
    if dtype in _FLOAT_TYPES:
        return _fast_floats(value, dtype)
    if dtype in _INT_RANGES:
        return _fast_ints(value, dtype)
    return None


def _fast_bools(value: Any) -> Array | None:
    array = _inferred(value)
    if array is None or (array.dtype.kind != "b" and array.size):
        return None
    return array.astype(np.bool_, copy=False)


def _fast_floats(value: Any, dtype: DType) -> Array | None:
    # A vector or a batch of vectors (the common request) goes through array.array:
    # it refuses anything but real numbers and casts like C, overflow giving inf.
    buffer = _float_buffer(value, "f" if dtype is DType.DT_FLOAT else "d")
    if buffer is not None:
        return _cast_float(buffer, to_numpy(dtype))
    array = _inferred(value)
    if array is None:
        return None
    if array.dtype.kind in "iu" or (array.dtype.kind == "b" and not array.size):
        array = array.astype(np.float64)
    elif array.dtype.kind != "f":
        return None
    return _cast_float(array, to_numpy(dtype))


def _fast_ints(value: Any, dtype: DType) -> Array | None:
    array = _inferred(value)
    if array is None:
        return None
    kind = array.dtype.kind
    if not array.size and kind in "fb":
        return array.astype(to_numpy(dtype))
    if kind not in "iu":
        return None
    low, high = _INT_RANGES[dtype]
    if not (dtype is DType.DT_INT64 and kind == "i") and (array.min() < low or array.max() > high):
        return None
    return array.astype(to_numpy(dtype))


def _inferred(value: Any) -> Array | None:
    try:
        return np.array(value)
    except (ValueError, TypeError, OverflowError):
        return None  # ragged, too deep, or mixed: the exact walker says why


def _float_buffer(value: Any, typecode: str) -> Array | None:
    """A list of numbers, or of equal-length lists of numbers, read by array.array."""
    if type(value) is not list:
        return None
    try:
        if not value or type(value[0]) is not list:
            return np.frombuffer(pyarray.array(typecode, value), dtype=typecode)
        width = len(value[0])
        buffer = pyarray.array(typecode)
        for row in value:
            if type(row) is not list or len(row) != width:
                return None
            buffer.fromlist(row)
    except (TypeError, OverflowError):
        return None
    return np.frombuffer(buffer, dtype=typecode).reshape(len(value), width)


def _cast_float(array: Array, target: np.dtype[Any]) -> Array:
    # Values past the target's range become +-inf, as TF's static_cast does; numpy
    # warns about that overflow unless told not to.
    if array.dtype == target:
        return array
    with np.errstate(over="ignore", invalid="ignore"):
        return array.astype(target)


def exact_tensor(value: Any, dtype: DType, max_rank: int) -> tuple[tuple[int, ...], list[Any]]:
    """GetDenseTensorShape + FillTensorProto, without recursion: (shape, flat values)."""
    shape = _dense_shape(value)
    rank = len(shape)
    if rank > max_rank:
        raise InvalidArgument(f"Tensor rank {rank} is over the limit of {max_rank} dimensions")
    values: list[Any] = []
    if type(value) is not list:
        _add_leaf(value, 0, rank, dtype, values)
        return shape, values
    stack: list[tuple[Iterator[Any], int]] = [(iter(value), 1)]
    while stack:
        children, level = stack[-1]
        child = next(children, _END)
        if child is _END:
            stack.pop()
        elif type(child) is list:
            if level >= rank:
                raise InvalidArgument(f"Encountered list at unexpected level: {level} expected < {rank}")
            if len(child) != shape[level]:
                raise InvalidArgument(
                    f"Encountered list at unexpected size: {len(child)} at level: {level} expected size: {shape[level]}"
                )
            stack.append((iter(child), level + 1))
        else:
            _add_leaf(child, level, rank, dtype, values)
    return shape, values


def _dense_shape(value: Any) -> tuple[int, ...]:
    # Sizes come from the first element at each level, like GetDenseTensorShape.
    dims = []
    while type(value) is list:
        dims.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(dims)


def _add_leaf(value: Any, level: int, rank: int, dtype: DType, values: list[Any]) -> None:
    if level != rank:
        raise value_error(value, f"found at incorrect level: {level + 1} in the JSON DOM. Expected at level: {rank}")
    if type(value) is dict:
        if dtype is not DType.DT_STRING:
            raise _type_error(value, dtype)
        values.append(decode_b64_object(value))
    else:
        values.append(_json_scalar(value, dtype))


def _json_scalar(value: Any, dtype: DType) -> Any:
    """AddValueToTensor: the value to store, or TF's error for this dtype."""
    kind = type(value)
    if dtype in _FLOAT_TYPES:
        if kind is float or kind is int:
            return value
    elif dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if kind is int and low <= value <= high:
            return value
    elif dtype is DType.DT_BOOL:
        if kind is bool:
            return value
    elif dtype is DType.DT_STRING:
        if kind is str:
            return value.encode("utf-8", "surrogateescape")
    else:
        raise Unimplemented(f"Conversion of JSON Value: {debug_json(value)} to type: {tf_name(dtype)}")
    raise _type_error(value, dtype)


def _type_error(value: Any, dtype: DType) -> InvalidArgument:
    return value_error(value, f"Type: {json_type(value)} is not of expected type: {tf_name(dtype)}")


def decode_b64_object(value: Any) -> bytes:
    if not is_b64(value):
        raise value_error(value, "not formatted correctly for base64 data")
    decoded = _b64decode(value["b64"])
    if decoded is None:
        raise InvalidArgument("Unable to base64 decode")
    return decoded


_B64_WHITESPACE = b" \t\n\v\f\r"
_B64_BODY = re.compile(rb"[A-Za-z0-9+/]*")
_B64_PADS = {0: 0, 2: 2, 3: 1}


def _b64decode(text: str) -> bytes | None:
    """absl::Base64Unescape: standard alphabet, whitespace ignored, padding absent or exact."""
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        return None
    data = data.translate(None, _B64_WHITESPACE)
    body = data.rstrip(b"=")
    pads = len(data) - len(body)
    if _B64_BODY.fullmatch(body) is None:
        return None
    expected = _B64_PADS.get(len(body) % 4)
    if expected is None or pads not in (0, expected):
        return None
    return binascii.a2b_base64(body + b"=" * expected)


def to_array(shape: tuple[int, ...], values: list[Any], dtype: DType) -> Array:
    target = to_numpy(dtype)
    if dtype is DType.DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif dtype in _FLOAT_TYPES:
        array = _cast_float(np.array(values, dtype=np.float64), target)
    elif dtype in _INT_RANGES:
        # Through a type that holds every accepted value, then wrap like a C cast.
        wide = np.uint64 if dtype is DType.DT_UINT64 else np.int64
        array = np.array(values, dtype=wide).astype(target)
    else:
        array = np.array(values, dtype=target)
    return array.reshape(shape)
