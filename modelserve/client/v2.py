"""The Open Inference Protocol (KServe V2) for the clients: numpy in, numpy out. Pure, no I/O.

REST bodies use Triton's binary tensor data extension by default (the JSON
header, then each tensor's bytes; ``codecs/v2/binary.py``) or plain JSON
(``codecs/v2/json.py``); gRPC requests carry every input in
``raw_input_contents`` and read answers from ``raw_output_contents`` (or typed
``contents``; ``codecs/v2/proto.py``). The server's own codecs do the work, so
the client and the server cannot disagree on the layout. BYTES tensors are
object arrays of ``bytes`` (``str`` and unicode arrays are sent UTF-8 encoded),
BF16 is ``ml_dtypes.bfloat16``; FP16 and BF16 travel only as binary data (the
protocol's rule: a JSON request with them is refused by the server).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np
from google.protobuf.message import Message

from ..codecs.v2 import binary
from ..codecs.v2 import json as v2_json
from ..codecs.v2 import proto as v2_proto
from ..codecs.v2.datatypes import v2_name
from ..dtypes import from_numpy
from ..errors import Code, ServingError
from ..protos import pb
from .types import ClientError

Parameters = Mapping[str, bool | int | float | str]
Part = bytes | memoryview


@dataclass(frozen=True)
class V2TensorInfo:
    name: str
    datatype: str  # FP32, BYTES, ...
    shape: tuple[int, ...]  # -1 for a dimension of unknown size


@dataclass(frozen=True)
class V2ModelMetadata:
    name: str
    versions: tuple[str, ...]  # the ready ones
    platform: str  # onnxruntime_onnx, tensorflow_savedmodel, ...
    inputs: tuple[V2TensorInfo, ...]
    outputs: tuple[V2TensorInfo, ...]


@dataclass(frozen=True)
class V2ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True)
class RepositoryModel:
    """One row of the repository index: ``version`` None for a model that has none yet."""

    name: str
    version: str | None
    state: str  # READY, UNAVAILABLE, LOADING
    reason: str


def as_tensor(value: Any) -> tuple[np.ndarray, str]:
    """An input as an array and its V2 datatype; unicode and ``str`` become UTF-8 bytes (BYTES)."""
    array = np.asarray(value)
    if array.dtype.kind in "SU" or (array.dtype.kind == "O"):
        encoded = [item.encode() if isinstance(item, str) else item for item in array.reshape(-1).tolist()]
        array = np.empty(len(encoded), dtype=object)
        array[:] = encoded
        array = array.reshape(np.shape(value))
    try:
        return array, v2_name(from_numpy(array.dtype))
    except ServingError as exc:
        raise ClientError(exc.code, exc.message) from None


def _decoding(call: Any, *args: Any) -> np.ndarray:
    """A codec call on an answer's tensor; what the codec refuses is a ClientError."""
    try:
        array: np.ndarray = call(*args)
    except ServingError as exc:
        raise ClientError(exc.code, exc.message) from None
    return array


# --- REST -------------------------------------------------------------------------------------


def model_path(model: str, version: int | None, label: str | None = None) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    if version is not None:
        return f"{path}/versions/{version}"
    if label is not None:
        return f"{path}/labels/{quote(label, safe='')}"
    return path


def rest_infer_body(
    inputs: Mapping[str, Any],
    outputs: Sequence[str] | None,
    parameters: Parameters | None,
    binary_data: bool,
) -> tuple[list[Part], int | None]:
    """An infer request's body as parts to send in order, and its JSON header's length (None: all JSON)."""
    entries, parts = [], []
    for name, value in inputs.items():
        array, datatype = as_tensor(value)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary_data:
            data = binary.tensor_bytes(array, datatype)
            entry["parameters"] = {"binary_data_size": data.nbytes}
            parts.append(data)
        else:
            entry["data"] = _json_data(name, datatype, array)
        entries.append(entry)
    doc: dict[str, Any] = {"inputs": entries, "parameters": dict(parameters or {})}
    if outputs is not None:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": binary_data}} for n in outputs]
    elif binary_data:
        doc["parameters"]["binary_data_output"] = True
    header = v2_json.dumps(doc)
    return [header, *parts], (len(header) if binary_data else None)


