"""The four protocols the bench speaks: what a model takes, one request's bytes, an answer's tensors.

A ``Wire`` asks the target for the model's metadata (through ``modelserve.client``), encodes one
request once (the load loops replay its bytes), and decodes an answer for the first-answer check.
Protocols are picked by name from ``PROTOCOLS``; REST ones are ``http://`` targets, gRPC ones
``host:port``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np

from ..client import GrpcClient, RestClient
from ..client.protos import outputs_of, predict_request
from ..client.types import signature_info
from ..client.v2 import V2TensorInfo, grpc_infer_request, grpc_outputs, model_path, rest_infer_body, rest_outputs
from ..codecs.v2.datatypes import dtype_of
from ..dtypes import DType, to_numpy
from ..protos import pb

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Tensor:
    """One input or output of the model: ``shape`` has -1 for a free dimension, None for an unknown rank."""

    name: str
    dtype: DType
    shape: tuple[int, ...] | None

    @property
    def numpy(self) -> np.dtype:
        return to_numpy(self.dtype)


@dataclass(frozen=True)
class Model:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


@dataclass(frozen=True)
class Request:
    """One encoded request: REST ``path``, ``headers`` and ``body``; gRPC ``path`` (the method) and ``body``
    (the serialized message)."""

    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Spec:
    """What to call: ``model`` with ``version`` or ``label``, ``signature`` (TF Serving only)."""

    model: str
    version: int | None = None
    label: str | None = None
    signature: str | None = None


def _v2_tensor(info: V2TensorInfo) -> Tensor:
    return Tensor(info.name, dtype_of(info.datatype), info.shape)


def _tfs_model(client: RestClient | GrpcClient, spec: Spec) -> Model:
    metadata = client.metadata(spec.model, version=spec.version, label=spec.label)
    signature = signature_info(metadata, spec.signature)
    return Model(
        tuple(Tensor(alias, DType[i.dtype], i.shape) for alias, i in signature.inputs.items()),
        tuple(Tensor(alias, DType[i.dtype], i.shape) for alias, i in signature.outputs.items()),
    )


def _v2_model(client: RestClient | GrpcClient, spec: Spec) -> Model:
    metadata = client.v2_model_metadata(spec.model, version=spec.version)
    return Model(tuple(map(_v2_tensor, metadata.inputs)), tuple(map(_v2_tensor, metadata.outputs)))


def _tfs_json(value: np.ndarray) -> Any:
    if value.dtype == object or value.dtype.kind in "SU":
        return [_tfs_json(v) if isinstance(v, np.ndarray) else _b64(v) for v in value]
    return value.tolist()


def _b64(value: Any) -> Any:
    if isinstance(value, str):
        value = value.encode()
    return {"b64": base64.b64encode(value).decode("ascii")}


class Wire:
    """One protocol. ``rest``: its target is an HTTP URL; else a gRPC ``host:port``."""

    name = ""
    rest = True

    def model(self, target: str, spec: Spec, timeout: float) -> Model:
        raise NotImplementedError

    def encode(self, spec: Spec, inputs: Arrays) -> Request:
        raise NotImplementedError

    def decode(self, body: bytes, headers: Mapping[str, str], model: Model) -> Arrays:
        """An answer's outputs by name (what the first-answer check compares)."""
        raise NotImplementedError


class TfsRest(Wire):
    name = "tfs-rest"

    def model(self, target: str, spec: Spec, timeout: float) -> Model:
        with RestClient(target, timeout=timeout) as client:
            return _tfs_model(client, spec)

    def encode(self, spec: Spec, inputs: Arrays) -> Request:
        path = f"/v1/models/{quote(spec.model, safe='')}"
        if spec.version is not None:
            path += f"/versions/{spec.version}"
        elif spec.label is not None:
            path += f"/labels/{quote(spec.label, safe='')}"
        doc: dict[str, Any] = {"inputs": {name: _tfs_json(value) for name, value in inputs.items()}}
        if spec.signature:
            doc["signature_name"] = spec.signature
        body = json.dumps(doc, separators=(",", ":")).encode()
        return Request(path + ":predict", body, (("Content-Type", "application/json"),))

    def decode(self, body: bytes, headers: Mapping[str, str], model: Model) -> Arrays:
        outputs = json.loads(body)["outputs"]
        names = [t.name for t in model.outputs]
        if not isinstance(outputs, dict) or set(outputs) - set(names):
            outputs = {names[0]: outputs}  # TF Serving answers one output unnamed
        kinds = {t.name: t for t in model.outputs}
        return {name: _from_json(value, kinds.get(name)) for name, value in outputs.items()}


def _from_json(value: Any, tensor: Tensor | None) -> np.ndarray:
    if tensor is None or tensor.dtype == DType.DT_STRING:
        return np.asarray(value, dtype=object)
    return np.asarray(value, dtype=tensor.numpy)


class TfsGrpc(Wire):
    name = "tfs-grpc"
    rest = False

    def model(self, target: str, spec: Spec, timeout: float) -> Model:
        with GrpcClient(target, timeout=timeout) as client:
            return _tfs_model(client, spec)

    def encode(self, spec: Spec, inputs: Arrays) -> Request:
        request = predict_request(spec.model, inputs, spec.version, spec.label, spec.signature, None)
        return Request("/tensorflow.serving.PredictionService/Predict", request.SerializeToString())

    def decode(self, body: bytes, headers: Mapping[str, str], model: Model) -> Arrays:
        return outputs_of(pb.PredictResponse.FromString(body))


class V2Rest(Wire):
    name = "v2-rest"

    def __init__(self, binary: bool = True) -> None:
        self.binary = binary

    def model(self, target: str, spec: Spec, timeout: float) -> Model:
        with RestClient(target, timeout=timeout) as client:
            return _v2_model(client, spec)

    def encode(self, spec: Spec, inputs: Arrays) -> Request:
        parts, length = rest_infer_body(inputs, None, None, self.binary)
        body = b"".join(bytes(p) for p in parts)
        if length is None:
            headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
        else:
            headers = (("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", str(length)))
        return Request(model_path(spec.model, spec.version, spec.label) + "/infer", body, headers)

    def decode(self, body: bytes, headers: Mapping[str, str], model: Model) -> Arrays:
        length = {k.lower(): v for k, v in headers.items()}.get("inference-header-content-length")
        return rest_outputs(body, None if length is None else int(length))


class V2Grpc(Wire):
    name = "v2-grpc"
    rest = False

    def model(self, target: str, spec: Spec, timeout: float) -> Model:
        with GrpcClient(target, timeout=timeout) as client:
            return _v2_model(client, spec)

    def encode(self, spec: Spec, inputs: Arrays) -> Request:
        request = grpc_infer_request(spec.model, inputs, spec.version, spec.label, None, None)
        return Request("/inference.GRPCInferenceService/ModelInfer", request.SerializeToString())

    def decode(self, body: bytes, headers: Mapping[str, str], model: Model) -> Arrays:
        return grpc_outputs(pb.ModelInferResponse.FromString(body))


def wire(protocol: str, v2_json: bool = False) -> Wire:
    """The protocol named ``protocol`` (``PROTOCOLS``); ``v2_json``: V2 REST as JSON, not binary tensors."""
    if protocol == "v2-rest":
        return V2Rest(binary=not v2_json)
    return PROTOCOLS[protocol]()


PROTOCOLS: dict[str, type[Wire]] = {"tfs-rest": TfsRest, "tfs-grpc": TfsGrpc, "v2-rest": V2Rest, "v2-grpc": V2Grpc}
