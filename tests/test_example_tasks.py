"""Classify/regress planning (modelserve.serving.example_tasks): TF's checks and the by-name feeding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelserve.dtypes import DType
from modelserve.errors import InvalidArgument, Unimplemented
from modelserve.protos import pb
from modelserve.serving import example_tasks
from modelserve.signatures import Signature, TensorSpec

STRING_IN = {"inputs": TensorSpec("in:0", DType.DT_STRING, (-1,))}


def sig(inputs: dict[str, TensorSpec], outputs: dict[str, tuple[DType, tuple[int, ...] | None]]) -> Signature:
    return Signature(inputs, {a: TensorSpec(a, d, s) for a, (d, s) in outputs.items()})


def ex(**features: Any) -> bytes:
    example = pb.Example()
    for name, values in features.items():
        values = values if isinstance(values, list) else [values]
        feature = example.features.feature[name]
        kind = "bytes" if isinstance(values[0], bytes) else "float" if isinstance(values[0], float) else "int64"
        getattr(feature, f"{kind}_list").value.extend(values)
    data: bytes = example.SerializeToString()
    return data


def plan(kind: example_tasks.Kind, signature: Signature, items: list[bytes], name: str = "") -> example_tasks.Plan:
    return example_tasks.plan(kind, {"serving_default": signature}, name, items)


def test_tf_way_feeds_serialized_examples_and_reads_classes_and_scores() -> None:
    signature = sig(STRING_IN, {"classes": (DType.DT_STRING, (-1, 2)), "scores": (DType.DT_FLOAT, (-1, 2))})
    items = example_tasks.serialized_examples([ex(a=1), ex(a=2)], context=ex(c=b"x"))
    p = plan("classify", signature, items)
    assert p.inputs["inputs"].tolist() == [ex(c=b"x") + ex(a=1), ex(c=b"x") + ex(a=2)]
    assert p.output_filter == ("classes", "scores")
    outputs = {
        "classes": np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object),
        "scores": np.array([[0.5, 0.25], [1.0, 0.0]], np.float32),
    }
    assert p.interpret(outputs) == [[("a", 0.5), ("b", 0.25)], [("c", 1.0), ("d", 0.0)]]


@pytest.mark.parametrize(
    ("signature", "kind", "message"),
    [
        (
            sig({**STRING_IN, "b": STRING_IN["inputs"]}, {"scores": (DType.DT_FLOAT, None)}),
            "classify",
            "Expected one input Tensor.",
        ),
        (
            sig(
                STRING_IN,
                {"a": (DType.DT_FLOAT, None), "b": (DType.DT_FLOAT, None), "c": (DType.DT_FLOAT, None)},
            ),
            "classify",
            "Expected one or two output Tensors, found 3",
        ),
        (
            sig(STRING_IN, {"probabilities": (DType.DT_FLOAT, None)}),
            "classify",
            'Expected classification signature outputs to contain at least one of "classes" or "scores".',
        ),
        (
            sig(STRING_IN, {"a": (DType.DT_FLOAT, None), "b": (DType.DT_FLOAT, None)}),
            "regress",
            "Expected one output Tensor.",
        ),
        (
            sig(STRING_IN, {"y": (DType.DT_FLOAT, None)}),
            "regress",
            "No regression outputs found in SignatureDef",
        ),
    ],
)
def test_tf_way_signature_checks(signature: Signature, kind: example_tasks.Kind, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(".", r"\.")):
        plan(kind, signature, [ex(a=1)])


def test_unknown_signature_and_empty_input() -> None:
    signature = sig(STRING_IN, {"outputs": (DType.DT_FLOAT, None)})
    with pytest.raises(InvalidArgument, match="No signature was found with the name: other"):
        plan("regress", signature, [ex(a=1)], name="other")
    with pytest.raises(InvalidArgument, match=r"^Input is empty\.$"):
        plan("regress", signature, [])


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (
            {"classes": np.array([b"a"], dtype=object)},
            r"Expected Tensor shape: \[batch_size num_classes\] but got \[1\]",
        ),
        ({"classes": np.zeros((1, 1), np.float32)}, "Expected classes Tensor of DT_STRING. Got: DT_FLOAT"),
        ({"scores": np.zeros((1, 1), np.float64)}, "Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE"),
        ({"scores": np.zeros((2, 1), np.float32)}, "Expected scores output batch size of 1. Got: 2"),
        (
            {"classes": np.array([[b"a", b"b"]], dtype=object), "scores": np.zeros((1, 3), np.float32)},
            r"Tensors class and score should match in dim_size\(1\). Got 2 vs. 3",
        ),
    ],
)
def test_classification_output_checks(outputs: dict[str, np.ndarray], message: str) -> None:
    signature = sig(STRING_IN, {name: (DType.DT_FLOAT, None) for name in outputs})
    p = plan("classify", signature, [ex(a=1)])
    with pytest.raises(InvalidArgument, match=message):
        p.interpret(outputs)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (np.zeros((1, 2), np.float32), r"either \[batch_size\] or \[batch_size, 1\] but got \[1,2\]"),
        (np.zeros(2, np.float32), "Input batch size did not match output batch size: 1 vs. 2"),
        (np.zeros(1, np.float64), "Expected output Tensor of DT_FLOAT.  Got: DT_DOUBLE"),
    ],
)
def test_regression_output_checks(output: np.ndarray, message: str) -> None:
    p = plan("regress", sig(STRING_IN, {"outputs": (DType.DT_FLOAT, None)}), [ex(a=1)])
    with pytest.raises(InvalidArgument, match=message):
        p.interpret({"outputs": output})
    assert p.interpret({"outputs": np.array([[2.5]], np.float32)}) == [2.5]


def test_by_name_feeding_shapes_and_dtypes() -> None:
    signature = Signature(
        {
            "image": TensorSpec("image", DType.DT_FLOAT, (-1, 2, -1)),
            "id": TensorSpec("id", DType.DT_INT64, (-1,)),
            "word": TensorSpec("word", DType.DT_STRING, (-1, 1)),
            "w": TensorSpec("w", DType.DT_DOUBLE, None),
        },
        {"y": TensorSpec("y", DType.DT_FLOAT, (-1,))},
    )
    items = [
        ex(image=[1.0, 2.0, 3.0, 4.0], id=7, word=b"a", w=[1, 2]),
        ex(image=[5.0, 6.0, 7.0, 8.0], id=8, word=b"b", w=[3, 4]),
    ]
    p = plan("regress", signature, items)
    assert p.inputs["image"].shape == (2, 2, 2) and p.inputs["image"].dtype == np.float32
    assert p.inputs["image"][1].tolist() == [[5.0, 6.0], [7.0, 8.0]]
    assert p.inputs["id"].tolist() == [7, 8] and p.inputs["id"].dtype == np.int64
    assert p.inputs["word"].tolist() == [[b"a"], [b"b"]]
    assert p.inputs["w"].dtype == np.float64 and p.inputs["w"].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert p.output_filter == ("y",)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([ex(other=1.0)], "Example 0 has no feature 'x'"),
        ([ex(x=b"s")], "Feature 'x' is a bytes_list, which cannot feed input 'x' of type float"),
        (
            [ex(x=[1.0, 2.0, 3.0])],
            "Feature 'x' has 3 values per example, which does not fit input 'x' of shape",
        ),
        ([ex(x=[1.0, 2.0]), ex(x=[1.0, 2.0, 3.0, 4.0])], "different numbers of values"),
    ],
)
def test_by_name_feeding_errors(items: list[bytes], message: str) -> None:
    signature = Signature({"x": TensorSpec("x", DType.DT_FLOAT, (-1, 2))}, {"y": TensorSpec("y", DType.DT_FLOAT, None)})
    with pytest.raises(InvalidArgument, match=message):
        plan("classify", signature, items)


def test_int64_features_feed_float_inputs_but_floats_never_feed_ints() -> None:
    floats = Signature({"x": TensorSpec("x", DType.DT_FLOAT, (-1,))}, {"y": TensorSpec("y", DType.DT_FLOAT, None)})
    assert plan("regress", floats, [ex(x=3)]).inputs["x"].tolist() == [3.0]
    ints = Signature({"x": TensorSpec("x", DType.DT_INT32, (-1,))}, {"y": TensorSpec("y", DType.DT_FLOAT, None)})
    with pytest.raises(InvalidArgument, match="float_list"):
        plan("regress", ints, [ex(x=3.0)])


def test_multi_inference_checks() -> None:
    classify, regress = "tensorflow/serving/classify", "tensorflow/serving/regress"
    example_tasks.check_multi_inference([("m", "a", classify), ("m", "b", regress)])
    with pytest.raises(InvalidArgument, match="same model name"):
        example_tasks.check_multi_inference([("m", "a", classify), ("n", "b", regress)])
    with pytest.raises(InvalidArgument, match="Duplicate evaluation of signature: serving_default"):
        example_tasks.check_multi_inference([("m", "", classify), ("m", "serving_default", regress)])
    with pytest.raises(Unimplemented, match="Unsupported signature method_name: x"):
        example_tasks.check_multi_inference([("m", "", "x")])
    with pytest.raises(InvalidArgument, match="empty model name"):
        example_tasks.check_multi_inference([("", "", classify)])


def test_input_message_to_serialized_examples() -> None:
    message = pb.Input()
    assert example_tasks.from_input(message) == []
    message.example_list_with_context.context.features.feature["c"].int64_list.value.append(1)
    message.example_list_with_context.examples.add().features.feature["a"].float_list.value.append(2.0)
    (data,) = example_tasks.from_input(message)
    merged = pb.Example.FromString(data)
    assert set(merged.features.feature) == {"a", "c"}
