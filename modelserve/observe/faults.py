"""What the front ends do with a failed request's exception: log real faults, rate-limited, and let go.

Two hazards of answering errors, both a hostile client's lever:

* Log amplification. A client's mistake is a ``ServingError`` and logs
  nothing; only a server fault (any other exception) logs its traceback,
  and at most ``per_minute`` of them per site (a front end's handler) per
  minute. The rest are counted, and the next traceback logged after the
  minute is preceded by one line saying how many were suppressed.
* Memory held by cycles. An exception's traceback holds the frames it
  passed through, and with them the request's decoded arrays; a future
  that stores the exception and is itself a local of one of those frames
  (``await`` on a failed future) closes a cycle that only the garbage
  collector frees, seconds or gigabytes later. ``release`` cuts an
  answered exception off its traceback, so reference counting frees the
  request as soon as its answer is made. (It does not clear the frames
  themselves: one exception may be shared by the requests of a failed
  batch, and clearing a frame finalizes a coroutine suspended in it.)

Thread-safe: the threaded gRPC server's handlers share a ``FaultLog``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..errors import ResourceExhausted, ServingError, Unknown

PER_MINUTE = 10  # tracebacks per site per minute before the rest are only counted
_WINDOW = 60.0


class FaultLog:
    """Rate-limited ``logger.exception`` for server faults, per site (e.g. ``"REST"``)."""

    def __init__(
        self, logger: logging.Logger, per_minute: int = PER_MINUTE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = logger
        self._per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int, int]] = {}  # site -> (window start, logged, suppressed)

    def fault(self, site: str, exc: BaseException, message: str, *args: object) -> None:
        """Log ``message`` with ``exc``'s traceback, unless ``site`` has logged its share this minute."""
        now = self._clock()
        with self._lock:
            start, logged, suppressed = self._windows.get(site, (now, 0, 0))
            if now - start >= _WINDOW:
                start, logged = now, 0
            if logged >= self._per_minute:
                self._windows[site] = (start, logged, suppressed + 1)
                return
            self._windows[site] = (start, logged + 1, 0)
        if suppressed:
            self._log.error("%s: suppressed %d similar errors in the last minute", site, suppressed)
        self._log.error(message, *args, exc_info=(type(exc), exc, exc.__traceback__))

    def answer(self, site: str, exc: Exception, message: str, *args: object) -> ServingError:
        """What a client is told of a failure: a ServingError as it is; running out of memory as
        RESOURCE_EXHAUSTED (TF's answer to an OOM: try again later, and the budget flags are set
        above the memory the process has); any other exception is a fault, logged (rate-limited)
        and answered "Internal error", with no Python text."""
        if isinstance(exc, ServingError):
            return exc
        self.fault(site, exc, message, *args)
        if isinstance(exc, MemoryError):
            return ResourceExhausted(
                "Out of memory serving this request; try again later (the server's --memory_budget_bytes "
                "is above the memory it may use)"
            )
        return Unknown("Internal error")


def release(exc: BaseException) -> None:
    """Cut ``exc`` (and the exceptions chained to it) off their tracebacks; call it once the
    exception's answer is made and logged."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
