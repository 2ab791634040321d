"""Unbatched gRPC Predict on grpcio's threaded server (model inline) against grpc.aio (worker pool), one process.

    python benchmarks/grpc_server_models.py [--seconds=4] [--windows=14] [--concurrency=64]
                                            [--server-cpu=1 --client-cpu=0]

Why it exists: without batching, modelserve's gRPC server is grpcio's threaded ``grpc.server``, each
handler thread running its call's model inline (``run_inline``); with batching it is ``grpc.aio`` on
the event loop. This measures the two server models on the unbatched path, where ``grpc.aio`` would
hand the model call to the worker pool and back (docs/grpc.md "Server model"), with
``request_cost.py``'s model (256→16, one row), flags and figure (the server process's CPU time per
answered request, h2load at 64 calls in flight).

One modelserve process (no ``--enable_batching``) serves three listeners sharing its core, models
and worker pool, each an ``api.grpc_server.GrpcServer``: its own threaded one, a ``grpc.aio`` one,
and a second threaded one as the control: what it differs from the first by is chance. Load goes to
one listener at a time, in windows that rotate (A B C, C B A, ...), so drift in the shared machine's
speed weighs on all alike; ratios are taken window by window against the first threaded listener.
Nothing is pinned unless asked (``--server-cpu`` / ``--client-cpu`` pin the server and h2load).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batching
import common
from batching import COMMON_FLAGS, load_and_cpu
from common import ensure_tools, frame_file, free_port, pinned, python, wait_http
from grpc_predict import PATH, request_bytes, wait_and_check

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modelserve.demo import mlp

LISTENERS = ("threaded", "grpc.aio", "threaded (control)")


def serve(extra_ports: dict[str, int], threads: int, flags: list[str]) -> None:
    """modelserve with ``flags`` (its own listener threaded), plus ``extra_ports``' listeners on its core."""
    from modelserve import server
    from modelserve.api.grpc_server import GrpcOptions, GrpcServer
    from modelserve.cli import main as modelserve

    start = server.Server.start
    listeners: list[GrpcServer] = []

    async def start_all(self: server.Server) -> None:
        await start(self)
        for name, port in extra_ports.items():
            options = GrpcOptions(host="127.0.0.1", port=port, max_threads=threads, asyncio=name == "grpc.aio")
            listener = GrpcServer(self.core, options)
            await listener.start()
            listeners.append(listener)

    server.Server.start = start_all  # type: ignore[method-assign]  # a benchmark's own listeners
    sys.exit(modelserve(flags))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        extra, threads = json.loads(sys.argv[2]), int(sys.argv[3])
        serve(extra, threads, sys.argv[4:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--windows", type=int, default=14)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--threads", type=int, default=256, help="threads of each threaded listener")
    parser.add_argument("--server-cpu", default="", help="pin the server to these CPUs (taskset -c)")
    parser.add_argument("--client-cpu", default="", help="pin h2load to these CPUs")
    args = parser.parse_args()
    ensure_tools("h2load")

    work = Path(tempfile.mkdtemp(prefix="bench-grpc-server-models-"))
    model = work / "mlp" / "1" / "model.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(mlp([256, 16], seed=0, softmax=False))
    x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    message = request_bytes("mlp", x)
    frame_file(work / "body.bin", message)
    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    if args.client_cpu:
        h2load = common.h2load
        batching.h2load = lambda *a, **k: h2load(*a, **{**k, "cpu": args.client_cpu})  # type: ignore[assignment]

    ports = {name: free_port() for name in LISTENERS}
    rest = free_port()
    extra = {name: ports[name] for name in LISTENERS[1:]}
    flags = [
        "--model_name=mlp",
        f"--model_base_path={work / 'mlp'}",
        f"--rest_api_port={rest}",
        f"--port={ports[LISTENERS[0]]}",
        *COMMON_FLAGS.split(),
        f"--grpc_max_threads={args.threads}",
        "--tensorflow_intra_op_parallelism=1",
    ]
    cmd = [python(), __file__, "serve", json.dumps(extra), str(args.threads), *flags]
    results: dict[str, list[float]] = {name: [] for name in LISTENERS}
    rates: dict[str, list[float]] = {name: [] for name in LISTENERS}
    with running(cmd, args.server_cpu, f"http://127.0.0.1:{rest}/v1/models/mlp") as pid:
        for name in LISTENERS:
            wait_and_check(ports[name], message, expected)
            load_and_cpu(pid, "grpc", ports[name], work, 8, 2)  # warm-up, not counted
        print(
            f"{args.concurrency} calls in flight, {args.seconds} s windows, {args.windows} per listener, "
            f"server CPUs {args.server_cpu or 'all'}, h2load CPUs {args.client_cpu or 'all'} ({PATH})",
            flush=True,
        )
        for window in range(args.windows):
            for name in LISTENERS if window % 2 == 0 else LISTENERS[::-1]:
                result, ms = load_and_cpu(pid, "grpc", ports[name], work, args.concurrency, args.seconds)
                results[name].append(ms)
                rates[name].append(result.rps)
                print(f"  {window + 1:2} {name:<20} {result.rps:8.0f} req/s  {ms:6.3f} CPU-ms/request", flush=True)
    reference = results[LISTENERS[0]]
    print("\n| listener | req/s | CPU ms / request | CPU ratio to threaded, per window |")
    print("| --- | ---: | ---: | ---: |")
    for name in LISTENERS:
        ms = results[name]
        ratios = [m / r for m, r in zip(ms, reference, strict=True)]
        print(
            f"| {name} | {statistics.median(rates[name]):,.0f} | {statistics.median(ms):.3f} "
            f"({min(ms):.3f}–{max(ms):.3f}) | {statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |"
        )
    print("(medians; ranges in brackets)")


@contextlib.contextmanager
def running(cmd: list[str], cpu: str, ready_url: str) -> Iterator[int]:
    with pinned(cmd, cpu or None) as process:
        wait_http(ready_url, timeout=120)
        yield process.pid


if __name__ == "__main__":
    main()
