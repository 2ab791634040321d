"""The dashboard in a real browser: headless Chromium against a live server under load (issue 19, item 8).

Chromium is Debian's ``chromium`` (scripts/test.sh installs it), driven over
the DevTools protocol (tests/browser.py); without it these tests skip, saying
so. ``MODELSERVE_DASHBOARD_SCREENSHOT=docs/images/dashboard.png`` makes the
live test also write the docs' screenshot there.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelserve.options import FLAGS_BY_NAME
from modelserve.testing import ServerThread, running_server

from . import onnx_models as om
from .browser import NOT_FOUND, Page, chromium, find_chromium

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NOT_FOUND)

ADMIN = "dashboard-admin-token-0123456789"
INFER = "dashboard-infer-token-0123456789"
MLP = om.random_weights([4, 8, 2], seed=7)
CONFIG = """model_config_list {
  config {
    name: "half"
    base_path: "%(root)s/half"
    model_platform: "onnx"
    model_version_policy { all {} }
    version_labels { key: "stable" value: 1 }
  }
  config {
    name: "mlp"
    base_path: "%(root)s/mlp"
    model_platform: "onnx"
  }
}
"""


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """half (versions 1 and 2, label stable -> 1) and mlp (version 1), and their models.config."""
    om.write(tmp_path / "half", 1, om.half_plus_two())
    om.write(tmp_path / "half", 2, om.half_plus_two())
    om.write(tmp_path / "mlp", 1, om.mlp(MLP))
    config = tmp_path / "models.config"
    config.write_text(CONFIG % {"root": tmp_path})
    return config


class Load:
    """Predict requests from a thread until stopped: half and mlp in turn, every 8th a bad one (an error)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._stop = threading.Event()
        self.sent = 0
        self.status: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run, name="dashboard-load", daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)
        bodies = [
            ("/v1/models/half:predict", {"instances": [1.0, 2.0, 5.0]}),
            ("/v1/models/mlp:predict", {"instances": np.ones((3, 4)).tolist()}),
        ]
        while not self._stop.is_set():
            path, body = bodies[self.sent % 2]
            if self.sent % 8 == 7:
                body = {"instances": [[["not", "numbers"]]]}
            connection.request("POST", path, json.dumps(body), {"content-type": "application/json"})
            answer = connection.getresponse()
            answer.read()
            self.status[answer.status] = self.status.get(answer.status, 0) + 1
            self.sent += 1
        connection.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def metrics_off_flags() -> list[str]:
    """Flags that turn /metrics off, where this build has them (else it has no /metrics at all)."""
    return ["--enable_metrics=false"] if "enable_metrics" in FLAGS_BY_NAME else []


@pytest.fixture
def live(repository: Path) -> Iterator[ServerThread]:
    flags = [f"--model_config_file={repository}", "--enable_batching", "--file_system_poll_wait_seconds=1"]
    with running_server(*flags, "--max_num_load_retries=0") as server:
        yield server


async def open_dashboard(page: Page, server: ServerThread) -> None:
    await page.goto(server.rest_url + "/dashboard")
    await page.wait_for("Number(document.body.dataset.updates || 0) >= 1")


def test_live_dashboard_under_load(live: ServerThread, repository: Path, tmp_path: Path) -> None:
    """Model names, versions, a non-zero request rate and drawn charts; a screenshot; no console error."""
    # A broken newer mlp version: it fails to load, version 1 keeps serving, the table shows the error.
    (repository.parent / "mlp" / "2").mkdir()
    (repository.parent / "mlp" / "2" / "model.onnx").write_bytes(b"not an onnx model")

    async def scenario() -> None:
        assert CHROMIUM is not None
        async with chromium(CHROMIUM) as browser:
            page = await browser.new_page()
            with Load(live.server.rest_port) as load:
                await open_dashboard(page, live)
                await page.wait_for("Number(document.getElementById('rate-half')?.dataset.value) > 0")
                await page.wait_for("Number(document.getElementById('rate-mlp')?.dataset.value) > 0")
                await page.wait_for("document.querySelector('#models tr[data-model=\"mlp\"] td.err')?.textContent")
                # Charts hold several points once a few polls have passed.
                await page.wait_for("Number(document.body.dataset.updates) >= 4")
                await page.wait_for("document.querySelectorAll('#model-charts .uplot canvas').length >= 4")
                await page.wait_for("document.querySelectorAll('#batch-charts .uplot canvas').length >= 1")
                assert load.sent > 0 and load.status.get(200, 0) > 0 and load.status.get(400, 0) > 0
                dom = await page.evaluate(DOM_SUMMARY)
                shot = tmp_path / "dashboard.png"
                await page.screenshot(shot)
                target = os.environ.get("MODELSERVE_DASHBOARD_SCREENSHOT")
                if target:
                    await page.screenshot(Path(target))
            assert shot.read_bytes().startswith(b"\x89PNG")
            assert page.errors == []

        assert dom["models"] == ["half", "mlp"]
        assert dom["versions"]["half"] == [["2", "AVAILABLE"], ["1", "AVAILABLE"]]
        assert ["1", "AVAILABLE"] in dom["versions"]["mlp"]
        assert ["2", "END"] in dom["versions"]["mlp"]
        assert float(dom["rates"]["half"]) > 0 and float(dom["rates"]["mlp"]) > 0
        assert "stable" in dom["labels"]["half"]
        assert dom["metrics"] == "metrics on"
        assert "cpu" in dom["devices"]
        assert dom["flags"] >= 3  # --model_config_file, --enable_batching, ... as set

    run(scenario())


