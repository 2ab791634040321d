"""The demo repository: built deterministically, served, answers checked with numpy."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from modelserve.demo import banner, build_repository
from modelserve.testing import running_server


def _post(url: str, doc: object) -> dict:
    req = urllib.request.Request(url, data=json.dumps(doc).encode())
    return json.load(urllib.request.urlopen(req, timeout=30))  # type: ignore[no-any-return]


def _numpy_forward(model_path: Path, x: np.ndarray) -> np.ndarray:
    """The MLP computed from the file's weights with numpy (Gemm + ReLU, softmax at the end)."""
    weights = {
        t.name: numpy_helper.to_array(t).astype(np.float64) for t in onnx.load(str(model_path)).graph.initializer
    }
    h = x.astype(np.float64)
    layers = sorted({k[1:] for k in weights if k.startswith("w")})
    for i, layer in enumerate(layers):
        h = h @ weights[f"w{layer}"] + weights[f"b{layer}"]
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_demo_repository_is_deterministic(tmp_path: Path) -> None:
    build_repository(tmp_path / "a")
    build_repository(tmp_path / "b")
    for rel in ["half_plus_two/1/model.onnx", "mnist/1/model.onnx", "mnist/2/model.onnx"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert (tmp_path / "a/mnist/1/model.onnx").read_bytes() != (tmp_path / "a/mnist/2/model.onnx").read_bytes()


def test_demo_models_serve(tmp_path: Path) -> None:
    config = build_repository(tmp_path)
    with running_server(f"--model_config_file={config}") as server:
        assert _post(f"{server.rest_url}/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0, 5.0]}) == {
            "predictions": [2.5, 3.0, 4.5]
        }
        x = np.random.default_rng(3).random((2, 784), dtype=np.float32)
        for version in (1, 2):
            got = _post(f"{server.rest_url}/v1/models/mnist/versions/{version}:predict", {"instances": x.tolist()})
            expected = _numpy_forward(tmp_path / f"mnist/{version}/model.onnx", x)
            np.testing.assert_allclose(np.array(got["predictions"]), expected, rtol=1e-4, atol=1e-6)


# ---- the demo as a newcomer runs it: every command its banner prints ----------------------------


def banner_commands(text: str) -> list[str]:
    """The shell commands in the banner: lines that start with curl or python, continuations joined."""
    joined = text.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip().startswith(("curl ", "python "))]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``modelserve demo`` as a real process on free ports: its banner, and an environment to run it in."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelserve", "demo", f"--dir={tmp_path}", "--port=-1", "--rest_api_port=-1"],
        stderr=subprocess.PIPE,
        text=True,
    )
    drain: threading.Thread | None = None
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        expected: list[str] | None = None
        for line in proc.stderr:  # the banner comes once the ports are open
            seen.append(line)
            if m := re.search(r"REST on :(\d+), gRPC on :(\d+)\.", line):
                expected = banner(tmp_path, int(m.group(1)), int(m.group(2))).splitlines(keepends=True)
            if expected and "".join(seen).endswith("".join(expected)):
                break
        assert expected, "".join(seen)
        drain = threading.Thread(target=proc.stderr.read, daemon=True)  # keep the pipe from filling
        drain.start()
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        yield "".join(expected), env  # ``python`` in the banner is this interpreter
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        if drain is not None:
            drain.join(10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_every_command_the_demo_banner_prints_works(demo: tuple[str, dict[str, str]]) -> None:
    text, env = demo
    assert ":-1" not in text  # the ports it really bound, not the flags' -1
    commands = banner_commands(text)
    assert len(commands) == 8, text
    answers = {}
    for command in commands[:6]:
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode == 0, (command, result.stderr)
        doc = json.loads(result.stdout)
        assert "error" not in doc, (command, doc)
        answers[re.findall(r"localhost:\d+/(\S+)", command)[-1]] = doc
    assert answers["v1/models/half_plus_two:predict"] == {"predictions": [2.5, 3.0, 4.5]}
    assert answers["v1/models/half_plus_two/versions/2:predict"] == {"outputs": [[2.5], [3.0]]}
    assert [v["state"] for v in answers["v1/models/half_plus_two"]["model_version_status"]] == ["AVAILABLE"]
    mnist = {v["version"]: v["state"] for v in answers["v1/models/mnist"]["model_version_status"]}
    assert mnist == {"2": "AVAILABLE", "1": "AVAILABLE"}
    assert answers["v1/models/mnist/versions/1/metadata"]["model_spec"]["version"] == "1"
    [probabilities] = answers["v1/models/mnist:predict"]["predictions"]
    assert len(probabilities) == 10 and abs(sum(probabilities) - 1) < 1e-4
    ready, metrics = (
        subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, env=env, check=True).stdout
        for command in commands[6:]
    )
    assert json.loads(ready) == {"ready": True}
    # the six requests above, counted by model and outcome (the metrics command ran after them)
    counted = {
        (sample.labels["model"], sample.labels["api"]): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.labels.get("code") == "OK"
    }
    assert counted[("half_plus_two", "predict")] == 2 and counted[("mnist", "predict")] == 1, metrics
    assert counted[("mnist", "metadata")] == 1 and counted[("half_plus_two", "status")] == 1, metrics
    for page in re.findall(r"http://localhost:\d+/\w+", text):  # the pages it names answer
        with urllib.request.urlopen(page.replace("localhost", "127.0.0.1"), timeout=10) as answer:
            assert answer.status == 200 and answer.headers["content-type"].startswith("text/html"), page
