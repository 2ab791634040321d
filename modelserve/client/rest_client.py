"""``RestClient`` and ``AsyncRestClient``: TF Serving's REST API and KServe V2's from numpy, stdlib HTTP only."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import ssl
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
from google.protobuf.message import Message

from ..codecs.tfs_json.tensors import MAX_RANK, exact_tensor, to_array
from ..dtypes import DType
from ..errors import Code, ServingError
from .types import (
    DEFAULT_TIMEOUT,
    Classes,
    ClientError,
    Example,
    Inputs,
    ModelMetadata,
    SignatureInfo,
    TensorInfo,
    VersionStatus,
    signature_info,
)
from .v2 import (
    Parameters,
    Part,
    RepositoryModel,
    V2ModelMetadata,
    V2ServerMetadata,
    model_path,
    rest_index,
    rest_infer_body,
    rest_metadata,
    rest_outputs,
)

# TF Serving's HTTP status -> the canonical code it came from (400 also carries FAILED_PRECONDITION).
_HTTP_CODES = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.ABORTED,
    413: Code.RESOURCE_EXHAUSTED,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    500: Code.INTERNAL,
    501: Code.UNIMPLEMENTED,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


def _model_path(model: str, version: int | None, label: str | None) -> str:
    path = f"/v1/models/{quote(model, safe='')}"
    if version is not None:
        return f"{path}/versions/{version}"
    if label is not None:
        return f"{path}/labels/{quote(label, safe='')}"
    return path


def _to_json(value: Any) -> Any:
    """A tensor or feature value as TF Serving's JSON: bytes as {"b64": ...}, numbers as numbers."""
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind in "SU":
            return _to_json(value.tolist())
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(value: Any, info: TensorInfo) -> np.ndarray:
    """An answer's JSON tensor, read with the server's own TF rules (b64 objects, strings as bytes)."""
    dtype = DType[info.dtype]
    try:
        return to_array(*exact_tensor(value, dtype, MAX_RANK), dtype)
    except ServingError as exc:
        raise ClientError(exc.code, exc.message) from None


def _rest_metadata(doc: Mapping[str, Any]) -> ModelMetadata:
    def info(entry: Mapping[str, Any]) -> TensorInfo:
        shape = entry.get("tensor_shape", {})
        dims = None if shape.get("unknown_rank") else tuple(int(d["size"]) for d in shape.get("dim", []))
        return TensorInfo(entry.get("name", ""), entry["dtype"], dims)

    signatures = doc["metadata"]["signature_def"]["signature_def"]
    return ModelMetadata(
        doc["model_spec"]["name"],
        int(doc["model_spec"]["version"]),
        {
            key: SignatureInfo(
                {a: info(e) for a, e in s.get("inputs", {}).items()},
                {a: info(e) for a, e in s.get("outputs", {}).items()},
                s.get("method_name", ""),
            )
            for key, s in signatures.items()
        },
    )


def _http_error(status: int, data: bytes) -> ClientError:
    """A failed answer's ``{"error": message}`` (both APIs write errors so) as a ClientError."""
    try:
        answer = json.loads(data) if data else {}
    except ValueError:
        answer = None
    message = answer.get("error", "") if isinstance(answer, dict) else data.decode("utf-8", "replace")
    return ClientError(_HTTP_CODES.get(status, Code.UNKNOWN), str(message), status)