DOM_SUMMARY = """(() => {
  const rows = [...document.querySelectorAll('#models tbody tr[data-model]')];
  const versions = {}, rates = {}, labels = {};
  for (const row of rows) {
    const name = row.dataset.model;
    versions[name] = [...row.querySelectorAll('.badge[data-version]')].map(b => [b.dataset.version, b.dataset.state]);
    rates[name] = document.getElementById('rate-' + name).dataset.value;
    labels[name] = row.querySelector('td').textContent;
  }
  return {
    models: rows.map(r => r.dataset.model), versions, rates, labels,
    metrics: document.getElementById('pill-metrics').textContent,
    devices: [...document.querySelectorAll('#instances tr.device')].map(r => r.dataset.device),
    flags: document.querySelectorAll('#flags tbody tr').length,
  };
})()"""


def test_dashboard_without_metrics(repository: Path) -> None:
    """No /metrics on the port: the page says "metrics off" and still shows models, versions and instances."""

    async def scenario(server: ServerThread) -> None:
        assert CHROMIUM is not None
        async with chromium(CHROMIUM) as browser:
            page = await browser.new_page()
            await open_dashboard(page, server)
            dom = await page.evaluate(DOM_SUMMARY)
            assert dom["metrics"] == "metrics off"
            assert dom["models"] == ["half", "mlp"]
            assert dom["versions"]["half"] == [["2", "AVAILABLE"], ["1", "AVAILABLE"]]
            assert dom["rates"] == {"half": "", "mlp": ""}
            assert "cpu" in dom["devices"]
            charts = await page.evaluate("document.getElementById('model-charts').textContent")
            assert charts.startswith("No metrics")
            # The one red line a browser may print: the 404 of /metrics itself.
            assert [e for e in page.errors if "/metrics" not in e] == []

    with running_server(f"--model_config_file={repository}", *metrics_off_flags()) as server:
        run(scenario(server))


