"""docs/observability.md ("Metrics") run as written: its launch line (in-process, on a free port, with the
model path rewritten), the config file it prints, and its curl lines, whose output is what it shows."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from modelserve.demo import half_plus_two
from modelserve.testing import running_server

from .docs import fenced, section

DOC = section("observability.md", "Metrics")


def blocks() -> list[str]:
    return fenced(DOC)


def test_the_doc_runs_as_written(tmp_path: Path) -> None:
    launch, config, curls, printed = blocks()
    assert launch.startswith("python -m modelserve") and config.startswith("prometheus_config")
    (tmp_path / "monitoring.config").write_text(config)
    (tmp_path / "half_plus_two" / "1").mkdir(parents=True)
    (tmp_path / "half_plus_two" / "1" / "model.onnx").write_bytes(half_plus_two())
    flags = []
    for word in shlex.split(launch.replace("\\\n", " "))[3:]:
        word = word.replace("/models/half_plus_two", str(tmp_path / "half_plus_two"))
        word = word.replace("=monitoring.config", f"={tmp_path / 'monitoring.config'}")
        flags.append("--rest_api_port=-1" if word.startswith("--rest_api_port=") else word)
    with running_server(*flags) as server:
        outputs = []
        for line in curls.strip().splitlines():
            command = line.replace("localhost:8501", f"127.0.0.1:{server.server.rest_port}")
            done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30, check=True)
            outputs.append(done.stdout)
    assert '"predictions"' in outputs[0]
    assert "".join(outputs[1:]) == printed
