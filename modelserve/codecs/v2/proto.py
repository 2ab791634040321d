"""numpy <-> the tensors of KServe V2's ``ModelInferRequest`` / ``ModelInferResponse`` (gRPC).

Pure functions, no I/O. A request sends each input either in its typed
``contents`` (``fp32_contents``, ``int_contents`` ...; FP16 and BF16 have none)
or, for every input at once, as ``raw_input_contents``: one entry per input,
in order, its little-endian row-major bytes, BYTES elements each a 4-byte
little-endian length and the bytes. A request may not mix them (Triton
refuses it too). A raw fixed-size input becomes an ``np.frombuffer`` view of
the message (no copy, read-only); what decoding allocates (typed values,
BYTES elements) is charged to the request's account first.

Answers are always raw, as Triton's (tritonclient reads numeric outputs only
from ``raw_output_contents``): ``response_parts`` fills in each output's
name, datatype and shape and hands back the raw bytes as wire parts taken
from the arrays' own buffers, so the only copy of a large output is the one
the final ``b"".join`` makes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf.message import Message

from ...budget import UNMETERED, Account, string_tensor_bytes
from ...dtypes import from_numpy
from ...errors import InvalidArgument
from ..tensor_proto import as_bytes_list, length_delimited, native
from .datatypes import ITEM_SIZE, numpy_of, v2_name

Part = bytes | memoryview

MAX_RANK = 64  # numpy's limit on dimensions
_LENGTH_BYTES = 4  # the little-endian length before each BYTES element in raw contents
_RAW_OUTPUT_FIELD = 6  # ModelInferResponse.raw_output_contents

# Datatype -> its typed field in InferTensorContents and the numpy type protobuf stores that field's
# values in (FP16 and BF16 have no field: raw only).
CONTENTS_FIELD: dict[str, tuple[str, np.dtype]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
    "BYTES": ("bytes_contents", np.dtype(object)),
}


# --- requests ---------------------------------------------------------------------------------


def decode_inputs(request: Message, account: Account = UNMETERED) -> dict[str, np.ndarray]:
    """A ModelInferRequest's inputs by name, from typed ``contents`` or ``raw_input_contents``.

    INVALID_ARGUMENT for an unknown datatype, a bad shape, contents that do not
    match the shape, an input sent twice, or typed and raw contents mixed.
    """
    inputs: Sequence[Any] = request.inputs
    raw: Sequence[bytes] = request.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise InvalidArgument(f"expected {len(inputs)} raw_input_contents, one per input in order, got {len(raw)}")
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(inputs):
        name = tensor.name
        if name in arrays:
            raise InvalidArgument(f"input '{name}' is given more than once")
        if raw:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"contents field must not be specified when using raw_input_contents for input '{name}'"
                )
            arrays[name] = from_raw(name, tensor.datatype, tensor.shape, raw[index], account)
        else:
            arrays[name] = from_contents(name, tensor.datatype, tensor.shape, tensor.contents, account)
    return arrays


def request_shape(name: str, dims: Sequence[int]) -> tuple[int, ...]:
    """A request tensor's shape: at most 64 dims, none negative, an element count numpy can index."""
    if len(dims) > MAX_RANK:
        raise InvalidArgument(f"input '{name}' has {len(dims)} dimensions; at most {MAX_RANK} are supported")
    shape = tuple(int(d) for d in dims)
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"input '{name}' has a negative dimension in its shape {list(shape)}")
    if math.prod(shape) >= 2**63:
        raise InvalidArgument(f"input '{name}' of shape {list(shape)} has too many elements")
    return shape


def from_raw(name: str, datatype: str, dims: Sequence[int], data: bytes, account: Account = UNMETERED) -> np.ndarray:
    """One input's raw bytes as an array: a read-only view for fixed-size datatypes, BYTES parsed."""
    dtype = numpy_of(datatype)  # INVALID_ARGUMENT for a datatype V2 does not have
    shape = request_shape(name, dims)
    count = math.prod(shape)
    if datatype == "BYTES":
        account.charge(string_tensor_bytes(count, len(data)), f"decode input '{name}' (BYTES {list(shape)})")
        return split_bytes(name, data, count).reshape(shape)
    expected = count * ITEM_SIZE[datatype]
    if len(data) != expected:
        raise InvalidArgument(
            f"input '{name}': raw_input_contents holds {len(data)} bytes but a {datatype} tensor of shape "
            f"{list(shape)} needs {expected}"
        )
    # A view of the message: nothing allocated, nothing charged (it is bounded by the message size).
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape(shape)


