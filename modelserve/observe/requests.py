"""Where the front ends open and close each request's ``RequestTrace``: ``Watch``.

Opening counts the request in flight (per protocol) and gives it an id when
the client sent none; closing finishes the trace and hands it to the
``Observers``. Both listeners (REST, gRPC) hold the server's one ``Watch``.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import get_args

from ..errors import Code
from .trace import Front, Observers, RequestTrace

# Request ids made here: a random prefix per process and a counter, unique without a random call each.
_PREFIX = os.urandom(6).hex() + "-"
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_PREFIX}{next(_COUNTER):x}"


class Watch:
    """Opens (``open``) and closes (``close``) every request's trace. Thread-safe."""

    def __init__(self, observers: Observers | None = None) -> None:
        self.observers = observers or Observers()
        self._lock = threading.Lock()
        # Every API protocol from the start: a series that appears only with the first request reads
        # as missing to an autoscaler (a Prometheus Adapter metric), not as 0.
        self._inflight: dict[str, int] = dict.fromkeys(filter(None, get_args(Front)), 0)

    def open(
        self,
        protocol: Front,
        api: str = "",
        *,
        request_id: str = "",
        peer: str = "",
        traceparent: str = "",
        bytes_in: int = 0,
        start: float | None = None,
    ) -> RequestTrace:
        trace = RequestTrace(
            protocol,
            api,
            request_id=request_id or new_request_id(),
            peer=peer,
            traceparent=traceparent,
            bytes_in=bytes_in,
            start=start,
        )
        with self._lock:
            self._inflight[protocol] = self._inflight.get(protocol, 0) + 1
        return trace

    def close(self, trace: RequestTrace, code: Code = Code.OK, bytes_out: int = 0, reason: str = "") -> None:
        """The request is answered: finish its trace and tell the observers."""
        trace.finish(code, bytes_out, reason)
        with self._lock:
            self._inflight[trace.protocol] -= 1
        self.observers.finished(trace)

    def inflight(self) -> dict[str, int]:
        """Requests opened and not yet closed, by protocol (API requests only)."""
        with self._lock:
            return {protocol: n for protocol, n in self._inflight.items() if protocol}
