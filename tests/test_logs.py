"""Logs: --log_level and --log_format, the access log (an Observer of finished requests), repeated poll
lines said once, load steps with their durations."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from modelserve.errors import Code, InvalidArgument
from modelserve.lifecycle.config import read_model_config_file
from modelserve.lifecycle.reload import ConfigFileWatcher
from modelserve.observe import RequestTrace
from modelserve.observe.logs import AccessLog, JsonFormatter, Repeats, access_line, configure, formatter, level
from modelserve.observe.offload import Offload
from modelserve.testing import CHECKOUT, running_server, server_process

from . import onnx_models as om


@pytest.fixture(scope="module")
def half(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("half") / "half"
    om.write(base, 1, om.half_plus_two())
    return base


def finished_trace(code: Code = Code.OK, request_id: str = "req-1") -> RequestTrace:
    """A predict as the front end and core would record it: arrival, decode, queue, run, answer."""
    trace = RequestTrace("tfs_rest", "predict", request_id=request_id, peer="127.0.0.1:5000", bytes_in=40, start=100.0)
    trace.model, trace.version, trace.signature = "half", 1, "serving_default"
    trace.decoded, trace.queued = 100.001, 100.002
    trace.ran(100.004, 100.010, batch_rows=2)
    trace.finish(code, bytes_out=30, reason="" if code is Code.OK else "deadline")
    trace.end = 100.012  # fixed, so the durations are known
    return trace


# ---- formats ---------------------------------------------------------------------------------


def test_json_lines_carry_time_level_logger_message_and_extra_fields() -> None:
    record = logging.LogRecord("modelserve.x", logging.WARNING, __file__, 1, "loaded %s", ("half",), None)
    record.model = "half"  # what extra={"model": "half"} does
    doc = json.loads(JsonFormatter().format(record))
    assert doc["level"] == "WARNING" and doc["logger"] == "modelserve.x" and doc["message"] == "loaded half"
    assert doc["model"] == "half" and doc["time"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exception"]


def test_configure_writes_the_chosen_format_at_the_chosen_level() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    out = io.StringIO()
    try:
        configure("warning", "json", stream=out)
        logging.getLogger("modelserve.test").info("hidden")
        logging.getLogger("modelserve.test").warning("shown %d", 1)
    finally:
        root.handlers[:], root.level = saved  # pytest's own capture handlers come back
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["message"] == "shown 1"


def test_unknown_level_and_format_are_refused() -> None:
    assert level("DEBUG") == logging.DEBUG
    with pytest.raises(InvalidArgument, match="--log_level must be one of debug, info, warning, error"):
        level("loud")
    with pytest.raises(InvalidArgument, match="--log_format must be one of text, json"):
        formatter("xml")


def run_cli(*flags: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "modelserve", "--port=-1", "--rest_api_port=-1", *flags]
    env = {"PYTHONPATH": str(CHECKOUT), "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_the_process_logs_json_and_refuses_a_bad_level(tmp_path: Path) -> None:
    result = run_cli(f"--model_base_path={tmp_path / 'absent'}", "--log_format=json")
    assert result.returncode == 255
    docs = [json.loads(line) for line in result.stderr.splitlines()]  # every line one JSON object
    assert any(d["level"] == "ERROR" and "Could not find base path" in d["message"] for d in docs)
    assert {"time", "level", "logger", "message"} <= set(docs[0])
    quiet = run_cli(f"--model_base_path={tmp_path / 'absent'}", "--log_level=error")
    assert quiet.returncode == 255 and "Could not find base path" in quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if " I " in line[:40]]  # no INFO line
    bad = run_cli(f"--model_base_path={tmp_path}", "--log_level=loud")
    assert bad.returncode == 255 and "--log_level must be one of" in bad.stderr


# ---- the access log, in isolation ------------------------------------------------------------


def test_access_log_text_line_has_every_field(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    access = AccessLog(str(path))
    access.finished(finished_trace())
    access.close()
    (line,) = path.read_text().splitlines()
    fields = dict(pair.split("=", 1) for pair in line.split("] ", 1)[1].split())
    assert fields == {
        "peer": "127.0.0.1:5000",
        "protocol": "tfs_rest",
        "api": "predict",
        "model": "half",
        "version": "1",
        "signature": "serving_default",
        "status": "OK",
        "reason": "-",
        "bytes_in": "40",
        "bytes_out": "30",
        "queue_ms": "2.0",
        "inference_ms": "6.0",
        "total_ms": "12.0",
        "request_id": "req-1",
    }
    assert " I modelserve.access] " in line


def test_access_log_json_and_sampling_keeps_every_error(tmp_path: Path) -> None:
    path = tmp_path / "access.jsonl"
    access = AccessLog(str(path), "json", sample_rate=0.0)
    for n in range(5):
        access.finished(finished_trace(request_id=f"ok-{n}"))  # sampled out
    access.finished(finished_trace(Code.DEADLINE_EXCEEDED, request_id="late"))
    access.close()
    (line,) = path.read_text().splitlines()
    doc = json.loads(line)
    assert doc["request_id"] == "late" and doc["status"] == "DEADLINE_EXCEEDED" and doc["reason"] == "deadline"
    assert (doc["queue_ms"], doc["inference_ms"], doc["total_ms"], doc["version"]) == (2.0, 6.0, 12.0, 1)
    assert doc["logger"] == "modelserve.access" and doc["message"] == "tfs_rest predict DEADLINE_EXCEEDED"


def test_access_log_samples_successes_at_the_rate(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    draws = iter([0.1, 0.9, 0.2, 0.6])  # below 0.5 is kept
    access = AccessLog(str(path), sample_rate=0.5, sample=lambda: next(draws))
    for n in range(4):
        access.finished(finished_trace(request_id=f"r{n}"))
    access.close()
    assert [line.rsplit("request_id=", 1)[1] for line in path.read_text().splitlines()] == ["r0", "r2"]
    with pytest.raises(InvalidArgument, match="between 0 and 1"):
        AccessLog(str(path), sample_rate=1.5)
    with pytest.raises(InvalidArgument, match=r"--access_log .*/no/such/folder/a\.log: No such file or directory"):
        AccessLog(str(tmp_path / "no" / "such" / "folder" / "a.log"))


def test_access_line_marks_what_did_not_happen() -> None:
    line = access_line({"model": "", "version": None, "queue_ms": None, "total_ms": 500.0})
    assert line == "model=- version=- queue_ms=- total_ms=500.0"


def test_a_failing_writer_is_said_once_and_the_thread_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    handled: list[list[int]] = []
    calls = threading.Semaphore(0)

    def handle(batch: list[int]) -> None:
        calls.release()
        if 0 in batch:
            raise OSError("No space left on device")
        handled.append(batch)

    offload = Offload[int]("test-writer", handle)
    with caplog.at_level(logging.ERROR, "modelserve.observe.offload"):
        for _ in range(2):
            offload.put(0)
            assert calls.acquire(timeout=30)  # one batch each
        offload.put(1)
        offload.close()  # handles what is queued first
        offload.put(5)  # after close: never handled
    assert handled == [[1]]
    assert [r.getMessage() for r in caplog.records] == ["test-writer failed (said once)"]
    offload.close()  # twice is fine


# ---- the access log, end to end (after helper M's plumbing) ------------------------------------


def test_access_log_has_a_line_per_request_with_its_request_id(half: Path, tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    with running_server(f"--model_base_path={half}", "--model_name=half", f"--access_log={path}") as s:
        body = json.dumps({"instances": [1.0, 2.0, 3.0]}).encode()
        for n in range(3):
            request = urllib.request.Request(
                f"{s.rest_url}/v1/models/half:predict", data=body, headers={"x-request-id": f"mine-{n}"}
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 200
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(f"{s.rest_url}/v1/models/nope:predict", data=body))
        info.value.close()
    lines = path.read_text().splitlines()  # the server stopped: every line is written
    rows = [dict(pair.split("=", 1) for pair in line.split("] ", 1)[1].split()) for line in lines]
    mine = [r for r in rows if r["request_id"].startswith("mine-")]
    assert [r["request_id"] for r in mine] == ["mine-0", "mine-1", "mine-2"]
    for row in mine:
        assert (row["protocol"], row["api"], row["model"], row["version"], row["status"]) == (
            "tfs_rest",
            "predict",
            "half",
            "1",
            "OK",
        )
        assert row["bytes_in"] == str(len(body)) and int(row["bytes_out"]) > 0 and float(row["total_ms"]) > 0
        assert row["peer"].startswith("127.0.0.1")
    assert [r["status"] for r in rows if r not in mine] == ["NOT_FOUND"]


def test_access_log_to_stderr_follows_the_json_format(half: Path) -> None:
    with server_process(f"--model_base_path={half}", "--model_name=half", "--access_log=-", "--log_format=json") as p:
        url = f"http://127.0.0.1:{p.rest_port}/v1/models/half"
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.status == 200
        p.proc.terminate()
        p.proc.wait(60)
        docs = [json.loads(line) for line in p.text().splitlines()]
    (access,) = [d for d in docs if d["logger"] == "modelserve.access"]
    assert (access["api"], access["model"], access["status"]) == ("status", "half", "OK")


# ---- repeated lines said once; load steps ------------------------------------------------------


def test_repeats_say_a_line_once_until_it_changes(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("modelserve.test.repeats")
    repeats = Repeats(logger)
    with caplog.at_level(logging.DEBUG, logger.name):
        for _ in range(3):
            repeats.report("m", [(logging.WARNING, "no versions")])
        repeats.report("m", [(logging.WARNING, "no versions"), (logging.ERROR, "worse")])
        repeats.report("m", [])  # all well again
        repeats.report("m", [(logging.WARNING, "no versions")])
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [s for s in said if s[0] > logging.DEBUG] == [
        (logging.WARNING, "no versions"),
        (logging.ERROR, "worse"),
        (logging.WARNING, "no versions"),
    ]
    assert said.count((logging.DEBUG, "no versions")) == 3  # the repeats, for --log_level=debug


def test_polls_say_a_missing_specific_version_once(
    half: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "models.config"
    policy = "model_version_policy { specific { versions: [1, 9] } }"
    config.write_text(
        f"model_config_list {{ config {{ name: 'half' base_path: '{half}' model_platform: 'onnx' {policy} }} }}"
    )
    with running_server(f"--model_config_file={config}") as s:
        with caplog.at_level(logging.DEBUG, "modelserve"):
            caplog.clear()
            for _ in range(4):  # what --file_system_poll_wait_seconds=1 does every second
                s.server.manager.poll()
                s.server.core.reload_and_wait(read_model_config_file(str(config)))  # a config file poll
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
        debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert not [m for m in said if "Version 9 of servable half" in m]  # said once, at start-up
    assert sum("Version 9 of servable half" in m for m in debug) == 4  # and then at DEBUG only
    assert not [m for m in said if "Adding/updating models" in m]  # an unchanged config is not news


def test_a_broken_config_file_is_reported_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'x' ")  # truncated
    applied: list[object] = []
    watcher = ConfigFileWatcher(str(config), 1, applied.append)
    with caplog.at_level(logging.INFO, "modelserve.lifecycle.reload"):
        for _ in range(3):
            assert watcher.check_now() is False
        config.write_text("model_config_list { config { name: 'x' base_path: '/x' model_platform: 'onnx' } }")
        assert watcher.check_now() is True
        config.write_text("model_config_list { config { name: 'x' ")
        assert watcher.check_now() is False
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    said = [r.getMessage().split(":", 1)[0] for r in errors]  # broken, mended, broken again: said twice
    assert (
        said
        == ["Error parsing text-format tensorflow.serving.ModelServerConfig", "Failed to read ModelServerConfig file"]
        * 2
    )
    assert len(applied) == 1


def test_every_load_step_is_logged_with_its_duration(half: Path, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, "modelserve.lifecycle"),
        running_server(f"--model_base_path={half}", "--model_name=half"),
    ):
        pass
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Loading servable {name: half")]
    for step in ("copy to a local folder", "platform load", "runner", "warm-up"):
        assert any(f": {step} took " in m and m.endswith(" s") for m in steps), (step, steps)
