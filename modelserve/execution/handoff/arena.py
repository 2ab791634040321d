"""Shared-memory arenas: the writer's ``Arena`` and the reader's ``Mapped`` view of it.

One process owns an arena (writes into it, allocates and frees its blocks); its
peer maps the same segments read-only and views tensors in place with
``np.frombuffer``-like arrays: no copy and no pickle. The life of a block:

1. the owner writes a request's (or an answer's) tensors into one block (``write``);
2. the peer views them (``Mapped.read``); the views keep a holder object alive;
3. when the last view is garbage, the holder's finaliser reports the block to the peer's
   ``released`` callback, which tells the owner; the owner frees the block (``free``).

So a block is reused only once nothing in the peer can still read it: a request cancelled
while a worker thread still reads its inputs keeps them until that thread lets go.

Segments are ``memfd``s: the owner announces each new one (``take_new``: its index, fd
and size) to the peer, which maps it (``Mapped.add``). Arenas grow by adding segments, at
most ``limit`` bytes in all (else ``BudgetFull``), and a segment other than the first is
dropped once wholly free (``free`` returns it; the peer unmaps it with ``Mapped.drop``).

String (object) tensors cross as lengths then bytes (``encode_strings``), never pickled. A request's
tensors of a few KB in all skip the arena: the same layout, in a buffer that travels in the control
message (``write(inline_bytes=...)``), cheaper than a block's allocation, views and release.
"""

from __future__ import annotations

import functools
import mmap
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...errors import BudgetFull
from .allocator import ALIGN, Allocator, aligned

STRING = "object"  # TensorRef.dtype of a string tensor (numpy's object arrays of bytes)


# Plain tuples, not classes: every request sends a few, and pickle writes a plain tuple of ints and
# strings about ten times faster than a named tuple or a dataclass (a few µs per message, not 30).
Block = tuple[int, int, int]
"""A run of an arena, freed as one: (segment, offset, nbytes)."""

TensorRef = tuple[int, int, int, str, tuple[int, ...]]
"""Where one tensor lies in an arena: (segment, offset, nbytes, dtype, shape); dtype is numpy's
``dtype.str`` (``dtype.name`` for ml_dtypes' kinds) or ``STRING``."""


def tensor_nbytes(array: np.ndarray) -> int:
    """The bytes ``array`` takes in an arena."""
    if array.dtype.hasobject:
        return 8 * array.size + sum(len(_as_bytes(item)) for item in array.flat)
    return array.nbytes


def _as_bytes(item: Any) -> bytes:
    return item if isinstance(item, bytes) else str(item).encode()


def encode_strings(array: np.ndarray, into: memoryview) -> None:
    """An object array of bytes as its little-endian uint64 lengths, then the bytes one after another."""
    items = [_as_bytes(item) for item in array.flat]
    lengths = np.frombuffer(into, np.uint64, len(items))
    lengths[:] = [len(item) for item in items]
    into[8 * len(items) : 8 * len(items) + sum(map(len, items))] = b"".join(items)


def decode_strings(data: memoryview, shape: tuple[int, ...]) -> np.ndarray:
    """``encode_strings``'s inverse: a fresh object array (its bytes copied out of the arena)."""
    count = int(np.prod(shape, dtype=np.int64))
    lengths = np.frombuffer(data, np.uint64, count)
    out = np.empty(count, dtype=object)
    position = 8 * count
    raw = data.tobytes()
    for i, length in enumerate(lengths.tolist()):
        out[i] = raw[position : position + length]
        position += length
    return out.reshape(shape)


