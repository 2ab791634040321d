"""Model lifecycle end to end: a real server, real clients, version folders on disk.

Each version of the test model answers with its own number (``om.version_marker``), so every
answer tells which version served it. Versions are written aside and renamed in, so a scan
never sees half a folder. Polling intervals are shortened through ``running_server``'s
overrides; tests wait on the manager's conditions, never on time.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelserve.client import ClientError, GrpcClient
from modelserve.errors import Code, NotFound
from modelserve.options import parse_flags
from modelserve.server import model_list
from modelserve.testing import ServerThread, running_server, server_process

from . import onnx_models as om

FAST = {"file_system_poll_wait_seconds": 0.05, "model_config_file_poll_wait_seconds": 0.05}


def stage(base: Path, version: int, blob: bytes | None = None) -> Path:
    """Write version ``version`` aside, then rename it into ``base`` (what a deploy script should do)."""
    staging = om.write(base / ".staging", version, om.version_marker(version) if blob is None else blob)
    target = base / str(version)
    os.rename(staging, target)
    return target


def states(server: ServerThread, name: str = "m") -> dict[int, str]:
    """Version -> state; empty while the model has no version yet (a reload may have just added it)."""
    try:
        return {s.version: s.state.name for s in server.server.manager.status(name)}
    except NotFound:
        return {}


def wait(server: ServerThread, predicate: Callable[[], bool], timeout: float = 60) -> None:
    """Until ``predicate`` holds in the server, and (front-end processes answer status from the engine's
    state, pushed within ``engine.STATE_SECONDS``) every front end has that state."""
    assert server.server.manager.wait_for(predicate, timeout), "condition not reached"
    server.settle()


def rest(server: ServerThread, path: str, doc: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=30)
    try:
        if doc is None:
            conn.request("GET", path)
        else:
            conn.request("POST", path, body=json.dumps(doc))
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def served_version(server: ServerThread, model: str = "m", suffix: str = "") -> int:
    status, body = rest(server, f"/v1/models/{model}{suffix}:predict", {"instances": [0.0]})
    assert status == 200, body
    return int(body["predictions"][0])


def write_config(path: Path, models: list[str]) -> None:
    """Write a models.config atomically (a reader never sees half a file)."""
    staging = path.with_suffix(".tmp")
    staging.write_text("model_config_list {\n" + "\n".join(models) + "\n}\n")
    os.replace(staging, path)


def entry(name: str, base: Path | str, extra: str = "", platform: str = "tensorflow") -> str:
    return f'config {{ name: "{name}" base_path: "{base}" model_platform: "{platform}" {extra} }}'


class LogWatch(logging.Handler):
    """Sets an event when a log line containing ``text`` is emitted."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = threading.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if self.text in line:
            self.lines.append(line)
            self.seen.set()


@pytest.fixture
def log_watch() -> Iterator[Callable[[str], LogWatch]]:
    handlers: list[LogWatch] = []

    def watch(text: str) -> LogWatch:
        handler = LogWatch(text)
        logging.getLogger("modelserve").addHandler(handler)
        handlers.append(handler)
        return handler

    yield watch
    for handler in handlers:
        logging.getLogger("modelserve").removeHandler(handler)


# ---- versions on disk ---------------------------------------------------------------------------


def test_new_version_is_served_and_the_old_one_unloaded(tmp_path: Path) -> None:
    stage(tmp_path, 1)
    with running_server(f"--model_base_path={tmp_path}", "--model_name=m", **FAST) as server:
        assert served_version(server) == 1
        stage(tmp_path, 2)
        wait(server, lambda: states(server) == {2: "AVAILABLE", 1: "END"})
        assert served_version(server) == 2
        status, body = rest(server, "/v1/models/m")
        assert status == 200
        assert [(v["version"], v["state"]) for v in body["model_version_status"]] == [
            ("2", "AVAILABLE"),
            ("1", "END"),
        ]
        # Roll back by deleting the newest folder: version 1 loads again, then 2 unloads.
        shutil.rmtree(tmp_path / "2")
        wait(server, lambda: states(server) == {2: "END", 1: "AVAILABLE"})
        assert served_version(server) == 1


