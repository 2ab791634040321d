"""The front-end processes of ``--frontend_processes`` of 2 or more, run by the engine (the parent).

The parent holds the models, the lifecycle and the batch queues (``serving.engine.Engine`` around
its ``ServingCore``); each child (``python -m modelserve.frontend``, see ``command``) answers REST
and gRPC on the same ports and hands its tensors to the engine through shared memory.

spawn, then start: the parent binds each port without listening, with SO_REUSEPORT (a port of -1
becomes a real one that every child binds too, and stays reserved while a child restarts) and
spawns the children with their socket pair and a readiness pipe before it loads the models, so
that their interpreters start while the models load (half a second of imports each); a child
waits for the engine's first state before it opens a port. ``start`` attaches each child to the
engine once the models serve, and the server counts as started once every child serves. Then it
logs TF Serving's "Running gRPC ModelServer" and "Exporting HTTP/REST API" lines, once.

supervision: a child that exits while the server runs is logged and started again after a
backoff; its clients' connections were closed with it (they see a reset, never a hang) and the
engine cancelled its requests. More than ``MOST_EXITS`` exits of one slot within
``EXIT_WINDOW_SECONDS`` is a crash loop: that slot is given up (logged); once every slot is,
``failed`` is set and the server stops.

children die with the parent: each sets PR_SET_PDEATHSIG and checks that its parent is still the
one that started it (``frontend.die_with_parent``), and exits when its engine socket closes. The
arenas are memfd files, so no shared-memory name outlives the processes.

stop: every child gets SIGTERM, finishes its in-flight requests within --drain_grace_seconds (the
engine still serves them) and exits; one that outlives that by ``STOP_MARGIN_SECONDS`` is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import budget
from .errors import Unavailable, Unknown
from .execution.handoff import wire
from .frontends import reserve, rest_port_taken
from .options import ServerOptions, command_line
from .platforms.cpus import CpuBudget
from .serving.engine import Engine, Link

log = logging.getLogger("modelserve")

# Provisional, until benchmarks/cores.py measures it: the hand-off costs the engine CPU per request,
# so below 4 CPUs a second process only takes CPU from inference; above, half the CPUs decode and
# encode and half run the engine and the models.
FEW_CPUS = 4
MOST_PROCESSES = 8

READY_SECONDS = 120.0  # a child's start: the interpreter, imports, listeners (slow on a busy machine)
FIRST_BACKOFF_SECONDS = 0.5  # before the first restart of a slot; doubled for each recent exit
EXIT_WINDOW_SECONDS = 60.0
MOST_EXITS = 5  # exits of one slot within the window before it is given up
STOP_MARGIN_SECONDS = 10.0  # past --drain_grace_seconds before a child that has not exited is killed
READY = b"ready\n"  # what a child writes on its readiness pipe once its listeners serve
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # children run this very code


def count(requested: int, cpus: CpuBudget) -> tuple[int, str]:
    """How many front-end processes to run, and why (for the start-up log): ``requested`` when above 0,
    else the rule above from the CPUs this process may use."""
    if requested > 0:
        return requested, "--frontend_processes"
    if cpus.count < FEW_CPUS:
        return 1, f"{cpus.describe()}; one process below {FEW_CPUS} CPUs"
    chosen = min(cpus.count // 2, MOST_PROCESSES)
    return chosen, f"{cpus.describe()}; half of them, at most {MOST_PROCESSES}"


def share_of(total: budget.MemoryBudget, share: int) -> budget.MemoryBudget:
    """One front end's part of the memory budget: 1/``share`` of the total, the same per-request cap
    (but never more than its part)."""
    part = max(total.total // max(share, 1), 1)
    return budget.MemoryBudget(part, min(total.per_request, part))


# ---- a child's command line: built here, read by ``frontend.main`` -----------------------------------


@dataclass(frozen=True)
class ChildArgs:
    """``handoff_fd``: the child's end of the socket pair; ``share``: the number of front ends (each gets
    1/share of the memory budget); ``ready_fd``: where it writes ``READY`` (-1: nowhere);
    ``parent_pid``: the process it must die with (0: none); ``flags``: the server's flags."""

    handoff_fd: int
    share: int = 1
    ready_fd: int = -1
    parent_pid: int = 0
    flags: list[str] = field(default_factory=list)


def command(args: ChildArgs) -> list[str]:
    """The argv of one front-end process."""
    return [
        sys.executable,
        "-m",
        "modelserve.frontend",
        f"--handoff_fd={args.handoff_fd}",
        f"--frontend_share={args.share}",
        f"--ready_fd={args.ready_fd}",
        f"--parent_pid={args.parent_pid}",
        *args.flags,
    ]


