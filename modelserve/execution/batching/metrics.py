"""What the batcher reports: one record per executed batch, one call per dropped request.

The server passes one ``BatchMetrics`` object in at start-up; with metrics off
it is ``NO_METRICS``, whose methods do nothing, so the batcher never asks
whether metrics are on. Calls come from batch threads and from the event
loop: an implementation must be thread-safe and quick (it runs on the
request path), and must not raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

DropReason = Literal["queue_full", "timeout", "cancelled"]


@dataclass(frozen=True)
class BatchStats:
    """One executed batch of one model version and signature.

    ``rows`` are the requests' rows; ``padded_rows`` the rows that ran (padded
    up to an allowed batch size), so padding is their difference.
    ``queue_seconds`` holds, per request piece in the batch, its wait from
    arrival to the start of the batch; ``task_rows`` its rows.
    """

    model: str
    version: int
    signature: str
    rows: int
    padded_rows: int
    task_rows: tuple[int, ...]
    queue_seconds: tuple[float, ...]
    run_seconds: float
    ok: bool

    @property
    def padding(self) -> int:
        return self.padded_rows - self.rows


class BatchMetrics(Protocol):
    def batch_done(self, stats: BatchStats) -> None:
        """A batch ran (or failed: ``stats.ok`` is False)."""
        ...

    def request_dropped(self, model: str, version: int, reason: DropReason) -> None:
        """A request left without running: its queue was full, it timed out waiting, or it was cancelled."""
        ...


class NoMetrics:
    """The metrics hook when metrics are off."""

    def batch_done(self, stats: BatchStats) -> None:
        pass

    def request_dropped(self, model: str, version: int, reason: DropReason) -> None:
        pass


NO_METRICS = NoMetrics()
