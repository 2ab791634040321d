"""Sending one encoded request again and again, as cheaply as Python allows.

The load loops call ``Sender.call()``, which sends the same bytes and answers None (a success) or the
kind of failure (``http 503``, ``UNAVAILABLE``, ``timeout``, ``connection``). HTTP/1.1 runs on asyncio
with httptools parsing the answer and nothing decoded; gRPC on ``grpc.aio`` with the serialized
message passed through unchanged. ``exchange`` sends the request once, synchronously, and returns the
whole answer for the first-answer check.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import grpc
import httptools

from .wire import Request


def http_bytes(target: str, request: Request, token: str | None) -> bytes:
    """The whole HTTP/1.1 request, headers and body, as sent each time."""
    host = urlsplit(target).netloc
    headers = [("Host", host), *request.headers, ("Content-Length", str(len(request.body)))]
    if token:
        headers.append(("Authorization", f"Bearer {token}"))
    head = f"POST {urlsplit(target).path.rstrip('/')}{request.path} HTTP/1.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + request.body


class Sender:
    async def call(self) -> str | None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _HttpProtocol(asyncio.Protocol):
    """One kept-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(ConnectionError("bad HTTP answer"))

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(ConnectionError("connection closed"))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


class HttpSender(Sender):
    def __init__(self, target: str, raw: bytes, timeout: float) -> None:
        parts = urlsplit(target)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.raw = raw
        self.timeout = timeout
        self.protocol: _HttpProtocol | None = None

    async def _connect(self) -> _HttpProtocol:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_HttpProtocol, self.host, self.port, ssl=self.ssl)
        return protocol

    async def call(self) -> str | None:
        try:
            protocol = self.protocol
            if protocol is None or protocol.lost:
                protocol = self.protocol = await asyncio.wait_for(self._connect(), self.timeout)
            assert protocol.transport is not None
            protocol.waiter = asyncio.get_running_loop().create_future()
            protocol.transport.write(self.raw)
            status = await asyncio.wait_for(protocol.waiter, self.timeout)
        except (asyncio.TimeoutError, TimeoutError):
            self.close()
            return "timeout"
        except OSError:
            self.close()
            return "connection"
        return None if status == 200 else f"http {status}"

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()
        self.protocol = None


class GrpcSender(Sender):
    """Calls on a shared ``grpc.aio`` channel (HTTP/2 carries many at once)."""

    def __init__(self, call: Callable[..., Any], body: bytes, timeout: float, metadata: Any) -> None:
        self.method = call
        self.body = body
        self.timeout = timeout
        self.metadata = metadata

    async def call(self) -> str | None:
        try:
            await self.method(self.body, timeout=self.timeout, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            return "timeout" if code == grpc.StatusCode.DEADLINE_EXCEEDED else code.name
        return None


class GrpcChannels:
    """``count`` channels to ``target``; senders take them in turn."""

    def __init__(self, target: str, path: str, count: int) -> None:
        options = [("grpc.max_receive_message_length", 2**31 - 1), ("grpc.max_send_message_length", 2**31 - 1)]
        # Separate channels must not share one TCP connection: a local subchannel pool each.
        options.append(("grpc.use_local_subchannel_pool", 1))
        self.channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(max(1, count))]
        self.calls = [c.unary_unary(path) for c in self.channels]
        self.next = 0

    def sender(self, body: bytes, timeout: float, token: str | None) -> GrpcSender:
        call = self.calls[self.next % len(self.calls)]
        self.next += 1
        metadata = None if token is None else (("authorization", f"Bearer {token}"),)
        return GrpcSender(call, body, timeout, metadata)

    async def close(self) -> None:
        for channel in self.channels:
            with contextlib.suppress(Exception):
                await channel.close()


def exchange(
    target: str, rest: bool, request: Request, token: str | None, timeout: float
) -> tuple[bytes, dict[str, str]]:
    """Send ``request`` once and return the answer's body and headers; raise ``Refused`` on a failure."""
    if rest:
        return _http_exchange(target, request, token, timeout)
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    options = [("grpc.max_receive_message_length", 2**31 - 1), ("grpc.max_send_message_length", 2**31 - 1)]
    with grpc.insecure_channel(target, options=options) as channel:
        try:
            answer: bytes = channel.unary_unary(request.path)(request.body, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            raise Refused(f"{exc.code().name}: {exc.details()}") from None
    return answer, {}


def _http_exchange(target: str, request: Request, token: str | None, timeout: float) -> tuple[bytes, dict[str, str]]:
    parts = urlsplit(target)
    host = parts.hostname or "localhost"
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, parts.port or 443, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
    headers = dict(request.headers)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", parts.path.rstrip("/") + request.path, body=request.body, headers=headers)
        response = conn.getresponse()
        body = response.read()
    except OSError as exc:
        raise Refused(f"{type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    if response.status != 200:
        raise Refused(f"HTTP {response.status}: {body[:300].decode('utf-8', 'replace')}")
    return body, dict(response.getheaders())


class Refused(Exception):
    """The target failed the first-answer check: the bench does not run against it."""
