"""What the metrics pages show, recorded as it happens into plain structures (``Metrics``).

One recording feeds both expositions (``observe.prometheus``): modelserve's own
``/metrics`` and TF Serving's ``:tensorflow:serving:*`` page. A finished request
costs one lock, one dict lookup by its labels and a few ``bisect`` calls; nothing
of prometheus-client runs on the request path (its ``labels()`` costs
microseconds per call). The page is rendered from a ``snapshot`` at scrape time.

The structures are plain counts and bucket lists with the same buckets
everywhere, so snapshots of several processes add up (``Snapshot.merge``).
"""

from __future__ import annotations

import copy
import threading
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from ..errors import Code
from .trace import RequestTrace

# TF Serving's latency buckets, µs: 10·1.8^k, 33 of them (request_latency, runtime_latency); ours in seconds.
LATENCY_BUCKETS = tuple(10 * 1.8**k / 1e6 for k in range(33))
# TF Serving's batching queue buckets, µs: 100·1.2^k, 52 of them (batching_session:queuing_latency).
QUEUE_BUCKETS = tuple(100 * 1.2**k / 1e6 for k in range(52))
# Batch sizes and padding rows: powers of two up to 8192 (TF's input/processed_batch_size).
ROWS_BUCKETS = tuple(float(2**k) for k in range(14))
# Load and unload times, seconds.
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

# (model, version, signature, protocol, api): one request series; labels stay bounded because the
# core fills model/version/signature only with names that exist.
RequestKey = tuple[str, int | None, str, str, str]
VersionKey = tuple[str, int, str]  # (model, version, signature)


class BatchStats(Protocol):
    """What ``Metrics.batch_done`` reads of an executed batch (``execution.batching.metrics.BatchStats``)."""

    @property
    def model(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def signature(self) -> str: ...
    @property
    def padded_rows(self) -> int: ...
    @property
    def padding(self) -> int: ...
    @property
    def task_rows(self) -> tuple[int, ...]: ...
    @property
    def queue_seconds(self) -> tuple[float, ...]: ...


class Histogram:
    """Counts per bucket (the last one: above every bound) and the sum of what was observed."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # a value equal to a bound is in its bucket (le)
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """Prometheus's buckets: how many were at most each bound, then all of them (+Inf)."""
        out, running = [], 0
        for n in self.counts:
            running += n
            out.append(running)
        return out

    def merge(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total


class RequestSeries:
    """One request key's figures: answers by code, latency (successful and failed apart, since TF
    Serving's request_latency counts only successful ones), queue wait, model time, rows."""

    __slots__ = ("codes", "failed", "ok", "queue", "rows", "run")

    def __init__(self) -> None:
        self.codes: dict[Code, int] = {}
        self.ok = Histogram(LATENCY_BUCKETS)
        self.failed = Histogram(LATENCY_BUCKETS)
        self.queue = Histogram(QUEUE_BUCKETS)
        self.run = Histogram(LATENCY_BUCKETS)
        self.rows = 0

    def merge(self, other: RequestSeries) -> None:
        for code, n in other.codes.items():
            self.codes[code] = self.codes.get(code, 0) + n
        for mine, theirs in ((self.ok, other.ok), (self.failed, other.failed), (self.queue, other.queue)):
            mine.merge(theirs)
        self.run.merge(other.run)
        self.rows += other.rows


class BatchSeries:
    """One batcher's (model, version, signature) executed batches."""

    __slots__ = ("padding", "sizes")

    def __init__(self) -> None:
        self.sizes = Histogram(ROWS_BUCKETS)  # rows per executed batch (padded: what ran)
        self.padding = Histogram(ROWS_BUCKETS)

    def merge(self, other: BatchSeries) -> None:
        self.sizes.merge(other.sizes)
        self.padding.merge(other.padding)


@dataclass
class Snapshot:
    """A copy of everything recorded, taken under the lock; what the pages render. Snapshots of several
    processes merge into one (``merge``)."""

    requests: dict[RequestKey, RequestSeries] = field(default_factory=dict)
    rejected: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, reason)
    batches: dict[VersionKey, BatchSeries] = field(default_factory=dict)
    # TF Serving's batching_session figures (no labels but the queue's thread pool and execution size).
    batch_queue: dict[str, Histogram] = field(default_factory=dict)  # thread pool name -> task waits
    task_sizes: Histogram = field(default_factory=lambda: Histogram(ROWS_BUCKETS))  # rows per request
    padding_by_size: dict[int, Histogram] = field(default_factory=dict)  # execution batch size -> padding
    wrapped_runs: int = 0  # requests that ran in batches
    loads: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, ok|error)
    load_seconds: dict[str, Histogram] = field(default_factory=dict)
    unloads: dict[str, int] = field(default_factory=dict)
    unload_seconds: dict[str, Histogram] = field(default_factory=dict)
    load_attempts: dict[tuple[str, str], int] = field(default_factory=dict)  # (path, success|fail)
    load_micros: dict[str, int] = field(default_factory=dict)  # path -> µs spent loading

    def merge(self, other: Snapshot) -> None:
        for key, series in other.requests.items():
            _merged(self.requests, key, series)
        for where, batch in other.batches.items():
            _merged(self.batches, where, batch)
        for pool, hist in other.batch_queue.items():
            self.batch_queue.setdefault(pool, Histogram(QUEUE_BUCKETS)).merge(hist)
        for size, hist in other.padding_by_size.items():
            self.padding_by_size.setdefault(size, Histogram(ROWS_BUCKETS)).merge(hist)
        for name in ("load_seconds", "unload_seconds"):
            mine: dict[str, Histogram] = getattr(self, name)
            for model, hist in getattr(other, name).items():
                mine.setdefault(model, Histogram(LOAD_BUCKETS)).merge(hist)
        for name in ("rejected", "loads", "unloads", "load_attempts", "load_micros"):
            counts = getattr(self, name)
            for key, n in getattr(other, name).items():
                counts[key] = counts.get(key, 0) + n
        self.task_sizes.merge(other.task_sizes)
        self.wrapped_runs += other.wrapped_runs


