"""numpy <-> ``tensorflow.TensorProto``, as TensorFlow itself reads and writes them.

Pure functions, no I/O. On the gRPC hot path:

* ``to_ndarray(proto)`` decodes a request tensor with TF's rule
  (``Tensor::FromProto``): a non-empty ``tensor_content`` wins and must hold
  exactly the shape's bytes (the array is an ``np.frombuffer`` view of it: no
  copy, read-only); otherwise the dtype's typed field is read, the last value
  repeated when there are fewer than the shape needs, extras ignored.
* ``from_ndarray(array, tensor_content=...)`` encodes a response tensor: typed
  fields by default (TF Serving's default), ``tensor_content`` when asked
  (``--enable_serialization_as_tensor_content``); DT_STRING always uses
  ``string_val``. No Python loop per element: float, double and complex
  fields are merged as packed wire bytes straight from the array's buffer,
  varint fields go through protobuf's C encoder.

``shape_to_proto`` / ``shape_from_proto`` convert shapes; TF's client-side
helpers are in ``tensor_util``.

DT_STRING tensors are numpy object arrays of ``bytes``. DT_HALF/DT_BFLOAT16
travel as uint16 bit patterns in ``half_val``; complex values as (re, im)
pairs. Raw buffers are little-endian, like every host TF and modelserve run on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf.message import Message

from ..budget import UNMETERED, Account, string_tensor_bytes
from ..dtypes import DType, from_numpy, tf_name, to_numpy
from ..errors import InvalidArgument, ResourceExhausted, ServingError
from ..protos import pb

# The largest tensor a request may expand into by the fill rule (one value can
# fill any shape), whatever the memory budget says. A tensor_content is bounded
# by the message size anyway; what decoding allocates is charged to the request's
# account first (``budget.Account``).
MAX_DECODED_BYTES = 2**31
MAX_RANK = 64  # numpy's limit on dimensions (TF's is 254)
_MAX_ELEMENTS = 2**63 - 1  # TF's TensorShape refuses more (int64 element counts)

_STRING = np.dtype(object)

# dtype -> (typed field, the numpy dtype protobuf stores that field's values in).
_FIELDS: dict[DType, tuple[str, np.dtype]] = {
    DType.DT_FLOAT: ("float_val", np.dtype(np.float32)),
    DType.DT_DOUBLE: ("double_val", np.dtype(np.float64)),
    DType.DT_INT64: ("int64_val", np.dtype(np.int64)),
    DType.DT_BOOL: ("bool_val", np.dtype(np.bool_)),
    DType.DT_UINT32: ("uint32_val", np.dtype(np.uint32)),
    DType.DT_UINT64: ("uint64_val", np.dtype(np.uint64)),
    DType.DT_COMPLEX64: ("scomplex_val", np.dtype(np.float32)),
    DType.DT_COMPLEX128: ("dcomplex_val", np.dtype(np.float64)),
    DType.DT_HALF: ("half_val", np.dtype(np.int32)),
    DType.DT_BFLOAT16: ("half_val", np.dtype(np.int32)),
}
# Sub-32-bit integers share int_val (int4/int2 too, as tf.make_ndarray reads them;
# their tensor_content is taken as one byte per value, numpy's layout).
_FIELDS.update(
    {
        dtype: ("int_val", np.dtype(np.int32))
        for dtype in (
            DType.DT_INT32,
            DType.DT_INT16,
            DType.DT_INT8,
            DType.DT_UINT8,
            DType.DT_UINT16,
            DType.DT_QINT8,
            DType.DT_QUINT8,
            DType.DT_QINT16,
            DType.DT_QUINT16,
            DType.DT_QINT32,
            DType.DT_INT4,
            DType.DT_UINT4,
            DType.DT_INT2,
            DType.DT_UINT2,
        )
    }
)
# One byte per value in the `bytes float8_val` field.
_FLOAT8 = frozenset(
    {
        DType.DT_FLOAT8_E5M2,
        DType.DT_FLOAT8_E4M3FN,
        DType.DT_FLOAT8_E4M3FNUZ,
        DType.DT_FLOAT8_E4M3B11FNUZ,
        DType.DT_FLOAT8_E5M2FNUZ,
        DType.DT_FLOAT4_E2M1FN,
    }
)
# Fields whose packed wire form is the little-endian buffer of their values.
_PACKED_FIXED = frozenset({"float_val", "double_val", "scomplex_val", "dcomplex_val"})

# The dtypes tf.make_tensor_proto writes as tensor_content (its _TENSORCONTENT_TYPES).
CONTENT_TYPES = (
    frozenset(
        {
            DType.DT_HALF,
            DType.DT_FLOAT,
            DType.DT_DOUBLE,
            DType.DT_INT32,
            DType.DT_UINT8,
            DType.DT_INT16,
            DType.DT_INT8,
            DType.DT_INT64,
            DType.DT_QINT8,
            DType.DT_QUINT8,
            DType.DT_QINT16,
            DType.DT_QUINT16,
            DType.DT_QINT32,
            DType.DT_UINT32,
            DType.DT_UINT64,
            DType.DT_BFLOAT16,
        }
    )
    | _FLOAT8
)


# --- shapes -----------------------------------------------------------------------------------


def shape_to_proto(shape: Sequence[int | None] | None) -> Message:
    """A TensorShapeProto; ``None`` means unknown rank, a ``None`` dim means unknown (-1)."""
    proto = pb.TensorShapeProto()
    if shape is None:
        proto.unknown_rank = True
        return proto
    for size in shape:
        proto.dim.add(size=-1 if size is None else int(size))
    return proto


def shape_from_proto(proto: Message) -> tuple[int, ...] | None:
    """The dims of a TensorShapeProto (-1 where unknown); ``None`` if the rank is unknown."""
    if proto.unknown_rank:
        return None
    return tuple(dim.size for dim in proto.dim)


def _request_shape(proto: Message) -> tuple[int, ...]:
    """The shape of a tensor a client sent: fully known, or InvalidArgument."""
    shape = shape_from_proto(proto)
    if shape is None:
        raise InvalidArgument("Tensor shape has unknown rank; a request tensor needs a known shape")
    if any(size < 0 for size in shape):
        raise InvalidArgument(f"Tensor shape {list(shape)} has a negative dimension")
    if len(shape) > MAX_RANK:
        raise InvalidArgument(f"Tensor rank {len(shape)} is over the limit of {MAX_RANK} dimensions")
    if math.prod(size for size in shape if size) > _MAX_ELEMENTS:
        # Checked without the zeros too: numpy refuses such a shape even when it holds nothing.
        raise InvalidArgument(f"Tensor shape {list(shape)} would have more than 2**63 - 1 elements")
    return shape


# --- decoding ---------------------------------------------------------------------------------


def _dtype_of(proto: Message) -> DType:
    try:
        dtype = DType(proto.dtype)
    except ValueError:
        raise InvalidArgument(f"Tensor has an unknown dtype: {proto.dtype}") from None
    if dtype in (DType.DT_INVALID, DType.DT_RESOURCE, DType.DT_VARIANT):
        raise InvalidArgument(f"Tensors of type {tf_name(dtype)} cannot be sent in a request")
    return dtype


def _from_content(content: bytes, dtype: DType, shape: tuple[int, ...], account: Account, what: str) -> np.ndarray:
    count = math.prod(shape)
    if dtype == DType.DT_STRING:
        if count > len(content):  # each element needs at least its one-byte length
            raise InvalidArgument("DT_STRING tensor_content is truncated")
        account.charge(string_tensor_bytes(count, len(content)), what)
        return _strings_from_content(content, count).reshape(shape)
    np_dtype = to_numpy(dtype)
    if len(content) != count * np_dtype.itemsize:
        raise InvalidArgument(
            f"tensor_content holds {len(content)} bytes but a {tf_name(dtype)} tensor of shape "
            f"{list(shape)} needs {count * np_dtype.itemsize}"
        )
    # A view of the message: nothing allocated, nothing charged (the message is bounded by the
    # server's maximum message size).
    return np.frombuffer(content, dtype=np_dtype).reshape(shape)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise InvalidArgument("DT_STRING tensor_content is truncated")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _strings_from_content(content: bytes, count: int) -> np.ndarray:
    """TF's DT_STRING tensor_content: ``count`` varint lengths, then the bytes of each element."""
    lengths = []
    pos = 0
    for _ in range(count):
        length, pos = _read_varint(content, pos)
        lengths.append(length)
    if pos + sum(lengths) != len(content):
        raise InvalidArgument(f"DT_STRING tensor_content of {len(content)} bytes does not match its {count} lengths")
    out = np.empty(count, dtype=_STRING)
    for i, length in enumerate(lengths):
        out[i] = content[pos : pos + length]
        pos += length
    return out