def _json_data(name: str, datatype: str, array: np.ndarray) -> Any:
    if datatype in ("FP16", "BF16"):  # refused here, as the server would: the protocol has no JSON for them
        raise ClientError(
            Code.INVALID_ARGUMENT, f"input '{name}': {datatype} travels only as binary data (binary=True)"
        )
    if datatype == "BYTES":
        try:
            return [item.decode() for item in array.reshape(-1).tolist()]
        except UnicodeDecodeError:
            raise ClientError(
                Code.INVALID_ARGUMENT, f"input '{name}' holds bytes that are not UTF-8: send it as binary data"
            ) from None
    return np.ascontiguousarray(array).reshape(-1)  # orjson writes the flat array itself


def rest_outputs(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    """An infer answer's outputs by name: binary ones as read-only views of ``body``, JSON ones parsed."""
    head, data = binary.split(body, header_length)
    doc = v2_json.loads(head)
    arrays, offset = {}, 0
    for entry in doc.get("outputs", []):
        name, datatype, shape = entry["name"], entry["datatype"], tuple(entry["shape"])
        size = entry.get("parameters", {}).get("binary_data_size")
        if size is None:
            tensor = v2_json.Input(name, datatype, shape, data=entry.get("data"))
            arrays[name] = _decoding(v2_json.decode_data, tensor)
        else:
            arrays[name] = _decoding(binary.decode_tensor, name, datatype, shape, data[offset : offset + size])
            offset += size
    return arrays


def rest_metadata(doc: Mapping[str, Any]) -> V2ModelMetadata:
    def infos(entries: Sequence[Mapping[str, Any]]) -> tuple[V2TensorInfo, ...]:
        return tuple(V2TensorInfo(e["name"], e["datatype"], tuple(e["shape"])) for e in entries)

    return V2ModelMetadata(
        doc["name"],
        tuple(doc.get("versions", ())),
        doc.get("platform", ""),
        infos(doc.get("inputs", ())),
        infos(doc.get("outputs", ())),
    )


def rest_index(rows: Sequence[Mapping[str, Any]]) -> list[RepositoryModel]:
    return [RepositoryModel(r["name"], r.get("version"), r.get("state", ""), r.get("reason", "")) for r in rows]


# --- gRPC -------------------------------------------------------------------------------------


def grpc_infer_request(
    model: str,
    inputs: Mapping[str, Any],
    version: int | None,
    label: str | None,
    outputs: Sequence[str] | None,
    parameters: Parameters | None,
) -> Message:
    """A ModelInferRequest with every input in ``raw_input_contents``."""
    request = pb.ModelInferRequest(model_name=model, model_version="" if version is None else str(version))
    for name, value in inputs.items():
        array, datatype = as_tensor(value)
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(v2_proto.to_raw(array))
    for name in outputs or ():
        request.outputs.add(name=name)
    more = dict(parameters or {})
    if label is not None:
        more["version_label"] = label
    for key, value in more.items():
        _set_parameter(request.parameters[key], key, value)
    return request


def _set_parameter(out: Message, key: str, value: bool | int | float | str) -> None:
    if isinstance(value, bool):
        out.bool_param = value
    elif isinstance(value, int):
        out.int64_param = value
    elif isinstance(value, float):
        out.double_param = value
    elif isinstance(value, str):
        out.string_param = value
    else:
        raise ClientError(Code.INVALID_ARGUMENT, f"parameter '{key}' must be a bool, int, float or str")


def grpc_outputs(response: Message) -> dict[str, np.ndarray]:
    """A ModelInferResponse's outputs by name (raw ones are read-only views of the message's bytes)."""
    raw = response.raw_output_contents
    arrays = {}
    for index, tensor in enumerate(response.outputs):
        name, datatype, shape = tensor.name, tensor.datatype, tuple(tensor.shape)
        if raw:
            arrays[name] = _decoding(v2_proto.from_raw, name, datatype, shape, raw[index])
        else:
            arrays[name] = _decoding(v2_proto.from_contents, name, datatype, shape, tensor.contents)
    return arrays


def grpc_metadata(response: Message) -> V2ModelMetadata:
    def infos(entries: Sequence[Any]) -> tuple[V2TensorInfo, ...]:
        return tuple(V2TensorInfo(e.name, e.datatype, tuple(e.shape)) for e in entries)

    return V2ModelMetadata(
        response.name, tuple(response.versions), response.platform, infos(response.inputs), infos(response.outputs)
    )


def grpc_index(response: Message) -> list[RepositoryModel]:
    return [RepositoryModel(m.name, m.version or None, m.state, m.reason) for m in response.models]
