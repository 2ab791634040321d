"""Helpers that ship with the code for tests and benchmarks: a real server on free ports.

``running_server`` starts a real ``Server`` on its own event-loop thread with
ports chosen by the OS, waits until it is ready (no sleeps), and stops it
cleanly afterwards. ``server_process`` starts ``python -m modelserve`` as a
subprocess instead (optionally under ``prlimit`` and ``taskset``) and finds its
ports in its log. Both run ``--frontend_processes=1`` unless the flags say otherwise or the environment
variable ``MODELSERVE_TEST_FRONTEND_PROCESSES`` names another count (how a whole suite is run with
front-end processes: ``MODELSERVE_TEST_FRONTEND_PROCESSES=2 pytest tests/test_rest.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

# The checkout this package was imported from: a server subprocess runs the same code by default.
CHECKOUT = Path(__file__).resolve().parent.parent
FRONTEND_PROCESSES_ENV = "MODELSERVE_TEST_FRONTEND_PROCESSES"


def default_frontend_processes() -> int:
    """The test servers' --frontend_processes: one (not the machine's default, so tests do not depend on
    its CPUs) unless MODELSERVE_TEST_FRONTEND_PROCESSES says otherwise."""
    return int(os.environ.get(FRONTEND_PROCESSES_ENV) or 1)


def frontend_processes_flag() -> str:
    return f"--frontend_processes={default_frontend_processes()}"


class ServerThread:
    """A started server and the loop it runs on."""

    def __init__(self, server: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop

    @property
    def rest_url(self) -> str:
        """``https://localhost:...`` when REST serves TLS (certificates name a host, not an address)."""
        if self.server.rest_tls:
            return f"https://localhost:{self.server.rest_port}"
        return f"http://127.0.0.1:{self.server.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    def settle(self) -> None:
        """With front-end processes: wait until each has the engine's lifecycle state, so that what a test
        changed in-process (a reload, a drain) is what every client sees; in one process, at once."""
        if self.server.engine is not None:
            assert self.call(self.server.engine.publish(30.0, "a test's change")), "a front end did not settle"

    def call(self, coro: Any, timeout: float = 60.0) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@contextlib.contextmanager
