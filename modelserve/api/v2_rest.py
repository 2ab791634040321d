"""The Open Inference Protocol's REST API (KServe V2, ``/v2/...``) as Triton serves it, on the REST port.

Health, server and model metadata, readiness, and infer with JSON tensors or
Triton's binary tensor data extension (``codecs/v2``). Thin like
``tfs_rest``: parse the URL, decode, call the core, encode, and map core
errors to HTTP once (``HTTP_STATUS``, Triton's mapping). Beyond Triton: TF
Serving's version labels (``/v2/models/{m}/labels/{l}/infer`` or the
``version_label`` parameter), the signature to run (``signature_name``), and
queueing (``priority``, ``timeout`` in µs, or the ``x-modelserve-*`` headers).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

import numpy as np

from .. import __version__
from ..budget import Account
from ..codecs.v2 import binary
from ..codecs.v2 import json as v2json
from ..codecs.v2.datatypes import v2_name
from ..codecs.v2.metadata import EXTENSIONS, SERVER_NAME, TensorMetadata, described_signature, tensors
from ..dtypes import from_numpy
from ..errors import Code, InvalidArgument, ServingError, TooLarge
from ..execution import request_options
from ..observe.faults import FaultLog, release
from ..observe.trace import RequestTrace
from ..serving.contract import Core
from ..serving.core import find_signature
from ..serving.request import InferenceRequest, ModelSpec, RepositoryEntry
from ..signatures import DEFAULT_SIGNATURE, Signature
from . import tfs_rest
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
from .tfs_rest import RestOptions

log = logging.getLogger(__name__)

# Triton's http_server.cc HttpCodeFromError: NOT_FOUND 404, UNAVAILABLE 503, UNSUPPORTED 501,
# INTERNAL 500, the rest 400. Codes Triton does not have keep the HTTP meaning TF Serving's REST API
# gives them (``tfs_rest.HTTP_STATUS``): a full memory budget 429 (one request over its own cap 413,
# ``http_status``), a passed deadline 504, tokens 401 / 403, lost data 500.
HTTP_STATUS = {
    **tfs_rest.HTTP_STATUS,
    Code.CANCELLED: 400,
    Code.UNKNOWN: 400,
    Code.ALREADY_EXISTS: 400,
    Code.ABORTED: 400,
}

_MODEL = re.compile(r"/v2/models/([^/]+)(?:/versions/([0-9]+))?(/ready|/infer)?")
_LABELED = re.compile(r"/v2/models/([^/]+)/labels/([^/]+)/infer")
_REPOSITORY_MODEL = re.compile(r"/v2/repository/models/([^/]+)/(load|unload)")
_INT64_MAX = 2**63 - 1
_BINARY_HEADERS: Headers = ((b"content-type", b"application/octet-stream"),)


def http_status(exc: ServingError) -> int:
    return 413 if isinstance(exc, TooLarge) else HTTP_STATUS.get(exc.code, 500)


class MethodNotAllowed(Exception):
    """A known path asked with the wrong method (Triton answers 405)."""


class V2RestApp:
    """The HTTP handler (``api.http.Handler``) of everything under ``/v2``."""

    def __init__(self, core: Core, options: RestOptions) -> None:
        self._core = core
        self._options = options
        self._faults = FaultLog(log)
        self._body_limits = BodyLimits(options.max_body_bytes, options.max_gzip_ratio)
        self._server_metadata = v2json.dumps(
            {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}
        )

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._handle(request)
        except Exception as exc:
            failed(request.trace, exc)
            response = self._error(exc, request)
            release(exc)  # its request's arrays are freed now, not by the garbage collector
            return response

    def _error(self, exc: Exception, request: Request) -> Response:
        if isinstance(exc, BodyTooLarge):
            return _json(413, v2json.error(str(exc)))
        if isinstance(exc, MethodNotAllowed):
            return _json(405, v2json.error("Method Not Allowed"))
        method, path = request.method, request.path[:200]
        error = self._faults.answer("REST", exc, "Unhandled error serving %s %s", method, path)
        return _json(http_status(error), v2json.error(error.message))

    async def _handle(self, request: Request) -> Response:
        path, method, trace = request.path, request.method, request.trace
        if path in ("/v2", "/v2/"):
            trace.api = "server_metadata"
            _only(method, "GET")
            return _json(200, self._server_metadata)
        if path in ("/v2/health/live", "/v2/health/ready"):
            _only(method, "GET")
            live = path.endswith("/live")
            trace.api = "live" if live else "server_ready"
            return Response(200 if live or self._core.ready() else 400, b"", JSON_HEADERS)
        if match := _MODEL.fullmatch(path):
            name, version, kind = unquote(match.group(1)), _version(match.group(2)), match.group(3)
            if kind == "/infer":
                trace.api = "infer"
                _only(method, "POST")
                return await self._infer(request, ModelSpec(name, version))
            _only(method, "GET")
            if kind == "/ready":
                trace.api = "ready"
                if not self._core.ready(name, version):
                    return _json(400, v2json.error("Model version not ready"))
                return Response(200, b"", JSON_HEADERS)
            trace.api = "metadata"
            return _json(200, self._metadata(ModelSpec(name, version), trace))
        if match := _LABELED.fullmatch(path):
            trace.api = "infer"
            _only(method, "POST")
            return await self._infer(request, ModelSpec(unquote(match.group(1)), label=unquote(match.group(2))))
        if path.startswith("/v2/repository/"):  # the admin scope guards these (api.auth)
            return await self._repository(request)
        return _json(404, v2json.error("Not Found"))

    # ---- the model repository extension (Triton's HTTP paths and bodies) ----------------------

    async def _repository(self, request: Request) -> Response:
        if request.path == "/v2/repository/index":
            request.trace.api = "repository_index"
            _only(request.method, "POST")
            ready = (await self._body_doc(request)).get("ready", False)
            if type(ready) is not bool:
                raise InvalidArgument("Unable to parse 'ready'")
            return _json(200, v2json.dumps([_index_doc(entry) for entry in self._core.repository_index(ready)]))
        match = _REPOSITORY_MODEL.fullmatch(request.path)
        if match is None:
            return _json(404, v2json.error("Not Found"))
        _only(request.method, "POST")
        name, action = unquote(match.group(1)), match.group(2)
        request.trace.api = action
        parameters = v2json.parameters(await self._body_doc(request))
        if action == "load":
            if parameters:
                names = ", ".join(sorted(parameters))
                raise InvalidArgument(f"load parameters are not supported (models come from the model config): {names}")
            await self._core.load_model(name)
        else:  # ``unload_dependents`` has nothing to act on: modelserve has no ensembles
            await self._core.unload_model(name)
        return Response(200, b"", JSON_HEADERS)

    async def _body_doc(self, request: Request) -> dict[str, Any]:
        """A repository request's JSON object; an empty body is an empty one (as Triton takes it)."""
        body = request_body(request, self._body_limits, request.account)
        if not isinstance(body, bytes):
            body = await body
        if not body:
            return {}
        doc = v2json.loads(body, request.account)
        if type(doc) is not dict:
            raise InvalidArgument("failed to parse the request JSON buffer: the request is not a JSON object")
        return doc

    def _metadata(self, spec: ModelSpec, trace: RequestTrace) -> bytes:
        """The version's serving signature (``serving_default``, else the first by name) as V2 tensors."""
        metadata = self._core.metadata(spec, trace)
        signature = described_signature(metadata.signatures)
        return v2json.dumps(
            {
                "name": metadata.model,
                "versions": [str(v) for v in metadata.versions or (metadata.version,)],
                "platform": metadata.platform,
                "inputs": [_tensor_doc(tensor) for tensor in tensors(signature.inputs)],
                "outputs": [_tensor_doc(tensor) for tensor in tensors(signature.outputs)],
            }
        )

    # ---- infer ----------------------------------------------------------------------------

    async def _infer(self, request: Request, spec: ModelSpec) -> Response:
        with request_account(request, self._core.budget) as account:
            body = request_body(request, self._body_limits, account)
            if not isinstance(body, bytes):
                body = await body  # a big gzip body, inflated off the loop
            return await self._infer_body(request, spec, body, account)

    async def _infer_body(self, request: Request, spec: ModelSpec, body: bytes, account: Account) -> Response:
        length = binary.header_length(request.header(binary.HEADER), len(body))
        big = len(body) >= OFFLOAD_BYTES
        if length == 0:  # the raw form: the whole body is the model's one input
            header = v2json.InferHeader(None, {}, (), ())
            decode: Callable[..., Mapping[str, np.ndarray]] = functools.partial(_raw_input, memoryview(body), account)
        else:
            text, data = binary.split(body, length)
            header = v2json.parse_request(v2json.loads(text, account))
            decode = functools.partial(_inputs, header, data, spec.name, account)
        parameters = header.parameters
        spec = _labeled(spec, parameters.get("version_label"))
        signature_name = parameters.get("signature_name", DEFAULT_SIGNATURE)
        if type(signature_name) is not str:
            raise InvalidArgument("Unable to parse 'signature_name'")
        options = request_options.with_parameters(
            request_options.from_headers(request.headers), parameters.get("priority"), parameters.get("timeout")
        )
        inputs = functools.partial(_decoder, decode, signature_name, big)
        wanted = tuple(o.name for o in header.outputs)
        infer = InferenceRequest(
            spec, inputs, signature_name, wanted, self._deadline(), options, account, request.trace
        )
        response = await self._core.predict(infer)
        binary_for = {o.name: header.binary_output if o.binary is None else o.binary for o in header.outputs}
        names = wanted or tuple(response.outputs)
        outputs = [(n, response.outputs[n], binary_for.get(n, header.binary_output)) for n in names]
        encode = functools.partial(_encode, response.model, response.version, header.id, outputs, account)
        if sum(array.nbytes for _, array, _ in outputs) >= OFFLOAD_BYTES:
            answer: Response = await asyncio.get_running_loop().run_in_executor(None, encode)
            return answer
        return encode()

    def _deadline(self) -> float | None:
        timeout = self._options.timeout_ms
        return time.monotonic() + timeout / 1000 if timeout > 0 else None


