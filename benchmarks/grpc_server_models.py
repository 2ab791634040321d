"""Unbatched gRPC Predict on grpcio's threaded server (model inline) against grpc.aio (worker pool), one process.

    python benchmarks/grpc_server_models.py [--seconds=4] [--windows=14] [--concurrency=64]
                                            [--server-cpu=1 --client-cpu=0]

Why it exists: without batching, modelserve's gRPC server used to be grpcio's threaded
``grpc.server``, each handler thread running its request's model call inline; since issue 15 it is
``grpc.aio`` on the event loop, the model call on the worker pool (docs/grpc.md "Server model").
This measures what that costs, with ``request_cost.py``'s model (256→16, one row), flags and figure
(the server process's CPU time per answered request, h2load at 64 calls in flight).

One modelserve process serves three listeners on the same core, models and worker pool: its own
``grpc.aio`` one, and two threaded ``grpc.server`` listeners whose handlers run the Predict
coroutine inline (``run_inline``), as the threaded server did. The second threaded listener is the
control: what it differs from the first by is chance. Load goes to one listener at a time, in
windows that rotate (A B C, C B A, ...), so drift in the shared machine's speed weighs on all alike;
ratios are taken window by window against the first threaded listener. Nothing is pinned unless
asked (``--server-cpu`` / ``--client-cpu`` pin the server and h2load).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
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


def serve(threaded_ports: list[int], threads: int, flags: list[str]) -> None:
    """modelserve with ``flags``, plus threaded listeners on ``threaded_ports`` sharing its core."""
    from modelserve import server
    from modelserve.api.tfs_grpc import GRPC_STATUS, PredictionServicer
    from modelserve.cli import main as modelserve
    from modelserve.errors import ServingError
    from modelserve.execution.runner import run_inline
    from modelserve.protos import pb

    def inline(body: Callable[..., Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return run_inline(body(request, context))
            except ServingError as exc:
                context.abort(GRPC_STATUS[exc.code], exc.message)

        return handler

    listeners: list[grpc.Server] = []
    start = server.Server.start

    async def start_all(self: server.Server) -> None:
        await start(self)
        predict = inline(PredictionServicer(self.core).Predict)
        handlers = {
            "Predict": grpc.unary_unary_rpc_method_handler(
                predict, request_deserializer=pb.PredictRequest.FromString, response_serializer=lambda a: a.serialize()
            )
        }
        for port in threaded_ports:
            listener = grpc.server(futures.ThreadPoolExecutor(threads))
            listener.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", handlers),)
            )
            listener.add_insecure_port(f"127.0.0.1:{port}")
            await asyncio.to_thread(listener.start)
            listeners.append(listener)

    server.Server.start = start_all  # type: ignore[method-assign]  # a benchmark's own listeners
    sys.exit(modelserve(flags))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        ports, threads = json.loads(sys.argv[2]), int(sys.argv[3])
        serve(ports, threads, sys.argv[4:])
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
    threaded = [ports[name] for name in LISTENERS if name.startswith("threaded")]
    flags = [
        "--model_name=mlp",
        f"--model_base_path={work / 'mlp'}",
        f"--rest_api_port={rest}",
        f"--port={ports['grpc.aio']}",
        *COMMON_FLAGS.split(),
        "--tensorflow_intra_op_parallelism=1",
    ]
    cmd = [python(), __file__, "serve", json.dumps(threaded), str(args.threads), *flags]
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
