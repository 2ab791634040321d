"""modelserve.ray on a two-node Ray cluster on loopback, and docs/deploy.md's "Ray Serve" run as written.

Ray binds every interface and rewrites 127.0.0.1 to the machine's address, and this machine allows
no traffic but loopback's: the cluster runs in a network namespace of its own with only ``lo`` up.
The doc's commands run there through ``ip netns exec`` (their ``/models/`` rewritten to the test's
folder, Ray's files under ``RAY_TMPDIR``); the test's HTTP clients run in threads that enter the
namespace (``setns``). At the end every process in the namespace is killed by its pid, then the
namespace and the folder are removed, whether the tests passed or not.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import http.client
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelserve.demo import half_plus_two
from modelserve.options import UsageError
from modelserve.testing import running_server

from . import docs, onnx_models

REPO = Path(__file__).resolve().parents[1]
PAGE, PART = "deploy.md", "Ray Serve"
PORT = 8000  # the doc's proxy port, inside the namespace
CONCURRENCY = 4  # load-test clients
PROXY_FAILURE = (500, b"Internal Server Error")  # Ray's proxy, for a request its replica died with
_CLONE_NEWNET = 0x40000000

ray_serve = pytest.importorskip("ray.serve", reason="the ray extra is not installed (pip install -e '.[ray]')")


# ---- the application builder (no cluster) ----------------------------------------------------------


def test_builder_takes_flags_and_ray_options() -> None:
    from modelserve.ray import app

    bound = app(
        {
            "model_config_file": "/models/models.config",
            "enable_batching": True,
            "autoscaling_config": '{"min_replicas": 1, "max_replicas": 3}',
            "ray_actor_options": '{"num_cpus": 2, "num_gpus": 1}',
            "max_ongoing_requests": "32",
        }
    )._bound_deployment
    assert bound.init_args == (["--model_config_file=/models/models.config", "--enable_batching=true"],)
    assert bound.ray_actor_options == {"num_cpus": 2, "num_gpus": 1}
    assert bound.max_ongoing_requests == 32
    scaling = bound._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas) == (1, 3)
    assert app({"model_base_path": "/models/m", "num_replicas": "2"})._bound_deployment.num_replicas == 2
    with pytest.raises(UsageError, match="unknown flag: --model_config_fil"):
        app({"model_config_fil": "/models/models.config"})


@pytest.mark.parametrize("name", ["modelserve.yaml", "modelserve-gpu.yaml"])
def test_deploy_configs_are_valid(name: str) -> None:
    """Each Serve config of deploy/ray passes Ray's schema, and its args build the application."""
    from ray.serve.schema import ServeDeploySchema

    from modelserve.ray import app

    config = yaml.safe_load((REPO / "deploy" / "ray" / name).read_text())
    ServeDeploySchema.model_validate(config)
    (application,) = config["applications"]
    assert application["import_path"] == "modelserve.ray:app"
    bound = app(application["args"])._bound_deployment
    assert bound.ray_actor_options == application["args"]["ray_actor_options"]


# ---- a replica in this process, against the server -------------------------------------------------

TOKEN = "infer-token-0123456789abcdef"
# (method, path, body, headers): each answered by a replica as by the server's REST port.
SAME_AS_SERVER = [
    ("POST", "/v1/models/half:predict", b'{"instances": [1.0, 2.0]}', ()),
    ("POST", "/v1/models/half:predict", b'{"instances": [1', ()),
    ("POST", "/v1/models/half:predict", b'{"instances": [' + b"1.0, " * 40 + b"1.0]}", ()),  # over the limit
    ("GET", "/v1/models/nothing%20here", b"", ()),
    ("GET", "/v1/models/half/metadata", b"", ()),
    (
        "POST",
        "/v2/models/half/infer",
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [3]}]}',
        (),
    ),
    ("GET", "/v2/models/half/infer", b"", ()),
    ("GET", "/elsewhere", b"", ()),
]


def _starlette_request(method: str, path: str, body: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> Any:
    """The request Ray's proxy hands a replica: an ASGI scope and its body."""
    from starlette.requests import Request

    scope = {
        "type": "http",
        "method": method,
        "path": urllib.parse.unquote(path),
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-length", str(len(body)).encode()), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", PORT),
        "scheme": "http",
        "root_path": "",
        "http_version": "1.1",
    }
    parts = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return parts.pop(0) if parts else {"type": "http.disconnect"}

    return Request(scope, receive)


