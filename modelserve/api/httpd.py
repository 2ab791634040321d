"""The REST listener: an HTTP/1.1 server on asyncio and httptools that calls one handler per request.

Why not an ASGI server: with batching, every microsecond a request spends in
the front end is taken from the model on the same cores (docs/performance.md).
Behind uvicorn the REST front end cost about twice what it costs here, where a
request is parsed by httptools, handed whole to the handler, and answered
with one write.

What it does, checked on the wire by tests/test_http_wire.py:

* keep-alive; a request that is HTTP/1.0 or says ``Connection: close`` is
  answered with ``Connection: close`` and the connection closes after it;
* pipelined requests are answered in order, one at a time per connection
  (reading pauses while too many wait);
* bodies by Content-Length or chunked; a body over ``max_body_bytes`` gets
  413 as soon as that is known, and the rest of it is read and dropped;
* ``Expect: 100-continue`` gets ``100 Continue`` when the request's turn comes
  (never for a body over the limit, whose 413 closes the connection);
* an unparseable request gets 400 and the connection closes;
* HEAD gets the answer's headers without its body;
* a connection with nothing to answer closes ``keep_alive_seconds`` after its
  last answer (bytes that start no request do not keep it open);

Limits, as nginx and Envoy have them (docs/security.md; checked by tests/test_http_limits.py),
each answered after what is owed before it, then the connection closes:

* a URL over ``max_url_bytes`` gets 414; header bytes over ``max_header_bytes``
  or more than ``max_headers`` headers get 431 (neither is buffered past its
  limit);
* a request whose headers are not all in ``header_timeout_seconds`` after its
  first byte, or whose body stalls ``body_timeout_seconds`` between reads,
  gets 408;
* a ``Transfer-Encoding`` other than ``chunked`` gets 501 (with a
  Content-Length too, httptools answers 400: no request smuggling);
* at ``max_connections`` open connections, the oldest one waiting on its
  client (idle, or inside a head, for over ``_EVICTABLE_SECONDS``) is closed
  to admit a new one; when every one is busy, the new one gets 503 and is closed;
* after such an answer the listener stops sending and reads and drops what the
  client still sends for up to ``_LINGER`` seconds (``_LINGER_BYTES`` at most),
  so that the answer is read rather than lost to a reset;
* ``stop``: the listener closes, idle connections close at once, a request in
  flight (or whose body is on its way) is answered with ``Connection: close``,
  and whatever is left when the grace period ends is cut.

A handler that raises costs its request a 500, never the connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import http
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httptools

from ..budget import UNMETERED, Account, MemoryBudget
from ..errors import Code, ServingError, TooLarge
from ..observe.faults import FaultLog, release
from ..observe.requests import Watch
from ..observe.trace import RequestTrace
from .http import Handler, Request, Response, code_of_status, rest_protocol

log = logging.getLogger(__name__)

_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in http.HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TEXT = ((b"content-type", b"text/plain; charset=utf-8"),)
_BAD_REQUEST = Response(400, b"Invalid HTTP request received.", _TEXT)
_URL_TOO_LONG = Response(414, b"Request URL too long.", _TEXT)
_HEADERS_TOO_LARGE = Response(431, b"Request header fields too large.", _TEXT)
_TIMEOUT = Response(408, b"Request timeout: the request did not arrive in time.", _TEXT)
_BAD_ENCODING = Response(501, b"Transfer-Encoding not implemented: only chunked is.", _TEXT)
# Over the connection cap: written at once, with no parsing and no Date header (one write, then close).
_FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 26\r\n"
    b"connection: close\r\n\r\nToo many open connections."
)
_MAX_WAITING = 16  # pipelined requests parsed ahead of their turn before reading pauses
# A V2 binary answer's tensors up to this size are joined with its head (one write); bigger ones are
# written as they are, so the answer is never copied whole once more.
_JOIN_TAIL_BYTES = 64 * 1024
# After an early answer that closes the connection, how long what the client still sends is read and
# dropped: closing a socket with unread bytes resets it, and the client may then never see the answer.
_LINGER = 2.0
# ... and at most this much of it is read: past it, an attacker sending megabytes after each refusal
# (a huge URL, a huge header) would cost the loop a copy of every byte.
_LINGER_BYTES = 1024 * 1024
_FULL_LOG_INTERVAL = 60.0  # the "at the connection cap" warning, at most once per this many seconds
# At the connection cap, a connection waiting this long on its client (inside a request's head, or idle
# between requests) may be closed to admit a new one; a real client's head comes in one packet.
_EVICTABLE_SECONDS = 0.5


def _plain_413(size: int, limit: int) -> Response:
    return Response(413, b"Request body too large", ((b"content-type", b"text/plain"),))


def _plain_refusal(exc: ServingError) -> Response:
    return Response(
        413 if isinstance(exc, TooLarge) else 429, exc.message.encode(), ((b"content-type", b"text/plain"),)
    )


@dataclass(frozen=True)
class HttpOptions:
    max_body_bytes: int = 256 * 1024 * 1024
    # Longer than the idle timeouts of the usual load balancers (60 s), so that they close first.
    keep_alive_seconds: float = 75.0
    # nginx's large_client_header_buffers are 8 KiB a line; TF Serving's URLs are short, and 16 KiB leaves
    # room for long model names and labels. Envoy's header cap is 60 KiB and 100 headers.
    max_url_bytes: int = 16 * 1024
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    # Headers within 30 s of their first byte and a body that never stalls 60 s: nginx's and Envoy's
    # order of magnitude, far above a real client's, far below "forever".
    header_timeout_seconds: float = 30.0  # this and the other two timeouts: 0 or less is none
    body_timeout_seconds: float = 60.0
    max_connections: int = 0  # 0: no cap (server.py derives one from the file descriptor limit)
    # The answer to a body over the limit: (size seen so far, limit) -> response.
    too_large: Callable[[int, int], Response] = _plain_413
    # Bodies are charged to this budget as they arrive, before they are buffered; a body it refuses
    # gets ``refused``'s answer (a request over its own cap, or the server's budget full).
    budget: MemoryBudget = field(default_factory=MemoryBudget.unlimited)
    refused: Callable[[ServingError], Response] = _plain_refusal
    # HTTPS (api.tls.server_context); None: plain HTTP.
    tls: ssl.SSLContext | None = None
    # A TLS handshake not done in this time is cut (a client that connects and says nothing holds no
    # connection for long; the request timeouts start once the handshake is done).
    tls_handshake_seconds: float = 10.0
    # Opens and closes every request's trace (in flight, request ids, the observers: metrics, logs).
    watch: Watch = field(default_factory=Watch)


class _Exchange:
    """A parsed request waiting for, or getting, its answer."""

    __slots__ = ("close", "request", "response", "trace")

    def __init__(self, request: Request | None, response: Response | None, close: bool, trace: RequestTrace) -> None:
        self.request = request
        self.response = response  # known without the handler (a body over the limit, a bad request)
        self.close = close  # the connection closes after this answer
        self.trace = trace  # the request's record, closed with its answer


class HttpServer:
    """Serves ``handler`` on listening sockets. Call ``start`` and ``stop`` on the event loop."""

    def __init__(self, handler: Handler, options: HttpOptions = HttpOptions()) -> None:
        self.handler = handler
        self.options = options
        # Open connections, oldest first (a dict keeps insertion order): the cap's eviction takes the
        # first that waits on its client, in O(1) when a slowloris holds them all.
        self.connections: dict[_Connection, None] = {}
        self.faults = FaultLog(log)
        self.draining = False
        self.date = b""
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.TimerHandle | None = None
        self._full_logged = -_FULL_LOG_INTERVAL  # when the connection cap was last logged

    async def start(self, sock: Any) -> None:
        """Serve on ``sock``, a bound and listening socket (several may be served)."""
        loop = asyncio.get_running_loop()
        if self._sweeper is None:
            self._tick()
        tls: dict[str, Any] = {}
        if self.options.tls is not None:
            tls = {"ssl": self.options.tls, "ssl_handshake_timeout": self.options.tls_handshake_seconds}
        self._servers.append(await loop.create_server(self.protocol, sock=sock, backlog=2048, **tls))

    def protocol(self) -> asyncio.Protocol:
        """A new connection's protocol (for a transport of one's own: benchmarks/rest_turnaround.py)."""
        return _Connection(self)

    def admit(self) -> bool:
        """Room for one more connection? At the cap, the oldest connection that waits on its client
        (in a request's head, or idle between requests, for at least ``_EVICTABLE_SECONDS``) is
        closed to make room: a slowloris holding every slot is pushed out by clients that send
        whole requests. With no such connection, the new one is refused (and the log says so now
        and then)."""
        cap = self.options.max_connections
        if cap <= 0 or len(self.connections) < cap:
            return True
        now = time.monotonic()
        evictable = now - _EVICTABLE_SECONDS
        victim = next((c for c in self.connections if c.waiting_since(now) <= evictable), None)
        if victim is not None:
            del self.connections[victim]
            victim.abort()
            return True
        if now - self._full_logged >= _FULL_LOG_INTERVAL:
            self._full_logged = now
            log.warning(
                "REST connections at the cap of %d (--rest_api_max_connections), every one busy: new ones get 503",
                cap,
            )
        return False

    def _tick(self) -> None:
        """About once a second: the Date header's text, and the connections whose time is up closed.

        One timer for all connections: a request costs two timestamps, not a timer armed and cancelled."""
        self.date = b"date: " + email.utils.formatdate(time.time(), usegmt=True).encode() + b"\r\n"
        now = time.monotonic()
        for connection in list(self.connections):
            connection.expire(now)
        o = self.options
        timeouts = (o.keep_alive_seconds, o.header_timeout_seconds, o.body_timeout_seconds)
        interval = min([1.0, *(t / 2 for t in timeouts if t > 0)])
        self._sweeper = asyncio.get_running_loop().call_later(interval, self._tick)

    async def stop(self, grace: float) -> None:
        """Stop accepting, let requests in flight finish for up to ``grace`` seconds, then close everything."""
        self.draining = True
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.drain()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.abort()
        for server in self._servers:
            await server.wait_closed()
        if self._sweeper is not None:
            self._sweeper.cancel()


class _Refused(Exception):
    """Raised from a parser callback to stop parsing: the request gets ``response`` and nothing after it is read."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class _Connection(asyncio.Protocol):
    """One client connection. Every method runs on the event loop."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        options = server.options
        self._limit = options.max_body_bytes
        self._max_url = options.max_url_bytes
        self._max_header_bytes = options.max_header_bytes
        self._max_headers = options.max_headers
        self._transport: asyncio.Transport | None = None
        self._watch = options.watch
        self._peer = ""  # the client's address, "host:port"
        self._parser = httptools.HttpRequestParser(self)
        self._waiting: collections.deque[_Exchange] = collections.deque()
        self._active: _Exchange | None = None  # the exchange whose answer is being made
        self._task: asyncio.Future[Response] | None = None  # its handler, while it runs
        self._read_at = time.monotonic()  # the last bytes in
        self._answered_at = self._read_at  # the last answer out (or the connection's start)
        self._lingering_since: float | None = None  # the closing answer is out; what comes is dropped
        self._dropped = 0  # bytes dropped after the request that closes the connection
        self._closing = False  # no request after the one being read or answered
        self._paused = False
        self._write_paused = False
        # The request being read: url, headers, body pieces and size; an exchange once answered early.
        self._reading = False
        self._head_at = 0.0  # when its first byte came
        self._head_bytes = 0  # bytes of its head in reads that began inside it (the guard on partial headers)
        self._head_fresh = False  # it began in the read being parsed
        self._url: list[bytes] = []
        self._url_size = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_size = 0
        self._body: list[bytes] = []
        self._size = 0
        self._expect = False
        self._rejected = False
        self._has_headers = False
        self._account: Account = UNMETERED  # the body's charges, handed to the request once it is whole

    # ---- transport events -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if not self._server.admit():
            # One write and a close: nothing of the connection is kept, so a flood costs no memory.
            self._closing = True
            self._transport.write(_FULL)  # type: ignore[union-attr]
            transport.close()
            return
        self._server.connections[self] = None
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._peer = f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
        if self._server.draining:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.pop(self, None)
        if self._active is not None:
            self._waiting.appendleft(self._active)
        self._account.close()
        self._drop_waiting()
        if self._task is not None:  # the client went away: the work for its answer ends here
            self._task.cancel()
        # The connection and its parser refer to each other, so only the garbage collector frees
        # them: let go of the request they hold now.
        self._active = None
        self._body = []

    def data_received(self, data: bytes) -> None:
        self._read_at = time.monotonic()
        if self._closing and not self._reading:
            # Bytes after a request that closes the connection are dropped: read (so that the closing
            # answer is not lost to a reset) up to _LINGER_BYTES, then left to the kernel until the close.
            self._dropped += len(data)
            if self._dropped > _LINGER_BYTES:
                self._pause()
            return
        in_head = self._reading and not self._has_headers  # a head was being read before this read
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol switch (RFC 9110 §7.8 lets a server ignore Upgrade): the request is answered
            # as a plain one, but httptools parses nothing after it, so the connection then closes.
            self._closing = True
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            self._refuse(refused.response if isinstance(refused, _Refused) else _BAD_REQUEST)
        except httptools.HttpParserError:
            self._refuse(_BAD_REQUEST)
        else:
            if in_head and self._reading and not self._has_headers and not self._head_fresh:
                # A whole read inside one head: httptools buffers a header's pieces until the header
                # ends, so a header too large to be counted in on_header is counted here (give or take
                # the read in which the head began).
                self._head_bytes += len(data)
                if self._head_bytes > self._max_url + self._max_header_bytes:
                    self._refuse(_HEADERS_TOO_LARGE)
            self._head_fresh = False

    def eof_received(self) -> bool:
        # The client sends no more: a request cut short is dropped, answers owed are still written,
        # then the connection closes (True keeps it open until then).
        self._closing = True
        self._reading = False
        return not self._idle()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._resume()

    # ---- parser callbacks (httptools) ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reading = True
        self._head_at = self._read_at
        self._head_bytes = 0
        self._head_fresh = True
        self._url = []
        self._url_size = 0
        self._headers = []
        self._header_size = 0
        self._body = []
        self._size = 0
        self._expect = False
        self._rejected = False
        self._has_headers = False
        self._account.close()  # a request cut short before its end lets go of its charges
        self._account = UNMETERED

    def on_url(self, url: bytes) -> None:
        # httptools hands a long URL over in pieces, one per read: kept as a list, never re-concatenated.
        self._url_size += len(url)
        if self._url_size > self._max_url:
            raise _Refused(_URL_TOO_LONG)
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_size += len(name) + len(value)
        if self._header_size > self._max_header_bytes or len(self._headers) >= self._max_headers:
            raise _Refused(_HEADERS_TOO_LARGE)
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace (RFC 9110 §5.5 excludes it)
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._has_headers = True
        parser = self._parser
        if parser.get_http_version() != "1.1" or not parser.should_keep_alive():
            self._closing = True
        coding = next((v for k, v in self._headers if k == b"transfer-encoding"), None)
        if coding is not None and coding.lower() != b"chunked":
            # llhttp reads "gzip, chunked" as chunked and would hand the handler a body still gzipped.
            raise _Refused(_BAD_ENCODING)
        length = next((v for k, v in self._headers if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self._limit:
            # The client may hold the body back for a "100 Continue" that never comes: close after the 413.
            self._reject(int(length), close=self._expect)
        elif self._expect:
            self._next()  # "100 Continue" at once when nothing is ahead of it

    def on_body(self, body: bytes) -> None:
        if self._rejected:
            return
        self._size += len(body)
        if self._size > self._limit:
            self._body = []
            self._reject(self._size, close=False)
            return
        if self._account is UNMETERED:
            self._account = self._server.options.budget.account()
        try:
            self._account.charge(len(body), "read its body")
        except ServingError as exc:  # over its own cap, or the server's budget is full
            self._body = []
            self._reject(self._size, close=False, error=exc)
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._reading = False
        if self._rejected:
            return
        url = self._url[0] if len(self._url) == 1 else b"".join(self._url)
        parsed = httptools.parse_url(url)
        account, self._account = self._account, UNMETERED
        if len(self._body) > 1:
            try:
                account.charge(self._size, "join its body")  # the pieces and the whole exist at once
            except ServingError as exc:
                self._body = []
                account.close()
                self._reject(self._size, close=False, error=exc)
                return
        path = parsed.path.decode("latin-1")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        trace = self._open(path, len(body))
        method = self._parser.get_method().decode("ascii", "replace")
        request = Request(method, path, self._headers, body, (parsed.query or b"").decode("latin-1"), account, trace)
        self._body = []
        self._queue(_Exchange(request, None, self._closing, trace))

    def _open(self, path: str, bytes_in: int) -> RequestTrace:
        """The trace of the request being read: its id (``x-request-id``, else a new one), W3C
        ``traceparent``, peer, and the time its head began."""
        request_id = traceparent = ""
        for name, value in self._headers:
            if name == b"x-request-id":
                request_id = value[:200].decode("latin-1")
            elif name == b"traceparent":
                traceparent = value[:200].decode("latin-1")
        return self._watch.open(
            rest_protocol(path),
            request_id=request_id,
            peer=self._peer,
            traceparent=traceparent,
            bytes_in=bytes_in,
            start=self._head_at,
        )

    def _early_trace(self, error: ServingError | None = None) -> RequestTrace:
        """The trace of a request answered without its handler (refused while it was read)."""
        url = b"".join(self._url)
        try:
            path = httptools.parse_url(url).path.decode("latin-1") if url else ""
        except httptools.HttpParserInvalidURLError:
            path = ""
        trace = self._open(path, self._size)
        if error is not None:
            trace.code, trace.reason = error.code, error.reason
        return trace

    # ---- answering ----------------------------------------------------------------------------

    def _reject(self, size: int, close: bool, error: ServingError | None = None) -> None:
        """The request being read is answered without its handler: ``error`` (the memory budget's
        refusal) or, by default, its body is over the limit; the rest of its body is read and dropped."""
        self._rejected = True
        self._closing = self._closing or close
        self._account.close()
        self._account = UNMETERED
        if error is None:
            response = self._server.options.too_large(size, self._limit)
            trace = self._early_trace(TooLarge(""))
        else:
            response = self._server.options.refused(error)
            trace = self._early_trace(error)
        self._queue(_Exchange(None, response, self._closing, trace))

    def _queue(self, exchange: _Exchange) -> None:
        self._waiting.append(exchange)
        if len(self._waiting) > _MAX_WAITING:
            self._pause()
        self._next()

    def _next(self) -> None:
        """Start the next waiting exchange when nothing is being answered."""
        if self._active is not None or self._transport is None or self._transport.is_closing():
            return
        if not self._waiting:
            if self._reading and self._expect and not self._rejected:
                self._expect = False  # sent once, when the request being read is next in line
                self._read_at = time.monotonic()  # the body's time starts now, not when its head came
                self._transport.write(_CONTINUE)
            return
        exchange = self._waiting.popleft()
        self._active = exchange
        if len(self._waiting) <= _MAX_WAITING // 2:
            self._resume()
        if exchange.response is not None:
            self._answer(exchange, exchange.response)
            return
        assert exchange.request is not None
        self._task = asyncio.ensure_future(self._server.handler(exchange.request))
        self._task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Future[Response]) -> None:
        self._task = None
        exchange = self._active
        if exchange is None or task.cancelled():  # the connection was cut while the handler ran
            return
        try:
            response = task.result()
        except Exception as exc:  # the handler's bug must cost one request, not the connection
            request = exchange.request
            path = request and request.path[:200]
            self._server.faults.fault("HTTP", exc, "Unhandled error answering %s %s", request and request.method, path)
            release(exc)
            response = Response(500, b"Internal Server Error", ((b"content-type", b"text/plain"),))
        self._answer(exchange, response)

    def _answer(self, exchange: _Exchange, response: Response) -> None:
        transport = self._transport
        self._active = None
        if exchange.request is not None:
            exchange.request.account.close()  # the answer is made: what its request held is let go
        status, body, headers, tail = response
        length = len(body) + sum(piece.nbytes for piece in tail)
        trace = exchange.trace
        # A front end that failed the request set its code (and refusal reason); else the status says.
        code = trace.code if trace.code is not Code.OK or status < 400 else code_of_status(status)
        self._watch.close(trace, code, length, trace.reason)
        if transport is None or transport.is_closing():
            return
        # The last answer when the connection was asked to close and nothing else is owed.
        close = exchange.close or self._server.draining or (self._closing and self._idle())
        parts = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} \r\n".encode()]
        for name, value in headers:
            parts += [name, b": ", value, b"\r\n"]
        parts += [b"x-request-id: ", trace.request_id.encode("latin-1", "replace"), b"\r\n"]
        parts += [b"content-length: ", str(length).encode(), b"\r\n", self._server.date]
        if close:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        head = exchange.request is not None and exchange.request.method == "HEAD"
        if not head:
            parts.append(body)
        if head or length - len(body) < _JOIN_TAIL_BYTES:
            transport.write(b"".join([*parts, *(() if head else tail)]))
        else:  # big pieces go out as they are: the transport sends what it can without copying
            transport.write(b"".join(parts))
            for piece in tail:
                transport.write(piece)
        self._answered_at = time.monotonic()
        if not close:
            self._next()
            return
        self._drop_waiting()
        if exchange.request is None and transport.can_write_eof():
            # An early answer: the client may still be sending. Half-close, drop what comes, close on its
            # end (eof_received) or when the sweeper finds the linger over.
            transport.write_eof()
            self._lingering_since = self._answered_at
        else:
            transport.close()

    def _drop_waiting(self) -> None:
        """Requests that will not be answered (the connection closes): let go of them, count them cancelled."""
        for exchange in self._waiting:
            if exchange.request is not None:
                exchange.request.account.close()
            self._watch.close(exchange.trace, Code.CANCELLED, 0, "cancelled")
        self._waiting.clear()

    def _refuse(self, response: Response) -> None:
        """Answered after what is owed before it; nothing after it is read."""
        self._reading = False
        self._closing = True
        self._queue(_Exchange(None, response, True, self._early_trace()))

    # ---- flow and lifecycle -------------------------------------------------------------------

    def _pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and not self._write_paused and len(self._waiting) <= _MAX_WAITING // 2 and self._transport:
            self._paused = False
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                self._transport.resume_reading()

    def _answering(self) -> bool:
        """An answer is in the making or waits its turn."""
        return self._active is not None or bool(self._waiting)

    def _idle(self) -> bool:
        """Nothing owed: no answer in the making, none waiting, no request half read."""
        return not self._answering() and not self._reading

    def expire(self, now: float) -> None:
        """The sweeper's visit: close when the client is too slow or gone quiet for too long."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        o = self._server.options
        if self._lingering_since is not None:
            if now - self._lingering_since > _LINGER:
                transport.close()
        elif self._reading and not self._paused:  # paused: the wait is the listener's, not the client's
            if self._has_headers:
                if not self._expect and 0 < o.body_timeout_seconds < now - self._read_at:
                    self._refuse(_TIMEOUT)
            elif 0 < o.header_timeout_seconds < now - self._head_at:
                self._refuse(_TIMEOUT)
        elif not self._answering() and 0 < o.keep_alive_seconds < now - self._answered_at:
            transport.close()

    def waiting_since(self, now: float) -> float:
        """Since when this connection has waited on its client: in a request's head, idle between
        requests, or lingering after a refusal; ``now`` when it is busy with a request (never evicted)."""
        if self._lingering_since is not None:
            return 0.0  # being closed anyway: first to go
        if self._reading:
            return self._head_at if not self._has_headers else now
        return now if self._answering() else self._answered_at

    def drain(self) -> None:
        """The server stops: close now if nothing is owed, else after the answer being made."""
        self._closing = True
        if self._transport is None:
            return
        # A request whose headers are in is owed an answer; one cut inside its headers is not.
        if not self._answering() and not (self._reading and self._has_headers):
            self._transport.close()

    def abort(self) -> None:
        """Cut the connection and its handler (the grace period is over)."""
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.abort()
