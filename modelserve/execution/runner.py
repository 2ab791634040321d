"""How a loaded version runs requests: straight onto worker threads, or through a batcher.

The choice is made once, when the server starts (a runner factory), so the
request path never asks whether batching is on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import DeadlineExceeded
from ..platforms.servable import Servable
from .request_options import DEFAULT, RequestOptions
from .workers import WorkerPool


class Runner(Protocol):
    async def predict(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str] = (),
        deadline: float | None = None,
        request_options: RequestOptions = DEFAULT,
    ) -> dict[str, np.ndarray]:
        """Outputs for one request; ``deadline`` is on the ``time.monotonic()`` clock.

        ``request_options`` (priority, queue timeout) matter only to runners that queue.
        """
        ...

    def predict_blocking(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str] = (),
        deadline: float | None = None,
        request_options: RequestOptions = DEFAULT,
    ) -> dict[str, np.ndarray]:
        """The same, from a thread that is not the event loop's (the threaded gRPC server's handlers)."""
        ...

    def close(self) -> None:
        """No call is running or will run; free what the runner holds."""
        ...


# Makes the runner of a loaded version: (model name, version, its local folder, servable) -> runner.
# The folder is where the version was loaded from (a local copy for a remote base path), so a
# runner reads per-version files (batching_params.pbtxt) from there, whatever the base path.
RunnerFactory = Callable[[str, int, Path, Servable], Runner]


class DirectRunner:
    """Each request is one call of the servable on a shared worker pool."""

    def __init__(self, servable: Servable, pool: WorkerPool) -> None:
        self._servable = servable
        self._pool = pool

    async def predict(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str] = (),
        deadline: float | None = None,
        request_options: RequestOptions = DEFAULT,
    ) -> dict[str, np.ndarray]:
        servable = self._servable
        return await self._pool.run(lambda: servable.predict(signature, inputs, output_filter), deadline)

    def predict_blocking(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str] = (),
        deadline: float | None = None,
        request_options: RequestOptions = DEFAULT,
    ) -> dict[str, np.ndarray]:
        # The caller's thread is already off the event loop: run inline, no hand-off.
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded("Deadline exceeded")
        return self._servable.predict(signature, inputs, output_filter)

    def close(self) -> None:
        pass
