"""TF Serving's gRPC API end to end, through the official ``tensorflow-serving-api`` stubs.

A real server on free ports; requests built with ``tf.make_tensor_proto`` and
the stubs' own message classes; expected values from numpy. Reference: TF
Serving's prediction_service.proto and model_service.proto. TensorFlow and modelserve share this
process (the stubs register TF's protos in protobuf's default pool,
modelserve keeps its own pool).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
apis = pytest.importorskip("tensorflow_serving.apis")

from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from modelserve.testing import ServerThread, running_server  # noqa: E402

from . import grpc_models as gm  # noqa: E402
from . import onnx_models as om  # noqa: E402

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gm.build_repository(tmp_path_factory.mktemp("grpc_models"))


@pytest.fixture(scope="module", params=["threaded", "asyncio"])
def server(repo: Path, request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    """Both gRPC server models: grpcio's threaded server, and grpc.aio (which --enable_batching picks)."""
    batching = ["--enable_batching"] if request.param == "asyncio" else []
    with running_server(f"--model_config_file={repo}", *batching) as s:
        yield s


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> Any:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel: grpc.Channel) -> Any:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(model: str, inputs: dict[str, Any], **spec: Any) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(
            value if hasattr(value, "dtype") and hasattr(value, "tensor_shape") else tf.make_tensor_proto(value)
        )
    return request


def rpc_error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, 10.0)
    return info.value


def sample(name: str) -> np.ndarray:
    if name == "string":
        # ONNX strings are UTF-8 text; arbitrary bytes travel through the "tf_classify" tests.
        return np.array([[b"a", b"\x00b"], [b"", "é".encode()]], dtype=object)
    if name == "bfloat16":
        return np.array([[1.5, -2.0], [0.25, 3.0]], dtype=tf.bfloat16.as_numpy_dtype)
    dtype = gm.IDENTITY_DTYPES[name][1]
    if dtype is np.bool_:
        return np.array([[True, False], [False, True]])
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        return np.array([[info.min, info.max], [0, 7]], dtype=dtype)
    return np.array([[1.5, -2.25], [np.inf, 1e-3]], dtype=dtype)


# --- Predict -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(gm.IDENTITY_DTYPES))
def test_predict_round_trips_every_dtype(stub: Any, name: str) -> None:
    array = sample(name)
    response = stub.Predict(predict_request(f"id_{name}", {"x": array}), 10.0)
    out = tf.make_ndarray(response.outputs["y"])
    assert out.dtype == array.dtype
    np.testing.assert_array_equal(out, array)
    # Default encoding is TF Serving's: typed *_val fields, never tensor_content.
    assert response.outputs["y"].tensor_content == b""


@pytest.mark.parametrize("name", ["float", "int64", "half", "uint8", "bool", "string"])
def test_predict_accepts_typed_fields_with_tf_fill_rule(stub: Any, name: str) -> None:
    dtype = tf.as_dtype(gm.IDENTITY_DTYPES[name][1] if name != "string" else tf.string)
    value = {"string": b"s", "bool": True}.get(name, 3)
    proto = tf.make_tensor_proto(value, dtype=dtype, shape=[2, 2])  # one value fills the shape
    assert proto.tensor_content == b""
    response = stub.Predict(predict_request(f"id_{name}", {"x": proto}), 10.0)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), tf.make_ndarray(proto))


@pytest.mark.parametrize("batching", [(), ("--enable_batching",)], ids=["threaded", "asyncio"])
def test_tensor_content_responses_when_asked(repo: Path, batching: tuple[str, ...]) -> None:
    flags = (f"--model_config_file={repo}", "--enable_serialization_as_tensor_content", *batching)
    with running_server(*flags) as s, grpc.insecure_channel(s.grpc_target) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        array = np.arange(6, dtype=np.float32).reshape(3, 2)
        response = stub.Predict(predict_request("id_float", {"x": array}), 10.0)
        assert response.outputs["y"].tensor_content == array.tobytes()
        assert not response.outputs["y"].float_val
        strings = sample("string")
        response = stub.Predict(predict_request("id_string", {"x": strings}), 10.0)
        assert list(response.outputs["y"].string_val) == list(strings.reshape(-1))


