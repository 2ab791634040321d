"""Bearer tokens on both ports (``--auth_token_file``) and the model-management switch.

The token file holds one token per line with its scope; ``#`` starts a
comment; blank lines are ignored::

    # who                      token                              scope
    3f9c0c1e2b7d4a58b1f0e6a9d2c4b7e8 infer     # a client: predict, metadata, status
    9a1d7e3b5c2f4e6a8b0d1c3e5f7a9b2d admin     # an operator: also reloads the config

``admin`` implies ``infer``. A token is 16 to 4096 characters of RFC 6750's
token alphabet (letters, digits, ``-._~+/``, trailing ``=``), e.g. from
``openssl rand -hex 32``. Clients send ``Authorization: Bearer <token>``
(REST) or the ``authorization: Bearer <token>`` metadata (gRPC).

No or an unknown token: HTTP 401 with ``WWW-Authenticate: Bearer`` /
UNAUTHENTICATED. A known token without the scope a call needs: 403 /
PERMISSION_DENIED. Model management (gRPC ``HandleReloadConfigRequest`` and
``inference.GRPCInferenceService``'s ``Repository*`` methods, REST under
``/v2/repository/``) needs ``admin``; with
``--enable_management_api=false`` it is refused for every caller with
UNIMPLEMENTED / 501: the server does not offer it, and no other token would
change that (PERMISSION_DENIED would suggest one could). The gRPC health
service stays open, for probes, as do the REST paths of ``REST_OPEN_PATHS``
(probes, the API's description); server reflection needs ``infer``, like the
services it describes.

Tokens are compared as SHA-256 digests, each presented token against every
known one with ``hmac.compare_digest`` and without stopping at a match, so the
time taken does not depend on how much of a token an attacker has guessed. The
file is checked for a change (its mtime, size and inode) at most once a second
when a call comes; a file that no longer parses keeps the tokens in force and
logs an error once. Nothing here logs a token.

Without ``--auth_token_file`` and with management on, none of this is installed
(``build``): the ports behave exactly as before.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from ..codecs import tfs_json
from ..errors import InvalidArgument, PermissionDenied, ServingError, Unauthenticated, Unimplemented
from ..protos import INFERENCE_SERVICE, MODEL_SERVICE
from .http import JSON_HEADERS, Handler, Request, Response, failed

log = logging.getLogger(__name__)


class Scope(enum.IntEnum):
    """What a token may do; a higher scope includes the lower ones."""

    INFER = 1
    ADMIN = 2


_MISSING = "Missing bearer token: send 'authorization: Bearer <token>'"
_INVALID = "Invalid bearer token"
_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]{16,4096}=*")
_REFRESH_SECONDS = 1.0

# gRPC methods by full name: management needs admin, the health service is open, the rest needs infer.
GRPC_ADMIN_METHODS = frozenset(
    {
        f"/{MODEL_SERVICE}/HandleReloadConfigRequest",
        # KServe V2's model repository extension (api.v2_grpc), as its REST paths below.
        f"/{INFERENCE_SERVICE}/RepositoryIndex",
        f"/{INFERENCE_SERVICE}/RepositoryModelLoad",
        f"/{INFERENCE_SERVICE}/RepositoryModelUnload",
    }
)
GRPC_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
# REST paths (lower case): KServe V2's model repository extension is management, and so is the
# dashboard's reload button.
REST_ADMIN_PREFIXES = ("/v2/repository/", "/dashboard/api/reload")
# REST paths (lower case, exact) open to anyone, tokens or not: probes and scrapers, the API's description, and the
# dashboard's page and files, which run no model and tell no more than the package does (the
# dashboard's JSON state needs a token). Each owner adds its own.
REST_OPEN_PATHS = (
    "/metrics",  # scrapers send no token either; the server adds the configured TF Serving metrics path
    "/monitoring/prometheus/metrics",
    "/healthz",  # probes: a kubelet sends no token, as the gRPC health service
    "/readyz",
    "/v2/health/live",
    "/v2/health/ready",
    "/openapi.json",  # the API's description and its page (api.openapi)
    "/docs",
    "/docs/",
    # the dashboard's page and files (api.dashboard.OPEN_PATHS)
    "/dashboard",
    "/dashboard/",
    "/dashboard/dashboard.js",
    "/dashboard/promtext.js",
    "/dashboard/dashboard.css",
    "/dashboard/uplot/uplot.iife.min.js",
    "/dashboard/uplot/uplot.min.css",
)
REST_OPEN_PREFIXES = ("/docs/",)  # the API page's files (api.openapi)


def _nobody(method: str, exc: ServingError) -> None:
    pass


def parse_tokens(text: str, path: str) -> list[tuple[bytes, Scope]]:
    """The (SHA-256 digest, scope) of every token in a token file's text; INVALID_ARGUMENT naming the line."""
    found: dict[bytes, Scope] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"--auth_token_file {path} line {number}"
        if len(words) != 2:
            raise InvalidArgument(f"{where}: expected '<token> <scope>', got {len(words)} words")
        token, scope_name = words
        scope = Scope.__members__.get(scope_name.upper())
        if scope is None:
            raise InvalidArgument(f"{where}: unknown scope {scope_name!r} (infer or admin)")
        if not _TOKEN.fullmatch(token):
            raise InvalidArgument(f"{where}: a token is 16 to 4096 characters of A-Z a-z 0-9 - . _ ~ + / (and =)")
        digest = hashlib.sha256(token.encode()).digest()
        if digest in found:
            raise InvalidArgument(f"{where}: the token is listed twice")
        found[digest] = scope
    return list(found.items())


