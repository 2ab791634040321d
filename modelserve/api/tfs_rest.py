"""TF Serving's REST API (``/v1/...``): URL grammar, JSON codecs, HTTP status mapping.

Thin by design: parse the URL, decode JSON to numpy, call the core, encode
the answer, and map core errors to HTTP once (``HTTP_STATUS``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar
from urllib.parse import unquote

import numpy as np

from ..budget import Account, arrays_bytes
from ..codecs import tfs_json
from ..dtypes import DType
from ..errors import Code, InvalidArgument, ServingError, TooLarge
from ..execution import request_options
from ..execution.request_options import RequestOptions
from ..observe.faults import FaultLog, release
from ..observe.trace import RequestTrace
from ..serving import example_tasks
from ..serving.contract import Core
from ..serving.core import input_dtypes
from ..serving.request import ExamplesRequest, InferenceRequest, ModelSpec
from ..signatures import DEFAULT_SIGNATURE, Signature
from .http import (
    JSON_HEADERS,
    OFFLOAD_BYTES,
    BodyLimits,
    BodyTooLarge,
    Headers,
    Request,
    Response,
    failed,
    request_account,
    request_body,
)

log = logging.getLogger(__name__)

# tensorflow/serving http_server.cc ToHTTPStatusCode
HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


def http_status(exc: ServingError) -> int:
    """``HTTP_STATUS``, but one request over its own memory cap is 413 (the server's budget being
    full stays TF Serving's 429: try again later)."""
    return 413 if isinstance(exc, TooLarge) else HTTP_STATUS.get(exc.code, 500)


_POST = re.compile(r"(?i)/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)")
# ``/instances`` is modelserve's: where each loaded version's instances run, their memory (docs/gpu.md).
_GET = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(/metadata|/instances)?")
_CORS_HEADERS: Headers = (
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, GET"),
    (b"access-control-allow-headers", b"Content-Type"),
)
_INT64_MAX = 2**63 - 1
_INT64_DIGITS = len(str(_INT64_MAX))
_ROUTES_KEPT = 4096  # inference URLs remembered parsed (clients repeat theirs); more clears the memory


@dataclass(frozen=True)
class RestOptions:
    timeout_ms: int = 30000
    enable_cors: bool = False
    max_body_bytes: int = 256 * 1024 * 1024
    max_gzip_ratio: float = 100.0


# A POST verb's handler: (app, model, body, request options, the request's memory account, its trace)
# -> answer.
PostHandler = Callable[["TfsRestApp", ModelSpec, bytes, RequestOptions, Account, RequestTrace], Awaitable[bytes]]


class TfsRestApp:
    """The HTTP handler (``api.http.Handler``) of everything under ``/v1/``."""

    def __init__(self, core: Core, options: RestOptions) -> None:
        self._core = core
        self._options = options
        self._headers: Headers = (*JSON_HEADERS, *(_CORS_HEADERS if options.enable_cors else ()))
        self._routes: dict[str, tuple[ModelSpec, str]] = {}  # inference path -> (spec, verb)
        self._faults = FaultLog(log)
        self._body_limits = BodyLimits(options.max_body_bytes, options.max_gzip_ratio)

    async def __call__(self, request: Request) -> Response:
        method = request.method
        if method == "OPTIONS":
            return self._preflight(request)
        try:
            return Response(200, await self._handle(method, request.path, request), self._headers)
        except Exception as exc:
            failed(request.trace, exc)
            response = self._error(exc, request)
            release(exc)  # its request's arrays are freed now, not by the garbage collector
            return response

    @property
    def options(self) -> RestOptions:
        """The REST limits and timeout (the V2 front end on the same port keeps the same ones)."""
        return self._options

    def _error(self, exc: Exception, request: Request) -> Response:
        if isinstance(exc, BodyTooLarge):
            return Response(413, tfs_json.encode_error(str(exc)), self._headers)
        # A bug costs one request, not the server; its text stays in the log.
        method, path = request.method, request.path[:200]
        return self.error_answer(self._faults.answer("REST", exc, "Unhandled error serving %s %s", method, path))

    def error_answer(self, exc: ServingError) -> Response:
        """A failed request's answer: TF Serving's status and ``{"error": ...}`` (also the listener's,
        for a body the memory budget refuses while it arrives)."""
        return Response(http_status(exc), tfs_json.encode_error(exc.message), self._headers)

    def too_large(self, size: int, limit: int) -> Response:
        """The 413 answer to a body over ``--rest_api_max_body_bytes`` (the listener's too_large)."""
        return Response(413, tfs_json.encode_error(str(BodyTooLarge(size, limit))), self._headers)

    def _preflight(self, request: Request) -> Response:
        origin = request.header(b"origin") or b""
        status = 200 if (b"http://" in origin or b"https://" in origin) else 400
        return Response(status, b"", self._headers)

    async def _handle(self, method: str, path: str, request: Request) -> bytes:
        if method == "POST" and (route := self._post_route(path)) is not None:
            spec, verb = route
            trace = request.trace
            trace.api = verb
            with request_account(request, self._core.budget) as account:
                body = request_body(request, self._body_limits, account)
                if not isinstance(body, bytes):
                    body = await body  # a big gzip body, inflated off the loop
                options = request_options.from_headers(request.headers)
                return await self._post_handlers[verb](self, spec, body, options, account, trace)
        if method == "GET" and (match := _GET.fullmatch(path)):
            name, version, label, suffix = match.groups()
            trace = request.trace
            trace.api = "status" if suffix is None else suffix[1:].lower()
            if name is None:
                raise InvalidArgument("Missing model name in request.")
            spec = _spec(name, version, label)
            if suffix is None:
                return self._status(spec, trace)
            return self._metadata(spec, trace) if suffix.lower() == "/metadata" else self._instances(spec, trace)
        raise InvalidArgument(f"Malformed request: {method} {path}")

    def _post_route(self, path: str) -> tuple[ModelSpec, str] | None:
        """(spec, verb) of an inference URL, None for any other path; parsed once per distinct path."""
        route = self._routes.get(path)
        if route is None:
            match = _POST.fullmatch(path)
            if match is None or not match.group(4).islower():
                return None
            name, version, label, verb = match.groups()
            route = (_spec(name, version, label), verb)
            if len(self._routes) >= _ROUTES_KEPT:
                self._routes.clear()
            self._routes[path] = route
        return route

    # ---- GET ------------------------------------------------------------------------------

    def _status(self, spec: ModelSpec, trace: RequestTrace) -> bytes:
        # TF Serving's status endpoint ignores a label and lists every version.
        rows = self._core.status(spec.name, spec.version, trace)
        return tfs_json.encode_status([(s.version, s.state.name, s.error_code.name, s.error_message) for s in rows])

    def _instances(self, spec: ModelSpec, trace: RequestTrace) -> bytes:
        rows = self._core.status(spec.name, spec.version, trace)
        return tfs_json.encode_instances([(s.version, s.state.name, [asdict(i) for i in s.instances]) for s in rows])

    def _metadata(self, spec: ModelSpec, trace: RequestTrace) -> bytes:
        metadata = self._core.metadata(spec, trace)
        return tfs_json.encode_metadata(spec.name, metadata.version, metadata.signatures)

    # ---- POST -----------------------------------------------------------------------------

    async def _predict(
        self, spec: ModelSpec, body: bytes, options: RequestOptions, account: Account, trace: RequestTrace
    ) -> bytes:
        # Inline for the usual small request (no coroutine per step); off the loop for a big one.
        big = len(body) >= OFFLOAD_BYTES
        doc = await _offload(tfs_json.loads, body, account) if big else tfs_json.loads(body, account)
        signature_name = tfs_json.signature_name(doc) or DEFAULT_SIGNATURE
        inputs = functools.partial(_json_inputs, doc, body, signature_name, big, account)
        request = InferenceRequest(spec, inputs, signature_name, (), self._deadline(), options, account, trace)
        outputs = (await self._core.predict(request)).outputs
        # The answer mirrors the request's layout; a body that decoded had one of the two keys.
        layout = tfs_json.Format.ROW if "instances" in doc else tfs_json.Format.COLUMNAR
        account.charge(tfs_json.encode_bytes(outputs), "encode its outputs as JSON")
        if sum(a.nbytes for a in outputs.values()) >= OFFLOAD_BYTES:
            encoded: bytes = await _offload(tfs_json.encode_predict, outputs, layout)
            return encoded
        return tfs_json.encode_predict(outputs, layout)

    async def _classify(
        self, spec: ModelSpec, body: bytes, options: RequestOptions, account: Account, trace: RequestTrace
    ) -> bytes:
        response = await self._core.classify(self._examples(spec, body, options, account, trace))
        return tfs_json.encode_classify(response.results[0])  # type: ignore[arg-type]

    async def _regress(
        self, spec: ModelSpec, body: bytes, options: RequestOptions, account: Account, trace: RequestTrace
    ) -> bytes:
        response = await self._core.regress(self._examples(spec, body, options, account, trace))
        return tfs_json.encode_regress(response.results[0])  # type: ignore[arg-type]

    def _examples(
        self, spec: ModelSpec, body: bytes, options: RequestOptions, account: Account, trace: RequestTrace
    ) -> ExamplesRequest:
        doc = tfs_json.loads(body, account)
        signature_name = tfs_json.signature_name(doc)
        features, context = tfs_json.decode_examples(doc)
        serialized = example_tasks.serialized_examples(
            [example_tasks.example_bytes(f) for f in features],
            None if context is None else example_tasks.example_bytes(context),
            account,
        )
        return ExamplesRequest(spec, serialized, signature_name, (), self._deadline(), options, account, trace)

    _post_handlers: ClassVar[dict[str, PostHandler]] = {
        "predict": _predict,
        "classify": _classify,
        "regress": _regress,
    }

    def _deadline(self) -> float | None:
        timeout = self._options.timeout_ms
        return time.monotonic() + timeout / 1000 if timeout > 0 else None


async def _offload(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))


