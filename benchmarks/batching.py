"""Dynamic batching: batch-1 requests to a big MLP, batching off and on, against raw onnxruntime's best.

    python benchmarks/batching.py [--seconds=10] [--rounds=3] [--concurrency=1,8,32,64,128]
                                  [--protocols=rest,grpc] [--on=FLAGS] [--off=FLAGS] [--batching=TEXT]
                                  [--on-model-config=FIELDS] [--mlserver-python=VENV/bin/python]
                                  [--mlserver-batch-time=SECONDS]

The model is the ReLU MLP 256→4096→4096→4096→16 (onnx.helper, seeded weights): its per-row compute
dominates a request's decoding, so the figures measure batching, not JSON. Every request carries one
row. For each protocol (REST through wrk with a Lua POST script; gRPC through h2load replaying one
prebuilt gRPC frame) and each concurrency, it reports rows/s with p50/p99 latency, and the server
process's CPU time per answered row (all its threads, from ``/proc``), for:

* batching off: the server's defaults (``--num_inference_threads`` = CPUs, onnxruntime's own thread count);
* batching on: ``--enable_batching`` with the parameters file printed at the start (``--batching``),
  and ``--on-model-config`` added to the model's ModelConfig (e.g. ``placement { instances: 2 }``
  with ``--on="--enable_batching --tensorflow_intra_op_parallelism=1"``);

and, in the same run, raw onnxruntime in-process at each batch size from 1 to 256, laid out both
ways two cores can be spent (one session with 2 intra-op threads; two 1-thread sessions running at
once): the best of all is the limit, the "on / limit" column divides by it, and its CPU-ms per row
is what inference alone costs, to set beside the server's. This machine's speed drifts within
minutes, so each batching-on cell also runs the limit's layout and batch size for 1 s just before
it, and "on / nearby limit" divides by that. "Ceiling at c" is raw onnxruntime's rows/s at a batch
of c rows (capped at ``max_batch_size``) over the limit: c one-row clients that wait for their
answers can never fill a bigger batch, so no server can pass it. Server and load generator share the
machine's cores (nothing is pinned), so the generator's CPU counts against the server. Both servers
run for the whole benchmark but only one is loaded at a time: each round measures the limit, then
every (protocol, concurrency) cell with batching off and on back to back, each after one uncounted
second at its concurrency (the steady state is measured, not the batch queue adapting to the
previous cell's load); each figure is the median of the rounds.

With ``--mlserver-python`` (a venv with ``mlserver==1.7.1`` and onnxruntime), MLServer serves the
same file with its adaptive batching (``max_batch_size`` 128, ``max_batch_time`` from
``--mlserver-batch-time``; onnxruntime with the limit's 2 threads; ``parallel_workers: 0``) and every
REST cell is also measured against it over V2 REST (``/v2/models/mlp/infer``), interleaved with ours.

Tools (Debian's ``wrk`` and ``nghttp2-client``) are installed with apt-get when missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ROOT,
    LoadResult,
    cpu_seconds,
    ensure_tools,
    frame_file,
    free_port,
    h2load,
    median,
    mlserver_command,
    pinned,
    python,
    wait_http,
    wrk,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modelserve.codecs.tensor_proto import from_ndarray
from modelserve.demo import mlp
from modelserve.execution.batching import params
from modelserve.protos import pb

SIZES = [256, 4096, 4096, 4096, 16]
GRPC_PATH = "/tensorflow.serving.PredictionService/Predict"
REST_PATH = "/v1/models/mlp:predict"
# Batching on: one batch thread running onnxruntime with its intra-op threads at their default (both
# cores); batches of up to 128 rows. On this CPU-only machine inference and request handling share
# the cores, and onnxruntime slows down by far more than the CPU it loses when the two overlap, so
# full batches that run alone beat a pipeline of smaller ones. The timeout must outlast the front
# end's turnaround of a whole batch (128 REST requests take it about 45 ms), or a busy queue fires
# before its clients are back and the load splits into half batches (50 ms: mean batch 64-77 rows,
# 957-1,029 rows/s at c=128; 100 ms: 126-128 rows, 1,045-1,143). An idle model still runs a lone
# request at once, so with these closed-loop clients the timeout costs nothing at low load; with
# independent arrivals it would (batching_sim.py, docs/batching.md: keep it short there).
BATCHING = """\
max_batch_size { value: 128 }
batch_timeout_micros { value: 100000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 1 }
"""
ON_FLAGS = "--enable_batching"
ON_MODEL_CONFIG = ""
OFF_FLAGS = ""
COMMON_FLAGS = "--file_system_poll_wait_seconds=0 --grpc_max_threads=256"
# The servers are not pinned: they may use every CPU this process may (wrk shares them).
ALL_CPUS = ",".join(map(str, sorted(os.sched_getaffinity(0))))


# ---- raw onnxruntime: the limit -------------------------------------------------------------

RAW_THREADS = 2  # both layouts below run 2 onnxruntime threads in all
RAW_SIZES = [1, 8, 16, 32, 64, 128, 256]


Layouts = dict[str, list[ort.InferenceSession]]


def raw_layouts(model: Path) -> Layouts:
    """The two ways to spend 2 cores on onnxruntime: one session with 2 intra-op threads, and two
    sessions of 1 thread each running batches at the same time (what ``placement { instances: 2 }``
    does)."""
    layouts: Layouts = {}
    for layout, sessions, threads in (("1 session x 2 threads", 1, 2), ("2 sessions x 1 thread", 2, 1)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        layouts[layout] = [
            ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"]) for _ in range(sessions)
        ]
    return layouts


def raw_rows_per_second(layouts: Layouts, batch_sizes: Sequence[int], seconds: float) -> dict[str, dict[int, float]]:
    """session.run rows/s at each batch size, in this process, for each layout."""
    return {
        layout: {size: _rows_per_second(sessions, size, seconds) for size in batch_sizes}
        for layout, sessions in layouts.items()
    }


def _rows_per_second(sessions: Sequence[ort.InferenceSession], size: int, seconds: float) -> float:
    """Rows/s of every session running batches of ``size`` back to back, all at once, one thread each."""
    feed = {"input": np.random.default_rng(size).standard_normal((size, SIZES[0])).astype(np.float32)}
    counts = [0] * len(sessions)
    for session in sessions:
        session.run(None, feed)
    start = time.perf_counter()

    def run(index: int) -> None:
        while time.perf_counter() < start + seconds:
            sessions[index].run(None, feed)
            counts[index] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(sessions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) * size / (time.perf_counter() - start)


# ---- load generators ----------------------------------------------------------------------------


def grpc_frame(path: Path, x: np.ndarray) -> Path:
    """One gRPC frame of a Predict request for ``x`` (typed float_val values)."""
    request = pb.PredictRequest()
    request.model_spec.name = "mlp"
    request.inputs["input"].CopyFrom(from_ndarray(x))
    return frame_file(path, request.SerializeToString())


# ---- servers --------------------------------------------------------------------------------------


@dataclass
class Setup:
    name: str
    flags: list[str]
    model_config: str = ""  # extra ModelConfig fields (e.g. a placement block)
    rest_path: str = REST_PATH
    rest_body: str = "body.json"  # in the work folder
    peer: bool = False  # another server: its failed requests are counted, not fatal


@dataclass
class Cell:
    """One (setup, protocol, concurrency) run: the load generator's figures and the server's CPU per row."""

    load: LoadResult
    cpu_ms_per_row: float
    # rows/s ÷ raw onnxruntime's rows/s measured just before the cell (batching on only)
    nearby_ratio: float | None = None


@contextlib.contextmanager
def server(setup: Setup, base: Path, work: Path, tree: Path = ROOT) -> Iterator[tuple[int, int, int]]:
    """Yields the REST port, the gRPC port and the server's pid; the server runs from the checkout ``tree``."""
    rest, grpc_port = free_port(), free_port()
    config = work / f"models-{setup.name}.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "mlp" base_path: "{base}" model_platform: "onnx" '
        f"{setup.model_config} }} }}\n"
    )
    cmd = [
        python(),
        "-m",
        "modelserve",
        f"--model_config_file={config}",
        f"--rest_api_port={rest}",
        f"--port={grpc_port}",
        *COMMON_FLAGS.split(),
        *setup.flags,
    ]
    with pinned(cmd, ALL_CPUS, cwd=tree) as process:
        wait_http(f"http://127.0.0.1:{rest}/v1/models/mlp", timeout=120)
        yield rest, grpc_port, process.pid


