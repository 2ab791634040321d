"""How a request asks to be queued: its priority level and its longest wait in a batch queue.

Both are optional and travel the same way in every protocol: as HTTP
headers on REST and as metadata on gRPC, with the same (lower-case) names::

    x-modelserve-priority: 2             # 1 is served first; 0 or absent: the model's default
    x-modelserve-queue-timeout-ms: 50    # give up after 50 ms in the queue; 0: no limit but the deadline

They matter only where requests queue (``--enable_batching``); the model's
defaults come from its batching parameters (``priority_levels``,
``default_priority_level``, ``queue_timeout_micros``). See docs/batching.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import InvalidArgument

PRIORITY_HEADER = "x-modelserve-priority"
QUEUE_TIMEOUT_HEADER = "x-modelserve-queue-timeout-ms"
_NAMES = (PRIORITY_HEADER, QUEUE_TIMEOUT_HEADER)
_NAMES_BYTES = tuple(n.encode() for n in _NAMES)


@dataclass(frozen=True)
class RequestOptions:
    """``priority`` 0: the model's default level; ``queue_timeout`` in seconds, None: the model's default."""

    priority: int = 0
    queue_timeout: float | None = None


DEFAULT = RequestOptions()


def from_headers(headers: Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]]) -> RequestOptions:
    """Read the two headers from HTTP headers (ASGI's byte pairs) or gRPC metadata (str pairs).

    Header names are matched without regard to case; a malformed value is the
    client's error (INVALID_ARGUMENT). Returns ``DEFAULT`` when neither is sent.
    """
    priority: str | None = None
    timeout: str | None = None
    for raw_key, raw_value in headers:
        key = raw_key.lower()
        if key in _NAMES or key in _NAMES_BYTES:
            name = key.decode("latin-1") if isinstance(key, bytes) else key
            value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
            if name == PRIORITY_HEADER:
                priority = value
            else:
                timeout = value
    if priority is None and timeout is None:
        return DEFAULT
    return RequestOptions(_priority(priority), _timeout(timeout))


def _priority(text: str | None) -> int:
    if text is None:
        return 0
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise InvalidArgument(f"Invalid {PRIORITY_HEADER}: '{text}'; expected a level (1 is the highest)")
    return value


def _timeout(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"Invalid {QUEUE_TIMEOUT_HEADER}: '{text}'; expected milliseconds (>= 0)")
    return value / 1000


def with_parameters(options: RequestOptions, priority: object, timeout: object) -> RequestOptions:
    """The Open Inference Protocol's ``priority`` (1 is served first) and ``timeout`` (µs in the
    queue) request parameters, as Triton reads them, over ``options`` (from the headers); None:
    not sent. The same for V2 REST and V2 gRPC."""
    if priority is None and timeout is None:
        return options
    if priority is not None and (type(priority) is not int or priority < 0):
        raise InvalidArgument("Unable to parse 'priority'")
    if timeout is not None and (type(timeout) is not int or timeout < 0):
        raise InvalidArgument("Unable to parse 'timeout'")
    return RequestOptions(
        options.priority if priority is None else priority,
        options.queue_timeout if timeout is None else (timeout / 1e6 or None),
    )
