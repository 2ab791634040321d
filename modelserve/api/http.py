"""Plain ASGI plumbing shared by the HTTP front ends: body reading, responses, routing by prefix.

No web framework: a request's path to the model is a regex match and a few
awaits, which keeps the server's own cost per request small.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]


class BodyTooLarge(Exception):
    """The request body is over the server's limit (answered with HTTP 413)."""


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, gunzipped when Content-Encoding says gzip."""
    length = header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BodyTooLarge(int(length))
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(size)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = header(scope, b"content-encoding")
    if encoding is not None and b"gzip" in encoding.lower():
        return gunzip(body, limit)
    return body


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body; like TF Serving, an undecodable one reads as empty."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        return b""
    if len(out) > limit:
        raise BodyTooLarge(len(out))
    return out


async def respond(send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]]) -> None:
    # An explicit length spares uvicorn chunked encoding (and clients a chunk parser).
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def not_found_html(path: str) -> bytes:
    return (
        "<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
        f"<p>The requested URL {_html_escape(path)} was not found on this server.</p></body></html>"
    ).encode()


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Router:
    """Dispatch by case-insensitive path prefix; anything unmatched gets an HTML 404 (as libevent)."""

    def __init__(self, routes: Iterable[tuple[str, ASGIApp]]) -> None:
        self._routes = [(prefix.lower(), app) for prefix, app in routes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        lowered = path.lower()
        for prefix, app in self._routes:
            if lowered.startswith(prefix) or lowered == prefix.rstrip("/"):
                await app(scope, receive, send)
                return
        await respond(send, 404, not_found_html(path), [(b"content-type", b"text/html")])
