"""The signatures of a TF Lite model, and where each alias lives in the interpreter.

A ``.tflite`` file can say what it offers in two ways, and some say nothing:

1. SignatureDef protos in the ``signature_defs_metadata`` metadata entry (a
   FlexBuffer map of key -> serialized ``SignatureDef``), written by TF Lite's
   ``signature_def_utils.set_signature_defs``. This is the only kind TF
   Serving reads, so it wins when present: aliases, dtypes, shapes and method
   names are the protos' own; tensor names are matched against the
   interpreter's inputs and outputs, dropping a ``:0`` suffix the converter
   dropped too.
2. The flatbuffer's own SignatureDefs (TF2's converter writes them), read by
   LiteRT's signature runners: aliases are the signature's keys.
3. Neither: one ``serving_default`` is synthesised from the interpreter's
   inputs and outputs, as TF Serving does, each aliased by its tensor name
   without a ``:N`` suffix.

For 2 and 3 shapes come from the tensors' shape signatures (-1 where the
converter kept a size unknown), with dim 0 always -1: inputs are resized to
the shape each request brings, so a model converted with a fixed batch serves
any batch, as under TF Serving.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dtypes import DType, from_numpy
from ..errors import FailedPrecondition, ServingError
from ..signatures import DEFAULT_SIGNATURE, PREDICT_METHOD, Signature, TensorSpec

log = logging.getLogger(__name__)

SIGNATURE_DEFS_METADATA = "signature_defs_metadata"


@dataclass(frozen=True)
class Binding:
    """Where one signature's aliases live in the interpreter.

    ``runner`` is the key of the model's own SignatureDef, run through LiteRT's
    signature runner (which resizes and allocates itself); None means the
    aliases map to tensor indices of the primary subgraph.
    """

    inputs: Mapping[str, int]
    outputs: Mapping[str, int]
    runner: str | None = None


def read(interpreter: Any, model: bytes) -> tuple[dict[str, Signature], dict[str, Binding]]:
    """The signatures of ``interpreter`` (built from ``model``) and how to run each."""
    defs = signature_defs(model)
    if defs:
        return from_signature_defs(defs, interpreter)
    if interpreter.get_signature_list():
        return from_runners(interpreter)
    log.warning("No SignatureDef found in the TF Lite model; serving_default is built from its inputs and outputs")
    return synthesised(interpreter)


# ---- 1. SignatureDef protos in the metadata ------------------------------------------------------


def signature_defs(model: bytes) -> dict[str, Any]:
    """The SignatureDef protos stored in the model's metadata, by key; empty when it has none."""
    raw = _metadata(model, SIGNATURE_DEFS_METADATA)
    if raw is None:
        return {}
    from flatbuffers import flexbuffers

    from ..protos import pb

    try:
        entries = flexbuffers.GetRoot(raw).AsMap
        found: dict[str, Any] = {}
        for key in entries.Keys:
            value = entries[key.AsKey]
            found[key.AsKey] = pb.SignatureDef.FromString(value.AsBlob if value.IsBlob else value.AsStringBytes)
        return found
    except Exception as exc:  # a malformed buffer fails in flexbuffers or protobuf, with their own types
        raise FailedPrecondition(f"Invalid SignatureDefs found in TfLite model: {exc}") from exc