async def _replica_answers(flags: list[str], requests: list[tuple[str, str, bytes, tuple]]) -> list[tuple]:
    from modelserve.ray import ModelServe

    replica = ModelServe.__new__(ModelServe)
    await ModelServe.__init__(replica, flags)  # as Ray awaits an async constructor
    try:
        answers = []
        for request in requests:
            response = await replica(_starlette_request(*request))
            answers.append((response.status_code, response.headers.get("content-type"), response.body))
        return answers
    finally:
        stopping = replica.__del__()  # as Ray's graceful shutdown does
        assert stopping is not None
        await stopping


def _server_answers(flags: list[str], requests: list[tuple[str, str, bytes, tuple]]) -> list[tuple]:
    answers = []
    with running_server(*flags) as server:
        for method, path, body, headers in requests:
            conn = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=30)
            conn.request(method, path, body or None, {k.decode(): v.decode() for k, v in headers})
            response = conn.getresponse()
            answers.append((response.status, response.getheader("content-type"), response.read()))
            conn.close()
    return answers


def test_a_replica_answers_as_the_server(tmp_path: Path) -> None:
    """Formats, errors and limits: a replica's answers are the REST port's, byte for byte."""
    onnx_models.write(tmp_path / "half", 1, onnx_models.half_plus_two())
    flags = [f"--model_base_path={tmp_path / 'half'}", "--model_name=half", "--rest_api_max_body_bytes=100"]
    assert asyncio.run(_replica_answers(flags, SAME_AS_SERVER)) == _server_answers(flags, SAME_AS_SERVER)


def test_a_replica_keeps_the_token_guard(tmp_path: Path) -> None:
    onnx_models.write(tmp_path / "half", 1, onnx_models.half_plus_two())
    (tmp_path / "tokens").write_text(f"{TOKEN} infer\n")
    flags = [f"--model_base_path={tmp_path / 'half'}", "--model_name=half", f"--auth_token_file={tmp_path / 'tokens'}"]
    predict = ("POST", "/v1/models/half:predict", b'{"instances": [1.0]}')
    requests = [(*predict, ()), (*predict, ((b"authorization", f"Bearer {TOKEN}".encode()),))]
    answers = asyncio.run(_replica_answers(flags, requests))
    assert [a[0] for a in answers] == [401, 200]
    assert answers == _server_answers(flags, requests)


# ---- the cluster ----------------------------------------------------------------------------------


def _enter(namespace: str) -> None:
    """Move the calling thread into ``namespace``: the sockets it makes from now on are made there."""
    fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
    finally:
        os.close(fd)


