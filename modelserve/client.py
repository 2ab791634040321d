"""A numpy-native client for modelserve and TensorFlow Serving: gRPC and REST, sync and async, no TensorFlow.

::

    from modelserve.client import GrpcClient

    with GrpcClient("localhost:8500") as client:
        outputs = client.predict("mnist", {"input": batch})      # {"output": ndarray}

``GrpcClient``, ``RestClient``, ``AsyncGrpcClient`` and ``AsyncRestClient``
have the same methods and return the same types: ``predict``, ``metadata``,
``status``, ``classify``, ``regress`` and ``reload_config``. Every failure the
server reports, and every transport failure, raises ``ClientError`` carrying
the canonical status ``code`` (``modelserve.errors.Code``) and the message.

The gRPC clients raise the receive limit to 2 GiB - 1 (gRPC's default of
4 MiB is what TF Serving users hit with big answers). Calls time out after
``timeout`` seconds (30 by default; ``None``: never). Predicting with a bare
array (no input name), and any REST predict (whose JSON has no dtypes), look
the model's signature up once per model/version/label and cache it.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import grpc
import numpy as np
from google.protobuf.message import Message

from .codecs.tensor_proto import make_ndarray, make_tensor_proto, shape_from_proto
from .dtypes import DType, to_numpy
from .errors import Code, ServingError
from .protos import Stub, parse_text, pb

__all__ = [
    "AsyncGrpcClient",
    "AsyncRestClient",
    "ClientError",
    "GrpcClient",
    "ModelMetadata",
    "RestClient",
    "SignatureInfo",
    "TensorInfo",
    "VersionStatus",
    "make_ndarray",
    "make_tensor_proto",
]

DEFAULT_TIMEOUT = 30.0
MAX_MESSAGE_BYTES = 2**31 - 1
Inputs = Mapping[str, Any] | np.ndarray
Example = Mapping[str, Any]  # feature name -> value or list: bytes/str, float, int/bool (or an ndarray)
Classes = list[tuple[str, float]]


class ClientError(Exception):
    """A failed call: the server's status ``code`` and ``message`` (``http_status`` for REST)."""

    def __init__(self, code: Code, message: str, http_status: int | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # DT_FLOAT, DT_STRING, ...
    shape: tuple[int, ...] | None  # -1 for an unknown size; None for an unknown rank


@dataclass(frozen=True)
class SignatureInfo:
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    method_name: str


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: int
    signatures: dict[str, SignatureInfo]


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str  # OK, NOT_FOUND, ...
    error_message: str


# --- protos: requests and answers, shared by both gRPC clients -----------------------------------


def _spec(out: Message, model: str, version: int | None, label: str | None, signature: str | None) -> None:
    out.name = model
    if version is not None:
        out.version.value = version
    if label is not None:
        out.version_label = label
    if signature:
        out.signature_name = signature


def _predict_request(
    model: str,
    inputs: Mapping[str, Any],
    version: int | None,
    label: str | None,
    signature: str | None,
    output_filter: Sequence[str] | None,
) -> Message:
    request = pb.PredictRequest()
    _spec(request.model_spec, model, version, label, signature)
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(make_tensor_proto(value))
    request.output_filter.extend(output_filter or ())
    return request


def _outputs(response: Message) -> dict[str, np.ndarray]:
    return {alias: make_ndarray(tensor) for alias, tensor in response.outputs.items()}


def _metadata_request(model: str, version: int | None, label: str | None) -> Message:
    request = pb.GetModelMetadataRequest()
    _spec(request.model_spec, model, version, label, None)
    request.metadata_field.append("signature_def")
    return request


def _metadata(response: Message) -> ModelMetadata:
    signatures = pb.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)

    def infos(entries: Mapping[str, Any]) -> dict[str, TensorInfo]:
        return {
            alias: TensorInfo(t.name, DType(t.dtype).name, shape_from_proto(t.tensor_shape))
            for alias, t in entries.items()
        }

    return ModelMetadata(
        response.model_spec.name,
        response.model_spec.version.value,
        {
            key: SignatureInfo(infos(s.inputs), infos(s.outputs), s.method_name)
            for key, s in signatures.signature_def.items()
        },
    )