def split_bytes(name: str, data: bytes | memoryview, count: int) -> np.ndarray:
    """``count`` BYTES elements, each a 4-byte little-endian length then its bytes, filling ``data``."""
    out = np.empty(count, dtype=object)
    view = memoryview(data)
    pos = 0
    for i in range(count):
        if pos + _LENGTH_BYTES > len(view):
            raise InvalidArgument(f"input '{name}': BYTES data ends before element {i} of {count}")
        length = int.from_bytes(view[pos : pos + _LENGTH_BYTES], "little")
        pos += _LENGTH_BYTES
        if pos + length > len(view):
            raise InvalidArgument(f"input '{name}': BYTES element {i} of {length} bytes runs past the data")
        out[i] = bytes(view[pos : pos + length])
        pos += length
    if pos != len(view):
        raise InvalidArgument(f"input '{name}': {len(view) - pos} bytes left after its {count} BYTES elements")
    return out


def from_contents(
    name: str, datatype: str, dims: Sequence[int], contents: Message, account: Account = UNMETERED
) -> np.ndarray:
    """One input's typed contents as an array: exactly as many values as the shape has elements."""
    dtype = numpy_of(datatype)
    shape = request_shape(name, dims)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidArgument(f"input '{name}': {datatype} has no typed contents field; send it in raw_input_contents")
    field_name, stored = field
    values = getattr(contents, field_name)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidArgument(
            f"input '{name}': the shape {list(shape)} needs {count} values, {len(values)} given in {field_name}"
        )
    what = f"decode input '{name}' ({datatype} {list(shape)})"
    if datatype == "BYTES":
        account.charge(string_tensor_bytes(count, sum(map(len, values))), what)
        out = np.empty(count, dtype=object)
        out[:] = list(values)
        return out.reshape(shape)
    # The field read into an array, then narrowed (INT8 travels in int_contents): two buffers at most.
    account.charge(count * (stored.itemsize + dtype.itemsize), what)
    return _field_array(values, stored).astype(dtype, copy=False).reshape(shape)


def _field_array(field: Any, stored: np.dtype) -> np.ndarray:
    """A repeated scalar field as an array of the type protobuf stores its values in."""
    if hasattr(field, "__array__"):  # protobuf 7's upb containers: one C-level copy
        return np.asarray(field, dtype=stored)
    return np.fromiter(field, dtype=stored, count=len(field))  # protobuf 6: iterated in C


# --- responses --------------------------------------------------------------------------------


def response_parts(outputs: Mapping[str, np.ndarray], response: Message) -> list[Part]:
    """Describe each output in ``response.outputs`` (name, datatype, shape) and return the wire parts
    of its ``raw_output_contents``, in the same order, to append to ``response``'s serialization."""
    parts: list[Part] = []
    for name, array in outputs.items():
        array = native(np.asarray(array))
        datatype = v2_name(from_numpy(array.dtype))
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        payload: Part = join_bytes(array) if datatype == "BYTES" else array.reshape(-1).view(np.uint8).data
        size = len(payload) if isinstance(payload, bytes) else payload.nbytes
        parts += [length_delimited(_RAW_OUTPUT_FIELD, size), payload]
    return parts


def join_bytes(array: np.ndarray) -> bytes:
    """A BYTES tensor's raw form: each element (bytes, or str as UTF-8) after its 4-byte LE length."""
    out = bytearray()
    for item in as_bytes_list(array.reshape(-1)):
        out += len(item).to_bytes(_LENGTH_BYTES, "little")
        out += item
    return bytes(out)


def to_raw(array: np.ndarray) -> bytes:
    """An array's raw contents as a request carries them (what clients and tests send)."""
    array = native(np.asarray(array))
    if array.dtype == object:
        return join_bytes(array)
    return array.tobytes()


__all__ = [
    "CONTENTS_FIELD",
    "decode_inputs",
    "from_contents",
    "from_raw",
    "join_bytes",
    "response_parts",
    "split_bytes",
    "to_raw",
]
