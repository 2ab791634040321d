"""The gRPC server's flags: health checking, reflection, UNIX socket, TLS/mTLS, channel arguments, binding."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from modelserve.api.grpc_calls import status_details
from modelserve.api.grpc_server import parse_channel_arguments, server_channel_options
from modelserve.client import ClientError, GrpcClient, make_tensor_proto
from modelserve.errors import Code, ServingError
from modelserve.testing import default_frontend_processes, running_server

from . import onnx_models as om
from .pki import make_pki, ssl_config


@pytest.fixture(scope="module")
def half(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("half") / "half"
    om.write(base, 1, om.half_plus_two())
    return base


@pytest.fixture(params=["threaded", "asyncio", "processes"])
def server_model(request: pytest.FixtureRequest) -> str:
    """The gRPC server model: grpcio's threaded server, grpc.aio (which --enable_batching picks), or
    grpc.aio in two front-end processes (--frontend_processes=2)."""
    return str(request.param)


def flags(half: Path, server_model: str, *more: str) -> tuple[str, ...]:
    model = {"threaded": (), "asyncio": ("--enable_batching",), "processes": ("--frontend_processes=2",)}
    return (f"--model_base_path={half}", "--model_name=half", *model[server_model], *more)


def single_process(server_model: str) -> None:
    """For a test of the single process's gRPC server itself (its threads, its servicers called in place)."""
    if server_model == "processes" or default_frontend_processes() > 1:
        pytest.skip("about the single process's own gRPC server")


