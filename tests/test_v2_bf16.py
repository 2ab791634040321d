"""BF16 end to end through the Open Inference Protocol, on a platform that runs it (PyTorch).

onnxruntime's Python binding takes no bfloat16 input (docs/v2.md), so the V2 datatype tests on
ONNX models leave BF16 to the codecs; here a torch.export program doubles a bfloat16 tensor and
the answer is checked through V2 REST (binary: Triton sends BF16 only as binary) and V2 gRPC
(raw), against bfloat16 arithmetic done here with ml_dtypes.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import grpc
import ml_dtypes
import numpy as np
import pytest

from modelserve.protos import INFERENCE_SERVICE, Stub, pb
from modelserve.testing import ServerThread, running_server

torch = pytest.importorskip("torch", reason="needs the torch extra: pip install 'modelserve[torch]'")

from . import torch_models as tm  # noqa: E402  (needs torch)
from .test_v2_rest import infer, split_answer  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
X = np.array([[1.5, -2.25, 3.0, 0.0078125], [100.0, -0.5, 7.0, 1e-3]], dtype=BF16)
EXPECTED = (X.astype(np.float32) * 2).astype(BF16)  # doubling is exact in bfloat16


class Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": x * 2}


@pytest.fixture(scope="module", params=["threaded", "asyncio"])
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    base = tmp_path_factory.mktemp("models") / "double"
    tm.export(Double(), (torch.ones(2, 4, dtype=torch.bfloat16),), base)
    flags = [f"--model_base_path={base}", "--model_name=double"]
    if request.param == "asyncio":
        flags.append("--enable_batching")
    with running_server(*flags) as s:
        yield s


def test_bf16_through_v2_rest_binary(server: ServerThread) -> None:
    doc = {
        "inputs": [{"name": "x", "datatype": "BF16", "shape": [2, 4], "parameters": {"binary_data_size": 16}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }
    status, headers, body = infer(server, "/v2/models/double/infer", doc, X.tobytes())
    assert status == 200, body
    answer, data = split_answer(headers, body)
    (output,) = answer["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("y", "BF16", [2, 4])
    got = np.frombuffer(data, dtype=BF16).reshape(2, 4)
    assert got.tobytes() == EXPECTED.tobytes()


def test_bf16_through_v2_grpc_raw(server: ServerThread) -> None:
    request = pb.ModelInferRequest(model_name="double")
    request.inputs.add(name="x", datatype="BF16", shape=[2, 4])
    request.raw_input_contents.append(X.tobytes())
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = Stub(channel, INFERENCE_SERVICE).ModelInfer(request, timeout=30)
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("y", "BF16", [2, 4])
    got = np.frombuffer(response.raw_output_contents[0], dtype=BF16).reshape(2, 4)
    assert got.tobytes() == EXPECTED.tobytes()


def test_bf16_metadata(server: ServerThread) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=30)
    try:
        conn.request("GET", "/v2/models/double")
        doc = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert doc["platform"] == "pytorch_exportedprogram"
    assert [(t["name"], t["datatype"], t["shape"]) for t in doc["inputs"]] == [("x", "BF16", [-1, 4])]