@dataclass
class Scrape:
    """What a metrics page shows at one scrape: the recording, the requests in flight by protocol, the memory
    budget (total and in use, bytes) and the batch queues' depths ((model, version, signature, waiting)).
    With front-end processes each process has its own figures and the engine adds them up (``add``) into
    the whole server's: counts and what is in flight add; the total and the depths are the engine's."""

    snapshot: Snapshot = field(default_factory=Snapshot)
    inflight: dict[str, int] = field(default_factory=dict)
    budget_total: int = 0
    budget_used: int = 0
    depths: tuple[tuple[str, int, str, int], ...] = ()

    def add(self, other: Scrape) -> None:
        """Another process's figures, into these (its total and depths are not: they are the server's)."""
        self.snapshot.merge(other.snapshot)
        for protocol, n in other.inflight.items():
            self.inflight[protocol] = self.inflight.get(protocol, 0) + n
        self.budget_used += other.budget_used


_K = TypeVar("_K")
_S = TypeVar("_S", RequestSeries, BatchSeries)


def _merged(into: dict[_K, _S], key: _K, series: _S) -> None:
    mine = into.get(key)
    if mine is None:
        into[key] = copy.deepcopy(series)
    else:
        mine.merge(series)


class Metrics:
    """The recorder: an ``observe.trace.Observer`` (finished requests), the batcher's ``BatchMetrics``
    (executed batches) and the manager's ``LifecycleEvents`` (loads, unloads). Thread-safe: every
    write takes one lock, held for a few dict and list operations."""

    def __init__(self, thread_pool_name: str = "") -> None:
        self._lock = threading.Lock()
        self._data = Snapshot()
        self.thread_pool_name = thread_pool_name  # the batch threads' name (TF's queuing_latency label)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return copy.deepcopy(self._data)

    # ---- requests (Observer) ---------------------------------------------------------------

    def finished(self, trace: RequestTrace) -> None:
        if not trace.protocol:
            return  # not an API request (a metrics scrape, a health probe): no series of its own
        key = (trace.model, trace.version, trace.signature, trace.protocol, trace.api)
        code = trace.code
        seconds = trace.seconds
        queued, ran = trace.queue_seconds, trace.run_seconds
        with self._lock:
            data = self._data
            series = data.requests.get(key)
            if series is None:
                series = data.requests[key] = RequestSeries()
            series.codes[code] = series.codes.get(code, 0) + 1
            (series.ok if code is Code.OK else series.failed).observe(seconds)
            if queued is not None:
                series.queue.observe(queued)
            if ran is not None:
                series.run.observe(ran)
            if code is Code.OK:
                series.rows += trace.rows
            if trace.reason:
                rejected = (trace.model, trace.reason)
                data.rejected[rejected] = data.rejected.get(rejected, 0) + 1

    # ---- batches (execution.batching.BatchMetrics) ----------------------------------------------

    def batch_done(self, stats: BatchStats) -> None:
        key = (stats.model, stats.version, stats.signature)
        with self._lock:
            data = self._data
            batch = data.batches.get(key)
            if batch is None:
                batch = data.batches[key] = BatchSeries()
            batch.sizes.observe(stats.padded_rows)
            batch.padding.observe(stats.padding)
            queue = data.batch_queue.get(self.thread_pool_name)
            if queue is None:
                queue = data.batch_queue[self.thread_pool_name] = Histogram(QUEUE_BUCKETS)
            for wait in stats.queue_seconds:
                queue.observe(wait)
            for rows in stats.task_rows:
                data.task_sizes.observe(rows)
            padding = data.padding_by_size.get(stats.padded_rows)
            if padding is None:
                padding = data.padding_by_size[stats.padded_rows] = Histogram(ROWS_BUCKETS)
            padding.observe(stats.padding)
            data.wrapped_runs += len(stats.task_rows)

    def request_dropped(self, model: str, version: int, reason: str) -> None:
        pass  # counted from the request's trace (its reason), with every other refusal

    # ---- loads and unloads (lifecycle.events.LifecycleEvents) -----------------------------------

    def loaded(self, model: str, version: int, path: str, ok: bool, seconds: float) -> None:
        with self._lock:
            data = self._data
            outcome = (model, "ok" if ok else "error")
            data.loads[outcome] = data.loads.get(outcome, 0) + 1
            data.load_seconds.setdefault(model, Histogram(LOAD_BUCKETS)).observe(seconds)
            attempt = (path, "success" if ok else "fail")
            data.load_attempts[attempt] = data.load_attempts.get(attempt, 0) + 1
            data.load_micros[path] = data.load_micros.get(path, 0) + round(seconds * 1e6)

    def unloaded(self, model: str, version: int, seconds: float) -> None:
        with self._lock:
            data = self._data
            data.unloads[model] = data.unloads.get(model, 0) + 1
            data.unload_seconds.setdefault(model, Histogram(LOAD_BUCKETS)).observe(seconds)
