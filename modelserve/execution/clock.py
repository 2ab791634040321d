"""Time for the request path: the real monotonic clock, a fake one that tests move by hand, and timers.

The batcher reads the time (batch timeouts) and sets timers on the event loop
(deadlines and queue timeouts) only through a ``Clock``, so a test can step
through a schedule without sleeping. Request deadlines (the batcher's and the
worker pool's) share one loop timer each (``TimerHeap``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
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


class TimerHeap:
    """Many timers behind one clock timer: only the earliest pending one is armed on the clock.

    Every request waiting in a batch queue has a deadline. An event-loop timer apiece cost
    the loop about 5 µs per request under load (uvloop starts, stops and closes a libuv
    handle for each); here a timer is a heap entry, and cancelling one only marks it.
    Not thread-safe: call it from the clock's thread (the event loop's).
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, _HeapTimer]] = []
        self._seq = itertools.count()
        self._armed: Timer | None = None
        self._armed_at = math.inf
        self.cancelled = 0  # cancelled entries still in the heap

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> Timer:
        timer = _HeapTimer(self, fn, args)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        if when < self._armed_at:
            self._arm(when)
        return timer

    def __len__(self) -> int:
        """Timers pending (not fired, not cancelled)."""
        return len(self._heap) - self.cancelled

    def _arm(self, when: float) -> None:
        if self._armed is not None:
            self._armed.cancel()
        self._armed_at = when
        self._armed = self._clock.call_at(when, self._fire)

    def _fire(self) -> None:
        self._armed, self._armed_at = None, math.inf
        heap = self._heap
        now = self._clock.now()
        while heap and (heap[0][2].fn is None or heap[0][0] <= now):
            timer = heapq.heappop(heap)[2]
            if timer.fn is None:
                self.cancelled -= 1
                continue
            fn, args = timer.fn, timer.args
            timer.fn = None  # fired: a later cancel() is a no-op
            fn(*args)  # may add timers
        if heap:
            self._arm(heap[0][0])

    def _cancelled_one(self) -> None:
        # Cancelled entries wait for their time to be popped; past half the heap they are swept
        # out at once, so that the heap stays about as long as the timers really pending.
        self.cancelled += 1
        if self.cancelled > 64 and self.cancelled * 2 > len(self._heap):
            self._heap = [item for item in self._heap if item[2].fn is not None]
            heapq.heapify(self._heap)
            self.cancelled = 0


class _HeapTimer:
    __slots__ = ("args", "fn", "heap")

    def __init__(self, heap: TimerHeap, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.heap = heap
        self.fn: Callable[..., Any] | None = fn
        self.args = args

    def cancel(self) -> None:
        if self.fn is not None:
            self.fn = None
            self.args = ()  # let go of what the callback held (a request and its tensors)
            self.heap._cancelled_one()
