"""``modelserve.client``'s V2 methods (the Open Inference Protocol) against a real server: REST binary
and JSON, gRPC, sync and async, every datatype but BF16 (onnxruntime takes none, tests/onnx_models.py)
both ways; metadata, readiness, the repository calls, errors, tokens and TLS."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from modelserve.client import AsyncGrpcClient, AsyncRestClient, ClientError, GrpcClient, RestClient
from modelserve.errors import Code
from modelserve.testing import ServerThread, running_server

from . import onnx_models as om
from .pki import make_pki, ssl_config, write_pem_files

ADMIN = "v2-admin-token-0123456789abcdef"
INFER = "v2-infer-token-0123456789abcdef"
# V2 datatype -> numpy dtype and sample values, written here independently of the codecs.
SAMPLES: dict[str, tuple[Any, list[Any]]] = {
    "BOOL": (np.bool_, [True, False, True, True, False, False]),
    "UINT8": (np.uint8, [0, 1, 7, 128, 254, 255]),
    "UINT16": (np.uint16, [0, 1, 7, 300, 65534, 65535]),
    "UINT32": (np.uint32, [0, 1, 7, 70000, 2**32 - 2, 2**32 - 1]),
    "UINT64": (np.uint64, [0, 1, 7, 2**40, 2**64 - 2, 2**64 - 1]),
    "INT8": (np.int8, [-128, -1, 0, 1, 7, 127]),
    "INT16": (np.int16, [-(2**15), -1, 0, 1, 7, 2**15 - 1]),
    "INT32": (np.int32, [-(2**31), -1, 0, 1, 7, 2**31 - 1]),
    "INT64": (np.int64, [-(2**63), -1, 0, 1, 7, 2**63 - 1]),
    "FP16": (np.float16, [0.5, -2.0, 65504.0, 0.0, 1.5, -0.25]),
    "FP32": (np.float32, [0.5, -2.25, 1e30, 0.0, 3.0, -1e-30]),
    "FP64": (np.float64, [0.1, -2.5, 1e300, 0.0, 3.0, -1e-300]),
    "BYTES": (np.object_, [b"", b"abc", "h\u00e9".encode(), b"x" * 100, b"0", b"last"]),
}
JSON_TYPES = [d for d in SAMPLES if d != "FP16"]  # FP16 travels only as binary data (the protocol's rule)
KINDS = ["rest", "rest_json", "async_rest", "async_rest_json", "grpc", "async_grpc"]


def sample(datatype: str) -> np.ndarray:
    dtype, values = SAMPLES[datatype]
    array = np.empty(len(values), dtype=object) if dtype is np.object_ else np.array(values, dtype=dtype)
    if dtype is np.object_:
        array[:] = values
    return array.reshape(2, 3)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("client_v2")
    om.write(root / "simple", 1, om.simple())
    om.write(root / "ids", 1, om.identities())
    om.write(root / "json_ids", 1, om.identities(JSON_TYPES))
    om.write(root / "spare", 1, om.half_plus_two())
    entries = [f'config {{ name: "{n}" base_path: "{root / n}" model_platform: "onnx" }}' for n in ("simple", "ids")]
    entries += [
        f'config {{ name: "{n}" base_path: "{root / n}" model_platform: "onnx" }}' for n in ("json_ids", "spare")
    ]
    path = root / "models.config"
    path.write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    return path


@pytest.fixture(scope="module")
def server(config: Path) -> Iterator[ServerThread]:
    with running_server(f"--model_config_file={config}") as s:
        yield s


class Client:
    """One face for the six ways: awaitable methods, REST's ``binary`` set for the JSON kinds."""

    def __init__(self, kind: str, server: ServerThread) -> None:
        self.kind = kind
        self.binary = not kind.endswith("_json")
        rest = kind.removeprefix("async_").startswith("rest")
        cls: Any = {
            (False, False): GrpcClient,
            (False, True): RestClient,
            (True, False): AsyncGrpcClient,
            (True, True): AsyncRestClient,
        }[(kind.startswith("async_"), rest)]
        self.client = cls(server.rest_url if rest else server.grpc_target)
        self.rest = rest

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "v2_infer" and self.rest:
            kwargs["binary"] = self.binary
        result = getattr(self.client, name)(*args, **kwargs)
        return await result if asyncio.iscoroutine(result) else result

    async def close(self) -> None:
        await self.call("close")


