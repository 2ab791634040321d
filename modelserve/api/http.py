"""The HTTP vocabulary shared by the REST listener and its front ends: requests, responses, routing, bodies.

A front end is a ``Handler``: an async function from a whole ``Request`` (its
body already read) to a ``Response``. The listener (``httpd.py``) adds the
framing headers (length, date, connection) and writes it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ..budget import UNMETERED, Account, MemoryBudget
from ..errors import Code, ServingError
from ..observe.trace import UNTRACED, Front, RequestTrace

Headers = Sequence[tuple[bytes, bytes]]

JSON_HEADERS: Headers = ((b"content-type", b"application/json"),)
HTML_HEADERS: Headers = ((b"content-type", b"text/html"),)


@dataclass(slots=True)
class Request:
    """One request, whole. ``path`` is the URL's path as sent (still percent-encoded), without the query."""

    method: str
    path: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # names lower-cased, in order
    body: bytes = b""
    query: str = ""
    # The request's share of the memory budget, its body already charged (the listener opens it as
    # the body arrives and closes it once the answer is written).
    account: Account = UNMETERED
    # Its record (observe.trace): the listener opens it and closes it with the answer; the front end
    # names its API and, when it fails the request, its code (``failed``).
    trace: RequestTrace = UNTRACED

    def header(self, name: bytes) -> bytes | None:
        """The first value of the header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Response(NamedTuple):
    status: int
    body: bytes = b""
    headers: Headers = ()  # content-length, date and connection are the listener's
    # Written after ``body`` as they are (V2 binary tensors: views of the output arrays), so a big
    # answer is not joined into one more copy of itself.
    tail: Sequence[memoryview] = ()


Handler = Callable[[Request], Awaitable[Response]]


def rest_protocol(path: str) -> Front:
    """Which front end a path goes to (its requests' ``protocol`` label); "" for the other routes."""
    prefix = path[:4].lower()
    if prefix == "/v1/":
        return "tfs_rest"
    if prefix == "/v2" or prefix == "/v2/":
        return "v2_rest"
    return ""


def failed(trace: RequestTrace, exc: Exception) -> None:
    """The request failed with ``exc``: its code, and why it was refused when it was (``ServingError.reason``)."""
    if isinstance(exc, ServingError):
        trace.code, trace.reason = exc.code, exc.reason
    elif isinstance(exc, BodyTooLarge):
        trace.code, trace.reason = Code.RESOURCE_EXHAUSTED, "too_large"
    else:
        trace.code = Code.INTERNAL


# The code of an answer whose front end set none (a 404 of the router, a refusal of the listener).
_STATUS_CODES = {
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    405: Code.UNIMPLEMENTED,
    408: Code.DEADLINE_EXCEEDED,
    409: Code.ABORTED,
    413: Code.RESOURCE_EXHAUSTED,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    501: Code.UNIMPLEMENTED,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


def code_of_status(status: int) -> Code:
    if status < 400:
        return Code.OK
    return _STATUS_CODES.get(status, Code.INVALID_ARGUMENT if status < 500 else Code.INTERNAL)


class BodyTooLarge(Exception):
    """A request body is over the server's limit (answered with HTTP 413)."""

    def __init__(self, size: int, limit: int, message: str = "") -> None:
        super().__init__(message or f"Request body of {size} bytes is over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


# Bodies (and answers) above this are decoded (and encoded) off the event loop, so one big request
# cannot stall the others: both REST front ends (api.tfs_rest, api.v2_rest) use it.
OFFLOAD_BYTES = 256 * 1024
# A gzip body is inflated on the event loop up to this many bytes (most bodies: all of them), which
# costs less than a trip to a thread; what is left of a bigger one is inflated off the loop, so that
# a flood of small bombs costs the loop this much each, not what they inflate to.
_INLINE_INFLATED = 64 * 1024
# The ratio limit spares small bodies: JSON of zeros compresses several hundred times, and a body that
# inflates to 1 MiB is harmless whatever its ratio.
_RATIO_FREE_BYTES = 1024 * 1024
_INFLATE_PIECE = 64 * 1024  # output per zlib call: the limits are checked this often


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_bytes: int  # after inflation (--rest_api_max_body_bytes)
    max_gzip_ratio: float = 100.0  # inflated / compressed (--rest_api_max_gzip_ratio); 0: no ratio limit


def request_account(request: Request, budget: MemoryBudget) -> Account:
    """The request's share of the memory budget, held from its body until its answer is encoded: the
    listener's account, its body already charged, or (a listener without the budget) one here."""
    if request.account is not UNMETERED:
        return request.account
    account = budget.account()
    account.charge(len(request.body), "hold its body")
    return account


def request_body(request: Request, limits: BodyLimits, account: Account = UNMETERED) -> bytes | asyncio.Future[bytes]:
    """The body, gunzipped when Content-Encoding says gzip (the listener has already capped its size).

    Bytes at once for a plain body or a small gzip one; a future (a worker thread inflates the rest)
    for a big gzip body, so that a gzip bomb costs its own request the time, not every client of the
    event loop.
    """
    encoding = request.header(b"content-encoding")
    if encoding is None or b"gzip" not in encoding.lower():
        return request.body
    gunzip = Gunzip(request.body, limits, account)
    if gunzip.run(_INLINE_INFLATED):
        return gunzip.body()
    return asyncio.get_running_loop().run_in_executor(_inflaters(), gunzip.finish)


_INFLATERS: concurrent.futures.ThreadPoolExecutor | None = None


def _inflaters() -> concurrent.futures.ThreadPoolExecutor:
    """The thread that inflates big gzip bodies, at the lowest CPU priority (SCHED_IDLE) below the loop
    and the model's threads: inflating is bulk work a client asked for with a few bytes, so on a busy
    core it waits for everyone else's requests rather than they for it. zlib releases the GIL while
    it inflates, so a low-priority thread never holds the others up (no priority inversion)."""
    global _INFLATERS
    if _INFLATERS is None:
        _INFLATERS = concurrent.futures.ThreadPoolExecutor(1, "modelserve-inflate", initializer=_lower_priority)
    return _INFLATERS


def _lower_priority() -> None:
    # Linux schedules each thread on its own: SCHED_IDLE runs it only when nothing else wants the CPU
    # (a waking request preempts it at once, where nice 10 would let it finish its time slice);
    # where that is refused, nice 10; elsewhere, nothing.
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, tid, 10)


class Gunzip:
    """Decompress a gzip body piece by piece, stopping at the first piece over a limit (``BodyTooLarge``);
    like TF Serving, an undecodable one reads as empty. ``run`` may stop part way (on the loop) and
    ``finish`` go on elsewhere (a thread)."""

    def __init__(self, body: bytes, limits: BodyLimits, account: Account = UNMETERED) -> None:
        self._compressed = len(body)
        self._limits = limits
        self._account = account
        self._source = _inflate(body)
        self._pieces: list[bytes] = []
        self._size = 0

    def run(self, until: int | None = None) -> bool:
        """Inflate until done (True) or until at least ``until`` bytes are out (False)."""
        try:
            for piece in self._source:
                self._size += len(piece)
                _inflated(self._size, self._compressed, self._limits)
                self._account.charge(len(piece), "inflate its gzip body")
                self._pieces.append(piece)
                if until is not None and self._size >= until:
                    return False
        except zlib.error:
            self._pieces = []
        return True

    def body(self) -> bytes:
        """What ``run`` inflated, once it returned True."""
        if len(self._pieces) == 1:
            return self._pieces[0]
        self._account.charge(self._size, "join its inflated body")  # the pieces and the whole exist at once
        body = b"".join(self._pieces)
        self._pieces = []
        return body

    def finish(self) -> bytes:
        self.run()
        return self.body()


def _inflate(body: bytes) -> Iterator[bytes]:
    """The first gzip member's bytes, in pieces of at most ``_INFLATE_PIECE``; a truncated body ends early.

    The input goes in slices too: zlib copies the input it has not used (``unconsumed_tail``) on every
    call, which for a whole large body would be quadratic."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    view = memoryview(body)
    for start in range(0, len(view), _INFLATE_PIECE):
        data: bytes | memoryview = view[start : start + _INFLATE_PIECE]
        while data and not inflater.eof:
            yield inflater.decompress(data, _INFLATE_PIECE)
            data = inflater.unconsumed_tail
        if inflater.eof:
            return
    while not inflater.eof and (piece := inflater.decompress(b"", _INFLATE_PIECE)):  # output zlib still holds
        yield piece


def _inflated(size: int, compressed: int, limits: BodyLimits) -> None:
    """The one place the inflated size grows (to ``size`` bytes so far): each limit on it is checked here."""
    if size > limits.max_bytes:
        raise BodyTooLarge(size, limits.max_bytes)
    ratio = limits.max_gzip_ratio
    if ratio > 0 and size > _RATIO_FREE_BYTES and size > ratio * compressed:
        raise BodyTooLarge(
            size,
            limits.max_bytes,
            f"gzip body of {compressed} bytes inflates to more than {ratio:g} times its size "
            f"(--rest_api_max_gzip_ratio); refused at {size} bytes",
        )


def not_found_html(path: str) -> bytes:
    return (
        "<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
        f"<p>The requested URL {_html_escape(path)} was not found on this server.</p></body></html>"
    ).encode()


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Router:
    """Dispatch by case-insensitive path prefix; anything unmatched gets an HTML 404 (as libevent)."""

    def __init__(self, routes: Iterable[tuple[str, Handler]]) -> None:
        self._routes = [(prefix.lower(), handler) for prefix, handler in routes]

    def __call__(self, request: Request) -> Awaitable[Response]:
        lowered = request.path.lower()
        for prefix, handler in self._routes:
            if lowered.startswith(prefix) or lowered == prefix.rstrip("/"):
                return handler(request)
        return self._not_found(request.path)

    @staticmethod
    async def _not_found(path: str) -> Response:
        return Response(404, not_found_html(path), HTML_HEADERS)
