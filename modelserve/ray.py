"""Ray Serve: every replica runs one modelserve core; Ray's HTTP proxy brings it TF Serving REST and V2 REST.

    serve run modelserve.ray:app model_config_file=/models/models.config num_replicas=2

The application's arguments are modelserve's flags without their dashes, and Ray's deployment
options (``RAY_OPTIONS``). A replica builds itself as ``server.Server`` does (``start_core``: the same
config files, platforms, batching, version pollers and memory budget, no listener) and answers through
the REST port's own front ends (``api.tfs_rest``, ``api.v2_rest`` behind the token guard), so errors,
formats and limits are the server's. Ray's proxy owns what modelserve's listener would: connections,
HTTP parsing, URL and header limits, keep-alive (docs/deploy.md, "Ray Serve").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Coroutine
from typing import Any

from ray import serve
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse

from .api.http import BodyTooLarge, Request, Response, Router, code_of_status, failed, rest_protocol
from .api.tfs_rest import TfsRestApp
from .budget import Account
from .errors import Code, ServingError
from .frontends import api_routes, rest_options
from .observe.trace import RequestTrace
from .options import parse_flags
from .server import Server, configure_logging

log = logging.getLogger("modelserve")

# The application's arguments that configure Ray's deployment; every other one is a modelserve flag.
RAY_OPTIONS = ("num_replicas", "autoscaling_config", "ray_actor_options", "max_ongoing_requests")


class ModelServe:
    """One Ray Serve replica: a modelserve core behind /v1/ and /v2/ (Ray calls it with each HTTP request)."""

    # Ray awaits an async constructor: the replica takes requests once its models serve.
    async def __init__(self, flags: list[str]) -> None:  # type: ignore[misc]
        options = parse_flags(flags)
        configure_logging(options)
        self._server = Server(options)
        try:
            await self._server.start_core()
        except BaseException:
            await self._server.stop()
            raise
        self._rest = TfsRestApp(self._server.core, rest_options(options))
        self._handler = self._server.guarded(Router(api_routes(self._server.core, self._rest)))
        self._max_body = options.rest_api_max_body_bytes

    async def __call__(self, request: StarletteRequest) -> StarletteResponse:
        raw = request.scope.get("raw_path")
        path = raw.decode("latin-1") if raw else request.url.path  # percent-encoded, as the listener hands it
        watch = self._server.watch
        headers = request.headers
        trace = watch.open(
            rest_protocol(path),
            request_id=headers.get("x-request-id", "")[:200],
            peer=request.client.host if request.client else "",
            traceparent=headers.get("traceparent", "")[:200],
        )
        account = self._server.budget.account()
        try:
            answer = await self._answer(request, path, trace, account)
        except BaseException:  # the call was cancelled (the client went away)
            watch.close(trace, Code.CANCELLED, 0, "cancelled")
            raise
        finally:
            account.close()
        code = trace.code if trace.code is not Code.OK or answer.status < 400 else code_of_status(answer.status)
        body = answer.body if not answer.tail else b"".join((answer.body, *answer.tail))
        watch.close(trace, code, len(body), trace.reason)
        response = StarletteResponse(body, answer.status)
        response.raw_headers.extend(answer.headers)
        return response

    async def _answer(self, request: StarletteRequest, path: str, trace: RequestTrace, account: Account) -> Response:
        try:
            body = await self._body(request, account)
        except BodyTooLarge as exc:
            failed(trace, exc)
            return self._rest.too_large(exc.size, exc.limit)
        except ServingError as exc:  # over its own memory cap, or the budget is full
            failed(trace, exc)
            return self._rest.error_answer(exc)
        trace.bytes_in = len(body)
        ours = Request(request.method, path, list(request.headers.raw), body, request.url.query, account, trace)
        return await self._handler(ours)

    async def _body(self, request: StarletteRequest, account: Account) -> bytes:
        """The body, charged to the memory budget as it arrives and refused past --rest_api_max_body_bytes."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            raise BodyTooLarge(int(declared), self._max_body)
        pieces: list[bytes] = []
        size = 0
        async for piece in request.stream():
            size += len(piece)
            if size > self._max_body:
                raise BodyTooLarge(size, self._max_body)
            account.charge(len(piece), "read its body")
            pieces.append(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def __del__(self) -> Coroutine[Any, Any, None] | None:
        """Ray's graceful shutdown, once the replica's requests are done: Ray awaits what this returns,
        which stops the pollers and unloads the models. Only the first call stops (the garbage
        collector calls it again, and does not await)."""
        server = self.__dict__.pop("_server", None)  # absent too when the constructor failed
        return None if server is None else server.stop()


def app(args: dict[str, Any]) -> serve.Application:
    """The application builder: ``serve run modelserve.ray:app key=value ...``, or a ``serve deploy``
    config's ``args``. Flags are checked here, so a bad one fails the deploy, not every replica."""
    settings = {key: _ray_option(key, value) for key, value in args.items() if key in RAY_OPTIONS}
    flags = [f"--{key}={_flag_text(value)}" for key, value in args.items() if key not in RAY_OPTIONS]
    parse_flags(flags)
    log.info("Ray Serve deployment options %s; each replica runs modelserve %s", settings, " ".join(flags))
    return serve.deployment()(ModelServe).options(**settings).bind(flags)


def _ray_option(key: str, value: Any) -> Any:
    """``serve run`` passes every argument as text; a ``serve deploy`` YAML gives numbers and mappings."""
    if not isinstance(value, str):
        return value
    if key in ("autoscaling_config", "ray_actor_options"):
        return json.loads(value)
    return value if value == "auto" else int(value)  # num_replicas may be "auto"


def _flag_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
