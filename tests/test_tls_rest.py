"""TLS and mutual TLS on the REST port from --ssl_config_file (the gRPC port's SSLConfig), tested with curl
and modelserve's clients; the TLS handshake is bounded in time."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from modelserve.api import tls
from modelserve.api.http import Request, Response
from modelserve.api.httpd import HttpOptions, HttpServer
from modelserve.client import ClientError, GrpcClient, RestClient
from modelserve.errors import Code, InvalidArgument
from modelserve.protos import pb
from modelserve.testing import running_server

from . import onnx_models as om
from .pki import make_pki, ssl_config, write_pem_files

X = np.array([1.0, 4.0], np.float32)
TOKEN = "tls-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def half(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("half") / "half"
    om.write(base, 1, om.half_plus_two())
    return base


@pytest.fixture(scope="module")
def pki() -> dict[str, bytes]:
    pytest.importorskip("cryptography")
    return make_pki()


@pytest.fixture
def pem(tmp_path: Path, pki: dict[str, bytes]) -> dict[str, Path]:
    return write_pem_files(tmp_path, pki)


def flags(half: Path, *more: str) -> tuple[str, ...]:
    return (f"--model_base_path={half}", "--model_name=half", *more)


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True, timeout=60)


def test_curl_over_https(half: Path, tmp_path: Path, pki: dict[str, bytes], pem: dict[str, Path]) -> None:
    config = ssl_config(tmp_path, pki, client_verify=False)
    with running_server(*flags(half, f"--ssl_config_file={config}")) as s:
        assert s.rest_url.startswith("https://localhost:")
        status = curl("--cacert", str(pem["ca"]), f"{s.rest_url}/v1/models/half")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["model_version_status"][0]["state"] == "AVAILABLE"
        body = json.dumps({"instances": [1.0, 4.0]})
        predict = curl("--cacert", str(pem["ca"]), "-d", body, f"{s.rest_url}/v1/models/half:predict")
        assert json.loads(predict.stdout) == {"predictions": [2.5, 4.0]}
        # Without the CA the server's certificate is not trusted; plain HTTP gets no answer.
        assert curl(f"{s.rest_url}/v1/models/half").returncode == 60
        plain = curl(f"http://127.0.0.1:{s.server.rest_port}/v1/models/half")
        assert plain.returncode != 0 and "model_version_status" not in plain.stdout


def test_curl_mutual_tls(half: Path, tmp_path: Path, pki: dict[str, bytes], pem: dict[str, Path]) -> None:
    config = ssl_config(tmp_path, pki, client_verify=True)
    with running_server(*flags(half, f"--ssl_config_file={config}")) as s:
        url = f"{s.rest_url}/v1/models/half"
        accepted = curl(
            "--cacert", str(pem["ca"]), "--cert", str(pem["client_cert"]), "--key", str(pem["client_key"]), url
        )
        assert accepted.returncode == 0, accepted.stderr
        assert json.loads(accepted.stdout)["model_version_status"][0]["state"] == "AVAILABLE"
        refused = curl("--cacert", str(pem["ca"]), url)
        assert refused.returncode != 0 and "model_version_status" not in refused.stdout
        # A certificate from another CA is refused as well.
        (tmp_path / "other").mkdir()
        other = write_pem_files(tmp_path / "other", make_pki())
        stranger = curl(
            "--cacert", str(pem["ca"]), "--cert", str(other["client_cert"]), "--key", str(other["client_key"]), url
        )
        assert stranger.returncode != 0 and "model_version_status" not in stranger.stdout


def test_clients_over_tls_on_both_ports(
    half: Path, tmp_path: Path, pki: dict[str, bytes], pem: dict[str, Path]
) -> None:
    """One SSLConfig: gRPC and REST both serve mutual TLS; modelserve's clients with a token on each."""
    config = ssl_config(tmp_path, pki, client_verify=True)
    (tmp_path / "tokens").write_text(f"{TOKEN} infer\n")
    more = (f"--ssl_config_file={config}", f"--auth_token_file={tmp_path / 'tokens'}")
    with running_server(*flags(half, *more)) as s:
        cert = {"cert_file": str(pem["client_cert"]), "key_file": str(pem["client_key"])}
        with RestClient(s.rest_url, ca_file=str(pem["ca"]), token=TOKEN, **cert) as client:
            np.testing.assert_array_equal(client.predict("half", {"x": X})["y"], X * 0.5 + 2)
        with RestClient(s.rest_url, ca_file=str(pem["ca"]), token=TOKEN, timeout=10) as client:
            with pytest.raises(ClientError) as info:
                client.status("half")  # no client certificate: the handshake fails
            assert info.value.code == Code.UNAVAILABLE
        credentials = grpc.ssl_channel_credentials(pki["ca"], pki["client_key"], pki["client_cert"])
        with GrpcClient(f"localhost:{s.server.grpc_port}", credentials=credentials, token=TOKEN) as client:
            np.testing.assert_array_equal(client.predict("half", {"x": X})["y"], X * 0.5 + 2)


def test_rest_api_tls_false_keeps_rest_plain(half: Path, tmp_path: Path, pki: dict[str, bytes]) -> None:
    config = ssl_config(tmp_path, pki, client_verify=False)
    with running_server(*flags(half, f"--ssl_config_file={config}", "--rest_api_tls=false")) as s:
        assert s.rest_url.startswith("http://")
        with RestClient(s.rest_url) as client:
            assert client.status("half")[0].state == "AVAILABLE"
        credentials = grpc.ssl_channel_credentials(root_certificates=pki["ca"])
        with GrpcClient(f"localhost:{s.server.grpc_port}", credentials=credentials) as client:
            assert client.status("half")[0].state == "AVAILABLE"


def test_server_context(pki: dict[str, bytes]) -> None:
    config = pb.SSLConfig(server_key=pki["server_key"].decode(), server_cert=pki["server_cert"].decode())
    context = tls.server_context(config)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2 and context.verify_mode == ssl.CERT_NONE
    config.custom_ca = pki["ca"].decode()
    assert tls.server_context(config).verify_mode == ssl.CERT_OPTIONAL
    config.client_verify = True
    assert tls.server_context(config).verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(InvalidArgument, match="client_verify needs custom_ca"):
        tls.server_context(pb.SSLConfig(server_key="k", server_cert="c", client_verify=True))
    with pytest.raises(InvalidArgument, match="do not load"):
        tls.server_context(pb.SSLConfig(server_key=pki["client_key"].decode(), server_cert=pki["server_cert"].decode()))


def test_a_silent_client_is_cut_after_the_handshake_timeout(pki: dict[str, bytes]) -> None:
    """A connection that never starts its TLS handshake is closed after tls_handshake_seconds."""
    config = pb.SSLConfig(server_key=pki["server_key"].decode(), server_cert=pki["server_cert"].decode())

    async def ok(request: Request) -> Response:
        return Response(200, b"ok")

    async def scenario() -> float:
        server = HttpServer(ok, HttpOptions(tls=tls.server_context(config), tls_handshake_seconds=0.5))
        sock = socket.create_server(("127.0.0.1", 0))
        sock.setblocking(False)
        await server.start(sock)
        reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        start = time.monotonic()
        data = await asyncio.wait_for(reader.read(), 20)  # b"" once the server closes
        took = time.monotonic() - start
        writer.close()
        await server.stop(1)
        assert data == b""
        return took

    assert asyncio.run(scenario()) < 15  # a guard: without the timeout it would wait forever (wait_for: 20)
