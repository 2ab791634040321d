"""Probes: /healthz, /readyz, V2's health routes and the gRPC health service agree, and a drain turns
readiness false before connections close (SIGTERM to a real process with --drain_delay_seconds)."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelserve.errors import ServingError
from modelserve.lifecycle.config import ModelConfig
from modelserve.testing import running_server, server_process

from . import onnx_models as om

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def half(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("half") / "half"
    om.write(base, 1, om.half_plus_two())
    return base


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def predict(url: str, model: str = "half") -> tuple[int, bytes]:
    body = json.dumps({"instances": [1.0, 2.0]}).encode()
    request = urllib.request.Request(f"{url}/v1/models/{model}:predict", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def health_check(target: str, service: str) -> int:
    with grpc.insecure_channel(target) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        return int(answer.status)


def known(target: str, service: str) -> int | None:
    """The service's status, None while the health service does not know the name (NOT_FOUND)."""
    try:
        return health_check(target, service)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


@pytest.mark.parametrize("server_model", ["threaded", "asyncio", "processes"])
def test_probes_agree_and_a_drain_turns_them_not_ready_at_once(half: Path, server_model: str) -> None:
    model = {"threaded": (), "asyncio": ("--enable_batching",), "processes": ("--frontend_processes=2",)}
    with running_server(f"--model_base_path={half}", "--model_name=half", *model[server_model]) as s:
        url = s.rest_url
        assert get(f"{url}/healthz") == (200, b"ok\n")
        assert get(f"{url}/readyz") == (200, b'{"ready":true}\n')
        assert get(f"{url}/v2/health/ready")[0] == 200
        for service in ("", "half", "PredictionService", "tensorflow.serving.PredictionService"):
            assert health_check(s.grpc_target, service) == SERVING, service

        s.call(s.server.drain())  # what SIGTERM starts with

        status, body = get(f"{url}/readyz")
        assert status == 503 and json.loads(body) == {"ready": False, "draining": True, "not_ready": {}}
        assert get(f"{url}/v2/health/ready")[0] == 400  # V2's "not ready" status
        assert get(f"{url}/v2/models/half/ready")[0] == 400
        assert get(f"{url}/healthz") == (200, b"ok\n")  # alive: it still serves
        for service in ("", "half", "PredictionService", "tensorflow.serving.PredictionService"):
            assert health_check(s.grpc_target, service) == NOT_SERVING, service
        status, body = predict(url)  # requests are still served until the drain closes connections
        assert status == 200 and json.loads(body) == {"predictions": [2.5, 3.0]}


def test_readyz_names_the_model_that_is_not_ready_and_why(half: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    om.write(broken, 3, b"not an onnx model")
    with running_server(f"--model_base_path={half}", "--model_name=half", "--max_num_load_retries=0") as s:
        models = [ModelConfig("half", str(half)), ModelConfig("broken", str(broken))]
        with pytest.raises(ServingError, match="did not become available"):
            s.call(s.server.core.reload_config(models))  # applied all the same (TF Serving's ReloadConfig)
        s.settle()
        status, body = get(f"{s.rest_url}/readyz")
        assert status == 503
        doc = json.loads(body)
        assert doc["ready"] is False and doc["draining"] is False and list(doc["not_ready"]) == ["broken"]
        assert doc["not_ready"]["broken"].startswith("version 3 is END: ")
        assert get(f"{s.rest_url}/v2/health/ready")[0] == 400
        assert health_check(s.grpc_target, "half") == SERVING
        # The gRPC states are refreshed every second: wait for the new model's (no fixed sleep).
        deadline = time.monotonic() + 30
        while known(s.grpc_target, "broken") != NOT_SERVING or health_check(s.grpc_target, "") != NOT_SERVING:
            assert time.monotonic() < deadline, "the gRPC health service did not follow the new config"
            time.sleep(0.05)


def test_probes_are_open_without_a_token(half: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cr3t-token-for-tests-only infer\n")
    with running_server(f"--model_base_path={half}", "--model_name=half", f"--auth_token_file={tokens}") as s:
        for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
            assert get(f"{s.rest_url}{path}")[0] == 200, path
        assert predict(s.rest_url)[0] == 401  # the rest still needs one
        assert get(f"{s.rest_url}/v1/models/half")[0] == 401


def test_health_paths_refuse_other_methods_and_neighbours(half: Path) -> None:
    with running_server(f"--model_base_path={half}", "--model_name=half") as s:
        request = urllib.request.Request(f"{s.rest_url}/readyz", data=b"", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        info.value.close()  # an HTTPError holds its connection open until closed
        assert info.value.code == 405
        assert get(f"{s.rest_url}/healthzz")[0] == 404


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_turns_readiness_false_while_requests_are_still_served(half: Path, processes: int) -> None:
    """SIGTERM with --drain_delay_seconds: /readyz 503 and gRPC NOT_SERVING at once, predict still 200;
    a second SIGTERM ends the delay early and the process exits cleanly (with every front-end process)."""
    flags = (f"--model_base_path={half}", "--model_name=half", "--drain_delay_seconds=120")
    with server_process(*flags, f"--frontend_processes={processes}") as p:
        url, target = f"http://127.0.0.1:{p.rest_port}", f"127.0.0.1:{p.grpc_port}"
        assert get(f"{url}/readyz")[0] == 200 and health_check(target, "") == SERVING
        p.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while get(f"{url}/readyz")[0] != 503:  # the signal is handled on the loop: wait for it, no sleep
            assert time.monotonic() < deadline and p.proc.poll() is None, p.text()
            time.sleep(0.02)
        for service in ("", "half", "PredictionService"):
            assert health_check(target, service) == NOT_SERVING, service
        status, body = predict(url)
        assert status == 200 and json.loads(body) == {"predictions": [2.5, 3.0]}
        assert get(f"{url}/v2/health/ready")[0] == 400
        while "serving on for 120 s (--drain_delay_seconds)" not in p.text():  # the log's pipe may lag
            assert time.monotonic() < deadline, p.text()
            time.sleep(0.02)
        p.proc.send_signal(signal.SIGTERM)  # a second signal: no need to wait out the 120 s
        assert p.proc.wait(60) == 0
        assert "draining in-flight requests" in p.text()
