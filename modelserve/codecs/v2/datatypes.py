"""The Open Inference Protocol's (KServe V2) datatype names, and their TensorFlow and numpy twins.

V2 names a tensor's element type by a string (``FP32``, ``BYTES`` ...); modelserve's
platforms and signatures speak ``DType``; arrays are numpy. BYTES tensors are
numpy object arrays of ``bytes`` (as DT_STRING); BF16 is ml_dtypes' bfloat16.
"""

from __future__ import annotations

import numpy as np

from ...dtypes import DType, itemsize, to_numpy
from ...errors import InvalidArgument, Unimplemented

# Every V2 datatype (the protocol's table), with the DType a signature declares for it.
V2_TO_DTYPE: dict[str, DType] = {
    "BOOL": DType.DT_BOOL,
    "UINT8": DType.DT_UINT8,
    "UINT16": DType.DT_UINT16,
    "UINT32": DType.DT_UINT32,
    "UINT64": DType.DT_UINT64,
    "INT8": DType.DT_INT8,
    "INT16": DType.DT_INT16,
    "INT32": DType.DT_INT32,
    "INT64": DType.DT_INT64,
    "FP16": DType.DT_HALF,
    "FP32": DType.DT_FLOAT,
    "FP64": DType.DT_DOUBLE,
    "BF16": DType.DT_BFLOAT16,
    "BYTES": DType.DT_STRING,
}
DTYPE_TO_V2: dict[DType, str] = {dtype: name for name, dtype in V2_TO_DTYPE.items()}
# Bytes per element of the fixed-size datatypes (BYTES is length-prefixed on the wire).
ITEM_SIZE: dict[str, int] = {name: itemsize(dtype) for name, dtype in V2_TO_DTYPE.items() if name != "BYTES"}


def dtype_of(name: str) -> DType:
    """The DType of a V2 datatype name; INVALID_ARGUMENT for a name the protocol does not have."""
    dtype = V2_TO_DTYPE.get(name)
    if dtype is None:
        raise InvalidArgument(f"invalid datatype '{name}'")
    return dtype


def numpy_of(name: str) -> np.dtype:
    """The numpy dtype arrays of a V2 datatype are held in (object for BYTES)."""
    return to_numpy(dtype_of(name))


def v2_name(dtype: DType) -> str:
    """The V2 name of a signature's DType; UNIMPLEMENTED for one V2 cannot carry (e.g. complex)."""
    name = DTYPE_TO_V2.get(dtype)
    if name is None:
        raise Unimplemented(f"{dtype.name} has no Open Inference Protocol datatype")
    return name
