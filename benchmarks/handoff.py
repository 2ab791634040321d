"""The hand-off's cost: REST predict through one front-end process vs the single process, same run.

    python benchmarks/handoff.py [--seconds=5] [--rounds=3] [--concurrency=8] [--frontend-cpu=1]

One engine (a ``Server`` in this process) serves both: its own REST port (the single process's
path, no hand-off) and one front-end process (``python -m modelserve.frontend``) over a socket
pair. This process and the front end are pinned to CPU 1 (``--frontend-cpu=0``: the front end shares
CPU 0 with wrk instead), wrk to CPU 0; rounds alternate. The
model costs about nothing (half_plus_two on one float), so the figures are request handling.

Printed: req/s of each (median of the rounds), their ratio, and the server CPU per request
(this process's, plus the front end's on the hand-off path): the difference is the hand-off's
cost per request, in µs of CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, cpu_seconds, ensure_tools, wait_http, wrk

sys.path.insert(0, str(ROOT))
from modelserve.execution.handoff import wire
from modelserve.processes import ChildArgs, command
from modelserve.serving.engine import Engine
from modelserve.testing import ServerThread, running_server
from tests import onnx_models as om

FLAGS = ["--tensorflow_intra_op_parallelism=1", "--num_inference_threads=1", "--enable_metrics=false"]


@contextlib.contextmanager
def hpt_engine(work: Path) -> Iterator[tuple[ServerThread, Engine, socket.socket]]:
    """A server in this process holding half_plus_two ("hpt": one inference thread, no metrics) and an
    ``Engine`` on one end of a socket pair: yields them and the other end, for a front end to inherit."""
    om.write(work / "hpt", 1, om.half_plus_two())
    with running_server("--model_name=hpt", f"--model_base_path={work / 'hpt'}", *FLAGS) as st:
        engine_end, child_end = wire.pair()

        async def attach() -> Engine:
            engine = Engine(st.server.core, 1 << 30)
            engine.attach(engine_end)
            return engine

        yield st, asyncio.run_coroutine_threadsafe(attach(), st.loop).result(30), child_end


def reserve() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--frontend-cpu", type=int, default=1, help="the front end's CPU (the engine's is 1)")
    args = parser.parse_args()
    ensure_tools("wrk")
    os.sched_setaffinity(0, {1})  # this process (the engine) and the front end it starts
    work = Path(tempfile.mkdtemp(prefix="bench-handoff-"))
    body = work / "body.json"
    body.write_text(json.dumps({"instances": [1.0]}))
    with hpt_engine(work) as (st, engine, child_end):
        held = reserve()
        port = held.getsockname()[1]
        grpc_port = reserve()
        argv = command(
            ChildArgs(
                child_end.fileno(),
                flags=[f"--rest_api_port={port}", f"--port={grpc_port.getsockname()[1]}", "--host=127.0.0.1", *FLAGS],
            )
        )
        grpc_port.close()
        proc = subprocess.Popen(
            argv, pass_fds=(child_end.fileno(),), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        child_end.close()
        os.sched_setaffinity(proc.pid, {args.frontend_cpu})
        try:
            targets = {"single process": (st.server.rest_port, ()), "one front end": (port, (proc.pid,))}
            for p, _ in targets.values():
                wait_http(f"http://127.0.0.1:{p}/v1/models/hpt")
            rates: dict[str, list[float]] = {name: [] for name in targets}
            cpu_per: dict[str, list[float]] = {name: [] for name in targets}
            engine_part: list[float] = []  # of the hand-off path's CPU per request, the engine's
            for _ in range(args.rounds):
                for name, (p, pids) in targets.items():
                    pids = (os.getpid(), *pids)
                    before = [cpu_seconds(pid) for pid in pids]
                    result = wrk(f"http://127.0.0.1:{p}/v1/models/hpt:predict", body, args.concurrency, args.seconds)
                    each = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
                    used = sum(each)
                    if len(pids) > 1:
                        engine_part.append(each[0] / (result.rps * args.seconds) * 1e6)
                    assert result.errors == 0, result
                    rates[name].append(result.rps)
                    cpu_per[name].append(used / (result.rps * args.seconds) * 1e6)
            for name in targets:
                print(
                    f"{name:16s} {statistics.median(rates[name]):8.0f} req/s   "
                    f"{statistics.median(cpu_per[name]):6.0f} µs CPU/request   rounds {[round(r) for r in rates[name]]}"
                )
            single, front = (statistics.median(rates[n]) for n in targets)
            cost = statistics.median(cpu_per["one front end"]) - statistics.median(cpu_per["single process"])
            print(f"  of the front-end path's CPU, the engine's: {statistics.median(engine_part):.0f} µs/request")
            print(
                f"ratio one front end / single process: {front / single:.2f}; hand-off cost ≈ {cost:.0f} µs CPU/request"
            )
            print(
                f"(c={args.concurrency}, {args.seconds} s x {args.rounds} rounds, server CPU 1, wrk CPU 0, "
                f"{time.strftime('%F')})"
            )
        finally:
            proc.terminate()
            proc.wait(30)
            held.close()
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), st.loop).result(10)
            st.loop.call_soon_threadsafe(engine.close)


if __name__ == "__main__":
    main()
