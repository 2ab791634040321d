"""TF Serving request and answer messages for the gRPC clients: numpy in, dataclasses out. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import Message

from ..codecs.tensor_proto import shape_from_proto
from ..codecs.tensor_util import make_ndarray, make_tensor_proto
from ..dtypes import DType
from ..errors import Code, ServingError
from ..protos import parse_text, pb
from .types import (
    Classes,
    ClientError,
    Example,
    ModelMetadata,
    SignatureInfo,
    TensorInfo,
    VersionStatus,
    signature_info,
)


def fill_spec(out: Message, model: str, version: int | None, label: str | None, signature: str | None) -> None:
    out.name = model
    if version is not None:
        out.version.value = version
    if label is not None:
        out.version_label = label
    if signature:
        out.signature_name = signature


def predict_request(
    model: str,
    inputs: Mapping[str, Any],
    version: int | None,
    label: str | None,
    signature: str | None,
    output_filter: Sequence[str] | None,
) -> Message:
    request = pb.PredictRequest()
    fill_spec(request.model_spec, model, version, label, signature)
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(make_tensor_proto(value))
    request.output_filter.extend(output_filter or ())
    return request


def outputs_of(response: Message) -> dict[str, np.ndarray]:
    """A PredictResponse's tensors; one the codecs cannot read is a ClientError."""
    try:
        return {alias: make_ndarray(tensor) for alias, tensor in response.outputs.items()}
    except ServingError as exc:
        raise ClientError(exc.code, exc.message) from None


def metadata_request(model: str, version: int | None, label: str | None) -> Message:
    request = pb.GetModelMetadataRequest()
    fill_spec(request.model_spec, model, version, label, None)
    request.metadata_field.append("signature_def")
    return request


def metadata_of(response: Message) -> ModelMetadata:
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


def status_request(model: str, version: int | None) -> Message:
    request = pb.GetModelStatusRequest()
    fill_spec(request.model_spec, model, version, None, None)
    return request


def statuses_of(response: Message) -> list[VersionStatus]:
    state = pb.ModelVersionStatus.State
    return [
        VersionStatus(s.version, state.Name(s.state), Code(s.status.error_code).name, s.status.error_message)
        for s in response.model_version_status
    ]


def _example_proto(features: Example, out: Message) -> None:
    for name, value in features.items():
        values = value.reshape(-1).tolist() if isinstance(value, (np.ndarray, np.generic)) else value
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


def examples_request(
    cls: type[Message],
    model: str,
    examples: Sequence[Example],
    context: Example | None,
    version: int | None,
    label: str | None,
    signature: str | None,
) -> Message:
    request = cls()
    fill_spec(request.model_spec, model, version, label, signature)
    if context is None:
        target = request.input.example_list.examples
    else:
        _example_proto(context, request.input.example_list_with_context.context)
        target = request.input.example_list_with_context.examples
    for features in examples:
        _example_proto(features, target.add())
    return request


def classes_of(response: Message) -> list[Classes]:
    return [[(c.label, c.score) for c in item.classes] for item in response.result.classifications]


def regressions_of(response: Message) -> list[float]:
    return [r.value for r in response.result.regressions]


def reload_request(config: str | Message) -> Message:
    request = pb.ReloadConfigRequest()
    if isinstance(config, str):
        parse_text(config, request.config)
    else:
        request.config.CopyFrom(config)
    return request


def check_reload(response: Message) -> None:
    if response.status.error_code:
        raise ClientError(Code(response.status.error_code), response.status.error_message)


def rpc_error(exc: grpc.RpcError) -> ClientError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    number = code.value[0] if code is not None else Code.UNKNOWN
    return ClientError(Code(number), details or "")


def sole_input(metadata: ModelMetadata, signature: str | None) -> str:
    info = signature_info(metadata, signature)
    if len(info.inputs) != 1:
        raise ClientError(
            Code.INVALID_ARGUMENT,
            f"A bare array needs a signature with one input; this one has {sorted(info.inputs)}",
        )
    return next(iter(info.inputs))


def channel_options(max_message_bytes: int, extra: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        *extra,
    ]
