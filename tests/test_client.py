"""``modelserve.client`` against a real server: gRPC and REST, sync and async, the same answers.

One contract, four clients. The last tests run the client in a child process
where TensorFlow cannot be imported at all.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelserve.client import (
    AsyncGrpcClient,
    AsyncRestClient,
    ClientError,
    GrpcClient,
    RestClient,
    make_ndarray,
    make_tensor_proto,
)
from modelserve.errors import Code
from modelserve.testing import ServerThread, running_server

from . import grpc_models as gm
from . import onnx_models as om


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gm.build_repository(tmp_path_factory.mktemp("client_models"))


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    with running_server(f"--model_config_file={repo}") as s:
        yield s


class Sync:
    """An async facade over a sync client, so one test body drives all four."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call


CLIENTS = ["grpc", "rest", "async_grpc", "async_rest"]


def make_client(kind: str, server: ServerThread) -> Any:
    return {
        "grpc": lambda: Sync(GrpcClient(server.grpc_target)),
        "rest": lambda: Sync(RestClient(server.rest_url)),
        "async_grpc": lambda: AsyncGrpcClient(server.grpc_target),
        "async_rest": lambda: AsyncRestClient(server.rest_url),
    }[kind]()


def run(kind: str, server: ServerThread, scenario: Any) -> None:
    async def main() -> None:
        client = make_client(kind, server)
        try:
            await scenario(client)
        finally:
            await client.close()

    asyncio.run(main())


@pytest.mark.parametrize("kind", CLIENTS)
def test_predict(kind: str, server: ServerThread) -> None:
    data = np.random.default_rng(5).standard_normal((3, gm.MLP_SIZES[0])).astype(np.float32)
    expected = om.mlp_reference(gm.mlp_weights(), data)

    async def scenario(client: Any) -> None:
        out = await client.predict("mlp", {"input": data})
        assert set(out) == {"output"} and out["output"].dtype == np.float32
        np.testing.assert_allclose(out["output"], expected, rtol=1e-4, atol=1e-4)
        bare = await client.predict("mlp", data)  # one input: no name needed
        np.testing.assert_allclose(bare["output"], expected, rtol=1e-4, atol=1e-4)

    run(kind, server, scenario)


@pytest.mark.parametrize("kind", CLIENTS)
def test_versions_labels_filters_and_dtypes(kind: str, server: ServerThread) -> None:
    async def scenario(client: Any) -> None:
        zeros = {"x": np.zeros(2, np.float32)}
        assert (await client.predict("versions", zeros))["y"].tolist() == [3.0, 3.0]
        assert (await client.predict("versions", zeros, version=1))["y"].tolist() == [1.0, 1.0]
        assert (await client.predict("versions", zeros, label="canary"))["y"].tolist() == [2.0, 2.0]
        a = np.array([[1.0, 2.0]], np.float32)
        out = await client.predict("two", {"a": a, "b": np.array([7], np.int64)}, output_filter=["twice_b"])
        assert set(out) == {"twice_b"} and out["twice_b"].dtype == np.int64 and out["twice_b"].tolist() == [14]
        strings = np.array([[b"x", "é".encode()]], dtype=object)
        np.testing.assert_array_equal((await client.predict("id_string", {"x": strings}))["y"], strings)
        ints = np.array([[-(2**62), 2**62]], np.int64)
        np.testing.assert_array_equal((await client.predict("id_int64", {"x": ints}))["y"], ints)

    run(kind, server, scenario)


@pytest.mark.parametrize("kind", CLIENTS)
def test_metadata_and_status(kind: str, server: ServerThread) -> None:
    async def scenario(client: Any) -> None:
        metadata = await client.metadata("two")
        assert (metadata.name, metadata.version) == ("two", 1)
        signature = metadata.signatures["serving_default"]
        assert signature.inputs["a"].dtype == "DT_FLOAT" and signature.inputs["a"].shape == (-1, 2)
        assert signature.outputs["twice_b"].dtype == "DT_INT64"
        assert (await client.metadata("versions", label="stable")).version == 1
        rows = await client.status("versions")
        assert [(r.version, r.state, r.error_code) for r in rows] == [
            (3, "AVAILABLE", "OK"),
            (2, "AVAILABLE", "OK"),
            (1, "AVAILABLE", "OK"),
        ]
        assert [r.version for r in await client.status("versions", version=2)] == [2]

    run(kind, server, scenario)


@pytest.mark.parametrize("kind", CLIENTS)
def test_classify_and_regress(kind: str, server: ServerThread) -> None:
    async def scenario(client: Any) -> None:
        examples = [{"x": [1.0, 2.0], "k": 1}, {"x": np.array([0.5, -1.0], np.float32), "k": 0}]
        assert await client.classify("by_name", examples) == [[("", 3.0), ("", 5.0)], [("", 1.0), ("", -2.0)]]
        assert await client.regress("by_name_regress", [{"x": [1.0, 2.0]}, {"x": [5.0, 0.5]}]) == [-1.0, 4.5]
        assert await client.regress("tf_regress", [{"n": 1}], context={"lang": b"en"}) == [1.5]
        classes = await client.classify("tf_classify", [{"w": b"abc"}])
        assert classes[0][0][1] == 0.5 and "abc" in classes[0][0][0]

    run(kind, server, scenario)


