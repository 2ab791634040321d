"""Helpers that ship with the code for tests and benchmarks: a real server on free ports.

``running_server`` starts a real ``Server`` on its own event-loop thread with
ports chosen by the OS, waits until it is ready (no sleeps), and stops it
cleanly afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any


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

    base = ["--port=-1", "--rest_api_port=-1", "--file_system_poll_wait_seconds=0", "--host=127.0.0.1"]
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


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()
