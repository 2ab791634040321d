"""The batching runner of one loaded version: requests wait in queues and run merged.

``Batcher`` implements the ``Runner`` protocol (``modelserve.execution.runner``), so the
core calls it exactly as it calls the direct runner. It keeps one queue per
signature, input set and output filter, and hands the queues to the shared
``BatchScheduler``.

A request leaves its queue without running when its deadline or its queue
timeout passes first (RESOURCE_EXHAUSTED, TF Serving's text), or when it is
cancelled. Once a batch has taken it, it runs; a deadline that passes then
answers DEADLINE_EXCEEDED and the rows are dropped when the batch ends.

The version's lease stays held while its requests wait, so the manager
retires a version only after its queues have drained: nothing is dropped.
A request cancelled while its rows run (its gRPC call cancelled) lets go of
its lease at once; the batch holds its own references to the model, so a
version retired meanwhile is freed when that batch ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from ...errors import DeadlineExceeded, InvalidArgument, QueueTimeout, Unavailable
from ...observe.trace import UNTRACED, RequestTrace
from ...platforms.servable import MultiInstance, Servable
from ..clock import TimerHeap
from ..request_options import DEFAULT, RequestOptions
from . import rows as tensors
from .metrics import DropReason
from .params import BatchingParameters
from .queue import BatchQueue, Busy, Task
from .scheduler import BatchScheduler

QUEUE_TIMEOUT_MESSAGE = "Run() timeout exceeded while waiting in batching queue"
_QueueKey = tuple[str, tuple[str, ...], tuple[str, ...]]


class Batcher:
    """Runner of one loaded version: ``predict`` awaited on the event loop, or run inline (``run_inline``)
    on a thread with no loop, which then waits for its batch."""

    def __init__(
        self,
        scheduler: BatchScheduler,
        servable: Servable,
        params: BatchingParameters,
        model: str = "",
        version: int = 0,
    ) -> None:
        self._scheduler = scheduler
        self._clock = scheduler.clock
        self._timers = TimerHeap(self._clock)  # deadlines and queue timeouts (event loop only)
        self._servable = servable
        self._params = params
        self._model = model
        self._version = version
        # A model with several instances runs that many batches at once.
        self._busy = Busy(capacity=servable.instance_count if isinstance(servable, MultiInstance) else 1)
        self._queues: dict[_QueueKey, BatchQueue] = {}

    @property
    def params(self) -> BatchingParameters:
        return self._params

    async def predict(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str] = (),
        deadline: float | None = None,
        request_options: RequestOptions = DEFAULT,
        trace: RequestTrace = UNTRACED,
    ) -> dict[str, np.ndarray]:
        loop = asyncio._get_running_loop()
        if loop is None:  # driven inline on a thread of its own (warm-up): wait for the batch here
            return self._wait(signature, inputs, output_filter, deadline, request_options, trace)
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        queue, task = self._submit(signature, inputs, output_filter, deadline, request_options, future, trace)
        if task.expires is not None:
            task.timer = self._timers.call_at(task.expires, self._expire, queue, task, deadline)
        try:
            return await future
        except asyncio.CancelledError:
            self._withdraw(task, queue, "cancelled")
            raise
        finally:
            if task.timer is not None:
                task.timer.cancel()

    def _expire(self, queue: BatchQueue, task: Task, deadline: float | None) -> None:
        """Timer: the task's queue timeout or deadline has come (on the event loop)."""
        task.timer = None
        if task.future.done():
            return
        if self._withdraw(task, queue, "timeout"):
            task.future.set_exception(QueueTimeout(QUEUE_TIMEOUT_MESSAGE))
        elif deadline is None or self._clock.now() >= deadline:
            task.future.set_exception(DeadlineExceeded("Deadline exceeded"))
        else:  # its queue timeout came while it was running: only the deadline counts now
            task.timer = self._timers.call_at(deadline, self._expire, queue, task, deadline)

    def _wait(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str],
        deadline: float | None,
        request_options: RequestOptions,
        trace: RequestTrace,
    ) -> dict[str, np.ndarray]:
        """``predict`` off the event loop: the same queue, timeouts and texts, with the caller's thread
        waiting (event-loop timers cannot reach it)."""
        future: concurrent.futures.Future[dict[str, np.ndarray]] = concurrent.futures.Future()
        queue, task = self._submit(signature, inputs, output_filter, deadline, request_options, future, trace)
        try:
            if task.expires is not None:
                try:
                    return future.result(max(0.0, task.expires - self._clock.now()))
                except concurrent.futures.TimeoutError:
                    if self._withdraw(task, queue, "timeout"):
                        raise QueueTimeout(QUEUE_TIMEOUT_MESSAGE) from None
            wait = None if deadline is None else max(0.0, deadline - self._clock.now())
            return future.result(wait)
        except concurrent.futures.TimeoutError:
            raise DeadlineExceeded("Deadline exceeded") from None
        finally:
            future.cancel()  # a result that comes later is dropped

    def _withdraw(self, task: Task, queue: BatchQueue, reason: DropReason) -> bool:
        """Take ``task`` out of its queue and count it as dropped; False once a batch has taken rows of it."""
        if not self._scheduler.withdraw(task, queue):
            return False
        self._scheduler.metrics.request_dropped(self._model, self._version, reason)
        return True

    def _submit(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str],
        deadline: float | None,
        request_options: RequestOptions,
        future: Any,
        trace: RequestTrace = UNTRACED,
    ) -> tuple[BatchQueue, Task]:
        names = tuple(sorted(inputs))
        key = (signature, names, tuple(output_filter))
        queue = self._queues.get(key) or self._new_queue(key)
        ordered = {name: inputs[name] for name in names}
        rows = tensors.task_rows(ordered)
        now = self._clock.now()
        task = Task(
            ordered,
            rows,
            tensors.shape_key(ordered, self._params.pad_variable_length_inputs),
            self._level(request_options.priority),
            now,
            self._expiry(now, deadline, request_options),
            future,
            trace,
        )
        try:
            self._scheduler.submit(queue, task)
        except Unavailable:
            self._scheduler.metrics.request_dropped(self._model, self._version, "queue_full")
            raise
        return queue, task

    def _new_queue(self, key: _QueueKey) -> BatchQueue:
        queue = BatchQueue(self._servable, key[0], key[2], self._params, self._busy, self._model, self._version)
        # setdefault: two threads may race to create it; one queue wins.
        winner = self._queues.setdefault(key, queue)
        if winner is queue:
            self._scheduler.add_queue(queue)
        return winner

    def _level(self, priority: int) -> int:
        """Index of the request's priority level (0 is level 1)."""
        levels = self._params.priority_levels
        if not levels:
            return 0
        level = priority or self._params.default_priority_level
        if level > levels:
            raise InvalidArgument(
                f"Priority level {level} is out of range: model {self._model} has {levels} priority levels"
            )
        return level - 1

    def _expiry(self, now: float, deadline: float | None, options: RequestOptions) -> float | None:
        timeout = options.queue_timeout if options.queue_timeout is not None else self._params.queue_timeout
        expires = now + timeout if timeout else None
        if deadline is None:
            return expires
        return deadline if expires is None else min(deadline, expires)

    def close(self) -> None:
        """Every lease is released, so every queue is empty: unregister them."""
        for queue in self._queues.values():
            self._scheduler.remove_queue(queue)
        self._queues.clear()
