"""A front-end process of ``--frontend_processes``: the REST and gRPC front ends over the hand-off.

    python -m modelserve.frontend --handoff_fd=FD --frontend_share=N [the server's flags]

``FD`` is this process's end of the socket pair to the engine (``execution.handoff.wire.pair``,
inherited); ``N`` the number of front-end processes, each getting 1/N of the memory budget.
The listeners are ``frontends.FrontEnds``, as in the single process, around a
``serving.remote.RemoteCore``; the ports are the ones the flags name (the parent resolves
``-1``), bound with SO_REUSEPORT so the kernel spreads connections over the processes.
This process logs no "Exporting"/"Running gRPC" lines: the parent does, once all serve.

It runs until SIGTERM/SIGINT (drain: not ready, then in-flight requests finish within
--drain_grace_seconds) or until the engine's socket closes (the engine is gone: exit at once).
Starting, restarting and stopping these processes is ``server``'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Sequence

from . import budget
from .api.metrics import tf_metrics_path
from .errors import ServingError
from .frontends import FrontEnds, Listening, Pages, request_observers
from .observe import logs
from .observe.metrics import Metrics
from .observe.requests import Watch
from .observe.trace import Observers
from .options import ServerOptions, parse_flags
from .server import _event_loop_runner, memory_budget
from .serving.remote import RemoteCore

log = logging.getLogger("modelserve")

METRICS_PUSH_SECONDS = 1.0


def command(fd: int, share: int, flags: Sequence[str]) -> list[str]:
    """The argv that starts one front-end process on inherited descriptor ``fd``."""
    return [sys.executable, "-m", "modelserve.frontend", f"--handoff_fd={fd}", f"--frontend_share={share}", *flags]


def share_of(total: budget.MemoryBudget, share: int) -> budget.MemoryBudget:
    """One front end's part of the memory budget: 1/``share`` of the total, the same per-request cap
    (but never more than its part)."""
    part = max(total.total // max(share, 1), 1)
    return budget.MemoryBudget(part, min(total.per_request, part))


async def serve(options: ServerOptions, sock: socket.socket, share: int) -> None:
    recording = options.enable_metrics or bool(options.monitoring_config_file)
    metrics = Metrics() if recording else None
    readers, closers = request_observers(options, [metrics] if metrics is not None else [])
    watch = Watch(Observers(readers))
    memory = share_of(memory_budget(options, budget.available_memory()), share)
    core = RemoteCore(memory, memory.total, metrics)
    await core.connect(sock)
    pages = Pages(
        metrics,
        others=core.others,
        tf_metrics_path=tf_metrics_path(options.monitoring_config_file),
        batching=core.manager.state.batching,
        reload=core.reload_config_file,
    )
    frontends = FrontEnds(
        options, core, memory, pages, Listening(reuse_port=True, grpc_on_loop=True, announce=False, watch=watch)
    )
    frontends.configure_security()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await frontends.start()
        engine_gone = loop.create_task(core.closed.wait())
        stopped = loop.create_task(stop.wait())
        pushing = loop.create_task(_push_metrics(core))
        await asyncio.wait([engine_gone, stopped], return_when=asyncio.FIRST_COMPLETED)
        pushing.cancel()
        if stop.is_set():
            await frontends.drain()
            await asyncio.gather(*frontends.stopping(options.drain_grace_seconds))
        else:
            log.error("The engine went away: this front end stops")
            await asyncio.gather(*frontends.stopping(0))
        for task in (engine_gone, stopped):
            task.cancel()
    finally:
        core.close()
        for close in closers:
            close()


async def _push_metrics(core: RemoteCore) -> None:
    while True:
        await asyncio.sleep(METRICS_PUSH_SECONDS)
        core.push_metrics()


def _own_flags(argv: Sequence[str]) -> tuple[int, int, list[str]]:
    fd, share, rest = -1, 1, []
    for arg in argv:
        if arg.startswith("--handoff_fd="):
            fd = int(arg.split("=", 1)[1])
        elif arg.startswith("--frontend_share="):
            share = int(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    if fd < 0:
        raise SystemExit("modelserve.frontend: --handoff_fd is required")
    return fd, share, rest


def main(argv: Sequence[str] | None = None) -> int:
    fd, share, flags = _own_flags(sys.argv[1:] if argv is None else argv)
    options = parse_flags(flags)
    logs.configure(options.log_level, options.log_format)
    sock = socket.socket(fileno=fd)
    try:
        _event_loop_runner()(serve(options, sock, share))
    except ServingError as exc:
        log.error("A front-end process failed to start: %s: %s", exc.code.name, exc)
        return 255
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
