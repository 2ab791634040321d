"""One batch queue: which requests wait, when a batch is due, and which rows it takes.

A queue belongs to one loaded version, signature, input set and output
filter. It is a state machine without threads or clocks of its own: the
scheduler calls it under its lock with the current time, so tests can drive
it step by step.

Batches are formed late, when a batch thread is free to run one: a batch
takes the waiting requests in priority order (level 1 first), oldest first
within a level, up to ``max_execution_batch_size`` rows; when several instances
are idle (with batch threads free for them), only its share of the waiting
rows, so that they split the waiting load and run side by side. A batch is due when

1. it is full, or ``batch_timeout_micros`` is 0 (TF Serving's rules), or
2. the oldest waiting request has waited ``batch_timeout_micros``, or
3. the platform is idle (fewer batches of this version running or about to
   run than it has instances: one, unless its placement gives it several)
   and as many rows wait as an instance's share of the load: the rows the
   previous batch took plus those running beside it, divided by the
   instances (with one instance running one batch at a time: the previous
   batch's size). At low load that is one request, which then runs at once
   instead of waiting for the timeout; under a steady load it is the load's
   batch size per instance, so the queue neither waits the timeout out nor
   runs a batch of one while the rest are on their way, and several
   instances stay busy side by side instead of one taking every waiting row
   while the others wait for as many again.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import InvalidArgument, QueueFull
from ...observe.trace import UNTRACED, RequestTrace
from ...platforms.servable import Servable
from .params import BatchingParameters

# Requests skipped for a different shape before a batch stops looking further.
_SCAN_LIMIT = 1024


class TaskState(enum.Enum):
    QUEUED = "queued"  # no row taken yet
    TAKEN = "taken"  # some or all rows are in batches
    DROPPED = "dropped"  # timed out or cancelled before it started


class Task:
    """One request. Its mutable fields belong to the scheduler's lock."""

    __slots__ = (
        "done_rows",
        "enqueued",
        "expires",
        "future",
        "inputs",
        "key",
        "level",
        "parts",
        "rows",
        "state",
        "taken",
        "timer",
        "trace",
    )

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        key: tuple[Any, ...],
        level: int,
        enqueued: float,
        expires: float | None,
        future: Any,
        trace: RequestTrace = UNTRACED,
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.key = key
        self.level = level
        self.enqueued = enqueued
        self.expires = expires  # no row may start after this (deadline or queue timeout)
        self.future = future  # asyncio.Future or concurrent.futures.Future
        self.state = TaskState.QUEUED
        self.taken = 0
        self.done_rows = 0
        self.parts: dict[int, dict[str, np.ndarray]] = {}
        self.timer: Any = None
        self.trace = trace  # told when its rows ran (the last batch that ran some)


@dataclass
class Busy:
    """Batches of one servable in flight (taken and not finished), shared by its queues.

    ``capacity``: how many batches the servable runs at once (its instances).
    """

    batches: int = 0
    capacity: int = 1
    rows: int = 0  # rows of those batches


@dataclass
class Batch:
    queue: BatchQueue
    pieces: list[tuple[Task, int, int]]  # (task, first row, end row)
    rows: int
    padded_rows: int

    @property
    def sizes(self) -> list[int]:
        """Rows of each piece, in batch order."""
        return [end - first for _, first, end in self.pieces]


