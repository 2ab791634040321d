"""The request's tensors (from the model's metadata or a file) and the first-answer check.

From metadata: each input's shape with ``batch`` for a free first dimension and ``1`` for other free
ones, ``[batch]`` for an input of unknown rank (``shapes`` overrides an input's whole shape), random
values by dtype (floats in [0, 1), small integers, booleans, 8-byte ASCII strings). From a file:
``.npy`` (the model's one input), ``.npz`` (arrays by input name) or ``.json`` (a TF Serving
``{"inputs": ...}``/``{"instances": ...}`` or V2 ``{"inputs": [...]}`` request), cast to the dtypes
the metadata declares.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..codecs.v2.datatypes import numpy_of
from ..dtypes import DType
from .transport import Refused
from .wire import Arrays, Model, Tensor


def generated(model: Model, batch: int, shapes: Mapping[str, tuple[int, ...]], seed: int = 0) -> Arrays:
    if not model.inputs:
        raise Refused("the model's metadata lists no inputs (MLServer's, unless its settings declare them): "
                      "give them with --input=FILE")  # fmt: skip
    rng = np.random.default_rng(seed)
    return {t.name: _random(t, shapes.get(t.name) or _shape(t, batch), rng) for t in model.inputs}


def _shape(tensor: Tensor, batch: int) -> tuple[int, ...]:
    if tensor.shape is None:  # any rank (TF Serving's half_plus_two): a vector of ``batch`` values
        return (batch,)
    return tuple(batch if (d < 0 and i == 0) else (1 if d < 0 else d) for i, d in enumerate(tensor.shape))


def _random(tensor: Tensor, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dtype = tensor.numpy
    if tensor.dtype == DType.DT_STRING:
        words = ["".join(chr(c) for c in rng.integers(97, 123, 8)).encode() for _ in range(int(np.prod(shape)))]
        array = np.empty(len(words), dtype=object)
        array[:] = words
        return array.reshape(shape)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if dtype.kind in "iu":
        return rng.integers(0, 10, shape).astype(dtype)
    if dtype.kind == "c":
        return (rng.random(shape) + 1j * rng.random(shape)).astype(dtype)
    return rng.random(shape).astype(dtype)


def from_file(path: Path, model: Model) -> Arrays:
    """The tensors stored in ``path`` (``.npy``, ``.npz`` or ``.json``), named and typed as the model's inputs."""
    kinds = {t.name: t for t in model.inputs}
    if path.suffix == ".npy":
        if len(model.inputs) != 1:
            raise Refused(f"{path} holds one array; the model takes {sorted(kinds)}: use a .npz")
        return {model.inputs[0].name: np.load(path, allow_pickle=False)}
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    elif path.suffix == ".json":
        arrays = _json_request(json.loads(path.read_text()), model)
    else:
        raise Refused(f"{path}: inputs are read from .npy, .npz or .json files")
    unknown = set(arrays) - set(kinds)
    if unknown:
        raise Refused(f"{path} names {sorted(unknown)}; the model's inputs are {sorted(kinds)}")
    return {name: _cast(value, kinds[name]) for name, value in arrays.items()}


def _cast(value: Any, tensor: Tensor) -> np.ndarray:
    if tensor.dtype == DType.DT_STRING:
        return np.asarray(_strings(value), dtype=object)
    return np.asarray(value, dtype=tensor.numpy)


def _strings(value: Any) -> Any:
    if isinstance(value, list):
        return [_strings(v) for v in value]
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"])
    return value.encode() if isinstance(value, str) else value


def _json_request(doc: Any, model: Model) -> dict[str, Any]:
    """A TF Serving REST (columnar or row) or V2 JSON request's tensors, not yet typed."""
    names = [t.name for t in model.inputs]
    if isinstance(doc.get("inputs"), list):  # V2
        return {
            e["name"]: np.asarray(e["data"], dtype=numpy_of(e["datatype"])).reshape(e["shape"]) for e in doc["inputs"]
        }
    if "inputs" in doc:
        value = doc["inputs"]
        return value if isinstance(value, dict) else {names[0]: value}
    rows = doc.get("instances")
    if not isinstance(rows, list):
        raise Refused(
            'a JSON input file holds a TF Serving request ({"inputs": ...} or {"instances": [...]}) or a V2 one'
        )
    if rows and isinstance(rows[0], dict):
        return {name: [row[name] for row in rows] for name in rows[0]}
    return {names[0]: rows}


def reference(path: Path) -> Arrays:
    """Expected outputs: ``.npz`` by output name, ``.npy`` for a model's one output, or a JSON object of lists."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    if path.suffix == ".npy":
        return {"": np.load(path, allow_pickle=False)}
    return {name: np.asarray(value) for name, value in json.loads(path.read_text()).items()}


def check(answer: Arrays, model: Model, batch: int | None, expected: Arrays | None, tolerance: float) -> None:
    """Refuse an answer whose outputs miss the metadata's names, dtypes or shapes, or differ from ``expected``."""
    if not answer:
        raise Refused("the answer has no outputs")
    for tensor in model.outputs:
        if tensor.name not in answer:
            raise Refused(f"the answer has no output '{tensor.name}' (it has {sorted(answer)})")
        got = answer[tensor.name]
        want = tensor.numpy
        if tensor.dtype != DType.DT_STRING and got.dtype != want:
            raise Refused(f"output '{tensor.name}' is {got.dtype}; the metadata says {want}")
        if tensor.shape is not None and not _fits(got.shape, tensor.shape, batch):
            raise Refused(f"output '{tensor.name}' has shape {list(got.shape)}; the metadata says {list(tensor.shape)}")
    for name, value in (expected or {}).items():
        key = name or model.outputs[0].name
        found = answer.get(key)
        if found is None or found.shape != value.shape:
            raise Refused(f"output '{key}' differs from the reference's shape {list(value.shape)}")
        if found.dtype.kind in "OSU" or value.dtype.kind in "OSU":
            same = bool(np.array_equal(found, value))
        else:
            same = bool(np.allclose(found, value, rtol=tolerance, atol=tolerance))
        if not same:
            raise Refused(f"output '{key}' differs from the reference (tolerance {tolerance})")


def _fits(shape: tuple[int, ...], declared: tuple[int, ...], batch: int | None) -> bool:
    if len(shape) != len(declared):
        return False
    if batch is not None and declared and declared[0] < 0 and shape and shape[0] != batch:
        return False
    return all(d < 0 or d == s for s, d in zip(shape, declared, strict=False))
