"""Batching parameters: TF Serving's ``BatchingParameters`` text file, its defaults and its checks.

A file that TF Serving reads parses here unchanged (``max_batch_size { value: 128 }``:
the scalar fields are protobuf wrapper types, so "unset" differs from 0).
Three fields numbered from 1000 are modelserve's own (priority levels and a
default queue timeout); TF Serving's parser rejects a file that uses them.

Validation follows TF Serving (``bundle_factory_util.h``, ``SharedBatchScheduler``),
with its messages, so that a file TF Serving refuses is refused here too.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ...errors import InvalidArgument
from ...platforms import cpus
from ...protos import pb
from ...protos.text import parse_text, read_text_proto

# Name of the per-version file read with --enable_per_model_batching_parameters.
PER_MODEL_FILE = "batching_params.pbtxt"
DEFAULT_POOL_NAME = "batch_threads"
# TF Serving names the pool this way when --enable_batching comes without a file.
FLAGS_ONLY_POOL_NAME = "model_server_batch_threads"


@dataclass(frozen=True)
class BatchingParameters:
    """One queue's options plus the shared pool's size and name (TF Serving's defaults).

    ``max_execution_batch_size`` is the largest batch run; it equals
    ``max_batch_size`` unless large-batch splitting is on and sets it lower.
    ``max_enqueued_batches`` counts batches waiting, not running.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=cpus.available)  # TF: port::MaxParallelism()
    thread_pool_name: str = DEFAULT_POOL_NAME
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0  # 0: max_batch_size
    # modelserve's own: 0 priority levels means requests' priorities are ignored.
    priority_levels: int = 0
    default_priority_level: int = 1
    queue_timeout_micros: int = 0  # 0: a request waits as long as its deadline allows

    @property
    def execution_batch_size(self) -> int:
        """The largest batch that runs (rows, before padding to an allowed size)."""
        return self.max_execution_batch_size or self.max_batch_size

    @property
    def batch_timeout(self) -> float:
        return self.batch_timeout_micros / 1e6

    @property
    def queue_timeout(self) -> float | None:
        return self.queue_timeout_micros / 1e6 if self.queue_timeout_micros > 0 else None

    @property
    def max_enqueued_rows(self) -> int:
        return self.max_enqueued_batches * self.execution_batch_size

    def padded_size(self, rows: int) -> int:
        """The smallest allowed batch size holding ``rows`` (``rows`` when none is set)."""
        for size in self.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows

    def enqueued_batches(self, rows: int) -> int:
        """How many batches ``rows`` queued rows make (TF's ``num_enqueued_batches``)."""
        return max(1, math.ceil(rows / self.execution_batch_size))


def from_proto(message: Any, pool_name: str = DEFAULT_POOL_NAME) -> BatchingParameters:
    """A parsed ``tensorflow.serving.BatchingParameters`` message, validated."""

    def wrapped(field: str, default: Any) -> Any:
        return getattr(message, field).value if message.HasField(field) else default

    splitting = bool(wrapped("enable_large_batch_splitting", False))
    max_batch_size = int(wrapped("max_batch_size", BatchingParameters.max_batch_size))
    params = BatchingParameters(
        max_batch_size=max_batch_size,
        batch_timeout_micros=int(wrapped("batch_timeout_micros", 0)),
        max_enqueued_batches=int(wrapped("max_enqueued_batches", BatchingParameters.max_enqueued_batches)),
        num_batch_threads=int(wrapped("num_batch_threads", cpus.available())),
        thread_pool_name=str(wrapped("thread_pool_name", pool_name)),
        allowed_batch_sizes=tuple(int(s) for s in message.allowed_batch_sizes),
        pad_variable_length_inputs=bool(message.pad_variable_length_inputs),
        enable_large_batch_splitting=splitting,
        # TF: with splitting and no max_execution_batch_size, it is max_batch_size.
        max_execution_batch_size=int(wrapped("max_execution_batch_size", max_batch_size)) if splitting else 0,
        priority_levels=int(wrapped("priority_levels", 0)),
        default_priority_level=int(wrapped("default_priority_level", 1)),
        queue_timeout_micros=int(wrapped("queue_timeout_micros", 0)),
    )
    return validate(params)


