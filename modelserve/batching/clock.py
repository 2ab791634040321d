"""Time for the batcher: the real monotonic clock, and a fake one that tests move by hand.

The batcher reads the time (batch timeouts) and sets timers on the event loop
(deadlines and queue timeouts) only through a ``Clock``, so a test can step
through a schedule without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any, Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on the ``time.monotonic()`` scale (deadlines use it too)."""
        ...

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Call ``fn(*args)`` on the running event loop once ``now() >= when``."""
        ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, when - time.monotonic()), fn, *args)


MONOTONIC = MonotonicClock()


class FakeClock:
    """A clock that stands still until ``advance``; timers fire inside ``advance``, in time order.

    Not thread-safe: drive it from the test's thread (the event loop's).
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> Timer:
        timer = _FakeTimer(fn, args)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer that falls due on the way."""
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            timer.fire()
        self._now = target

    @property
    def pending_timers(self) -> int:
        return sum(1 for _, _, t in self._timers if not t.cancelled)


class _FakeTimer:
    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._fn = fn
        self._args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._fn(*self._args)
