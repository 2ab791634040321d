"""The live dashboard at ``/dashboard`` on the REST port: one page, its files, and the JSON state it polls.

The page (``static/dashboard/``, package data, no internet needed) polls two
things every two seconds: ``/dashboard/api/state`` here — models, versions,
states and errors, instances, the effective configuration — and the Prometheus
text at ``/metrics``, from which it computes rates, latency percentiles, batch
sizes and queue depths in the browser. This module only serves files and reads
the core; it keeps no history and costs nothing until someone looks.

Auth (``api.auth``): the page and its files are open (``REST_OPEN_PATHS``), the
state needs an ``infer`` token, ``POST /dashboard/api/reload`` needs ``admin``
(``REST_ADMIN_PREFIXES``); load and unload are the V2 repository endpoints the
page calls with the user's token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.resources
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .. import __version__, storage
from ..codecs import tfs_json
from ..errors import FailedPrecondition, NotFound, ServingError
from ..execution.batching.params import BatchingParameters
from ..lifecycle.config import ModelConfig
from ..serving.contract import Core
from .auth import Guard, Scope, bearer_token
from .http import JSON_HEADERS, Headers, Request, Response
from .tfs_rest import http_status

PREFIX = "/dashboard"
# The page's files: URL below /dashboard/ (lower case: paths match case-insensitively, as the router
# and api.auth match them) -> (file under static/dashboard/, content type). The page itself answers at
# /dashboard and /dashboard/; api.auth.REST_OPEN_PATHS lists the same paths as open.
ASSETS: dict[str, tuple[str, str]] = {
    "": ("index.html", "text/html; charset=utf-8"),
    "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "promtext.js": ("promtext.js", "text/javascript; charset=utf-8"),
    "dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "uplot/uplot.iife.min.js": ("uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "uplot/uplot.min.css": ("uplot/uPlot.min.css", "text/css; charset=utf-8"),
}
OPEN_PATHS = frozenset({PREFIX, *(f"{PREFIX}/{name}" for name in ASSETS)})
RELOAD_PATH = f"{PREFIX}/api/reload"
_STATE = "api/state"
_RELOAD = "api/reload"
# The page runs only its own files and talks only to this origin; no other site may frame it (its
# buttons act with the user's admin token).
_PAGE_HEADERS: Headers = (
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-cache"),
)
_NO_STORE: Headers = (*JSON_HEADERS, (b"cache-control", b"no-store"))

Scalar = bool | int | float | str


@dataclass(frozen=True)
class FlagSetting:
    """One flag as the server runs with it."""

    name: str
    value: Scalar
    default: Scalar
    group: str
    explicit: bool  # set on the command line


@dataclass(frozen=True)
class DashboardSetup:
    """What the page shows of the configuration, fixed at start-up (``server.py`` fills it in)."""

    flags: tuple[FlagSetting, ...] = ()
    model_config_file: str = ""
    batching: BatchingParameters | None = None  # None: --enable_batching is off
    per_model_batching: bool = False
    metrics_path: str = "/metrics"  # "": no metrics page on this port (the page shows "metrics off")
    guard: Guard | None = None  # tells the page which scope its token has
    reload: Callable[[], Awaitable[None]] | None = None  # re-read --model_config_file and apply it
    started: float = dataclasses.field(default_factory=time.time)


class DashboardApp:
    """The ``api.http.Handler`` of everything under ``/dashboard``."""

    def __init__(self, core: Core, setup: DashboardSetup) -> None:
        self._core = core
        self._setup = setup
        self._files: dict[str, bytes] = {}  # read on first use: the constructor does no I/O

    async def __call__(self, request: Request) -> Response:
        sub = request.path[len(PREFIX) :].lstrip("/").lower()
        try:
            if sub == _STATE:
                _allow(request, "GET")
                return Response(200, orjson.dumps(await self.state(request)), _NO_STORE)
            if sub == _RELOAD:
                _allow(request, "POST")
                return await self._reload()
            asset = ASSETS.get(sub)
            if asset is None:
                raise NotFound(f"No dashboard file {request.path[:200]}")
            _allow(request, "GET")
            return Response(200, self._file(asset[0]), ((b"content-type", asset[1].encode()), *_PAGE_HEADERS))
        except _MethodNotAllowed as exc:
            return Response(405, tfs_json.encode_error(str(exc)), (*JSON_HEADERS, (b"allow", exc.allow.encode())))
        except ServingError as exc:
            return Response(http_status(exc), tfs_json.encode_error(exc.message), JSON_HEADERS)

    def _file(self, name: str) -> bytes:
        data = self._files.get(name)
        if data is None:
            data = (importlib.resources.files(__package__) / "static" / "dashboard" / name).read_bytes()
            self._files[name] = data
        return data

    async def state(self, request: Request) -> dict[str, Any]:
        """The state document the page renders (docs/observability.md, "The dashboard", lists its fields)."""
        setup = self._setup
        config_text = await asyncio.to_thread(_config_text, setup.model_config_file)
        return {
            "server": {
                "version": __version__,
                "started": setup.started,
                "now": time.time(),
                "metrics_path": setup.metrics_path,
            },
            "access": _access(setup.guard, request),
            "models": models_state(self._core),
            "config": {
                "flags": [dataclasses.asdict(f) for f in setup.flags],
                "model_config_file": setup.model_config_file,
                "model_config_text": config_text,
                "models": [_config_entry(c) for c in self._core.manager.configs().values()],
                "reload": setup.reload is not None,
            },
            "batching": None
            if setup.batching is None
            else {"per_model": setup.per_model_batching, "parameters": dataclasses.asdict(setup.batching)},
        }

    async def _reload(self) -> Response:
        if self._setup.reload is None:
            raise FailedPrecondition("Reload needs --model_config_file: this server was started with one model")
        await self._setup.reload()
        return Response(200, b"{}", _NO_STORE)


class _MethodNotAllowed(Exception):
    def __init__(self, method: str, allow: str) -> None:
        super().__init__(f"{method} is not allowed here; use {allow}")
        self.allow = allow


def _allow(request: Request, method: str) -> None:
    if request.method != method:
        raise _MethodNotAllowed(request.method, method)


def models_state(core: Core) -> list[dict[str, Any]]:
    """Every configured model with its versions (highest first), their states, errors and instances."""
    manager = core.manager
    reasons = {e.name: e.reason for e in core.repository_index() if e.version is None}
    models = []
    for name in manager.model_names():
        try:
            rows = core.status(name)
        except NotFound:  # no version seen yet, or none on disk: the repository index says which
            rows = []
        versions = [
            {
                "version": row.version,
                "state": row.state.name,
                "error_code": row.error_code.name,
                "error_message": row.error_message,
                "instances": [dataclasses.asdict(i) for i in row.instances],
            }
            for row in rows
        ]
        errors = [v["error_message"] for v in versions if v["error_message"]]
        models.append(
            {
                "name": name,
                "versions": versions,
                "available": list(manager.available_versions(name)),
                "labels": manager.labels(name),
                "unloaded": manager.unloaded(name),
                "reason": reasons.get(name, ""),
                "last_error": errors[0] if errors else "",
            }
        )
    return models


def _config_entry(config: ModelConfig) -> dict[str, Any]:
    return {
        "name": config.name,
        "base_path": config.base_path,
        "platform": config.platform,
        "policy": dataclasses.asdict(config.policy),
        "labels": dict(config.labels),
        "placement": dataclasses.asdict(config.placement),
    }


def _config_text(path: str) -> str:
    """--model_config_file as it is on disk now (it may have changed since it was applied)."""
    if not path:
        return ""
    try:
        return storage.read_bytes(path).decode("utf-8", "replace")
    except (OSError, ServingError) as exc:
        return f"# could not read {path}: {exc}"


def _access(guard: Guard | None, request: Request) -> dict[str, Any]:
    """Whether tokens are required, the scope of the caller's, and whether management is served: the page
    offers reload/load/unload only when both allow it."""
    if guard is None:
        return {"tokens": False, "scope": "admin", "management": True}
    scope: Scope | None = Scope.ADMIN
    if guard.tokens is not None:
        authorization = request.header(b"authorization")
        token = bearer_token(None if authorization is None else authorization.decode("latin-1"))
        scope = None if token is None else guard.tokens.scope(token)
    return {
        "tokens": guard.tokens is not None,
        "scope": None if scope is None else scope.name.lower(),
        "management": guard.management,
    }
