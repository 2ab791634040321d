"""--frontend_processes: how many are chosen, and (with a real server) how they are started, supervised
and stopped."""

from __future__ import annotations

import pytest

from modelserve import processes
from modelserve.platforms.cpus import CpuBudget


@pytest.mark.parametrize(
    ("requested", "cpus", "chosen"),
    [
        (0, 1, 1),
        (0, 2, 1),
        (0, 3, 1),
        (0, 4, 2),
        (0, 6, 3),
        (0, 16, 8),
        (0, 64, 8),
        (2, 1, 2),  # asked for: as asked, whatever the CPUs
        (12, 64, 12),
    ],
)
def test_the_default_follows_the_cpus_really_available(requested: int, cpus: int, chosen: int) -> None:
    count, why = processes.count(requested, CpuBudget(cpus, cpus, None))
    assert count == chosen
    assert (why == "--frontend_processes") if requested else (f"{cpus} CPU(s) available" in why)


def test_a_cgroup_quota_counts_not_the_affinity() -> None:
    count, why = processes.count(0, CpuBudget(2, 32, 1.5, "/sys/fs/cgroup/cpu.max"))
    assert count == 1
    assert "cgroup quota 1.5 CPUs" in why and "one process below 4 CPUs" in why
