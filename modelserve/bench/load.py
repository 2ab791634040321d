"""One step of load from one generator process: a closed loop at a concurrency or an open loop at a rate.

Closed loop: ``concurrency`` callers, each sending its next request when its answer is back. Open loop:
requests are due at fixed (constant) or exponential (Poisson) gaps whatever the answers do, and each
latency runs from the time the request was *due*, not from when it went out, so a server (or a
generator) that falls behind shows it as latency instead of hiding it (coordinated omission).

Requests sent during the warm-up are counted apart and left out of the figures. A step ends after
``duration`` seconds or ``requests`` requests, waits for the answers in flight, and stops early when
the share of failures passes ``max_errors``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from .transport import Sender

# Failures before the error threshold is judged: one early failure is not a failed step.
_MIN_JUDGED = 20


@dataclass(frozen=True)
class StepPlan:
    """One process's share of a step: ``concurrency`` callers, or ``rate`` requests per second."""

    concurrency: int = 0
    rate: float = 0.0
    poisson: bool = True
    warmup: float = 1.0
    duration: float = 10.0
    requests: int = 0  # measured requests (0: run for ``duration``)
    max_errors: float = 0.1
    start_at: float = 0.0  # time.time() when the step begins, the same for every process
    connections: int = 256  # open loop: most connections (REST) at once
    seed: int = 0


@dataclass
class StepRecord:
    """What one process saw: latencies (s) of measured successes, failures by kind, and costs."""

    latencies: np.ndarray = field(default_factory=lambda: np.empty(0))
    errors: dict[str, int] = field(default_factory=dict)
    warmup_requests: int = 0
    seconds: float = 0.0  # the measured window: its start to the last measured answer
    cpu_seconds: float = 0.0  # this process's CPU time in the window
    stopped: str = ""  # why the step stopped early ("" when it did not)
    send_lag_p99: float = 0.0  # open loop: how late the generator sent (s, 99th percentile)


class _Tally:
    def __init__(self, plan: StepPlan, start: float) -> None:
        self.plan = plan
        self.measure_from = start + plan.warmup
        self.until = self.measure_from + plan.duration if not plan.requests else float("inf")
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.warmup = 0
        self.issued = 0  # measured requests sent
        self.last = self.measure_from
        self.stopped = ""
        self.cpu_at_start: float | None = None

    def may_send(self, now: float) -> bool:
        if self.stopped or now >= self.until:
            return False
        if now >= self.measure_from:
            if self.cpu_at_start is None:
                self.cpu_at_start = time.process_time()
            if self.plan.requests and self.issued >= self.plan.requests:
                return False
            self.issued += 1
        return True

    def record(self, sent: float, done: float, failure: str | None) -> None:
        if sent < self.measure_from:
            self.warmup += 1
            return
        self.last = max(self.last, done)
        if failure is None:
            self.latencies.append(done - sent)
            return
        self.errors[failure] += 1
        failed = sum(self.errors.values())
        total = failed + len(self.latencies)
        if failed >= _MIN_JUDGED and failed > self.plan.max_errors * total and not self.stopped:
            self.stopped = f"stopped early: {failed} of {total} requests failed (> {self.plan.max_errors:.0%})"

    def result(self, lag: list[float]) -> StepRecord:
        cpu = time.process_time() - (self.cpu_at_start or time.process_time())
        return StepRecord(
            np.asarray(self.latencies),
            dict(self.errors),
            self.warmup,
            max(self.last - self.measure_from, 1e-9),
            cpu,
            self.stopped,
            float(np.percentile(lag, 99)) if lag else 0.0,
        )


async def _wait_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def closed_loop(plan: StepPlan, senders: list[Sender]) -> StepRecord:
    """``len(senders)`` callers, each on its own sender (connection), one request in flight each."""
    await _wait_until(plan.start_at)
    tally = _Tally(plan, time.perf_counter())

    async def caller(sender: Sender) -> None:
        clock = time.perf_counter
        while tally.may_send(sent := clock()):
            failure = await sender.call()
            tally.record(sent, clock(), failure)

    await asyncio.gather(*(caller(s) for s in senders))
    return tally.result([])


async def open_loop(
    plan: StepPlan, sender: Callable[[], Awaitable[Sender]], give_back: Callable[[Sender], None]
) -> StepRecord:
    """Requests due at ``plan.rate`` per second; ``sender()`` lends a sender (waiting when all are busy),
    ``give_back`` returns it."""
    await _wait_until(plan.start_at)
    start = time.perf_counter()
    tally = _Tally(plan, start)
    rng = np.random.default_rng(plan.seed)
    gaps = iter(())
    lag: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(due: float) -> None:
        lent = await sender()
        try:
            failure = await lent.call()
        finally:
            give_back(lent)
        tally.record(due, time.perf_counter(), failure)

    due = start
    while True:
        gap = next(gaps, None)
        if gap is None:  # draw gaps a thousand at a time
            gaps = iter(rng.exponential(1 / plan.rate, 1000) if plan.poisson else np.full(1000, 1 / plan.rate))
            continue
        due += float(gap)
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
        if not tally.may_send(due):
            break
        if due >= tally.measure_from:
            lag.append(time.perf_counter() - due)  # how late the loop itself was (not a wait for a connection)
        task = asyncio.create_task(one(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return tally.result(lag)


class Pool:
    """Senders lent to an open loop's requests: idle ones first, new ones up to ``most``, then a wait."""

    def __init__(self, make: Callable[[], Sender], most: int) -> None:
        self.make = make
        self.free = asyncio.Semaphore(most)
        self.idle: list[Sender] = []

    async def lend(self) -> Sender:
        await self.free.acquire()
        return self.idle.pop() if self.idle else self.make()

    def give_back(self, sender: Sender) -> None:
        self.idle.append(sender)
        self.free.release()

    def close(self) -> None:
        for sender in self.idle:
            sender.close()
