"""Every core (issue 20): one front-end process against two, on this machine, same run.

    python benchmarks/cores.py [--seconds=5] [--rounds=3] [--concurrency=32] [--parts=requests,batching,memory,start]
    python benchmarks/cores.py --quick        # a smoke run of every part (about a minute)

Each server is the real command line, ``python -m modelserve --frontend_processes=N`` (N = 1: the single
process; N = 2: the engine in the parent, two front-end processes on the same ports with SO_REUSEPORT),
left unpinned on every CPU with its default flags; the load generator shares those CPUs. Four parts:

* requests: half_plus_two on one float (inference costs about nothing, so this is request handling),
  REST through wrk and TF Serving gRPC Predict through h2load, both servers running, rounds interleaved.
  Printed: req/s (median of the rounds) and its ratio to N = 1; the server's CPU per request (every
  process of it, all threads, from /proc), split into the engine's (the parent, and of it its event
  loop's thread) and the front ends'; the generator's CPU share. Then the ceiling the cores allow:
  N = 2 cannot pass (CPUs - generator) / (its CPU per request), and one engine loop cannot pass
  1 / (its loop's CPU per request); both are divided by N = 1's req/s, and worked out for 16 CPUs too.
* batching: the MLP 256-4096-4096-4096-16 of benchmarks/batching.py with its batching parameters, one-row
  REST requests at c = 64 and 128; rows/s divided by raw onnxruntime's rows/s at a batch of c rows
  ("ceiling at c", measured in this process in the same run) and by its best batch (the limit).
* memory: a ~100 MB ONNX MLP; RSS and PSS (/proc/PID/smaps_rollup) summed over the server's processes
  once it answered, against the model file's size.
* start: from the command's start to the first answered REST predict of a small ONNX MLP (polled every
  5 ms), median of the rounds; beside it what ``python -c pass`` and the imports a server does
  (``import modelserve.server, modelserve.platforms.onnx``) cost in a fresh interpreter, and the top
  imports by ``python -X importtime``.

Tools (Debian's ``wrk`` and ``nghttp2-client``) are installed with apt-get when missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batching import BATCHING, RAW_SIZES, SIZES, raw_layouts, raw_rows_per_second
from common import ROOT, LoadResult, cpu_seconds, ensure_tools, frame_file, free_port, h2load, pinned, python, wrk

sys.path.insert(0, str(ROOT))
from modelserve.codecs.tensor_proto import from_ndarray
from modelserve.demo import mlp
from modelserve.protos import pb

GRPC_PATH = "/tensorflow.serving.PredictionService/Predict"
MEMORY_SIZES = [256, 5000, 5000, 16]  # 26.4M float32 weights: a 106 MB file
START_SIZES = [784, 128, 10]
SERVER_IMPORTS = "import modelserve.server, modelserve.platforms.onnx"
CPUS = len(os.sched_getaffinity(0))


# ---- processes --------------------------------------------------------------------------------------


def family(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB."""
    rss = pss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def children_cpu() -> float:
    """CPU of this process's children that ended and were waited for (the load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Server:
    processes: int
    rest: int
    grpc: int
    pid: int
    log: Path

    def pids(self) -> list[int]:
        return family(self.pid)


def config_file(work: Path, name: str, base: Path) -> Path:
    path = work / f"{name}.config"
    path.write_text(f'model_config_list {{ config {{ name: "{name}" base_path: "{base}" model_platform: "onnx" }} }}\n')
    return path


def command(processes: int, config: Path, rest: int, grpc: int, flags: Sequence[str] = ()) -> list[str]:
    return [
        python(),
        "-m",
        "modelserve",
        f"--frontend_processes={processes}",
        f"--port={grpc}",
        f"--rest_api_port={rest}",
        f"--model_config_file={config}",
        "--file_system_poll_wait_seconds=0",
        *flags,
    ]


@contextlib.contextmanager
def server(processes: int, config: Path, work: Path, flags: Sequence[str] = ()) -> Iterator[Server]:
    """The real command line, unpinned; yields once TF Serving's "Exporting" line is logged (the parent logs
    it once every front end serves)."""
    rest, grpc = free_port(), free_port()
    log = work / f"server-{processes}-{rest}.log"
    with pinned(command(processes, config, rest, grpc, flags), None, log=log) as proc:
        deadline = time.monotonic() + 300
        while "Exporting HTTP/REST API" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        yield Server(processes, rest, grpc, proc.pid, log)


def wait_idle(pids: Sequence[int], timeout: float = 20.0) -> None:
    """Until the servers have finished what the last load left queued."""
    deadline = time.monotonic() + timeout
    last = sum(map(cpu_seconds, pids))
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = sum(map(cpu_seconds, pids))
        if now - last < 0.01:
            return
        last = now


# ---- one measured load run --------------------------------------------------------------------------


@dataclass
class Run:
    load: LoadResult
    seconds: float  # the load's wall time
    cpu: float  # server CPU seconds, all its processes
    engine: float  # of it, the parent's (N = 1: the whole server)
    engine_loop: float  # of that, the parent's main thread (its event loop)
    generator: float  # the load generator's CPU seconds

    @property
    def requests(self) -> float:
        return max(1.0, self.load.rps * self.seconds)


def measure(srv: Server, protocol: str, c: int, seconds: int, work: Path) -> Run:
    """One load run against ``srv``'s model (named as the ``work`` folder, which holds body.json / body.bin)."""
    pids = srv.pids()
    before = [cpu_seconds(p) for p in pids]
    loop_before = cpu_seconds(srv.pid, srv.pid)
    gen_before = children_cpu()
    if protocol == "rest":
        cpus = ",".join(map(str, sorted(os.sched_getaffinity(0))))
        result = wrk(f"http://127.0.0.1:{srv.rest}/v1/models/{work.name}:predict", work / "body.json", c, seconds, cpus)
    else:
        result = h2load(srv.grpc, work / "body.bin", c, seconds, GRPC_PATH, log=work / "h2load.log")
    used = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
    if result.errors:
        raise RuntimeError(f"{result.errors} failed requests ({protocol}, N={srv.processes}, c={c})")
    loop = cpu_seconds(srv.pid, srv.pid) - loop_before
    return Run(result, seconds, sum(used), used[0], loop, children_cpu() - gen_before)