class TokenFile:
    """``--auth_token_file``, re-read when it changes. Thread-safe (REST's loop and gRPC's threads)."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        """Reads the file: INVALID_ARGUMENT at start-up when it is missing or malformed."""
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._stamp = self._stat()
            self._tokens = parse_tokens(self._read(), path)
        except OSError as exc:
            raise InvalidArgument(f"--auth_token_file {path}: {exc.strerror or exc}") from None
        self._checked = clock()
        if not self._tokens:
            log.warning("--auth_token_file %s lists no token: every call but health checks is refused", path)

    def _stat(self) -> tuple[int, int, int]:
        info = os.stat(self.path)
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def _read(self) -> str:
        with open(self.path, encoding="utf-8") as stream:
            return stream.read()

    def scope(self, token: str) -> Scope | None:
        """The scope of ``token``, None when it is not a known token; in time independent of its contents."""
        self._refresh()
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        found = None
        for known, scope in self._tokens:  # no early exit: every token is compared
            if hmac.compare_digest(known, digest):
                found = scope
        return found

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked < _REFRESH_SECONDS or not self._lock.acquire(blocking=False):
            return  # checked lately, or another caller is checking now: the tokens in force answer
        try:
            self._checked = now
            try:
                stamp = self._stat()
                if stamp == self._stamp:
                    return
                self._stamp = stamp
                tokens = parse_tokens(self._read(), self.path)
            except (OSError, UnicodeDecodeError, InvalidArgument) as exc:
                # Logged once per change of the file; the tokens in force stay.
                log.error("--auth_token_file %s not re-read, the previous tokens stay in force: %s", self.path, exc)
                return
            self._tokens = tokens
            log.info("--auth_token_file %s re-read: %d token(s)", self.path, len(tokens))
        finally:
            self._lock.release()


@dataclass(frozen=True)
class Guard:
    """Who may call what: the token file (None: no tokens) and whether management is served."""

    tokens: TokenFile | None
    management: bool = True
    # Told of every gRPC call refused (its full method name and why), so that refusals are counted.
    refused: Callable[[str, ServingError], None] = _nobody

    def check(self, authorization: str | None, needs: Scope | None, management: bool = False) -> None:
        """Raise Unimplemented, Unauthenticated or PermissionDenied unless the call may run.

        ``needs`` None: open to anyone; ``management``: a management call (refused when switched off).
        """
        if management and not self.management:
            raise Unimplemented("Model management is switched off on this server (--enable_management_api=false)")
        if needs is None or self.tokens is None:
            return
        token = bearer_token(authorization)
        if token is None:
            raise Unauthenticated(_MISSING)
        scope = self.tokens.scope(token)
        if scope is None:
            raise Unauthenticated(_INVALID)
        if scope < needs:
            raise PermissionDenied(f"This call needs a token with the {needs.name.lower()} scope")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (the scheme is case-insensitive)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def build(token_file: str, management: bool) -> Guard | None:
    """The guard the flags ask for; None when they ask for none (no tokens, management on)."""
    if not token_file and management:
        return None
    return Guard(TokenFile(token_file) if token_file else None, management)


# --- REST -----------------------------------------------------------------------------------------


class RestGuard:
    """An ``api.http.Handler`` in front of the router: a request passes only if the guard lets it."""

    def __init__(self, handler: Handler, guard: Guard, open_paths: tuple[str, ...] = REST_OPEN_PATHS) -> None:
        self._handler = handler
        self._guard = guard
        self._open = frozenset(open_paths)

    def __call__(self, request: Request) -> Awaitable[Response]:
        # A CORS preflight carries no credentials by design (Fetch standard) and runs nothing.
        path = request.path.lower()
        if request.method != "OPTIONS" and not is_open_path(path, self._open):
            management = path.startswith(REST_ADMIN_PREFIXES)
            authorization = request.header(b"authorization")
            try:
                self._guard.check(
                    None if authorization is None else authorization.decode("latin-1"),
                    Scope.ADMIN if management else Scope.INFER,
                    management,
                )
            except ServingError as exc:
                failed(request.trace, exc)  # counted as refused (reason "auth")
                return _refused(exc)
        return self._handler(request)


def is_open_path(path: str, open_paths: Collection[str] = REST_OPEN_PATHS) -> bool:
    """``path`` (lower case) needs no token: one of ``open_paths``, or a file of the API's page."""
    return path in open_paths or path.startswith(REST_OPEN_PREFIXES)


