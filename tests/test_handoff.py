"""The hand-off's transport alone: the arena allocator (a property test), memfd arenas and their views,
string tensors, and the framing with descriptors over a real socket pair."""

from __future__ import annotations

import asyncio
import gc
import os
import socket

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelserve.errors import BudgetFull
from modelserve.execution.handoff import wire
from modelserve.execution.handoff.allocator import ALIGN, Allocator, aligned
from modelserve.execution.handoff.arena import Arena, Block, Mapped

# ---- the allocator --------------------------------------------------------------------------------

ops = st.lists(
    st.one_of(st.tuples(st.just("alloc"), st.integers(1, 5000)), st.tuples(st.just("free"), st.integers(0, 50))),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_allocator_blocks_never_overlap_stay_in_bounds_and_coalesce(steps: list[tuple[str, int]]) -> None:
    alloc = Allocator()
    sizes = [alloc.add_segment(16384), alloc.add_segment(8192)]
    live: list[tuple[int, int, int]] = []
    for op, n in steps:
        if op == "alloc":
            got = alloc.alloc(n)
            if got is None:  # nothing fits: then no free run is big enough anywhere
                assert all(size < aligned(n) for runs in alloc._free.values() for _, size in runs)
                continue
            segment, offset = got
            assert offset % ALIGN == 0 and offset + aligned(n) <= alloc.sizes[segment]
            for s, o, m in live:
                assert s != segment or o + aligned(m) <= offset or offset + aligned(n) <= o
            live.append((segment, offset, n))
        elif live:
            segment, offset, m = live.pop(n % len(live))
            alloc.free(segment, offset, m)
    for segment, offset, m in live:
        alloc.free(segment, offset, m)
    assert all(alloc.is_free(s) for s in sizes)  # everything freed: one run per segment again


def test_allocator_refuses_a_double_free() -> None:
    alloc = Allocator()
    segment = alloc.add_segment(4096)
    got = alloc.alloc(100)
    assert got is not None
    alloc.free(segment, got[1], 100)
    with pytest.raises(ValueError, match="already free"):
        alloc.free(segment, got[1], 100)


# ---- arenas -----------------------------------------------------------------------------------------


def pair(limit: int = 1 << 30, segment_bytes: int = 1 << 20) -> tuple[Arena, Mapped]:
    return Arena("test", limit, segment_bytes), Mapped()


def share(arena: Arena, mapped: Mapped) -> None:
    for index, fd, size in arena.take_new():
        mapped.add(index, os.dup(fd), size)  # the peer gets its own descriptor, as over the socket


def test_tensors_cross_in_place_and_the_block_is_released_when_the_views_go() -> None:
    arena, mapped = pair()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    strings = np.array([[b"ab", b""], [b"\x00xyz", "é".encode()]], dtype=object)
    empty = np.zeros((0, 3), np.int64)
    block, refs, _ = arena.write({"x": x, "s": strings, "e": empty})
    share(arena, mapped)
    released: list[Block] = []
    views = mapped.read(block, refs, released.append)
    np.testing.assert_array_equal(views["x"], x)
    assert views["x"].dtype == np.float32 and not views["x"].flags.writeable  # read-only, no copy
    assert views["s"].tolist() == strings.tolist() and views["s"].shape == (2, 2)
    assert views["e"].shape == (0, 3) and views["e"].dtype == np.int64
    row = views["x"][1]
    del views
    gc.collect()
    assert released == []  # a slice still views the block
    del row
    gc.collect()
    assert released == [block]
    assert arena.free(block) is None  # the first segment stays


def test_arenas_grow_by_segments_within_their_limit_and_drop_them_when_free() -> None:
    arena, _mapped = pair(limit=4 << 20, segment_bytes=1 << 20)
    small, _, _ = arena.write({"a": np.ones(1000, np.uint8)})
    big, _, _ = arena.write({"b": np.ones(2 << 20, np.uint8)})  # does not fit the first segment
    new = arena.take_new()
    assert [index for index, _, _ in new] == [0, 1] and arena.total == 3 << 20
    with pytest.raises(BudgetFull, match="hand-off arena 'test' is full"):
        arena.write({"c": np.ones(2 << 20, np.uint8)})
    assert big is not None and small is not None
    assert arena.free(big) == 1  # wholly free and not the first: dropped
    assert arena.total == 1 << 20
    arena.write({"c": np.ones(2 << 20, np.uint8)})  # room again
    arena.free(small)
    arena.close()


def test_a_closed_arena_closes_its_descriptors() -> None:
    before = len(os.listdir("/proc/self/fd"))
    arena, mapped = pair()
    arena.write({"x": np.ones(10)})
    share(arena, mapped)
    assert len(os.listdir("/proc/self/fd")) == before + 3  # the owner's memfd and mmap's, the peer's mmap's
    arena.close()
    mapped.close()
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before


# ---- framing -------------------------------------------------------------------------------------------


def test_frames_split_anywhere_come_out_whole_with_their_descriptors() -> None:
    r, w = os.pipe()
    data = wire.frame(("a", 1, {"x": 1})) + wire.frame(("b", 2, None), [r]) + wire.frame(("c", 3, "z" * 1000))
    reader = wire.FrameReader()
    out = []
    for i in range(0, len(data), 7):  # the kernel may split the stream anywhere
        out += reader.feed(data[i : i + 7], [r] if i == 0 else [])
    assert [m for m, _ in out] == [("a", 1, {"x": 1}), ("b", 2, None), ("c", 3, "z" * 1000)]
    assert [fds for _, fds in out] == [[], [r], []]
    os.close(r)
    os.close(w)


def test_a_frame_over_the_limit_is_refused() -> None:
    reader = wire.FrameReader()
    with pytest.raises(ValueError, match="hand-off frame"):
        reader.feed(wire.HEADER.pack(wire.MAX_FRAME + 1, 0))


def test_connections_pass_messages_and_descriptors_over_a_socket_pair() -> None:
    async def exchange() -> tuple[list[object], bytes, bool]:
        a, b = wire.pair()
        got: list[object] = []
        done = asyncio.Event()
        closed = asyncio.Event()
        fds: list[int] = []

        def received(message: object, passed: list[int]) -> None:
            got.append(message)
            fds.extend(passed)
            if len(got) == 3:
                done.set()

        left = wire.Connection(a, lambda m, f: None, closed.set)
        right = wire.Connection(b, received, lambda: None)
        fd = os.memfd_create("t")
        os.write(fd, b"shared")
        left.send(("one", 1, "x" * 300_000))  # bigger than one socket buffer: sent in pieces
        left.send(("two", 2, None), [fd])
        left.send(("three", 3, [1, 2]))
        await asyncio.wait_for(done.wait(), 10)
        os.close(fd)
        content = os.pread(fds[0], 6, 0)
        os.close(fds[0])
        right.close()
        await asyncio.wait_for(closed.wait(), 10)  # the peer's end closing is seen
        return got, content, left.closed

    got, content, closed = asyncio.run(exchange())
    assert [m[0] for m in got] == ["one", "two", "three"]  # type: ignore[index]
    assert content == b"shared" and closed


def test_socket_pair_ends_are_unix_stream_sockets() -> None:
    a, b = wire.pair()
    assert a.family == socket.AF_UNIX and a.type == socket.SOCK_STREAM
    a.close()
    b.close()