def test_predict_response_model_spec(stub: Any) -> None:
    response = stub.Predict(predict_request("versions", {"x": np.zeros(1, np.float32)}, version_label="stable"), 10.0)
    assert response.model_spec.name == "versions"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.WhichOneof("version_choice") == "version"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, 3.0),
        ({"version": 2}, 2.0),
        ({"version_label": "stable"}, 1.0),
        ({"version_label": "canary"}, 2.0),
    ],
)
def test_version_and_label_selection(stub: Any, spec: dict[str, Any], expected: float) -> None:
    response = stub.Predict(predict_request("versions", {"x": np.zeros(2, np.float32)}, **spec), 10.0)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), [expected, expected])


def test_output_filter(stub: Any) -> None:
    a = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    b = np.array([10, 20], np.int64)
    request = predict_request("two", {"a": a, "b": b})
    assert set(stub.Predict(request, 10.0).outputs) == {"sum", "twice_b"}
    request.output_filter.append("twice_b")
    response = stub.Predict(request, 10.0)
    assert set(response.outputs) == {"twice_b"}
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["twice_b"]), 2 * b)


def test_seed_guide_client_against_an_onnx_mlp(server: ServerThread) -> None:
    """The seed guide's client class, modernised only where TF1 APIs are gone."""

    class TFServingClient:
        def __init__(self, host: str, port: int, model_name: str, signature_name: str = "serving_default") -> None:
            options = [
                ("grpc.max_send_message_length", 1024 * 1024 * 1024),
                ("grpc.max_receive_message_length", 1024 * 1024 * 1024),
            ]
            self.channel = grpc.insecure_channel(f"{host}:{port}", options=options)
            self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
            self.model_name = model_name
            self.signature_name = signature_name

        def predict(self, data: np.ndarray) -> np.ndarray:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = self.model_name
            request.model_spec.signature_name = self.signature_name
            request.inputs["input"].CopyFrom(tf.make_tensor_proto(data, shape=data.shape))
            result = self.stub.Predict(request, 30.0)
            return tf.make_ndarray(result.outputs["output"])

    client = TFServingClient("127.0.0.1", server.server.grpc_port, "mlp")
    data = np.random.default_rng(3).standard_normal((5, gm.MLP_SIZES[0])).astype(np.float32)
    out = client.predict(data)
    np.testing.assert_allclose(out, om.mlp_reference(gm.mlp_weights(), data), rtol=1e-4, atol=1e-4)
    client.channel.close()


def test_large_request_and_answer(server: ServerThread, stub: Any) -> None:
    big = np.random.default_rng(0).standard_normal((2, 2_500_000)).astype(np.float32)  # 20 MB each way
    request = predict_request("half", {"x": big})
    # The server takes it; a client with gRPC's default 4 MiB receive limit cannot read the answer.
    err = rpc_error(stub.Predict, request)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "4194304" in err.details()
    options = [("grpc.max_receive_message_length", 64 * 2**20)]
    with grpc.insecure_channel(server.grpc_target, options=options) as ch:
        response = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request, 60.0)
    expected = big * np.float32(0.5) + np.float32(2)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), expected)


# --- metadata and status -------------------------------------------------------------------------