def test_version_policies_from_the_config_file(tmp_path: Path) -> None:
    for name in ("pinned", "every", "two"):
        for version in (1, 2, 3):
            stage(tmp_path / name, version)
    config = tmp_path / "models.config"
    write_config(
        config,
        [
            entry("pinned", tmp_path / "pinned", "model_version_policy { specific { versions: [1, 3] } }"),
            entry("every", tmp_path / "every", "model_version_policy: { all: {} }"),
            entry("two", tmp_path / "two", "model_version_policy { latest { num_versions: 2 } }"),
        ],
    )
    with running_server(f"--model_config_file={config}", **FAST) as server:
        assert states(server, "pinned") == {3: "AVAILABLE", 1: "AVAILABLE"}
        assert states(server, "every") == {3: "AVAILABLE", 2: "AVAILABLE", 1: "AVAILABLE"}
        assert states(server, "two") == {3: "AVAILABLE", 2: "AVAILABLE"}
        assert served_version(server, "pinned", "/versions/1") == 1
        for name in ("pinned", "every", "two"):
            stage(tmp_path / name, 4)
        wait(server, lambda: states(server, "two") == {4: "AVAILABLE", 3: "AVAILABLE", 2: "END"})
        wait(server, lambda: states(server, "every").get(4) == "AVAILABLE")
        assert states(server, "pinned") == {3: "AVAILABLE", 1: "AVAILABLE"}  # 4 is not one of its versions
        assert served_version(server, "every") == 4 and served_version(server, "pinned") == 3


def test_a_corrupt_version_never_serves(tmp_path: Path) -> None:
    stage(tmp_path, 1)
    flags = (
        f"--model_base_path={tmp_path}",
        "--model_name=m",
        "--max_num_load_retries=1",
        "--load_retry_interval_micros=0",
    )
    with running_server(*flags, **FAST) as server:
        stage(tmp_path, 2, b"this is not an ONNX model")
        wait(server, lambda: states(server).get(2) == "END")
        assert served_version(server) == 1
        code, body = rest(server, "/v1/models/m")
        assert code == 200
        rows = {v["version"]: v for v in body["model_version_status"]}
        assert rows["1"]["state"] == "AVAILABLE"
        assert rows["2"]["state"] == "END" and rows["2"]["status"]["error_code"] != "OK"
        assert rows["2"]["status"]["error_message"]
        with GrpcClient(server.grpc_target) as client:  # GetModelStatus tells the same story
            grpc_rows = {s.version: s for s in client.status("m")}
        assert grpc_rows[1].state == "AVAILABLE" and grpc_rows[2].state == "END"
        assert grpc_rows[2].error_code == rows["2"]["status"]["error_code"]
        assert grpc_rows[2].error_message == rows["2"]["status"]["error_message"]
        # A good, newer version still replaces version 1.
        stage(tmp_path, 3)
        wait(server, lambda: states(server) == {3: "AVAILABLE", 2: "END", 1: "END"})
        assert served_version(server) == 3


def test_a_removed_version_folder_unloads_after_its_requests(tmp_path: Path) -> None:
    stage(tmp_path, 1)
    stage(tmp_path, 2)
    config = tmp_path / "models.config"
    write_config(config, [entry("m", tmp_path, "model_version_policy { all {} }")])
    with running_server(f"--model_config_file={config}", **FAST) as server:
        held = server.server.manager.lease("m", 2)  # a request still running on version 2
        shutil.rmtree(tmp_path / "2")
        wait(server, lambda: states(server)[2] == "UNLOADING")
        assert served_version(server) == 1  # new requests already avoid it
        held.release()
        wait(server, lambda: states(server)[2] == "END")