def _metadata(model: bytes, name: str) -> bytes | None:
    """The bytes of the metadata entry ``name`` of a ``.tflite`` flatbuffer, or None."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(model, 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if entry.Name() != name.encode():
            continue
        buffer = root.Buffers(entry.Buffer())
        if buffer.Offset() > 1:  # models over 2 GB keep buffers after the flatbuffer, by offset
            return model[buffer.Offset() : buffer.Offset() + buffer.Size()]
        return bytes(buffer.DataAsNumpy().tobytes()) if buffer.DataLength() else b""
    return None


def from_signature_defs(defs: Mapping[str, Any], interpreter: Any) -> tuple[dict[str, Signature], dict[str, Binding]]:
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    outputs = {d["name"]: d for d in interpreter.get_output_details()}
    signatures: dict[str, Signature] = {}
    bindings: dict[str, Binding] = {}
    for key, definition in sorted(defs.items()):
        ins = {a: _bind(key, "input", a, info, inputs) for a, info in sorted(definition.inputs.items())}
        outs = {a: _bind(key, "output", a, info, outputs) for a, info in sorted(definition.outputs.items())}
        signatures[key] = Signature(
            inputs={a: spec for a, (spec, _) in ins.items()},
            outputs={a: spec for a, (spec, _) in outs.items()},
            method_name=definition.method_name or PREDICT_METHOD,
        )
        bindings[key] = Binding({a: i for a, (_, i) in ins.items()}, {a: i for a, (_, i) in outs.items()})
    return signatures, bindings


def _bind(key: str, kind: str, alias: str, info: Any, tensors: Mapping[str, Any]) -> tuple[TensorSpec, int]:
    """A SignatureDef's TensorInfo as a spec and the index of the tensor it names."""
    name = info.name if info.name in tensors else info.name.split(":")[0]
    detail = tensors.get(name)
    if detail is None:
        raise FailedPrecondition(
            f"Signature {key} {kind} {alias} references an unknown tensor '{info.name}'; "
            f"the model's {kind}s are {sorted(tensors)}"
        )
    dtype = DType(info.dtype)
    actual = _dtype(detail)
    if dtype != actual:
        raise FailedPrecondition(
            f"Signature {key} {kind} {alias} says {dtype.name} but tensor '{name}' is {actual.name}"
        )
    shape = None if info.tensor_shape.unknown_rank else tuple(int(d.size) for d in info.tensor_shape.dim)
    return TensorSpec(name, dtype, shape), int(detail["index"])


# ---- 2. the flatbuffer's own SignatureDefs ----------------------------------------------------------


def from_runners(interpreter: Any) -> tuple[dict[str, Signature], dict[str, Binding]]:
    signatures: dict[str, Signature] = {}
    bindings: dict[str, Binding] = {}
    for key in sorted(interpreter.get_signature_list()):
        runner = interpreter.get_signature_runner(key)
        ins = runner.get_input_details()
        outs = runner.get_output_details()
        signatures[key] = Signature(
            inputs={a: _spec(d) for a, d in sorted(ins.items())},
            outputs={a: _spec(d) for a, d in sorted(outs.items())},
        )
        bindings[key] = Binding(
            {a: int(d["index"]) for a, d in ins.items()}, {a: int(d["index"]) for a, d in outs.items()}, runner=key
        )
    return signatures, bindings


# ---- 3. none: TF Serving's synthesised serving_default -----------------------------------------------


def synthesised(interpreter: Any) -> tuple[dict[str, Signature], dict[str, Binding]]:
    inputs = _by_alias(interpreter.get_input_details(), "input")
    outputs = _by_alias(interpreter.get_output_details(), "output")
    signature = Signature(
        inputs={a: _spec(d) for a, d in sorted(inputs.items())},
        outputs={a: _spec(d) for a, d in sorted(outputs.items())},
    )
    binding = Binding({a: int(d["index"]) for a, d in inputs.items()}, {a: int(d["index"]) for a, d in outputs.items()})
    return {DEFAULT_SIGNATURE: signature}, {DEFAULT_SIGNATURE: binding}


def _by_alias(details: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for detail in details:
        alias = str(detail["name"]).split(":")[0]
        if alias in found:
            raise FailedPrecondition(
                f"TF Lite {kind}s '{found[alias]['name']}' and '{detail['name']}' would both be aliased "
                f"'{alias}'; give the model a SignatureDef"
            )
        found[alias] = detail
    return found


def _spec(detail: Mapping[str, Any]) -> TensorSpec:
    dims = [int(d) for d in detail["shape_signature"]]
    # The converter records an output size it cannot know as 0; a tensor with a real 0-sized
    # dimension is not something a signature describes.
    shape = tuple(-1 if i == 0 or d <= 0 else d for i, d in enumerate(dims))
    return TensorSpec(str(detail["name"]), _dtype(detail), shape)


def _dtype(detail: Mapping[str, Any]) -> DType:
    try:
        return from_numpy(np.dtype(detail["dtype"]))
    except (ServingError, TypeError) as exc:
        raise FailedPrecondition(f"TF Lite tensor '{detail['name']}' has a type that cannot be served: {exc}") from exc
