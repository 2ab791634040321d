"""tritonclient's gRPC and asyncio gRPC clients, unchanged, against modelserve's V2 gRPC service.

tritonclient pins protobuf < 7: this file runs in the protobuf-6 venv (scripts/test.sh); in a venv
without tritonclient it is skipped.
"""

from __future__ import annotations

import asyncio
import queue
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
aioclient = pytest.importorskip("tritonclient.grpc.aio")
from tritonclient.utils import InferenceServerException  # noqa: E402

from modelserve.testing import ServerThread, running_server  # noqa: E402

from .test_v2_grpc import NUMPY, repository, sample, simple_inputs  # noqa: E402


@pytest.fixture(scope="module", params=["threaded", "asyncio"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    config: Path = repository(tmp_path_factory.mktemp("triton"))
    batching = ("--enable_batching",) if request.param == "asyncio" else ()
    with running_server(f"--model_config_file={config}", *batching) as s:
        yield s


@pytest.fixture
def client(server: ServerThread) -> Iterator[Any]:
    with grpcclient.InferenceServerClient(url=server.grpc_target) as triton:
        yield triton


def simple_request() -> tuple[list[Any], np.ndarray, np.ndarray]:
    a, b = simple_inputs()
    inputs = [
        grpcclient.InferInput("INPUT0", list(a.shape), "FP32"),
        grpcclient.InferInput("INPUT1", list(b.shape), "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs, a, b


def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert client.is_model_ready("versions", "1")
    assert not client.is_model_ready("nope")
    assert client.get_server_metadata().name == "modelserve"
    metadata = client.get_model_metadata("simple", as_json=True)
    assert metadata["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        ("INPUT0", "FP32", ["-1", "16"]),
        ("INPUT1", "FP32", ["-1", "16"]),
    ]


def test_simple(client: Any) -> None:
    inputs, a, b = simple_request()
    result = client.infer("simple", inputs, request_id="r1", outputs=[grpcclient.InferRequestedOutput("OUTPUT1")])
    assert result.get_response().id == "r1"
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.as_numpy("OUTPUT0") is None
    both = client.infer("simple", inputs)
    np.testing.assert_array_equal(both.as_numpy("OUTPUT0"), a + b)


def test_every_datatype(client: Any) -> None:
    inputs = []
    for datatype in NUMPY:
        tensor = grpcclient.InferInput(f"x_{datatype}", [2, 3], datatype)
        tensor.set_data_from_numpy(sample(datatype))
        inputs.append(tensor)
    result = client.infer("ids", inputs)
    for datatype in NUMPY:
        np.testing.assert_array_equal(result.as_numpy(f"y_{datatype}"), sample(datatype), err_msg=datatype)


def test_errors(client: Any) -> None:
    inputs, _, _ = simple_request()
    for call, code in (
        (lambda: client.infer("nope", inputs), "StatusCode.NOT_FOUND"),
        (lambda: client.infer("simple", inputs, model_version="9"), "StatusCode.NOT_FOUND"),
        (lambda: client.infer("simple", inputs[:1]), "StatusCode.INVALID_ARGUMENT"),
        (lambda: client.get_model_metadata("nope"), "StatusCode.NOT_FOUND"),
    ):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() == code


def test_stream(client: Any) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    inputs, a, b = simple_request()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        client.async_stream_infer("simple", inputs, request_id="1")
        client.async_stream_infer("nope", inputs, request_id="2")
        client.async_stream_infer("simple", inputs, request_id="3")
        got = [answers.get(timeout=20) for _ in range(3)]
    finally:
        client.stop_stream()
    np.testing.assert_array_equal(got[0][0].as_numpy("OUTPUT0"), a + b)
    assert got[1][1] is not None and "nope" in got[1][1].message()
    assert got[2][0].get_response().id == "3"


def test_repository(client: Any) -> None:
    index = {
        (m["name"], m.get("version", "")): m["state"] for m in client.get_model_repository_index(as_json=True)["models"]
    }
    assert index[("spare", "1")] == "READY"
    client.unload_model("spare")
    assert not client.is_model_ready("spare")
    states = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert (states["spare"]["state"], states["spare"]["reason"]) == ("UNAVAILABLE", "unloaded")
    client.load_model("spare")
    assert client.is_model_ready("spare")
    with pytest.raises(InferenceServerException) as info:
        client.load_model("nope")
    assert info.value.status() == "StatusCode.NOT_FOUND"


def test_asyncio_client(server: ServerThread) -> None:
    async def run() -> tuple[bool, np.ndarray]:
        async with aioclient.InferenceServerClient(url=server.grpc_target) as triton:
            a, b = simple_inputs()
            inputs = [aioclient.InferInput("INPUT0", [2, 16], "FP32"), aioclient.InferInput("INPUT1", [2, 16], "FP32")]
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(b)
            ready = await triton.is_model_ready("simple")
            return ready, (await triton.infer("simple", inputs)).as_numpy("OUTPUT0")

    ready, total = asyncio.run(run())
    a, b = simple_inputs()
    assert ready
    np.testing.assert_array_equal(total, a + b)


def test_the_docs_example(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/v2.md's tritonclient.grpc example, run as printed (only its port changed)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "v2.md").read_text()
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", text, re.S) if "tritonclient.grpc" in c]
    exec(code.replace("localhost:8500", server.grpc_target), {})
    printed = capsys.readouterr().out
    assert printed.split() == str(np.arange(1, 17, dtype=np.float32).reshape(1, 16)).split()