@dataclass
class Cluster:
    namespace: str
    folder: Path  # RAY_TMPDIR, and the models under models/
    env: dict[str, str]

    @property
    def models(self) -> Path:
        return self.folder / "models"

    def sh(self, command: str, timeout: float = 180) -> str:
        """``command`` (the doc's /models/ made the test's) run in the namespace; its output."""
        command = command.replace("=/models/", f"={self.models}/")
        done = subprocess.run(
            ["ip", "netns", "exec", self.namespace, "sh", "-c", command],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def threads(self, n: int) -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(n, initializer=_enter, initargs=(self.namespace,))

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        with self.threads(1) as pool:
            return pool.submit(_call, method, path, body).result()

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def replicas(self) -> list[int]:
        """The pids of the application's replicas (Ray names their processes)."""
        found = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                if b"ServeReplica:" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
        return found

    def replica_logs(self) -> list[str]:
        """What each replica process of this cluster wrote to stderr: modelserve's log lines."""
        files = (self.folder / "ray" / "session_latest" / "logs").glob("worker-*.err")
        return [text for text in (f.read_text(errors="replace") for f in files) if "modelserve.lifecycle" in text]

    def serving(self, app: str = "default") -> int:
        """How many replicas of ``app`` Ray reports RUNNING."""
        status = yaml.safe_load(self.sh("serve status"))
        deployment = ((status.get("applications") or {}).get(app) or {}).get("deployments", {}).get("ModelServe", {})
        return int(deployment.get("replica_states", {}).get("RUNNING", 0))

    def wait(self, done: Callable[[], bool], what: str, state: Callable[[], str] = str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {state()}"
            time.sleep(0.5)


def _call(method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    try:
        conn.request(method, path, body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _write_models(models: Path) -> None:
    onnx_models.write(models / "half_plus_two", 1, half_plus_two())
    onnx_models.write(models / "marker", 1, onnx_models.version_marker(1))
    entries = "".join(
        f'config {{ name: "{name}" base_path: "{models / name}" model_platform: "onnx" }} '
        for name in ("half_plus_two", "marker")
    )
    (models / "models.config").write_text(f"model_config_list {{ {entries}}}")


def _kill_all(cluster: Cluster) -> None:
    """Every process of the namespace, by pid, until none is left."""
    for _ in range(20):
        pids = cluster.pids()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


@pytest.fixture(scope="module")
def namespace() -> Iterator[Cluster]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("Ray's tests need root and `ip` (iproute2) for a network namespace")
    name = f"modelserve-ray-{os.getpid()}"
    folder = Path(tempfile.mkdtemp(prefix="msray-"))  # short: Ray's socket paths live under it
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),  # Ray's workers import this checkout's modelserve
        "RAY_TMPDIR": str(folder),
        "RAY_USAGE_STATS_ENABLED": "0",
        # Both nodes are this machine: spread the proxy's requests over both replicas rather than
        # prefer the head node's (Ray's default, which sends a light load to one replica only).
        "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
    }
    cluster = Cluster(name, folder, env)
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"Ray's tests need a network namespace, and `ip netns add` failed: {made.stderr.strip()}")
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        _write_models(cluster.models)
        yield cluster
    finally:
        _kill_all(cluster)
        subprocess.run(["ip", "netns", "delete", name], check=False)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(namespace: Cluster) -> Cluster:
    """The doc's cluster (two nodes, the proxy on the head) running its `serve run` line."""
    for block in (docs.section(PAGE, "Start a cluster", level=3, under=PART), _serve_run_line()):
        for line in _commands(block):
            namespace.sh(line)
    namespace.wait(lambda: len(namespace.replicas()) == 2, "two replicas")
    return namespace


def _commands(block: str) -> list[str]:
    return [line for text in docs.fenced(block) for line in text.splitlines() if line.strip()]


def _serve_run_line() -> str:
    (line,) = [c for c in _commands(docs.section(PAGE, "serve run", level=3, under=PART)) if c.startswith("serve run")]
    return f"```\n{line}\n```"


# ---- the doc's requests ---------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_run_answers_as_the_doc_says(cluster: Cluster) -> None:
    section = docs.section(PAGE, "serve run", level=3, under=PART)
    curls = [c for c in _commands(section) if c.startswith("curl")]
    answers = docs.fenced(section)[2].splitlines()
    assert len(curls) == len(answers) == 4
    for curl, answer in zip(curls, answers, strict=True):
        assert json.loads(cluster.sh(curl)) == json.loads(answer), curl
    # Errors and limits are the REST port's: a 404 with TF Serving's body, a V2 405, a bad body's 400.
    assert cluster.call("GET", "/v1/models/nothing_here")[0] == 404
    assert cluster.call("GET", "/v2/models/half_plus_two/infer") == (405, b'{"error":"Method Not Allowed"}')
    status, body = cluster.call("POST", "/v1/models/half_plus_two:predict", b'{"instances": [1')
    assert status == 400 and json.loads(body)["error"].startswith("JSON Parse error")


# ---- under load -----------------------------------------------------------------------------------


@dataclass
class Load:
    """Clients predicting on ``marker`` until ``stop``; each request is retried on the proxy's 500
    (what docs/deploy.md tells a client to do), every try recorded."""

    cluster: Cluster
    tries: list[tuple[int, bytes]] = field(default_factory=list)  # list.append is atomic
    answers: list[float] = field(default_factory=list)  # one per request, once answered 200
    stop: threading.Event = field(default_factory=threading.Event)

    def client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
        while not self.stop.is_set():
            while True:
                try:
                    conn.request("POST", "/v1/models/marker:predict", b'{"instances": [1.0]}')
                    response = conn.getresponse()
                    status, body = response.status, response.read()
                except (OSError, http.client.HTTPException) as exc:
                    status, body = -1, repr(exc).encode()
                    conn.close()
                self.tries.append((status, body))
                if (status, body) != PROXY_FAILURE:
                    break
            self.answers.append(json.loads(body)["predictions"][0] if status == 200 else -1.0)
        conn.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[Load]:
        with self.cluster.threads(CONCURRENCY) as pool:
            clients = [pool.submit(self.client) for _ in range(CONCURRENCY)]
            try:
                yield self
            finally:
                self.stop.set()
                for client in clients:
                    client.result()

    def until(self, done: Callable[[], bool], what: str) -> None:
        self.cluster.wait(done, what)


@pytest.mark.slow
def test_version_swap_under_load_fails_no_request(cluster: Cluster) -> None:
    with Load(cluster).running() as load:
        load.until(lambda: len(load.answers) >= 50, "answers from version 1")
        onnx_models.write(cluster.models / "marker", 2, onnx_models.version_marker(2))
        # Each replica polls on its own: done once a long run of answers (both replicas' share) is 2.
        load.until(lambda: len(load.answers) > 200 and set(load.answers[-200:]) == {2.0}, "version 2 everywhere")
    assert [t for t in load.tries if t[0] != 200] == []
    assert set(load.answers) == {1.0, 2.0}
    # Each replica's own poller found version 2 and swapped it in (their logs, one process each).
    swapped = [
        log for log in cluster.replica_logs() if "Successfully loaded servable version {name: marker version: 2}" in log
    ]
    assert len(swapped) == 2
    assert all("Successfully unloaded servable version {name: marker version: 1}" in log for log in swapped)


@pytest.mark.slow
def test_replica_killed_under_load_loses_no_request(cluster: Cluster) -> None:
    before = cluster.replicas()
    assert len(before) == 2
    with Load(cluster).running() as load:
        load.until(lambda: len(load.answers) >= 50, "answers before the kill")
        os.kill(before[0], signal.SIGKILL)
        sent = len(load.answers)
        load.until(lambda: len(load.answers) >= sent + 200, "answers after the kill")
    expected = max(load.answers)  # the version the module's earlier tests left: 1, or 2 after the swap
    failed = [t for t in load.tries if t[0] != 200]
    # What a client sees: the requests in flight on the dead replica fail once with the proxy's 500,
    # then succeed on retry; every other request is answered as usual.
    assert set(failed) <= {PROXY_FAILURE}, failed
    assert len(failed) <= CONCURRENCY
    assert set(load.answers) == {expected}
    # Ray's controller notices the death (its health check) and starts a new replica in a new process.
    cluster.wait(lambda: set(cluster.replicas()) - set(before) and cluster.serving() == 2, "Ray's replacement replica")


# ---- serve deploy ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_deploy_config(cluster: Cluster) -> None:
    """The doc's `serve deploy` of deploy/ray/modelserve.yaml, its model_config_file made the test's."""
    config = yaml.safe_load((REPO / "deploy" / "ray" / "modelserve.yaml").read_text())
    config["applications"][0]["args"]["model_config_file"] = str(cluster.models / "models.config")
    mine = cluster.folder / "modelserve.yaml"
    mine.write_text(yaml.safe_dump(config))
    for line in _commands(docs.section(PAGE, "serve deploy", level=3, under=PART)):
        cluster.sh(line.replace("deploy/ray/modelserve.yaml", shlex.quote(str(mine))))

    seen: list[str] = [""]

    def running() -> bool:
        seen[0] = cluster.sh("serve status")
        apps = yaml.safe_load(seen[0]).get("applications") or {}
        return list(apps) == ["modelserve"] and apps["modelserve"]["status"] == "RUNNING"

    cluster.wait(running, "the deployed application", lambda: seen[0])
    # `serve shutdown` stopped the `serve run` replicas gracefully: each unloaded its models (__del__).
    logs = cluster.replica_logs()
    assert sum("Successfully unloaded servable version {name: half_plus_two version: 1}" in log for log in logs) == 2
    status, body = cluster.call("POST", "/v1/models/half_plus_two:predict", b'{"instances": [1.0, 2.0, 5.0]}')
    assert (status, json.loads(body)) == (200, {"predictions": [2.5, 3.0, 4.5]})


def test_every_block_is_run() -> None:
    """Each fenced block of the page is one that a test above runs or compares."""
    text = docs.section(PAGE, PART)
    run = {
        *docs.fenced(docs.section(PAGE, "Start a cluster", level=3, under=PART)),
        *docs.fenced(docs.section(PAGE, "serve run", level=3, under=PART)),
        *docs.fenced(docs.section(PAGE, "serve deploy", level=3, under=PART)),
    }
    assert set(docs.fenced(text)) == run
