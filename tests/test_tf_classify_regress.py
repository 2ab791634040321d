"""Classify, Regress and MultiInference on a SavedModel built like TF Serving's saved_model_half_plus_two.

Reference: TF Serving's REST classify/regress API and its gRPC Classify/Regress. The values are the ones
TF Serving's own tensorflow_model_server_test.py expects: x = 2.0 gives 3.0 (y = 0.5 x + 2).
Both SavedModel loaders (functions, session) serve the same answers.
"""

from __future__ import annotations

import http.client
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs the tensorflow extra: pip install 'modelserve[tensorflow]'")

from modelserve.protos import pb
from modelserve.protos.rpc import Stub
from modelserve.testing import ServerThread, running_server

from . import tf_models
from .test_v2_rest import infer as v2_infer

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("hp2")
    tf_models.half_plus_two_v1(root / "half_plus_two", 123)
    with running_server("--model_name=half_plus_two", f"--model_base_path={root / 'half_plus_two'}") as s:
        yield s


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> Iterator[Stub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield Stub(channel, pb.PredictionService)


def post(server: ServerThread, verb: str, doc: Any) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=60)
    try:
        conn.request("POST", f"/v1/models/half_plus_two:{verb}", body=json.dumps(doc))
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def example(**features: float) -> Any:
    ex = pb.Example()
    for name, value in features.items():
        ex.features.feature[name].float_list.value.append(value)
    return ex


# ---- REST --------------------------------------------------------------------------


def test_rest_regress(server: ServerThread) -> None:
    doc = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}, {"x": 4.0}]}
    assert post(server, "regress", doc) == (200, {"results": [3.0, 4.0]})


def test_rest_regress_other_output(server: ServerThread) -> None:
    doc = {"signature_name": "regress_x_to_y2", "examples": [{"x": 2.0}]}
    assert post(server, "regress", doc) == (200, {"results": [4.0]})  # y2 = 0.5 x + 3


def test_rest_classify_has_empty_labels_and_scores(server: ServerThread) -> None:
    doc = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert post(server, "classify", doc) == (200, {"results": [[["", 3.0]]]})


def test_rest_context_features_are_shared_by_every_example(server: ServerThread) -> None:
    doc = {"signature_name": "regress_x_to_y", "context": {"x": 4.0}, "examples": [{"x2": 1.0}, {"x2": 5.0}]}
    assert post(server, "regress", doc) == (200, {"results": [4.0, 4.0]})


def test_rest_integer_feature_is_not_a_float_feature(server: ServerThread) -> None:
    status, body = post(server, "regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2}]})
    assert status == 400
    assert "x" in body["error"]


def test_rest_signature_without_serialized_input_needs_its_feature(server: ServerThread) -> None:
    # regress_x2_to_y3 takes the float tensor x2:0 under the alias "inputs", not serialized examples
    status, body = post(server, "regress", {"signature_name": "regress_x2_to_y3", "examples": [{"x": 2.0}]})
    assert status == 400, body


def test_rest_predict_still_works(server: ServerThread) -> None:
    assert post(server, "predict", {"instances": [[2.0]]}) == (200, {"predictions": [[3.0]]})


# ---- gRPC ---------------------------------------------------------------------------


def test_grpc_classify(stub: Stub) -> None:
    request = pb.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.append(example(x=2.0))
    response = stub.Classify(request, timeout=60)
    assert response.model_spec.version.value == 123
    (classification,) = response.result.classifications
    assert [(c.label, c.score) for c in classification.classes] == [("", 3.0)]


def test_grpc_regress_with_context(stub: Stub) -> None:
    request = pb.RegressionRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y"
    request.input.example_list_with_context.context.CopyFrom(example(x=6.0))
    request.input.example_list_with_context.examples.append(example(x2=1.0))
    response = stub.Regress(request, timeout=60)
    assert [r.value for r in response.result.regressions] == [5.0]


def test_grpc_multi_inference(stub: Stub) -> None:
    request = pb.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "regress"), ("classify_x_to_y", "classify")):
        task = request.tasks.add()
        task.model_spec.name = "half_plus_two"
        task.model_spec.signature_name = signature
        task.method_name = f"tensorflow/serving/{method}"
    request.input.example_list.examples.append(example(x=2.0))
    response = stub.MultiInference(request, timeout=60)
    regression, classification = response.results
    assert [r.value for r in regression.regression_result.regressions] == [3.0]
    assert [c.score for c in classification.classification_result.classifications[0].classes] == [3.0]


def test_grpc_empty_input_is_invalid(stub: Stub) -> None:
    request = pb.RegressionRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y"
    with pytest.raises(grpc.RpcError) as info:
        stub.Regress(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "Input is empty."


def test_session_loader_answers_the_same(tmp_path: Path) -> None:
    import numpy as np

    from modelserve.platforms import LoadOptions
    from modelserve.platforms import tensorflow as tfp

    folder = tf_models.half_plus_two_v1(tmp_path / "m")
    batch = np.array([example(x=2.0).SerializeToString()], dtype=object)
    for loader in ("function", "session"):
        servable = tfp.load(folder, LoadOptions(extra={tfp.LOADER_KEY: loader}))
        assert servable.predict("regress_x_to_y", {"inputs": batch})["outputs"].tolist() == [[3.0]]


def test_classify_and_regress_signatures_through_v2(server: ServerThread) -> None:
    """Issue 18: a classify or regress signature is reachable through the Open Inference Protocol with
    the ``signature_name`` parameter: serialized tf.Examples as a BYTES input, on REST (JSON) and gRPC."""
    examples = [example(x=2.0).SerializeToString(), example(x=4.0).SerializeToString()]
    expected = {"classify_x_to_y": ("scores", [3.0, 4.0]), "regress_x_to_y2": ("outputs", [4.0, 5.0])}  # [2, 1]
    for signature, (output, values) in expected.items():
        # REST with the binary tensor data extension: serialized Examples are bytes, not UTF-8 text.
        data = b"".join(struct.pack("<I", len(e)) + e for e in examples)
        doc = {
            "parameters": {"signature_name": signature},
            "inputs": [
                {"name": "inputs", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(data)}}
            ],
            "outputs": [{"name": output, "parameters": {"binary_data": False}}],
        }
        status, _, body = v2_infer(server, "/v2/models/half_plus_two/infer", doc, data)
        answer = json.loads(body)
        assert status == 200, answer
        (tensor,) = answer["outputs"]
        assert (tensor["name"], tensor["datatype"], tensor["data"]) == (output, "FP32", values)
        request = pb.ModelInferRequest(model_name="half_plus_two")
        request.parameters["signature_name"].string_param = signature
        request.inputs.add(name="inputs", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(examples)
        with grpc.insecure_channel(server.grpc_target) as channel:
            reply = Stub(channel, pb.GRPCInferenceService).ModelInfer(request, timeout=60)
        assert [t.name for t in reply.outputs] == [output]
        assert list(reply.outputs[0].shape) == [2, 1]
        assert np.frombuffer(reply.raw_output_contents[0], np.float32).tolist() == values
