"""Classify, Regress and MultiInference on ``tf.Example``s: TF Serving's semantics, protocol-neutral.

A front end turns its wire form into serialized ``tf.Example`` bytes (the
context, when there is one, already prepended to each example: protobuf
merge semantics, as TF Serving does) and asks for a ``Plan``: the inputs to
feed one signature, the outputs to fetch, and how to read them back as
classes/scores or regression values. ``ServingCore`` runs plans.

Two ways to feed a signature (docs/grpc.md):

* **TF Serving's way**: the signature has a DT_STRING input keyed ``inputs``;
  it gets the 1-D tensor of serialized examples and parses them itself.
  TF's signature checks and messages apply unchanged.
* **By feature name** (ONNX and other models with no such input): each
  signature input is built from the example feature of the same name,
  stacked along a new batch dimension. Outputs are read from ``classes`` /
  ``scores`` (classify) or ``outputs`` (regress) as in TF; a signature with
  one output of another name uses that output as ``scores`` / ``outputs``.

Pure functions, no I/O; thread-safe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from google.protobuf.message import DecodeError, Message

from ..budget import UNMETERED, Account, string_tensor_bytes
from ..dtypes import DType, from_numpy, tf_name, to_numpy
from ..errors import InvalidArgument, Unimplemented
from ..protos import pb
from ..signatures import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD, Signature, TensorSpec

Kind = Literal["classify", "regress"]
# One example's classes: (label, score) pairs; label "" without a classes output, score 0 without scores.
Classes = list[tuple[str, float]]
Result = list[Classes] | list[float]

METHODS: dict[str, Kind] = {CLASSIFY_METHOD: "classify", REGRESS_METHOD: "regress"}
_INPUTS, _CLASSES, _SCORES, _OUTPUTS = "inputs", "classes", "scores", "outputs"


@dataclass(frozen=True)
class Plan:
    """One signature run for a classify or regress task, and how to read its outputs."""

    kind: Kind
    signature_name: str
    inputs: dict[str, np.ndarray]
    output_filter: tuple[str, ...]
    interpret: Callable[[Mapping[str, np.ndarray]], Result]


# --- building the examples ------------------------------------------------------------------


def serialized_examples(
    examples: Sequence[bytes], context: bytes | None = None, account: Account = UNMETERED
) -> list[bytes]:
    """The examples as TF feeds them: ``context ++ example`` when there is a context. The context is
    copied into every example (one big context and many empty examples amplify), and the list is fed
    as a DT_STRING tensor: charged to ``account`` first."""
    payload = sum(map(len, examples)) + len(context or b"") * len(examples)
    account.charge(string_tensor_bytes(len(examples), payload), f"hold {len(examples)} serialized examples")
    if context is None:
        return list(examples)
    return [context + example for example in examples]


def from_input(message: Message, account: Account = UNMETERED) -> list[bytes]:
    """Serialized examples of a ``tensorflow.serving.Input`` (ExampleList or ExampleListWithContext)."""
    kind = message.WhichOneof("kind")
    if kind == "example_list":
        return serialized_examples([e.SerializeToString() for e in message.example_list.examples], None, account)
    if kind == "example_list_with_context":
        listed = message.example_list_with_context
        examples = [e.SerializeToString() for e in listed.examples]
        return serialized_examples(examples, listed.context.SerializeToString(), account)
    return []  # planning answers "Input is empty." after the signature checks, as TF


def example_bytes(features: Mapping[str, Any]) -> bytes:
    """A serialized tf.Example from ``{name: Feature-like}`` (``kind`` in bytes/float/int64, ``values``)."""
    example = pb.Example()
    for name, feature in features.items():
        entry = example.features.feature[name]
        if feature.kind is None:
            continue  # TF keeps a Feature with no kind set
        getattr(entry, f"{feature.kind}_list").value.extend(feature.values)
    data: bytes = example.SerializeToString()
    return data


# --- planning -------------------------------------------------------------------------------


def find_signature(signatures: Mapping[str, Signature], signature_name: str) -> tuple[str, Signature]:
    name = signature_name or DEFAULT_SIGNATURE
    signature = signatures.get(name)
    if signature is None:
        raise InvalidArgument(f"No signature was found with the name: {name}")
    return name, signature


def plan(kind: Kind, signatures: Mapping[str, Signature], signature_name: str, examples: Sequence[bytes]) -> Plan:
    """How to run a classify/regress request; InvalidArgument with TF's messages when it cannot run."""
    name, signature = find_signature(signatures, signature_name)
    planner = _plan_classify if kind == "classify" else _plan_regress
    return planner(name, signature, list(examples))


def takes_serialized(signature: Signature) -> bool:
    """TF Serving's way: a DT_STRING input keyed ``inputs`` receives the serialized examples."""
    spec = signature.inputs.get(_INPUTS)
    return spec is not None and spec.dtype == DType.DT_STRING