def running_server(*flags: str, **values: Any) -> Iterator[ServerThread]:
    """A server started with TF Serving style ``flags`` plus ``name=value`` overrides.

    Ports default to ``-1`` (any free port); polling defaults to off unless given.
    """
    from .options import parse_flags
    from .server import Server

    base = [
        "--port=-1",
        "--rest_api_port=-1",
        "--file_system_poll_wait_seconds=0",
        "--host=127.0.0.1",
        frontend_processes_flag(),
    ]
    options = parse_flags([*base, *flags])
    if values:
        options = options.replace(**values)
    server = Server(options)
    loop = _new_loop()  # the loop the real server runs on (uvloop when installed)
    thread = threading.Thread(target=loop.run_forever, name="modelserve-test-loop", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(120)
        handle = ServerThread(server, loop)
        yield handle
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class ServerStartError(RuntimeError):
    """The server subprocess exited, or did not log both ports in time; the message ends with its log."""


class ServerProcess:
    """A ``python -m modelserve`` subprocess, its ports and its log (stdout and stderr together)."""

    def __init__(self, proc: subprocess.Popen[str], log: Path | None) -> None:
        self.proc = proc
        self.log = log  # the log file, or None: then a thread drains the pipe into ``lines``
        self.lines: list[str] = []
        self.rest_port = 0
        self.grpc_port = 0
        self.reader: threading.Thread | None = None

    def on(self, command: str) -> str:
        """A documented command (TF Serving's ports 8501 and 8500 on localhost) aimed at this server."""
        return command.replace("localhost:8501", f"localhost:{self.rest_port}").replace(
            "localhost:8500", f"localhost:{self.grpc_port}"
        )

    def text(self) -> str:
        """The log so far; all of it once the process has exited."""
        if self.log is not None:
            return self.log.read_text(errors="replace")
        if self.reader is not None and self.proc.poll() is not None:
            self.reader.join(10)  # the pipe's last lines, up to its end
        return "".join(self.lines)


@contextlib.contextmanager
def server_process(
    *flags: str,
    address_space: int | None = None,
    nofile: int | None = None,
    cpus: str | None = None,
    checkout: Path = CHECKOUT,
    log: Path | None = None,
    start_seconds: float = 120.0,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """``python -m modelserve`` from ``checkout`` with TF Serving style ``flags``, ready to serve.

    Ports default to ``-1`` (any free port), found in the server's log; polling defaults to off
    unless given. ``address_space`` and ``nofile`` bound it with ``prlimit`` (an attack the code does
    not bound then fails inside the server, not on the machine), ``cpus`` pins it with
    ``taskset -c``. The log goes to the file ``log`` when given, else a thread drains it into
    ``lines``. It runs in ``cwd`` (default: ``checkout``) with ``env`` added to this environment.
    Raises ``ServerStartError`` when the server exits or does not come up within
    ``start_seconds``; kills it and waits for it on exit.
    """
    limits = [f"--as={address_space}"] if address_space else []
    limits += [f"--nofile={nofile}"] if nofile else []
    command = [
        *(["taskset", "-c", cpus] if cpus else []),
        *(["prlimit", *limits] if limits else []),
        sys.executable,
        "-m",
        "modelserve",
        "--port=-1",
        "--rest_api_port=-1",
        "--host=127.0.0.1",
        "--file_system_poll_wait_seconds=0",
        frontend_processes_flag(),
        *flags,
    ]
    environment = {**os.environ, "PYTHONPATH": str(checkout), **(env or {})}
    with contextlib.ExitStack() as stack:
        out: Any = stack.enter_context(log.open("w")) if log is not None else subprocess.PIPE
        proc = subprocess.Popen(
            command,
            cwd=cwd or checkout,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    server = ServerProcess(proc, log)
    try:
        if proc.stdout is not None:
            server.reader = threading.Thread(target=_drain, args=(proc.stdout, server.lines), daemon=True)
            server.reader.start()
        deadline = time.monotonic() + start_seconds
        while True:
            text = server.text()
            rest = re.search(r"Exporting HTTP/REST API at:localhost:(\d+)", text)
            grpc = re.search(r"Running gRPC ModelServer at [\d.]+:(\d+)", text)
            if rest and grpc:
                server.rest_port, server.grpc_port = int(rest.group(1)), int(grpc.group(1))
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServerStartError(
                    f"the server did not start (exit status {proc.poll()}):\n{server.text()[-2000:]}"
                )
            time.sleep(0.05)
        yield server
    finally:
        proc.kill()
        proc.wait()
        if server.reader is not None:
            server.reader.join(10)
        if proc.stdout is not None:
            proc.stdout.close()


class EchoServable:
    """An in-memory servable for tests: ``serving_default`` returns its input ``x`` as ``y``.

    ``tag`` is added to the output so tests can tell versions apart.
    """

    def __init__(self, tag: float = 0.0) -> None:
        from .dtypes import DType
        from .signatures import DEFAULT_SIGNATURE, Signature, TensorSpec

        spec = TensorSpec("x", DType.DT_FLOAT, (-1,))
        self.tag = tag
        self.closed = False
        self.signatures = {DEFAULT_SIGNATURE: Signature({"x": spec}, {"y": TensorSpec("y", DType.DT_FLOAT, (-1,))})}

    def predict(self, signature: str, inputs: Any, output_filter: Any = ()) -> dict[str, Any]:
        return {"y": inputs["x"] + self.tag}

    def close(self) -> None:
        self.closed = True


def _drain(pipe: IO[str], lines: list[str]) -> None:
    for line in pipe:  # a line at a time, so that text() sees the ports as soon as they are logged
        lines.append(line)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()
