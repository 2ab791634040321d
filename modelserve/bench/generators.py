"""Generator processes: one step's load from this process, or shared out among ``processes`` of them.

Each step opens its connections afresh (their set-up falls in the warm-up) on a new event loop:
uvloop for HTTP, asyncio's own for ``grpc.aio``. With several processes, each gets an even share of
the callers (or of the rate, or of the request count), all start at the same wall-clock time, and
their records are put together.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from .load import Pool, StepPlan, StepRecord, closed_loop, open_loop
from .transport import GrpcChannels, HttpSender, Sender


@dataclass(frozen=True)
class Job:
    """What every request of a run is: HTTP bytes to ``target``, or a gRPC ``path`` and ``body``."""

    target: str
    rest: bool
    raw: bytes  # the whole HTTP request, or the serialized gRPC message
    path: str = ""  # gRPC method
    token: str | None = None
    timeout: float = 30.0
    channels: int = 0  # gRPC channels (0: one per 8 callers, at most 16)


async def _step(job: Job, plan: StepPlan) -> StepRecord:
    callers = plan.concurrency or plan.connections
    channels: GrpcChannels | None = None
    if job.rest:

        def make() -> Sender:
            return HttpSender(job.target, job.raw, job.timeout)

    else:
        channels = GrpcChannels(job.target, job.path, job.channels or min(16, max(1, (callers + 7) // 8)))

        def make() -> Sender:
            assert channels is not None
            return channels.sender(job.raw, job.timeout, job.token)

    try:
        if plan.concurrency:
            senders = [make() for _ in range(plan.concurrency)]
            try:
                return await closed_loop(plan, senders)
            finally:
                for sender in senders:
                    sender.close()
        pool = Pool(make, plan.connections)
        try:
            return await open_loop(plan, pool.lend, pool.give_back)
        finally:
            pool.close()
    finally:
        if channels is not None:
            await channels.close()


def run_step(job: Job, plan: StepPlan) -> StepRecord:
    """One step's load from this process, on a loop of its own."""
    if job.rest:
        try:
            import uvloop
        except ImportError:  # Windows: asyncio's own loop
            pass
        else:
            return uvloop.run(_step(job, plan))
    return asyncio.run(_step(job, plan))


def _serve(job: Job, pipe: Connection) -> None:
    pipe.send(True)  # imported and ready
    while True:
        plan = pipe.recv()
        if plan is None:
            return
        pipe.send(run_step(job, plan))


def shares(plan: StepPlan, processes: int) -> list[StepPlan]:
    """``plan`` split among ``processes``: callers, rate and request count shared out evenly (processes
    that would get no callers are left out)."""
    plans = []
    for i in range(processes):
        concurrency = plan.concurrency // processes + (1 if i < plan.concurrency % processes else 0)
        requests = plan.requests // processes + (1 if i < plan.requests % processes else 0)
        if plan.concurrency and not concurrency:
            continue
        plans.append(
            replace(plan, concurrency=concurrency, rate=plan.rate / processes, requests=requests, seed=plan.seed + i)
        )
    return plans


def merge(records: list[StepRecord]) -> StepRecord:
    errors: Counter[str] = Counter()
    for record in records:
        errors.update(record.errors)
    return StepRecord(
        np.concatenate([r.latencies for r in records]) if records else np.empty(0),
        dict(errors),
        sum(r.warmup_requests for r in records),
        max((r.seconds for r in records), default=0.0),
        max((r.cpu_seconds for r in records), default=0.0),
        "; ".join(sorted({r.stopped for r in records if r.stopped})),
        max((r.send_lag_p99 for r in records), default=0.0),
    )


class Generators:
    """``processes`` generator processes serving steps of ``job``; one is this process itself."""

    def __init__(self, job: Job, processes: int) -> None:
        self.job = job
        self.processes = max(1, processes)
        self.pipes: list[Connection] = []
        self.children: list[Any] = []

    def __enter__(self) -> Generators:
        context = multiprocessing.get_context("spawn")  # grpc and fork do not mix
        for _ in range(self.processes - 1):
            mine, theirs = context.Pipe()
            child = context.Process(target=_serve, args=(self.job, theirs), daemon=True)
            child.start()
            self.pipes.append(mine)
            self.children.append(child)
        for pipe in self.pipes:
            pipe.recv()
        return self

    def run(self, plan: StepPlan, lead: float = 0.3) -> StepRecord:
        """Run ``plan`` across every process; all start ``lead`` seconds from now (0.5 s more when
        other processes take part, for them to hear of it)."""
        plan = replace(plan, start_at=time.time() + lead + (0.5 if self.pipes else 0.0))
        plans = shares(plan, self.processes)
        for pipe, share in zip(self.pipes, plans[1:], strict=False):
            pipe.send(share)
        records = [run_step(self.job, plans[0])]
        records += [pipe.recv() for pipe in self.pipes[: len(plans) - 1]]
        return merge(records)

    def __exit__(self, *exc: object) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for child in self.children:
            child.join(10)
            if child.is_alive():
                child.kill()
