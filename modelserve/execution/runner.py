"""How a loaded version runs requests: straight onto worker threads, or through a batcher.

The choice is made once, when the server starts (a runner factory), so the
request path never asks whether batching is on.

A runner's ``predict`` is awaited on the event loop, or driven by
``run_inline`` on a thread of its own with no loop running (the threaded gRPC
server's handlers, warm-up on a loader thread). There it cannot suspend, so it
does the work in place: the direct runner calls the model on the caller's
thread (a hand-off would only add a wait), the batcher waits for its batch.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from ..observe.trace import UNTRACED, RequestTrace
from ..platforms.servable import Servable
from .request_options import DEFAULT, RequestOptions
from .workers import WorkerPool

T = TypeVar("T")


class Runner(Protocol):
    def predict(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str] = (),
        deadline: float | None = None,
        request_options: RequestOptions = DEFAULT,
        trace: RequestTrace = UNTRACED,
    ) -> Awaitable[dict[str, np.ndarray]]:
        """Outputs for one request; ``deadline`` is on the ``time.monotonic()`` clock.

        ``request_options`` (priority, queue timeout) matter only to runners that queue; ``trace``
        is told when the model ran for the request (``RequestTrace.ran``).
        """
        ...

    def close(self) -> None:
        """No call is running or will run; free what the runner holds."""
        ...


# Makes the runner of a loaded version: (model name, version, its local folder, servable) -> runner.
# The folder is where the version was loaded from (a local copy for a remote base path), so a
# runner reads per-version files (batching_params.pbtxt) from there, whatever the base path.
RunnerFactory = Callable[[str, int, Path, Servable], Runner]


def run_inline(call: Awaitable[T]) -> T:
    """``call``'s result, computed on this thread, which runs no event loop.

    The runners do their work in place here, so the call finishes without
    suspending; one that suspends all the same is closed (its leases unwind)
    and reported as the bug it is.
    """
    steps = call.__await__()
    try:
        steps.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    steps.close()
    raise RuntimeError("a call run inline waited for an event loop")


class DirectRunner:
    """Each request is one call of the servable on a shared worker pool (inline off the loop)."""

    def __init__(self, servable: Servable, pool: WorkerPool) -> None:
        self._servable = servable
        self._pool = pool

    def predict(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str] = (),
        deadline: float | None = None,
        request_options: RequestOptions = DEFAULT,
        trace: RequestTrace = UNTRACED,
    ) -> Awaitable[dict[str, np.ndarray]]:
        # Not a coroutine itself: the pool's is the only frame a request awaits here.
        servable = self._servable

        def call() -> dict[str, np.ndarray]:
            start = time.monotonic()
            try:
                return servable.predict(signature, inputs, output_filter)
            finally:
                trace.ran(start, time.monotonic())  # on the worker thread, before the answer is handed back

        return self._pool.run(call, deadline)

    def close(self) -> None:
        pass