def _only(method: str, allowed: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise MethodNotAllowed


def _json(status: int, body: bytes) -> Response:
    return Response(status, body, JSON_HEADERS)


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(_INT64_MAX)) or int(digits) > _INT64_MAX:
        raise InvalidArgument(f"failed to parse model version: {text}")
    return int(digits)


def _labeled(spec: ModelSpec, label: Any) -> ModelSpec:
    """The spec with the ``version_label`` parameter applied (a label names a version as the path would)."""
    if label is None:
        return spec
    if type(label) is not str or not label:
        raise InvalidArgument("Unable to parse 'version_label': expected a label's name")
    if spec.version is not None or spec.label is not None:
        raise InvalidArgument("'version_label' names a version already named by the path; send one of the two")
    return ModelSpec(spec.name, label=label)


def _index_doc(entry: RepositoryEntry) -> dict[str, str]:
    """A row of the repository index as Triton writes it: no ``version`` before one is known."""
    doc = {"name": entry.name}
    if entry.version is not None:
        doc["version"] = str(entry.version)
    doc.update(state=entry.state, reason=entry.reason)
    return doc


def _tensor_doc(tensor: TensorMetadata) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


def _decoder(
    decode: Callable[[Signature], Mapping[str, np.ndarray]],
    signature_name: str,
    big: bool,
    signatures: Mapping[str, Signature],
) -> Mapping[str, np.ndarray] | asyncio.Future[Mapping[str, np.ndarray]]:
    """The inputs, decoded under the request's lease (an ``InputDecoder``); a big body off the loop."""
    signature = find_signature(signatures, signature_name)
    if big:
        return asyncio.get_running_loop().run_in_executor(None, decode, signature)
    return decode(signature)


