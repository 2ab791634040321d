"""The CPUs a process may use: affinity and cgroup v1/v2 quotas, and the thread defaults that follow them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelserve.platforms import cpus


def fake_root(tmp_path: Path, cgroup: str, files: dict[str, str]) -> Path:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_cgroup_v2_quota_of_the_own_group(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        "0::/kubepods/pod1/c1\n",
        {
            "sys/fs/cgroup/cgroup.controllers": "cpu memory\n",
            "sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "100000 100000\n",
            "sys/fs/cgroup/kubepods/cpu.max": "max 100000\n",
        },
    )
    budget = cpus.budget(root)
    assert budget.quota == 1.0
    assert budget.quota_source == "/sys/fs/cgroup/kubepods/pod1/c1/cpu.max"
    assert budget.count == 1
    assert "cgroup quota 1 CPUs" in budget.describe()


def test_the_tightest_parent_wins_and_fractions_round_up(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        "0::/a/b\n",
        {
            "sys/fs/cgroup/cgroup.controllers": "cpu\n",
            "sys/fs/cgroup/a/b/cpu.max": "max 100000\n",
            "sys/fs/cgroup/a/cpu.max": "150000 100000\n",  # 1.5 CPUs: two busy threads fit
            "sys/fs/cgroup/cpu.max": "400000 100000\n",
        },
    )
    budget = cpus.budget(root)
    assert budget.quota == 1.5
    assert budget.count == min(affinity(), 2)


def test_a_container_sees_its_own_cgroup_at_the_mount(tmp_path: Path) -> None:
    # The path is the host's; inside the container only the mount (its own group) exists.
    root = fake_root(
        tmp_path,
        "0::/system.slice/docker-abc.scope\n",
        {"sys/fs/cgroup/cgroup.controllers": "cpu\n", "sys/fs/cgroup/cpu.max": "50000 100000\n"},
    )
    budget = cpus.budget(root)
    assert (budget.quota, budget.count) == (0.5, 1)


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n",
        {
            "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",
            "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    budget = cpus.budget(root)
    assert (budget.quota, budget.count) == (1.0, 1)
    assert budget.quota_source == "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us"


def test_no_quota_leaves_the_affinity(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        "1:cpu:/\n0::/\n",
        {"sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n", "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"},
    )
    budget = cpus.budget(root)
    assert (budget.quota, budget.count) == (None, affinity())
    assert "no cgroup CPU quota" in budget.describe()


def test_unreadable_cgroup_files_mean_no_quota(tmp_path: Path) -> None:
    budget = cpus.budget(tmp_path)  # no /proc/self/cgroup at all
    assert (budget.quota, budget.count) == (None, affinity())


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux affinity")
def test_pinned_to_one_cpu_every_thread_default_is_one() -> None:
    """As under ``taskset -c 0`` or a one-CPU pod: the flag defaults and the runtime threads follow."""
    code = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]});"
        "from modelserve.options import ServerOptions; from modelserve import platforms;"
        "from modelserve.execution.batching.params import BatchingParameters;"
        "o = ServerOptions();"
        "print(o.num_inference_threads, o.grpc_max_threads, o.num_tflite_pools, platforms.threads(0),"
        " BatchingParameters().num_batch_threads)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "4", "1", "1", "1"]


def test_onnxruntime_sessions_take_the_available_cpus_unless_told() -> None:
    from modelserve.platforms import LoadOptions
    from modelserve.platforms.onnx import session_options

    assert session_options(LoadOptions()).intra_op_num_threads == cpus.available()
    assert session_options(LoadOptions(intra_op_threads=3)).intra_op_num_threads == 3


def test_the_start_up_log_says_what_was_chosen_and_why(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from modelserve.options import ServerOptions
    from modelserve.server import log_thread_choices

    with caplog.at_level(logging.INFO, "modelserve"):
        log_thread_choices(ServerOptions(num_inference_threads=3))
    (line,) = [r.getMessage() for r in caplog.records if "CPU(s) available" in r.getMessage()]
    assert f"{cpus.available()} CPU(s) available: affinity {affinity()}" in line
    assert f"{cpus.available()} (default) intra-op per model, 3 inference" in line