class RestClient:
    """TF Serving's REST API from numpy, with ``GrpcClient``'s methods. Thread-safe.

    ``output_filter`` is applied on the client (the REST API has none), and
    ``reload_config`` raises UNIMPLEMENTED: TF Serving reloads over gRPC only.
    """

    def __init__(
        self,
        url: str = "http://localhost:8501",
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        token: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``url``: ``http://`` or ``https://`` host and port; ``timeout``: seconds per call (None: none);
        ``token``: a bearer token, sent as ``Authorization: Bearer <token>``. For https: ``ca_file`` (PEM)
        the server's certificate must chain to (default: the system's), ``cert_file`` and ``key_file`` a
        client certificate (mutual TLS), or a whole ``ssl_context`` instead."""
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._headers = {"Content-Type": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        if ssl_context is None and self._https:
            ssl_context = ssl.create_default_context(cafile=ca_file)
            if cert_file is not None:
                ssl_context.load_cert_chain(cert_file, key_file)
        self._ssl_context = ssl_context
        self._local = threading.local()
        self._open: list[http.client.HTTPConnection] = []  # every thread's, for close()
        self._lock = threading.Lock()
        self._metadata_cache: dict[tuple[str, int | None, str | None], ModelMetadata] = {}

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._ssl_context
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._local.conn = conn
            with self._lock:
                self._open.append(conn)
        return conn

    def _request(self, method: str, path: str, doc: Any = None, timeout: float | None = None) -> Any:
        body = None if doc is None else [json.dumps(doc).encode()]
        return self._answer(*self._exchange(method, path, body, {}, timeout))

    def _exchange(
        self, method: str, path: str, body: Sequence[Part] | None, headers: Mapping[str, str], timeout: float | None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """One HTTP exchange; ``body`` is sent part after part (large tensors are never joined)."""
        sent = {**self._headers, **headers}
        if body is not None:
            sent["Content-Length"] = str(sum(len(p) if isinstance(p, bytes) else p.nbytes for p in body))
        for attempt in (1, 2):  # a kept-alive connection the server has closed is retried once
            conn = self._connection()
            conn.timeout = self._timeout if timeout is None else timeout
            if conn.sock is not None:
                conn.sock.settimeout(conn.timeout)
            try:
                payload = body[0] if body is not None and len(body) == 1 else body
                conn.request(method, self._prefix + path, body=payload, headers=sent)
                response = conn.getresponse()
                return response, response.read()
            except (ConnectionError, http.client.HTTPException, TimeoutError, OSError) as exc:
                conn.close()
                self._local.conn = None
                with self._lock:
                    if conn in self._open:
                        self._open.remove(conn)
                if attempt == 2 or isinstance(exc, TimeoutError):
                    code = Code.DEADLINE_EXCEEDED if isinstance(exc, TimeoutError) else Code.UNAVAILABLE
                    raise ClientError(code, f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    @staticmethod
    def _answer(response: http.client.HTTPResponse, data: bytes) -> Any:
        """A JSON answer's document; any status but 200 is a ClientError with the server's message."""
        if response.status != 200:
            raise _http_error(response.status, data)
        return json.loads(data) if data else {}

    def predict(
        self,
        model: str,
        inputs: Inputs,
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        output_filter: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        info = self._signature(model, version, label, signature)
        doc: dict[str, Any] = {
            "inputs": _to_json(inputs)
            if isinstance(inputs, np.ndarray)
            else {k: _to_json(v) for k, v in inputs.items()}
        }
        if signature:
            doc["signature_name"] = signature
        path = _model_path(model, version, label) + ":predict"
        outputs = self._request("POST", path, doc, timeout)["outputs"]
        if not isinstance(outputs, dict) or set(outputs) - set(info.outputs):
            outputs = {next(iter(info.outputs)): outputs}  # one output comes back unnamed
        wanted = list(output_filter) if output_filter else list(outputs)
        return {alias: _from_json(outputs[alias], info.outputs[alias]) for alias in wanted}

    def _signature(self, model: str, version: int | None, label: str | None, signature: str | None) -> SignatureInfo:
        key = (model, version, label)
        if key not in self._metadata_cache:
            self._metadata_cache[key] = self.metadata(model, version=version, label=label)
        return signature_info(self._metadata_cache[key], signature)

    def metadata(
        self,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> ModelMetadata:
        return _rest_metadata(self._request("GET", _model_path(model, version, label) + "/metadata", None, timeout))

    def status(self, model: str, *, version: int | None = None, timeout: float | None = None) -> list[VersionStatus]:
        doc = self._request("GET", _model_path(model, version, None), None, timeout)
        return [
            VersionStatus(
                int(s["version"]), s["state"], s["status"]["error_code"], s["status"].get("error_message", "")
            )
            for s in doc["model_version_status"]
        ]

    def _examples(
        self,
        verb: str,
        model: str,
        examples: Sequence[Example],
        context: Example | None,
        version: int | None,
        label: str | None,
        signature: str | None,
        timeout: float | None,
    ) -> Any:
        doc: dict[str, Any] = {"examples": [{k: _to_json(v) for k, v in e.items()} for e in examples]}
        if context is not None:
            doc["context"] = {k: _to_json(v) for k, v in context.items()}
        if signature:
            doc["signature_name"] = signature
        return self._request("POST", _model_path(model, version, label) + f":{verb}", doc, timeout)["results"]

    def classify(
        self,
        model: str,
        examples: Sequence[Example],
        *,
        context: Example | None = None,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout: float | None = None,
    ) -> list[Classes]:
        results = self._examples("classify", model, examples, context, version, label, signature, timeout)
        return [[(str(label_), float(score)) for label_, score in item] for item in results]

    def regress(
        self,
        model: str,
        examples: Sequence[Example],
        *,
        context: Example | None = None,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout: float | None = None,
    ) -> list[float]:
        results = self._examples("regress", model, examples, context, version, label, signature, timeout)
        return [float(v) for v in results]

    def reload_config(self, config: str | Message, *, timeout: float | None = None) -> None:
        raise ClientError(Code.UNIMPLEMENTED, "TF Serving's REST API cannot reload the config; use GrpcClient")

    # --- the Open Inference Protocol (KServe V2) ---

    def v2_infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: int | None = None,
        label: str | None = None,
        outputs: Sequence[str] | None = None,
        parameters: Parameters | None = None,
        binary: bool = True,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the model on ``inputs`` (by name; datatypes from the arrays) and return its outputs by
        name: all, or those named in ``outputs``. ``binary``: Triton's binary tensor data both ways
        (the default; FP16 and BF16 travel only so), else JSON. Binary outputs are read-only views
        of the answer's bytes. ``label``: a TF Serving version label (instead of ``version``)."""
        body, length = rest_infer_body(inputs, outputs, parameters, binary)
        headers = {} if length is None else {"Inference-Header-Content-Length": str(length)}
        if length is not None:
            headers["Content-Type"] = "application/octet-stream"
        response, data = self._exchange("POST", model_path(model, version, label) + "/infer", body, headers, timeout)
        if response.status != 200:
            raise _http_error(response.status, data)
        answer_length = response.getheader("Inference-Header-Content-Length")
        return rest_outputs(data, None if answer_length is None else int(answer_length))

    def v2_model_metadata(
        self, model: str, *, version: int | None = None, timeout: float | None = None
    ) -> V2ModelMetadata:
        return rest_metadata(self._request("GET", model_path(model, version), None, timeout))

    def v2_server_metadata(self, *, timeout: float | None = None) -> V2ServerMetadata:
        doc = self._request("GET", "/v2", None, timeout)
        return V2ServerMetadata(doc["name"], doc["version"], tuple(doc.get("extensions", ())))

    def v2_live(self, *, timeout: float | None = None) -> bool:
        return self._health("/v2/health/live", timeout)

    def v2_ready(self, model: str | None = None, *, version: int | None = None, timeout: float | None = None) -> bool:
        """The server's readiness, or with ``model`` that model's (version's); False for an unknown model."""
        path = "/v2/health/ready" if model is None else model_path(model, version) + "/ready"
        return self._health(path, timeout)

    def _health(self, path: str, timeout: float | None) -> bool:
        response, data = self._exchange("GET", path, None, {}, timeout)
        if response.status in (200, 400):  # 400: not ready (Triton's code)
            return response.status == 200
        raise _http_error(response.status, data)

    def v2_repository_index(self, *, ready: bool = False, timeout: float | None = None) -> list[RepositoryModel]:
        """Every version of every configured model with its state (``ready``: only READY ones)."""
        return rest_index(self._request("POST", "/v2/repository/index", {"ready": ready}, timeout))

    def v2_load_model(self, model: str, *, timeout: float | None = None) -> None:
        """Load the model's configured versions again; returns once they have loaded (admin scope)."""
        self._request("POST", f"/v2/repository/models/{quote(model, safe='')}/load", {}, timeout)

    def v2_unload_model(self, model: str, *, timeout: float | None = None) -> None:
        """Drain and unload every version of the model; returns once unloaded (admin scope)."""
        self._request("POST", f"/v2/repository/models/{quote(model, safe='')}/unload", {}, timeout)

    def close(self) -> None:
        with self._lock:
            connections, self._open = self._open, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRestClient:
    """``RestClient``'s methods as coroutines (each call runs on a worker thread)."""

    def __init__(self, url: str = "http://localhost:8501", **kwargs: Any) -> None:
        """``RestClient``'s arguments."""
        self._client = RestClient(url, **kwargs)

    async def predict(self, model: str, inputs: Inputs, **kwargs: Any) -> dict[str, np.ndarray]:
        return await asyncio.to_thread(self._client.predict, model, inputs, **kwargs)

    async def metadata(self, model: str, **kwargs: Any) -> ModelMetadata:
        return await asyncio.to_thread(self._client.metadata, model, **kwargs)

    async def status(self, model: str, **kwargs: Any) -> list[VersionStatus]:
        return await asyncio.to_thread(self._client.status, model, **kwargs)

    async def classify(self, model: str, examples: Sequence[Example], **kwargs: Any) -> list[Classes]:
        return await asyncio.to_thread(self._client.classify, model, examples, **kwargs)

    async def regress(self, model: str, examples: Sequence[Example], **kwargs: Any) -> list[float]:
        return await asyncio.to_thread(self._client.regress, model, examples, **kwargs)

    async def reload_config(self, config: str | Message, **kwargs: Any) -> None:
        self._client.reload_config(config, **kwargs)

    async def v2_infer(self, model: str, inputs: Mapping[str, Any], **kwargs: Any) -> dict[str, np.ndarray]:
        return await asyncio.to_thread(self._client.v2_infer, model, inputs, **kwargs)

    async def v2_model_metadata(self, model: str, **kwargs: Any) -> V2ModelMetadata:
        return await asyncio.to_thread(self._client.v2_model_metadata, model, **kwargs)

    async def v2_server_metadata(self, **kwargs: Any) -> V2ServerMetadata:
        return await asyncio.to_thread(self._client.v2_server_metadata, **kwargs)

    async def v2_live(self, **kwargs: Any) -> bool:
        return await asyncio.to_thread(self._client.v2_live, **kwargs)

    async def v2_ready(self, model: str | None = None, **kwargs: Any) -> bool:
        return await asyncio.to_thread(self._client.v2_ready, model, **kwargs)

    async def v2_repository_index(self, **kwargs: Any) -> list[RepositoryModel]:
        return await asyncio.to_thread(self._client.v2_repository_index, **kwargs)

    async def v2_load_model(self, model: str, **kwargs: Any) -> None:
        await asyncio.to_thread(self._client.v2_load_model, model, **kwargs)

    async def v2_unload_model(self, model: str, **kwargs: Any) -> None:
        await asyncio.to_thread(self._client.v2_unload_model, model, **kwargs)

    async def close(self) -> None:
        self._client.close()

    async def __aenter__(self) -> AsyncRestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
