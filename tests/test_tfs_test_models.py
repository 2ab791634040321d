"""TF Serving's own test models (rebuilt by ``tests.tf_models``) served end to end.

What TF Serving answers for them is the reference: its REST tutorial's
``{"instances": [1.0, 2.0, 5.0]}`` on half_plus_two gives
``{"predictions": [2.5, 3.0, 4.5]}`` although the signature declares x as
[-1, 1]; the graph, not the declared shape, decides. Both SavedModel loaders
are served this way (``cond`` only loads into a session).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs the tensorflow extra: pip install 'modelserve[tensorflow]'")

from modelserve.codecs.tensor_proto import from_ndarray, to_ndarray
from modelserve.protos import pb
from modelserve.protos.rpc import Stub
from modelserve.testing import ServerThread, running_server

from . import tf_models

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("tfs_models")
    tf_models.half_plus_two_v1(root / "half_plus_two", 123)
    tf_models.half_plus_three_v1(root / "half_plus_three", 123)
    tf_models.two_signatures(root / "two_signatures", 123)
    tf_models.cond_with_training_placeholder_v1(root / "cond", 1)
    names = ("half_plus_two", "half_plus_three", "two_signatures", "cond")
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(f'  config {{ name: "{n}" base_path: "{root / n}" model_platform: "tensorflow" }}\n' for n in names)
        + "}\n"
    )
    with running_server(f"--model_config_file={config}") as s:
        yield s


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> Iterator[Stub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield Stub(channel, pb.PredictionService)


def post(server: ServerThread, model: str, doc: Any) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=60)
    try:
        conn.request("POST", f"/v1/models/{model}:predict", body=json.dumps(doc))
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def grpc_predict(stub: Stub, model: str, x: np.ndarray, signature: str = "") -> dict[str, np.ndarray]:
    request = pb.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs["x"].CopyFrom(from_ndarray(x))
    response = stub.Predict(request, timeout=60)
    assert response.model_spec.version.value == (1 if model == "cond" else 123)
    return {alias: to_ndarray(tensor) for alias, tensor in response.outputs.items()}


def test_rest_tutorial_answers_exactly_as_tf_serving(server: ServerThread) -> None:
    status, body = post(server, "half_plus_two", {"instances": [1.0, 2.0, 5.0]})
    assert (status, json.loads(body)) == (200, {"predictions": [2.5, 3.0, 4.5]})


@pytest.mark.parametrize("model, offset", [("half_plus_two", 2.0), ("half_plus_three", 3.0)])
@pytest.mark.parametrize("x", [[2.0], [1.0, 2.0, 5.0], [[2.0]]])
def test_grpc_predict_takes_any_shape_the_graph_takes(stub: Stub, model: str, offset: float, x: Any) -> None:
    value = np.array(x, np.float32)
    got = grpc_predict(stub, model, value)["y"]
    assert got.shape == value.shape
    np.testing.assert_array_equal(got, 0.5 * value + offset)


def test_session_loaded_model_is_fed_as_tf_servings_session_feeds_it(server: ServerThread, stub: Stub) -> None:
    # cond's x is declared [-1,2]; Python's Session.run would refuse [2] ("Cannot feed value of shape (2,)").
    status, body = post(server, "cond", {"instances": [1.0, 2.0]})
    assert (status, json.loads(body)) == (200, {"predictions": [2.0, 4.0]})
    assert grpc_predict(stub, "cond", np.array([3.0, 4.0], np.float32))["y"].tolist() == [6.0, 8.0]


def test_what_the_graph_refuses_is_invalid_argument_and_the_server_serves_on(server: ServerThread, stub: Stub) -> None:
    doc = {"signature_name": "regress_x_to_y", "instances": [{"b64": "AWp1bms="}]}  # not a tf.Example
    status, body = post(server, "half_plus_two", doc)
    assert status == 400
    assert "Could not parse example input" in json.loads(body)["error"]
    request = pb.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y"
    request.inputs["inputs"].CopyFrom(from_ndarray(np.array([b"\x01junk"], object)))
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=60)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ParseExample" in (raised.value.details() or "")  # TF's own message (long; gRPC shows its start)
    assert grpc_predict(stub, "half_plus_two", np.array([2.0], np.float32))["y"].tolist() == [3.0]


def test_two_signatures_each_answer(stub: Stub) -> None:
    x = np.array([2.0], np.float32)
    assert grpc_predict(stub, "two_signatures", x)["y"].tolist() == 1.0
    assert grpc_predict(stub, "two_signatures", x, "custom_signature_key")["y"].tolist() == 2.0