MLSERVER = Setup("mlserver", [], rest_path="/v2/models/mlp/infer", rest_body="v2.json", peer=True)


@contextlib.contextmanager
def mlserver(mlserver_python: str, model: Path, work: Path, batch_time: float) -> Iterator[tuple[int, int, int]]:
    """MLServer (its own venv) with adaptive batching on the same model, onnxruntime at the limit's 2
    threads. Yields the REST port, 0 and its pid."""
    rest = free_port()
    cmd = mlserver_command(
        mlserver_python,
        work / "mlserver",
        model,
        http_port=rest,
        grpc_port=free_port(),
        max_batch_size=128,
        max_batch_time=batch_time,
    )
    with pinned(cmd, ALL_CPUS, env={"PEER_INTRA_OP_THREADS": str(RAW_THREADS)}, log=work / "mlserver.log") as process:
        wait_http(f"http://127.0.0.1:{rest}/v2/models/mlp/ready", timeout=120)
        yield rest, 0, process.pid


def v2_body(x: np.ndarray) -> str:
    return json.dumps(
        {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    )


def check_v2_answer(port: int, x: np.ndarray, expected: np.ndarray) -> None:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/mlp/infer", v2_body(x).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        output = json.loads(answer.read())["outputs"][0]
    got = np.array(output["data"], dtype=np.float32).reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def wait_idle(pids: Sequence[int], timeout: float = 30.0) -> None:
    """Until the servers have answered what was still queued when the last load stopped (batching off
    at c = 128 holds about a second of work), so that it does not run into the next measurement."""
    deadline = time.monotonic() + timeout
    last = sum(map(cpu_seconds, pids))
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = sum(map(cpu_seconds, pids))
        if now - last < 0.01:  # under 5 % of a core
            return
        last = now


def check_answers(rest: int, grpc_port: int, x: np.ndarray, expected: np.ndarray) -> None:
    """One real answer per protocol (h2load cannot read grpc-status)."""
    import urllib.request

    from modelserve.client import GrpcClient

    body = json.dumps({"instances": x.tolist()}).encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{rest}/v1/models/mlp:predict", body, timeout=60) as answer:
        got = np.array(json.loads(answer.read())["predictions"], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    with GrpcClient(f"127.0.0.1:{grpc_port}") as client:
        got = client.predict("mlp", {"input": x}, timeout=60)["output"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def load_and_cpu(
    pid: int,
    protocol: str,
    port: int,
    work: Path,
    c: int,
    seconds: int,
    rest_path: str = REST_PATH,
    rest_body: str = "body.json",
    allow_errors: bool = False,
) -> tuple[LoadResult, float]:
    """One load run (REST: wrk posting ``rest_body`` to ``rest_path``; gRPC: h2load with body.bin): the
    generator's figures and the server's CPU ms per answered request. A failed request stops the
    benchmark unless ``allow_errors``."""
    before = cpu_seconds(pid)
    if protocol == "rest":
        result = wrk(f"http://127.0.0.1:{port}{rest_path}", work / rest_body, c, seconds, cpu=ALL_CPUS)
    else:
        result = h2load(port, work / "body.bin", c, seconds, GRPC_PATH, log=work / "h2load.log")
    if result.errors and not allow_errors:
        raise RuntimeError(f"{result.errors} failed requests ({protocol}, port {port}, c={c})")
    # The window is the generator's (start-up and tail add a little CPU).
    return result, (cpu_seconds(pid) - before) * 1000 / max(1.0, result.rps * seconds)


def measure(setup: Setup, server_: tuple[int, int, int], work: Path, protocol: str, c: int, seconds: int) -> Cell:
    rest, grpc_port, pid = server_
    port = rest if protocol == "rest" else grpc_port
    # One second at this concurrency first, not counted: the batch queue adapts to a new load within
    # one batch_timeout (after a busier cell, the first lone request waits it out), and the figures
    # are the steady state's.
    load_and_cpu(pid, protocol, port, work, c, 1, setup.rest_path, setup.rest_body, setup.peer)
    # Every request is one row.
    result, cpu_ms = load_and_cpu(pid, protocol, port, work, c, seconds, setup.rest_path, setup.rest_body, setup.peer)
    print(
        f"    {setup.name:>8} {protocol:>4} c={c:<3} {result.rps:8.1f} rows/s  "
        f"p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms  server CPU {cpu_ms:5.2f} ms/row"
        + (f"  {result.errors} failed" if result.errors else ""),
        flush=True,
    )
    return Cell(result, cpu_ms)


def median_cell(runs: list[Cell]) -> Cell:
    ratios = [r.nearby_ratio for r in runs if r.nearby_ratio is not None]
    return Cell(
        median([r.load for r in runs]),
        statistics.median(r.cpu_ms_per_row for r in runs),
        statistics.median(ratios) if ratios else None,
    )


def table(
    limit: float,
    limit_text: str,
    protocols: Sequence[str],
    levels: Sequence[int],
    results: dict[str, dict[tuple[str, int], Cell]],
    ceilings: dict[int, float],
) -> str:
    peer = results.get(MLSERVER.name)
    header = (
        "| protocol | c | off rows/s | off p50 / p99 ms | on rows/s | on p50 / p99 ms | on server CPU ms/row "
        "| on / limit | on / nearby limit | ceiling at c |"
    )
    rule = "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    if peer:
        header += " MLServer rows/s | MLServer p50 / p99 ms | MLServer CPU ms/row | MLServer failed | on / MLServer |"
        rule += " ---: | ---: | ---: | ---: | ---: |"
    lines = [header, rule]
    for protocol in protocols:
        for c in levels:
            off, on = results["off"][protocol, c], results["on"][protocol, c]
            line = (
                f"| {protocol.upper() if protocol == 'rest' else 'gRPC'} | {c} | {off.load.rps:,.0f} | "
                f"{off.load.p50_ms:.1f} / {off.load.p99_ms:.1f} | {on.load.rps:,.0f} | "
                f"{on.load.p50_ms:.1f} / {on.load.p99_ms:.1f} | {on.cpu_ms_per_row:.2f} | {on.load.rps / limit:.2f} | "
                f"{on.nearby_ratio:.2f} | {ceilings[c] / limit:.2f} |"
            )
            if peer and (protocol, c) in peer:
                p = peer[protocol, c]
                line += (
                    f" {p.load.rps:,.0f} | {p.load.p50_ms:.1f} / {p.load.p99_ms:.1f} | {p.cpu_ms_per_row:.2f} "
                    f"| {p.load.errors} | {on.load.rps / p.load.rps:.2f} |"
                )
            elif peer:
                line += " | | | | |"
            lines.append(line)
    lines.append(
        f"\nLimit: raw onnxruntime in-process, {limit_text}: {limit:,.0f} rows/s "
        f"({1000 * RAW_THREADS / limit:.2f} CPU-ms per row). On / nearby limit: each cell's rows/s "
        "divided by the limit's layout and batch size run for 1 s just before it (this machine's speed "
        "drifts within minutes), median of the rounds. Ceiling at c: raw onnxruntime's best rows/s at a "
        "batch of c rows (or max_batch_size) divided by the limit, the most any server can give "
        "c one-row clients that wait for their answers."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8,32,64,128")
    parser.add_argument("--protocols", default="rest,grpc")
    parser.add_argument("--on", default=ON_FLAGS, help="server flags with batching on (besides the file)")
    parser.add_argument("--off", default=OFF_FLAGS, help="server flags with batching off")
    parser.add_argument("--batching", default=BATCHING, help="BatchingParameters text for batching on")
    parser.add_argument(
        "--on-model-config", default=ON_MODEL_CONFIG, help="extra ModelConfig fields for batching on (placement)"
    )
    parser.add_argument(
        "--mlserver-python",
        default="",
        help="python of a venv with mlserver==1.7.1 + onnxruntime: adds MLServer's adaptive "
        "batching over V2 REST as a peer",
    )
    parser.add_argument(
        "--mlserver-batch-time",
        type=float,
        default=0.002,
        help="the peer's max_batch_time in seconds (max_batch_size is 128, as ours); "
        "2 ms was its best of 2 / 10 / 50 ms at c = 32-128",
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    protocols = args.protocols.split(",")
    ensure_tools("wrk", "h2load")

    work = Path(tempfile.mkdtemp(prefix="bench-batching-"))
    base = work / "mlp"
    (base / "1").mkdir(parents=True)
    model = base / "1" / "model.onnx"
    model.write_bytes(mlp(SIZES, seed=0, softmax=False))
    x = np.random.default_rng(0).standard_normal((1, SIZES[0])).astype(np.float32)
    (work / "body.json").write_text(json.dumps({"instances": x.tolist()}))
    grpc_frame(work / "body.bin", x)
    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    (work / "batching.txt").write_text(args.batching)
    (work / "v2.json").write_text(v2_body(x))

    print(f"machine: {os.cpu_count()} CPUs; {platform_line()}")
    print(
        f"batching on: {args.on} --batching_parameters_file=<file>, models.config: "
        f"{args.on_model_config or '(defaults)'}; file:\n{args.batching}"
    )
    print(f"batching off: {args.off or '(defaults)'}; all: {COMMON_FLAGS}", flush=True)
    setups = [
        Setup("off", args.off.split()),
        Setup("on", [*args.on.split(), f"--batching_parameters_file={work / 'batching.txt'}"], args.on_model_config),
    ]
    peers = [MLSERVER] if args.mlserver_python else []
    runs: dict[str, dict[tuple[str, int], list[Cell]]] = {s.name: {} for s in [*setups, *peers]}
    raws: list[dict[str, dict[int, float]]] = []
    layouts = raw_layouts(model)
    max_batch = params.parse(args.batching).max_batch_size
    with contextlib.ExitStack() as stack:
        servers = {s.name: stack.enter_context(server(s, base, work)) for s in setups}
        for setup in setups:
            check_answers(*servers[setup.name][:2], x, expected)
            for protocol in protocols:
                measure(setup, servers[setup.name], work, protocol, 8, 2)  # warm-up
        if peers:
            print(
                f"peer: MLServer, adaptive batching max_batch_size 128, max_batch_time "
                f"{args.mlserver_batch_time} s, onnxruntime {RAW_THREADS} threads, V2 REST",
                flush=True,
            )
            servers[MLSERVER.name] = stack.enter_context(
                mlserver(args.mlserver_python, model, work, args.mlserver_batch_time)
            )
            check_v2_answer(servers[MLSERVER.name][0], x, expected)
            measure(MLSERVER, servers[MLSERVER.name], work, "rest", 8, 2)  # warm-up
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", flush=True)
            raws.append(raw_rows_per_second(layouts, RAW_SIZES, 2.0))
            for layout, by_size in raws[-1].items():
                print(f"  raw onnxruntime rows/s by batch size, {layout}: {rates(by_size)}", flush=True)
            _, best_layout, best_size = best_rate(raws[-1])
            for protocol in protocols:
                for c in levels:
                    # interleaved, so that other work on the machine hits all alike
                    for setup in [*setups, *(peers if protocol == "rest" else [])]:
                        wait_idle([pid for _, _, pid in servers.values()])
                        nearby = _rows_per_second(layouts[best_layout], best_size, 1.0) if setup.name == "on" else None
                        cell = measure(setup, servers[setup.name], work, protocol, c, args.seconds)
                        if nearby:
                            cell.nearby_ratio = cell.load.rps / nearby
                        runs[setup.name].setdefault((protocol, c), []).append(cell)
    raw_median = {
        layout: {b: statistics.median(r[layout][b] for r in raws) for b in raws[0][layout]} for layout in raws[0]
    }
    limit, layout, best = best_rate(raw_median)
    # the largest measured batch size a closed loop of c one-row clients can fill
    fill = {c: max(b for b in RAW_SIZES if b <= min(c, max_batch)) for c in levels}
    ceilings = {c: max(by_size[fill[c]] for by_size in raw_median.values()) for c in levels}
    results = {name: {key: median_cell(r) for key, r in by_key.items()} for name, by_key in runs.items()}
    for name, by_size in raw_median.items():
        print(f"\nraw onnxruntime (median) rows/s, {name}: {rates(by_size)}", end="")
    print()
    print(table(limit, f"{layout}, batch {best}", protocols, levels, results, ceilings))


def best_rate(raw: dict[str, dict[int, float]]) -> tuple[float, str, int]:
    """(rows/s, layout, batch size) of the fastest raw run."""
    return max((rate, name, b) for name, by_size in raw.items() for b, rate in by_size.items())


def rates(by_size: dict[int, float]) -> str:
    return ", ".join(f"{b}: {r:,.0f}" for b, r in by_size.items())


def platform_line() -> str:
    try:
        model_name = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model_name = "unknown CPU"
    return f"{model_name}, Python {sys.version.split()[0]}, onnxruntime {ort.__version__}"


if __name__ == "__main__":
    main()