def test_remote_base_path_and_config_file_through_fsspec() -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")  # what s3:// or gs:// look like to the server, in memory
    fs.pipe("/lifecycle/m/1/model.onnx", om.version_marker(1))
    config = "model_config_list { " + entry("m", "memory://lifecycle/m", platform="onnx") + " }"
    fs.pipe("/lifecycle/models.config", config.encode())
    try:
        with running_server("--model_config_file=memory://lifecycle/models.config", **FAST) as server:
            assert served_version(server) == 1
            fs.pipe("/lifecycle/m/2/model.onnx", om.version_marker(2))  # the folder appears with its file
            wait(server, lambda: states(server) == {2: "AVAILABLE", 1: "END"})
            assert served_version(server) == 2
    finally:
        fs.rm("/lifecycle", recursive=True)


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_base_path_flag_keeps_a_uri(tmp_path: Path, scheme: str) -> None:
    fsspec = pytest.importorskip("fsspec")
    if scheme == "memory":
        fsspec.filesystem("memory").pipe("/flag/m/1/model.onnx", om.version_marker(1))
        base = "memory://flag/m"
    else:
        om.write(tmp_path / "m", 1, om.version_marker(1))
        base = f"file://{tmp_path / 'm'}"
    assert model_list(parse_flags([f"--model_base_path={base}"]))[0].base_path == base
    try:
        with running_server(f"--model_base_path={base}", "--model_name=m", **FAST) as server:
            assert served_version(server) == 1
    finally:
        if scheme == "memory":
            fsspec.filesystem("memory").rm("/flag", recursive=True)


def test_base_path_flag_makes_a_plain_path_absolute() -> None:
    assert model_list(parse_flags(["--model_base_path=rel/m"]))[0].base_path == str(Path("rel/m").absolute())


# ---- labels and config reloads --------------------------------------------------------------


def test_labels_move_with_the_config_file(tmp_path: Path, log_watch: Callable[[str], LogWatch]) -> None:
    stage(tmp_path / "m", 1)
    stage(tmp_path / "m", 2)
    config = tmp_path / "models.config"
    policy = "model_version_policy { all {} }"
    write_config(config, [entry("m", tmp_path / "m", f'{policy} version_labels {{ key: "stable" value: 1 }}')])
    with running_server(f"--model_config_file={config}", **FAST) as server:
        # Labels of the initial config apply once their versions are loaded (TF Serving refuses them).
        assert served_version(server, suffix="/labels/stable") == 1
        write_config(config, [entry("m", tmp_path / "m", f'{policy} version_labels {{ key: "stable" value: 2 }}')])
        wait(server, lambda: server.server.manager.labels("m") == {"stable": 2})
        assert served_version(server, suffix="/labels/stable") == 2
        refused = log_watch("PollFilesystemAndReloadConfig failed to ReloadConfig")
        write_config(config, [entry("m", tmp_path / "m", f'{policy} version_labels {{ key: "stable" value: 7 }}')])
        assert refused.seen.wait(30)
        assert refused.lines[0].endswith(
            "FAILED_PRECONDITION: Request to assign label to version 7 of model m, "
            "which is not currently available for inference"
        )
        assert served_version(server, suffix="/labels/stable") == 2  # the old config keeps running
        status, body = rest(server, "/v1/models/m/labels/canary:predict", {"instances": [0.0]})
        assert (status, body) == (400, {"error": "Unrecognized servable version label: canary"})


def test_config_file_reload_adds_and_removes_models(tmp_path: Path, log_watch: Callable[[str], LogWatch]) -> None:
    for name in ("a", "b"):
        stage(tmp_path / name, 1)
    config = tmp_path / "models.config"
    write_config(config, [entry("a", tmp_path / "a")])
    with running_server(f"--model_config_file={config}", **FAST) as server:
        write_config(config, [entry("a", tmp_path / "a"), entry("b", tmp_path / "b")])
        wait(server, lambda: states(server, "b") == {1: "AVAILABLE"})
        assert served_version(server, "b") == 1
        write_config(config, [entry("b", tmp_path / "b")])
        wait(server, lambda: states(server, "a") == {1: "END"})
        status, body = rest(server, "/v1/models/a:predict", {"instances": [0.0]})
        assert (status, body) == (404, {"error": "Servable not found for request: Latest(a)"})
        broken = log_watch("Failed to read ModelServerConfig file")
        config.write_text("model_config_list { config { name: 'b' base_path: ")
        assert broken.seen.wait(30)
        assert f"Invalid protobuf file: '{config}'" in broken.lines[0]
        assert served_version(server, "b") == 1
        platform = log_watch("Illegal to change a model's platform")
        write_config(config, [entry("b", tmp_path / "b", platform="onnx")])
        assert platform.seen.wait(30)
        assert "For model b platform was tensorflow and new platform requested is onnx" in platform.lines[0]


