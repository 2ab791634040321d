"""The dashboard's routes without a browser: its files, its JSON state against what was configured, auth.

The page itself runs in headless Chromium in tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from modelserve.api import auth, dashboard
from modelserve.testing import running_server

from . import onnx_models as om

INFER = "dashboard-infer-token-0123456789"
ADMIN = "dashboard-admin-token-0123456789"
CONFIG = """model_config_list {
  config {
    name: "half"
    base_path: "%(root)s/half"
    model_platform: "onnx"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
  }
  config { name: "mlp" base_path: "%(root)s/mlp" model_platform: "onnx" }
}
"""
BATCHING = "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\nnum_batch_threads { value: 3 }\n"


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """half (versions 1 and 2, label stable -> 1), mlp (version 1, and a version 2 that does not load)."""
    om.write(tmp_path / "half", 1, om.half_plus_two())
    om.write(tmp_path / "half", 2, om.half_plus_two())
    om.write(tmp_path / "mlp", 1, om.mlp(om.random_weights([4, 3], seed=1)))
    config = tmp_path / "models.config"
    config.write_text(CONFIG % {"root": tmp_path})
    (tmp_path / "batching.pbtxt").write_text(BATCHING)
    return config


def fetch(url: str, token: str | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def state(url: str, token: str | None = None) -> dict[str, Any]:
    status, _, body = fetch(url + "/dashboard/api/state", token)
    assert status == 200, body
    doc: dict[str, Any] = json.loads(body)
    return doc


def test_state_reports_what_was_configured(repository: Path) -> None:
    batching = repository.parent / "batching.pbtxt"
    flags = [f"--model_config_file={repository}", "--enable_batching", f"--batching_parameters_file={batching}"]
    with running_server(*flags) as server:
        doc = state(server.rest_url)

    models = {m["name"]: m for m in doc["models"]}
    assert list(models) == ["half", "mlp"]
    half = models["half"]
    assert [(v["version"], v["state"]) for v in half["versions"]] == [(2, "AVAILABLE"), (1, "AVAILABLE")]
    assert half["available"] == [1, 2] and half["labels"] == {"stable": 1} and half["last_error"] == ""
    assert not half["unloaded"]
    instances = half["versions"][0]["instances"]
    assert [(i["index"], i["device"], i["memory_limit_bytes"]) for i in instances] == [(0, "cpu", 0)]
    assert instances[0]["weights_bytes"] > 0

    config = doc["config"]
    explicit = {f["name"]: f["value"] for f in config["flags"] if f["explicit"]}
    assert explicit["model_config_file"] == str(repository)
    assert explicit["enable_batching"] is True
    assert explicit["batching_parameters_file"] == str(batching)
    rows = {f["name"]: f for f in config["flags"]}
    assert rows["enable_dashboard"] == {
        "name": "enable_dashboard",
        "value": True,
        "default": True,
        "group": "Monitoring",
        "explicit": False,
    }
    assert config["model_config_file"] == str(repository)
    assert config["model_config_text"] == repository.read_text()
    assert config["reload"] is True
    entries = {m["name"]: m for m in config["models"]}
    assert entries["half"]["base_path"] == str(repository.parent / "half")
    assert entries["half"]["platform"] == "onnx"
    assert entries["half"]["policy"] == {"kind": "specific", "num_versions": 1, "versions": [1, 2]}
    assert entries["mlp"]["policy"]["kind"] == "latest"
    params = doc["batching"]["parameters"]
    assert (params["max_batch_size"], params["batch_timeout_micros"], params["num_batch_threads"]) == (16, 2000, 3)
    assert doc["batching"]["per_model"] is False
    assert doc["access"] == {"tokens": False, "scope": "admin", "management": True}
    assert doc["server"]["metrics_path"] == "/metrics"
    assert doc["server"]["now"] >= doc["server"]["started"]


def test_state_shows_a_failed_version_and_one_model_without_batching(repository: Path) -> None:
    with running_server(f"--model_config_file={repository}", "--max_num_load_retries=0") as server:
        # A newer version that does not load: version 1 keeps serving (started with it, the server would not start).
        (repository.parent / "mlp" / "2").mkdir()
        (repository.parent / "mlp" / "2" / "model.onnx").write_bytes(b"not an onnx model")
        manager = server.server.manager
        manager.poll(["mlp"])
        manager.wait_until_settled(["mlp"], 60)
        server.settle()
        doc = state(server.rest_url)
    mlp = next(m for m in doc["models"] if m["name"] == "mlp")
    assert [(v["version"], v["state"]) for v in mlp["versions"]] == [(2, "END"), (1, "AVAILABLE")]
    assert mlp["versions"][0]["error_code"] != "OK"
    assert "Protobuf parsing failed" in mlp["last_error"] == mlp["versions"][0]["error_message"]
    assert "<base_path>" in mlp["last_error"]  # paths stay hidden, as in every status answer
    assert doc["batching"] is None


def test_page_and_files(repository: Path) -> None:
    with running_server(f"--model_config_file={repository}") as server:
        for name, (_, content_type) in dashboard.ASSETS.items():
            status, headers, body = fetch(f"{server.rest_url}/dashboard/{name}")
            assert (status, headers["content-type"]) == (200, content_type), name
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert body
        status, headers, page = fetch(server.rest_url + "/dashboard")
        assert status == 200 and b'<script src="/dashboard/dashboard.js"' in page
        # Every file the page names is served (the page's own spelling of paths).
        for ref in (
            b"/dashboard/uplot/uPlot.iife.min.js",
            b"/dashboard/uplot/uPlot.min.css",
            b"/dashboard/promtext.js",
        ):
            assert ref in page and fetch(server.rest_url + ref.decode())[0] == 200
        assert fetch(server.rest_url + "/dashboard/missing.js")[0] == 404
        assert fetch(server.rest_url + "/dashboard", method="POST")[0] == 405
        assert fetch(server.rest_url + "/dashboard/api/state", method="POST")[0] == 405
        status, _, body = fetch(server.rest_url + "/dashboard/api/reload", method="GET")
        assert status == 405 and json.loads(body)["error"].startswith("GET is not allowed")


def test_open_paths_are_the_dashboard_files() -> None:
    assert {p for p in auth.REST_OPEN_PATHS if p.startswith("/dashboard")} == dashboard.OPEN_PATHS
    assert "/dashboard/api/state" not in auth.REST_OPEN_PATHS
    assert dashboard.RELOAD_PATH in auth.REST_ADMIN_PREFIXES


def test_switched_off(repository: Path) -> None:
    with running_server(f"--model_config_file={repository}", "--enable_dashboard=false") as server:
        assert fetch(server.rest_url + "/dashboard")[0] == 404
        assert fetch(server.rest_url + "/dashboard/api/state")[0] == 404


def test_tokens(repository: Path, tmp_path: Path) -> None:
    """The page is open; the state needs an infer token and says its scope; reload needs admin."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{INFER} infer\n{ADMIN} admin\n")
    with running_server(f"--model_config_file={repository}", f"--auth_token_file={tokens}") as server:
        url = server.rest_url
        for path in sorted(dashboard.OPEN_PATHS):
            assert fetch(url + path)[0] == 200, path
        for path in ("/dashboard/api/state", "/dashboard/API/state", "/dashboard/api/state/"):
            status, headers, _ = fetch(url + path)
            assert status == 401 and headers["www-authenticate"].startswith("Bearer"), path
        assert fetch(url + "/dashboard/api/state", "not-a-known-token-at-all")[0] == 401
        assert state(url, INFER)["access"] == {"tokens": True, "scope": "infer", "management": True}
        assert state(url, ADMIN)["access"] == {"tokens": True, "scope": "admin", "management": True}
        assert fetch(url + "/dashboard/api/reload", INFER, "POST")[0] == 403
        assert fetch(url + "/dashboard/api/reload", None, "POST")[0] == 401
        assert fetch(url + "/dashboard/api/reload", ADMIN, "POST")[0] == 200


