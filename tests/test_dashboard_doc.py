"""docs/observability.md ("The dashboard") run as written: its launch line, its curl line and its screenshot command.

The launch line runs as a subprocess with the model path in a temporary folder and free ports; the
curl line gets that port; the screenshot command writes to a temporary file instead of docs/images/.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from modelserve.demo import half_plus_two
from modelserve.testing import server_process

from .browser import NOT_FOUND, find_chromium
from .docs import fenced, section

REPO = Path(__file__).resolve().parents[1]
DOC = section("observability.md", "The dashboard")


def blocks() -> list[str]:
    return [b.strip() for b in fenced(DOC)]


def block(start: str) -> str:
    (found,) = [b for b in blocks() if b.startswith(start)]
    return found


def test_every_block_is_run() -> None:
    starts = ("python -m modelserve", "curl", "MODELSERVE_DASHBOARD_SCREENSHOT=")
    assert all(b.startswith(starts) for b in blocks()), blocks()


def test_launch_and_curl(tmp_path: Path) -> None:
    (tmp_path / "half_plus_two" / "1").mkdir(parents=True)
    (tmp_path / "half_plus_two" / "1" / "model.onnx").write_bytes(half_plus_two())
    argv = shlex.split(block("python -m modelserve").replace("=/models/", f"={tmp_path}/"))
    assert argv[:3] == ["python", "-m", "modelserve"]
    with server_process(*argv[3:]) as server:
        assert "Dashboard at /dashboard on the REST port" in server.text()
        curl = shlex.split(block("curl").replace("localhost:8501", f"127.0.0.1:{server.rest_port}"))
        answer = subprocess.run(curl, capture_output=True, text=True, timeout=60, check=True)
    doc = json.loads(answer.stdout)
    assert [m["name"] for m in doc["models"]] == ["half_plus_two"]
    assert doc["models"][0]["versions"][0]["state"] == "AVAILABLE"


@pytest.mark.skipif(find_chromium() is None, reason=NOT_FOUND)
def test_screenshot_command(tmp_path: Path) -> None:
    variable, *command = shlex.split(block("MODELSERVE_DASHBOARD_SCREENSHOT="))
    name, _, target = variable.partition("=")
    assert target == "docs/images/dashboard.png" and command[:3] == ["python", "-m", "pytest"]
    shot = tmp_path / "dashboard.png"
    env = {**os.environ, name: str(shot), "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, *command[1:], "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert "1 passed" in run.stdout
    assert shot.read_bytes().startswith(b"\x89PNG")
