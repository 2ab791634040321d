"""Bearer tokens on both ports (--auth_token_file), scopes, the management switch (issue 17, finding 9)."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from modelserve.api.auth import Scope, TokenFile, bearer_token, parse_tokens
from modelserve.client import ClientError, GrpcClient, RestClient
from modelserve.errors import Code, InvalidArgument
from modelserve.testing import running_server

from . import onnx_models as om

INFER = "infer-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
X = np.array([1.0, 4.0], np.float32)


@pytest.fixture(scope="module")
def half(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("half") / "half"
    om.write(base, 1, om.half_plus_two())
    return base


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# clients\n{INFER} infer\n\n{ADMIN}   admin  # operators\n")
    return path


@pytest.fixture(params=["threaded", "asyncio"])
def server_model(request: pytest.FixtureRequest) -> str:
    """grpcio's threaded server, or grpc.aio (which --enable_batching picks): each has its own interceptor."""
    return str(request.param)


def flags(half: Path, *more: str, server_model: str = "threaded") -> tuple[str, ...]:
    batching = ("--enable_batching",) if server_model == "asyncio" else ()
    return (f"--model_base_path={half}", "--model_name=half", *batching, *more)


def rest(url: str, token: str | None = None, body: Any = None) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON answer) of a GET, or a POST when there is a body."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()
        return (
            exc.code,
            dict(exc.headers),
            json.loads(text) if exc.headers["content-type"] == "application/json" else text,
        )


def grpc_code(call: Any) -> Code:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.code


# ---- the token file ----------------------------------------------------------------------------