def test_metadata_unpacks_into_signature_def_map(stub: Any) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "two"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, 10.0)
    assert response.model_spec.name == "two" and response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    default = signatures.signature_def["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    assert default.inputs["a"].dtype == tf.float32.as_datatype_enum
    assert [d.size for d in default.inputs["a"].tensor_shape.dim] == [-1, 2]
    assert default.inputs["b"].dtype == tf.int64.as_datatype_enum
    assert set(default.outputs) == {"sum", "twice_b"}


def test_status_lists_versions_highest_first(model_stub: Any) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "versions"
    response = model_stub.GetModelStatus(request, 10.0)
    rows = [(s.version, s.state, s.status.error_code) for s in response.model_version_status]
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert rows == [(3, available, 0), (2, available, 0), (1, available, 0)]
    request.model_spec.version.value = 2
    assert [s.version for s in model_stub.GetModelStatus(request, 10.0).model_version_status] == [2]


# --- classify, regress, multi-inference ----------------------------------------------------------


def example(**features: Any) -> Any:
    ex = tf.train.Example()
    for name, value in features.items():
        values = value if isinstance(value, list) else [value]
        feature = ex.features.feature[name]
        if isinstance(values[0], bytes):
            feature.bytes_list.value.extend(values)
        elif isinstance(values[0], float):
            feature.float_list.value.extend(values)
        else:
            feature.int64_list.value.extend(values)
    return ex


def test_classify_feeds_serialized_examples_with_context(stub: Any) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "tf_classify"
    listed = request.input.example_list_with_context
    listed.context.CopyFrom(example(lang=b"en"))
    first, second = example(word=b"abc", n=3), example(word=b"xy", n=4)
    listed.examples.extend([first, second])
    response = stub.Classify(request, 10.0)
    context = example(lang=b"en").SerializeToString()
    items = response.result.classifications
    assert [len(item.classes) for item in items] == [1, 1]
    for item, sent in zip(items, (first, second), strict=True):
        label = item.classes[0].label.encode()
        # TF's way: the context's bytes, then the example's (a map's order in bytes is the serializing
        # process's, so the example is compared parsed)
        assert label.startswith(context)
        assert tf.train.Example.FromString(label[len(context) :]) == sent
        assert item.classes[0].score == 0.5
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version.value == 1


def test_regress_tf_signature(stub: Any) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "tf_regress"
    request.input.example_list.examples.extend([example(n=1), example(n=2), example(n=3)])
    response = stub.Regress(request, 10.0)
    assert [r.value for r in response.result.regressions] == [1.5, 1.5, 1.5]
    # Request options (priority, queue timeout) are read for Regress as for Predict.
    with pytest.raises(grpc.RpcError) as info:
        stub.Regress(request, 10.0, metadata=[("x-modelserve-priority", "high")])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_classify_and_regress_by_feature_name(stub: Any) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "by_name"
    request.input.example_list.examples.extend([example(x=[1.0, 2.0], k=1), example(x=[0.5, -1.0], k=0)])
    response = stub.Classify(request, 10.0)
    got = [[(c.label, c.score) for c in item.classes] for item in response.result.classifications]
    assert got == [[("", 3.0), ("", 5.0)], [("", 1.0), ("", -2.0)]]
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "by_name_regress"
    request.input.example_list.examples.extend([example(x=[1.0, 2.0]), example(x=[5.0, 0.5])])
    assert [r.value for r in stub.Regress(request, 10.0).result.regressions] == [-1.0, 4.5]


def test_multi_inference(stub: Any) -> None:
    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add()
    task.model_spec.name = "tf_regress"
    task.method_name = "tensorflow/serving/regress"
    request.input.example_list.examples.extend([example(n=1), example(n=2)])
    response = stub.MultiInference(request, 10.0)
    (result,) = response.results
    assert result.model_spec.name == "tf_regress" and result.model_spec.version.value == 1
    assert [r.value for r in result.regression_result.regressions] == [1.5, 1.5]


def multi_error(stub: Any, tasks: list[tuple[str, str, str]]) -> grpc.RpcError:
    request = inference_pb2.MultiInferenceRequest()
    for name, signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = name
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.append(example(n=1))
    return rpc_error(stub.MultiInference, request)


def test_multi_inference_errors(stub: Any) -> None:
    regress = "tensorflow/serving/regress"
    err = multi_error(stub, [("tf_regress", "", regress), ("by_name", "", regress)])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "must access the same model name" in err.details()
    err = multi_error(stub, [("tf_regress", "", regress), ("tf_regress", "serving_default", regress)])
    assert err.details() == "Duplicate evaluation of signature: serving_default"
    err = multi_error(stub, [("tf_regress", "", "tensorflow/serving/predict")])
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    assert err.details() == "Unsupported signature method_name: tensorflow/serving/predict"
    err = multi_error(stub, [("tf_regress", "nope", regress)])
    assert err.details() == "Requested signature not found in model graph: nope"
    err = multi_error(stub, [("", "", regress)])
    assert err.details() == "Found ModelSpec with an empty model name."


def test_classify_errors(stub: Any) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "tf_classify"
    err = rpc_error(stub.Classify, request)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
    request.input.example_list.examples.append(example(n=1))
    request.model_spec.signature_name = "nope"
    assert rpc_error(stub.Classify, request).details() == "No signature was found with the name: nope"
    request.model_spec.name, request.model_spec.signature_name = "tf_classify", ""
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "tf_classify"
    regress.input.example_list.examples.append(example(n=1))
    assert rpc_error(stub.Regress, regress).details() == "Expected one output Tensor."
    request.model_spec.name = "by_name"  # by-name feeding: the examples lack feature "x"
    err = rpc_error(stub.Classify, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "'x'" in err.details()


# --- reload --------------------------------------------------------------------------------------


@pytest.mark.parametrize("batching", [(), ("--enable_batching",)], ids=["threaded", "asyncio"])
def test_reload_config_adds_and_removes_models(tmp_path: Path, batching: tuple[str, ...]) -> None:
    om.write(tmp_path / "a", 1, om.half_plus_two())
    om.write(tmp_path / "b", 4, om.version_marker(4))
    with (
        running_server(f"--model_base_path={tmp_path / 'a'}", "--model_name=a", *batching) as s,
        grpc.insecure_channel(s.grpc_target) as ch,
    ):
        models = model_service_pb2_grpc.ModelServiceStub(ch)
        predictions = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        request = model_management_pb2.ReloadConfigRequest()
        config = request.config.model_config_list.config.add()
        config.name, config.base_path, config.model_platform = "b", str(tmp_path / "b"), "onnx"
        response = models.HandleReloadConfigRequest(request, 30.0)
        assert response.status.error_code == 0
        out = predictions.Predict(predict_request("b", {"x": np.zeros(1, np.float32)}), 10.0)
        assert tf.make_ndarray(out.outputs["y"]).tolist() == [4.0] and out.model_spec.version.value == 4
        err = rpc_error(predictions.Predict, predict_request("a", {"x": np.zeros(1, np.float32)}))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        config.name = "c"
        config.base_path = str(tmp_path / "missing")
        err = rpc_error(models.HandleReloadConfigRequest, request)
        assert err.code() == grpc.StatusCode.NOT_FOUND and str(tmp_path / "missing") in err.details()
        (tmp_path / "empty").mkdir()
        config.base_path = str(tmp_path / "empty")
        err = rpc_error(models.HandleReloadConfigRequest, request)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "No versions of servable c" in err.details()
        # A failed reload changed nothing.
        out = predictions.Predict(predict_request("b", {"x": np.zeros(1, np.float32)}), 10.0)
        assert tf.make_ndarray(out.outputs["y"]).tolist() == [4.0]
        request.config.custom_model_config.type_url = "type.googleapis.com/x"
        err = rpc_error(models.HandleReloadConfigRequest, request)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "Only ModelConfigList" in err.details()
        # An empty config takes no action (TF Serving: "Taking no action for empty config.").
        response = models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), 30.0)
        assert response.status.error_code == 0
        out = predictions.Predict(predict_request("b", {"x": np.zeros(1, np.float32)}), 10.0)
        assert tf.make_ndarray(out.outputs["y"]).tolist() == [4.0]