@dataclass
class Cells:
    runs: dict[tuple[str, int], list[Run]] = field(default_factory=dict)

    def add(self, key: tuple[str, int], run: Run) -> None:
        self.runs.setdefault(key, []).append(run)

    def median(self, key: tuple[str, int], value: str) -> float:
        runs = self.runs[key]
        values = {
            "rps": [r.load.rps for r in runs],
            "cpu_us": [r.cpu / r.requests * 1e6 for r in runs],
            "engine_us": [r.engine / r.requests * 1e6 for r in runs],
            "loop_us": [r.engine_loop / r.requests * 1e6 for r in runs],
            "front_us": [(r.cpu - r.engine) / r.requests * 1e6 for r in runs],
            "gen_cores": [r.generator / r.seconds for r in runs],
            "p99": [r.load.p99_ms for r in runs],
        }[value]
        return statistics.median(values)


# ---- parts --------------------------------------------------------------------------------------------


def requests_part(work: Path, seconds: int, rounds: int, c: int, protocols: Sequence[str]) -> None:
    folder = work / "hpt"
    folder.mkdir()
    from tests import onnx_models as om

    om.write(folder / "hpt", 1, om.half_plus_two())
    (folder / "body.json").write_text(json.dumps({"instances": [1.0]}))
    request = pb.PredictRequest()
    request.model_spec.name = "hpt"
    request.inputs["x"].CopyFrom(from_ndarray(np.array([1.0], np.float32)))
    frame_file(folder / "body.bin", request.SerializeToString())
    config = config_file(folder, "hpt", folder / "hpt")
    cells = Cells()
    with contextlib.ExitStack() as stack:
        servers = {n: stack.enter_context(server(n, config, folder)) for n in (1, 2)}
        for srv in servers.values():
            check_grpc(srv.grpc)
            for protocol in protocols:
                measure(srv, protocol, c, 1, folder)  # warm-up
        for round_ in range(rounds):
            for protocol in protocols:
                for n, srv in servers.items():  # interleaved: other work on the machine hits both alike
                    wait_idle([p for s in servers.values() for p in s.pids()])
                    run = measure(srv, protocol, c, seconds, folder)
                    cells.add((protocol, n), run)
                    print(
                        f"  round {round_ + 1} {protocol:4} N={n}: {run.load.rps:8.0f} req/s, "
                        f"server {run.cpu / run.requests * 1e6:5.0f} µs CPU/request, "
                        f"generator {run.generator / run.seconds:.2f} CPUs",
                        flush=True,
                    )
    print(f"\n### Request handling: half_plus_two on one float, c = {c}, median of {rounds} rounds\n")
    print(
        "| protocol | N | req/s | vs N = 1 | server CPU µs/request | engine (its loop) | front ends | "
        "generator CPUs | p99 ms |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for protocol in protocols:
        r1 = cells.median((protocol, 1), "rps")
        for n in (1, 2):
            key = (protocol, n)
            rps = cells.median(key, "rps")
            loop = cells.median(key, "loop_us")
            # N = 1's gRPC handlers are grpcio threads: its main thread does none of that work.
            loop_text = f" ({loop:.0f})" if loop >= 0.5 else ""
            p99 = cells.median(key, "p99")
            print(
                f"| {protocol} | {n} | {rps:,.0f} | {rps / r1:.2f}× | {cells.median(key, 'cpu_us'):.0f} | "
                f"{cells.median(key, 'engine_us'):.0f}{loop_text} | "
                f"{cells.median(key, 'front_us'):.0f} | {cells.median(key, 'gen_cores'):.2f} | "
                f"{f'{p99:.1f}' if p99 else '–'} |"
            )
    print(f"\nCeiling for N = 2 / N = 1 (this run's figures; {CPUS} CPUs here, and 16 by the same arithmetic):\n")
    print(
        "| protocol | c1 µs | r1 req/s | N=2: f + e µs | engine loop µs | generator CPUs | "
        f"cores bound, {CPUS} CPUs | loop bound | ceiling {CPUS} CPUs | ceiling 16 CPUs |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for protocol in protocols:
        r1 = cells.median((protocol, 1), "rps")
        c1 = cells.median((protocol, 1), "cpu_us")
        both = cells.median((protocol, 2), "cpu_us")
        loop = cells.median((protocol, 2), "loop_us")
        gen = cells.median((protocol, 2), "gen_cores")
        gen_per_request = gen / cells.median((protocol, 2), "rps")  # CPU-s of generator per request
        here = (CPUS - gen) / (both * 1e-6)
        loop_bound = 1 / (loop * 1e-6)
        # 16 CPUs: the generator's CPU grows with the rate it drives; the rest serves requests.
        big = 16 / (both * 1e-6 + gen_per_request)
        print(
            f"| {protocol} | {c1:.0f} | {r1:,.0f} | {both:.0f} | {loop:.0f} | {gen:.2f} | {here:,.0f} | "
            f"{loop_bound:,.0f} | {min(here, loop_bound) / r1:.2f}× | {min(big, loop_bound) / r1:.2f}× |"
        )


def check_grpc(port: int) -> None:
    """One real answer (h2load does not read grpc-status)."""
    from modelserve.client import GrpcClient

    with GrpcClient(f"127.0.0.1:{port}") as client:
        got = client.predict("hpt", {"x": np.array([1.0], np.float32)}, timeout=60)["y"]
    assert np.allclose(got, [2.5]), got


def batching_part(work: Path, seconds: int, rounds: int, levels: Sequence[int]) -> None:
    import onnxruntime as ort

    folder = work / "mlp"
    (folder / "mlp" / "1").mkdir(parents=True)
    model = folder / "mlp" / "1" / "model.onnx"
    model.write_bytes(mlp(SIZES, seed=0, softmax=False))
    x = np.random.default_rng(0).standard_normal((1, SIZES[0])).astype(np.float32)
    (folder / "body.json").write_text(json.dumps({"instances": x.tolist()}))
    (folder / "batching.txt").write_text(BATCHING)
    config = config_file(folder, "mlp", folder / "mlp")
    flags = ["--enable_batching", f"--batching_parameters_file={folder / 'batching.txt'}"]
    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    layouts = raw_layouts(model)
    sizes = sorted({1, *[s for s in RAW_SIZES if s <= max(levels)], *levels})
    raws: list[dict[str, dict[int, float]]] = []
    cells = Cells()
    with contextlib.ExitStack() as stack:
        servers = {n: stack.enter_context(server(n, config, folder, flags)) for n in (1, 2)}
        for srv in servers.values():
            check_rest(srv.rest, x, expected)
            measure(srv, "rest", 8, 1, folder)  # warm-up
        for round_ in range(rounds):
            raws.append(raw_rows_per_second(layouts, sizes, 1.0 if seconds > 2 else 0.5))
            for c in levels:
                for n, srv in servers.items():
                    wait_idle([p for s in servers.values() for p in s.pids()])
                    measure(srv, "rest", c, 1, folder)  # the queue adapts to a new load within a batch timeout
                    run = measure(srv, "rest", c, seconds, folder)
                    cells.add(("rest", n * 1000 + c), run)
                    print(f"  round {round_ + 1} c={c} N={n}: {run.load.rps:7.0f} rows/s", flush=True)
    raw = {layout: {b: statistics.median(r[layout][b] for r in raws) for b in raws[0][layout]} for layout in raws[0]}
    limit, layout, best = max((rate, name, b) for name, by_size in raw.items() for b, rate in by_size.items())
    print(f"\n### Batching: MLP {'-'.join(map(str, SIZES))}, one-row REST requests, median of {rounds} rounds\n")
    print(f"raw onnxruntime's best (the limit): {limit:,.0f} rows/s ({layout}, batch {best})\n")
    print("| c | N | rows/s | vs N = 1 | ceiling at c (rows/s) | / ceiling at c | / limit | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in levels:
        ceiling = max(by_size[max(b for b in by_size if b <= c)] for by_size in raw.values())
        r1 = cells.median(("rest", 1000 + c), "rps")
        for n in (1, 2):
            rps = cells.median(("rest", n * 1000 + c), "rps")
            print(
                f"| {c} | {n} | {rps:,.0f} | {rps / r1:.2f}× | {ceiling:,.0f} | {rps / ceiling:.2f} | "
                f"{rps / limit:.2f} | {cells.median(('rest', n * 1000 + c), 'p99'):.0f} |"
            )


def check_rest(port: int, x: np.ndarray, expected: np.ndarray) -> None:
    import urllib.request

    body = json.dumps({"instances": x.tolist()}).encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/mlp:predict", body, timeout=60) as answer:
        got = np.array(json.loads(answer.read())["predictions"], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def memory_part(work: Path, sizes: Sequence[int]) -> None:
    folder = work / "big"
    (folder / "big" / "1").mkdir(parents=True)
    model = folder / "big" / "1" / "model.onnx"
    model.write_bytes(mlp(sizes, seed=0, softmax=False))
    mb = model.stat().st_size / 1e6
    x = np.zeros((1, sizes[0]), np.float32)
    body = json.dumps({"instances": x.tolist()}).encode()
    config = config_file(folder, "big", folder / "big")
    print(f"\n### Memory: an MLP {'-'.join(map(str, sizes))} ONNX file of {mb:.0f} MB, after 20 answers\n")
    print("| N | processes | RSS summed MB | PSS summed MB | RSS / file | target 1.3 × file + 150 MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    import urllib.request

    for n in (1, 2):
        with server(n, config, folder) as srv:
            for _ in range(20):  # every front end answers some (connections spread over them)
                with urllib.request.urlopen(f"http://127.0.0.1:{srv.rest}/v1/models/big:predict", body, timeout=60):
                    pass
            pids = srv.pids()
            rss, pss = (sum(v) / 1024 * 1.048576 for v in zip(*(memory_kib(p) for p in pids), strict=True))
            target = 1.3 * mb + 150
            print(
                f"| {n} | {len(pids)} | {rss:,.0f} | {pss:,.0f} | {rss / mb:.2f} | "
                f"{target:,.0f} MB: {'met' if rss <= target else 'not met'} (PSS: "
                f"{'met' if pss <= target else 'not met'}) |"
            )


def start_part(work: Path, rounds: int) -> None:
    folder = work / "small"
    (folder / "small" / "1").mkdir(parents=True)
    (folder / "small" / "1" / "model.onnx").write_bytes(mlp(START_SIZES, seed=0))
    config = config_file(folder, "small", folder / "small")
    body = json.dumps({"instances": np.zeros((1, START_SIZES[0])).tolist()}).encode()
    request = (
        f"POST /v1/models/small:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fresh = {  # what each step costs in a fresh interpreter (the first: its start and exit)
        "python -c pass": "pass",
        "the engine's imports (import modelserve.server, modelserve.platforms.onnx)": SERVER_IMPORTS,
        "a front end's imports (import modelserve.frontend)": "import modelserve.frontend",
    }
    timings: dict[str, list[float]] = {}
    for _ in range(rounds):
        for label, code in fresh.items():
            # Timed inside the interpreter: its exit (finalising numpy, grpc...) is no part of a start.
            timed = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
            start = time.monotonic()
            out = subprocess.run([python(), "-c", timed], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
            timings.setdefault(label, []).append(time.monotonic() - start if code == "pass" else float(out.stdout))
        for n in (1, 2):
            rest, grpc = free_port(), free_port()
            start = time.monotonic()
            proc = subprocess.Popen(
                command(n, config, rest, grpc), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                timings.setdefault(f"N = {n}: command to first answered predict", []).append(
                    first_answer(rest, request, start)
                )
            finally:
                proc.terminate()
                proc.wait(60)
    profile = subprocess.run(
        [python(), "-X", "importtime", "-c", SERVER_IMPORTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    median = {label: statistics.median(values) for label, values in timings.items()}
    engine_imports = median[list(fresh)[1]]
    median["N = 1: of it, after the engine's imports"] = (
        median["N = 1: command to first answered predict"] - engine_imports
    )
    # The front ends are spawned before the engine loads its models: their imports overlap the loading.
    median["N = 2: of it, after the engine's imports (front ends' imports overlap the loading)"] = (
        median["N = 2: command to first answered predict"] - engine_imports
    )
    print(f"\n### Cold start: MLP {'-'.join(map(str, START_SIZES))}, median of {rounds} rounds (target ≤ 1.0 s)\n")
    print("| what | seconds |")
    print("| --- | --- |")
    for label, seconds in median.items():
        print(f"| {label} | {seconds:.2f} |")
    print("\nslowest packages among the engine's imports (python -X importtime, cumulative):\n")
    for seconds, name in top_imports(profile, 6):
        print(f"- {name}: {seconds:.2f} s")


def first_answer(port: int, request: bytes, start: float, timeout: float = 60) -> float:
    """Seconds from ``start`` until a predict on ``port`` answers 200."""
    while time.monotonic() - start < timeout:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError("no answer")


def top_imports(profile: str, count: int) -> list[tuple[float, str]]:
    """The slowest packages (a name without a dot: a package's first import, everything under it counted),
    modelserve's own left out, by ``python -X importtime``'s cumulative µs."""
    found = []
    for line in profile.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)$", line)
        if m and "." not in m.group(3) and m.group(3) not in ("modelserve", "site") and m.group(2):
            found.append((int(m.group(1)) / 1e6, m.group(3)))
    return sorted(found, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32, help="connections for the request-handling part")
    parser.add_argument("--batching-concurrency", default="64,128")
    parser.add_argument("--protocols", default="rest,grpc")
    parser.add_argument("--parts", default="requests,batching,memory,start")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 s, one round, small models")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 1, 1
    ensure_tools("wrk", "h2load")
    work = Path(tempfile.mkdtemp(prefix="bench-cores-"))
    parts = args.parts.split(",")
    print(f"machine: {CPUS} CPUs, {cpu_model()}, Python {sys.version.split()[0]}; load average {load()} at the start")
    print(f"command: {' '.join(command(2, Path('MODELS.config'), 0, 0))} (N = 1: --frontend_processes=1)\n")
    if "requests" in parts:
        requests_part(work, args.seconds, args.rounds, args.concurrency, args.protocols.split(","))
    if "batching" in parts:
        levels = [64] if args.quick else [int(c) for c in args.batching_concurrency.split(",")]
        batching_part(work, args.seconds, max(1, args.rounds - 1), levels)
    if "memory" in parts:
        memory_part(work, [256, 512, 16] if args.quick else MEMORY_SIZES)
    if "start" in parts:
        start_part(work, args.rounds)
    print(f"\nload average {load()} at the end ({time.strftime('%F %H:%M')})")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
