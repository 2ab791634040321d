"""The README's tour, run as written: its config file, its curl lines and its Python client example.

The README's commands name `/models/...` and port 8501; the test lays out a repository of that
shape in a temporary folder (mnist: two ONNX versions; resnet: versions 7 and 8 with the label
`stable`), rewrites only those paths and ports, and fills the README's `...` placeholders with real
rows. Everything else is the README's own text, so a README that drifts from the server fails here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelserve.demo import half_plus_two, mlp
from modelserve.testing import ServerThread, running_server

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(text: str) -> list[str]:
    """The README's fenced code blocks, in order."""
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.S)


def block_with(needle: str) -> str:
    (found,) = [b for b in blocks(README.read_text()) if needle in b]
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> ServerThread:  # type: ignore[misc]
    root = tmp_path_factory.mktemp("models")
    for version, seed in ((1, 1), (2, 2)):
        (root / "mnist" / str(version)).mkdir(parents=True)
        (root / "mnist" / str(version) / "model.onnx").write_bytes(mlp([784, 128, 10], seed=seed))
    for version in (7, 8):
        (root / "resnet" / str(version)).mkdir(parents=True)
        (root / "resnet" / str(version) / "model.onnx").write_bytes(mlp([784, 128, 10], seed=version))
    (root / "half_plus_two" / "1").mkdir(parents=True)
    (root / "half_plus_two" / "1" / "model.onnx").write_bytes(half_plus_two())
    # The README's models.config, as printed, pointed at this folder; half_plus_two for the client example.
    config = block_with("model_config_list").replace("/models/", f"{root}/")
    config = config.rstrip().removesuffix("}") + (
        f'  config {{ name: "half_plus_two" base_path: "{root}/half_plus_two" model_platform: "onnx" }}\n}}\n'
    )
    (root / "models.config").write_text(config)
    with running_server(f"--model_config_file={root / 'models.config'}") as s:
        yield s


def test_the_readme_config_serves_what_it_says(server: ServerThread) -> None:
    statuses = server.server.manager.status("resnet")
    assert {s.version: s.state.name for s in statuses} == {8: "AVAILABLE", 7: "AVAILABLE"}
    assert server.server.manager.labels("resnet") == {"stable": 7}


def test_every_curl_line_of_the_readme_works(server: ServerThread) -> None:
    row = json.dumps([round(float(v), 3) for v in np.random.default_rng(0).random(784)])
    lines = [line.split("  #")[0].strip() for line in block_with("curl localhost:8501").splitlines() if line.strip()]
    assert len(lines) == 5
    for line in lines:
        command = line.replace("localhost:8501", f"127.0.0.1:{server.server.rest_port}")
        command = command.replace("[[0.0, 0.1, ...]]", f"[{row}]").replace("[[...]]", f"[{row}]")
        command = command.replace("[...]", f"[{row}]")
        done = subprocess.run(["bash", "-c", command + " --silent --show-error --fail-with-body"], capture_output=True)
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        answer = json.loads(done.stdout)
        assert "error" not in answer, (line, answer)
        if ":predict" in line:
            (probabilities,) = answer.get("predictions") or answer["outputs"]
            assert len(probabilities) == 10 and abs(sum(probabilities) - 1) < 1e-4, line


def test_the_readme_python_example_runs_and_prints_what_it_says(server: ServerThread) -> None:
    code = block_with("GrpcClient(").replace("localhost:8500", server.grpc_target)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert printed[0] == "[2.5 3.  4.5]"  # as the README's comment says
    assert printed[1].startswith("[VersionStatus(version=1, state='AVAILABLE'")
