"""The shared batch scheduler: ``num_batch_threads`` threads serving every queue of every model.

As TF Serving's ``SharedBatchScheduler``: a free thread takes the next due
batch, visiting the queues round-robin so that one busy model cannot starve
the others, merges its requests, runs the servable once, splits the outputs
and hands each request its rows. Results reach the event loop with one
wake-up per batch.

Thread safety: one lock guards every queue and task; merging, inference and
splitting run outside it. With ``threads=0`` no thread starts and the
caller drives the scheduler with ``step`` and ``execute`` (tests, with a fake
clock).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from typing import Any

import numpy as np

from ...budget import MemoryBudget
from ...errors import InvalidArgument
from ..clock import MONOTONIC, Clock
from . import rows as tensors
from .metrics import NO_METRICS, BatchMetrics, BatchStats
from .queue import Batch, BatchQueue, Task, TaskState

log = logging.getLogger(__name__)

# (future, ok, result or error); the future is asyncio's or concurrent.futures'.
_Settled = tuple[Any, bool, Any]


class BatchScheduler:
    def __init__(
        self,
        threads: int,
        name: str = "batch_threads",
        clock: Clock = MONOTONIC,
        metrics: BatchMetrics = NO_METRICS,
        budget: MemoryBudget | None = None,
    ) -> None:
        if threads < 0:
            raise InvalidArgument(f"num_batch_threads must be positive; was {threads}")
        self._size = threads
        self._name = name
        self._clock = clock
        self._metrics = metrics
        # The merged copy of a batch is the server's own: charged while it runs (the rows' requests
        # have charged their own inputs already).
        self._budget = budget or MemoryBudget.unlimited()
        # Taken directly (a C call, not Condition's Python wrapper): the request path takes it each time.
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._queues: list[BatchQueue] = []
        self._next = 0  # round-robin position in _queues
        self._running = 0  # batches taken and not finished
        self._idle = 0  # threads waiting for work
        self._closed = False
        self._threads: list[threading.Thread] = []

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def metrics(self) -> BatchMetrics:
        return self._metrics

    # ---- queues and requests (event loop side) --------------------------------------------

    def add_queue(self, queue: BatchQueue) -> None:
        with self._lock:
            self._queues.append(queue)
            if not self._threads and self._size and not self._closed:
                self._start()

    def remove_queue(self, queue: BatchQueue) -> None:
        with self._lock:
            index = self._queues.index(queue)
            del self._queues[index]
            if index < self._next:
                self._next -= 1
            if self._next >= len(self._queues):
                self._next = 0

    def submit(self, queue: BatchQueue, task: Task) -> None:
        """Queue ``task``; raises the queue's admission errors (task too large, queue full)."""
        with self._lock:
            was_empty = not queue.tasks
            queue.admit(task)
            # Wake a thread when a batch is due now, or when a new timeout starts ticking.
            if self._idle and (was_empty or queue.ready(self._clock.now())):
                self._cv.notify()

    def withdraw(self, task: Task, queue: BatchQueue) -> bool:
        """Take ``task`` out of its queue (timeout, cancellation); False once a batch has taken rows of it."""
        with self._lock:
            started = task.state is TaskState.TAKEN
            queue.drop(task)
            return not started

    def depths(self) -> list[tuple[str, int, str, int]]:
        """(model, version, signature, requests waiting) per queue (queues of one signature added up)."""
        with self._lock:
            waiting: dict[tuple[str, int, str], int] = {}
            for queue in self._queues:
                key = (queue.model, queue.version, queue.signature)
                waiting[key] = waiting.get(key, 0) + queue.tasks
        return [(*key, n) for key, n in waiting.items()]

    # ---- batches (thread side) ------------------------------------------------------------

    def step(self) -> Batch | None:
        """Take the next due batch, if a thread is free for it (``threads=0``: always)."""
        with self._lock:
            return self._take_locked(self._clock.now())

    def _take_locked(self, now: float) -> Batch | None:
        if self._size and self._running >= self._size:
            return None
        count = len(self._queues)
        for offset in range(count):
            index = (self._next + offset) % count
            queue = self._queues[index]
            if not queue.ready(now, flush=self._closed):
                continue
            batch = queue.take(now, self._size - self._running if self._size else None)
            if batch is None:
                continue
            self._next = (index + 1) % count
            self._running += 1
            return batch
        return None

    def _wait_seconds(self, now: float) -> float | None:
        due = [d for q in self._queues if (d := q.due()) is not None]
        return max(0.0, min(due) - now) if due else None

    def execute(self, batch: Batch) -> None:
        """Run ``batch`` on this thread and hand every request its rows (or the error)."""
        queue = batch.queue
        start = self._clock.now()
        outcome = _run(batch, self._budget)
        end = self._clock.now()
        for task, _, _ in batch.pieces:  # before any answer goes back: its front end reads the trace
            task.trace.ran(start, end, batch.padded_rows)
        error, outputs = (outcome, []) if isinstance(outcome, BaseException) else (None, outcome)
        with self._lock:
            self._running -= 1
            queue.finished(batch)
            settled = _settle(batch, outputs, error)
        _deliver(settled)
        self._report(batch, start, end, error is None)

    def _report(self, batch: Batch, start: float, end: float, ok: bool) -> None:
        queue = batch.queue
        self._metrics.batch_done(
            BatchStats(
                model=queue.model,
                version=queue.version,
                signature=queue.signature,
                rows=batch.rows,
                padded_rows=batch.padded_rows,
                task_rows=tuple(batch.sizes),
                queue_seconds=tuple(start - t.enqueued for t, _, _ in batch.pieces),
                run_seconds=end - start,
                ok=ok,
            )
        )

    def run_ready(self) -> int:
        """Run every batch due now on the calling thread (``threads=0``); returns how many ran."""
        ran = 0
        while (batch := self.step()) is not None:
            self.execute(batch)
            ran += 1
        return ran

    # ---- threads --------------------------------------------------------------------------

    def _start(self) -> None:
        for i in range(self._size):
            thread = threading.Thread(target=self._work, name=f"{self._name}_{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self.execute(batch)
            except Exception:  # a bug must not kill a batch thread
                log.exception("Batch thread failed")
            del batch  # an idle thread holds nothing of the last batch

    def _next_batch(self) -> Batch | None:
        with self._lock:
            while True:
                now = self._clock.now()
                batch = self._take_locked(now)
                if batch is not None:
                    if self._idle:  # the batch may have left rows for another instance (BatchQueue.take)
                        self._cv.notify()
                    return batch
                if self._closed and not any(q.tasks for q in self._queues):
                    return None
                self._idle += 1
                self._cv.wait(self._wait_seconds(now))
                self._idle -= 1

    def close(self) -> None:
        """Run what still waits (without waiting for timeouts), then let the threads end."""
        with self._lock:
            self._closed = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join()


def _run(batch: Batch, budget: MemoryBudget) -> list[dict[str, np.ndarray]] | BaseException:
    """Each piece's outputs, or the error for every request of the batch.

    The error is returned, not kept in the caller's frame: its traceback holds this frame (and
    the merged inputs), so an error that were also one of its locals would make a cycle that
    keeps the batch's arrays alive until the garbage collector runs.
    """
    queue = batch.queue
    try:
        pieces = [(t.inputs, a, b) for t, a, b in batch.pieces]
        pad = queue.params.pad_variable_length_inputs
        # The merged copy is extra memory on top of the rows' own (charged to their requests).
        with budget.account(cap=budget.total) as account:
            account.charge(tensors.merged_bytes(pieces, batch.padded_rows, pad), "merge a batch")
            merged = tensors.merge(pieces, batch.padded_rows, pad)
            result = queue.servable.predict(queue.signature, merged, queue.output_filter)
            del merged
        tensors.check_outputs(result, batch.padded_rows)
        return tensors.split(result, batch.sizes)
    except BaseException as exc:  # handed to every request of the batch
        return exc


def _settle(batch: Batch, outputs: list[dict[str, np.ndarray]], error: BaseException | None) -> list[_Settled]:
    """Per finished request, its result or error. Called under the scheduler's lock."""
    settled: list[_Settled] = []
    for index, (task, first, end) in enumerate(batch.pieces):
        if task.future.done():
            continue
        if error is not None:
            settled.append((task.future, False, error))
            continue
        if first == 0 and end == task.rows:
            settled.append((task.future, True, outputs[index]))
            continue
        task.parts[first] = outputs[index]
        task.done_rows += end - first
        if task.done_rows == task.rows:
            parts = [task.parts[k] for k in sorted(task.parts)]
            settled.append((task.future, True, tensors.join(parts)))
    return settled


def _deliver(settled: list[_Settled]) -> None:
    """Complete futures: asyncio ones with one loop wake-up per loop, thread ones directly."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Settled]] = {}
    for item in settled:
        future = item[0]
        if isinstance(future, asyncio.Future):
            by_loop.setdefault(future.get_loop(), []).append(item)
        else:
            _complete([item])
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_complete, items)


def _complete(items: list[_Settled]) -> None:
    for future, ok, value in items:
        if future.done():
            continue
        try:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        except (asyncio.InvalidStateError, concurrent.futures.InvalidStateError):
            pass  # its waiter gave up in the meantime
