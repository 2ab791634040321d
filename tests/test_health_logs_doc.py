"""docs/observability.md (health, logs, traces) run as written: its launch lines, curl lines, Python probe,
Kubernetes probes, access log examples, the otel extra and the tracing set-up.

Each ``python -m modelserve ...`` line runs as a real subprocess in a temporary folder holding
``models/half_plus_two``, on free ports of 127.0.0.1; the other commands get those ports instead of
8500/8501 (and a collector stand-in's port instead of 4318). A curl line's trailing comment is the
status and body it gets.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelserve.demo import half_plus_two
from modelserve.observe import RequestTrace
from modelserve.observe.logs import access_fields
from modelserve.testing import ServerProcess, server_process

from .docs import fenced, section
from .otlp import otlp_collector

REPO = Path(__file__).resolve().parents[1]
DOC = section("observability.md", "Health probes", "Logs", "Traces")
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
# Requests reach the access log and tracing once the front ends pass a RequestTrace (helper M's part).


def blocks() -> list[str]:
    return fenced(DOC)


KINDS: dict[str, Callable[[str], bool]] = {
    "probe launch": lambda b: b.startswith("python -m modelserve") and "--drain_delay_seconds" in b,
    "probe curl": lambda b: b.startswith("curl localhost:8501/healthz"),
    "not ready": lambda b: b.startswith('{"ready":false'),
    "python probe": lambda b: "HealthStub" in b,
    "kubernetes": lambda b: b.startswith("apiVersion:"),
    "log launch": lambda b: b.startswith("python -m modelserve") and "--access_log" in b,
    "access text": lambda b: "I modelserve.access]" in b,
    "access json": lambda b: b.startswith('{"time"'),
    "otel install": lambda b: b.startswith("pip install"),
    "tracing launch": lambda b: b.startswith("OTEL_EXPORTER_OTLP_ENDPOINT="),
    "traced curl": lambda b: b.startswith("curl -H 'traceparent"),
}


def block(kind: str) -> str:
    (found,) = [b for b in blocks() if KINDS[kind](b)]
    return found


def test_every_block_is_run() -> None:
    for text in blocks():
        assert [kind for kind, is_kind in KINDS.items() if is_kind(text)], f"no test runs this block:\n{text}"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "models" / "half_plus_two" / "1").mkdir(parents=True)
    (tmp_path / "models" / "half_plus_two" / "1" / "model.onnx").write_bytes(half_plus_two())
    return tmp_path


@contextlib.contextmanager
def launched(line: str, folder: Path, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """A doc launch line (``VAR=value`` prefixes go to the environment) with the model in ``folder``."""
    words = shlex.split(line.strip().replace("=/models/", f"={folder}/models/"))
    extra = {}
    while "=" in words[0] and not words[0].startswith("-"):
        name, _, value = words.pop(0).partition("=")
        extra[name] = value
    assert words[:3] == ["python", "-m", "modelserve"], line
    with server_process(*words[3:], cwd=folder, env={**extra, **(env or {})}) as server:
        yield server


def curl(command: str, folder: Path) -> tuple[int, str]:
    written = command + " --silent --show-error --max-time 20 --write-out '\\n%{http_code}'"
    done = subprocess.run(["bash", "-c", written], cwd=folder, capture_output=True, text=True, timeout=60)
    body, _, status = done.stdout.rpartition("\n")
    assert done.returncode == 0, done.stderr
    return int(status), body


def check(server: ServerProcess, service: str) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


# ---- probes ----------------------------------------------------------------------------------


def test_the_probes_answer_as_the_doc_says(folder: Path) -> None:
    yaml = pytest.importorskip("yaml")
    launch = block("probe launch")
    with launched(launch, folder) as server:
        for line in block("probe curl").strip().splitlines():
            command, _, comment = line.partition("  # ")
            status, body = curl(server.on(command), folder)
            expected_status, _, expected_body = comment.partition(" ")
            assert status == int(expected_status), line
            assert body.strip() == expected_body, line
        snippet = server.on(block("python probe"))
        done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60, env=ENV)
        assert done.stdout.splitlines() == ["'' SERVING", "'half_plus_two' SERVING"], done.stderr
        # The Pod's probes, as the kubelet runs them, and its args are the launch line's flags.
        (container,) = yaml.safe_load(block("kubernetes"))["spec"]["containers"]
        assert container["args"] == shlex.split(launch)[3:]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            spec = container[probe]
            if "httpGet" in spec:
                assert spec["httpGet"]["port"] == 8501
                url = f"http://127.0.0.1:{server.rest_port}{spec['httpGet']['path']}"
                with urllib.request.urlopen(url, timeout=10) as answer:
                    assert answer.status == 200, probe
            else:
                assert spec["grpc"]["port"] == 8500
                assert check(server, spec["grpc"]["service"]) == "SERVING", probe
        assert check(server, "half_plus_two") == "SERVING"  # the one-model probe the doc names


def test_the_not_ready_answer_is_the_servers(folder: Path) -> None:
    from modelserve.errors import ServingError
    from modelserve.lifecycle.config import ModelConfig
    from modelserve.testing import running_server

    broken = folder / "models" / "broken"
    (broken / "3").mkdir(parents=True)
    (broken / "3" / "model.onnx").write_bytes(b"not an onnx model")
    model = folder / "models" / "half_plus_two"
    with running_server(f"--model_base_path={model}", "--model_name=half_plus_two", "--max_num_load_retries=0") as s:
        with pytest.raises(ServingError):
            s.call(
                s.server.core.reload_config(
                    [ModelConfig("half_plus_two", str(model)), ModelConfig("broken", str(broken))]
                )
            )
        s.settle()  # a reload made in-process: every front-end process has its state
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{s.rest_url}/readyz", timeout=10)
        assert info.value.code == 503
        real = json.loads(info.value.read())
    shown = json.loads(block("not ready"))
    assert real.keys() == shown.keys() and real["not_ready"].keys() == shown["not_ready"].keys()
    assert real["not_ready"]["broken"].startswith(shown["not_ready"]["broken"].removesuffix("..."))


# ---- logs ------------------------------------------------------------------------------------


def test_the_log_flags_line_writes_json_and_an_access_log(folder: Path) -> None:
    with launched(block("log launch"), folder) as server:
        with contextlib.suppress(urllib.error.HTTPError):  # an error: always in the access log
            urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/v1/models/nope", timeout=10)
        server.proc.terminate()
        server.proc.wait(60)
        docs = [json.loads(line) for line in server.text().splitlines()]
    assert {"time", "level", "logger", "message"} <= set(docs[0])
    assert any(d["message"].startswith("Access log: one json line per request to access.log") for d in docs)
    assert (folder / "access.log").exists()
    (line,) = (folder / "access.log").read_text().splitlines()
    assert json.loads(line)["status"] == "NOT_FOUND"


def test_the_access_line_examples_have_the_logs_fields() -> None:
    keys = list(access_fields(RequestTrace("tfs_rest")))
    text = block("access text").strip()
    pairs = [pair.split("=", 1) for pair in text.split("] ", 1)[1].split()]
    assert [key for key, _ in pairs] == keys
    shown = json.loads(block("access json"))
    assert list(shown) == ["time", "level", "logger", "message", *keys]
    assert {key: str(value) or "-" for key, value in shown.items() if key in keys} == dict(pairs)


# ---- traces ----------------------------------------------------------------------------------


def test_the_otel_extra_is_what_the_doc_installs() -> None:
    assert shlex.split(block("otel install")) == ["pip", "install", "modelserve[otel]"]
    extra = re.search(r"^otel = \[(.*)\]$", (REPO / "pyproject.toml").read_text(), re.M)
    assert extra is not None and '"opentelemetry-sdk>=' in extra.group(1)
    pytest.importorskip("opentelemetry.sdk")
    import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401  (the extra's exporter)


def test_the_tracing_setup_exports_the_callers_trace(folder: Path) -> None:
    pytest.importorskip("opentelemetry.sdk")
    with otlp_collector() as collector:
        launch = block("tracing launch").replace("http://localhost:4318", collector.url)
        with launched(launch, folder, {"OTEL_BSP_SCHEDULE_DELAY": "100"}) as server:
            assert f"Tracing: spans exported by OTLP/HTTP to {collector.url}" in server.text()
            status, body = curl(server.on(block("traced curl").strip()), folder)
            assert status == 200 and json.loads(body) == {"predictions": [2.5, 3.0]}
            assert collector.seen.wait(30), server.text()
    assert "modelserve predict" in collector.span_names("4bf92f3577b34da6a3ce929d0e0e4736")