def test_tokens_and_admin_actions(repository: Path, tmp_path: Path) -> None:
    """With tokens the page asks for one; an infer token shows no actions; an admin token unloads and loads."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{INFER} infer\n{ADMIN} admin\n")

    async def use_token(page: Page, token: str) -> None:
        await page.evaluate(
            f"document.getElementById('token-input').value = {json.dumps(token)};"
            "document.getElementById('token-box').requestSubmit()"
        )

    async def scenario(server: ServerThread) -> None:
        assert CHROMIUM is not None
        async with chromium(CHROMIUM) as browser:
            page = await browser.new_page()
            await page.goto(server.rest_url + "/dashboard")
            await page.wait_for("!document.getElementById('token-box').hidden")
            assert await page.evaluate("document.querySelectorAll('#models tbody tr').length") == 0
            await use_token(page, INFER)
            await page.wait_for("document.querySelectorAll('#models tbody tr[data-model]').length == 2")
            assert await page.evaluate("document.getElementById('pill-access').textContent") == "token: infer"
            assert await page.evaluate("document.querySelectorAll('button[data-action]').length") == 0
            assert await page.evaluate("document.getElementById('reload-config').hidden")

            await page.evaluate("document.getElementById('forget-token').click()")
            await page.wait_for("!document.getElementById('token-box').hidden")
            await use_token(page, ADMIN)
            await page.wait_for("document.getElementById('pill-access').textContent == 'token: admin'")
            assert not await page.evaluate("document.getElementById('reload-config').hidden")
            unload = 'document.querySelector(\'button[data-action="unload"][data-model="mlp"]\')'
            await page.wait_for(f"!!{unload}")
            await page.evaluate(f"{unload}.click()")  # the first click asks to confirm
            assert await page.evaluate(f"{unload}.textContent") == "Confirm unload?"
            await page.evaluate(f"{unload}.click()")
            load = 'document.querySelector(\'button[data-action="load"][data-model="mlp"]\')'
            await page.wait_for(f"!!{load}")
            assert not server.server.core.ready("mlp")
            await page.evaluate(f"{load}.click(); {load}.click()")
            await page.wait_for(f"!!{unload}")
            assert server.server.core.ready("mlp")
            await page.wait_for("document.getElementById('notice').textContent == 'mlp: loaded.'")
            # Refused state fetches before a token was given are the only red lines.
            assert [e for e in page.errors if "401" not in e and "/metrics" not in e] == []

    with running_server(f"--model_config_file={repository}", f"--auth_token_file={tokens}") as server:
        run(scenario(server))


def test_metrics_parser_in_the_browser() -> None:
    """promtext.js (the page's parser) on a fixed text: samples, labels with escapes, rates and quantiles."""
    source = (Path(__file__).resolve().parents[1] / "modelserve/api/static/dashboard/promtext.js").read_text()

    async def scenario() -> dict[str, Any]:
        assert CHROMIUM is not None
        async with chromium(CHROMIUM) as browser:
            page = await browser.new_page()
            await page.evaluate(source)
            result: dict[str, Any] = await page.evaluate(PARSER_CASES)
            assert page.errors == []
            return result

    result = run(scenario())
    assert result.pop("p50") == pytest.approx(0.001 + 0.009 * 10 / 20)  # rank 10 of the 20 new observations
    assert result.pop("p99") == pytest.approx(0.001 + 0.009 * 19.8 / 20)
    assert result == PARSER_EXPECTED


PARSER_CASES = """(() => {
  const P = globalThis.PromText;
  const before = P.parse(`# HELP modelserve_requests_total Requests answered, by outcome.
# TYPE modelserve_requests_total counter
modelserve_requests_total{model="half",version="1",code="OK"} 10
modelserve_requests_total{model="half",version="1",code="INVALID_ARGUMENT"} 1
modelserve_request_duration_seconds_bucket{model="half",le="0.001"} 2
modelserve_request_duration_seconds_bucket{model="half",le="0.01"} 8
modelserve_request_duration_seconds_bucket{model="half",le="+Inf"} 10
`);
  const after = P.parse(`modelserve_requests_total{model="half",version="1",code="OK"} 30
modelserve_requests_total{model="half",version="1",code="INVALID_ARGUMENT"} 5
modelserve_requests_total{model="we \\\\"quote\\\\", a\\\\\\\\b",version="",code="OK"} 7 1700000000000
modelserve_request_duration_seconds_bucket{model="half",le="0.001"} 2
modelserve_request_duration_seconds_bucket{model="half",le="0.01"} 28
modelserve_request_duration_seconds_bucket{model="half",le="+Inf"} 30
modelserve_batch_size_sum{model="half",version="1"} 12
modelserve_batch_size_count{model="half",version="1"} 4
modelserve_queue_depth{model="half",version="1",signature=""} 3
modelserve_gpu_utilization_ratio NaN
this line is not a sample {
`);
  return {
    types: [...before.types.entries()],
    help: before.help.get("modelserve_requests_total"),
    skipped: after.skipped,
    models: P.labelValues(after, "modelserve_requests_total", "model"),
    rate: P.rate(before, after, 2, "modelserve_requests_total", {model: "half"}),
    errors: P.rate(before, after, 2, "modelserve_requests_total", {code: c => c !== "OK"}),
    reset: P.rate(after, before, 2, "modelserve_requests_total", {model: "half", code: "OK"}),
    first: P.rate(null, after, 2, "modelserve_requests_total", {}),
    p50: P.quantile(0.5, before, after, "modelserve_request_duration_seconds", {model: "half"}),
    p99: P.quantile(0.99, before, after, "modelserve_request_duration_seconds", {model: "half"}),
    idle: P.quantile(0.5, after, after, "modelserve_request_duration_seconds", {model: "half"}),
    mean: P.mean(P.parse(""), after, "modelserve_batch_size", {model: "half"}),
    queue: P.sum(after, "modelserve_queue_depth", {model: "half", version: "1"}),
    nan: Number.isNaN(P.sum(after, "modelserve_gpu_utilization_ratio", {})),
  };
})()"""

PARSER_EXPECTED = {
    "types": [["modelserve_requests_total", "counter"]],
    "help": "Requests answered, by outcome.",
    "skipped": 1,
    "models": ["half", 'we "quote", a\\b'],
    "rate": 12.0,  # (30 + 5) - (10 + 1) in 2 s
    "errors": 2.0,
    "reset": 5.0,  # a counter that went down restarted from 0: 10 in 2 s
    "first": None,
    "idle": None,
    "mean": 3.0,
    "queue": 3,
    "nan": True,
}
