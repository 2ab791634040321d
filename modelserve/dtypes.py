"""TensorFlow's DataType enum and its numpy equivalents.

Every wire format names dtypes by ``DT_*`` (TensorProto, SignatureDef, TF
Serving's JSON rules); numpy is what platforms and codecs compute with.
DT_STRING tensors are numpy object arrays whose elements are ``bytes``.
"""

from __future__ import annotations

import enum
import functools
import importlib

import numpy as np

from .errors import Unimplemented


class DType(enum.IntEnum):
    DT_INVALID = 0
    DT_FLOAT = 1
    DT_DOUBLE = 2
    DT_INT32 = 3
    DT_UINT8 = 4
    DT_INT16 = 5
    DT_INT8 = 6
    DT_STRING = 7
    DT_COMPLEX64 = 8
    DT_INT64 = 9
    DT_BOOL = 10
    DT_QINT8 = 11
    DT_QUINT8 = 12
    DT_QINT32 = 13
    DT_BFLOAT16 = 14
    DT_QINT16 = 15
    DT_QUINT16 = 16
    DT_UINT16 = 17
    DT_COMPLEX128 = 18
    DT_HALF = 19
    DT_RESOURCE = 20
    DT_VARIANT = 21
    DT_UINT32 = 22
    DT_UINT64 = 23
    DT_FLOAT8_E5M2 = 24
    DT_FLOAT8_E4M3FN = 25
    DT_FLOAT8_E4M3FNUZ = 26
    DT_FLOAT8_E4M3B11FNUZ = 27
    DT_FLOAT8_E5M2FNUZ = 28
    DT_INT4 = 29
    DT_UINT4 = 30
    DT_INT2 = 31
    DT_UINT2 = 32
    DT_FLOAT4_E2M1FN = 33


# TF's DataTypeString names; they appear in error messages clients match on.
_TF_NAMES = {
    DType.DT_FLOAT: "float",
    DType.DT_DOUBLE: "double",
    DType.DT_INT32: "int32",
    DType.DT_UINT8: "uint8",
    DType.DT_INT16: "int16",
    DType.DT_INT8: "int8",
    DType.DT_STRING: "string",
    DType.DT_COMPLEX64: "complex64",
    DType.DT_INT64: "int64",
    DType.DT_BOOL: "bool",
    DType.DT_QINT8: "qint8",
    DType.DT_QUINT8: "quint8",
    DType.DT_QINT32: "qint32",
    DType.DT_BFLOAT16: "bfloat16",
    DType.DT_QINT16: "qint16",
    DType.DT_QUINT16: "quint16",
    DType.DT_UINT16: "uint16",
    DType.DT_COMPLEX128: "complex128",
    DType.DT_HALF: "half",
    DType.DT_RESOURCE: "resource",
    DType.DT_VARIANT: "variant",
    DType.DT_UINT32: "uint32",
    DType.DT_UINT64: "uint64",
    DType.DT_FLOAT8_E5M2: "float8_e5m2",
    DType.DT_FLOAT8_E4M3FN: "float8_e4m3fn",
    DType.DT_FLOAT8_E4M3FNUZ: "float8_e4m3fnuz",
    DType.DT_FLOAT8_E4M3B11FNUZ: "float8_e4m3b11fnuz",
    DType.DT_FLOAT8_E5M2FNUZ: "float8_e5m2fnuz",
    DType.DT_INT4: "int4",
    DType.DT_UINT4: "uint4",
    DType.DT_INT2: "int2",
    DType.DT_UINT2: "uint2",
    DType.DT_FLOAT4_E2M1FN: "float4_e2m1fn",
}

