"""KServe V2's model repository extension over REST (Triton's HTTP paths and bodies), and the server's
readiness as both V2 protocols report it while models are unloaded and loaded again.

Plain HTTP (http.client) and the private-pool gRPC stubs; tests/test_v2_tritonclient.py drives the
same REST paths through tritonclient.http (protobuf-6 venv).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from modelserve import platforms
from modelserve.protos import INFERENCE_SERVICE, Stub, pb
from modelserve.testing import ServerThread, running_server

from .test_v2_grpc import ADMIN, INFER, repository
from .test_v2_rest import request
from .traffic import steady_traffic


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return repository(tmp_path_factory.mktemp("v2repo"))


@pytest.fixture(scope="module")
def server(config: Path) -> Iterator[ServerThread]:
    with running_server(f"--model_config_file={config}") as s:
        yield s


def post(server: ServerThread, path: str, doc: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    status, _, body = request(server, "POST", path, b"" if doc is None else json.dumps(doc).encode(), headers)
    return status, json.loads(body) if body else None


def index(server: ServerThread, ready: bool | None = None) -> dict[tuple[str, str], tuple[str, str]]:
    status, rows = post(server, "/v2/repository/index", None if ready is None else {"ready": ready})
    assert status == 200, rows
    return {(row["name"], row.get("version", "")): (row["state"], row["reason"]) for row in rows}


def simple_infer(server: ServerThread) -> list[float]:
    doc = {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": list(range(16))},
            {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": [1] * 16},
        ],
        "outputs": [{"name": "OUTPUT0"}],
    }
    status, answer = post(server, "/v2/models/simple/infer", doc)
    assert status == 200, answer
    data: list[float] = answer["outputs"][0]["data"]
    return data


def test_index_rows_and_ready_filter(server: ServerThread) -> None:
    rows = index(server)
    assert rows[("spare", "1")] == ("READY", "") and rows[("versions", "2")] == ("READY", "")
    assert index(server, ready=True).keys() == {k for k, v in rows.items() if v[0] == "READY"}
    assert post(server, "/v2/repository/index", {"ready": "yes"})[0] == 400
    assert request(server, "GET", "/v2/repository/index")[0] == 405
    assert post(server, "/v2/repository/models/spare/reload")[0] == 404


def test_unload_then_load_while_another_model_serves(server: ServerThread) -> None:
    def traffic() -> None:  # another model, served all along
        assert simple_infer(server) == [float(i + 1) for i in range(16)]

    with steady_traffic(traffic):
        assert post(server, "/v2/repository/models/spare/unload", {"parameters": {"unload_dependents": False}}) == (
            200,
            None,
        )
        assert index(server)[("spare", "1")] == ("UNAVAILABLE", "unloaded")
        assert request(server, "GET", "/v2/models/spare/ready")[0] == 400
        assert request(server, "GET", "/v2/health/ready")[0] == 200  # asked for: the server stays ready
        x = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 1]}]}
        assert post(server, "/v2/models/spare/infer", x)[0] == 404
        assert post(server, "/v2/repository/models/spare/load", {}) == (200, None)
        assert index(server)[("spare", "1")] == ("READY", "")
        assert post(server, "/v2/models/spare/infer", x)[1]["outputs"][0]["data"] == [2.5, 2.5]
        assert post(server, "/v2/repository/models/spare/load") == (200, None)  # loaded: a no-op


def test_unknown_models_and_load_parameters(server: ServerThread) -> None:
    for action in ("load", "unload"):
        status, doc = post(server, f"/v2/repository/models/nope/{action}")
        assert status == 404 and "nope" in doc["error"], doc
    status, doc = post(server, "/v2/repository/models/spare/load", {"parameters": {"config": "{}"}})
    assert status == 400 and "config" in doc["error"]
    assert post(server, "/v2/repository/models/spare/load", [1])[0] == 400


def test_repository_needs_admin_and_the_management_switch(config: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ADMIN} admin\n{INFER} infer\n")
    with running_server(f"--model_config_file={config}", f"--auth_token_file={tokens}") as s:
        assert post(s, "/v2/repository/index")[0] == 401
        assert post(s, "/v2/repository/models/spare/unload", token=INFER)[0] == 403
        assert request(s, "GET", "/v2/models/spare/ready", headers={"Authorization": f"Bearer {INFER}"})[0] == 200
        assert post(s, "/v2/repository/models/spare/unload", token=ADMIN) == (200, None)
        assert post(s, "/v2/repository/index", token=ADMIN)[0] == 200
        assert request(s, "GET", "/v2/models/spare/ready", headers={"Authorization": f"Bearer {INFER}"})[0] == 400
    with running_server(f"--model_config_file={config}", "--enable_management_api=false") as s:
        for path in ("/v2/repository/index", "/v2/repository/models/spare/unload"):
            status, doc = post(s, path)
            assert status == 501 and "enable_management_api" in doc["error"]
        assert request(s, "GET", "/v2/health/ready")[0] == 200


def test_server_readiness_through_unload_and_a_slow_load(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ready -> a model unloaded through the repository (still ready, as Triton) -> that model loading
    again (not ready) -> ready, on V2 REST and V2 gRPC alike."""
    gate = threading.Event()
    real_loader = platforms.loader

    def gated_loader(platform: str) -> Callable[..., Any]:
        load = real_loader(platform)

        def slow(folder: Path, options: Any) -> Any:
            if folder.parent.name == "spare":
                assert gate.wait(60), "the test never opened the gate"
            return load(folder, options)

        return slow

    with (
        running_server(f"--model_config_file={config}") as s,
        grpc.insecure_channel(s.grpc_target) as channel,
    ):
        stub = Stub(channel, INFERENCE_SERVICE)

        def ready() -> tuple[bool, bool]:
            rest = request(s, "GET", "/v2/health/ready")[0] == 200
            return rest, stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready

        assert ready() == (True, True)
        assert post(s, "/v2/repository/models/spare/unload")[0] == 200
        assert ready() == (True, True)
        monkeypatch.setattr(platforms, "loader", gated_loader)
        loaded: list[tuple[int, Any]] = []
        loader = threading.Thread(target=lambda: loaded.append(post(s, "/v2/repository/models/spare/load")))
        loader.start()
        try:
            manager = s.server.manager
            # the load asked for, and its version loading (not its old END still, before the scan)
            assert manager.wait_for(
                lambda: not manager.unloaded("spare") and manager.status("spare", 1)[0].state.name == "LOADING", 30
            )
            s.settle()  # seen in the engine: now in every front-end process too
            assert index(s)[("spare", "1")][0] == "LOADING"
            assert ready() == (False, False)
            assert not stub.ModelReady(pb.ModelReadyRequest(name="spare"), timeout=10).ready
        finally:
            gate.set()
            loader.join()
        assert loaded == [(200, None)]
        assert ready() == (True, True)
        np.testing.assert_array_equal(
            post(
                s, "/v2/models/spare/infer", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [2]}]}
            )[1]["outputs"][0]["data"],
            [3.0],
        )
