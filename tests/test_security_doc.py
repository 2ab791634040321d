"""docs/security.md run as written: its launch lines, start-up log, curl lines, token file, Python
clients and benchmark command.

The doc's commands name `/models/half_plus_two`, ports 8500 and 8501, and files in the current
folder (`ssl.config`, `tokens`, `ca.pem`, `client.pem`, `client.key`). The test lays those files out
in a temporary folder (certificates from tests/pki.py, the token file as the doc prints it), runs
each `python -m modelserve ...` line there as a real subprocess, on free ports of 127.0.0.1 instead
of the default ones, and in the other commands rewrites only the model path and the ports. Each
curl line's trailing comment names the status it gets when that is not 200. The benchmark line is
the small run the doc prints (about 10 s), not the full one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelserve.api.auth import Scope, parse_tokens
from modelserve.demo import half_plus_two
from modelserve.testing import ServerProcess, default_frontend_processes, server_process

from .pki import make_pki, ssl_config

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "security.md"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def blocks() -> list[str]:
    """The doc's fenced code blocks, in order."""
    return re.findall(r"```[a-z]*\n(.*?)```", DOC.read_text(), re.S)


# Which block is which: every fenced block of the doc is one of these (test_every_block_is_run).
KINDS: dict[str, Callable[[str], bool]] = {
    "flags launch": lambda b: b.startswith("python -m modelserve") and "--memory_budget_bytes" in b,
    "start-up log": lambda b: b.startswith("Memory budget:"),
    "tls launch": lambda b: b.startswith("python -m modelserve") and "--ssl_config_file" in b and "tokens" not in b,
    "tls curl": lambda b: b.startswith("curl") and "# mutual TLS" in b,
    "token file": lambda b: b.startswith("# token"),
    "tokens launch": lambda b: b.startswith("python -m modelserve") and "--auth_token_file" in b,
    "tokens curl": lambda b: b.startswith("curl") and "Bearer" in b,
    "python clients": lambda b: "GrpcClient(" in b,
    "ftp launch": lambda b: b.startswith("python -m modelserve") and "ftp://" in b,
    "benchmark": lambda b: b.startswith("python benchmarks/hostile.py"),
}


def block(kind: str) -> str:
    (found,) = [b for b in blocks() if KINDS[kind](b)]
    return found


def lines_of(text: str) -> list[tuple[str, str]]:
    """(command, trailing comment) per line, continuation lines joined."""
    joined = text.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        if line.strip():
            command, _, comment = line.partition("  #")
            out.append((command.strip(), comment.strip()))
    return out


def test_every_block_is_run() -> None:
    for text in blocks():
        assert [kind for kind, is_kind in KINDS.items() if is_kind(text)], f"no test runs this block:\n{text}"


# ---- the folder the doc's commands run in ---------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> dict[str, bytes]:
    pytest.importorskip("cryptography")
    return make_pki()


@pytest.fixture
def folder(tmp_path: Path, pki: dict[str, bytes]) -> Path:
    (tmp_path / "models" / "half_plus_two" / "1").mkdir(parents=True)
    (tmp_path / "models" / "half_plus_two" / "1" / "model.onnx").write_bytes(half_plus_two())
    for name, key in (("ca.pem", "ca"), ("client.pem", "client_cert"), ("client.key", "client_key")):
        (tmp_path / name).write_bytes(pki[key])
    (tmp_path / "tokens").write_text(block("token file"))
    return tmp_path


def server_flags(command: str, folder: Path) -> list[str]:
    """A doc launch line's flags, with the model path in ``folder``."""
    argv = shlex.split(command.replace("=/models/", f"={folder}/models/"))
    assert argv[:3] == ["python", "-m", "modelserve"], command
    return argv[3:]


def server_argv(command: str, folder: Path) -> list[str]:
    """A doc launch line with the model path in ``folder`` and free ports on 127.0.0.1."""
    return [sys.executable, "-m", "modelserve", *server_flags(command, folder), "--port=-1", "--rest_api_port=-1"]


@contextlib.contextmanager
def launched(kind: str, folder: Path) -> Iterator[ServerProcess]:
    ((command, _),) = lines_of(block(kind))
    with server_process(*server_flags(command, folder), cwd=folder) as server:
        yield server


