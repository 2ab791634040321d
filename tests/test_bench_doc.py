"""docs/bench.md's commands, run as written.

Every line of its code blocks that starts with ``modelserve``, ``echo`` or ``mlserver`` is a command.
``modelserve demo`` is stood in for by a real server over the demo repository on free ports (plus the
``mlp`` the MLServer section serves); the test rewrites only the ports and shortens each step
(``--duration``, ``--warmup``). MLServer's commands run against MLServer when its virtual environment is
at ``$MLSERVER_PYTHON`` (default /tmp/mlsv/bin/python; docs/benchmarking.md), and otherwise against
modelserve's own V2 endpoints, which speak the same protocol.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelserve.cli import main
from modelserve.demo import build_repository, mlp
from modelserve.testing import running_server

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bench.md"
MLSERVER_PYTHON = Path(os.environ.get("MLSERVER_PYTHON", "/tmp/mlsv/bin/python"))
SHORT = ["--duration=0.3", "--warmup=0.1", "--quiet"]


def blocks() -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", DOC.read_text(), re.S)


def commands() -> list[str]:
    return [
        line.strip()
        for block in blocks()
        for line in block.splitlines()
        if line.startswith(("modelserve", "echo", "mlserver"))
    ]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlserver(folder: Path, model: Path) -> Iterator[tuple[str, str] | None]:
    """MLServer serving ``model`` as the doc's ``mlp`` (its model-settings.json as printed), or None."""
    if not MLSERVER_PYTHON.exists():
        yield None
        return
    (settings_text,) = [b for b in blocks() if '"implementation"' in b]
    settings = json.loads(settings_text)
    settings["parameters"]["uri"] = str(model)
    (folder / "mlp").mkdir(parents=True)
    (folder / "mlp" / "model-settings.json").write_text(json.dumps(settings))
    shutil.copy(ROOT / "benchmarks" / "mlserver_peer" / "runtime.py", folder / "mlp")
    http, grpc = _free_port(), _free_port()
    (folder / "settings.json").write_text(
        json.dumps({"http_port": http, "grpc_port": grpc, "metrics_port": _free_port(), "parallel_workers": 0})
    )
    mlserver_command = [str(MLSERVER_PYTHON.parent / "mlserver"), "start", "."]
    proc = subprocess.Popen(mlserver_command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/mlp/ready", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "MLServer did not start"
                time.sleep(0.3)
        yield f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
    finally:
        proc.terminate()
        proc.wait(30)


def test_every_command_of_the_bench_doc_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = commands()
    assert lines[0] == "modelserve demo" and "mlserver start ." in lines
    assert any("--protocol=tfs-grpc" in c for c in lines) and any("--compare=" in c for c in lines)
    config = build_repository(tmp_path / "demo")
    (tmp_path / "demo" / "mlp" / "1").mkdir(parents=True)
    model = tmp_path / "demo" / "mlp" / "1" / "model.onnx"
    model.write_bytes(mlp([784, 128, 10], seed=0))
    text = config.read_text().rstrip().removesuffix("}")
    config.write_text(
        text + f'  config {{ name: "mlp" base_path: "{model.parent.parent}" model_platform: "onnx" }}\n}}\n'
    )
    monkeypatch.chdir(tmp_path)
    with running_server(f"--model_config_file={config}") as server, mlserver(tmp_path / "mls", model) as peer:
        rest, grpc = f"127.0.0.1:{server.server.rest_port}", server.grpc_target
        peer_rest, peer_grpc = peer or (rest, grpc)
        ports = {
            "127.0.0.1:8501": rest,
            "127.0.0.1:8500": grpc,
            "127.0.0.1:8080": peer_rest,
            "127.0.0.1:8081": peer_grpc,
        }
        for line in lines[1:]:
            if line == "mlserver start .":
                continue  # started above, in its own folder, when MLServer is there
            for doc_port, port in ports.items():
                line = line.replace(doc_port, port)
            if line.startswith("echo"):
                subprocess.run(["bash", "-c", line], check=True)
                continue
            args = shlex.split(line)[1:]
            assert main([*args, *SHORT]) == 0, line
    document = json.loads((tmp_path / "out.json").read_text())
    assert [s["concurrency"] for s in document["steps"]] == [1, 8, 64]
    assert (tmp_path / "out.csv").exists() and (tmp_path / "out.png").stat().st_size > 0
