"""REST predict throughput on a small MLP (784→128→10): modelserve vs a Starlette baseline vs raw onnxruntime.

    python benchmarks/rest_predict.py [--seconds=10] [--rounds=3] [--concurrency=1,8,64] [--checkout=DIR ...]
                                      [--mlserver-python=VENV/bin/python] [--metrics-only]

"modelserve" runs with one intra-op and one inference thread, as tuned for one core; "modelserve,
default flags" with none of those flags, so that its thread defaults must find the one CPU it is
pinned to by themselves. ``--mlserver-python`` adds MLServer (V2 REST, docs/benchmarking.md) as a peer.

"modelserve, metrics off" is "modelserve" with ``--enable_metrics=false``: the cost of recording every
request for /metrics is the ratio of the two, printed last. ``--metrics-only`` runs just these two.

``--checkout=DIR`` adds modelserve as it is in another checkout (``git worktree add DIR COMMIT``), run from
there, to the same interleaved rounds: how a change moved the figures, measured side by side.

Each server runs pinned to CPU 1 (onnxruntime intra-op threads 1); wrk runs pinned to CPU 0, so the
figures are server-bound and comparable. Raw onnxruntime is measured in-process on CPU 1 in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batching import v2_body
from common import (
    ROOT,
    LoadResult,
    cpu_seconds,
    ensure_tools,
    free_port,
    median,
    mlserver_command,
    pinned,
    python,
    wait_http,
    wrk,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modelserve.demo import mlp


def raw_onnxruntime(model: Path, x: np.ndarray, seconds: float) -> float:
    """Calls per second of session.run at batch 1, on CPU 1 (the servers' core)."""
    os.sched_setaffinity(0, {1})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    feed = {"input": x}
    for _ in range(1000):
        session.run(None, feed)
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(500):
            session.run(None, feed)
        n += 500
    os.sched_setaffinity(0, {0, 1})
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checkout", action="append", default=[], help="another checkout's modelserve too")
    parser.add_argument("--mlserver-python", default="", help="a venv's python with mlserver==1.7.1 and onnxruntime")
    parser.add_argument("--metrics-only", action="store_true", help="only modelserve with metrics on and off")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    ensure_tools("wrk")

    work = Path(tempfile.mkdtemp(prefix="bench-rest-"))
    (work / "mlp" / "1").mkdir(parents=True)
    model = work / "mlp" / "1" / "model.onnx"
    model.write_bytes(mlp([784, 128, 10], seed=0, softmax=True))
    x = np.random.default_rng(0).random((1, 784), dtype=np.float32).round(4)
    body = work / "body.json"
    body.write_text(json.dumps({"instances": x.tolist()}))

    raw = raw_onnxruntime(model, x, 3.0)
    print(f"raw onnxruntime in-process, batch 1, 1 thread: {raw:,.0f} calls/s ({1e6 / raw:.1f} µs/call)")

    starlette = [
        python(),
        "-m",
        "uvicorn",
        "benchmarks.baseline_starlette:app",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--port",
        "{port}",
    ]
    default_flags = [
        python(),
        "-m",
        "modelserve",
        "--model_name=mlp",
        f"--model_base_path={work / 'mlp'}",
        "--rest_api_port={port}",
        "--port=-1",
        "--file_system_poll_wait_seconds=0",
    ]
    tuned = [*default_flags, "--tensorflow_intra_op_parallelism=1", "--num_inference_threads=1"]
    v1 = ("/v1/models/mlp:predict", body, "/v1/models/mlp")
    servers: dict[str, tuple[list[str], dict[str, str], Path, tuple[str, Path, str]]] = {
        "starlette+uvicorn baseline": (starlette, {"MODEL": str(model)}, ROOT, v1),
        "same, inference in a thread pool": (starlette, {"MODEL": str(model), "THREADPOOL": "1"}, ROOT, v1),
        "modelserve": (tuned, {}, ROOT, v1),
        "modelserve, metrics off": ([*tuned, "--enable_metrics=false"], {}, ROOT, v1),
        "modelserve, default flags": (default_flags, {}, ROOT, v1),
    }
    if args.metrics_only:
        servers = {name: servers[name] for name in ("modelserve", "modelserve, metrics off")}
    for checkout in args.checkout:
        servers[f"modelserve at {checkout}"] = (tuned, {}, Path(checkout).resolve(), v1)
    if args.mlserver_python:
        v2 = work / "v2.json"
        v2.write_text(v2_body(x))
        # Its command is written per round: MLServer takes its port from its settings file.
        servers["MLServer 1.7.1 (V2 REST)"] = ([], {}, ROOT, ("/v2/models/mlp/infer", v2, "/v2/models/mlp/ready"))
    # Rounds interleave the servers so that noise from other work on the machine falls on all alike;
    # each figure is the median over rounds.
    runs: dict[str, dict[int, list[LoadResult]]] = {name: {c: [] for c in levels} for name in servers}
    # The server's CPU time per answered request (µs): what a change costs, even when other work on the
    # machine takes CPU from the server and moves its throughput.
    cpu: dict[str, dict[int, list[float]]] = {name: {c: [] for c in levels} for name in servers}
    for round_ in range(args.rounds):
        # Every other round runs them in reverse, so that none always runs first (or right after another).
        order = list(servers.items())
        for name, (cmd, env, cwd, (path, request, ready)) in order[:: -1 if round_ % 2 else 1]:
            port = free_port()
            if not cmd:
                cmd = mlserver_command(
                    args.mlserver_python, work / "mlserver", model, http_port=port, grpc_port=free_port()
                )
            with pinned([c.replace("{port}", str(port)) for c in cmd], "1", env, cwd=cwd) as proc:
                url = f"http://127.0.0.1:{port}{path}"
                wait_http(f"http://127.0.0.1:{port}{ready}")
                wrk(url, request, 8, 2)  # warm-up
                for c in levels:
                    before = cpu_seconds(proc.pid)
                    result = wrk(url, request, c, args.seconds)
                    runs[name][c].append(result)
                    cpu[name][c].append((cpu_seconds(proc.pid) - before) / (result.rps * args.seconds) * 1e6)
    results = {name: {c: median(rs) for c, rs in by_c.items()} for name, by_c in runs.items()}

    print(f"\nmedian of {args.rounds} rounds of {args.seconds} s")
    on, off = results["modelserve"], results["modelserve, metrics off"]
    for c in levels:
        ratios = [a.rps / b.rps for a, b in zip(runs["modelserve"][c], runs["modelserve, metrics off"][c], strict=True)]
        cpu_on, cpu_off = statistics.median(cpu["modelserve"][c]), statistics.median(cpu["modelserve, metrics off"][c])
        print(
            f"metrics cost at c={c}: on {on[c].rps:,.0f} req/s, off {off[c].rps:,.0f} req/s, "
            f"on/off {on[c].rps / off[c].rps:.3f} (per round: {', '.join(f'{r:.3f}' for r in ratios)}); "
            f"server CPU per request: on {cpu_on:.1f} µs, off {cpu_off:.1f} µs, on/off {cpu_on / cpu_off:.3f}"
        )
    if args.metrics_only:
        return
    base = results["starlette+uvicorn baseline"]
    pooled = results["same, inference in a thread pool"]
    print("| server | c | req/s | p50 ms | p99 ms | errors | vs inline | vs thread pool | vs raw ORT |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, by_c in results.items():
        for c, r in by_c.items():
            print(
                f"| {name} | {c} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} "
                f"| {r.rps / base[c].rps:.2f}x | {r.rps / pooled[c].rps:.2f}x | {r.rps / raw:.3f}x |"
            )


if __name__ == "__main__":
    main()