def test_management_off(repository: Path) -> None:
    with running_server(f"--model_config_file={repository}", "--enable_management_api=false") as server:
        assert state(server.rest_url)["access"] == {"tokens": False, "scope": "admin", "management": False}
        assert fetch(server.rest_url + "/dashboard/api/reload", method="POST")[0] == 501


def test_reload_reads_the_config_file_again(repository: Path) -> None:
    with running_server(f"--model_config_file={repository}") as server:
        one_model = CONFIG.split('  config { name: "mlp"')[0] + "}\n"
        repository.write_text(one_model % {"root": repository.parent})
        status, _, body = fetch(server.rest_url + "/dashboard/api/reload", method="POST")
        assert status == 200, body
        doc = state(server.rest_url)
        assert [m["name"] for m in doc["models"]] == ["half"]
        assert doc["config"]["model_config_text"] == repository.read_text()


def test_reload_needs_a_config_file(tmp_path: Path) -> None:
    om.write(tmp_path / "half", 1, om.half_plus_two())
    with running_server(f"--model_base_path={tmp_path / 'half'}", "--model_name=half") as server:
        doc = state(server.rest_url)
        assert doc["config"]["reload"] is False and doc["config"]["model_config_text"] == ""
        assert [m["name"] for m in doc["models"]] == ["half"]
        status, _, body = fetch(server.rest_url + "/dashboard/api/reload", method="POST")
        assert status == 400 and "--model_config_file" in json.loads(body)["error"]
