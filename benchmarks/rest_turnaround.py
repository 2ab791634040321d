"""How long the model waits between batches while the REST front end turns a batch's requests around.

    python benchmarks/rest_turnaround.py [--clients=128] [--seconds=5] [--rounds=3] [FLAGS ...]

With one-row requests from closed-loop clients, a batch of c rows runs, then the event loop answers
its c requests and reads the c requests that follow, and only then can the next batch start: the
model idles for that turnaround, whose length is the event loop's CPU per request times c. This
measures it without sockets or a load generator (their costs vary from run to run): c clients live
in this process, on the real connection objects of the REST listener (``api/httpd.py``) with an
in-memory transport that sends a client's next request the moment its answer is written, in front
of a real server (``--enable_batching``, the MLP of ``benchmarks/batching.py``, its batching
parameters; FLAGS are added to the server's). It prints rows/s, the event loop's CPU per request
(``time.thread_time``), the median batch size, run time and gap between batches, and, measured in
the same run, raw onnxruntime at a batch of c rows in this process (the most the c clients could
get) and at its best batch size (the limit of ``benchmarks/batching.py``).

The gap is what request handling costs batching here: rows/s = c / (run + gap).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batching import BATCHING, RAW_SIZES, SIZES, raw_layouts, raw_rows_per_second

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modelserve.demo import mlp
from modelserve.execution.batching.metrics import BatchStats, NoMetrics
from modelserve.options import parse_flags
from modelserve.server import Server


class Batches(NoMetrics):
    """The metrics hook, recording each batch's rows and run time."""

    def __init__(self) -> None:
        self.log: list[tuple[int, float]] = []

    def batch_done(self, stats: BatchStats) -> None:
        self.log.append((stats.rows, stats.run_seconds))


class Client:
    """An in-memory transport: the answer written, the client sends its next request (on the next loop turn)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, request: bytes, answers: list[int]) -> None:
        self.loop = loop
        self.request = request
        self.answers = answers
        self.running = True
        self.connection: Any = None

    def write(self, data: bytes) -> None:
        if not data.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"not answered 200: {data[:200]!r}")
        self.answers[0] += 1
        if self.running:
            self.loop.call_soon(self.connection.data_received, self.request)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        if self.running:
            self.running = False
            self.loop.call_soon(self.connection.connection_lost, None)

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def one_round(flags: list[str], clients: int, seconds: float, request: bytes) -> dict[str, float]:
    batches = Batches()
    options = parse_flags(["--port=-1", "--file_system_poll_wait_seconds=0", *flags])
    server = Server(options, batch_metrics=batches)
    await server.start()
    assert server.http is not None
    loop = asyncio.get_running_loop()
    answers = [0]
    transports = []
    try:
        for _ in range(clients):
            transport = Client(loop, request, answers)
            connection = server.http.protocol()
            transport.connection = connection
            connection.connection_made(transport)  # type: ignore[arg-type]
            transports.append(transport)
            connection.data_received(request)
        await asyncio.sleep(1.0)  # the queue settles into full cohorts
        first_batch = len(batches.log)
        answered, cpu, wall = answers[0], time.thread_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        answered, cpu, wall = answers[0] - answered, time.thread_time() - cpu, time.perf_counter() - wall
    finally:
        for transport in transports:
            transport.running = False
        await asyncio.sleep(0.5)  # the last batch answered
        for transport in transports:
            transport.close()
        await server.stop()
    log = batches.log[first_batch:]
    cycle = wall / len(log) * 1e3
    run = statistics.median(seconds for _, seconds in log) * 1e3
    return {
        "rows/s": answered / wall,
        "loop us/request": cpu * 1e6 / answered,
        "batch rows": statistics.median(rows for rows, _ in log),
        "run ms": run,
        "gap ms": cycle - run,  # the model idle, between one batch and the next
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args, flags = parser.parse_known_args()

    work = Path(tempfile.mkdtemp(prefix="bench-turnaround-"))
    model = work / "mlp" / "1" / "model.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(mlp(SIZES, seed=0, softmax=False))
    (work / "batching.txt").write_text(BATCHING)
    x = np.random.default_rng(0).standard_normal((1, SIZES[0])).astype(np.float32)
    body = json.dumps({"instances": x.tolist()}).encode()
    request = (
        b"POST /v1/models/mlp:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    server_flags = [
        "--model_name=mlp",
        f"--model_base_path={work / 'mlp'}",
        "--enable_batching",
        f"--batching_parameters_file={work / 'batching.txt'}",
        *flags,
    ]
    print(
        f"{args.clients} in-process clients, {args.seconds} s x {args.rounds} rounds; server flags: "
        f"{' '.join(flags) or '(the batching benchmark parameters)'}",
        flush=True,
    )

    rounds = []
    for _ in range(args.rounds):
        rounds.append(uvloop.run(one_round(server_flags, args.clients, args.seconds, request)))
        print("  " + "  ".join(f"{k} {v:,.1f}" for k, v in rounds[-1].items()), flush=True)
    result = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}

    layouts = raw_layouts(model)
    size = min(args.clients, 128)
    raw = raw_rows_per_second(layouts, sorted({size, *RAW_SIZES}), 1.0)
    at_c = max(by_size[size] for by_size in raw.values())
    best = max(rate for by_size in raw.values() for rate in by_size.values())
    print(
        f"\nmedian: {result['rows/s']:,.0f} rows/s; event loop {result['loop us/request']:.1f} µs per request; "
        f"batches of {result['batch rows']:.0f} rows run {result['run ms']:.1f} ms, gap {result['gap ms']:.1f} ms"
    )
    print(
        f"raw onnxruntime at batch {size}: {at_c:,.0f} rows/s (ratio {result['rows/s'] / at_c:.2f}); "
        f"at its best: {best:,.0f} rows/s (ratio {result['rows/s'] / best:.2f})"
    )


if __name__ == "__main__":
    main()