async def _refused(exc: ServingError) -> Response:
    headers = list(JSON_HEADERS)
    if isinstance(exc, Unauthenticated):  # RFC 6750 section 3
        error = b', error="invalid_token"' if exc.message == _INVALID else b""
        headers.append((b"www-authenticate", b'Bearer realm="modelserve"' + error))
    elif isinstance(exc, PermissionDenied):
        headers.append((b"www-authenticate", b'Bearer realm="modelserve", error="insufficient_scope"'))
    status = {Unauthenticated: 401, PermissionDenied: 403}.get(type(exc), 501)
    return Response(status, tfs_json.encode_error(exc.message), headers)


# --- gRPC -----------------------------------------------------------------------------------------

_CODES = {
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
}


def _grpc_refusal(guard: Guard, details: grpc.HandlerCallDetails) -> tuple[grpc.StatusCode, str] | None:
    method: str = details.method
    if method.startswith(GRPC_OPEN_PREFIXES):
        return None
    management = method in GRPC_ADMIN_METHODS
    try:
        guard.check(_metadata_value(details.invocation_metadata, "authorization"), _grpc_scope(management), management)
    except ServingError as exc:
        guard.refused(method, exc)
        return _CODES.get(type(exc), grpc.StatusCode.UNKNOWN), exc.message
    return None


def _grpc_scope(management: bool) -> Scope:
    return Scope.ADMIN if management else Scope.INFER


def _metadata_value(metadata: Iterable[Any] | None, key: str) -> str | None:
    for item in metadata or ():
        if item[0] == key:
            value = item[1]
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


# A refused call is answered by a handler that reads nothing: a client-streaming one, so that the
# server does not wait for (and buffer) a request message of up to the 2 GiB limit first.


def _refusing(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    def refuse(requests: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    return grpc.stream_stream_rpc_method_handler(refuse)


def _refusing_async(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def refuse(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    return grpc.stream_stream_rpc_method_handler(refuse)


class GrpcGuard(grpc.ServerInterceptor):  # type: ignore[misc]  # grpcio types it as Any
    """The guard on grpcio's threaded server."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        refusal = _grpc_refusal(self._guard, handler_call_details)
        if refusal is None:
            return continuation(handler_call_details)
        return _refusing(*refusal)


class AsyncGrpcGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The guard on ``grpc.aio`` (with batching)."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        refusal = _grpc_refusal(self._guard, handler_call_details)
        if refusal is None:
            return await continuation(handler_call_details)
        return _refusing_async(*refusal)