def _inputs(
    header: v2json.InferHeader, data: memoryview, model: str, account: Account, signature: Signature
) -> dict[str, np.ndarray]:
    """Each input from its ``data`` or its share of the binary data, in order (Triton's checks)."""
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in header.inputs:
        if tensor.binary_size is None:
            arrays[tensor.name] = v2json.decode_data(tensor, account)
            continue
        end = offset + tensor.binary_size
        if end > len(data):
            raise InvalidArgument(
                f"unexpected size for input '{tensor.name}', expecting {end - len(data)} additional bytes "
                f"for model '{model}'"
            )
        arrays[tensor.name] = binary.decode_tensor(
            tensor.name, tensor.datatype, tensor.shape, data[offset:end], account
        )
        offset = end
    if offset != len(data):
        raise InvalidArgument(f"unexpected additional input data for model '{model}'")
    return arrays


def _raw_input(body: memoryview, account: Account, signature: Signature) -> dict[str, np.ndarray]:
    """A raw request's one input: its name, datatype and shape come from the signature."""
    if len(signature.inputs) != 1:
        raise InvalidArgument(
            f"Raw request must only have 1 input (found 1) to be deduced but got {len(signature.inputs)} inputs"
        )
    ((alias, spec),) = signature.inputs.items()
    datatype = v2_name(spec.dtype)
    shape = binary.raw_shape(alias, datatype, spec.shape, len(body))
    data = binary.raw_bytes(body) if datatype == "BYTES" else body
    return {alias: binary.decode_tensor(alias, datatype, shape, data, account)}


def _encode(
    model: str,
    version: int,
    request_id: str | None,
    outputs: list[tuple[str, np.ndarray, bool]],
    account: Account,
) -> Response:
    """The answer: JSON, with the binary outputs' bytes after it (``Inference-Header-Content-Length``)."""
    entries: list[dict[str, Any]] = []
    tail: list[memoryview] = []
    cost = 0
    for name, array, as_binary in outputs:
        datatype = v2_name(from_numpy(array.dtype))
        entry = v2json.output_entry(name, datatype, array.shape)
        if as_binary:
            cost += binary.encoded_bytes(array, datatype)
        else:
            cost += v2json.json_bytes(array)
        entries.append(entry)
    account.charge(cost, "encode its outputs")
    for entry, (name, array, as_binary) in zip(entries, outputs, strict=True):
        if as_binary:
            data = binary.tensor_bytes(array, entry["datatype"])
            entry["parameters"] = {"binary_data_size": data.nbytes}
            if data.nbytes:
                tail.append(data)
        else:
            entry["data"] = v2json.output_data(name, entry["datatype"], array)
    head = v2json.dumps(v2json.response_doc(model, version, request_id, entries))
    if not tail:
        return Response(200, head, JSON_HEADERS)
    headers = (*_BINARY_HEADERS, (binary.HEADER, str(len(head)).encode()))
    return Response(200, head, headers, tuple(tail))