def _plan_classify(name: str, signature: Signature, examples: list[bytes]) -> Plan:
    if takes_serialized(signature):
        _check_tf_inputs(signature, "classification")
        if len(signature.outputs) not in (1, 2):
            raise InvalidArgument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
        outputs = [a for a in (_CLASSES, _SCORES) if a in signature.outputs]
    else:
        outputs = [a for a in (_CLASSES, _SCORES) if a in signature.outputs] or _sole_output(signature)
    if not outputs:
        raise InvalidArgument(
            'Expected classification signature outputs to contain at least one of "classes" or "scores". '
            f"Signature was: {describe(signature)}"
        )
    classes = _CLASSES if _CLASSES in outputs else None
    scores = next((a for a in outputs if a != _CLASSES), None)
    count = len(examples)
    return Plan(
        "classify",
        name,
        _feed(signature, examples),
        tuple(outputs),
        lambda out: _classifications(out, classes, scores, count),
    )


def _plan_regress(name: str, signature: Signature, examples: list[bytes]) -> Plan:
    if takes_serialized(signature):
        _check_tf_inputs(signature, "regression")
        if len(signature.outputs) != 1:
            raise InvalidArgument("Expected one output Tensor.")
        outputs = [_OUTPUTS] if _OUTPUTS in signature.outputs else []
    else:
        outputs = [_OUTPUTS] if _OUTPUTS in signature.outputs else _sole_output(signature)
    if not outputs:
        raise InvalidArgument(f"No regression outputs found in SignatureDef: {describe(signature)}")
    count = len(examples)
    return Plan(
        "regress",
        name,
        _feed(signature, examples),
        (outputs[0],),
        lambda out: _regressions(out[outputs[0]], count),
    )


def _check_tf_inputs(signature: Signature, what: str) -> None:
    if len(signature.inputs) != 1:
        raise InvalidArgument("Expected one input Tensor.")
    if _INPUTS not in signature.inputs:
        raise InvalidArgument(f"No {what} inputs found in SignatureDef: {describe(signature)}")


def _sole_output(signature: Signature) -> list[str]:
    return list(signature.outputs) if len(signature.outputs) == 1 else []


def check_multi_inference(tasks: Sequence[tuple[str, str, str]]) -> None:
    """TF's MultiInference checks on (model name, signature name, method name) per task."""
    model = ""
    seen: set[str] = set()
    for name, signature_name, method in tasks:
        if not name:
            raise InvalidArgument("Found ModelSpec with an empty model name.")
        if model and name != model:
            raise InvalidArgument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        model = name
        signature = signature_name or DEFAULT_SIGNATURE
        if signature in seen:
            raise InvalidArgument(f"Duplicate evaluation of signature: {signature}")
        seen.add(signature)
        if method not in METHODS:
            raise Unimplemented(f"Unsupported signature method_name: {method}")


def multi_plans(
    signatures: Mapping[str, Signature], tasks: Sequence[tuple[str, str]], examples: Sequence[bytes]
) -> list[Plan]:
    """Plans for (signature name, method name) tasks that ``check_multi_inference`` accepted."""
    plans = []
    for signature_name, method in tasks:
        name = signature_name or DEFAULT_SIGNATURE
        if name not in signatures:
            raise InvalidArgument(f"Requested signature not found in model graph: {name}")
        plans.append(plan(METHODS[method], signatures, name, examples))
    fed = {tuple(sorted(p.inputs)) for p in plans}
    if len(fed) > 1:
        raise InvalidArgument("Input tensor must be the same for all Signatures.")
    return plans


# --- feeding --------------------------------------------------------------------------------


def _feed(signature: Signature, examples: list[bytes]) -> dict[str, np.ndarray]:
    if not examples:
        raise InvalidArgument("Input is empty.")
    if takes_serialized(signature):
        batch = np.empty(len(examples), dtype=object)
        batch[:] = examples
        return {_INPUTS: batch}
    parsed = [_parse_example(data) for data in examples]
    return {alias: _feature_tensor(alias, spec, parsed) for alias, spec in signature.inputs.items()}


def _parse_example(data: bytes) -> Message:
    try:
        return pb.Example.FromString(data)
    except DecodeError:
        raise InvalidArgument(f"Could not parse example input, value: '{data[:64]!r}'") from None


_FEATURE_FEEDS = {"float_list": "f", "int64_list": "biuf", "bytes_list": "O"}