def validate(params: BatchingParameters) -> BatchingParameters:
    """TF Serving's checks and messages; returns the parameters as TF would use them."""
    if params.num_batch_threads < 1:
        raise InvalidArgument(f"num_batch_threads must be positive; was {params.num_batch_threads}")
    if params.max_batch_size <= 0:
        raise InvalidArgument(f"input_batch_size_limit must be positive; was {params.max_batch_size}")
    if params.batch_timeout_micros < 0:
        raise InvalidArgument(f"batch_timeout_micros must be non-negative; was {params.batch_timeout_micros}")
    params = _check_queue_length(params)
    _check_splitting(params)
    _check_allowed_sizes(params)
    _check_extensions(params)
    return params


def _check_queue_length(params: BatchingParameters) -> BatchingParameters:
    enqueued = params.max_enqueued_batches
    if enqueued == 0 and not params.enable_large_batch_splitting:
        # TF rewrites 0 to 1 here: low-traffic models in the wild rely on it.
        return replace(params, max_enqueued_batches=1)
    if enqueued <= 0:
        raise InvalidArgument(f"max_enqueued_batches must be positive; was {enqueued}")
    return params


def _check_splitting(params: BatchingParameters) -> None:
    if not params.enable_large_batch_splitting:
        return
    if params.max_execution_batch_size <= 0:
        raise InvalidArgument(f"max_execution_batch_size must be positive; was {params.max_execution_batch_size}")
    if params.max_batch_size < params.max_execution_batch_size:
        raise InvalidArgument(
            "When enable_large_batch_splitting is true, input_batch_size_limit must be "
            "greater than or equal to max_execution_batch_size."
        )


def _check_allowed_sizes(params: BatchingParameters) -> None:
    sizes = params.allowed_batch_sizes
    if not sizes:
        return
    if sizes[0] <= 0:
        raise InvalidArgument(f"allowed_batch_sizes entries must be positive; was {sizes[0]}")
    if any(b <= a for a, b in itertools.pairwise(sizes)):
        raise InvalidArgument("allowed_batch_sizes entries must be monotonically increasing")
    if params.enable_large_batch_splitting:
        if sizes[-1] != params.max_execution_batch_size:
            raise InvalidArgument(
                "Last entry in allowed_batch_sizes must be equal to max_execution_batch_size; "
                f"last entry was {sizes[-1]}; expected {params.max_execution_batch_size}"
            )
    elif sizes[-1] != params.max_batch_size:
        raise InvalidArgument(
            "Last entry in allowed_batch_sizes must match max_batch_size; "
            f"last entry was {sizes[-1]}; expected {params.max_batch_size}"
        )


def _check_extensions(params: BatchingParameters) -> None:
    if params.priority_levels < 0:
        raise InvalidArgument(f"priority_levels must be non-negative; was {params.priority_levels}")
    if params.priority_levels and not 1 <= params.default_priority_level <= params.priority_levels:
        raise InvalidArgument(
            f"default_priority_level must be between 1 and priority_levels ({params.priority_levels}); "
            f"was {params.default_priority_level}"
        )
    if params.queue_timeout_micros < 0:
        raise InvalidArgument(f"queue_timeout_micros must be non-negative; was {params.queue_timeout_micros}")


def read_file(path: str, pool_name: str = DEFAULT_POOL_NAME) -> BatchingParameters:
    """Read and validate a text ``BatchingParameters`` file."""
    return from_proto(read_text_proto(path, pb.BatchingParameters()), pool_name)


def parse(text: str, where: str = "<text>") -> BatchingParameters:
    """Parse ``BatchingParameters`` text (tests and tools)."""
    return from_proto(parse_text(text, pb.BatchingParameters(), where))


def per_model_file(version_dir: str | Path) -> Path:
    return Path(version_dir) / PER_MODEL_FILE


def with_pool(own: BatchingParameters, shared: BatchingParameters) -> BatchingParameters:
    """A version's own queue options on the server's shared thread pool (TF's per-model rule)."""
    return replace(own, num_batch_threads=shared.num_batch_threads, thread_pool_name=shared.thread_pool_name)
