"""tritonclient's HTTP clients (sync and asyncio), unchanged, against modelserve's V2 REST API.

tritonclient pins protobuf < 7, so this runs in the protobuf-6 venv (scripts/test.sh); elsewhere it
skips. Expected values are computed with numpy.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelserve.testing import ServerThread, running_server

from . import onnx_models as om
from .test_v2_rest import DATATYPES
from .traffic import steady_traffic

httpclient = pytest.importorskip("tritonclient.http")
utils = pytest.importorskip("tritonclient.utils")

SERVED = sorted(set(DATATYPES) - {"BF16"})  # onnxruntime takes no bfloat16 arrays (test_v2_rest.py)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("tritonclient")
    om.write(root / "simple", 1, om.simple())
    names = ["simple"]
    for datatype in SERVED:
        elem = DATATYPES[datatype][0]
        om.write(root / f"id_{datatype.lower()}", 1, om.identity(elem, ["batch"], "x", "y"))
        names.append(f"id_{datatype.lower()}")
    entries = [f'config {{ name: "{n}" base_path: "{root / n}" model_platform: "onnx" }}' for n in names]
    config: Path = root / "models.config"
    config.write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    with running_server(f"--model_config_file={config}") as s:
        yield s


def url(server: ServerThread) -> str:
    return f"127.0.0.1:{server.server.rest_port}"


def simple_inputs(binary: bool) -> tuple[np.ndarray, np.ndarray, list[httpclient.InferInput]]:
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.float32)
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "FP32"), httpclient.InferInput("INPUT1", [1, 16], "FP32")]
    inputs[0].set_data_from_numpy(a, binary_data=binary)
    inputs[1].set_data_from_numpy(b, binary_data=binary)
    return a, b, inputs


def test_health_metadata(server: ServerThread) -> None:
    client = httpclient.InferenceServerClient(url(server))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("simple") and not client.is_model_ready("nosuch")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("simple")
    assert metadata["platform"] == "onnxruntime_onnx" and metadata["versions"] == ["1"]
    assert [i["shape"] for i in metadata["inputs"]] == [[-1, 16], [-1, 16]]
    with pytest.raises(utils.InferenceServerException, match="nosuch"):
        client.get_model_metadata("nosuch")


@pytest.mark.parametrize("binary", [True, False])
def test_simple(server: ServerThread, binary: bool) -> None:
    client = httpclient.InferenceServerClient(url(server))
    a, b, inputs = simple_inputs(binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "OUTPUT1")]
    result = client.infer("simple", inputs, outputs=outputs, request_id="r1")
    assert result.get_response()["id"] == "r1"
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    # No outputs named: tritonclient asks for all of them as binary data.
    result = client.infer("simple", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("datatype", SERVED)
def test_every_datatype(server: ServerThread, datatype: str, binary: bool) -> None:
    if datatype == "FP16" and not binary:
        pytest.skip("FP16 travels only as binary data (as Triton)")
    _, dtype, values = DATATYPES[datatype]
    array = np.array(values, dtype=dtype)
    client = httpclient.InferenceServerClient(url(server))
    tensor = httpclient.InferInput("x", [3], datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    result = client.infer(
        f"id_{datatype.lower()}", [tensor], outputs=[httpclient.InferRequestedOutput("y", binary_data=binary)]
    )
    got = result.as_numpy("y")
    if datatype == "BYTES":
        assert [v if isinstance(v, bytes) else v.encode() for v in got] == values
    else:
        assert got.dtype == array.dtype
        np.testing.assert_array_equal(got, array)


def test_asyncio_client(server: ServerThread) -> None:
    aio = pytest.importorskip("tritonclient.http.aio")

    async def run() -> np.ndarray:
        client = aio.InferenceServerClient(url(server))
        try:
            assert await client.is_server_ready()
            inputs = [aio.InferInput("INPUT0", [1, 16], "FP32"), aio.InferInput("INPUT1", [1, 16], "FP32")]
            inputs[0].set_data_from_numpy(np.full((1, 16), 3, np.float32))
            inputs[1].set_data_from_numpy(np.full((1, 16), 1, np.float32))
            result = await client.infer("simple", inputs)
            return result.as_numpy("OUTPUT0")
        finally:
            await client.close()

    np.testing.assert_array_equal(asyncio.run(run()), np.full((1, 16), 4, np.float32))


def test_errors(server: ServerThread) -> None:
    client = httpclient.InferenceServerClient(url(server))
    _, _, inputs = simple_inputs(True)
    with pytest.raises(utils.InferenceServerException) as found:
        client.infer("nosuch", inputs)
    assert found.value.status() == "404"
    wrong = httpclient.InferInput("INPUT0", [1, 16], "FP64")
    wrong.set_data_from_numpy(np.zeros((1, 16), np.float64))
    with pytest.raises(utils.InferenceServerException) as found:
        client.infer("simple", [wrong, inputs[1]])
    assert found.value.status() == "400"


def test_the_docs_example(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/v2.md's tritonclient.http example, run as printed (only its port changed)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "v2.md").read_text()
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", text, re.S) if "tritonclient.http" in c]
    exec(code.replace("localhost:8501", url(server)), {})
    printed = capsys.readouterr().out
    assert printed.split() == str(np.arange(1, 17, dtype=np.float32).reshape(1, 16)).split()


def test_repository(server: ServerThread) -> None:
    """tritonclient.http's repository calls: unload and load one model while another serves, with no
    failed request; NOT_FOUND (404) for a model not in the config."""
    client = httpclient.InferenceServerClient(url(server))
    rows = {(m["name"], m.get("version")): m["state"] for m in client.get_model_repository_index()}
    assert rows[("id_int8", "1")] == "READY" and rows[("simple", "1")] == "READY"
    other = httpclient.InferenceServerClient(url(server))
    a, b, inputs = simple_inputs(True)

    def traffic() -> None:  # another model, served all along
        np.testing.assert_array_equal(other.infer("simple", inputs).as_numpy("OUTPUT0"), a + b)

    with steady_traffic(traffic):
        client.unload_model("id_int8")
        assert not client.is_model_ready("id_int8") and client.is_server_ready()
        states = {m["name"]: m for m in client.get_model_repository_index()}
        assert (states["id_int8"]["state"], states["id_int8"]["reason"]) == ("UNAVAILABLE", "unloaded")
        client.load_model("id_int8")
        assert client.is_model_ready("id_int8")
    for call in (client.load_model, client.unload_model):
        with pytest.raises(utils.InferenceServerException) as info:
            call("nope")
        assert info.value.status() == "404" and "nope" in str(info.value.message())
