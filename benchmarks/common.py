"""Shared pieces of the benchmarks: models, free ports, pinned servers, wrk runs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ensure_tools(*tools: str) -> None:
    """Install Debian's wrk / nghttp2-client when missing (benchmarks only; tests never need them)."""
    packages = {"wrk": "wrk", "h2load": "nghttp2-client"}
    missing = [packages[t] for t in tools if shutil.which(t) is None]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=False, capture_output=True)
        if any(shutil.which(t) is None for t in tools):
            subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return  # answering, even if with an error
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def pinned(
    cmd: Sequence[str],
    cpu: str | None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    cwd: Path = ROOT,
) -> Iterator[subprocess.Popen[bytes]]:
    """``cmd`` running from the checkout ``cwd`` on CPUs ``cpu`` (None: unpinned), its output in ``log``;
    stopped after."""
    with open(log or os.devnull, "wb") as out:
        proc = subprocess.Popen(
            [*(["taskset", "-c", cpu] if cpu else []), *cmd],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU of a process (all threads), or of its thread ``tid``; 0 once it is gone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def median(results: Sequence[LoadResult]) -> LoadResult:
    """Median rate and latencies of several runs; their errors added up."""
    return LoadResult(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
    )


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    url: str,
    body_file: Path,
    connections: int,
    seconds: int,
    cpu: str = "0",
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """wrk -t1 posting ``body_file`` (as JSON unless ``headers`` say otherwise). An answer counts as failed
    only after 30 s (the servers' own REST timeout), not after wrk's default 2 s: a slow answer under an
    overload is not an error."""
    script = body_file.with_suffix(".lua")
    script.write_text(
        f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\nwrk.method = "POST"\n'
        + "".join(
            f'wrk.headers["{k}"] = "{v}"\n' for k, v in {"Content-Type": "application/json", **(headers or {})}.items()
        )
    )
    out = subprocess.run(
        [
            "taskset",
            "-c",
            cpu,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(map(int, m.groups()))
    return LoadResult(rps, p50, p99, errors)


def mlserver_command(
    mlserver_python: str,
    folder: Path,
    model: Path,
    *,
    http_port: int,
    grpc_port: int,
    name: str = "mlp",
    **model_settings: object,
) -> list[str]:
    """``mlserver start`` over a repository in ``folder`` serving ``model`` as ``name`` through
    ``mlserver_peer/runtime.py``, ``parallel_workers: 0`` (in-process, its fastest mode:
    docs/benchmarking.md); ``model_settings`` are added to its model-settings.json (batching). Calls with
    other names on the same ``folder`` and ports add models to the same repository."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).resolve().parent / "mlserver_peer" / "runtime.py", folder / name)
    (folder / name / "model-settings.json").write_text(
        json.dumps(
            {
                "name": name,
                "implementation": "runtime.OnnxModel",
                "parameters": {"uri": str(model)},
                **model_settings,
            }
        )
    )
    (folder / "settings.json").write_text(
        json.dumps(
            {
                "parallel_workers": 0,
                "http_port": http_port,
                "grpc_port": grpc_port,
                "metrics_port": free_port(),
                "debug": False,
            }
        )
    )
    return [str(Path(mlserver_python).parent / "mlserver"), "start", str(folder)]


def frame_file(path: Path, message: bytes) -> Path:
    """``message`` as one gRPC frame (not compressed, big-endian length), for h2load's ``-d``."""
    path.write_bytes(b"\0" + struct.pack(">I", len(message)) + message)
    return path


def h2load(
    port: int,
    body: Path,
    connections: int,
    seconds: int,
    path: str,
    cpu: str | None = None,
    log: Path | None = None,
) -> LoadResult:
    """gRPC calls replaying ``body`` (a ``frame_file``), one stream per connection, on CPUs ``cpu``.

    Latencies come from h2load's ``log`` file (it prints no percentiles; without a log they are 0).
    h2load does not read grpc-status: a gRPC error answered in trailers counts as a success, so
    check an answer with a real client first; ``errors`` are h2load's failed requests.
    """
    if log is not None:
        log.unlink(missing_ok=True)  # h2load appends to it
    out = subprocess.run(
        [
            *(["taskset", "-c", cpu] if cpu else []),
            "h2load",
            "-t1",
            f"-c{connections}",
            "-m1",
            "-D",
            str(seconds),
            "-d",
            str(body),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            *([f"--log-file={log}"] if log is not None else []),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    assert done, out
    p50 = p99 = 0.0
    if log is not None:
        micros = [float(line.split("\t")[2]) for line in log.read_text().splitlines() if line]
        if micros:
            p50, p99 = (statistics.quantiles(micros, n=100, method="inclusive")[i] / 1000 for i in (49, 98))
    return LoadResult(rps, p50, p99, int(done.group(2)))


def python() -> str:
    return sys.executable
