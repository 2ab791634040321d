"""A thread that takes work off the thread that answered a request: readers of finished requests
(the access log, tracing) queue each record here and return at once."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
BATCH = 1024  # items handed to ``handle`` at once, at most


class Offload(Generic[T]):
    """Calls ``handle`` with batches of what ``put`` queued, on a daemon thread named ``name``.

    ``put`` never blocks (the queue is unbounded: a reader that falls behind costs memory, not
    latency). An error in ``handle`` is logged once and the thread goes on. ``close`` handles what is
    queued, then ends the thread."""

    def __init__(self, name: str, handle: Callable[[list[T]], None]) -> None:
        self._handle = handle
        self._name = name
        self._pending: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._failed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        self._pending.put(item)

    def _run(self) -> None:
        while True:
            batch = [self._pending.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            items = [item for item in batch if item is not None]
            if items:
                try:
                    self._handle(items)
                except Exception:  # a full disk, an exporter's bug: said once, and the thread goes on
                    if not self._failed:
                        self._failed = True
                        log.exception("%s failed (said once)", self._name)
            if len(items) < len(batch):
                return

    def close(self) -> None:
        """Handle what is queued, then end the thread (once)."""
        if self._thread.is_alive():
            self._pending.put(None)
            self._thread.join()
