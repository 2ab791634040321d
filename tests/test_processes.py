"""--frontend_processes: how many are chosen, and (with a real server) how they are started, supervised
and stopped."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelserve import processes
from modelserve.client import ClientError, GrpcClient
from modelserve.errors import Code
from modelserve.platforms.cpus import CpuBudget
from modelserve.testing import running_server, server_process

from . import onnx_models as om
from .docs import DOCS, fenced, section


@pytest.mark.parametrize(
    ("requested", "cpus", "chosen"),
    [
        (0, 1, 1),
        (0, 2, 1),
        (0, 3, 1),
        (0, 4, 2),
        (0, 6, 3),
        (0, 16, 8),
        (0, 64, 8),
        (2, 1, 2),  # asked for: as asked, whatever the CPUs
        (12, 64, 12),
    ],
)
def test_the_default_follows_the_cpus_really_available(requested: int, cpus: int, chosen: int) -> None:
    count, why = processes.count(requested, CpuBudget(cpus, cpus, None))
    assert count == chosen
    assert (why == "--frontend_processes") if requested else (f"{cpus} CPU(s) available" in why)


def test_a_cgroup_quota_counts_not_the_affinity() -> None:
    count, why = processes.count(0, CpuBudget(2, 32, 1.5, "/sys/fs/cgroup/cpu.max"))
    assert count == 1
    assert "cgroup quota 1.5 CPUs" in why and "one process below 4 CPUs" in why


# ---- a real server with two front-end processes -------------------------------------------------------


def model_folder(root: Path) -> Path:
    om.write(root / "hpt", 1, om.half_plus_two())
    om.write(root / "slow", 1, om.slow(steps=400, size=512))  # seconds on an idle machine too
    entries = "\n".join(
        f'config {{ name: "{n}" base_path: "{root / n}" model_platform: "onnx" }}' for n in ("hpt", "slow")
    )
    config = root / "models.config"
    config.write_text("model_config_list {\n" + entries + "\n}\n")
    return config


def wait_until(predicate: Callable[[], bool], seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.05)


def predict_rest(port: int, model: str = "hpt") -> list[float]:
    """One REST predict of half plus two on a connection of its own (the kernel picks the front end for each)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models/{model}:predict", b'{"instances": [1.0, 2.0]}', method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return list(json.loads(answer.read())["predictions"])