def curl(server: ServerProcess, command: str, folder: Path) -> tuple[int, str, subprocess.CompletedProcess[str]]:
    """(HTTP status, body, the run) of a doc curl line; status 0 when no answer came."""
    written = server.on(command) + " --silent --show-error --max-time 20 --write-out '\\n%{http_code}'"
    done = subprocess.run(["bash", "-c", written], cwd=folder, capture_output=True, text=True, timeout=60)
    body, _, status = done.stdout.rpartition("\n")
    return int(status or 0), body, done


def expected_status(comment: str) -> int:
    match = re.match(r"(\d{3})\b", comment)
    return int(match.group(1)) if match else 200


# ---- the commands ---------------------------------------------------------------------------


def start_up_log() -> list[str]:
    """The doc's start-up lines; with front-end processes the connection cap is split among them, in the
    doc's words for two ("With front-end processes")."""
    lines = block("start-up log").splitlines()
    processes = default_frontend_processes()
    if processes == 1:
        return lines
    split = "REST connections: at most 500 in this process (--rest_api_max_connections 1000 across 2 processes)"
    assert split in " ".join(DOC.read_text().split())
    if processes != 2:
        split = (
            f"REST connections: at most {1000 // processes} in this process "
            f"(--rest_api_max_connections 1000 across {processes} processes)"
        )
    return [split if line.startswith("REST connections:") else line for line in lines]


def test_the_flags_example_starts_and_logs_what_the_doc_says(folder: Path) -> None:
    with launched("flags launch", folder) as server:
        for line in start_up_log():
            assert line in server.text(), (line, server.text())
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/half_plus_two"
        with urllib.request.urlopen(url, timeout=30) as answer:
            assert json.loads(answer.read())["model_version_status"][0]["state"] == "AVAILABLE"


def test_tls_and_mutual_tls_with_curl(folder: Path, pki: dict[str, bytes]) -> None:
    (tls, _), (mutual, _) = lines_of(block("tls curl"))
    ssl_config(folder, pki, client_verify=False)
    with launched("tls launch", folder) as server:
        for line in (tls, mutual):
            status, body, done = curl(server, line, folder)
            assert status == 200, (line, done.stderr)
            assert json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE"
    # "With client_verify: true in ssl.config only the second line gets an answer."
    ssl_config(folder, pki, client_verify=True)
    with launched("tls launch", folder) as server:
        status, _, done = curl(server, tls, folder)
        assert status == 0 and done.returncode != 0, done
        status, _, done = curl(server, mutual, folder)
        assert status == 200, done.stderr


def test_tokens_with_curl_and_the_python_clients(folder: Path, pki: dict[str, bytes]) -> None:
    ssl_config(folder, pki, client_verify=False)
    with launched("tokens launch", folder) as server:
        for line, comment in lines_of(block("tokens curl")):
            status, body, done = curl(server, line, folder)
            assert status == expected_status(comment), (line, status, body, done.stderr)
            if status == 401:
                assert "bearer token" in json.loads(body)["error"].lower()
            elif ":predict" in line:
                assert json.loads(body) == {"predictions": [2.5, 3.0, 4.5]}
            else:
                assert json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE"
        code = server.on(block("python clients"))
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=folder, env=ENV, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        printed = re.findall(r"print\(.*\)  # (.*)", code)
        assert done.stdout.splitlines() == printed


def test_the_suggested_token_generator_makes_a_valid_token() -> None:
    (command,) = re.findall(r"`(openssl [^`]*)`", DOC.read_text())
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=30, check=True)
    ((_, scope),) = parse_tokens(f"{done.stdout.strip()} infer\n", "tokens")
    assert scope == Scope.INFER


def test_a_refused_storage_protocol_fails_start_up(folder: Path) -> None:
    ((command, _),) = lines_of(block("ftp launch"))
    done = subprocess.run(server_argv(command, folder), cwd=folder, env=ENV, capture_output=True, text=True, timeout=60)
    (message,) = re.findall(r"`(Failed to start server\. Error: .*?)`", DOC.read_text(), re.S)
    assert done.returncode != 0
    assert " ".join(message.split()) in " ".join(done.stderr.split()), done.stderr


def test_the_benchmark_command_runs(tmp_path: Path) -> None:
    ((command, _),) = lines_of(block("benchmark"))
    argv = shlex.split(command)
    assert argv[0] == "python"
    env = {**ENV, "TMPDIR": str(tmp_path)}  # its server logs
    done = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    rows = {line.split(" | ")[0].lstrip("| "): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert "quiet" in rows, done.stdout
    (bombs,) = [row for name, row in rows.items() if name.startswith("c: gzip bombs")]
    assert "413" in bombs and "SERVER DIED" not in bombs, bombs
