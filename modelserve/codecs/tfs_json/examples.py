"""Classify / regress requests (MakeExampleFromJsonObject / AddValueToFeature) and results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ...errors import InvalidArgument
from .floats import format_float32, round_f32
from .json_text import json_type, value_error
from .parser import INT64_MAX
from .render import text_value
from .tensors import decode_b64_object, is_b64

FeatureKind = Literal["bytes", "float", "int64"]


@dataclass(frozen=True)
class Feature:
    """One ``tf.train.Feature`` of a classify/regress example.

    ``values`` holds bytes, float32-rounded Python floats or ints according
    to ``kind``. ``kind`` is None for an empty JSON list: TF then stores a
    Feature with no kind set.
    """

    kind: FeatureKind | None
    values: tuple[Any, ...]


def decode_examples(
    doc: Mapping[str, Any],
) -> tuple[list[dict[str, Feature]], dict[str, Feature] | None]:
    """The ``examples`` of a classify/regress request and its optional ``context``."""
    context = _example(doc["context"]) if "context" in doc else None
    if "examples" not in doc:
        # TF says "classify" for both verbs.
        raise value_error(doc, "When method is classify, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if type(examples) is not list:
        raise value_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise value_error(doc, "'examples' value is an empty array")
    return [_example(item) for item in examples], context


def _example(value: Any) -> dict[str, Feature]:
    if type(value) is not dict:
        raise InvalidArgument(f"Example must be JSON object but got JSON {json_type(value)}")
    return {name: _feature(name, content if type(content) is list else [content]) for name, content in value.items()}


def _feature(name: str, items: list[Any]) -> Feature:
    kind: FeatureKind | None = None
    values = []
    for item in items:
        item_kind, converted = _feature_value(name, item, kind)
        kind = item_kind
        values.append(converted)
    return Feature(kind, tuple(values))


def _feature_value(name: str, item: Any, kind: FeatureKind | None) -> tuple[FeatureKind, Any]:
    item_type = type(item)
    if item is None or item_type is list or (item_type is dict and not is_b64(item)):
        raise InvalidArgument(f"Feature: {name} has element with unexpected JSON type: {json_type(item)}")
    wanted: FeatureKind = (
        "int64" if item_type is bool or item_type is int else "float" if item_type is float else "bytes"
    )
    if kind is not None and kind != wanted:
        raise InvalidArgument(f"Unexpected element type in feature: {name} expecting type: {kind}")
    if item_type is bool:
        return wanted, int(item)
    if item_type is int:
        if item > INT64_MAX:
            raise InvalidArgument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        return wanted, item
    if item_type is float:
        return wanted, round_f32(item)
    if item_type is dict:
        return wanted, decode_b64_object(item)
    return wanted, item.encode("utf-8", "surrogateescape")


def encode_classify(results: Sequence[Sequence[tuple[str, float]]]) -> bytes:
    """``{"results": [[[label, score], ...] per example]}``, scores as DT_FLOAT."""
    if not results:
        raise InvalidArgument("Cannot convert empty ClassificationResults to JSON")
    examples = []
    for classes in results:
        pairs = [
            b"[" + orjson.dumps(text_value(label)) + b"," + format_float32(score).encode() + b"]"
            for label, score in classes
        ]
        examples.append(b"[" + b",".join(pairs) + b"]")
    return b'{"results":[' + b",".join(examples) + b"]}"


def encode_regress(values: Sequence[float]) -> bytes:
    """``{"results": [value per example]}``, values as DT_FLOAT."""
    if not values:
        raise InvalidArgument("Cannot convert empty RegressionResults to JSON")
    return b'{"results":[' + ",".join(format_float32(v) for v in values).encode() + b"]}"