def child_args(argv: Sequence[str]) -> ChildArgs:
    """``command``'s argv (after the module name) read back; SystemExit without --handoff_fd."""
    own = {"--handoff_fd": -1, "--frontend_share": 1, "--ready_fd": -1, "--parent_pid": 0}
    flags = []
    for arg in argv:
        name, _, value = arg.partition("=")
        if name in own:
            own[name] = int(value)
        else:
            flags.append(arg)
    if own["--handoff_fd"] < 0:
        raise SystemExit("modelserve.frontend: --handoff_fd is required")
    return ChildArgs(own["--handoff_fd"], own["--frontend_share"], own["--ready_fd"], own["--parent_pid"], flags)


# ---- the parent's side ---------------------------------------------------------------------------


@dataclass
class Ports:
    """The real ports every child serves (None: that listener is off)."""

    grpc: int | None = None
    rest: int | None = None
    metrics: int | None = None


@dataclass(eq=False)
class Child:
    """One front-end process: its slot (0..N-1), the process, the engine's end of its socket pair and,
    once attached, the engine's link over it, its readiness pipe's reading end, and its exit status once
    it exited."""

    slot: int
    proc: subprocess.Popen[bytes]
    engine_end: socket.socket
    ready_fd: int
    exited: asyncio.Future[int]
    link: Link | None = None


