"""Remote storage safety (issue 17, finding 9): base paths and config files use only the fsspec protocols
--storage_protocols allows, from a config file and from a reload RPC alike; remote calls get timeouts."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest

from modelserve import storage
from modelserve.client import ClientError, GrpcClient
from modelserve.errors import Code, InvalidArgument
from modelserve.testing import running_server

from . import onnx_models as om

X = np.array([1.0, 4.0], np.float32)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A local port that records whether anything connected to it (a would-be FTP server)."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def connected(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return False
    return True


@pytest.fixture
def policy() -> Iterator[None]:
    """Unit tests change the process's storage policy; put the one they found back."""
    saved = storage.policy()
    yield
    storage.configure(saved.protocols, saved.timeout_seconds)


def test_ftp_base_path_is_refused_at_start_up_without_a_connection(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with (
        pytest.raises(InvalidArgument, match=r"Storage protocol ftp:// is not allowed"),
        running_server(f"--model_base_path=ftp://127.0.0.1:{port}/models/m", "--model_name=m"),
    ):
        pass
    assert not connected(listener)


def test_ftp_config_file_is_refused(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with (
        pytest.raises(InvalidArgument, match=r"Invalid protobuf file.*ftp:// is not allowed"),
        running_server(f"--model_config_file=ftp://127.0.0.1:{port}/models.config"),
    ):
        pass
    assert not connected(listener)


def test_reload_rpc_refuses_a_protocol_not_allowed(tmp_path: Path, listener: socket.socket) -> None:
    om.write(tmp_path / "half", 1, om.half_plus_two())
    port = listener.getsockname()[1]
    evil = f'name: "evil" base_path: "ftp://127.0.0.1:{port}/m" model_platform: "onnx"'
    config = f"model_config_list {{ config {{ {evil} }} }}"
    with (
        running_server(f"--model_base_path={tmp_path / 'half'}", "--model_name=half") as s,
        GrpcClient(s.grpc_target) as client,
    ):
        with pytest.raises(ClientError) as info:
            client.reload_config(config)
        assert info.value.code == Code.INVALID_ARGUMENT and "ftp:// is not allowed" in info.value.message
        np.testing.assert_array_equal(client.predict("half", {"x": X})["y"], X * 0.5 + 2)  # nothing changed
    assert not connected(listener)


def test_memory_base_path_is_allowed() -> None:
    memory = fsspec.filesystem("memory")
    memory.pipe("/storage-safety/half/1/model.onnx", om.half_plus_two())
    try:
        with (
            running_server("--model_base_path=memory://storage-safety/half", "--model_name=half") as s,
            GrpcClient(s.grpc_target) as client,
        ):
            np.testing.assert_array_equal(client.predict("half", {"x": X})["y"], X * 0.5 + 2)
    finally:
        memory.rm("/storage-safety", recursive=True)


@pytest.mark.usefixtures("policy")  # the flag sets the process's policy; later tests get the default back
def test_storage_protocols_flag(tmp_path: Path) -> None:
    om.write(tmp_path / "half", 1, om.half_plus_two())
    with (
        pytest.raises(
            InvalidArgument, match=r"protocol file:// is not allowed.*allowed: memory \(--storage_protocols\)"
        ),
        running_server(f"--model_base_path=file://{tmp_path / 'half'}", "--storage_protocols=memory"),
    ):
        pass


@pytest.mark.usefixtures("policy")
def test_allow_list() -> None:
    storage.configure(storage.DEFAULT_PROTOCOLS, 30)
    for allowed in ("/models/m", "file:///models/m", "s3://b/m", "gs://b/m", "az://c/m", "hf://org/m", "memory://m"):
        storage.check_uri(allowed)
    for refused in ("ftp://h/m", "webhdfs://h/m", "http://h/m", "https://h/m", "sftp://h/m", "simplecache::s3://b/m"):
        with pytest.raises(InvalidArgument, match="is not allowed"):
            storage.check_uri(refused)
    storage.configure(["https", " S3 "], 30)  # http(s) only when listed; names are trimmed and lower-cased
    storage.check_uri("https://example.com/m")
    storage.check_uri("S3://b/m")
    with pytest.raises(InvalidArgument):
        storage.check_uri("gs://b/m")
    assert storage.protocols_of("zip://inner::file:///a.zip") == ["zip", "file"]


def test_timeout_options() -> None:
    assert storage.timeout_options("s3", 7) == {"config_kwargs": {"connect_timeout": 7, "read_timeout": 7}}
    assert storage.timeout_options("abfs", 7) == {"connection_timeout": 7, "read_timeout": 7}
    assert storage.timeout_options("memory", 7) == {}
    assert storage.timeout_options("s3", 0) == {}  # <= 0: the implementation's own defaults


def test_aiohttp_timeouts() -> None:
    """gcsfs and fsspec's HTTP file system: aiohttp's connect and per-read timeouts, not a total."""
    import aiohttp

    timeout = storage.timeout_options("gs", 7)["requests_timeout"]
    assert isinstance(timeout, aiohttp.ClientTimeout) and (timeout.sock_connect, timeout.sock_read) == (7, 7)
    assert storage.timeout_options("https", 7)["client_kwargs"]["timeout"].sock_read == 7
