"""Steady traffic to one model while a test changes another: every request must succeed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def steady_traffic(call: Callable[[], None]) -> Iterator[None]:
    """Run ``call`` (one request, checking its answer) over and over on another thread while the block
    runs; on leaving it, no call may have failed and at least one must have run."""
    failures: list[BaseException] = []
    served = [0]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                call()
                served[0] += 1
            except BaseException as exc:  # every failure counts
                failures.append(exc)

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()
    assert not failures, failures[:3]
    assert served[0] > 0
