"""Framing over the Unix stream socket between a front end and the engine, with descriptors.

A frame is an 8-byte header (payload bytes, descriptor count; little-endian uint32s) and a
pickled payload: small control data only (both ends are our own processes; tensors stay in
the arenas). Descriptors travel as SCM_RIGHTS with the frame's first bytes; the reader
queues every descriptor it receives and hands a frame its count from the front of the
queue, so frames and descriptors stay matched however the kernel splits the stream.

``Connection`` drives one socket on an asyncio loop with ``add_reader``/``add_writer``
(asyncio's own transports cannot pass descriptors). ``pair()`` makes the socket pair a
parent process splits between itself and a child.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import pickle
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

HEADER = struct.Struct("<II")
MAX_FRAME = 64 << 20  # control data only: a bigger frame is a bug, and ends the connection
MAX_FDS = 16  # descriptors per frame
_READ_BYTES = 1 << 18
_ANCILLARY = socket.CMSG_SPACE(MAX_FDS * 4)
_CTRUNC = int(socket.MSG_CTRUNC)  # a plain int: testing an IntFlag goes through enum's Python code


def pair() -> tuple[socket.socket, socket.socket]:
    """(engine end, front-end end); the caller makes the child's end inheritable when it spawns."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def frame(message: object, fds: Sequence[int] = ()) -> bytes:
    payload = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload), len(fds)) + payload


class FrameReader:
    """Bytes and descriptors in, (message, fds) out; pure, so the framing is tested without sockets."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._fds: collections.deque[int] = collections.deque()

    def feed(self, data: bytes, fds: Sequence[int] = ()) -> list[tuple[Any, list[int]]]:
        buffer = self._buffer
        buffer += data
        if fds:
            self._fds.extend(fds)
        out = []
        start = 0  # frames are read from ``start`` on and the whole run cut off once: one move, not one each
        try:
            while len(buffer) - start >= HEADER.size:
                size, count = HEADER.unpack_from(buffer, start)
                if size > MAX_FRAME or count > MAX_FDS:
                    raise ValueError(f"a hand-off frame of {size} bytes and {count} descriptors")
                end = start + HEADER.size + size
                if len(buffer) < end:
                    break
                if len(self._fds) < count:
                    raise ValueError("a hand-off frame arrived without its descriptors")
                with memoryview(buffer) as view:
                    message = pickle.loads(view[start + HEADER.size : end])
                out.append((message, [self._fds.popleft() for _ in range(count)] if count else []))
                start = end
        finally:
            del buffer[:start]
        return out

    def close(self) -> None:
        """Close descriptors received that no frame claimed."""
        while self._fds:
            os.close(self._fds.popleft())


def _descriptors(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors of SCM_RIGHTS ancillary data (``socket.recv_fds``'s parsing, without its per-call set-up)."""
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += struct.unpack(f"{len(data) // 4}i", data[: len(data) - len(data) % 4])
    return fds


Handler = Callable[[Any, list[int]], None]


class Connection:
    """One end of the socket on the running loop: ``send`` frames, ``on_message`` for each one received,
    ``on_close`` once when the peer goes (EOF, error) or ``close`` is called. Loop thread only."""

    def __init__(self, sock: socket.socket, on_message: Handler, on_close: Callable[[], None]) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._on_message = on_message
        self._on_close = on_close
        self._reader = FrameReader()
        self._out: collections.deque[tuple[memoryview, list[int]]] = collections.deque()
        self._joining: list[bytes] = []  # frames sent since the last flush, in order, after those in ``_out``
        self._loop = asyncio.get_running_loop()
        self._writing = False
        self._scheduled = False
        self.closed = False
        self.sent_bytes = 0  # control bytes sent and received: tensors never count here
        self.received_bytes = 0
        self._loop.add_reader(sock.fileno(), self._readable)

    def send(self, message: object, fds: Sequence[int] = ()) -> None:
        if self.closed:
            return
        data = frame(message, fds)
        self.sent_bytes += len(data)
        if fds:
            self._join()
            self._out.append((memoryview(data), list(fds)))
        else:  # joined to the frames around it at the flush: one send for all, and one wake-up of the peer
            self._joining.append(data)
        if not self._writing and not self._scheduled:
            # Sent at the end of this loop iteration: the frames of every request this iteration
            # handled go in one system call.
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _join(self) -> None:
        """Frames without descriptors sent since the last flush, queued as one buffer (one copy, at the end)."""
        joining = self._joining
        if joining:
            self._out.append((memoryview(joining[0] if len(joining) == 1 else b"".join(joining)), []))
            joining.clear()

    def _flush(self) -> None:
        self._scheduled = False
        if self.closed:
            return
        self._join()
        while self._out:
            data, fds = self._out[0]
            try:
                if fds:
                    sent = self._sock.sendmsg(
                        [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
                    )
                else:
                    sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            if sent < len(data):
                self._out[0] = (data[sent:], [])  # its descriptors went with the first bytes
                break
            self._out.popleft()
        want = bool(self._out)
        if want != self._writing:
            self._writing = want
            if want:
                self._loop.add_writer(self._sock.fileno(), self._flush)
            else:
                self._loop.remove_writer(self._sock.fileno())

    def _readable(self) -> None:
        try:
            data, ancillary, flags, _ = self._sock.recvmsg(_READ_BYTES, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary, flags = b"", [], 0
        fds = _descriptors(ancillary) if ancillary else []
        if not data:
            for fd in fds:
                os.close(fd)
            self.close()
            return
        if flags & _CTRUNC:
            for fd in fds:
                os.close(fd)
            log.error("hand-off: descriptors were cut off; closing the connection")
            self.close()
            return
        self.received_bytes += len(data)
        try:
            messages = self._reader.feed(data, fds)
        except ValueError as exc:
            log.error("hand-off: %s; closing the connection", exc)
            self.close()
            return
        for message, received in messages:
            self._on_message(message, received)
            if self.closed:
                return

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._sock.fileno())
        if self._writing:
            self._loop.remove_writer(self._sock.fileno())
        self._sock.close()
        self._reader.close()
        self._out.clear()
        self._joining.clear()
        self._on_close()
