"""A closed-loop gRPC load generator in Python: N requests in flight, spread over client processes.

For machines without h2load (the GPU machine has no package manager). Each process runs one
``grpc.aio`` channel and ``concurrency / processes`` workers, each sending one prebuilt serialized
request after the other (the bytes go out as they are: no serialization in the loop) and counting
answers and latencies once the warm-up is over. Processes are spawned, never forked: the caller may
have started a CUDA runtime, which a forked child cannot use.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass

import numpy as np

PREDICT = "/tensorflow.serving.PredictionService/Predict"


@dataclass
class LoadResult:
    rows_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    first_error: str = ""


def _client(target: str, request: bytes, workers: int, warmup: float, seconds: float) -> tuple[list[float], int, str]:
    """One process: returns latencies (s) of answers inside the measured window, errors, first error."""
    return asyncio.run(_client_loop(target, request, workers, warmup, seconds))


async def _client_loop(
    target: str, request: bytes, workers: int, warmup: float, seconds: float
) -> tuple[list[float], int, str]:
    import grpc

    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        predict = channel.unary_unary(PREDICT)  # no serializers: bytes in, bytes out
        await channel.channel_ready()
        start = time.perf_counter()
        begin, end = start + warmup, start + warmup + seconds
        latencies: list[float] = []
        failures: list[str] = []

        async def worker() -> None:
            while (now := time.perf_counter()) < end:
                try:
                    await predict(request, timeout=60)
                except grpc.aio.AioRpcError as exc:
                    failures.append(f"{exc.code().name}: {exc.details()}")
                    continue
                done = time.perf_counter()
                if begin <= done <= end:  # answers inside the window: its throughput
                    latencies.append(done - now)

        await asyncio.gather(*(worker() for _ in range(workers)))
    return latencies, len(failures), failures[0] if failures else ""


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
    procs = max(1, min(processes, concurrency))
    shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        parts = pool.starmap(_client, [(target, request, n, warmup, seconds) for n in shares])
    latencies = np.array([x for part in parts for x in part[0]])
    errors = sum(part[1] for part in parts)
    first = next((part[2] for part in parts if part[2]), "")
    if not len(latencies):
        return LoadResult(0.0, 0.0, 0.0, errors, first)
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    return LoadResult(len(latencies) * rows / seconds, float(p50), float(p99), errors, first)