def test_grpc_reload_config(tmp_path: Path) -> None:
    for name in ("a", "b"):
        stage(tmp_path / name, 1)
    flags = (f"--model_base_path={tmp_path / 'a'}", "--model_name=a", "--max_num_load_retries=0")
    with running_server(*flags) as server, GrpcClient(server.grpc_target) as client:
        client.reload_config("model_config_list {" + entry("b", tmp_path / "b") + "}")
        # Returns once the added model serves; the model left out is gone.
        assert states(server, "b") == {1: "AVAILABLE"} and server.server.manager.model_names() == ["b"]
        assert served_version(server, "b") == 1
        with pytest.raises(ClientError) as raised:
            client.reload_config("model_config_list {" + entry("b", tmp_path / "b") * 2 + "}")
        assert raised.value.code == Code.INVALID_ARGUMENT
        assert "Illegal to list model b multiple times in config list" in str(raised.value)
        stage(tmp_path / "c", 1, b"garbage")
        with pytest.raises(ClientError) as raised:
            client.reload_config("model_config_list {" + entry("c", tmp_path / "c") + "}")
        assert raised.value.code == Code.UNKNOWN
        assert "1 model(s) did not become available: {{{name: c version: 1} due to error: " in str(raised.value)


# ---- zero failed requests -----------------------------------------------------------------------


