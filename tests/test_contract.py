"""One contract, three platforms: the same models built by ONNX, TensorFlow and PyTorch, served from one
``--model_config_file``, answer the same REST and gRPC requests with the same values and the same errors.

Every model is named ``<model>_<platform>``; each has two versions. The config says
``model_platform: "tensorflow"`` for all of them, as TF Serving configs do: the files decide.
Expected values come from numpy. Platforms whose extra is missing are skipped with the reason.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from onnx import TensorProto

from modelserve.codecs.tensor_proto import from_ndarray, to_ndarray
from modelserve.protos import pb
from modelserve.protos.rpc import Stub
from modelserve.testing import ServerThread, running_server

from . import onnx_models as om

HAS_TF = importlib.util.find_spec("tensorflow") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None
PLATFORMS = [
    pytest.param("onnx"),
    pytest.param(
        "tensorflow",
        marks=[
            pytest.mark.tensorflow,
            pytest.mark.skipif(not HAS_TF, reason="needs the tensorflow extra: pip install 'modelserve[tensorflow]'"),
        ],
    ),
    pytest.param(
        "pytorch",
        marks=[
            pytest.mark.torch,
            pytest.mark.skipif(not HAS_TORCH, reason="needs the torch extra: pip install 'modelserve[torch]'"),
        ],
    ),
]
STRING_PLATFORMS = [p for p in PLATFORMS if p.values[0] != "pytorch"]
SEEDS = {1: 11, 2: 12}  # mlp weights per version
SIZES = [4, 8, 3]


def _onnx_models(root: Path) -> list[str]:
    for version, seed in SEEDS.items():
        om.write(root / "half_onnx", version, om.half_plus_two())
        om.write(root / "mlp_onnx", version, om.mlp(om.random_weights(SIZES, seed)))
        om.write(root / "strings_onnx", version, om.identity(TensorProto.STRING, ["batch"], "x", "y"))
    return ["half_onnx", "mlp_onnx", "strings_onnx"]


def _tf_models(root: Path) -> list[str]:
    from . import tf_models  # TensorFlow only when present

    for version, seed in SEEDS.items():
        tf_models.half_plus_two(root / "half_tensorflow", version)
        tf_models.mlp(root / "mlp_tensorflow", om.random_weights(SIZES, seed), version)
        tf_models.string_identity(root / "strings_tensorflow", version)
    return ["half_tensorflow", "mlp_tensorflow", "strings_tensorflow"]


def _torch_models(root: Path) -> list[str]:
    from . import torch_models  # torch only when present

    for version, seed in SEEDS.items():
        torch_models.half_plus_two_pt2(root / "half_pytorch", version)
        torch_models.mlp_pt2(root / "mlp_pytorch", om.random_weights(SIZES, seed), version)
    return ["half_pytorch", "mlp_pytorch"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract")
    names = _onnx_models(root)
    names += _tf_models(root) if HAS_TF else []
    names += _torch_models(root) if HAS_TORCH else []
    entries = [
        f'config {{ name: "{n}" base_path: "{root / n}" model_platform: "tensorflow" '
        "model_version_policy { all {} } }"
        for n in names
    ]
    (root / "models.config").write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    with running_server(f"--model_config_file={repo / 'models.config'}") as s:
        yield s


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> Iterator[Stub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield Stub(channel, pb.PredictionService)


# ---- clients -------------------------------------------------------------------------------


def rest(server: ServerThread, method: str, path: str, doc: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=60)
    try:
        conn.request(method, path, body=None if doc is None else json.dumps(doc))
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def grpc_predict(
    stub: Stub, model: str, inputs: dict[str, np.ndarray], version: int | None = None, signature: str = ""
) -> dict[str, np.ndarray]:
    request = pb.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for alias, array in inputs.items():
        request.inputs[alias].CopyFrom(from_ndarray(array))
    response = stub.Predict(request, timeout=60)
    return {alias: to_ndarray(proto) for alias, proto in response.outputs.items()}


def grpc_error(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def mlp_expected(version: int, x: np.ndarray) -> np.ndarray:
    return om.mlp_reference(om.random_weights(SIZES, SEEDS[version]), x)


X = np.random.default_rng(99).standard_normal((5, 4)).astype(np.float32)


# ---- REST ----------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_rest_row_predict(server: ServerThread, platform: str) -> None:
    status, body = rest(server, "POST", f"/v1/models/half_{platform}:predict", {"instances": [1.0, 2.0, 5.0]})
    assert (status, body) == (200, {"predictions": [2.5, 3.0, 4.5]})


@pytest.mark.parametrize("platform", PLATFORMS)
def test_rest_columnar_predict(server: ServerThread, platform: str) -> None:
    path = f"/v1/models/half_{platform}/versions/1:predict"
    status, body = rest(server, "POST", path, {"inputs": {"x": [-4.0]}})
    assert (status, body) == (200, {"outputs": [0.0]})


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("version", [1, 2])
def test_rest_mlp_each_version_matches_numpy(server: ServerThread, platform: str, version: int) -> None:
    path = f"/v1/models/mlp_{platform}/versions/{version}:predict"
    status, body = rest(server, "POST", path, {"instances": X.tolist()})
    assert status == 200, body
    np.testing.assert_allclose(np.array(body["predictions"]), mlp_expected(version, X), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_rest_latest_version_answers(server: ServerThread, platform: str) -> None:
    status, body = rest(server, "POST", f"/v1/models/mlp_{platform}:predict", {"instances": X[:2].tolist()})
    assert status == 200, body
    np.testing.assert_allclose(np.array(body["predictions"]), mlp_expected(2, X[:2]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_rest_status_lists_both_versions(server: ServerThread, platform: str) -> None:
    status, body = rest(server, "GET", f"/v1/models/mlp_{platform}")
    assert status == 200
    assert [(v["version"], v["state"]) for v in body["model_version_status"]] == [
        ("2", "AVAILABLE"),
        ("1", "AVAILABLE"),
    ]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_rest_metadata_has_the_same_signature(server: ServerThread, platform: str) -> None:
    status, body = rest(server, "GET", f"/v1/models/mlp_{platform}/versions/1/metadata")
    assert status == 200, body
    assert body["model_spec"]["version"] == "1"
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    for kind, alias, dims in (("inputs", "input", ["-1", "4"]), ("outputs", "output", ["-1", "3"])):
        assert list(sig[kind]) == [alias]
        assert sig[kind][alias]["dtype"] == "DT_FLOAT"
        assert [d["size"] for d in sig[kind][alias]["tensor_shape"]["dim"]] == dims


@pytest.mark.parametrize("platform", STRING_PLATFORMS)
def test_rest_strings_round_trip(server: ServerThread, platform: str) -> None:
    doc = {"instances": ["hello", "wörld", ""]}
    answer = rest(server, "POST", f"/v1/models/strings_{platform}:predict", doc)
    assert answer == (200, {"predictions": doc["instances"]})


@pytest.mark.parametrize("platform", PLATFORMS)
def test_rest_string_for_a_float_input_is_the_same_400(server: ServerThread, platform: str) -> None:
    status, body = rest(server, "POST", f"/v1/models/half_{platform}:predict", {"instances": ["a"]})
    assert status == 400
    assert body["error"] == (
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "a" Type: String is not of expected type: float'
    )


# What each runtime says when its model cannot take a shape: no signature-shape
# check runs before it (TF Serving has none), so the runtime's own words come back.
RUNTIME_SHAPE_ERRORS = {
    "onnx": "INVALID_ARGUMENT : Got invalid dimensions for input: input for the following indices",
    "tensorflow": "Matrix size-incompatible: In[0]: [1,3], In[1]: [4,8]",
    "pytorch": "Guard failed: input.size()[1] == 4",
}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_rest_wrong_shape_is_the_runtimes_400_and_the_next_request_is_served(
    server: ServerThread, platform: str
) -> None:
    doc = {"instances": [[1.0, 2.0, 3.0]]}
    status, body = rest(server, "POST", f"/v1/models/mlp_{platform}:predict", doc)
    assert status == 400
    assert RUNTIME_SHAPE_ERRORS[platform] in body["error"], body["error"]
    status, body = rest(server, "POST", f"/v1/models/mlp_{platform}:predict", {"instances": [[1.0, 2.0, 3.0, 4.0]]})
    assert status == 200
    assert len(body["predictions"]) == 1


@pytest.mark.parametrize("platform", PLATFORMS)
def test_rest_unknown_signature_is_the_same_400(server: ServerThread, platform: str) -> None:
    doc = {"signature_name": "nope", "instances": [1.0]}
    status, body = rest(server, "POST", f"/v1/models/half_{platform}:predict", doc)
    assert (status, body) == (400, {"error": 'Serving signature name: "nope" not found in signature def'})


# ---- gRPC ----------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("version", [1, 2])
def test_grpc_mlp_each_version_matches_numpy(stub: Stub, platform: str, version: int) -> None:
    out = grpc_predict(stub, f"mlp_{platform}", {"input": X}, version)
    assert list(out) == ["output"]
    assert out["output"].dtype == np.float32
    np.testing.assert_allclose(out["output"], mlp_expected(version, X), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_grpc_half_plus_two(stub: Stub, platform: str) -> None:
    x = np.array([0.0, 1.0, -3.0], np.float32)
    np.testing.assert_array_equal(grpc_predict(stub, f"half_{platform}", {"x": x})["y"], 0.5 * x + 2)


@pytest.mark.parametrize("platform", STRING_PLATFORMS)
def test_grpc_strings_round_trip_any_bytes(stub: Stub, platform: str) -> None:
    x = np.array([b"plain", "wörld".encode(), b""], dtype=object)
    y = grpc_predict(stub, f"strings_{platform}", {"x": x})["y"]
    assert list(y) == list(x)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_grpc_metadata_has_the_same_signature(stub: Stub, platform: str) -> None:
    request = pb.GetModelMetadataRequest()
    request.model_spec.name = f"half_{platform}"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=60)
    sigs = pb.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sigs)
    sig = sigs.signature_def["serving_default"]
    assert list(sig.inputs) == ["x"] and list(sig.outputs) == ["y"]
    assert sig.inputs["x"].dtype == sig.outputs["y"].dtype == 1  # DT_FLOAT
    assert sig.method_name == "tensorflow/serving/predict"


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(
    "array,name",
    [
        (np.array([1], np.int32), "int32"),
        (np.array([b"a"], dtype=object), "string"),  # strings never reach torch, or any model
    ],
)
def test_grpc_wrong_dtype_is_the_same_invalid_argument(stub: Stub, platform: str, array: np.ndarray, name: str) -> None:
    code, details = grpc_error(lambda: grpc_predict(stub, f"half_{platform}", {"x": array}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == f"Expects arg[0] to be float but {name} is provided"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_grpc_missing_version_is_the_same_not_found(stub: Stub, platform: str) -> None:
    x = np.ones(1, np.float32)
    code, details = grpc_error(lambda: grpc_predict(stub, f"half_{platform}", {"x": x}, 3))
    assert code == grpc.StatusCode.NOT_FOUND
    assert details == f"Servable not found for request: Specific(half_{platform}, 3)"