class _Segment:
    """One memfd and its mapping; ``array``: the whole mapping as bytes, to slice views from.

    ``mmap`` keeps a descriptor of its own (a dup) until the mapping is closed or garbage; the peer
    closes the one it received at once, so a mapped segment costs one descriptor, the owner's two
    (it keeps the one it sends)."""

    def __init__(self, fd: int, size: int, writable: bool) -> None:
        self.fd = fd
        self.size = size
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
        self.array: np.ndarray | None = np.frombuffer(self.map, np.uint8)
        self.address: int = self.array.ctypes.data
        if not writable:
            os.close(fd)
            self.fd = -1

    def close(self) -> None:
        """The owner's end: nothing of this process views the segment (the peer's views are its own
        mapping), so the descriptor and the mapping go now."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.array = None
        self.map.close()


class Arena:
    """The owner's side. Not thread-safe: one event loop writes and frees."""

    def __init__(self, name: str, limit: int, segment_bytes: int = 1 << 20) -> None:
        self.name = name
        self.limit = limit
        self.segment_bytes = segment_bytes
        self._alloc = Allocator()
        self._segments: dict[int, _Segment] = {}
        self._new: list[tuple[int, int, int]] = []
        self.closed = False

    @property
    def total(self) -> int:
        return self._alloc.total

    def take_new(self) -> list[tuple[int, int, int]]:
        """Segments added since the last call, as (index, fd, size), for the peer to map."""
        new, self._new = self._new, []
        return new

    def write(
        self, arrays: Mapping[str, np.ndarray], inline_bytes: int = 0
    ) -> tuple[Block | None, dict[str, TensorRef], bytes | None]:
        """Copy ``arrays`` into one new block: (block, refs, None). Tensors of ``inline_bytes`` or less in all
        go in a buffer of their own instead (None, refs, buffer), to travel in the control message: for a
        few bytes, an arena's block, its views and its release cost more than copying them (~20 µs)."""
        sizes = [tensor_nbytes(array) for array in arrays.values()]
        total = sum(aligned(n) for n in sizes)
        if total <= inline_bytes:
            return (None, *_inline(arrays, sizes))
        block = self._allocate(total)
        segment = self._segments[block[0]].array
        assert segment is not None
        return block, _fill(segment, block[0], block[1], arrays, sizes), None

    def _allocate(self, nbytes: int) -> Block:
        found = self._alloc.alloc(nbytes)
        if found is None:
            size = max(self.segment_bytes, aligned(nbytes), -(-aligned(nbytes) // (1 << 20)) << 20)
            if self.total + size > self.limit:
                raise BudgetFull(
                    f"the hand-off arena '{self.name}' is full: {self.total} of {self.limit} bytes in use, "
                    f"{nbytes} more asked for"
                )
            fd = os.memfd_create(f"modelserve-{self.name}", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
            index = self._alloc.add_segment(size)
            self._segments[index] = _Segment(fd, size, writable=True)
            self._new.append((index, fd, size))
            found = self._alloc.alloc(nbytes)
            assert found is not None
        return (found[0], found[1], nbytes)

    def free(self, block: Block) -> int | None:
        """Free a block the peer released; returns a segment now dropped (the peer must unmap it), if any."""
        if self.closed:
            return None
        segment, offset, nbytes = block
        self._alloc.free(segment, offset, nbytes)
        if segment != min(self._segments) and self._alloc.is_free(segment):
            self._alloc.remove_segment(segment)
            self._segments.pop(segment).close()
            return segment
        return None

    def close(self) -> None:
        self.closed = True
        for segment in self._segments.values():
            segment.close()
        self._segments.clear()


def _fill(
    into: np.ndarray, segment: int, offset: int, arrays: Mapping[str, np.ndarray], sizes: list[int]
) -> dict[str, TensorRef]:
    """Write ``arrays`` one after another (aligned) into ``into`` from ``offset``; their refs."""
    refs: dict[str, TensorRef] = {}
    for (name, array), nbytes in zip(arrays.items(), sizes, strict=True):
        target = into[offset : offset + nbytes]
        if array.dtype.hasobject:
            encode_strings(array, memoryview(target))  # type: ignore[arg-type]
        elif nbytes:
            target.view(array.dtype).reshape(array.shape)[...] = array
        refs[name] = (segment, offset, nbytes, _dtype(array), array.shape)
        offset += aligned(nbytes)
    return refs


def _inline(arrays: Mapping[str, np.ndarray], sizes: list[int]) -> tuple[dict[str, TensorRef], bytes]:
    """``_fill``'s layout as bytes of their own, made by ``tobytes`` and one join: every request of a few
    bytes comes here, and views of a buffer cost several numpy calls per tensor."""
    parts: list[bytes | bytearray] = []
    refs: dict[str, TensorRef] = {}
    offset = 0
    for (name, array), nbytes in zip(arrays.items(), sizes, strict=True):
        if array.dtype.hasobject:
            data = bytearray(nbytes)
            encode_strings(array, memoryview(data))
            parts.append(data)
        else:
            parts.append(array.tobytes())
        padded = aligned(nbytes)
        if padded > nbytes:
            parts.append(bytes(padded - nbytes))
        refs[name] = (-1, offset, nbytes, _dtype(array), array.shape)
        offset += padded
    return refs, b"".join(parts)


def _dtype(array: np.ndarray) -> str:
    if array.dtype.hasobject:
        return STRING
    # ml_dtypes' bfloat16 has the ``str`` of any two raw bytes ("<V2"); its name finds it again
    return str(array.dtype.name if array.dtype.kind == "V" else array.dtype.str)


class _Holder:
    """What a block's views keep alive (numpy's ``base``); its finaliser releases the block."""

    __slots__ = ("__array_interface__", "__weakref__", "segment")

    def __init__(self, segment: _Segment, offset: int, nbytes: int) -> None:
        self.segment = segment  # the mapping stays while a view of it lives
        self.__array_interface__ = {
            "data": (segment.address + offset, True),  # read-only
            "shape": (nbytes,),
            "typestr": "|u1",
            "version": 3,
        }


class Mapped:
    """The peer's side: the owner's segments mapped read-only. ``read`` may be called on the event loop;
    ``released`` is called from whichever thread drops a block's last view."""

    def __init__(self) -> None:
        self._segments: dict[int, _Segment] = {}
        self._lock = threading.Lock()

    def add(self, index: int, fd: int, size: int) -> None:
        self._segments[index] = _Segment(fd, size, writable=False)

    def drop(self, index: int) -> None:
        """Forget a segment the owner dropped (wholly free: no view of it is left)."""
        del self._segments[index]

    def read(
        self,
        block: Block | None,
        refs: Mapping[str, TensorRef],
        released: Callable[[Block], None],
        inline: bytes | bytearray | None = None,
    ) -> dict[str, np.ndarray]:
        """Views of the tensors of ``block`` (string tensors copied out); ``released(block)`` once all are
        garbage. Tensors that came ``inline`` (no block) are views of that buffer."""
        if block is None:
            whole = np.frombuffer(inline if inline is not None else b"", np.uint8)
            if whole.flags.writeable:  # a bytearray: read-only, as the arena's views
                whole.flags.writeable = False
            return _views(whole, 0, refs)
        segment, start, size = block
        holder = _Holder(self._segments[segment], start, size)
        out = _views(np.asarray(holder), start, refs)
        weakref.finalize(holder, released, block)
        return out

    def close(self) -> None:
        """Forget every segment: each mapping, and its descriptor, goes with its last view."""
        self._segments.clear()


def _views(whole: np.ndarray, start: int, refs: Mapping[str, TensorRef]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, (_, offset, nbytes, dtype, shape) in refs.items():
        data = whole[offset - start : offset - start + nbytes]
        if dtype == STRING:
            out[name] = decode_strings(memoryview(data), shape)  # type: ignore[arg-type]
        else:
            out[name] = data.view(_numpy_dtype(dtype)).reshape(shape)
    return out


@functools.lru_cache(maxsize=64)  # parsing a dtype string costs more than the view it is for
def _numpy_dtype(dtype: str) -> np.dtype[Any]:
    return np.dtype(object) if dtype == STRING else np.dtype(dtype)


__all__ = ["ALIGN", "STRING", "Arena", "Block", "Mapped", "TensorRef"]
