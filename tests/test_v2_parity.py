"""One model, five ways in: a Triton-style ``simple`` model (two FP32 [-1,16] inputs, their sum and
difference) answers the same through V2 REST (JSON and binary tensor data), V2 gRPC, TF Serving REST
and TF Serving gRPC, on both gRPC server models. Expected values come from numpy; every wire format is
written and read here by hand (V2) or by the official-shaped clients (TF Serving)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from modelserve.client import GrpcClient
from modelserve.protos import INFERENCE_SERVICE, Stub
from modelserve.testing import ServerThread, running_server

from . import onnx_models as om
from .test_v2_grpc import outputs_of, raw_request
from .test_v2_rest import from_wire, infer, request, split_answer, to_wire

FP32 = {"INPUT0": "FP32", "INPUT1": "FP32"}


@pytest.fixture(scope="module", params=["threaded", "asyncio"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """grpcio's threaded server, and grpc.aio (which --enable_batching picks)."""
    root: Path = tmp_path_factory.mktemp("parity")
    om.write(root / "simple", 1, om.simple())
    batching = ("--enable_batching",) if request.param == "asyncio" else ()
    with running_server(f"--model_base_path={root / 'simple'}", "--model_name=simple", *batching) as s:
        yield s


def v2_rest_json(server: ServerThread, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    doc = {
        "inputs": [
            {"name": n, "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}
            for n, x in (("INPUT0", a), ("INPUT1", b))
        ]
    }
    status, _, body = infer(server, "/v2/models/simple/infer", doc)
    assert status == 200, body
    outputs = json.loads(body)["outputs"]
    return {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in outputs}


def v2_rest_binary(server: ServerThread, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    doc = {
        "inputs": [
            {"name": n, "datatype": "FP32", "shape": list(x.shape), "parameters": {"binary_data_size": x.nbytes}}
            for n, x in (("INPUT0", a), ("INPUT1", b))
        ],
        "parameters": {"binary_data_output": True},
    }
    status, headers, body = infer(server, "/v2/models/simple/infer", doc, to_wire(a, "FP32") + to_wire(b, "FP32"))
    assert status == 200, body
    head, data = split_answer(headers, body)
    arrays, offset = {}, 0
    for output in head["outputs"]:
        size = output["parameters"]["binary_data_size"]
        arrays[output["name"]] = from_wire(data[offset : offset + size], "FP32", output["shape"])
        offset += size
    return arrays


def v2_grpc(server: ServerThread, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = Stub(channel, INFERENCE_SERVICE).ModelInfer(
            raw_request("simple", {"INPUT0": a, "INPUT1": b}, FP32), timeout=10
        )
    return outputs_of(response)


def tfs_rest(server: ServerThread, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    body = json.dumps({"inputs": {"INPUT0": a.tolist(), "INPUT1": b.tolist()}}).encode()
    status, _, answer = request(server, "POST", "/v1/models/simple:predict", body)
    assert status == 200, answer
    return {k: np.array(v, np.float32) for k, v in json.loads(answer)["outputs"].items()}


def tfs_grpc(server: ServerThread, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    with GrpcClient(server.grpc_target) as client:
        return dict(client.predict("simple", {"INPUT0": a, "INPUT1": b}))


def test_simple_answers_the_same_on_every_front_end(server: ServerThread) -> None:
    a = np.arange(32, dtype=np.float32).reshape(2, 16) * 0.25
    b = np.full((2, 16), 1.5, dtype=np.float32)
    expected = {"OUTPUT0": a + b, "OUTPUT1": a - b}
    answers = {
        "V2 REST JSON": v2_rest_json(server, a, b),
        "V2 REST binary": v2_rest_binary(server, a, b),
        "V2 gRPC": v2_grpc(server, a, b),
        "TF Serving REST": tfs_rest(server, a, b),
        "TF Serving gRPC": tfs_grpc(server, a, b),
    }
    for front_end, outputs in answers.items():
        assert outputs.keys() == expected.keys(), front_end
        for name, want in expected.items():
            assert outputs[name].dtype == np.float32 and outputs[name].shape == (2, 16), (front_end, name)
            np.testing.assert_array_equal(outputs[name], want, err_msg=front_end)
