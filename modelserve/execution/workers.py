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

_Item = tuple["asyncio.Future[Any]", Callable[[], Any], "float | None"]


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
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded("Deadline exceeded")
            return fn()
        if self._loop is None:
            self._loop = loop
            self._start()
        future: asyncio.Future[T] = loop.create_future()
        with self._cv:
            if self._closed:
                raise Unavailable("Server is shutting down")
            self._queue.append((future, fn, deadline))
            if self._idle:
                self._cv.notify()
        if deadline is None:
            return await future
        timer = self._timers.call_at(deadline, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    if self._closed:
                        return
                    self._idle += 1
                    self._cv.wait()
                    self._idle -= 1
                future, fn, deadline = self._queue.popleft()
            if future.done():  # expired or cancelled while queued
                continue
            if deadline is not None and time.monotonic() > deadline:
                self._finish(future, False, DeadlineExceeded("Deadline exceeded"))
                continue
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting request
                self._finish(future, False, exc)
            else:
                self._finish(future, True, result)

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


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(DeadlineExceeded("Deadline exceeded"))
