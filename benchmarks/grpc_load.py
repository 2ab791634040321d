"""A closed-loop gRPC load generator in Python: N requests in flight, spread over client processes.

For machines without h2load (the GPU machine has no package manager). It is ``modelserve bench``'s own
load loop (``modelserve/bench/``: the same prebuilt serialized request sent again and again on
``grpc.aio`` channels, no serialization in the loop, processes spawned, never forked, since the caller
may have started a CUDA runtime a forked child cannot use), called with a request this benchmark
built itself.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modelserve.bench.generators import Generators, Job
from modelserve.bench.load import StepPlan

PREDICT = "/tensorflow.serving.PredictionService/Predict"


@dataclass
class LoadResult:
    rows_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    first_error: str = ""


def run(
    target: str,
    request: bytes,
    rows: int,
    concurrency: int,
    seconds: float,
    warmup: float = 2.0,
    processes: int = 4,
) -> LoadResult:
    """``concurrency`` requests of ``rows`` rows in flight for ``seconds`` (after ``warmup``)."""
    job = Job(target, rest=False, raw=request, path=PREDICT, timeout=60.0)
    plan = StepPlan(concurrency=concurrency, warmup=warmup, duration=seconds, max_errors=1.0)  # never stops early
    with Generators(job, max(1, min(processes, concurrency))) as generators:
        record = generators.run(plan)
    errors = sum(record.errors.values())
    first = next(iter(sorted(record.errors)), "")
    if not record.latencies.size:
        return LoadResult(0.0, 0.0, 0.0, errors, first)
    p50, p99 = np.percentile(record.latencies, [50, 99]) * 1000
    return LoadResult(record.latencies.size * rows / record.seconds, float(p50), float(p99), errors, first)
