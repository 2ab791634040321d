"""Where blocks go in an arena's segments: first fit over sorted free lists, coalescing on free.

Pure bookkeeping (no memory, no I/O), so it is tested alone. Offsets and sizes are
multiples of ``ALIGN`` (a cache line; every dtype's alignment divides it). Not
thread-safe: its arena serialises calls.
"""

from __future__ import annotations

import bisect

ALIGN = 64


def aligned(nbytes: int) -> int:
    return max(ALIGN, -(-nbytes // ALIGN) * ALIGN)


class Allocator:
    """Free space per segment as sorted (offset, size) runs; a segment's index is never reused."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}  # live segments and their sizes
        self._free: dict[int, list[tuple[int, int]]] = {}
        self._next = 0

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    def add_segment(self, size: int) -> int:
        index = self._next
        self._next += 1
        self.sizes[index] = size
        self._free[index] = [(0, size)]
        return index

    def remove_segment(self, index: int) -> None:
        """Forget a segment; it must be wholly free (``is_free``)."""
        assert self.is_free(index), "a segment with live blocks"
        del self.sizes[index], self._free[index]

    def is_free(self, index: int) -> bool:
        return self._free[index] == [(0, self.sizes[index])]

    def alloc(self, nbytes: int) -> tuple[int, int] | None:
        """(segment, offset) of ``aligned(nbytes)`` free bytes, lowest segment first; None if none fits."""
        need = aligned(nbytes)
        for index, runs in self._free.items():
            for i, (offset, size) in enumerate(runs):
                if size >= need:
                    if size == need:
                        del runs[i]
                    else:
                        runs[i] = (offset + need, size - need)
                    return index, offset
        return None

    def free(self, index: int, offset: int, nbytes: int) -> None:
        """Give back what ``alloc(nbytes)`` returned, merged with free neighbours."""
        size = aligned(nbytes)
        runs = self._free[index]
        i = bisect.bisect_left(runs, (offset, 0))
        if (i < len(runs) and runs[i][0] < offset + size) or (i > 0 and sum(runs[i - 1]) > offset):
            raise ValueError(f"block {index}:{offset}+{size} is already free")
        if i < len(runs) and runs[i][0] == offset + size:  # merge with the run after
            size += runs.pop(i)[1]
        if i > 0 and sum(runs[i - 1]) == offset:  # and the run before
            offset, size = runs[i - 1][0], runs[i - 1][1] + size
            i -= 1
            runs.pop(i)
        runs.insert(i, (offset, size))
