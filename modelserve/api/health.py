"""Probes for orchestrators: ``/healthz`` (liveness) and ``/readyz`` (readiness) on the REST port.

Liveness is "the process answers": ``/healthz`` is 200 ``ok`` whenever the
event loop serves it. Readiness is the core's (``ServingCore.ready``): every
configured model has an AVAILABLE version and the server is not draining;
``/readyz`` is 200 then, else 503 with a short JSON naming each model that is
not ready and why, so ``kubectl describe pod`` says what to fix. The same
readiness answers ``/v2/health/ready`` and the gRPC health service
(``api.grpc_server``), which reads ``model_states`` here.
"""

from __future__ import annotations

import orjson

from ..errors import NotFound
from ..serving.contract import Core
from .http import HTML_HEADERS, JSON_HEADERS, Request, Response, not_found_html

TEXT_HEADERS = ((b"content-type", b"text/plain; charset=utf-8"),)
# The paths this module answers (lower case); open without a token (api.auth).
HEALTH_PATHS = ("/healthz", "/readyz")


def not_ready(core: Core) -> dict[str, str]:
    """Each configured model without an AVAILABLE version and why; {} when every one has one.

    A model unloaded through the repository API is left out (it was asked for, as ``core.ready``)."""
    manager = core.manager
    reasons: dict[str, str] = {}
    for name in manager.model_names():
        if manager.unloaded(name) or manager.available_versions(name):
            continue
        reasons[name] = _why(core, name)
    return reasons


def _why(core: Core, name: str) -> str:
    try:
        latest = core.status(name)[0]  # highest version first
    except (NotFound, IndexError):
        return "no version found under its base path yet"
    text = f"version {latest.version} is {latest.state.name}"
    return f"{text}: {latest.error_message}" if latest.error_message else text


def model_states(core: Core) -> dict[str, bool]:
    """Every configured model and whether it has an AVAILABLE version (all False once draining)."""
    manager = core.manager
    draining = core.draining
    return {name: not draining and bool(manager.available_versions(name)) for name in manager.model_names()}


class HealthApp:
    """The ``api.http.Handler`` for ``HEALTH_PATHS``."""

    def __init__(self, core: Core) -> None:
        self._core = core

    async def __call__(self, request: Request) -> Response:
        path = request.path.lower()
        if path not in HEALTH_PATHS:
            return Response(404, not_found_html(request.path), HTML_HEADERS)
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"Method Not Allowed\n", TEXT_HEADERS)
        if path == "/healthz":
            return Response(200, b"ok\n", TEXT_HEADERS)
        return self.readiness()

    def readiness(self) -> Response:
        core = self._core
        if core.draining:
            return _json(503, {"ready": False, "draining": True, "not_ready": {}})
        reasons = not_ready(core)
        if reasons:
            return _json(503, {"ready": False, "draining": False, "not_ready": reasons})
        return _json(200, {"ready": True})


def _json(status: int, doc: object) -> Response:
    return Response(status, orjson.dumps(doc) + b"\n", JSON_HEADERS)
