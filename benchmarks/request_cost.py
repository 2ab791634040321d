"""What one request costs in server CPU: modelserve's front ends against the floors of their stacks.

    python benchmarks/request_cost.py [--seconds=6] [--rounds=2] [--concurrency=64]

Every server answers one-row Predict requests for a tiny model (256→16, so inference is a few
microseconds) under closed-loop load (REST: ``wrk -t1``; gRPC: ``h2load -t1 -m1``); the figure is
the server process's CPU time (all threads, ``/proc``) divided by the requests answered. Servers:

* modelserve, REST and gRPC, batching off and on (the parameters of ``benchmarks/batching.py``),
  onnxruntime with 1 intra-op thread (so that no spinning pool thread is counted);
* the floors: uvicorn + httptools + uvloop answering a fixed JSON body from a bare ASGI callable;
  the same without uvicorn (an asyncio protocol on httptools); ``baseline_starlette.py`` (inline
  inference, orjson); ``baseline_grpc.py`` sync and aio (parse, run, answer, nothing else).

This is the per-request budget of ``docs/performance.md``'s batching section: with inference on the
same cores, each request's handling CPU is taken from the model. Nothing is pinned; the load
generator's own CPU is not counted. Rows are interleaved per round; figures are medians.
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
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batching import ALL_CPUS, BATCHING, COMMON_FLAGS, load_and_cpu
from common import ensure_tools, frame_file, free_port, pinned, python, wait_http
from grpc_predict import request_bytes, wait_and_check

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modelserve.demo import mlp

HERE = Path(__file__).resolve().parent
HELLO = b'{"predictions": [[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]}'


# ---- the two HTTP floors (run as subprocesses of this script) ---------------------------------


async def _hello_asgi(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(HELLO)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": HELLO})


def serve_hello_asgi(port: int) -> None:
    import uvicorn

    uvicorn.run(
        _hello_asgi,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
    )


def serve_hello_raw(port: int) -> None:
    import httptools
    import uvloop

    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(HELLO), HELLO)

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            self.body = []
            self.transport.write(answer)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


# ---- measuring --------------------------------------------------------------------------------


@contextlib.contextmanager
def started(cmd: list[str], ready_url: str | None, env: dict[str, str] | None = None) -> Iterator[int]:
    """The server running (its HTTP port answering, when it has one); yields its pid."""
    with pinned(cmd, ALL_CPUS, env) as process:
        if ready_url:
            wait_http(ready_url, timeout=120)
        yield process.pid


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in ("hello-asgi", "hello-raw"):
        (serve_hello_asgi if sys.argv[1] == "hello-asgi" else serve_hello_raw)(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    ensure_tools("wrk", "h2load")

    work = Path(tempfile.mkdtemp(prefix="bench-request-cost-"))
    model = work / "mlp" / "1" / "model.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(mlp([256, 16], seed=0, softmax=False))
    x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    (work / "body.json").write_text(json.dumps({"instances": x.tolist()}))
    # tensor_content, as TensorFlow's make_tensor_proto writes it (and the bare baselines read).
    message = request_bytes("mlp", x)
    frame_file(work / "body.bin", message)
    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    (work / "batching.txt").write_text(BATCHING)

    def modelserve(*flags: str) -> tuple[list[str], int, int]:
        rest, grpc_port = free_port(), free_port()
        cmd = [
            python(),
            "-m",
            "modelserve",
            "--model_name=mlp",
            f"--model_base_path={work / 'mlp'}",
            f"--rest_api_port={rest}",
            f"--port={grpc_port}",
            *COMMON_FLAGS.split(),
            "--tensorflow_intra_op_parallelism=1",
            *flags,
        ]
        return cmd, rest, grpc_port

    # (row name, protocol, command, port to load, URL that answers once it is up)
    rows: list[tuple[str, str, list[str], int, str | None]] = []
    batching = ("--enable_batching", f"--batching_parameters_file={work / 'batching.txt'}")
    for label, flags in (("off", ()), ("on", batching)):
        cmd, rest, grpc_port = modelserve(*flags)
        up = f"http://127.0.0.1:{rest}/v1/models/mlp"
        rows.append((f"modelserve REST, batching {label}", "rest", cmd, rest, up))
        rows.append((f"modelserve gRPC, batching {label}", "grpc", cmd, grpc_port, up))
    port = free_port()
    rows.append(
        (
            "uvicorn + bare ASGI, fixed answer",
            "rest",
            [python(), str(HERE / "request_cost.py"), "hello-asgi", str(port)],
            port,
            f"http://127.0.0.1:{port}/",
        )
    )
    port = free_port()
    rows.append(
        (
            "httptools protocol, fixed answer",
            "rest",
            [python(), str(HERE / "request_cost.py"), "hello-raw", str(port)],
            port,
            f"http://127.0.0.1:{port}/",
        )
    )
    port = free_port()
    rows.append(
        (
            "Starlette, inline onnxruntime",
            "rest",
            [
                python(),
                "-m",
                "uvicorn",
                "benchmarks.baseline_starlette:app",
                "--port",
                str(port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            port,
            f"http://127.0.0.1:{port}/",
        )
    )
    for kind in ("sync", "aio"):
        port = free_port()
        rows.append(
            (
                f"grpcio {kind}, bare Predict",
                "grpc",
                [python(), str(HERE / "baseline_grpc.py"), kind, str(port), str(model)],
                port,
                None,
            )
        )

    print(f"{args.concurrency} requests in flight, {args.seconds} s per run, {args.rounds} rounds", flush=True)
    results: dict[str, list[tuple[float, float]]] = {}
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}/{args.rounds}", flush=True)
        for name, protocol, cmd, port, up in rows:
            with started(cmd, up, {"MODEL": str(model)}) as pid:
                if protocol == "grpc":
                    wait_and_check(port, message, expected)  # h2load counts a gRPC error as a success
                load_and_cpu(pid, protocol, port, work, 8, 2)  # warm-up
                result, ms = load_and_cpu(pid, protocol, port, work, args.concurrency, args.seconds)
                rps = result.rps
            print(f"  {name:<36} {rps:8.0f} req/s  {ms:6.3f} CPU-ms/request", flush=True)
            results.setdefault(name, []).append((rps, ms))
    print("\n| server | req/s | server CPU ms / request |\n| --- | ---: | ---: |")
    for name, runs in results.items():
        rps, ms = statistics.median(r for r, _ in runs), statistics.median(m for _, m in runs)
        print(f"| {name} | {rps:,.0f} | {ms:.3f} |")


if __name__ == "__main__":
    main()
