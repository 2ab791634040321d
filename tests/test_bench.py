"""``modelserve bench`` against a live server: every protocol, the counts the server saw, the first-answer
check, open-loop latency from the intended send time, and its outputs (JSON, CSV, PNG).

The server counts requests itself: the test wraps the core's ``predict`` (the one call all four front
ends make for an inference), so the bench's own figures are checked against a count it cannot touch.
"""

from __future__ import annotations

import csv
import http.server
import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelserve.bench import main
from modelserve.bench.inputs import check
from modelserve.bench.scrape import difference, parse
from modelserve.bench.transport import Refused
from modelserve.bench.wire import Model, Tensor
from modelserve.dtypes import DType
from modelserve.errors import Unavailable
from modelserve.testing import ServerThread, running_server

from .onnx_models import half_plus_two, identities, mlp, random_weights, slow, write


class Counted:
    """The server's own count of inference calls (any protocol); with ``failing`` set, every second call
    after the first fails as UNAVAILABLE (a server that answers the first request well, then not)."""

    def __init__(self, server: ServerThread) -> None:
        self.calls = 0
        self.failing = False
        core = server.server.core
        original = core.predict

        async def predict(request: Any) -> Any:
            self.calls += 1
            if self.failing and self.calls > 1 and self.calls % 2:
                raise Unavailable("failing on purpose")
            return await original(request)

        core.predict = predict

    def take(self) -> int:
        calls, self.calls = self.calls, 0
        return calls


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Counted]]:
    root = tmp_path_factory.mktemp("models")
    write(root / "mlp", 1, mlp(random_weights([16, 8, 4], seed=0)))
    write(root / "half_plus_two", 1, half_plus_two())
    write(root / "types", 1, identities(("FP32", "INT64", "BYTES")))
    write(root / "slow", 1, slow(10, 256))
    config = root / "models.config"
    entries = "".join(
        f'config {{ name: "{n}" base_path: "{root / n}" model_platform: "onnx" }} '
        for n in ("mlp", "half_plus_two", "types", "slow")
    )
    config.write_text(f"model_config_list {{ {entries}}}")
    flags = ("--tensorflow_intra_op_parallelism=1", "--num_inference_threads=1")
    with running_server(f"--model_config_file={config}", *flags) as server:
        yield server, Counted(server)


def served_by_metrics(server: ServerThread) -> float:
    """Successful inference requests of model ``mlp`` so far, by the server's /metrics (every protocol)."""
    with urllib.request.urlopen(f"{server.rest_url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelserve_requests_total"
        and sample.labels["model"] == "mlp"
        and sample.labels["code"] == "OK"
        and sample.labels["api"] in ("predict", "infer", "ModelInfer", "Predict")
    )


def target(server: ServerThread, protocol: str) -> str:
    return server.grpc_target if protocol.endswith("grpc") else server.rest_url


SHORT = ["--duration=0.4", "--warmup=0.2", "--quiet"]


def bench(*args: str) -> int:
    return main([*SHORT, *args])