class FrontEndProcesses:
    """``count`` front-end processes around an engine, started, restarted and stopped on the running loop.
    The constructor does no I/O."""

    def __init__(self, options: ServerOptions, count: int) -> None:
        self.options = options
        self.engine: Engine | None = None  # given by start, once the models serve
        self.count = count
        self.ports = Ports()
        self.children: dict[int, Child] = {}  # by slot: the processes running now
        self.failed = asyncio.Event()  # every slot was given up (crash loops): the server must stop
        self._held: list[socket.socket] = []
        self._exits: dict[int, list[float]] = {slot: [] for slot in range(count)}
        self._restarts: set[asyncio.Task[None]] = set()
        self._given_up: set[int] = set()
        self._supervising = False

    def spawn(self) -> None:
        """Reserve the ports and start every child's process: each imports, then waits for the engine."""
        self._reserve()
        for slot in range(self.count):
            self._spawn(slot)

    async def start(self, engine: Engine) -> None:
        """Attach every child spawned to ``engine`` and wait until each serves; Unavailable if one does not
        (the ones started are stopped)."""
        self.engine = engine
        try:
            children = list(self.children.values())
            for child in children:
                self._attach(child)
            await asyncio.gather(*(self._ready(child) for child in children))
        except BaseException:
            await self.stop(0)
            raise
        self._supervising = True
        self._announce()

    def _reserve(self) -> None:
        """Hold each port the children serve, with the single process's errors when one is taken."""
        o = self.options
        if o.port != 0:
            try:
                self.ports.grpc = self._hold(o.port)
            except OSError as exc:
                raise Unknown(
                    f"Failed to BuildAndStart gRPC server: cannot listen on {o.host}:{o.port}: {exc.strerror or exc}"
                ) from None
        if o.rest_api_port != 0 and not (o.rest_api_port == o.port > 0):  # the same port: REST is skipped
            try:
                self.ports.rest = self._hold(o.rest_api_port)
            except OSError as exc:
                raise rest_port_taken(o.rest_api_port, exc) from None
        if o.enable_metrics and o.metrics_port != 0:
            try:
                self.ports.metrics = self._hold(o.metrics_port)
            except OSError as exc:
                raise Unavailable(f"--metrics_port {o.metrics_port}: {exc.strerror or exc}") from None

    def _hold(self, port: int) -> int:
        sock = reserve(self.options.host, max(port, 0))
        self._held.append(sock)
        return int(sock.getsockname()[1])

    def _flags(self, slot: int) -> list[str]:
        """The server's flags with the real ports; gRPC's UNIX socket is served by the first child only (a
        path has one listener)."""
        options = self.options.replace(
            port=self.ports.grpc or 0,
            rest_api_port=self.ports.rest or self.options.rest_api_port,
            metrics_port=self.ports.metrics or 0,
            grpc_socket_path=self.options.grpc_socket_path if slot == 0 else "",
        )
        return command_line(options)

    def _spawn(self, slot: int) -> Child:
        """Start the child of ``slot``; on the loop's thread, since the child's PR_SET_PDEATHSIG follows the
        thread that forked it."""
        loop = asyncio.get_running_loop()
        engine_end, child_end = wire.pair()
        ready_r, ready_w = os.pipe()
        args = ChildArgs(child_end.fileno(), self.count, ready_w, os.getpid(), self._flags(slot))
        path = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        try:
            # A session of its own: a terminal's Ctrl-C reaches the parent alone, which drains and stops
            # the children in order.
            proc = subprocess.Popen(
                command(args),
                pass_fds=(child_end.fileno(), ready_w),
                env={**os.environ, "PYTHONPATH": path},
                start_new_session=True,
            )
        except BaseException:
            engine_end.close()
            os.close(ready_r)
            raise
        finally:
            child_end.close()
            os.close(ready_w)
        child = Child(slot, proc, engine_end, ready_r, loop.create_future())
        pidfd = os.pidfd_open(proc.pid)
        loop.add_reader(pidfd, self._exited, child, pidfd)
        self.children[slot] = child
        log.info("Front-end process %d started (pid %d)", slot, proc.pid)
        return child

    def _attach(self, child: Child) -> None:
        assert self.engine is not None, "start gives the engine"
        child.link = self.engine.attach(child.engine_end)

    async def _ready(self, child: Child) -> None:
        """Wait for ``child``'s READY; Unavailable (and the child killed) if it exits or takes too long."""
        loop = asyncio.get_running_loop()
        line: asyncio.Future[bytes] = loop.create_future()

        def readable() -> None:
            if not line.done():
                line.set_result(os.read(child.ready_fd, len(READY)))

        loop.add_reader(child.ready_fd, readable)
        try:
            either: list[asyncio.Future[Any]] = [line, child.exited]
            await asyncio.wait(either, timeout=READY_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(child.ready_fd)
            os.close(child.ready_fd)
        if line.done() and line.result() == READY:
            return
        if not line.done() and not child.exited.done():
            child.proc.kill()
            raise Unavailable(f"front-end process {child.slot} did not serve within {READY_SECONDS:g} s")
        status = await child.exited  # the pipe's end came first: the exit is on its way
        raise Unavailable(f"front-end process {child.slot} exited ({describe(status)}) before it served")

    def _exited(self, child: Child, pidfd: int) -> None:
        """``child``'s process ended (the loop saw its pidfd): reap it, let the engine forget it, restart it
        unless the server is stopping."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(pidfd)
        os.close(pidfd)
        status = child.proc.wait()
        if child.link is not None:
            child.link.close()
        else:  # it ended before the engine took it
            child.engine_end.close()
        if self.children.get(child.slot) is child:
            del self.children[child.slot]
        if not child.exited.done():
            child.exited.set_result(status)
        if self._supervising:
            log.error(
                "Front-end process %d (pid %d) exited (%s); its clients' connections closed with it",
                child.slot,
                child.proc.pid,
                describe(status),
            )
            self._restart_later(child.slot)

    def _restart_later(self, slot: int) -> None:
        now = time.monotonic()
        exits = [t for t in self._exits[slot] if now - t < EXIT_WINDOW_SECONDS] + [now]
        self._exits[slot] = exits
        if len(exits) > MOST_EXITS:
            log.error(
                "Front-end process %d exited %d times within %g s: not started again; %d of %d front ends serve",
                slot,
                len(exits),
                EXIT_WINDOW_SECONDS,
                len(self.children),
                self.count,
            )
            self._given_up.add(slot)
            if len(self._given_up) == self.count:
                self.failed.set()
            return
        delay = FIRST_BACKOFF_SECONDS * 2 ** (len(exits) - 1)
        log.info("Front-end process %d starts again in %g s", slot, delay)
        task = asyncio.get_running_loop().create_task(self._restart(slot, delay))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart(self, slot: int, delay: float) -> None:
        await asyncio.sleep(delay)
        child = self._spawn(slot)
        self._attach(child)
        try:
            await self._ready(child)
        except Unavailable as exc:  # its exit comes through _exited, which tries again
            log.error("%s", exc)
            return
        log.info("Front-end process %d serves again (pid %d)", slot, child.proc.pid)

    def _announce(self) -> None:
        """TF Serving's lines, once every child serves (tests and scripts wait for them)."""
        o = self.options
        if self.ports.grpc is not None:
            log.info("Running gRPC ModelServer at %s:%d ...", o.host, self.ports.grpc)
        if o.grpc_socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", o.grpc_socket_path)
        if self.ports.rest is not None:
            log.info("Exporting HTTP/REST API at:localhost:%d ...", self.ports.rest)

    async def stop(self, grace: float) -> None:
        """SIGTERM to every child, each finishing its in-flight requests within ``grace`` seconds; a child
        still running ``STOP_MARGIN_SECONDS`` later is killed. Then the ports are let go."""
        self._supervising = False
        for task in list(self._restarts):
            task.cancel()
        children = list(self.children.values())
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
        if children:
            _, running = await asyncio.wait([c.exited for c in children], timeout=grace + STOP_MARGIN_SECONDS)
            for child in children:
                if not child.exited.done():
                    log.error("Front-end process %d did not exit %g s after SIGTERM: killed", child.slot, grace)
                    child.proc.kill()
            if running:
                await asyncio.wait(running)
        for sock in self._held:
            sock.close()
        self._held = []


def describe(status: int) -> str:
    """A child's exit status in words: ``status 3``, ``killed by SIGKILL``."""
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-status).name}"
    return f"status {status}"