def test_health_service_reports_tf_serving_names(half: Path, server_model: str) -> None:
    with (
        running_server(*flags(half, server_model, "--enable_grpc_healthcheck_service")) as s,
        grpc.insecure_channel(s.grpc_target) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "ModelService", "PredictionService", "tensorflow.serving.PredictionService", "half"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="Nope"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_service_can_be_switched_off(half: Path, server_model: str) -> None:
    # On by default (TF Serving's default is off): Kubernetes' gRPC probes need it.
    off = "--enable_grpc_healthcheck_service=false"
    with running_server(*flags(half, server_model, off)) as s, grpc.insecure_channel(s.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_lists_and_describes_the_services(half: Path, server_model: str) -> None:
    """What ``grpcurl list`` / ``grpcurl describe`` do, through grpcio-reflection's client."""
    with (
        running_server(*flags(half, server_model, "--enable_grpc_healthcheck_service")) as s,
        grpc.insecure_channel(s.grpc_target) as channel,
    ):
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {
            "tensorflow.serving.PredictionService",
            "tensorflow.serving.ModelService",
            "inference.GRPCInferenceService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= services
        found = database.FindFileContainingSymbol("tensorflow.serving.PredictionService")
        assert found.package == "tensorflow.serving"
        assert "Predict" in [m.name for s in found.service for m in s.method]
        # What `grpcurl ... grpc.health.v1.Health/Check` needs: the health service's own file.
        health = database.FindFileContainingSymbol("grpc.health.v1.Health")
        assert "Check" in [m.name for m in health.service[0].method]
        database.FindFileContainingSymbol("tensorflow.TensorProto")  # types used by the services


def test_unix_socket(half: Path, tmp_path: Path, server_model: str) -> None:
    socket = tmp_path / "grpc.sock"
    with running_server(*flags(half, server_model, f"--grpc_socket_path={socket}")) as s:
        with GrpcClient(f"unix:{socket}") as client:
            out = client.predict("half", {"x": np.array([2.0], np.float32)})
        np.testing.assert_array_equal(out["y"], [3.0])
        with GrpcClient(s.grpc_target) as client:  # TCP too
            assert client.predict("half", {"x": np.array([0.0], np.float32)})["y"].tolist() == [2.0]


def test_unix_socket_only(half: Path, tmp_path: Path, server_model: str) -> None:
    socket = tmp_path / "only.sock"
    with running_server(*flags(half, server_model, f"--grpc_socket_path={socket}", "--port=0")) as s:
        assert s.server.grpc_port is None
        with GrpcClient(f"unix:{socket}") as client:
            assert client.status("half")[0].state == "AVAILABLE"


def test_a_taken_port_fails_start_up(half: Path, server_model: str) -> None:
    with running_server(*flags(half, server_model)) as s:
        port = s.server.grpc_port
        taken = pytest.raises(ServingError, match="Failed to BuildAndStart gRPC server")
        with taken, running_server(*flags(half, server_model, f"--port={port}")):
            pass


def test_channel_arguments_parse_like_tf_serving() -> None:
    assert parse_channel_arguments("") == []
    parsed = parse_channel_arguments("grpc.max_connection_age_ms=2000,grpc.primary_user_agent=x=y,grpc.a=99999999999")
    assert parsed == [
        ("grpc.max_connection_age_ms", 2000),
        ("grpc.primary_user_agent", "x=y"),
        ("grpc.a", "99999999999"),
    ]
    with pytest.raises(ServingError, match="key=value"):
        parse_channel_arguments("novalue")
    options = dict(server_channel_options("grpc.max_receive_message_length=1000"))
    assert options["grpc.max_receive_message_length"] == 1000
    assert options["grpc.max_send_message_length"] == 2**31 - 1
    # The server passes its per-request memory budget as the receive limit; the user's arguments win.
    assert dict(server_channel_options("", 5000))["grpc.max_receive_message_length"] == 5000
    assert dict(server_channel_options("", 2**40))["grpc.max_receive_message_length"] == 2**31 - 1
    options = dict(server_channel_options("grpc.max_receive_message_length=1000", 5000))
    assert options["grpc.max_receive_message_length"] == 1000


def test_channel_arguments_reach_the_server(half: Path, server_model: str) -> None:
    small = flags(half, server_model, "--grpc_channel_arguments=grpc.max_receive_message_length=100")
    with running_server(*small) as s, GrpcClient(s.grpc_target) as client:
        assert client.predict("half", {"x": np.zeros(1, np.float32)})["y"].tolist() == [2.0]
        with pytest.raises(ClientError) as info:
            client.predict("half", {"x": np.zeros(1000, np.float32)})
        assert info.value.code == Code.RESOURCE_EXHAUSTED


def test_status_details_are_cut_at_1024() -> None:
    assert status_details("x" * 1024) == "x" * 1024
    assert status_details("x" * 1025) == "x" * 1024 + "...TRUNCATED"


# --- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> dict[str, bytes]:
    pytest.importorskip("cryptography")
    return make_pki()


def _ssl_config(tmp_path: Path, pki: dict[str, bytes], client_verify: bool) -> Path:
    return ssl_config(tmp_path, pki, client_verify)


def test_tls(half: Path, tmp_path: Path, pki: dict[str, bytes], server_model: str) -> None:
    config = _ssl_config(tmp_path, pki, client_verify=False)
    with running_server(*flags(half, server_model, f"--ssl_config_file={config}")) as s:
        target = f"localhost:{s.server.grpc_port}"
        credentials = grpc.ssl_channel_credentials(root_certificates=pki["ca"])
        with GrpcClient(target, credentials=credentials) as client:
            assert client.predict("half", {"x": np.array([4.0], np.float32)})["y"].tolist() == [4.0]
        with GrpcClient(target, timeout=5) as plain, pytest.raises(ClientError) as info:
            plain.status("half")
        assert info.value.code == Code.UNAVAILABLE


def test_mutual_tls(half: Path, tmp_path: Path, pki: dict[str, bytes], server_model: str) -> None:
    config = _ssl_config(tmp_path, pki, client_verify=True)
    with running_server(*flags(half, server_model, f"--ssl_config_file={config}")) as s:
        target = f"localhost:{s.server.grpc_port}"
        with_cert = grpc.ssl_channel_credentials(pki["ca"], pki["client_key"], pki["client_cert"])
        with GrpcClient(target, credentials=with_cert) as client:
            assert client.status("half")[0].state == "AVAILABLE"
        without = grpc.ssl_channel_credentials(root_certificates=pki["ca"])
        with GrpcClient(target, credentials=without, timeout=5) as client, pytest.raises(ClientError) as info:
            client.status("half")
        assert info.value.code == Code.UNAVAILABLE


class _Context:
    """The part of grpc.ServicerContext the handlers use; records the abort."""

    def __init__(self, remaining: float) -> None:
        self.remaining = remaining
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def time_remaining(self) -> float:
        return self.remaining

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def send_initial_metadata(self, metadata: object) -> None:
        pass

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise RuntimeError("aborted")  # as grpc's own abort, it never returns


class _AsyncContext:
    """The same for grpc.aio, where the handler sets the status instead of raising an abort."""

    def __init__(self, context: _Context) -> None:
        self.context = context
        self.code: grpc.StatusCode | None = None

    def time_remaining(self) -> float:
        return self.context.remaining

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    async def send_initial_metadata(self, metadata: object) -> None:
        pass

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        assert self.code is not None
        self.context.abort(self.code, details)


def test_a_spent_deadline_is_deadline_exceeded_and_bugs_are_unknown(half: Path, server_model: str) -> None:
    from modelserve.api.grpc_calls import async_rpc, inline_rpc
    from modelserve.api.tfs_grpc import PredictionServicer
    from modelserve.observe.faults import FaultLog
    from modelserve.protos import pb

    single_process(server_model)
    with running_server(*flags(half, server_model)) as s:
        servicer = PredictionServicer(s.server.core)
        faults = FaultLog(logging.getLogger(__name__))

        def call(request: object, context: _Context) -> None:
            if server_model == "threaded":  # on this thread, which runs no loop, as a handler thread
                inline_rpc(servicer.Predict, faults, s.server.watch, "tfs_grpc")(request, context)  # type: ignore[arg-type]
            else:  # on the server's own loop, as grpc.aio runs it
                s.call(async_rpc(servicer.Predict, faults, s.server.watch, "tfs_grpc")(request, _AsyncContext(context)))  # type: ignore[arg-type]

        request = pb.PredictRequest()
        request.model_spec.name = "half"
        request.inputs["x"].CopyFrom(make_tensor_proto(np.array([1.0], np.float32)))
        context = _Context(remaining=0.0)
        with pytest.raises(RuntimeError):
            call(request, context)
        # Unbatched, TF's "Deadline exceeded"; batched, the batch queue's own TF text.
        expected = (
            (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded")
            if server_model == "threaded"
            else (grpc.StatusCode.RESOURCE_EXHAUSTED, "Run() timeout exceeded while waiting in batching queue")
        )
        assert context.aborted == expected
        context = _Context(remaining=30.0)
        with pytest.raises(RuntimeError):
            call(object(), context)  # not a request at all: a bug, not the client's fault
        assert context.aborted is not None and context.aborted[0] == grpc.StatusCode.UNKNOWN


def test_each_server_model_runs_the_model_where_it_should(
    half: Path, server_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threaded: inline on the gRPC handler thread, never a worker's; grpc.aio: off the loop, on a batch
    thread. What each id names is the server that really runs."""
    from modelserve.platforms.onnx import OnnxServable

    threads: list[str] = []
    predict = OnnxServable.predict

    def recording(self: OnnxServable, *args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return predict(self, *args, **kwargs)

    single_process(server_model)
    monkeypatch.setattr(OnnxServable, "predict", recording)
    with running_server(*flags(half, server_model)) as s, GrpcClient(s.grpc_target) as client:
        server = s.server._grpc._server
        assert isinstance(server, grpc.aio.Server) == (server_model == "asyncio")
        threads.clear()  # warm-up and loading ran it on other threads
        for _ in range(3):
            assert client.predict("half", {"x": np.array([2.0], np.float32)})["y"].tolist() == [3.0]
    assert len(threads) == 3
    if server_model == "threaded":
        assert all(name.startswith("modelserve-grpc") for name in threads), threads
    else:
        assert not any(
            name.startswith(("modelserve-grpc", "modelserve-infer", "modelserve-test-loop")) for name in threads
        )


def test_reload_config_on_both_server_models(half: Path, tmp_path: Path, server_model: str) -> None:
    """HandleReloadConfigRequest blocks for the loads: on the threaded server inline on its handler
    thread, under grpc.aio on a thread of its own."""
    other = tmp_path / "marker"
    om.write(other, 4, om.version_marker(4))
    config = f"""model_config_list {{
      config {{ name: "half" base_path: "{half}" model_platform: "tensorflow" }}
      config {{ name: "marker" base_path: "{other}" model_platform: "tensorflow" }}
    }}"""
    with running_server(*flags(half, server_model)) as s, GrpcClient(s.grpc_target, timeout=60) as client:
        client.reload_config(config)
        assert client.predict("marker", {"x": np.zeros(1, np.float32)})["y"].tolist() == [4.0]
        assert client.predict("half", {"x": np.array([2.0], np.float32)})["y"].tolist() == [3.0]
        with pytest.raises(ClientError) as missing:
            client.reload_config(config.replace(f'"marker" base_path: "{other}"', f'"gone" base_path: "{tmp_path}/no"'))
        assert missing.value.code == Code.NOT_FOUND  # a failed reload's status comes back on both models


def test_unix_socket_left_behind_by_a_dead_server_is_taken_over(half: Path, tmp_path: Path) -> None:
    # A server killed without cleaning up leaves its socket file; the next one on that path must still start
    # (gRPC unlinks the file before binding, as TF Serving's gRPC does). TF Serving's own e2e tests start
    # many servers on one --grpc_socket_path.
    import socket as sockets

    path = tmp_path / "stale.sock"
    stale = sockets.socket(sockets.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    assert path.exists()
    with running_server(*flags(half, "threaded", f"--grpc_socket_path={path}")), GrpcClient(f"unix:{path}") as client:
        assert client.predict("half", {"x": np.array([2.0], np.float32)})["y"].tolist() == [3.0]