_NUMPY: dict[DType, np.dtype] = {
    DType.DT_FLOAT: np.dtype(np.float32),
    DType.DT_DOUBLE: np.dtype(np.float64),
    DType.DT_INT32: np.dtype(np.int32),
    DType.DT_UINT8: np.dtype(np.uint8),
    DType.DT_INT16: np.dtype(np.int16),
    DType.DT_INT8: np.dtype(np.int8),
    DType.DT_STRING: np.dtype(object),
    DType.DT_COMPLEX64: np.dtype(np.complex64),
    DType.DT_INT64: np.dtype(np.int64),
    DType.DT_BOOL: np.dtype(np.bool_),
    DType.DT_UINT16: np.dtype(np.uint16),
    DType.DT_COMPLEX128: np.dtype(np.complex128),
    DType.DT_HALF: np.dtype(np.float16),
    DType.DT_UINT32: np.dtype(np.uint32),
    DType.DT_UINT64: np.dtype(np.uint64),
}
# Quantized types share the bit layout of their plain integer counterparts.
_NUMPY_QUANTIZED: dict[DType, np.dtype] = {
    DType.DT_QINT8: np.dtype(np.int8),
    DType.DT_QUINT8: np.dtype(np.uint8),
    DType.DT_QINT16: np.dtype(np.int16),
    DType.DT_QUINT16: np.dtype(np.uint16),
    DType.DT_QINT32: np.dtype(np.int32),
}
# ml_dtypes' types by their names there. Importing ml_dtypes costs about 0.7 s (it registers its casts with
# numpy), most of a server's cold start, and most models never see one of its types: imported on first use.
_ML_DTYPES: dict[DType, str] = {
    dtype: _TF_NAMES[dtype]  # the same names in ml_dtypes
    for dtype in (
        DType.DT_BFLOAT16,
        DType.DT_FLOAT8_E5M2,
        DType.DT_FLOAT8_E4M3FN,
        DType.DT_FLOAT8_E4M3FNUZ,
        DType.DT_FLOAT8_E4M3B11FNUZ,
        DType.DT_FLOAT8_E5M2FNUZ,
        DType.DT_INT4,
        DType.DT_UINT4,
        DType.DT_INT2,
        DType.DT_UINT2,
        DType.DT_FLOAT4_E2M1FN,
    )
}
_FROM_NUMPY = {v: k for k, v in _NUMPY.items()}
_FROM_NUMPY[np.dtype(np.str_)] = DType.DT_STRING


def tf_name(dtype: DType) -> str:
    """TF's short name (``float``, ``int32``, ``string``...), as used in error messages."""
    return _TF_NAMES.get(dtype, dtype.name)


def to_numpy(dtype: DType) -> np.dtype:
    """The numpy dtype that holds ``dtype``; Unimplemented for resource/variant and unknowns."""
    found = _NUMPY.get(dtype)
    if found is None:
        found = _NUMPY_QUANTIZED.get(dtype)
    if found is None and dtype in _ML_DTYPES:
        found = _ml_dtype(_ML_DTYPES[dtype])
    if found is None:
        raise Unimplemented(f"Tensors of type {tf_name(DType(dtype))} are not supported")
    return found


def itemsize(dtype: DType) -> int:
    """Bytes per element of ``to_numpy(dtype)``, without importing ml_dtypes for its types (one byte each
    but bfloat16's two); Unimplemented as ``to_numpy``."""
    if dtype in _ML_DTYPES:
        return 2 if dtype == DType.DT_BFLOAT16 else 1
    return int(to_numpy(dtype).itemsize)


def from_numpy(dtype: np.dtype) -> DType:
    """The DType of a numpy dtype; unicode and object arrays are DT_STRING."""
    dtype = np.dtype(dtype)
    if dtype.kind in "USO":
        return DType.DT_STRING
    found = _FROM_NUMPY.get(dtype)
    if found is None and dtype.type.__module__ == "ml_dtypes":  # an array of it exists: ml_dtypes is imported
        found = _FROM_ML_DTYPES.get(dtype.name)
    if found is None:
        raise Unimplemented(f"numpy dtype {dtype} has no TensorFlow equivalent")
    return found


_FROM_ML_DTYPES = {name: dtype for dtype, name in _ML_DTYPES.items()}


@functools.cache
def _ml_dtype(name: str) -> np.dtype:
    found: np.dtype = np.dtype(getattr(importlib.import_module("ml_dtypes"), name))
    return found