def serves(port: int) -> bool:
    try:
        return predict_rest(port) == [2.5, 3.0]
    except OSError:
        return False


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def gone(pid: int) -> bool:
    """No such process any more (or only its zombie, which cannot run)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def rest_requests_total(text: str, model: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelserve_requests_total"
        and sample.labels.get("model") == model
        and sample.labels.get("protocol") == "tfs_rest"
    )


def scraped_rest_requests(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as page:
        return rest_requests_total(page.read().decode(), "hpt")


@pytest.mark.skipif(sys.platform != "linux", reason="front-end processes need Linux (memfd, pidfd, SO_REUSEPORT)")
def test_two_processes_share_the_ports_announce_once_and_report_the_whole_server(tmp_path: Path) -> None:
    config = model_folder(tmp_path)
    with server_process(f"--model_config_file={config}", "--frontend_processes=2") as server:
        assert len(children_of(server.proc.pid)) == 2
        for _ in range(20):
            assert predict_rest(server.rest_port) == [2.5, 3.0]
        with GrpcClient(f"127.0.0.1:{server.grpc_port}") as client:
            assert client.predict("hpt", {"x": np.array([1.0], np.float32)})["y"].tolist() == [2.5]

        for _ in range(6):  # each on a new connection: either front end answers, with every count at once
            assert scraped_rest_requests(server.rest_port) == 20
        log = server.text()
    assert "Front ends: 2 processes (--frontend_processes)" in log
    assert log.count("Exporting HTTP/REST API at:localhost:") == 1
    assert log.count("Running gRPC ModelServer at ") == 1
    assert log.count("Front-end process ") >= 2


@pytest.mark.skipif(sys.platform != "linux", reason="front-end processes need Linux (memfd, pidfd, SO_REUSEPORT)")
def test_a_killed_front_end_fails_its_request_cleanly_and_is_started_again(tmp_path: Path) -> None:
    config = model_folder(tmp_path)
    with running_server(f"--model_config_file={config}", frontend_processes=2) as st:
        pool, engine = st.server.processes, st.server.engine
        assert pool is not None and engine is not None
        for _ in range(10):  # on either front end
            assert predict_rest(st.server.rest_port) == [2.5, 3.0]
        assert scraped_rest_requests(st.server.rest_port) == 10
        outcome: list[BaseException | None] = []

        def slow_call() -> None:
            try:
                with GrpcClient(st.grpc_target, timeout=120) as client:
                    client.predict("slow", {"x": np.ones((512, 512), np.float32)})
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        call = threading.Thread(target=slow_call)
        call.start()
        wait_until(lambda: any(c.link.tasks for c in list(pool.children.values())))
        (busy,) = [c for c in list(pool.children.values()) if c.link.tasks]
        os.kill(busy.proc.pid, signal.SIGKILL)
        call.join(60)
        assert not call.is_alive(), "the request of a killed front end hangs"
        (error,) = outcome
        assert isinstance(error, ClientError) and error.code == Code.UNAVAILABLE, error
        wait_until(lambda: busy.slot in pool.children and pool.children[busy.slot] is not busy)
        wait_until(lambda: engine.inflight() == 0)  # the engine cancelled the killed one's request
        for _ in range(10):
            assert predict_rest(st.server.rest_port) == [2.5, 3.0]
        assert len(engine.links) == 2
        # the killed front end's counts stay in the totals: no counter goes back, none counts twice
        assert scraped_rest_requests(st.server.rest_port) == 20


def rest_state(port: int, model: str) -> str:
    """The state of ``model``'s highest version, on a connection of its own (either front end answers)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/{model}", timeout=30) as answer:
        return str(json.loads(answer.read())["model_version_status"][0]["state"])


@pytest.mark.skipif(sys.platform != "linux", reason="front-end processes need Linux (memfd, pidfd, SO_REUSEPORT)")
def test_a_reload_is_answered_once_every_front_end_has_its_state(tmp_path: Path) -> None:
    config = model_folder(tmp_path)
    both = config.read_text()
    hpt_only = both.replace(f'config {{ name: "slow" base_path: "{tmp_path / "slow"}" model_platform: "onnx" }}', "")
    assert hpt_only != both
    with running_server(f"--model_config_file={config}", frontend_processes=2) as st:
        port = st.server.rest_port
        with GrpcClient(st.grpc_target) as client:
            for text, state in ((hpt_only, "END"), (both, "AVAILABLE"), (hpt_only, "END")):
                client.reload_config(text)
                # at once, whichever front end each connection reaches (a removed model keeps its status)
                assert [rest_state(port, "slow") for _ in range(8)] == [state] * 8


@pytest.mark.skipif(sys.platform != "linux", reason="front-end processes need Linux (memfd, pidfd, SO_REUSEPORT)")
def test_sigkill_of_the_parent_under_load_leaves_no_process_and_no_shared_memory(tmp_path: Path) -> None:
    config = model_folder(tmp_path)
    shm = set(os.listdir("/dev/shm"))
    with server_process(f"--model_config_file={config}", "--frontend_processes=2") as server:
        children = children_of(server.proc.pid)
        assert len(children) == 2
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError):  # the server goes away under it
                    predict_rest(server.rest_port)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)  # load, not a wait for a state: requests in flight when the kill comes
            server.proc.kill()
            server.proc.wait(30)
            wait_until(lambda: all(gone(pid) for pid in children), 10)
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
    assert set(os.listdir("/dev/shm")) <= shm


@pytest.mark.skipif(sys.platform != "linux", reason="front-end processes need Linux (memfd, pidfd, SO_REUSEPORT)")
def test_the_docs_command_runs_as_printed(tmp_path: Path) -> None:
    """docs/architecture.md's command, in a folder holding models/half: two front ends, said in the log."""
    (line,) = [block.strip() for block in fenced(section("architecture.md", "Every core")) if "modelserve " in block]
    program, *flags = line.split()
    assert program == "modelserve"
    om.write(tmp_path / "models" / "half", 1, om.half_plus_two())
    with server_process(*flags, cwd=tmp_path) as server:
        assert len(children_of(server.proc.pid)) == 2
        assert predict_rest(server.rest_port, "half") == [2.5, 3.0]
        assert "Front ends: 2 processes (--frontend_processes)" in server.text()