def _status_request(model: str, version: int | None) -> Message:
    request = pb.GetModelStatusRequest()
    _spec(request.model_spec, model, version, None, None)
    return request


def _statuses(response: Message) -> list[VersionStatus]:
    state = pb.ModelVersionStatus.State
    return [
        VersionStatus(s.version, state.Name(s.state), Code(s.status.error_code).name, s.status.error_message)
        for s in response.model_version_status
    ]


def _example_proto(features: Example, out: Message) -> None:
    for name, value in features.items():
        values = list(np.asarray(value).reshape(-1).tolist()) if isinstance(value, np.ndarray) else value
        values = values if isinstance(values, (list, tuple)) else [values]
        feature = out.features.feature[name]
        if not values:
            continue
        first = values[0]
        if isinstance(first, (bytes, str)):
            feature.bytes_list.value.extend(v.encode() if isinstance(v, str) else v for v in values)
        elif isinstance(first, float):
            feature.float_list.value.extend(values)
        else:
            feature.int64_list.value.extend(int(v) for v in values)


def _examples_request(
    cls: type[Message],
    model: str,
    examples: Sequence[Example],
    context: Example | None,
    version: int | None,
    label: str | None,
    signature: str | None,
) -> Message:
    request = cls()
    _spec(request.model_spec, model, version, label, signature)
    if context is None:
        target = request.input.example_list.examples
    else:
        _example_proto(context, request.input.example_list_with_context.context)
        target = request.input.example_list_with_context.examples
    for features in examples:
        _example_proto(features, target.add())
    return request


def _classes(response: Message) -> list[Classes]:
    return [[(c.label, c.score) for c in item.classes] for item in response.result.classifications]


def _regressions(response: Message) -> list[float]:
    return [r.value for r in response.result.regressions]


def _reload_request(config: str | Message) -> Message:
    request = pb.ReloadConfigRequest()
    if isinstance(config, str):
        parse_text(config, request.config)
    else:
        request.config.CopyFrom(config)
    return request


def _check_reload(response: Message) -> None:
    if response.status.error_code:
        raise ClientError(Code(response.status.error_code), response.status.error_message)


def _rpc_error(exc: grpc.RpcError) -> ClientError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    number = code.value[0] if code is not None else Code.UNKNOWN
    return ClientError(Code(number), details or "")


def _sole_input(metadata: ModelMetadata, signature: str | None) -> str:
    info = metadata.signatures.get(signature or "serving_default")
    if info is None:
        raise ClientError(Code.INVALID_ARGUMENT, f"Model has no signature {signature or 'serving_default'}")
    if len(info.inputs) != 1:
        raise ClientError(
            Code.INVALID_ARGUMENT,
            f"A bare array needs a signature with one input; this one has {sorted(info.inputs)}",
        )
    return next(iter(info.inputs))


def _channel_options(max_message_bytes: int, extra: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        *extra,
    ]


# --- gRPC ----------------------------------------------------------------------------------------


class _GrpcBase:
    def __init__(
        self,
        target: str,
        *,
        timeout: float | None,
        credentials: grpc.ChannelCredentials | None,
        options: Sequence[tuple[str, Any]],
        max_message_bytes: int,
        aio: bool,
    ) -> None:
        module: Any = grpc.aio if aio else grpc
        opts = _channel_options(max_message_bytes, options)
        self._channel = (
            module.secure_channel(target, credentials, options=opts)
            if credentials is not None
            else module.insecure_channel(target, options=opts)
        )
        self._prediction = Stub(self._channel, pb.PredictionService)
        self._models = Stub(self._channel, pb.ModelService)
        self._timeout = timeout
        self._metadata_cache: dict[tuple[str, int | None, str | None], ModelMetadata] = {}

    def _timeout_for(self, timeout: float | None) -> float | None:
        return self._timeout if timeout is None else timeout