def _feature_tensor(alias: str, spec: TensorSpec, examples: list[Message]) -> np.ndarray:
    """Input ``alias`` from the feature of that name in every example, stacked on dim 0."""
    dtype = to_numpy(spec.dtype)
    rows = []
    for index, example in enumerate(examples):
        feature = example.features.feature.get(alias)
        if feature is None:
            raise InvalidArgument(
                f"Example {index} has no feature {alias!r}, which input {alias!r} of the signature needs"
            )
        rows.append(_feature_values(alias, spec.dtype, dtype, feature))
    counts = {len(row) for row in rows}
    if len(counts) != 1:
        raise InvalidArgument(f"Feature {alias!r} has different numbers of values across examples: {sorted(counts)}")
    shape = _example_shape(alias, spec, counts.pop())
    array = np.empty((len(rows), *shape), dtype=dtype)
    strings = spec.dtype == DType.DT_STRING
    for i, row in enumerate(rows):
        array[i] = _object_row(row, shape) if strings else np.asarray(row, dtype=dtype).reshape(shape)
    return array


def _object_row(values: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    row = np.empty(len(values), dtype=object)
    row[:] = values
    return row.reshape(shape)


def _feature_values(alias: str, dtype: DType, np_dtype: np.dtype, feature: Message) -> list[Any]:
    kind = feature.WhichOneof("kind")
    if kind is None:
        return []
    accepted = _FEATURE_FEEDS[kind]
    np_kind = "f" if dtype == DType.DT_BFLOAT16 else np_dtype.kind
    if np_kind not in accepted:
        raise InvalidArgument(
            f"Feature {alias!r} is a {kind}, which cannot feed input {alias!r} of type {tf_name(dtype)}"
        )
    return list(getattr(feature, kind).value)


def _example_shape(alias: str, spec: TensorSpec, count: int) -> tuple[int, ...]:
    """One example's part of input ``alias``: the signature's shape without dim 0."""
    if spec.shape is None or not spec.shape:
        return (count,)
    dims = spec.shape[1:]
    known = math.prod(d for d in dims if d >= 0)
    unknown = [i for i, d in enumerate(dims) if d < 0]
    if not unknown and known == count:
        return tuple(dims)
    if len(unknown) == 1 and known and count % known == 0:
        return tuple(count // known if d < 0 else d for d in dims)
    raise InvalidArgument(
        f"Feature {alias!r} has {count} values per example, which does not fit input {alias!r} "
        f"of shape {_shape(spec.shape)}"
    )


# --- reading the outputs --------------------------------------------------------------------


def _classifications(
    outputs: Mapping[str, np.ndarray], classes_alias: str | None, scores_alias: str | None, count: int
) -> list[Classes]:
    classes = outputs[classes_alias] if classes_alias else None
    scores = outputs[scores_alias] if scores_alias else None
    if classes is not None:
        _check_matrix(classes, "classes", DType.DT_STRING, count)
    if scores is not None:
        _check_matrix(scores, "scores", DType.DT_FLOAT, count)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InvalidArgument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    width = (classes if classes is not None else scores).shape[1]  # type: ignore[union-attr]
    labels = [[_label(v) for v in row] for row in classes.tolist()] if classes is not None else None
    values = scores.tolist() if scores is not None else None
    return [
        [(labels[i][c] if labels else "", values[i][c] if values else 0.0) for c in range(width)] for i in range(count)
    ]


def _check_matrix(array: np.ndarray, what: str, dtype: DType, count: int) -> None:
    if array.ndim != 2:
        raise InvalidArgument(f"Expected Tensor shape: [batch_size num_classes] but got {_shape(array.shape)}")
    got = _dtype_of(array)
    if got != dtype.name:
        raise InvalidArgument(f"Expected {what} Tensor of {dtype.name}. Got: {got}")
    if array.shape[0] != count:
        raise InvalidArgument(f"Expected {what} output batch size of {count}. Got: {array.shape[0]}")


def _regressions(output: np.ndarray, count: int) -> list[float]:
    if not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
        raise InvalidArgument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {_shape(output.shape)}"
        )
    if output.shape[0] != count:
        raise InvalidArgument(f"Input batch size did not match output batch size: {count} vs. {output.shape[0]}")
    if output.dtype != np.float32:
        raise InvalidArgument(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_of(output)}")
    values: list[float] = output.reshape(-1).tolist()
    return values


def _dtype_of(array: np.ndarray) -> str:
    if array.dtype == object or array.dtype.kind in "SU":
        return "DT_STRING"
    try:
        return from_numpy(array.dtype).name
    except Unimplemented:
        return str(array.dtype)


def _label(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _shape(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def describe(signature: Signature) -> str:
    """A SignatureDef in the spirit of TF's DebugString, for error messages."""
    inputs = ", ".join(f"{a} ({s.name}: {s.dtype.name})" for a, s in signature.inputs.items())
    outputs = ", ".join(f"{a} ({s.name}: {s.dtype.name})" for a, s in signature.outputs.items())
    return f"inputs {{{inputs}}} outputs {{{outputs}}} method_name: {signature.method_name}"
