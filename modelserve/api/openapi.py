"""``/openapi.json`` (the REST port described: ``api.openapi_spec``) and ``/docs`` (Swagger UI rendering it).

Both are always on and open (no token: ``api.auth.REST_OPEN_PATHS``); ``/docs`` and its files come
from the package (``static/openapi``, vendored from npm's ``swagger-ui-dist``), so it works offline.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson

from .http import HTML_HEADERS, JSON_HEADERS, Headers, Request, Response, not_found_html
from .openapi_spec import build

SPEC_PATH = "/openapi.json"
DOCS_PATH = "/docs"
# The files /docs serves (its page at /docs itself), with their types; nothing else is looked up.
_FILES: dict[str, tuple[str, bytes]] = {
    "": ("index.html", b"text/html; charset=utf-8"),
    "/init.js": ("init.js", b"text/javascript; charset=utf-8"),
    "/swagger-ui-bundle.js": ("swagger-ui-bundle.js", b"text/javascript; charset=utf-8"),
    "/swagger-ui.css": ("swagger-ui.css", b"text/css; charset=utf-8"),
}


class OpenApiApp:
    """The HTTP handler (``api.http.Handler``) of ``/openapi.json`` and ``/docs``; ``tls``: the REST port's
    scheme is https (the description's ``servers`` names the host a request came to, on that scheme)."""

    def __init__(self, tls: bool = False) -> None:
        self._scheme = "https" if tls else "http"
        self._spec = build()
        self._files: dict[str, bytes] = {}  # read on first use: the bundle is 1.8 MB, /docs is rarely visited

    async def __call__(self, request: Request) -> Response:
        path = request.path.lower()
        if path != SPEC_PATH and not (path == DOCS_PATH or path.startswith(DOCS_PATH + "/")):
            return Response(404, not_found_html(request.path), HTML_HEADERS)  # e.g. /openapi.jsonx
        if request.method not in ("GET", "HEAD"):
            return Response(405, b'{"error":"Method Not Allowed"}', (*JSON_HEADERS, (b"allow", b"GET, HEAD")))
        if path == SPEC_PATH:
            return Response(200, orjson.dumps(self._described(request.header(b"host"))), JSON_HEADERS)
        found = _FILES.get(path[len(DOCS_PATH) :].rstrip("/"))
        if found is None:
            return Response(404, not_found_html(request.path), HTML_HEADERS)
        name, media = found
        headers: Headers = ((b"content-type", media),)
        return Response(200, self._read(name), headers)

    def _described(self, host: bytes | None) -> dict[str, Any]:
        """The description with ``servers``: the host the request named (none without a Host header)."""
        if not host:
            return self._spec
        return {**self._spec, "servers": [{"url": f"{self._scheme}://{host.decode('latin-1')}"}]}

    def _read(self, name: str) -> bytes:
        """A file of ``static/openapi``, from the package (a wheel or a checkout alike)."""
        data = self._files.get(name)
        if data is None:
            data = self._files[name] = (resources.files(__package__) / "static" / "openapi" / name).read_bytes()
        return data
