"""Dynamic batching: requests of one model version wait in bounded queues and run merged.

    BatchingRunners   the manager's runner factory with --enable_batching
    Batcher           the Runner of one loaded version (queues per signature)
    BatchScheduler    num_batch_threads threads shared by every queue, round-robin
    BatchQueue        one queue's rules: admission, when a batch is due, which rows it takes
    BatchingParameters TF Serving's BatchingParameters (+ priority levels, queue timeout)
    BatchMetrics      the metrics hook (NO_METRICS when metrics are off), BatchStats its record
    FakeClock         a clock tests move by hand

docs/batching.md describes the behaviour; tensors.py holds the pure merge,
pad and split functions.
"""

from ..clock import MONOTONIC, Clock, FakeClock, MonotonicClock
from .batcher import QUEUE_TIMEOUT_MESSAGE, Batcher
from .metrics import NO_METRICS, BatchMetrics, BatchStats, NoMetrics
from .params import PER_MODEL_FILE, BatchingParameters
from .queue import BatchQueue
from .runners import BatchingRunners
from .scheduler import BatchScheduler

__all__ = [
    "MONOTONIC",
    "NO_METRICS",
    "PER_MODEL_FILE",
    "QUEUE_TIMEOUT_MESSAGE",
    "BatchMetrics",
    "BatchQueue",
    "BatchScheduler",
    "BatchStats",
    "Batcher",
    "BatchingParameters",
    "BatchingRunners",
    "Clock",
    "FakeClock",
    "MonotonicClock",
    "NoMetrics",
]
