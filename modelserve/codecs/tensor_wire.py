"""Wire bytes of a ``map<string, TensorProto>`` entry taken straight from an array's buffer.

Setting ``tensor_content`` on a protobuf message copies the bytes (after
``tobytes()`` already copied them), copying the tensor into the response
copies them again, and serializing the response once more. For a tensor
whose payload is its raw little-endian buffer (any ``tensor_content``, and
the packed ``float_val``/``double_val``/``scomplex_val``/``dcomplex_val``
typed fields) this module writes the entry's framing by hand and hands back
the array's own buffer: the only copy left is the one ``b"".join`` makes of
the whole answer. Parsing the result gives exactly the message that
``tensor_proto.from_ndarray`` builds. Pure functions, no I/O.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import DType, from_numpy
from .tensor_proto import length_delimited, shape_to_proto, varint

Part = bytes | memoryview

_TENSOR_CONTENT = 4
# TensorProto's packed fields whose wire payload is the little-endian buffer of the values.
_PACKED_FIELDS = {DType.DT_FLOAT: 5, DType.DT_DOUBLE: 6, DType.DT_COMPLEX64: 9, DType.DT_COMPLEX128: 12}


def tensor_entry(field: int, key: str, array: np.ndarray, *, tensor_content: bool) -> list[Part] | None:
    """The wire parts of entry ``key -> array`` of map field ``field``; None when the array's
    encoding is not its raw buffer (DT_STRING; varint typed fields), so the caller uses protobuf."""
    dtype = from_numpy(array.dtype.newbyteorder("="))
    number = _TENSOR_CONTENT if tensor_content else _PACKED_FIELDS.get(dtype)
    if number is None or dtype == DType.DT_STRING:
        return None
    little = array.dtype.newbyteorder("<")
    flat = np.ascontiguousarray(array.reshape(-1), dtype=little)  # a view when it already is one
    head = shape_to_proto(array.shape)
    tensor_head = varint(1 << 3) + varint(int(dtype))
    shape_bytes = head.SerializeToString()
    value: list[Part] = [tensor_head, length_delimited(2, len(shape_bytes)), shape_bytes]
    if flat.nbytes:  # TF leaves an empty tensor_content / packed field out
        value += [length_delimited(number, flat.nbytes), flat.view(np.uint8).data]
    value_length = sum(len(part) if isinstance(part, bytes) else part.nbytes for part in value)
    key_bytes = key.encode("utf-8")
    entry_head = length_delimited(1, len(key_bytes)) + key_bytes + length_delimited(2, value_length)
    return [length_delimited(field, len(entry_head) + value_length) + entry_head, *value]