# --- errors --------------------------------------------------------------------------------------


def _half(**spec: Any) -> Any:
    return predict_request("half", {"x": np.array([1.0], np.float32)}, **spec)


ERROR_CASES: list[tuple[str, Any, grpc.StatusCode, str]] = [
    (
        "unknown model",
        lambda: predict_request("nope", {"x": np.zeros(1, np.float32)}),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    (
        "unknown version",
        lambda: _half(version=9),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(half, 9)",
    ),
    (
        "unknown label",
        lambda: _half(version_label="gold"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: gold",
    ),
    (
        "missing model spec",
        lambda: predict_pb2.PredictRequest(),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing ModelSpec",
    ),
    (
        "empty name",
        lambda: predict_request("", {}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ModelSpec has no name specified.",
    ),
    (
        "unknown signature",
        lambda: _half(signature_name="nope"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    ),
    (
        "wrong input name",
        lambda: predict_request("half", {"z": np.zeros(1, np.float32)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input size does not match signature: 1!=1 len({z}) != len({x}). Sent extra: {z}. Missing but required: {x}.",
    ),
    (
        "wrong dtype",
        lambda: predict_request("half", {"x": np.zeros(1, np.int32)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg[0] to be float but int32 is provided",
    ),
]


@pytest.mark.parametrize(("case", "build", "code", "message"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_predict_errors(stub: Any, case: str, build: Any, code: grpc.StatusCode, message: str) -> None:
    err = rpc_error(stub.Predict, build())
    assert (err.code(), err.details()) == (code, message)
    # The server keeps serving.
    assert tf.make_ndarray(stub.Predict(_half(), 10.0).outputs["y"]).tolist() == [2.5]


def test_tensor_content_of_the_wrong_size(stub: Any) -> None:
    request = _half()
    request.inputs["x"].tensor_content = struct.pack("<3f", 1, 2, 3)  # shape says 1 value
    err = rpc_error(stub.Predict, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("tensor parsing error: x")
    assert "12 bytes" in err.details()


def test_output_filter_errors(stub: Any) -> None:
    request = predict_request("two", {"a": np.zeros((1, 2), np.float32), "b": np.zeros(1, np.int64)})
    request.output_filter.extend(["sum", "sum"])
    assert rpc_error(stub.Predict, request).details() == "duplicate output tensor alias: sum"
    del request.output_filter[:]
    request.output_filter.append("nope")
    err = rpc_error(stub.Predict, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        err.details()
        == "output tensor alias not found in signature: nope Outputs expected to be in the set {sum,twice_b}."
    )


def test_long_messages_are_truncated(stub: Any) -> None:
    request = predict_request("two", {"a": np.zeros((1, 2), np.float32), "b": np.zeros(1, np.int64)})
    request.output_filter.append("o" * 3000)
    details = rpc_error(stub.Predict, request).details()
    assert len(details) == 1024 + len("...TRUNCATED") and details.endswith("...TRUNCATED")


def test_metadata_errors(stub: Any) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    assert rpc_error(stub.GetModelMetadata, request).details() == "Missing ModelSpec"
    request.model_spec.name = "half"
    assert rpc_error(stub.GetModelMetadata, request).details() == (
        "GetModelMetadataRequest must specify at least one metadata_field"
    )
    request.metadata_field.append("graph")
    err = rpc_error(stub.GetModelMetadata, request)
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field graph is not supported",
    )


def test_status_errors(model_stub: Any) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    assert rpc_error(model_stub.GetModelStatus, request).details() == "Missing ModelSpec"
    request.model_spec.name = "nope"
    err = rpc_error(model_stub.GetModelStatus, request)
    assert (err.code(), err.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )
    request.model_spec.name = "half"
    request.model_spec.version.value = 7
    err = rpc_error(model_stub.GetModelStatus, request)
    assert (err.code(), err.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 7 of model half",
    )


def test_bytes_that_are_not_a_request(channel: grpc.Channel, stub: Any) -> None:
    raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff\xff\xff\xff", timeout=10.0)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensorflow.serving.PredictRequest" in info.value.details()
    assert tf.make_ndarray(stub.Predict(_half(), 10.0).outputs["y"]).tolist() == [2.5]


def test_unimplemented_service_method(channel: grpc.Channel) -> None:
    raw = channel.unary_unary("/tensorflow.serving.SessionService/SessionRun")
    with pytest.raises(grpc.RpcError) as info:
        raw(b"", timeout=10.0)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