def test_token_file_format() -> None:
    tokens = dict(parse_tokens(f"# comment\n\n  {INFER} infer # trailing\n{ADMIN} ADMIN\n", "f"))
    assert sorted(tokens.values()) == [Scope.INFER, Scope.ADMIN]
    for text, message in [
        (f"{INFER}\n", "expected '<token> <scope>'"),
        (f"{INFER} root\n", "unknown scope 'root'"),
        ("short infer\n", "16 to 4096 characters"),
        (f"{INFER} infer\n{INFER} admin\n", "line 2: the token is listed twice"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            parse_tokens(text, "f")


def test_bearer_header() -> None:
    assert bearer_token(f"Bearer {INFER}") == INFER
    assert bearer_token(f"bearer  {INFER} ") == INFER  # the scheme is case-insensitive (RFC 9110)
    assert bearer_token(f"Basic {INFER}") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_file_is_re_read_on_change_and_a_bad_file_keeps_the_tokens(
    token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    tokens = TokenFile(str(token_file), clock=lambda: now[0])
    assert tokens.scope(INFER) == Scope.INFER and tokens.scope("x" * 20) is None
    renewed = "renewed-token-0123456789abcdef-longer"
    token_file.write_text(f"{renewed} infer\n")
    assert tokens.scope(INFER) == Scope.INFER  # checked at most once a second
    now[0] = 1.5
    assert tokens.scope(INFER) is None and tokens.scope(renewed) == Scope.INFER
    token_file.write_text("not a token file at all\n")
    now[0] = 3.0
    with caplog.at_level(logging.ERROR):
        assert tokens.scope(renewed) == Scope.INFER
    assert "not re-read, the previous tokens stay in force" in caplog.text
    assert renewed not in caplog.text  # no token in the log


def test_a_missing_or_bad_token_file_stops_start_up(half: Path, tmp_path: Path) -> None:
    absent = flags(half, f"--auth_token_file={tmp_path / 'absent'}")
    with pytest.raises(InvalidArgument, match="auth_token_file"), running_server(*absent):
        pass
    (tmp_path / "bad").write_text("secret-but-no-scope-here\n")
    bad = flags(half, f"--auth_token_file={tmp_path / 'bad'}")
    with pytest.raises(InvalidArgument, match="line 1"), running_server(*bad):
        pass


# ---- REST ----------------------------------------------------------------------------------------


def test_rest_needs_a_token(half: Path, token_file: Path) -> None:
    with running_server(*flags(half, f"--auth_token_file={token_file}")) as s:
        url = s.rest_url + "/v1/models/half"
        status, headers, answer = rest(url)
        assert status == 401 and "Missing bearer token" in answer["error"]
        assert headers["www-authenticate"] == 'Bearer realm="modelserve"'
        status, headers, answer = rest(url, "wrong-token-0123456789abcdef")
        assert status == 401 and answer == {"error": "Invalid bearer token"}
        assert 'error="invalid_token"' in headers["www-authenticate"]
        for token in (INFER, ADMIN):
            status, _, answer = rest(url, token)
            assert status == 200 and answer["model_version_status"][0]["state"] == "AVAILABLE"
        status, _, answer = rest(url + ":predict", None, {"instances": [1.0]})
        assert status == 401
        status, _, answer = rest(url + ":predict", INFER, {"instances": [1.0, 4.0]})
        assert (status, answer) == (200, {"predictions": [2.5, 4.0]})
        # Paths no route serves are refused too: an unauthenticated caller learns nothing.
        assert rest(s.rest_url + "/v1/nothing")[0] == 401


def test_rest_client_sends_its_token(half: Path, token_file: Path) -> None:
    with running_server(*flags(half, f"--auth_token_file={token_file}")) as s:
        with RestClient(s.rest_url, token=INFER) as client:
            np.testing.assert_array_equal(client.predict("half", {"x": X})["y"], X * 0.5 + 2)
        with RestClient(s.rest_url) as client:
            with pytest.raises(ClientError) as info:
                client.status("half")
            assert (info.value.code, info.value.http_status) == (Code.UNAUTHENTICATED, 401)


def test_rest_management_paths_need_admin(half: Path, token_file: Path) -> None:
    with running_server(*flags(half, f"--auth_token_file={token_file}")) as s:
        status, headers, answer = rest(s.rest_url + "/v2/repository/index", INFER, {})
        assert status == 403 and "admin scope" in answer["error"]
        assert 'error="insufficient_scope"' in headers["www-authenticate"]
        # admin passes the guard, and V2 REST answers the repository index
        status, _, answer = rest(s.rest_url + "/v2/repository/index", ADMIN, {})
        assert status == 200 and [(row["name"], row["state"]) for row in answer] == [("half", "READY")]


# ---- gRPC ----------------------------------------------------------------------------------------


def test_grpc_needs_a_token(half: Path, token_file: Path, server_model: str) -> None:
    with running_server(*flags(half, f"--auth_token_file={token_file}", server_model=server_model)) as s:
        with GrpcClient(s.grpc_target) as anonymous:
            assert grpc_code(lambda: anonymous.predict("half", {"x": X})) == Code.UNAUTHENTICATED
            assert grpc_code(lambda: anonymous.status("half")) == Code.UNAUTHENTICATED
        with GrpcClient(s.grpc_target, token="wrong-token-0123456789abcdef") as wrong:
            assert grpc_code(lambda: wrong.metadata("half")) == Code.UNAUTHENTICATED
        with GrpcClient(s.grpc_target, token=INFER) as client:
            np.testing.assert_array_equal(client.predict("half", {"x": X})["y"], X * 0.5 + 2)
            assert client.status("half")[0].state == "AVAILABLE"


def test_reload_needs_admin(half: Path, token_file: Path, server_model: str) -> None:
    """Finding 9: one unauthenticated HandleReloadConfigRequest with model_config_list {} unloaded every model."""
    empty = "model_config_list {}"
    with running_server(*flags(half, f"--auth_token_file={token_file}", server_model=server_model)) as s:
        with GrpcClient(s.grpc_target) as anonymous:
            assert grpc_code(lambda: anonymous.reload_config(empty)) == Code.UNAUTHENTICATED
        with GrpcClient(s.grpc_target, token=INFER) as client:
            assert grpc_code(lambda: client.reload_config(empty)) == Code.PERMISSION_DENIED
            assert client.status("half")[0].state == "AVAILABLE"  # nothing was unloaded
        same = f'model_config_list {{ config {{ name: "half" base_path: "{half}" model_platform: "tensorflow" }} }}'
        with GrpcClient(s.grpc_target, token=ADMIN) as admin:
            admin.reload_config(same)
            np.testing.assert_array_equal(admin.predict("half", {"x": X})["y"], X * 0.5 + 2)


def test_management_switched_off(half: Path, token_file: Path, server_model: str) -> None:
    config = f'model_config_list {{ config {{ name: "half" base_path: "{half}" model_platform: "tensorflow" }} }}'
    switched_off = flags(half, "--enable_management_api=false", server_model=server_model)
    with running_server(*switched_off) as s, GrpcClient(s.grpc_target) as client:
        assert grpc_code(lambda: client.reload_config(config)) == Code.UNIMPLEMENTED
        assert client.status("half")[0].state == "AVAILABLE"  # everything else is served
    with_tokens = (*switched_off, f"--auth_token_file={token_file}")
    with running_server(*with_tokens) as s, GrpcClient(s.grpc_target, token=ADMIN) as admin:
        assert grpc_code(lambda: admin.reload_config(config)) == Code.UNIMPLEMENTED


def test_health_is_open_and_reflection_needs_a_token(half: Path, token_file: Path, server_model: str) -> None:
    more = (f"--auth_token_file={token_file}", "--enable_grpc_healthcheck_service")
    with (
        running_server(*flags(half, *more, server_model=server_model)) as s,
        grpc.insecure_channel(s.grpc_target) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as info:
            list(reflection.ServerReflectionInfo(iter([ask]), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metadata = (("authorization", f"Bearer {INFER}"),)
        answers = list(reflection.ServerReflectionInfo(iter([ask]), timeout=10, metadata=metadata))
        names = {service.name for service in answers[0].list_services_response.service}
        assert "tensorflow.serving.PredictionService" in names


def test_token_file_change_is_seen_by_the_server(half: Path, token_file: Path) -> None:
    renewed = "renewed-token-0123456789abcdef-longer"
    with running_server(*flags(half, f"--auth_token_file={token_file}")) as s:
        with GrpcClient(s.grpc_target, token=INFER) as old:
            assert old.status("half")[0].state == "AVAILABLE"
            token_file.write_text(f"{renewed} infer\n")
            deadline = time.monotonic() + 20  # re-read within about a second; bounded here as a guard
            while time.monotonic() < deadline:
                try:
                    old.status("half")
                except ClientError as exc:
                    assert exc.code == Code.UNAUTHENTICATED
                    break
                time.sleep(0.2)
            else:
                pytest.fail("the old token was still accepted 20 s after the file changed")
        # Each front-end process re-reads the file on its own: the new token may take as long on the others.
        deadline = time.monotonic() + 20
        while rest(s.rest_url + "/v1/models/half", renewed)[0] != 200:
            assert time.monotonic() < deadline, "the new token was refused 20 s after the file changed"
            time.sleep(0.2)
        while True:  # each call on a new channel: any front end may answer
            try:
                with GrpcClient(s.grpc_target, token=renewed) as new:
                    assert new.status("half")[0].state == "AVAILABLE"
                break
            except ClientError as exc:
                assert exc.code == Code.UNAUTHENTICATED and time.monotonic() < deadline, exc
                time.sleep(0.2)


def test_without_a_token_file_nothing_changes(half: Path, server_model: str) -> None:
    config = f'model_config_list {{ config {{ name: "half" base_path: "{half}" model_platform: "tensorflow" }} }}'
    with running_server(*flags(half, server_model=server_model)) as s:
        assert rest(s.rest_url + "/v1/models/half")[0] == 200
        with GrpcClient(s.grpc_target) as client:
            client.reload_config(config)
            np.testing.assert_array_equal(client.predict("half", {"x": X})["y"], X * 0.5 + 2)
