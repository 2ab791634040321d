"""The front-end processes of ``--frontend_processes`` of 2 or more, run by the engine (the parent).

The parent holds the models, the lifecycle and the batch queues (``serving.engine.Engine`` around
its ``ServingCore``); each child (``python -m modelserve.frontend``) answers REST and gRPC on the
same ports and hands its tensors to the engine through shared memory.
"""

from __future__ import annotations

from .platforms.cpus import CpuBudget

# Provisional, until benchmarks/cores.py measures it: the hand-off costs the engine CPU per request,
# so below 4 CPUs a second process only takes CPU from inference; above, half the CPUs decode and
# encode and half run the engine and the models.
FEW_CPUS = 4
MOST_PROCESSES = 8


def count(requested: int, cpus: CpuBudget) -> tuple[int, str]:
    """How many front-end processes to run, and why (for the start-up log): ``requested`` when above 0,
    else the rule above from the CPUs this process may use."""
    if requested > 0:
        return requested, "--frontend_processes"
    if cpus.count < FEW_CPUS:
        return 1, f"{cpus.describe()}; one process below {FEW_CPUS} CPUs"
    chosen = min(cpus.count // 2, MOST_PROCESSES)
    return chosen, f"{cpus.describe()}; half of them, at most {MOST_PROCESSES}"
