"""Bodies without tensors: errors, model status, model metadata."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from ...dtypes import DType
from ...signatures import Signature, TensorSpec


def encode_error(message: str) -> bytes:
    """``{"error": message}``; lone surrogates are replaced rather than failing."""
    try:
        return orjson.dumps({"error": message})
    except orjson.JSONEncodeError:
        clean = message.encode("utf-8", "replace").decode("utf-8")
        return orjson.dumps({"error": clean})


def encode_status(versions: Sequence[tuple[int, str, str, str]]) -> bytes:
    """GetModelStatusResponse as protobuf JSON; rows are (version, state, error_code, message)."""
    return orjson.dumps(
        {
            "model_version_status": [
                {"version": str(version), "state": state, "status": {"error_code": code, "error_message": message}}
                for version, state, code, message in versions
            ]
        }
    )


def encode_instances(versions: Sequence[tuple[int, str, Sequence[Mapping[str, Any]]]]) -> bytes:
    """modelserve's ``/v1/models/NAME/instances``: per version, where its instances run (docs/gpu.md).

    Each instance is a mapping of InstanceStatus's fields (``dataclasses.asdict``).
    """
    return orjson.dumps(
        {
            "model_version_instances": [
                {"version": str(version), "state": state, "instances": [dict(i) for i in instances]}
                for version, state, instances in versions
            ]
        }
    )


def encode_metadata(name: str, version: int, signatures: Mapping[str, Signature]) -> bytes:
    """GetModelMetadataResponse as TF Serving's REST layer prints it (int64s as strings)."""
    return orjson.dumps(
        {
            "model_spec": {"name": name, "signature_name": "", "version": str(version)},
            "metadata": {
                "signature_def": {
                    "signature_def": {key: _signature_json(signature) for key, signature in signatures.items()}
                }
            },
        }
    )


def _signature_json(signature: Signature) -> dict[str, Any]:
    return {
        "inputs": {alias: _tensor_info_json(spec) for alias, spec in signature.inputs.items()},
        "outputs": {alias: _tensor_info_json(spec) for alias, spec in signature.outputs.items()},
        "method_name": signature.method_name,
        "defaults": {},  # TF Serving stopped returning defaults in 2.19
    }


def _tensor_info_json(spec: TensorSpec) -> dict[str, Any]:
    # Field order of the golden file: plain fields first, then the `encoding` oneof.
    if spec.shape is None:
        shape: dict[str, Any] = {"dim": [], "unknown_rank": True}
    else:
        shape = {"dim": [{"size": str(size), "name": ""} for size in spec.shape], "unknown_rank": False}
    return {"dtype": DType(spec.dtype).name, "tensor_shape": shape, "name": spec.name}