@pytest.mark.skipif(sys.platform != "linux", reason="front-end processes need Linux (memfd, pidfd, SO_REUSEPORT)")
def test_a_crash_loop_is_given_up_and_with_every_slot_down_the_server_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(processes, "FIRST_BACKOFF_SECONDS", 0.05)
    monkeypatch.setattr(processes, "MOST_EXITS", 1)  # the second exit within the window is a loop
    config = model_folder(tmp_path)
    with running_server(f"--model_config_file={config}", frontend_processes=2) as st:
        pool = st.server.processes
        assert pool is not None

        def kill(slot: int) -> None:
            child = pool.children[slot]
            os.kill(child.proc.pid, signal.SIGKILL)
            wait_until(lambda: pool.children.get(slot) is not child)

        kill(0)
        wait_until(lambda: 0 in pool.children)  # started again
        assert predict_rest(st.server.rest_port) == [2.5, 3.0]
        kill(0)  # again within the window: given up
        kill(1)  # now no front end listens until slot 1 is back
        wait_until(lambda: serves(st.server.rest_port))
        assert not pool.failed.is_set() and list(pool.children) == [1]
        kill(1)
        wait_until(pool.failed.is_set)
        assert pool.children == {}


def front_ends_of(parent: int) -> list[int]:
    """Every live process started as a front end of ``parent`` (its command line names it), wherever it
    was reparented to."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if (
                b"modelserve.frontend" in argv
                and f"--parent_pid={parent}".encode() in argv
                and not gone(int(proc.name))
            ):
                found.append(int(proc.name))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="front-end processes need Linux (memfd, pidfd, SO_REUSEPORT)")
def test_a_failed_start_stops_the_front_ends_started_while_the_models_loaded(tmp_path: Path) -> None:
    """The front ends start before the models load (their imports overlap the loading); a model that
    fails to load fails the start as in the single process (255), and takes them with it."""
    (tmp_path / "bad" / "1").mkdir(parents=True)
    (tmp_path / "bad" / "1" / "model.onnx").write_bytes(b"not a model")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelserve",
            "--frontend_processes=2",
            "--port=-1",
            "--rest_api_port=-1",
            "--max_num_load_retries=0",
            "--model_name=bad",
            f"--model_base_path={tmp_path / 'bad'}",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # only if the test failed: it exited
    assert proc.returncode == 255, err
    assert "Front-end process 0 started" in err and "Failed to start server" in err
    wait_until(lambda: front_ends_of(proc.pid) == [], 10)


@pytest.mark.skipif(sys.platform != "linux", reason="front-end processes need Linux (memfd, pidfd, SO_REUSEPORT)")
def test_the_cores_page_command_runs_as_printed(tmp_path: Path) -> None:
    """docs/cores.md's command, in a folder holding its models.config, on free ports instead of 8500/8501:
    as many front ends as it asks, each answering."""
    line = fenced((DOCS / "cores.md").read_text())[0].strip()
    program, *flags = line.split()
    assert program == "modelserve"
    om.write(tmp_path / "half", 1, om.half_plus_two())
    (tmp_path / "models.config").write_text(
        f'model_config_list {{ config {{ name: "half" base_path: "{tmp_path / "half"}" model_platform: "onnx" }} }}\n'
    )
    ports = {"--port=8500", "--rest_api_port=8501"}
    assert ports <= set(flags)
    asked = int(next(f for f in flags if f.startswith("--frontend_processes=")).split("=")[1])
    with server_process(*(f for f in flags if f not in ports), cwd=tmp_path) as server:
        assert len(children_of(server.proc.pid)) == asked
        for _ in range(2 * asked):  # new connections: the kernel spreads them over the front ends
            assert predict_rest(server.rest_port, "half") == [2.5, 3.0]
