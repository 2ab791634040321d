"""The batch queue's rules under open-loop traffic: a discrete-event simulation on a fake clock.

    python benchmarks/batching_sim.py [--seconds=60] [--rates=100,500,1000,1600] [--timeouts=10,100]

Requests arrive as a Poisson process (independent clients, unlike the benchmarks' closed loop where
each client waits for its answer) and go through the real ``Batcher``/``BatchScheduler``/
``BatchQueue`` with ``threads=0``; one batch thread runs a single-instance model whose batch takes
``A + B * rows`` seconds of simulated time (defaults: 6 ms + 0.45 ms per row, about the benchmark
MLP on two cores). For each arrival rate and ``batch_timeout_micros`` it prints the latency (arrival
to answer) mean / p50 / p99 for three rules for when a partial batch runs:

* modelserve's (docs/batching.md): when full, at the timeout, or when the model is idle and as many
  rows wait as its share of the load (the previous batch's size here);
* TF Serving's: when full or at the timeout;
* greedy: as soon as the model is idle (TF Serving's rule with ``batch_timeout_micros: 0``).

No sockets, threads or sleeps: a minute of traffic simulates in seconds, so a rule can be tried
here before the real benchmarks.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import random
import statistics
import sys
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modelserve.dtypes import DType
from modelserve.execution.batching import Batcher, BatchingParameters, BatchScheduler, FakeClock
from modelserve.execution.batching import params as batching_params
from modelserve.execution.batching.queue import BatchQueue
from modelserve.execution.request_options import DEFAULT
from modelserve.signatures import DEFAULT_SIGNATURE, Signature, TensorSpec

Ready = Callable[[BatchQueue, float, bool], bool]


class Echo:
    """A model whose rows are independent; its run time is simulated, not spent."""

    def __init__(self) -> None:
        spec = TensorSpec("x", DType.DT_FLOAT, (-1, 1))
        self.signatures = {DEFAULT_SIGNATURE: Signature({"x": spec}, {"y": TensorSpec("y", DType.DT_FLOAT, (-1, 1))})}

    def predict(
        self, signature: str, inputs: Mapping[str, np.ndarray], output_filter: Collection[str] = ()
    ) -> dict[str, np.ndarray]:
        return {"y": inputs["x"]}

    def close(self) -> None:
        pass


def greedy_ready(queue: BatchQueue, now: float, flush: bool = False) -> bool:
    """Whatever waits, as soon as the model is idle (or full, or at the timeout)."""
    return queue.due_by_tf_rules(now, flush) or (queue.tasks > 0 and queue.busy.batches < queue.busy.capacity)


def simulate(
    rule: Ready | None, rate: float, timeout: float, seconds: float, a: float, b: float, seed: int = 0
) -> list[float]:
    """Latencies (seconds) of every request answered in ``seconds`` of Poisson traffic at ``rate``."""
    original = BatchQueue.ready
    if rule is not None:
        BatchQueue.ready = rule  # type: ignore[method-assign,assignment]
    try:
        clock = FakeClock()
        scheduler = BatchScheduler(0, clock=clock)
        params = batching_params.validate(
            BatchingParameters(max_batch_size=128, batch_timeout_micros=int(timeout * 1e6), max_enqueued_batches=1000)
        )
        batcher = Batcher(scheduler, Echo(), params)
        rng = random.Random(seed)
        start = clock.now()
        next_arrival = start + rng.expovariate(rate)
        running: tuple[object, float] | None = None
        arrived: dict[int, float] = {}
        latencies: list[float] = []
        row = np.zeros((1, 1), np.float32)
        while True:
            now = clock.now()
            if running is None:
                batch = scheduler.step()
                if batch is not None:
                    running = (batch, now + a + b * batch.rows)
            events = [next_arrival]
            if running is not None:
                events.append(running[1])
            elif (wait := scheduler._wait_seconds(now)) is not None:
                events.append(now + wait)
            at = min(events)
            if at > start + seconds:
                return latencies
            clock.advance(max(0.0, at - now))
            if running is not None and at >= running[1]:
                batch, end = running
                running = None
                scheduler.execute(batch)  # type: ignore[arg-type]
                latencies.extend(end - arrived.pop(id(task.future)) for task, _, _ in batch.pieces)  # type: ignore[attr-defined]
            elif at == next_arrival:
                future: concurrent.futures.Future[dict[str, np.ndarray]] = concurrent.futures.Future()
                batcher._submit(DEFAULT_SIGNATURE, {"x": row}, (), None, DEFAULT, future)
                arrived[id(future)] = clock.now()
                next_arrival = clock.now() + rng.expovariate(rate)
    finally:
        BatchQueue.ready = original  # type: ignore[method-assign]


def summary(latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    return f"{statistics.mean(ms):6.1f} / {ms[len(ms) // 2]:6.1f} / {ms[int(len(ms) * 0.99)]:6.1f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rates", default="100,500,1000,1600", help="arrivals per second")
    parser.add_argument("--timeouts", default="10,100", help="batch_timeout_micros values, in ms")
    parser.add_argument("--a", type=float, default=0.006, help="seconds per batch")
    parser.add_argument("--b", type=float, default=0.00045, help="seconds per row")
    args = parser.parse_args()
    print(
        f"batch run time {args.a * 1000:g} ms + {args.b * 1000:g} ms per row, max_batch_size 128; "
        "latency mean / p50 / p99 ms"
    )
    print("| timeout ms | arrivals/s | modelserve | TF Serving (timeout only) | greedy (run when idle) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for timeout in (float(t) / 1000 for t in args.timeouts.split(",")):
        for rate in (float(r) for r in args.rates.split(",")):
            cells = [
                summary(simulate(rule, rate, timeout, args.seconds, args.a, args.b))
                for rule in (None, BatchQueue.due_by_tf_rules, greedy_ready)
            ]
            print(f"| {timeout * 1000:g} | {rate:g} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
