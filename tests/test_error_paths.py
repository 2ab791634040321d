"""Texts shown to callers do not reveal local paths (issue 17, finding 10): version status over REST and
gRPC names the base path "<base_path>"; --expose_paths_in_errors keeps the paths; the log always does."""

from __future__ import annotations

import json
import logging
import urllib.request
from pathlib import Path

import pytest

from modelserve import storage
from modelserve.client import GrpcClient
from modelserve.testing import ServerThread, running_server

from . import onnx_models as om


def broken_version(base: Path, s: ServerThread) -> None:
    """Version 2 arrives unloadable; wait until its load has failed."""
    (base / "2").mkdir()
    (base / "2" / "model.onnx").write_bytes(b"not an onnx model")
    s.server.manager.poll()
    s.server.manager.wait_for(lambda: s.server.manager.status("m", 2)[0].state.name == "END", 60)
    s.settle()  # a change the poll made: every front-end process has it (at once in one process)


def rest_message(s: ServerThread, version: int) -> str:
    with urllib.request.urlopen(f"{s.rest_url}/v1/models/m/versions/{version}", timeout=30) as answer:
        return str(json.loads(answer.read())["model_version_status"][0]["status"]["error_message"])


@pytest.mark.parametrize("expose", [False, True])
def test_status_hides_the_base_path(tmp_path: Path, expose: bool, caplog: pytest.LogCaptureFixture) -> None:
    base = tmp_path / "models" / "m"
    om.write(base, 1, om.half_plus_two())
    more = ("--expose_paths_in_errors",) if expose else ()
    with (
        caplog.at_level(logging.ERROR),
        running_server(f"--model_base_path={base}", "--model_name=m", "--max_num_load_retries=0", *more) as s,
    ):
        broken_version(base, s)
        message = rest_message(s, 2)
        with GrpcClient(s.grpc_target) as client:
            assert client.status("m", version=2)[0].error_message == message
    assert "model.onnx" in message
    if expose:
        assert f"{base}/2/model.onnx" in message
    else:
        assert str(tmp_path) not in message
        assert "<base_path>/2/model.onnx" in message
    assert f"{base}/2/model.onnx" in caplog.text  # the server's log keeps the full path


def test_hide_paths() -> None:
    hide_paths = storage.hide_paths
    base = "/srv/models/m"
    assert hide_paths(f"Could not read {base}/3/saved_model.pb", base) == "Could not read <base_path>/3/saved_model.pb"
    assert hide_paths(f"file://{base}/3 failed", f"file://{base}") == "<base_path>/3 failed"
    assert hide_paths("copy in /tmp/modelserve-cache-x/y failed", base) == "copy in <path> failed"
    assert hide_paths(f"{base}2/1/model.onnx", base) == "<path>"  # a sibling is not the base path
    assert hide_paths("s3://bucket/models/m/1 and /device:CPU:0, shape a/b", "") == (
        "s3://bucket/models/m/1 and /device:CPU:0, shape a/b"
    )
