"""How many CPUs this process may really use: its affinity and its cgroup's CPU quota.

A pod with ``limits.cpu: 1``, ``docker --cpus=1`` or ``taskset -c 0`` still
shows every host core to ``os.cpu_count()``, and runtimes that size their
thread pools from the host (onnxruntime, TensorFlow, torch) then run several
threads per CPU they may use: measured here, the small MLP pinned to one CPU
served 0.55-0.62x of what it serves with one intra-op thread. Every thread
default of the server is sized from ``available()`` instead.

The quota is read from cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us`` /
``cpu.cfs_period_us``) for the process's own cgroup and each parent (the
tightest wins), rounded up: 1.5 CPUs of quota allow two busy threads.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/")
_Reader = Callable[[Path], "float | None"]


@dataclass(frozen=True)
class CpuBudget:
    """``count``: the CPUs to size thread pools by; the rest says why (for the start-up log)."""

    count: int
    affinity: int
    quota: float | None  # CPUs the cgroup quota allows; None: no quota
    quota_source: str = ""

    def describe(self) -> str:
        quota = "no cgroup CPU quota"
        if self.quota is not None:
            quota = f"cgroup quota {self.quota:g} CPUs ({self.quota_source})"
        return f"{self.count} CPU(s) available: affinity {self.affinity}, {quota}"


def budget(root: Path = ROOT) -> CpuBudget:
    """The CPUs this process may use, read afresh (``root`` stands in for ``/`` in tests)."""
    affinity = _affinity()
    quota, source = _quota(root)
    count = affinity if quota is None else max(1, min(affinity, math.ceil(quota)))
    return CpuBudget(count, affinity, quota, source)


@functools.cache
def available() -> int:
    """``budget().count``, read once per process: thread defaults must agree with each other."""
    return budget().count


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no affinity and no cgroups either
        return os.cpu_count() or 1


def _quota(root: Path) -> tuple[float | None, str]:
    """The tightest quota over the process's cgroup and its parents, and the file it came from."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None, ""
    tightest: tuple[float | None, str] = (None, "")
    for path, read in _quota_files(root, lines):
        cpus = read(path)
        if cpus is not None and (tightest[0] is None or cpus < tightest[0]):
            tightest = (cpus, str(Path("/") / path.relative_to(root)))
    return tightest


def _quota_files(root: Path, lines: list[str]) -> list[tuple[Path, _Reader]]:
    """Every quota file to read: v2's ``cpu.max`` or v1's cpu controller, own cgroup and parents."""
    files: list[tuple[Path, _Reader]] = []
    for line in lines:
        _, controllers, group = line.split(":", 2)
        if controllers == "" and (root / "sys/fs/cgroup/cgroup.controllers").exists():
            files += [(folder / "cpu.max", _read_v2) for folder in _folders(root / "sys/fs/cgroup", group)]
        elif "cpu" in controllers.split(","):
            for mount in _v1_mounts(root):
                files += [(folder / "cpu.cfs_quota_us", _read_v1) for folder in _folders(mount, group)]
    return files


def _folders(mount: Path, group: str) -> list[Path]:
    """The cgroup's folder and its parents up to the mount. Inside a container the path is often the
    host's and the mount is the container's own cgroup: then only the mount itself exists."""
    parts = [p for p in group.split("/") if p]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v1_mounts(root: Path) -> list[Path]:
    return [m for m in (root / "sys/fs/cgroup/cpu,cpuacct", root / "sys/fs/cgroup/cpu") if m.is_dir()][:1]


def _read_v2(path: Path) -> float | None:
    """``cpu.max``: ``max 100000`` (none) or ``QUOTA PERIOD`` in microseconds."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _read_v1(path: Path) -> float | None:
    """``cpu.cfs_quota_us`` (-1: none) over ``cpu.cfs_period_us`` beside it."""
    try:
        quota = int(path.read_text())
        period = int((path.parent / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period
