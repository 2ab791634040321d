"""One request's record, from its arrival to its answer (``RequestTrace``), and who reads it (``Observers``).

Times are ``time.monotonic()`` seconds (the clock deadlines use); ``wall``
is the wall-clock time of ``start``, so a reader that needs epoch times
(an access log line, an OpenTelemetry span) converts with ``epoch(t)``.
Writes come from the event loop and, for ``ran``, from the thread that ran
the model; a trace is read only once it is finished, after both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Literal, Protocol

from ..errors import Code

log = logging.getLogger(__name__)

# Which front end took the request.
Front = Literal["tfs_rest", "tfs_grpc", "v2_rest", "v2_grpc", ""]


class RequestTrace:
    """What one request did. The front end opens it (``protocol``, ``api``, ids, ``bytes_in``) and
    finishes it (``finish``: outcome, ``bytes_out``); the core fills ``model``/``version``/``signature``
    once it has resolved them (left "" / None for a name no model has, so labels stay bounded); the
    runner calls ``ran``. ``queued`` is when the runner took it (its queue wait is ``run_start - queued``).
    """

    __slots__ = (
        "api",
        "batch_rows",
        "bytes_in",
        "bytes_out",
        "code",
        "decoded",
        "end",
        "model",
        "peer",
        "protocol",
        "queued",
        "reason",
        "request_id",
        "rows",
        "run_end",
        "run_start",
        "signature",
        "start",
        "traceparent",
        "version",
        "wall",
    )

    def __init__(
        self,
        protocol: Front,
        api: str = "",
        *,
        request_id: str = "",
        peer: str = "",
        traceparent: str = "",
        bytes_in: int = 0,
        start: float | None = None,
    ) -> None:
        self.protocol: Front = protocol
        self.api = api  # predict, classify, regress, multi_inference, metadata, status, infer, ready, ...
        self.request_id = request_id
        self.peer = peer
        self.traceparent = traceparent  # W3C traceparent as received ("" when none)
        self.bytes_in = bytes_in
        self.start = time.monotonic() if start is None else start
        self.wall = time.time() - (time.monotonic() - self.start)
        self.model = ""
        self.version: int | None = None
        self.signature = ""
        self.rows = 0  # the request's rows (examples), once decoded
        self.decoded: float | None = None  # inputs decoded
        self.queued: float | None = None  # handed to the runner
        self.run_start: float | None = None  # the model call (or its batch) began
        self.run_end: float | None = None
        self.batch_rows = 0  # rows of the batch it ran in (0: not batched)
        self.end: float | None = None
        self.code = Code.OK
        self.reason = ""  # why it was refused, when it was: budget, queue_full, timeout, deadline, auth, too_large
        self.bytes_out = 0

    def ran(self, start: float, end: float, batch_rows: int = 0) -> None:
        """The runner ran the model for it from ``start`` to ``end`` (in a batch of ``batch_rows`` rows)."""
        self.run_start = start
        self.run_end = end
        self.batch_rows = batch_rows

    def finish(self, code: Code = Code.OK, bytes_out: int = 0, reason: str = "") -> None:
        self.code = code
        self.bytes_out = bytes_out
        self.reason = reason
        self.end = time.monotonic()

    def epoch(self, t: float) -> float:
        """``t`` (monotonic) as wall-clock seconds since the epoch."""
        return self.wall + (t - self.start)

    @property
    def seconds(self) -> float:
        """From arrival to answer (0 until finished)."""
        return 0.0 if self.end is None else self.end - self.start

    @property
    def queue_seconds(self) -> float | None:
        if self.queued is None or self.run_start is None:
            return None
        return max(0.0, self.run_start - self.queued)

    @property
    def run_seconds(self) -> float | None:
        if self.run_start is None or self.run_end is None:
            return None
        return self.run_end - self.run_start


# What warm-up and other callers without a front end pass: its fields are written and never read.
UNTRACED = RequestTrace("")


class Observer(Protocol):
    def finished(self, trace: RequestTrace) -> None:
        """A request was answered. Called on the thread that answered it; quick, thread-safe."""
        ...


class Observers:
    """Every reader of finished traces (metrics, access log, tracing), called in turn; one that raises
    is logged, once per kind of error, and the others still run: seeing must never cost a request."""

    def __init__(self, observers: Sequence[Observer] = ()) -> None:
        self._observers = tuple(observers)
        self._failed: set[tuple[str, str]] = set()

    @property
    def active(self) -> bool:
        return bool(self._observers)

    def __iter__(self) -> Iterator[Observer]:
        return iter(self._observers)

    def finished(self, trace: RequestTrace) -> None:
        for observer in self._observers:
            try:
                observer.finished(trace)
            except Exception as exc:
                key = (type(observer).__name__, type(exc).__name__)
                if key not in self._failed:
                    self._failed.add(key)
                    log.exception("%s failed on a finished request (logged once)", key[0])