def _json_inputs(
    doc: dict[str, Any],
    body: bytes,
    signature_name: str,
    big: bool,
    account: Account,
    signatures: Mapping[str, Signature],
) -> Mapping[str, np.ndarray] | asyncio.Future[Mapping[str, np.ndarray]]:
    """A predict body's inputs, decoded once the core holds the version (an ``InputDecoder``): TF
    Serving reads the JSON by the input dtypes of the signature it names. A big body is decoded off
    the event loop."""
    dtypes = input_dtypes(_rest_signature(signatures, signature_name))
    if big:
        return asyncio.get_running_loop().run_in_executor(None, _decoded, doc, dtypes, body, account)
    return _decoded(doc, dtypes, body, account)


def _decoded(
    doc: dict[str, Any], dtypes: Mapping[str, DType], body: bytes, account: Account
) -> Mapping[str, np.ndarray]:
    # Charged once made: each element's array slot is smaller than the parsed value already charged
    # for it, and the arrays outlive the document's transient costs.
    arrays = tfs_json.decode_predict(doc, dtypes, body=body)[0]
    account.charge(arrays_bytes(arrays.values(), platform_copy=True), "hold its decoded inputs")
    return arrays


def _spec(name: str, version: str | None, label: str | None) -> ModelSpec:
    number = None
    if version is not None:
        # Length first: int() refuses over 4300 digits with a ValueError of its own.
        digits = version.lstrip("0") or "0"
        number = int(digits) if len(digits) <= _INT64_DIGITS else None
        if number is None or number > _INT64_MAX:
            raise InvalidArgument(f"Failed to convert version: {version} to numeric.")
    return ModelSpec(
        name=unquote(name),
        version=number,
        label=None if label is None else unquote(label),
    )


def _rest_signature(signatures: Mapping[str, Signature], name: str) -> Signature:
    signature = signatures.get(name)
    if signature is None:
        raise InvalidArgument(f'Serving signature name: "{name}" not found in signature def')
    if not signature.inputs:
        raise InvalidArgument(f"Failed to get input map for signature: {name or 'DEFAULT'}")
    return signature
