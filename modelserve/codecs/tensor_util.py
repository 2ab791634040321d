"""TensorFlow's ``tf.make_tensor_proto`` and ``tf.make_ndarray``, for clients and tests without TensorFlow.

They follow TensorFlow's ``tensor_util`` for the common cases: Python values or
numpy arrays in, dtype inferred or checked (TF's accepted kinds), a shape that
reshapes or fills; out, the array a TensorProto holds. Built on the pure codec
in ``tensor_proto``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from google.protobuf.message import Message

from ..dtypes import DType, from_numpy, tf_name, to_numpy
from ..protos import pb
from .tensor_proto import CONTENT_TYPES, as_bytes_list, native, shape_to_proto, to_ndarray, write_typed

_OBJECT = np.dtype(object)


def _as_dtype(dtype: Any) -> DType:
    """A DType from a DType/int, a tf.DType, a numpy dtype or anything np.dtype() takes."""
    enum_value = getattr(dtype, "as_datatype_enum", dtype)  # tf.DType without importing TF
    if isinstance(enum_value, int):
        return DType(enum_value)
    return from_numpy(np.dtype(dtype))


def _flatten(values: Any) -> Iterable[Any]:
    if isinstance(values, (list, tuple)):
        for item in values:
            yield from _flatten(item)
    else:
        yield values


# numpy kinds of Python values each kind of dtype accepts (TF's _AssertCompatible).
_ACCEPTED_KINDS = {"b": "b", "i": "biu", "u": "biu", "f": "biuf", "c": "biufc", "O": "USO"}


def _check_compatible(values: np.ndarray, dtype: DType) -> None:
    """TF refuses e.g. 1.5 for an int32 tensor instead of truncating it."""
    accepted = _ACCEPTED_KINDS.get(to_numpy(dtype).kind)
    if accepted is not None and values.dtype.kind not in accepted:
        raise TypeError(f"Expected {tf_name(dtype)}, but got values of numpy type {values.dtype}")


def _to_array(values: Any, dtype: DType | None, shape: Sequence[int] | None) -> np.ndarray:
    if isinstance(values, (np.ndarray, np.generic)):
        array = np.asarray(values)
        return array if dtype is None else array.astype(to_numpy(dtype))
    if values is None:
        raise ValueError("None values not supported.")
    if shape is not None and math.prod(shape) == 0:
        array = np.empty(shape, dtype=None if dtype is None else to_numpy(dtype))
    else:
        array = np.array(values)
        if dtype is not None:
            _check_compatible(array, dtype)
    if dtype is not None:
        return array.astype(to_numpy(dtype))
    # Python floats and ints default to float32 / int32, as in TF.
    if array.dtype == np.float64:
        return array.astype(np.float32)
    if array.dtype == np.int64 and np.array_equal(array.astype(np.int32), array):
        return array.astype(np.int32)
    return array


def make_tensor_proto(values: Any, dtype: Any = None, shape: Sequence[int] | None = None) -> Message:
    """Like ``tf.make_tensor_proto``: a TensorProto from a scalar, list, bytes/str or array.

    ``dtype`` may be a DType, a tf.DType, or a numpy dtype (or anything
    ``np.dtype`` accepts). Without it Python floats become DT_FLOAT and ints
    DT_INT32 (DT_INT64 if they do not fit); str/bytes become DT_STRING. With
    ``shape``, fewer values are allowed (the reader repeats the last one);
    more raise ValueError. Like TF, arrays of more than one element of most
    numeric types go into ``tensor_content``, everything else into typed
    fields. Raises TypeError for values that do not fit ``dtype``.
    """
    if isinstance(values, pb.TensorProto):
        return values
    wanted = None if dtype is None else _as_dtype(dtype)
    array = native(_to_array(values, wanted, shape))
    actual = wanted if wanted is not None else from_numpy(array.dtype)
    dims = list(array.shape) if shape is None else [int(size) for size in shape]
    count = math.prod(dims)
    if array.size > count:
        raise ValueError(f"Too many elements provided. Takes at most {count}, but got {array.size}.")
    proto = pb.TensorProto(dtype=actual, tensor_shape=shape_to_proto(dims))
    if array.size == count > 1 and actual in CONTENT_TYPES:
        proto.tensor_content = array.tobytes()
    elif actual == DType.DT_STRING and not isinstance(values, np.ndarray):
        # From the original values: numpy's 'S' arrays drop trailing NULs.
        proto.string_val.extend(as_bytes_list(np.array(list(_flatten(values)), dtype=_OBJECT)))
    else:
        write_typed(proto, actual, array.reshape(-1))
    return proto


def make_ndarray(proto: Message) -> np.ndarray:
    """Like ``tf.make_ndarray``: the proto's values as a new, writable array.

    Raises InvalidArgument (a ServingError) where ``to_ndarray`` does.
    """
    array = to_ndarray(proto)
    return array if array.flags.writeable else array.copy()


__all__ = ["make_ndarray", "make_tensor_proto"]
