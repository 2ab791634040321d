"""A front-end process of ``--frontend_processes``: the REST and gRPC front ends over the hand-off.

    python -m modelserve.frontend --handoff_fd=FD --frontend_share=N --ready_fd=R --parent_pid=P [the server's flags]

``FD`` is this process's end of the socket pair to the engine (``execution.handoff.wire.pair``,
inherited); ``N`` the number of front-end processes, each getting 1/N of the memory budget;
``R`` a pipe on which it writes ``processes.READY`` once its listeners serve (-1: none); ``P``
the parent it dies with (0: none). ``processes.command`` builds this argv.
The listeners are ``frontends.FrontEnds``, as in the single process, around a
``serving.remote.RemoteCore``; the ports are the ones the flags name (the parent resolves
``-1``), bound with SO_REUSEPORT so the kernel spreads connections over the processes.
This process logs no "Exporting"/"Running gRPC" lines: the parent does, once all serve.

It runs until SIGTERM/SIGINT (drain: not ready, then in-flight requests finish within
--drain_grace_seconds) or until the engine's socket closes (the engine is gone: exit at once).
Starting, restarting and stopping these processes is ``processes.FrontEndProcesses``'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence

from . import budget
from .api.metrics import tf_metrics_path
from .errors import ServingError
from .frontends import FrontEnds, Listening, Pages, request_observers
from .observe import logs
from .observe.metrics import Metrics
from .observe.requests import Watch
from .observe.trace import Observers
from .options import ServerOptions, parse_flags
from .processes import READY, child_args, share_of
from .server import _event_loop_runner, memory_budget
from .serving.remote import RemoteCore

log = logging.getLogger("modelserve")

METRICS_PUSH_SECONDS = 1.0


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies (Linux), and exit now if the parent already did: it may
    have gone between the fork and this call, and then no signal will come."""
    if parent_pid <= 0:
        return
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning(
                "PR_SET_PDEATHSIG failed (errno %d): only the engine socket's end stops this process",
                ctypes.get_errno(),
            )
    if os.getppid() != parent_pid:
        raise SystemExit(f"modelserve.frontend: the parent (pid {parent_pid}) is gone")


def announce_ready(fd: int) -> None:
    if fd >= 0:
        os.write(fd, READY)
        os.close(fd)


async def serve(
    options: ServerOptions, sock: socket.socket, share: int, ready: Callable[[], None] = lambda: None
) -> None:
    recording = options.enable_metrics or bool(options.monitoring_config_file)
    metrics = Metrics() if recording else None
    readers, closers = request_observers(options, [metrics] if metrics is not None else [])
    watch = Watch(Observers(readers))
    memory = share_of(memory_budget(options, budget.available_memory()), share)
    core = RemoteCore(memory, memory.total)
    await core.connect(sock)
    pages = Pages(
        metrics,
        whole=core.scrape,
        tf_metrics_path=tf_metrics_path(options.monitoring_config_file),
        batching=core.manager.state.batching,
        reload=core.reload_config_file,
    )
    listening = Listening(reuse_port=True, grpc_on_loop=True, announce=False, share=share, watch=watch)
    frontends = FrontEnds(options, core, memory, pages, listening)
    frontends.configure_security()
    core.figures = frontends.figures  # what the engine asks of this process when another one is scraped
    core.on_drain = frontends.drain  # the engine's drain: this process's gRPC health follows at once
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await frontends.start()
        ready()
        engine_gone = loop.create_task(core.closed.wait())
        stopped = loop.create_task(stop.wait())
        pushing = loop.create_task(_push_figures(core))
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


async def _push_figures(core: RemoteCore) -> None:
    while True:
        await asyncio.sleep(METRICS_PUSH_SECONDS)
        core.push_figures()


def main(argv: Sequence[str] | None = None) -> int:
    args = child_args(sys.argv[1:] if argv is None else argv)
    die_with_parent(args.parent_pid)
    options = parse_flags(args.flags)
    logs.configure(options.log_level, options.log_format)
    sock = socket.socket(fileno=args.handoff_fd)
    try:
        _event_loop_runner()(serve(options, sock, args.share, lambda: announce_ready(args.ready_fd)))
    except ServingError as exc:
        log.error("A front-end process failed to start: %s: %s", exc.code.name, exc)
        return 255
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