class BatchQueue:
    """Waiting requests of one (version, signature, inputs, outputs). Not thread-safe: the scheduler locks."""

    def __init__(
        self,
        servable: Servable,
        signature: str,
        output_filter: Collection[str],
        params: BatchingParameters,
        busy: Busy,
        model: str = "",
        version: int = 0,
    ) -> None:
        self.servable = servable
        self.signature = signature
        self.output_filter = tuple(output_filter)
        self.params = params
        self.model = model
        self.version = version
        self.busy = busy
        levels = max(1, params.priority_levels)
        self._levels: list[collections.deque[Task]] = [collections.deque() for _ in range(levels)]
        self.rows = 0  # rows waiting, not yet in a batch
        self.tasks = 0  # requests with rows waiting
        self.expected = 1  # an instance's share of the load: the eager rule's target

    # ---- admission ------------------------------------------------------------------------

    def admit(self, task: Task) -> None:
        """Queue ``task`` or refuse it with TF Serving's errors."""
        params = self.params
        if task.rows > params.max_batch_size:
            raise InvalidArgument(
                f"Task size {task.rows} is larger than maximum input batch size {params.max_batch_size}"
            )
        if self.rows + task.rows > params.max_enqueued_rows:
            raise self._full(task)
        self._levels[task.level].append(task)
        self.rows += task.rows
        self.tasks += 1

    def _full(self, task: Task) -> QueueFull:
        params = self.params
        batches = params.enqueued_batches(self.rows)
        if not params.enable_large_batch_splitting:
            return QueueFull(
                "The batch scheduling queue to which this task was submitted is full; currently "
                f"{batches} batches enqueued and max_enqueued_batches is {params.max_enqueued_batches}"
            )
        size = params.execution_batch_size
        open_rows = self.rows - (batches - 1) * size
        return QueueFull(
            "The batch scheduling queue to which this task was submitted is full; task size is "
            f"{task.rows} but scheduling capacity is only {max(0, params.max_enqueued_rows - self.rows)} "
            f"(num_enqueued_batches={batches}, max_enqueued_batches={params.max_enqueued_batches}, "
            f"open_batch_size={open_rows}, max_execution_batch_size={size})"
        )

    def drop(self, task: Task) -> None:
        """Take back the rows of ``task`` that no batch has taken (timeout, cancellation)."""
        if task.state is TaskState.DROPPED:
            return
        left = task.rows - task.taken
        if task.state is TaskState.QUEUED or left:
            self.rows -= left
            self.tasks -= 1
        if task.state is TaskState.QUEUED:
            task.inputs = {}  # its arrays are freed now, though the task may wait in the queue a while
        task.state = TaskState.DROPPED

    # ---- when ---------------------------------------------------------------------------------

    def ready(self, now: float, flush: bool = False) -> bool:
        """Whether a batch is due now (see the module's rules); ``flush``: due if anything waits."""
        if not self.tasks:
            return False
        idle = self.busy.batches < self.busy.capacity
        return (idle and self.rows >= self.expected) or self.due_by_tf_rules(now, flush)

    def due_by_tf_rules(self, now: float, flush: bool = False) -> bool:
        """TF Serving's rules alone (1 and 2): full, no timeout, or the timeout has passed."""
        if not self.tasks:
            return False
        params = self.params
        if flush or params.batch_timeout_micros == 0 or self.rows >= params.execution_batch_size:
            return True
        oldest, started = self._head()
        # The rest of a split request that has started runs without waiting again.
        return started or (oldest is not None and now >= oldest + params.batch_timeout)

    def due(self) -> float | None:
        """When the batch timeout makes a batch due (None: nothing waits)."""
        oldest = self._head()[0] if self.tasks else None
        return None if oldest is None else oldest + self.params.batch_timeout

    def _head(self) -> tuple[float | None, bool]:
        """Arrival of the oldest waiting request, and whether a split request has rows waiting."""
        oldest: float | None = None
        started = False
        for level in self._levels:
            while level and level[0].state is TaskState.DROPPED:
                level.popleft()
            if level:
                head = level[0]
                started = started or head.state is TaskState.TAKEN
                if oldest is None or head.enqueued < oldest:
                    oldest = head.enqueued
        return oldest, started

    # ---- taking a batch -----------------------------------------------------------------------

    def take(self, now: float, threads: int | None = None) -> Batch | None:
        """Form the next batch from the waiting rows (None if every waiting request has expired).

        ``threads``: batch threads free to run one (None: no limit). When several instances
        are idle and threads are free for them, the batch takes only its share of the waiting
        rows (whole requests, at least one, none that would take it past its share), so that
        the others start on the rest at once instead of one instance taking everything while
        the others idle.
        """
        limit = self.params.execution_batch_size
        busy = self.busy
        idle = busy.capacity - busy.batches if threads is None else min(threads, busy.capacity - busy.batches)
        share = limit if idle <= 1 else min(limit, -(-self.rows // idle))
        pieces: list[tuple[Task, int, int]] = []
        key: tuple[Any, ...] | None = None
        rows = 0
        for level in self._levels:
            rows, key = self._fill(level, pieces, rows, key, limit, share, now)
            if rows >= share:
                break
        if not pieces:
            return None
        self.expected = min(limit, -(-(rows + busy.rows) // busy.capacity))
        busy.batches += 1
        busy.rows += rows
        return Batch(self, pieces, rows, self.params.padded_size(rows))

    def _fill(
        self,
        level: collections.deque[Task],
        pieces: list[tuple[Task, int, int]],
        rows: int,
        key: tuple[Any, ...] | None,
        limit: int,
        share: int,
        now: float,
    ) -> tuple[int, tuple[Any, ...] | None]:
        skipped = 0
        holes = False
        for task in level:
            if task.state is TaskState.DROPPED:
                continue
            if task.expires is not None and now >= task.expires and task.state is TaskState.QUEUED:
                self.drop(task)  # its timer will answer it; never start it
                continue
            if key is None:
                key = task.key
            elif task.key != key:
                skipped += 1
                if skipped > _SCAN_LIMIT:
                    break
                continue
            if share < limit and rows and rows + task.rows - task.taken > share:
                break  # the rest is another idle instance's share
            take = self._take_rows(task, limit - rows)
            if take < 0:
                break  # does not fit and may not be split: it opens the next batch
            pieces.append((task, task.taken, task.taken + take))
            rows += take
            task.taken += take
            task.state = TaskState.TAKEN
            if task.taken == task.rows:
                self.tasks -= 1
                holes = holes or skipped > 0
            self.rows -= take
            if rows >= share:
                break
        self._compact(level, holes)
        return rows, key

    def _take_rows(self, task: Task, free: int) -> int:
        left = task.rows - task.taken
        if left <= free:
            return left
        if self.params.enable_large_batch_splitting and free > 0:
            return free
        return -1

    @staticmethod
    def _compact(level: collections.deque[Task], holes: bool) -> None:
        while level and _gone(level[0]):
            level.popleft()
        if holes:
            kept = [t for t in level if not _gone(t)]
            level.clear()
            level.extend(kept)

    def finished(self, batch: Batch) -> None:
        self.busy.batches -= 1
        self.busy.rows -= batch.rows


def _gone(task: Task) -> bool:
    """Nothing of ``task`` waits any more."""
    return task.state is TaskState.DROPPED or (task.state is TaskState.TAKEN and task.taken == task.rows)
