"""The runner factory with ``--enable_batching``: which versions batch, and with which parameters.

As TF Serving: ``--batching_parameters_file`` (or TF's defaults without it)
sets every model's queue options and the shared thread pool. With
``--enable_per_model_batching_parameters`` a version batches only when its
folder holds ``batching_params.pbtxt``, whose queue options are its own;
the thread pool (size and name) still comes from the global parameters.
Versions that do not batch get the direct runner.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...budget import MemoryBudget
from ...platforms.servable import Servable
from ..clock import MONOTONIC, Clock
from ..runner import Runner, RunnerFactory
from . import params as batching_params
from .batcher import Batcher
from .metrics import NO_METRICS, BatchMetrics
from .params import BatchingParameters
from .scheduler import BatchScheduler

log = logging.getLogger(__name__)


class BatchingRunners:
    """A ``RunnerFactory`` for the manager: a ``Batcher`` per version (or ``direct`` for unbatched ones)."""

    def __init__(
        self,
        params: BatchingParameters,
        direct: RunnerFactory,
        per_model: bool = False,
        metrics: BatchMetrics = NO_METRICS,
        clock: Clock = MONOTONIC,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.params = params
        self.scheduler = BatchScheduler(params.num_batch_threads, params.thread_pool_name, clock, metrics, budget)
        self._direct = direct
        self._per_model = per_model

    @classmethod
    def from_flags(
        cls,
        parameters_file: str,
        per_model: bool,
        direct: RunnerFactory,
        metrics: BatchMetrics = NO_METRICS,
        budget: MemoryBudget | None = None,
    ) -> BatchingRunners:
        """The factory the two flags ask for: ``--batching_parameters_file`` (read and validated; TF's
        defaults when it is empty) and ``--enable_per_model_batching_parameters``; merged batches are
        charged to ``budget``."""
        if parameters_file:
            params = batching_params.read_file(parameters_file)
        else:
            params = batching_params.validate(BatchingParameters(thread_pool_name=batching_params.FLAGS_ONLY_POOL_NAME))
        return cls(params, direct, per_model, metrics, MONOTONIC, budget)

    def __call__(self, model: str, version: int, folder: Path, servable: Servable) -> Runner:
        params = self.params
        if self._per_model:
            own = self._version_params(folder)
            if own is None:
                return self._direct(model, version, folder, servable)
            params = own
        log.info("Batching requests of servable version {name: %s version: %d}", model, version)
        return Batcher(self.scheduler, servable, params, model, version)

    def _version_params(self, folder: Path) -> BatchingParameters | None:
        """The version folder's own parameters; the thread pool stays the global one."""
        path = batching_params.per_model_file(folder)
        if not path.is_file():
            return None
        own = batching_params.read_file(str(path))
        return batching_params.with_pool(own, self.params)

    def close(self) -> None:
        """After every version has been unloaded: stop the batch threads."""
        self.scheduler.close()