def run(kind: str, server: ServerThread, scenario: Any) -> None:
    async def main() -> None:
        client = Client(kind, server)
        try:
            await scenario(client)
        finally:
            await client.close()

    asyncio.run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_every_datatype_both_ways(server: ServerThread, kind: str) -> None:
    model, types = ("json_ids", JSON_TYPES) if kind.endswith("_json") else ("ids", list(SAMPLES))
    sent = {f"x_{d}": sample(d) for d in types}

    async def scenario(client: Client) -> None:
        got = await client.call("v2_infer", model, sent)
        assert sorted(got) == sorted(f"y_{d}" for d in types)
        for datatype in types:
            out, expected = got[f"y_{datatype}"], sample(datatype)
            assert out.dtype == expected.dtype and out.shape == (2, 3), datatype
            assert out.tolist() == expected.tolist(), datatype

    run(kind, server, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_simple_outputs_version_and_errors(server: ServerThread, kind: str) -> None:
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    b = np.full((1, 16), 3, np.float32)

    async def scenario(client: Client) -> None:
        both = await client.call("v2_infer", "simple", {"INPUT0": a, "INPUT1": b}, parameters={"priority": 1})
        np.testing.assert_array_equal(both["OUTPUT0"], a + b)
        np.testing.assert_array_equal(both["OUTPUT1"], a - b)
        one = await client.call("v2_infer", "simple", {"INPUT0": a, "INPUT1": b}, version=1, outputs=["OUTPUT1"])
        assert list(one) == ["OUTPUT1"]
        np.testing.assert_array_equal(one["OUTPUT1"], a - b)
        with pytest.raises(ClientError) as info:
            await client.call("v2_infer", "nosuch", {"INPUT0": a, "INPUT1": b})
        assert info.value.code == Code.NOT_FOUND and "nosuch" in info.value.message
        with pytest.raises(ClientError) as info:
            await client.call("v2_infer", "simple", {"INPUT0": a.astype(np.float64), "INPUT1": b})
        assert info.value.code == Code.INVALID_ARGUMENT and info.value.message
        if client.rest:
            assert info.value.http_status == 400

    run(kind, server, scenario)


def test_fp16_needs_binary(server: ServerThread) -> None:
    """FP16 has no JSON form: refused before sending, as the server would."""
    with RestClient(server.rest_url) as client, pytest.raises(ClientError) as info:
        client.v2_infer("ids", {f"x_{d}": sample(d) for d in SAMPLES}, binary=False)
    assert info.value.code == Code.INVALID_ARGUMENT and "x_FP16': FP16 travels only as binary" in info.value.message


@pytest.mark.parametrize("kind", ["rest", "async_rest", "grpc", "async_grpc"])
def test_metadata_and_readiness(server: ServerThread, kind: str) -> None:
    async def scenario(client: Client) -> None:
        meta = await client.call("v2_model_metadata", "simple")
        assert (meta.name, meta.versions, meta.platform) == ("simple", ("1",), "onnxruntime_onnx")
        assert [(t.name, t.datatype, t.shape) for t in meta.inputs] == [
            ("INPUT0", "FP32", (-1, 16)),
            ("INPUT1", "FP32", (-1, 16)),
        ]
        assert [t.name for t in meta.outputs] == ["OUTPUT0", "OUTPUT1"]
        assert (await client.call("v2_model_metadata", "simple", version=1)).versions == ("1",)
        server_meta = await client.call("v2_server_metadata")
        assert server_meta.name == "modelserve" and "binary_tensor_data" in server_meta.extensions
        assert await client.call("v2_live") is True
        assert await client.call("v2_ready") is True
        assert await client.call("v2_ready", "simple") is True
        assert await client.call("v2_ready", "simple", version=1) is True
        assert await client.call("v2_ready", "simple", version=9) is False
        assert await client.call("v2_ready", "nosuch") is False
        with pytest.raises(ClientError) as info:
            await client.call("v2_model_metadata", "nosuch")
        assert info.value.code == Code.NOT_FOUND

    run(kind, server, scenario)


@pytest.mark.parametrize("kind", ["rest", "async_rest", "grpc", "async_grpc"])
def test_repository(server: ServerThread, kind: str) -> None:
    async def scenario(client: Client) -> None:
        rows = {(m.name, m.version): m for m in await client.call("v2_repository_index")}
        assert rows[("spare", "1")].state == "READY" and rows[("simple", "1")].state == "READY"
        await client.call("v2_unload_model", "spare")
        assert await client.call("v2_ready", "spare") is False
        states = {m.name: m for m in await client.call("v2_repository_index")}
        assert (states["spare"].state, states["spare"].reason) == ("UNAVAILABLE", "unloaded")
        assert "spare" not in {m.name for m in await client.call("v2_repository_index", ready=True)}
        await client.call("v2_load_model", "spare")
        assert await client.call("v2_ready", "spare") is True
        for call in ("v2_load_model", "v2_unload_model"):
            with pytest.raises(ClientError) as info:
                await client.call(call, "nope")
            assert info.value.code == Code.NOT_FOUND and "nope" in info.value.message

    run(kind, server, scenario)


def test_token_and_tls_pass_through(config: Path, tmp_path: Path) -> None:
    """Mutual TLS on both ports and tokens: an infer token infers, only an admin token reaches the
    repository, no token is UNAUTHENTICATED, each mapped to ClientError."""
    pytest.importorskip("cryptography")
    pki = make_pki()
    pem = write_pem_files(tmp_path, pki)
    (tmp_path / "tokens").write_text(f"{ADMIN} admin\n{INFER} infer\n")
    flags = (
        f"--model_config_file={config}",
        f"--ssl_config_file={ssl_config(tmp_path, pki, client_verify=True)}",
        f"--auth_token_file={tmp_path / 'tokens'}",
    )
    x = np.array([[1.0, 4.0]], np.float32)
    tls = {"ca_file": str(pem["ca"]), "cert_file": str(pem["client_cert"]), "key_file": str(pem["client_key"])}
    with running_server(*flags) as s:
        grpc_target = f"localhost:{s.server.grpc_port}"

        def credentials() -> grpc.ChannelCredentials:
            return grpc.ssl_channel_credentials(pki["ca"], pki["client_key"], pki["client_cert"])

        clients: list[Any] = [
            lambda token: RestClient(s.rest_url, token=token, **tls),
            lambda token: GrpcClient(grpc_target, credentials=credentials(), token=token),
        ]
        for make in clients:
            with make(INFER) as client:
                np.testing.assert_array_equal(client.v2_infer("spare", {"x": x})["y"], x * 0.5 + 2)
                with pytest.raises(ClientError) as info:
                    client.v2_repository_index()
                assert info.value.code == Code.PERMISSION_DENIED
            with make(ADMIN) as client:
                assert ("spare", "1", "READY") in [(m.name, m.version, m.state) for m in client.v2_repository_index()]
            with make(None) as client, pytest.raises(ClientError) as info:
                client.v2_infer("spare", {"x": x})
            assert info.value.code == Code.UNAUTHENTICATED

        async def async_clients() -> None:
            async with AsyncRestClient(s.rest_url, token=INFER, **tls) as rest:
                np.testing.assert_array_equal((await rest.v2_infer("spare", {"x": x}))["y"], x * 0.5 + 2)
            async with AsyncGrpcClient(grpc_target, credentials=credentials(), token=INFER) as stub:
                np.testing.assert_array_equal((await stub.v2_infer("spare", {"x": x}))["y"], x * 0.5 + 2)

        asyncio.run(async_clients())


def test_the_docs_example(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/v2.md's modelserve.client example, run as printed (only its ports changed)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "v2.md").read_text()
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", text, re.S) if "modelserve.client" in c]
    code = code.replace("http://localhost:8501", server.rest_url).replace("localhost:8500", server.grpc_target)
    exec(code, {})
    expected = str(np.arange(1, 17, dtype=np.float32).reshape(1, 16))
    assert capsys.readouterr().out.split() == (expected + " " + expected).split()