@pytest.mark.parametrize("kind", CLIENTS)
def test_errors_carry_code_and_message(kind: str, server: ServerThread) -> None:
    async def scenario(client: Any) -> None:
        with pytest.raises(ClientError) as info:
            await client.predict("nope", {"x": np.zeros(1, np.float32)})
        assert info.value.code == Code.NOT_FOUND
        assert info.value.message.startswith("Servable not found for request: ")
        with pytest.raises(ClientError) as info:
            await client.status("versions", version=9)
        assert info.value.code == Code.NOT_FOUND
        assert info.value.message == "Could not find version 9 of model versions"
        with pytest.raises(ClientError) as info:
            await client.predict("half", {"x": np.zeros(1, np.float32)}, label="gold")
        assert info.value.code == Code.INVALID_ARGUMENT

    run(kind, server, scenario)


@pytest.mark.parametrize("kind", CLIENTS)
def test_unknown_signature_is_found_out_by_the_client(kind: str, server: ServerThread) -> None:
    async def scenario(client: Any) -> None:
        with pytest.raises(ClientError) as info:
            await client.predict("mlp", np.zeros((1, gm.MLP_SIZES[0]), np.float32), signature="nope")
        assert (info.value.code, info.value.message) == (Code.INVALID_ARGUMENT, "Model mlp has no signature nope")

    run(kind, server, scenario)


def test_reload_config_over_grpc(tmp_path: Path) -> None:
    om.write(tmp_path / "a", 1, om.half_plus_two())
    om.write(tmp_path / "b", 2, om.version_marker(2))
    with running_server(f"--model_base_path={tmp_path / 'a'}", "--model_name=a") as s:
        with GrpcClient(s.grpc_target) as client:
            client.reload_config(gm.config_text([gm.model_entry(tmp_path, "b")]))
            assert client.predict("b", {"x": np.zeros(1, np.float32)})["y"].tolist() == [2.0]
            assert client.status("a")[0].state == "END"
        with RestClient(s.rest_url) as rest, pytest.raises(ClientError) as info:
            rest.reload_config("")
        assert info.value.code == Code.UNIMPLEMENTED


def test_async_reload_config(tmp_path: Path) -> None:
    om.write(tmp_path / "a", 1, om.half_plus_two())

    async def main(target: str) -> None:
        async with AsyncGrpcClient(target) as client:
            await client.reload_config(gm.config_text([]))
            with pytest.raises(ClientError) as info:
                await client.predict("a", {"x": np.zeros(1, np.float32)})
            assert info.value.code == Code.NOT_FOUND

    with running_server(f"--model_base_path={tmp_path / 'a'}", "--model_name=a") as s:
        asyncio.run(main(s.grpc_target))


def test_unreachable_server_is_unavailable() -> None:
    with GrpcClient("127.0.0.1:1", timeout=5) as client, pytest.raises(ClientError) as info:
        client.status("x")
    assert info.value.code == Code.UNAVAILABLE
    with RestClient("http://127.0.0.1:1", timeout=5) as rest, pytest.raises(ClientError) as info:
        rest.status("x")
    assert info.value.code == Code.UNAVAILABLE


def test_tensor_helpers_round_trip() -> None:
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    np.testing.assert_array_equal(make_ndarray(make_tensor_proto(array)), array)


def test_big_answers_need_no_client_option(server: ServerThread) -> None:
    big = np.ones((1, 3_000_000), np.float32)  # 12 MB answer, over gRPC's default 4 MiB
    with GrpcClient(server.grpc_target) as client:
        out = client.predict("half", {"x": big})
    assert out["y"].shape == big.shape and float(out["y"][0, 0]) == 2.5


NO_TENSORFLOW = textwrap.dedent(
    """
    import sys
    sys.modules["tensorflow"] = None  # any import of TensorFlow fails from here on
    import numpy as np
    from modelserve.client import GrpcClient, RestClient, make_ndarray, make_tensor_proto

    grpc_target, rest_url = sys.argv[1], sys.argv[2]
    data = np.linspace(-1, 1, 784 * 2, dtype=np.float32).reshape(2, 784)
    results = []
    for client in (GrpcClient(grpc_target), RestClient(rest_url)):
        with client:
            results.append(client.predict("mlp", {"input": data})["output"])
            assert client.metadata("mlp").signatures["serving_default"].inputs["input"].dtype == "DT_FLOAT"
            assert client.status("mlp")[0].state == "AVAILABLE"
            assert client.regress("tf_regress", [{"n": 1}]) == [1.5]
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)
    proto = make_tensor_proto(data)
    assert (make_ndarray(proto) == data).all()
    loaded = sorted(m for m, v in sys.modules.items() if m.split(".")[0] == "tensorflow" and v is not None)
    assert not loaded, loaded
    np.save(sys.stdout.buffer, results[0])
    """
)


def test_client_without_tensorflow(server: ServerThread) -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW, server.grpc_target, server.rest_url],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    import io

    out = np.load(io.BytesIO(done.stdout))
    data = np.linspace(-1, 1, 784 * 2, dtype=np.float32).reshape(2, 784)
    np.testing.assert_allclose(out, om.mlp_reference(gm.mlp_weights(), data), rtol=1e-4, atol=1e-4)


def test_numpy_scalar_features_keep_their_type_in_grpc_examples() -> None:
    # np.float32 is not a Python float: it must still go out as a float_list, not int64 0.
    from modelserve.client.protos import examples_request
    from modelserve.protos import pb

    request = examples_request(
        pb.RegressionRequest,
        "m",
        [{"x": np.float32(0.5), "n": np.int64(3), "v": np.array([1.5, 2.5])}],
        None,
        None,
        None,
        None,
    )
    feature = request.input.example_list.examples[0].features.feature
    assert list(feature["x"].float_list.value) == [0.5]
    assert list(feature["n"].int64_list.value) == [3]
    assert list(feature["v"].float_list.value) == [1.5, 2.5]
