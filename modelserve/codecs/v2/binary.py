"""Triton's binary tensor data extension: tensors as raw bytes after the JSON header.

A body is the JSON header (``Inference-Header-Content-Length`` bytes) followed
by each binary input's bytes in the order of ``inputs`` (each input says how
many in ``parameters.binary_data_size``); the answer is laid out the same way.
Elements are little-endian, row-major; BOOL is one byte each; BYTES elements
are each a 4-byte little-endian length and that many bytes. A header length of
0 is the raw form: the whole body is the one input of the model.

Numeric inputs are ``np.frombuffer`` views of the body (no copy) when their
offset suits their alignment, copies otherwise; answers are memoryviews of the
output arrays (``tensor_bytes``), written after the header without joining.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from ...budget import UNMETERED, Account, string_tensor_bytes
from ...errors import InvalidArgument
from .datatypes import ITEM_SIZE, numpy_of

HEADER = b"inference-header-content-length"
_LENGTH = struct.Struct("<I")


def header_length(value: bytes | None, body_size: int) -> int | None:
    """``Inference-Header-Content-Length``: None when absent (the body is all JSON), else the JSON's
    bytes (0: a raw request); Triton's texts for a value it cannot use."""
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    if not (text.isdigit() or (text[:1] == "-" and text[1:].isdigit())) or len(text) > 11:
        raise InvalidArgument(f"Unable to parse Inference-Header-Content-Length, got: {text}")
    length = int(text)
    if length < 0 or length > body_size:
        raise InvalidArgument(f"inference header size should be in range (0, {body_size}), got: {text}")
    return length


def split(body: bytes, length: int | None) -> tuple[memoryview, memoryview]:
    """(the JSON header, the binary data after it), as views of ``body``."""
    view = memoryview(body)
    if length is None:
        return view, view[len(view) :]
    return view[:length], view[length:]


def decode_tensor(
    name: str, datatype: str, shape: Sequence[int], data: memoryview, account: Account = UNMETERED
) -> np.ndarray:
    """One input's bytes as an array of ``shape``: exactly the shape's bytes, or its error."""
    count = 1
    for dim in shape:
        count *= dim
    if datatype == "BYTES":
        return _strings(name, shape, count, data, account)
    expected = count * ITEM_SIZE[datatype]
    if len(data) != expected:
        raise InvalidArgument(
            f"unexpected total byte size {len(data)} for input '{name}', expecting {expected} for "
            f"{datatype} of shape {list(shape)}"
        )
    dtype = numpy_of(datatype).newbyteorder("<")
    if datatype == "BOOL":
        raw = np.frombuffer(data, dtype=np.uint8)
        if raw.size and int(raw.max()) > 1:
            raise InvalidArgument(f"input '{name}': BOOL elements must be the bytes 0 or 1")
    array = np.frombuffer(data, dtype=dtype)
    if not array.flags.aligned:  # models read aligned memory faster, and some insist on it
        account.charge(array.nbytes, f"align input '{name}'")
        array = array.copy()
    return array.reshape(shape)


def _strings(name: str, shape: Sequence[int], count: int, data: memoryview, account: Account) -> np.ndarray:
    size = len(data)
    if count * _LENGTH.size > size:
        raise InvalidArgument(
            f"unexpected total byte size {size} for BYTES input '{name}' of shape {list(shape)}: "
            f"{count} elements need at least {count * _LENGTH.size} bytes"
        )
    account.charge(string_tensor_bytes(count, size - count * _LENGTH.size), f"decode input '{name}'")
    array = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + length > size:
            raise InvalidArgument(f"input '{name}': BYTES element {index} runs past the input's {size} bytes")
        array[index] = bytes(data[offset : offset + length])
        offset += length
    if offset != size:
        raise InvalidArgument(
            f"unexpected total byte size {size} for BYTES input '{name}': its {count} elements take {offset}"
        )
    return array.reshape(shape)


def raw_shape(name: str, datatype: str, declared: Sequence[int] | None, size: int) -> tuple[int, ...]:
    """The shape of a raw request's one input, from the shape its model declares (Triton's rule):
    at most one unknown dimension, deduced from the body's size; a BYTES input holds one element."""
    dims = [-1] if declared is None else list(declared)
    unknown = [i for i, d in enumerate(dims) if d < 0]
    if datatype == "BYTES":
        shape = tuple(1 if d < 0 else d for d in dims)
        if any(d != 1 for d in shape):
            raise InvalidArgument(
                f"For BYTE datatype raw input '{name}', the model must have input shape [1], not {dims}"
            )
        return shape
    if len(unknown) > 1:
        raise InvalidArgument(
            f"The shape of the raw input '{name}' can not be deduced because there are more than one "
            f"variable-sized dimension in {dims}"
        )
    known = ITEM_SIZE[datatype]
    for d in dims:
        known *= d if d >= 0 else 1
    if unknown:
        if known == 0 or size % known:
            raise InvalidArgument(f"raw input '{name}' of {size} bytes does not fill {datatype} of shape {dims}")
        dims[unknown[0]] = size // known
    return tuple(dims)


def raw_bytes(body: memoryview) -> memoryview:
    """A raw BYTES input's one element, length-prefixed as ``decode_tensor`` reads it (a copy)."""
    return memoryview(_LENGTH.pack(len(body)) + bytes(body))


def tensor_bytes(array: np.ndarray, datatype: str) -> memoryview:
    """An output's bytes on the wire: a view of a numeric array (copied only if not C-contiguous
    little-endian), the length-prefixed elements of a BYTES one."""
    if datatype == "BYTES":
        parts = []
        for item in array.flat:
            value = item if isinstance(item, bytes) else str(item).encode()
            parts += [_LENGTH.pack(len(value)), value]
        return memoryview(b"".join(parts))
    wire = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return memoryview(wire.reshape(-1).view(np.uint8).data)


def encoded_bytes(array: np.ndarray, datatype: str) -> int:
    """What ``tensor_bytes`` allocates beyond the array (the BYTES join; nothing for a numeric view)."""
    if datatype != "BYTES":
        return 0
    return array.size * _LENGTH.size + sum(len(item) for item in array.flat if isinstance(item, bytes))