class GrpcClient(_GrpcBase):
    """TF Serving's gRPC API from numpy. Thread-safe; close it (or use ``with``) when done."""

    def __init__(
        self,
        target: str = "localhost:8500",
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(
            target,
            timeout=timeout,
            credentials=credentials,
            options=options,
            max_message_bytes=max_message_bytes,
            aio=False,
        )

    def _call(self, method: Callable[..., Any], request: Message, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self._timeout_for(timeout))
        except grpc.RpcError as exc:
            raise _rpc_error(exc) from None

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
        """Run the model on ``inputs`` (by input name, or one bare array); outputs by name."""
        if isinstance(inputs, np.ndarray):
            inputs = {_sole_input(self._cached_metadata(model, version, label), signature): inputs}
        request = _predict_request(model, inputs, version, label, signature, output_filter)
        response = self._call(self._prediction.Predict, request, timeout)
        outputs: dict[str, np.ndarray] = _wrap(_outputs, response)
        return outputs

    def metadata(
        self,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> ModelMetadata:
        request = _metadata_request(model, version, label)
        return _metadata(self._call(self._prediction.GetModelMetadata, request, timeout))

    def _cached_metadata(self, model: str, version: int | None, label: str | None) -> ModelMetadata:
        key = (model, version, label)
        if key not in self._metadata_cache:
            self._metadata_cache[key] = self.metadata(model, version=version, label=label)
        return self._metadata_cache[key]

    def status(
        self, model: str, *, version: int | None = None, timeout: float | None = None
    ) -> list[VersionStatus]:
        return _statuses(self._call(self._models.GetModelStatus, _status_request(model, version), timeout))

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
        """(label, score) pairs per example, as TF Serving's Classify returns them."""
        request = _examples_request(
            pb.ClassificationRequest, model, examples, context, version, label, signature
        )
        return _classes(self._call(self._prediction.Classify, request, timeout))

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
        request = _examples_request(pb.RegressionRequest, model, examples, context, version, label, signature)
        return _regressions(self._call(self._prediction.Regress, request, timeout))

    def reload_config(self, config: str | Message, *, timeout: float | None = None) -> None:
        """Serve exactly the models of ``config`` (text-format or a ModelServerConfig message)."""
        _check_reload(self._call(self._models.HandleReloadConfigRequest, _reload_request(config), timeout))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGrpcClient(_GrpcBase):
    """``GrpcClient`` on ``grpc.aio``: the same methods, awaited. Use it on one event loop."""

    def __init__(
        self,
        target: str = "localhost:8500",
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(
            target,
            timeout=timeout,
            credentials=credentials,
            options=options,
            max_message_bytes=max_message_bytes,
            aio=True,
        )

    async def _call(self, method: Callable[..., Any], request: Message, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=self._timeout_for(timeout))
        except grpc.RpcError as exc:
            raise _rpc_error(exc) from None

    async def predict(
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
        if isinstance(inputs, np.ndarray):
            metadata = await self._cached_metadata(model, version, label)
            inputs = {_sole_input(metadata, signature): inputs}
        request = _predict_request(model, inputs, version, label, signature, output_filter)
        response = await self._call(self._prediction.Predict, request, timeout)
        outputs: dict[str, np.ndarray] = _wrap(_outputs, response)
        return outputs

    async def metadata(
        self,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> ModelMetadata:
        request = _metadata_request(model, version, label)
        return _metadata(await self._call(self._prediction.GetModelMetadata, request, timeout))

    async def _cached_metadata(self, model: str, version: int | None, label: str | None) -> ModelMetadata:
        key = (model, version, label)
        if key not in self._metadata_cache:
            self._metadata_cache[key] = await self.metadata(model, version=version, label=label)
        return self._metadata_cache[key]

    async def status(
        self, model: str, *, version: int | None = None, timeout: float | None = None
    ) -> list[VersionStatus]:
        return _statuses(
            await self._call(self._models.GetModelStatus, _status_request(model, version), timeout)
        )

    async def classify(
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
        request = _examples_request(
            pb.ClassificationRequest, model, examples, context, version, label, signature
        )
        return _classes(await self._call(self._prediction.Classify, request, timeout))

    async def regress(
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
        request = _examples_request(pb.RegressionRequest, model, examples, context, version, label, signature)
        return _regressions(await self._call(self._prediction.Regress, request, timeout))

    async def reload_config(self, config: str | Message, *, timeout: float | None = None) -> None:
        request = _reload_request(config)
        _check_reload(await self._call(self._models.HandleReloadConfigRequest, request, timeout))

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncGrpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _wrap(parse: Callable[[Any], Any], response: Any) -> Any:
    """Decoding errors of an answer (a ServingError from the codecs) become ClientErrors."""
    try:
        return parse(response)
    except ServingError as exc:
        raise ClientError(exc.code, exc.message) from None


# --- REST ----------------------------------------------------------------------------------------

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
    dtype = DType[info.dtype]
    if dtype != DType.DT_STRING:
        return np.asarray(value, dtype=to_numpy(dtype))
    nested = _strings(value)
    flat = list(_flat(nested))
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(np.shape(nested) if isinstance(nested, list) else ())


def _strings(value: Any) -> Any:
    if isinstance(value, list):
        return [_strings(v) for v in value]
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    return value.encode("utf-8") if isinstance(value, str) else value


def _flat(value: Any) -> Any:
    if isinstance(value, list):
        for item in value:
            yield from _flat(item)
    else:
        yield value


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


class RestClient:
    """TF Serving's REST API from numpy, with ``GrpcClient``'s methods. Thread-safe.

    ``output_filter`` is applied on the client (the REST API has none), and
    ``reload_config`` raises UNIMPLEMENTED: TF Serving reloads over gRPC only.
    """

    def __init__(
        self, url: str = "http://localhost:8501", *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._local = threading.local()
        self._open: list[http.client.HTTPConnection] = []  # every thread's, for close()
        self._lock = threading.Lock()
        self._metadata_cache: dict[tuple[str, int | None, str | None], ModelMetadata] = {}

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self._timeout)
            self._local.conn = conn
            with self._lock:
                self._open.append(conn)
        return conn

    def _request(self, method: str, path: str, doc: Any = None, timeout: float | None = None) -> Any:
        body = None if doc is None else json.dumps(doc).encode()
        for attempt in (1, 2):  # a kept-alive connection the server has closed is retried once
            conn = self._connection()
            conn.timeout = self._timeout if timeout is None else timeout
            if conn.sock is not None:
                conn.sock.settimeout(conn.timeout)
            try:
                conn.request(
                    method, self._prefix + path, body=body, headers={"Content-Type": "application/json"}
                )
                response = conn.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.HTTPException, TimeoutError, OSError) as exc:
                conn.close()
                self._local.conn = None
                with self._lock:
                    if conn in self._open:
                        self._open.remove(conn)
                if attempt == 2 or isinstance(exc, TimeoutError):
                    code = Code.DEADLINE_EXCEEDED if isinstance(exc, TimeoutError) else Code.UNAVAILABLE
                    raise ClientError(code, f"{type(exc).__name__}: {exc}") from None
        answer = json.loads(data) if data else {}
        if response.status != 200:
            message = answer.get("error", data.decode("utf-8", "replace")) if isinstance(answer, dict) else ""
            raise ClientError(_HTTP_CODES.get(response.status, Code.UNKNOWN), message, response.status)
        return answer

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

    def _signature(
        self, model: str, version: int | None, label: str | None, signature: str | None
    ) -> SignatureInfo:
        key = (model, version, label)
        if key not in self._metadata_cache:
            self._metadata_cache[key] = self.metadata(model, version=version, label=label)
        info = self._metadata_cache[key].signatures.get(signature or "serving_default")
        if info is None:
            raise ClientError(
                Code.INVALID_ARGUMENT, f"Model {model} has no signature {signature or 'serving_default'}"
            )
        return info

    def metadata(
        self,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> ModelMetadata:
        return _rest_metadata(
            self._request("GET", _model_path(model, version, label) + "/metadata", None, timeout)
        )

    def status(
        self, model: str, *, version: int | None = None, timeout: float | None = None
    ) -> list[VersionStatus]:
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
        raise ClientError(
            Code.UNIMPLEMENTED, "TF Serving's REST API cannot reload the config; use GrpcClient"
        )

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

    def __init__(
        self, url: str = "http://localhost:8501", *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        self._client = RestClient(url, timeout=timeout)

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

    async def close(self) -> None:
        self._client.close()

    async def __aenter__(self) -> AsyncRestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