@pytest.mark.parametrize(
    ("protocol", "extra"),
    [("tfs-rest", []), ("tfs-grpc", []), ("v2-rest", []), ("v2-rest", ["--v2-json"]), ("v2-grpc", [])],
)
def test_a_sweep_writes_json_csv_and_png_that_agree_with_the_server(
    served: tuple[ServerThread, Counted], tmp_path: Path, protocol: str, extra: list[str]
) -> None:
    server, counted = served
    counted.take()
    answered = served_by_metrics(server)
    out = tmp_path / "out"
    status = bench(
        f"--target={target(server, protocol)}",
        f"--protocol={protocol}",
        "--model=mlp",
        "--concurrency=1,4",
        f"--json={out}.json",
        f"--csv={out}.csv",
        f"--plot={out}.png",
        *extra,
    )
    assert status == 0
    document = json.loads(Path(f"{out}.json").read_text())
    steps = document["steps"]
    assert [s["concurrency"] for s in steps] == [1, 4]
    for s in steps:
        assert s["errors"] == 0 and s["requests"] > 0
        assert set(s["latency_ms"]) == {"p50", "p90", "p95", "p99", "max"}
        assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] <= s["latency_ms"]["max"]
        assert s["throughput"] == pytest.approx(s["requests"] / s["seconds"], rel=1e-3)
    # Every request the bench sent reached the core once: the first-answer check, warm-ups, measured ones.
    sent = 1 + sum(s["requests"] + s["warmup_requests"] for s in steps)
    assert counted.take() == sent
    # ... and the server's own /metrics counted as many successful inferences of that model.
    assert served_by_metrics(server) - answered == sent
    with Path(f"{out}.csv").open() as table:
        rows = list(csv.DictReader(table))
    assert [int(r["requests"]) for r in rows] == [s["requests"] for s in steps]
    assert Path(f"{out}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("protocol", ["tfs-grpc", "v2-rest", "v2-grpc"])
def test_inputs_come_from_metadata_for_every_dtype_strings_too(
    served: tuple[ServerThread, Counted], tmp_path: Path, protocol: str
) -> None:
    server, _ = served
    out = tmp_path / "types.json"
    assert bench(f"--target={target(server, protocol)}", f"--protocol={protocol}", "--model=types",
                 "--concurrency=2", "--batch-size=3", f"--json={out}") == 0  # fmt: skip
    assert json.loads(out.read_text())["steps"][0]["errors"] == 0


def test_inputs_from_npy_npz_and_json_files(served: tuple[ServerThread, Counted], tmp_path: Path) -> None:
    server, _ = served
    x = np.array([1.0, 2.0, 5.0], dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    (tmp_path / "x.json").write_text(json.dumps({"instances": [1.0, 2.0, 5.0]}))
    np.savez(tmp_path / "want.npz", y=x * 0.5 + 2)
    for name in ("x.npy", "x.npz", "x.json"):
        status = bench(f"--target={server.rest_url}", "--model=half_plus_two", "--concurrency=1",
                       f"--input={tmp_path / name}", f"--reference={tmp_path / 'want.npz'}")  # fmt: skip
        assert status == 0, name


def test_the_first_answer_check_refuses_a_wrong_target_and_sends_no_load(
    served: tuple[ServerThread, Counted], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, counted = served
    counted.take()
    np.savez(tmp_path / "want.npz", y=np.array([9.0, 9.0, 9.0], dtype=np.float32))
    np.save(tmp_path / "x.npy", np.array([1.0, 2.0, 5.0], dtype=np.float32))
    common = [f"--target={server.rest_url}", "--concurrency=1", f"--json={tmp_path / 'no.json'}"]
    # A model whose answer is not the reference (a wrong server, or a wrong model behind the name).
    model = ["--model=half_plus_two", f"--input={tmp_path / 'x.npy'}", f"--reference={tmp_path / 'want.npz'}"]
    assert bench(*common, *model) == 1
    assert "differs from the reference" in capsys.readouterr().err
    # A request the server refuses answers fast: it must not be reported as throughput.
    assert bench(*common, "--model=mlp", "--shape=input:1x3") == 1
    assert "refused: HTTP 400" in capsys.readouterr().err
    assert bench(*common, "--model=no_such_model") == 1
    assert counted.take() == 2 and not (tmp_path / "no.json").exists()


@pytest.mark.parametrize("protocol", ["tfs-rest", "v2-grpc"])
def test_a_step_stops_early_on_errors_and_failures_are_never_throughput(
    served: tuple[ServerThread, Counted], tmp_path: Path, protocol: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server, counted = served
    counted.take()
    counted.failing = True
    out = tmp_path / "out.json"
    try:
        args = [f"--target={target(server, protocol)}", f"--protocol={protocol}", "--model=mlp", "--concurrency=2"]
        assert bench(*args, "--duration=30", f"--json={out}") == 0
    finally:
        counted.failing = False
    (step,) = json.loads(out.read_text())["steps"]
    assert step["stopped"].startswith("stopped early") and step["seconds"] < 10
    kind = "http 503" if protocol == "tfs-rest" else "UNAVAILABLE"
    assert step["errors_by_kind"] == {kind: step["errors"]} and step["errors"] >= 20
    assert step["throughput"] * step["seconds"] == pytest.approx(step["requests"] - step["errors"])
    assert "stopped early" in capsys.readouterr().err


def test_the_check_compares_names_dtypes_and_shapes() -> None:
    model = Model((), (Tensor("y", DType.DT_FLOAT, (-1, 4)),))
    check({"y": np.zeros((2, 4), np.float32)}, model, 2, None, 1e-4)
    for answer, batch, why in (
        ({"z": np.zeros((2, 4), np.float32)}, 2, "no output 'y'"),
        ({"y": np.zeros((2, 4), np.float64)}, 2, "is float64"),
        ({"y": np.zeros((2, 5), np.float32)}, 2, r"has shape \[2, 5\]"),
        ({"y": np.zeros((3, 4), np.float32)}, 2, r"has shape \[3, 4\]"),
    ):
        with pytest.raises(Refused, match=why):
            check(answer, model, batch, None, 1e-4)


def test_open_loop_latency_runs_from_the_intended_send_time(
    served: tuple[ServerThread, Counted], tmp_path: Path
) -> None:
    """A model that takes a few ms, asked at twice the rate it can answer, through one connection: the
    requests queue in the generator (where a closed-loop tool hides them), and the latency shows it."""
    server, counted = served
    closed, opened = tmp_path / "closed.json", tmp_path / "open.json"
    common = [f"--target={server.grpc_target}", "--protocol=v2-grpc", "--model=slow"]
    assert bench(*common, "--concurrency=1", f"--json={closed}") == 0
    service = json.loads(closed.read_text())["steps"][0]
    rate = 2 * service["throughput"]
    counted.take()
    args = [f"--rate={rate:.0f}", "--connections=1", "--warmup=0", "--duration=1"]
    assert bench(*common, *args, f"--json={opened}") == 0
    step = json.loads(opened.read_text())["steps"][0]
    assert step["rate"] == pytest.approx(round(rate))
    assert step["throughput"] < 0.75 * rate  # it could not keep up ...
    # ... so the backlog grows for the whole second: the last requests waited about half of it.
    assert step["latency_ms"]["p50"] > max(10 * service["latency_ms"]["p50"], 40)
    assert step["latency_ms"]["max"] > 250
    assert counted.take() == 1 + step["requests"] + step["warmup_requests"]


def test_a_request_count_per_step_and_several_generator_processes(
    served: tuple[ServerThread, Counted], tmp_path: Path
) -> None:
    server, counted = served
    counted.take()
    out = tmp_path / "out.json"
    args = [f"--target={server.rest_url}", "--model=mlp", "--concurrency=3", "--requests=301", "--processes=2"]
    assert bench(*args, f"--json={out}") == 0
    (step,) = json.loads(out.read_text())["steps"]
    assert step["requests"] == 301 and step["processes"] == 2
    assert counted.take() == 1 + 301 + step["warmup_requests"]


def test_compare_runs_two_targets_in_interleaved_rounds(
    served: tuple[ServerThread, Counted], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = served
    out = tmp_path / "out.json"
    other = server.rest_url.replace("127.0.0.1", "localhost")
    assert bench(f"--target={server.rest_url}", f"--compare={other}", "--model=mlp", "--concurrency=1",
                 "--rounds=2", f"--json={out}") == 0  # fmt: skip
    document = json.loads(out.read_text())
    assert document["targets"] == [server.rest_url, other] and document["rounds"] == 2
    assert [len(s["rounds"]) for s in document["steps"]] == [2, 2]
    (ratio,) = document["compare"]
    assert ratio["concurrency"] == 1 and ratio["throughput"] > 0
    assert f"{other} / {server.rest_url}" in capsys.readouterr().out


class _Metrics(http.server.BaseHTTPRequestHandler):
    """A /metrics whose histograms grow by 10 observations per read (0.5 ms queue, 2 ms model, batch 4)."""

    reads = 0

    def do_GET(self) -> None:
        _Metrics.reads += 1
        n = 10 * _Metrics.reads
        body = (
            f'modelserve_queue_duration_seconds_sum{{model="m"}} {n * 0.0005}\n'
            f'modelserve_queue_duration_seconds_count{{model="m"}} {n}\n'
            f"modelserve_inference_duration_seconds_sum {n * 0.002}\nmodelserve_inference_duration_seconds_count {n}\n"
            f"modelserve_batch_size_sum {n * 4}\nmodelserve_batch_size_count {n}\n# EOF\n"
        ).encode()
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_metrics_are_scraped_around_each_step_and_their_absence_is_tolerated(
    served: tuple[ServerThread, Counted], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = served
    metrics = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=metrics.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{metrics.server_address[1]}"
        out = tmp_path / "out.json"
        common = [f"--target={server.rest_url}", "--model=mlp", "--concurrency=1", f"--json={out}"]
        assert bench(*common, f"--metrics={url}/metrics") == 0
        (step,) = json.loads(out.read_text())["steps"]
        assert step["server"]["queue_ms_mean"] == pytest.approx(0.5)
        assert step["server"]["inference_ms_mean"] == pytest.approx(2.0)
        assert step["server"]["batch_size_mean"] == pytest.approx(4.0)
        assert bench(*common, f"--metrics={url}/nothing") == 0  # a 404: no server figures, said once
        document = json.loads(out.read_text())
        assert "server" not in document["steps"][0] and "HTTP 404" in document["notes"][0]
    finally:
        metrics.shutdown()
        metrics.server_close()
    assert parse("modelserve_batch_size_count 3\nother_count 5\n") == {"modelserve_batch_size_count": 3.0}
    assert difference(None, {}) == {}


def test_plot_without_matplotlib_says_which_extra(
    served: tuple[ServerThread, Counted], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    server, _ = served
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert bench(f"--target={server.rest_url}", "--model=mlp", f"--plot={tmp_path / 'x.png'}") == 2
    assert "modelserve[bench-plot]" in capsys.readouterr().err


def test_help_from_python_m_and_from_the_modelserve_command() -> None:
    for command in (["-m", "modelserve.bench", "--help"], ["-m", "modelserve", "bench", "--help"]):
        done = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        for flag in ("--target", "--protocol", "--concurrency", "--rate", "--json", "--csv", "--plot", "--compare"):
            assert flag in done.stdout
    done = subprocess.run([sys.executable, "-m", "modelserve", "--help"], capture_output=True, text=True, timeout=60)
    assert "modelserve bench" in done.stdout
