"""The hand-off's own CPU per request, without HTTP: ``RemoteCore.predict`` against ``ServingCore.predict``.

    python benchmarks/handoff_direct.py [--requests=20000] [--rounds=5] [--concurrency=8] [--client-cpu=1]

One engine (a ``Server`` in this process, half_plus_two on one float, one inference thread) answers
``--concurrency`` coroutines that each call predict ``--requests / --concurrency`` times, two ways, in
alternating rounds: in this process on the server's own core (``ServingCore.predict``: the single process's
path below its front ends), and from a child process through a ``RemoteCore`` over a socket pair (the
front-end process's path). Both processes are pinned to CPU 1 (``--client-cpu=0`` moves the child).
No load generator and no HTTP, so the figures move by a few percent between runs where
``benchmarks/handoff.py``'s move by tens: use this one to compare changes to the hand-off.

Printed: CPU µs per request (median of the rounds) of the in-process calls, of the engine and of the
child through the hand-off, and the hand-off's own cost (engine + child - in-process).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds
from handoff import hpt_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modelserve.budget import UNMETERED
from modelserve.execution.request_options import DEFAULT
from modelserve.serving.request import InferenceRequest, ModelSpec

ROOT = Path(__file__).resolve().parent.parent

# The child: connects a RemoteCore, then runs one round per line it reads ("q": stop).
CHILD = """
import asyncio, sys
import numpy as np
from modelserve.budget import UNMETERED, MemoryBudget
from modelserve.execution.request_options import DEFAULT
from modelserve.serving.remote import RemoteCore
from modelserve.serving.request import InferenceRequest, ModelSpec
import socket, uvloop

fd, count, concurrency = map(int, sys.argv[1:4])

async def main():
    core = RemoteCore(MemoryBudget.unlimited(), 1 << 30)
    await core.connect(socket.socket(fileno=fd))
    request = InferenceRequest(ModelSpec("hpt"), {"x": np.array([1.0], np.float32)}, "", (), None, DEFAULT, UNMETERED)
    async def calls(n):
        for _ in range(n):
            await core.predict(request)
    await asyncio.gather(*(calls(200) for _ in range(concurrency)))  # warm
    print("ready", flush=True)
    while sys.stdin.readline().strip() != "q":
        await asyncio.gather(*(calls(count // concurrency) for _ in range(concurrency)))
        print("done", flush=True)

uvloop.run(main())
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    count, c = args.requests, args.concurrency
    os.sched_setaffinity(0, {1})
    work = Path(tempfile.mkdtemp(prefix="bench-handoff-direct-"))
    with hpt_engine(work) as (st, engine, child_end):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(child_end.fileno()), str(count), str(c)],
            pass_fds=(child_end.fileno(),),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        child_end.close()
        assert child.stdin is not None and child.stdout is not None
        os.sched_setaffinity(child.pid, {args.client_cpu})
        assert child.stdout.readline().strip() == "ready"
        core = st.server.core
        request = InferenceRequest(
            ModelSpec("hpt"), {"x": np.array([1.0], np.float32)}, "", (), None, DEFAULT, UNMETERED
        )

        async def in_process() -> None:
            async def calls(n: int) -> None:
                for _ in range(n):
                    await core.predict(request)

            await asyncio.gather(*(calls(count // c) for _ in range(c)))

        def remote() -> None:
            child.stdin.write("\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
            assert child.stdout.readline().strip() == "done"  # type: ignore[union-attr]

        asyncio.run_coroutine_threadsafe(in_process(), st.loop).result()  # warm
        figures: dict[str, list[float]] = {"in process": [], "engine": [], "front end": []}
        try:
            for _ in range(args.rounds):
                before = cpu_seconds(os.getpid())
                asyncio.run_coroutine_threadsafe(in_process(), st.loop).result()
                figures["in process"].append((cpu_seconds(os.getpid()) - before) / count * 1e6)
                engine_before, child_before = cpu_seconds(os.getpid()), cpu_seconds(child.pid)
                remote()
                figures["engine"].append((cpu_seconds(os.getpid()) - engine_before) / count * 1e6)
                figures["front end"].append((cpu_seconds(child.pid) - child_before) / count * 1e6)
        finally:
            child.stdin.write("q\n")
            child.stdin.flush()
            child.wait(30)
            st.loop.call_soon_threadsafe(engine.close)
    median = {name: statistics.median(values) for name, values in figures.items()}
    for name, values in figures.items():
        print(f"{name:11s} {median[name]:5.0f} µs CPU/request   rounds {[round(v) for v in values]}")
    both = median["engine"] + median["front end"]
    print(f"hand-off path {both:.0f} µs; its own cost {both - median['in process']:.0f} µs CPU/request")
    print(
        f"({count} requests, c={c}, {args.rounds} rounds, engine CPU 1, child CPU {args.client_cpu}, "
        f"load average {os.getloadavg()[0]:.2f}, {time.strftime('%F %H:%M')})"
    )


if __name__ == "__main__":
    main()
