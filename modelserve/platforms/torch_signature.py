"""What a PyTorch program serves: its signature, from the program and from ``signature.json``.

An ExportedProgram knows its input names, dtypes and shapes (a dimension
exported as dynamic is -1) and names dict outputs; ``signature.json`` (see
docs/platforms.md) may rename them and must agree with it. A TorchScript
program knows only its argument names, so it needs the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..dtypes import DType, from_numpy, tf_name
from ..errors import FailedPrecondition
from ..signatures import Signature, TensorSpec

SIGNATURE_FILE = "signature.json"

TORCH_DTYPES: dict[torch.dtype, DType] = {
    torch.float32: DType.DT_FLOAT,
    torch.float64: DType.DT_DOUBLE,
    torch.float16: DType.DT_HALF,
    torch.bfloat16: DType.DT_BFLOAT16,
    torch.int8: DType.DT_INT8,
    torch.int16: DType.DT_INT16,
    torch.int32: DType.DT_INT32,
    torch.int64: DType.DT_INT64,
    torch.uint8: DType.DT_UINT8,
    torch.uint16: DType.DT_UINT16,
    torch.uint32: DType.DT_UINT32,
    torch.uint64: DType.DT_UINT64,
    torch.bool: DType.DT_BOOL,
    torch.complex64: DType.DT_COMPLEX64,
    torch.complex128: DType.DT_COMPLEX128,
}
_BY_DTYPE = {v: k for k, v in TORCH_DTYPES.items()}

Specs = dict[str, TensorSpec]


# ---- signature.json ------------------------------------------------------------------------


def parse_dtype(text: str) -> DType:
    """``DT_FLOAT``, ``float`` (TF's name) or ``float32`` (numpy's name)."""
    if text.upper() in DType.__members__:
        return DType[text.upper()]
    for dtype in DType:
        if tf_name(dtype) == text:
            return dtype
    try:
        return from_numpy(np.dtype(text))
    except TypeError:
        raise FailedPrecondition(f"Unknown dtype {text!r} in {SIGNATURE_FILE}") from None


def _file_spec(entry: Any, where: str) -> tuple[str, TensorSpec]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or "dtype" not in entry:
        raise FailedPrecondition(f'{SIGNATURE_FILE}: each of {where} needs "name" and "dtype", got {entry!r}')
    shape = entry.get("shape")
    if shape is not None and not (isinstance(shape, list) and all(isinstance(d, int) for d in shape)):
        raise FailedPrecondition(f"{SIGNATURE_FILE}: shape of {entry['name']!r} must be a list of ints")
    name: str = entry["name"]
    return name, TensorSpec(name, parse_dtype(str(entry["dtype"])), None if shape is None else tuple(shape))


def read_signature_file(path: Path) -> tuple[Specs, Specs] | None:
    """Inputs and outputs of ``signature.json`` in file order, or None when there is no file."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(f"Cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not isinstance(doc.get("outputs"), list):
        raise FailedPrecondition(f'{path}: expected {{"inputs": [...], "outputs": [...]}}')
    inputs = dict(_file_spec(e, "inputs") for e in doc["inputs"])
    outputs = dict(_file_spec(e, "outputs") for e in doc["outputs"])
    return inputs, outputs


# ---- what the program itself says ----------------------------------------------------------


def _meta_spec(name: str, value: Any) -> TensorSpec:
    dtype = TORCH_DTYPES.get(value.dtype)
    if dtype is None:
        raise FailedPrecondition(f"Tensor {name!r} has dtype {value.dtype}, which cannot be served")
    shape = tuple(d if isinstance(d, int) else -1 for d in value.shape)
    return TensorSpec(name, dtype, shape)


def exported_signature(program: torch.export.ExportedProgram) -> tuple[Specs, Specs]:
    """Inputs (placeholder names = forward's argument names) and outputs of an ExportedProgram."""
    nodes = {n.name: n for n in program.graph.nodes}
    inputs = {name: _meta_spec(name, nodes[name].meta["val"]) for name in program.graph_signature.user_inputs}
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    user_count = len(program.graph_signature.user_outputs)
    values = [a.meta["val"] for a in output_node.args[0][-user_count:]] if user_count else []
    spec = program.call_spec.out_spec
    names = output_names(len(values), spec.context if spec is not None and spec.type is dict else None)
    return inputs, {n: _meta_spec(n, v) for n, v in zip(names, values, strict=True)}


def output_names(count: int, keys: Sequence[str] | None) -> list[str]:
    if keys is not None and len(keys) == count:
        return [str(k) for k in keys]
    return [f"output_{i}" for i in range(count)]


def merge(
    program: tuple[Specs, Specs],
    file: tuple[Specs, Specs] | None,
) -> Signature:
    """The program's signature renamed by the file, which must agree with it where both say something."""
    if file is None:
        return Signature(inputs=program[0], outputs=program[1])
    for kind, found, declared in (("inputs", program[0], file[0]), ("outputs", program[1], file[1])):
        if len(found) != len(declared):
            raise FailedPrecondition(
                f"{SIGNATURE_FILE} lists {len(declared)} {kind} but the program has {len(found)}: {', '.join(found)}"
            )
        for ours, theirs in zip(found.values(), declared.values(), strict=True):
            if ours.dtype != theirs.dtype:
                raise FailedPrecondition(
                    f"{SIGNATURE_FILE} says {theirs.name!r} is {tf_name(theirs.dtype)} but the program "
                    f"has {tf_name(ours.dtype)}"
                )
    return Signature(inputs=_renamed(program[0], file[0]), outputs=_renamed(program[1], file[1]))


def _renamed(found: Mapping[str, TensorSpec], declared: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
    return {
        alias: TensorSpec(ours.name, ours.dtype, theirs.shape if theirs.shape is not None else ours.shape)
        for (alias, theirs), ours in zip(declared.items(), found.values(), strict=True)
    }


def check_no_strings(inputs: Mapping[str, TensorSpec], outputs: Mapping[str, TensorSpec]) -> None:
    for kind, specs in (("input", inputs), ("output", outputs)):
        for alias, spec in specs.items():
            if spec.dtype == DType.DT_STRING:
                raise FailedPrecondition(
                    f"PyTorch has no string tensors: {kind} {alias!r} cannot be DT_STRING "
                    "(serve string models as ONNX or TensorFlow)"
                )
            if spec.dtype not in _BY_DTYPE:
                raise FailedPrecondition(f"{kind} {alias!r}: torch has no {tf_name(spec.dtype)} tensors")
