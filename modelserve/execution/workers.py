"""Worker threads for blocking model calls, completing asyncio futures in bulk.

Inference never runs on the event loop. ``loop.run_in_executor`` costs a loop
wake-up per call; here a worker that finishes several calls while the loop is
busy hands all of them back with one wake-up, which matters when a model call
takes microseconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import DeadlineExceeded, Unavailable
from .clock import MONOTONIC, TimerHeap

T = TypeVar("T")


class _Item:
    """A queued call. ``fn`` (and with it the request's arrays) is let go as soon as the call is no
    longer wanted (cancelled or expired), even while the item still waits in the queue."""

    __slots__ = ("deadline", "fn", "future")

    def __init__(self, future: asyncio.Future[Any], fn: Callable[[], Any] | None, deadline: float | None) -> None:
        self.future = future
        self.fn = fn
        self.deadline = deadline


class WorkerPool:
    """``threads`` daemon threads running submitted callables in FIFO order.

    ``run`` must be awaited on the event loop that first used the pool, or
    driven on a thread that runs no loop (``runner.run_inline``), which then
    calls ``fn`` itself. A call whose deadline (``time.monotonic()`` based)
    has passed before a worker (or that thread) gets to it is not run at all.
    """

    def __init__(self, threads: int, name: str = "modelserve-worker") -> None:
        self._size = max(1, threads)
        self._name = name
        self._queue: collections.deque[_Item] = collections.deque()
        self._cv = threading.Condition(threading.Lock())
        self._idle = 0
        self._done: list[tuple[asyncio.Future[Any], bool, Any]] = []
        self._done_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers = TimerHeap(MONOTONIC)  # deadlines of calls awaited on that loop
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    def _start(self) -> None:
        for i in range(self._size):
            thread = threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    async def run(self, fn: Callable[[], T], deadline: float | None = None) -> T:
        """Run ``fn()`` on a worker; DeadlineExceeded once ``deadline`` passes."""
        loop = asyncio._get_running_loop()
        if loop is None:  # the caller's own thread is free to run it: a hand-off would only add a wait
            _check_deadline(deadline)
            result = fn()
            _check_deadline(deadline)  # a result too late for its caller is not encoded
            return result
        if self._loop is None:
            self._loop = loop
            self._start()
        future: asyncio.Future[T] = loop.create_future()
        item = _Item(future, fn, deadline)
        del fn  # the item holds it, and lets go of it once the call is not wanted
        with self._cv:
            if self._closed:
                raise Unavailable("Server is shutting down")
            self._queue.append(item)
            if self._idle:
                self._cv.notify()
        timer = None if deadline is None else self._timers.call_at(deadline, _expire, future)
        try:
            return await future
        except BaseException:  # expired, cancelled, or failed: a call still queued will not run
            with self._cv:
                item.fn = None
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _work(self) -> None:
        while (item := self._next()) is not None:
            self._run(item)
            del item  # an idle worker holds nothing of the last request

    def _next(self) -> tuple[asyncio.Future[Any], Callable[[], Any], float | None] | None:
        """The next call still wanted, or None once the pool is closed and empty."""
        with self._cv:
            while True:
                while not self._queue:
                    if self._closed:
                        return None
                    self._idle += 1
                    self._cv.wait()
                    self._idle -= 1
                item = self._queue.popleft()
                if item.fn is not None and not item.future.done():  # not expired or cancelled while queued
                    return item.future, item.fn, item.deadline

    def _run(self, item: tuple[asyncio.Future[Any], Callable[[], Any], float | None]) -> None:
        future, fn, deadline = item
        if deadline is not None and time.monotonic() > deadline:
            self._finish(future, False, DeadlineExceeded("Deadline exceeded"))
            return
        ok, value = _call(fn)
        self._finish(future, ok, value)

    def _finish(self, future: asyncio.Future[Any], ok: bool, value: Any) -> None:
        with self._done_lock:
            first = not self._done
            self._done.append((future, ok, value))
        if first and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed; nobody waits any more
                self._loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._done_lock:
            done, self._done = self._done, []
        for future, ok, value in done:
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def close(self) -> None:
        """Finish queued calls, then let the threads exit."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()


def _call(fn: Callable[[], Any]) -> tuple[bool, Any]:
    """``(True, fn())``, or ``(False, the exception)`` for the awaiting request. The exception is
    returned, not kept beside the future: its traceback holds the frame that caught it, and a
    future among that frame's locals would make a cycle (future, exception, frame) that keeps the
    request's arrays alive until the garbage collector runs."""
    try:
        return True, fn()
    except BaseException as exc:
        return False, exc


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceeded("Deadline exceeded")


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(DeadlineExceeded("Deadline exceeded"))