def _field_array(field: Any, stored: np.dtype) -> np.ndarray:
    """A repeated scalar field as an array."""
    if hasattr(field, "__array__"):
        # protobuf 7's upb containers: one C-level copy, ~100x faster.
        return np.asarray(field, dtype=stored)
    # protobuf 6: iterate, in C; fromiter beats asarray and list() there.
    return np.fromiter(field, dtype=stored, count=len(field))


def _typed_cost(proto: Message, dtype: DType, count: int) -> int:
    """What decoding the typed field into ``count`` elements allocates: the filled array (strings
    per element, as the platforms copy each one) and the field's values read on the way."""
    if dtype == DType.DT_STRING:
        given = proto.string_val
        payload = sum(map(len, given[:count]))
        if count > len(given):
            payload += (count - len(given)) * (len(given[-1]) if len(given) else 0)
        return string_tensor_bytes(count, payload)
    if dtype in _FLOAT8:
        return count  # one byte each; the field itself is only viewed
    name, stored = _FIELDS[dtype]
    return count * to_numpy(dtype).itemsize + 2 * len(getattr(proto, name)) * stored.itemsize


def _typed_values(proto: Message, dtype: DType) -> np.ndarray:
    """The values of the dtype's typed field as a 1-D array of the dtype."""
    if dtype == DType.DT_STRING:
        return np.array(list(proto.string_val), dtype=_STRING)
    if dtype in _FLOAT8:
        return np.frombuffer(proto.float8_val, dtype=np.uint8).view(to_numpy(dtype))
    name, stored = _FIELDS[dtype]
    values = _field_array(getattr(proto, name), stored)
    if dtype in (DType.DT_COMPLEX64, DType.DT_COMPLEX128):
        # (re, im) pairs; a dangling last number is ignored, as TF does.
        return values[: len(values) // 2 * 2].view(to_numpy(dtype))
    if dtype in (DType.DT_HALF, DType.DT_BFLOAT16):
        # The bit pattern is the low 16 bits (TF static_casts int32 -> uint16).
        return values.astype(np.uint16).view(to_numpy(dtype))
    # Narrower integer types wrap like C++'s static_cast.
    return values.astype(to_numpy(dtype), copy=False)


def _fill(values: np.ndarray, count: int) -> np.ndarray:
    """TF's fill rule: extras dropped, the last value repeated, nothing given -> zeros."""
    if len(values) >= count:
        return values[:count]
    out = np.zeros(count, dtype=values.dtype) if values.dtype != _STRING else np.full(count, b"", _STRING)
    if len(values):
        out[: len(values)] = values
        out[len(values) :] = values[-1]
    return out


def to_ndarray(
    proto: Message, *, max_bytes: int = MAX_DECODED_BYTES, account: Account = UNMETERED, name: str = ""
) -> np.ndarray:
    """Decode a request's TensorProto like TF's ``Tensor::FromProto``.

    The result may be a read-only view of ``proto.tensor_content``; copy it
    before writing. Raises InvalidArgument for unknown or unsupported dtypes,
    shapes with unknown rank, negative dims, more than 64 dims or more than
    2**63 - 1 elements, and a tensor_content whose size does not match the
    shape; ResourceExhausted if the fill rule would expand typed values beyond
    ``max_bytes``. What it allocates is charged to ``account`` first (its
    errors name input ``name``).
    """
    dtype = _dtype_of(proto)
    shape = _request_shape(proto.tensor_shape)
    what = f"decode {f'input {name!r}' if name else 'a tensor'} ({dtype.name} {list(shape)})"
    content = proto.tensor_content
    if content:
        return _from_content(content, dtype, shape, account, what)
    count = math.prod(shape)
    itemsize = 8 if dtype == DType.DT_STRING else to_numpy(dtype).itemsize
    if count * itemsize > max_bytes:
        raise ResourceExhausted(f"Request needs {count * itemsize} bytes to {what}; the limit is {max_bytes} a tensor")
    account.charge(_typed_cost(proto, dtype, count), what)
    return _fill(_typed_values(proto, dtype), count).reshape(shape)


# --- encoding ---------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """A non-negative int as a protobuf base-128 varint."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(field: int, length: int) -> bytes:
    """The tag and length that precede ``length`` bytes of length-delimited field ``field``."""
    return varint(field << 3 | 2) + varint(length)


def write_typed(proto: Message, dtype: DType, flat: np.ndarray) -> None:
    """Append ``flat`` (1-D, of ``dtype``'s numpy type) to the dtype's typed field."""
    if dtype == DType.DT_STRING:
        proto.string_val.extend(as_bytes_list(flat))
        return
    if dtype in _FLOAT8:
        proto.float8_val = np.ascontiguousarray(flat).view(np.uint8).tobytes()
        return
    if not len(flat):
        return
    name, stored = _FIELDS[dtype]
    if dtype in (DType.DT_HALF, DType.DT_BFLOAT16):
        flat = np.ascontiguousarray(flat).view(np.uint16)
    elif dtype in (DType.DT_COMPLEX64, DType.DT_COMPLEX128):
        flat = np.ascontiguousarray(flat).view(stored)
    if name in _PACKED_FIXED and len(flat) > 16:
        # A packed fixed-width field is the little-endian buffer itself: merge
        # it as wire bytes (tag, length, payload) rather than one Python float
        # per element; ~100x faster than extend() for large outputs.
        payload = np.ascontiguousarray(flat, dtype=stored.newbyteorder("<")).tobytes()
        number = proto.DESCRIPTOR.fields_by_name[name].number
        proto.MergeFromString(length_delimited(number, len(payload)) + payload)
    else:
        # Varint fields and small arrays: protobuf's C encoder over tolist() is as fast as a
        # numpy varint encoder for large arrays and faster for small ones.
        getattr(proto, name).extend(flat.astype(stored, copy=False).tolist())


def as_bytes_list(flat: np.ndarray) -> list[bytes]:
    out = []
    for item in flat.tolist():
        if isinstance(item, bytes):
            out.append(item)
        elif isinstance(item, str):
            out.append(item.encode("utf-8"))
        else:
            raise InvalidArgument(f"DT_STRING tensor holds a {type(item).__name__}, not bytes or str")
    return out


def native(array: np.ndarray) -> np.ndarray:
    """``array`` in native (little-endian) byte order, C-contiguous."""
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    # Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.
    return array if array.flags.c_contiguous else array.copy(order="C")


def from_ndarray(array: np.ndarray, *, tensor_content: bool = False, out: Message | None = None) -> Message:
    """Encode an array as a TensorProto.

    ``tensor_content=False`` (TF Serving's default for responses) writes the
    typed field; ``True`` writes the raw buffer. Unicode arrays become
    DT_STRING (UTF-8), as do object arrays of bytes/str. Raises Unimplemented
    for numpy dtypes TF has no equivalent of. ``out``: an empty TensorProto
    to fill (e.g. a response's map entry) instead of a new one, saving a copy.
    """
    array = native(np.asarray(array))
    dtype = from_numpy(array.dtype)
    proto = pb.TensorProto() if out is None else out
    proto.dtype = dtype
    proto.tensor_shape.CopyFrom(shape_to_proto(array.shape))
    if tensor_content and dtype != DType.DT_STRING:
        proto.tensor_content = array.tobytes()
    else:
        write_typed(proto, dtype, array.reshape(-1))
    return proto


def to_ndarrays(tensors: Mapping[str, Any], account: Account = UNMETERED) -> dict[str, np.ndarray]:
    """A request's ``map<string, TensorProto>`` as arrays, charged to ``account`` before each is
    allocated; errors name the tensor (TF's wording; the budget's own texts name it already)."""
    arrays = {}
    for alias, tensor in tensors.items():
        try:
            arrays[alias] = to_ndarray(tensor, account=account, name=alias)
        except ResourceExhausted:  # its text names the input already
            raise
        except ServingError as exc:
            raise type(exc)(f"tensor parsing error: {alias}: {exc.message}") from None
    return arrays


__all__ = [
    "MAX_DECODED_BYTES",
    "from_ndarray",
    "shape_from_proto",
    "shape_to_proto",
    "to_ndarray",
    "to_ndarrays",
]