class Clients:
    """Threads sending predictions continuously (REST and gRPC); every answer is recorded."""

    def __init__(self, server: ServerThread, rest_clients: int = 2, grpc_clients: int = 2) -> None:
        self._server = server
        self._stop = threading.Event()
        self._cv = threading.Condition()
        self.answers: dict[str, list[int]] = {}
        self.failures: list[str] = []
        self._threads = [
            threading.Thread(target=self._run, args=(f"rest-{i}", self._rest_predictions)) for i in range(rest_clients)
        ] + [
            threading.Thread(target=self._run, args=(f"grpc-{i}", self._grpc_predictions)) for i in range(grpc_clients)
        ]

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def wait_until_all_saw(self, version: int, timeout: float = 60) -> bool:
        with self._cv:
            return self._cv.wait_for(
                lambda: (
                    bool(self.failures)
                    or (
                        all(version in answers[-5:] for answers in self.answers.values())
                        and len(self.answers) == len(self._threads)
                    )
                ),
                timeout,
            )

    def _record(self, name: str, version: int | None, failure: str = "") -> None:
        with self._cv:
            if failure:
                self.failures.append(f"{name}: {failure}")
            else:
                self.answers.setdefault(name, []).append(int(version or 0))
            self._cv.notify_all()

    def _run(self, name: str, predictions: Callable[[], Iterator[tuple[int | None, str]]]) -> None:
        for version, failure in predictions():
            self._record(name, version, failure)
            if self._stop.is_set():
                return

    def _rest_predictions(self) -> Iterator[tuple[int | None, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self._server.server.rest_port, timeout=30)
        body = json.dumps({"instances": [0.0, 0.0]})
        try:
            while True:
                try:
                    conn.request("POST", "/v1/models/m:predict", body=body)
                    response = conn.getresponse()
                    data = response.read()
                except OSError as exc:
                    yield None, f"transport: {exc!r}"
                    return
                if response.status != 200:
                    yield None, f"HTTP {response.status}: {data!r}"
                else:
                    predictions = json.loads(data)["predictions"]
                    yield ((int(predictions[0]), "") if predictions[0] == predictions[1] else (None, repr(data)))
        finally:
            conn.close()

    def _grpc_predictions(self) -> Iterator[tuple[int | None, str]]:
        with GrpcClient(self._server.grpc_target) as client:
            while True:
                try:
                    y = client.predict("m", {"x": np.zeros(2, np.float32)})["y"]
                except ClientError as exc:
                    yield None, f"{exc.code.name}: {exc}"
                    continue
                yield int(y[0]), ""


@pytest.mark.parametrize("processes", [1, 2], ids=["1-process", "2-frontend-processes"])
def test_zero_failed_requests_while_versions_swap(tmp_path: Path, processes: int) -> None:
    stage(tmp_path, 1)
    flags = (f"--model_base_path={tmp_path}", "--model_name=m", "--max_num_load_retries=0")
    good = [1]
    with running_server(*flags, **FAST, frontend_processes=processes) as server, Clients(server) as clients:
        assert clients.wait_until_all_saw(1)
        for version in range(2, 14):
            if version == 7:  # a broken version in the middle: never served, nothing fails
                stage(tmp_path, version, b"broken")
                wait(server, lambda v=version: states(server).get(v) == "END")
                continue
            stage(tmp_path, version)
            good.append(version)
            wait(server, lambda v=version: states(server).get(v) == "AVAILABLE")
            assert clients.wait_until_all_saw(version), clients.failures
        history = {s.version: s for s in server.server.manager.status("m")}
    assert clients.failures == []
    assert len(good) >= 11  # at least 10 swaps
    for name, answers in clients.answers.items():
        assert set(answers) <= set(good), name  # only versions that loaded, never the broken one
        assert answers == sorted(answers), name  # each client only ever moves forward
        assert set(answers) == set(good), name  # and saw every version
    assert history[7].error_code != Code.OK
    assert all(history[v].error_code == Code.OK for v in good)


# ---- graceful shutdown ----------------------------------------------------------------------------


def slow_model(steps: int = 200, rows: int = 512, size: int = 1024) -> bytes:
    """y = mean(x broadcast to [batch, rows, size] @ I @ I ...) = x: seconds of MatMuls for each row of a
    [batch, 1] input. Any batch, so that requests the batcher merges run as one (opset 17: ReduceMean
    takes its axes as an attribute, Unsqueeze and Squeeze as an input)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Unsqueeze", ["x", "last"], ["x3"]),  # [batch, 1, 1]
        helper.make_node("Expand", ["x3", "shape"], ["h0"]),  # [batch, rows, size]
    ]
    nodes += [helper.make_node("MatMul", [f"h{i}", "eye"], [f"h{i + 1}"]) for i in range(steps)]
    nodes.append(helper.make_node("ReduceMean", [f"h{steps}"], ["m"], axes=[1, 2], keepdims=1))
    nodes.append(helper.make_node("Squeeze", ["m", "last"], ["y"]))  # [batch, 1]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [
            numpy_helper.from_array(np.eye(size, dtype=np.float32), "eye"),
            numpy_helper.from_array(np.array([1, rows, size], dtype=np.int64), "shape"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "last"),
        ],
    )
    return bytes(helper.make_model(graph, opset_imports=om.OPSET).SerializeToString())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads CPU time from /proc")
@pytest.mark.parametrize(
    "batching",
    [(), ("--enable_batching",), ("--frontend_processes=2",)],
    ids=["threaded-grpc", "asyncio-grpc", "2-frontend-processes"],
)
def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path, batching: tuple[str, ...]) -> None:
    import signal

    om.write(tmp_path / "slow", 1, slow_model(steps=100))
    flags = ["--model_name=slow", f"--model_base_path={tmp_path / 'slow'}", "--drain_grace_seconds=60", *batching]
    with server_process(*flags) as server:
        proc = server.proc
        answers: dict[str, Any] = {}

        def rest_call() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=120)
            conn.request("POST", "/v1/models/slow:predict", body=json.dumps({"instances": [[3.0]]}))
            response = conn.getresponse()
            answers["rest"] = (response.status, json.loads(response.read()))

        def grpc_call() -> None:
            with GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=120) as client:
                answers["grpc"] = client.predict("slow", {"x": np.array([[4.0]], np.float32)})["y"].tolist()

        before = cpu_seconds(proc.pid)
        calls = [threading.Thread(target=rest_call), threading.Thread(target=grpc_call)]
        for call in calls:
            call.start()
        # Both requests are running once the server has burnt a second of CPU on them (the batcher may
        # merge them into one run, which takes as long).
        deadline = time.monotonic() + 60
        while cpu_seconds(proc.pid) - before < 1.0 and proc.poll() is None and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        assert not answers, answers  # still in flight when the signal comes
        proc.send_signal(signal.SIGTERM)
        for call in calls:
            call.join(120)
        assert proc.wait(timeout=120) == 0
        assert answers == {"rest": (200, {"predictions": [[3.0]]}), "grpc": [[4.0]]}
        log = server.text()
        assert "Shutting down: draining in-flight requests" in log
        assert "Successfully unloaded servable version {name: slow version: 1}" in log
