"""The HTTP vocabulary shared by the REST listener and its front ends: requests, responses, routing, bodies.

A front end is a ``Handler``: an async function from a whole ``Request`` (its
body already read) to a ``Response``. The listener (``httpd.py``) adds the
framing headers (length, date, connection) and writes it.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

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


Handler = Callable[[Request], Awaitable[Response]]


class BodyTooLarge(Exception):
    """A request body is over the server's limit (answered with HTTP 413)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"Request body of {size} bytes is over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


def request_body(request: Request, limit: int) -> bytes:
    """The body, gunzipped when Content-Encoding says gzip (the listener has already capped its size)."""
    encoding = request.header(b"content-encoding")
    if encoding is not None and b"gzip" in encoding.lower():
        return gunzip(request.body, limit)
    return request.body


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body; like TF Serving, an undecodable one reads as empty."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        return b""
    if len(out) > limit:
        raise BodyTooLarge(len(out), limit)
    return out


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
