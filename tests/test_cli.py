"""The command line, run as a real process: TF Serving's flags, syntax and start-up errors."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from modelserve.cli import UsageError, parse_flags, usage
from modelserve.options import FLAGS, FLAGS_BY_NAME, GROUPS, ServerOptions, command_line
from modelserve.testing import server_process

from . import onnx_models as om

CMD = [sys.executable, "-m", "modelserve"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=timeout)


# ---- parsing (in-process: pure) --------------------------------------------------------------


def test_flag_syntax() -> None:
    options = parse_flags(["--port=9000", "--rest_api_port", "9001", "--enable_batching", "--model_name=m"])
    assert (options.port, options.rest_api_port, options.enable_batching, options.model_name) == (9000, 9001, True, "m")
    assert parse_flags(["--enable_batching=false"]).enable_batching is False
    defaults = parse_flags([])
    assert (defaults.port, defaults.rest_api_port, defaults.file_system_poll_wait_seconds) == (8500, 8501, 1)
    assert defaults.enable_model_warmup is True and defaults.rest_api_timeout_in_ms == 30000
    assert defaults.model_name == "default" and defaults.max_num_load_retries == 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--no_such_flag=1"], "unknown flag: --no_such_flag"),
        (["--port=abc"], "--port: expected an int, got 'abc'"),
        (["--enable_batching=1"], "--enable_batching: expected true or false, got '1'"),
        (["--port"], "--port needs a value"),
        (["stray"], "unexpected argument: stray"),
    ],
)
def test_bad_flags(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_flags(argv)


def test_each_flag_is_a_typed_field() -> None:
    # the parser converts by kind, and kind comes from the field's type: a default of another type is a slip
    types = {"bool": bool, "int": int, "float": float, "str": str}
    defaults = ServerOptions()
    for flag in FLAGS:
        assert type(flag.default) is types[flag.kind], flag.name
        assert type(getattr(defaults, flag.name)) is types[flag.kind], flag.name
        assert flag.group in GROUPS, flag.name
    assert {f.name for f in dataclasses.fields(ServerOptions)} == {*FLAGS_BY_NAME, "explicit"}
    assert defaults.grpc_max_threads == 4 * defaults.num_inference_threads  # computed per machine


def test_replace_and_explicit() -> None:
    options = parse_flags(["--port=9000", "--enable_batching"])
    assert options.explicit == {"port", "enable_batching"}
    changed = options.replace(rest_api_port=-1, drain_grace_seconds=1.5)
    assert (changed.port, changed.rest_api_port, changed.drain_grace_seconds) == (9000, -1, 1.5)
    assert changed.explicit == {"port", "enable_batching", "rest_api_port", "drain_grace_seconds"}
    assert options.rest_api_port == 8501  # frozen: replace made a new one
    with pytest.raises(KeyError, match="no_such_flag"):
        options.replace(no_such_flag=1)
    with pytest.raises(KeyError, match="explicit"):
        options.replace(explicit=frozenset())


def test_command_line_parses_back_into_the_same_options() -> None:
    options = parse_flags(["--port=9000", "--enable_batching", "--model_name=a=b c", "--drain_grace_seconds=0.25"])
    options = options.replace(enable_metrics=False)
    again = parse_flags(command_line(options))
    assert again == options
    assert command_line(options) == [
        "--drain_grace_seconds=0.25",
        "--enable_batching=true",
        "--enable_metrics=false",
        "--model_name=a=b c",
        "--port=9000",
    ]


def test_every_tf_serving_flag_is_known() -> None:
    # From tensorflow_serving/model_servers/main.cc in tensorflow/serving: the union of the flags over
    # every 2.x release tag is 49 (the current release's 48, and --use_tflite_model of 2.0-2.2); nightly
    # builds between 2.4 and 2.5 also had --rest_api_enable_cors_headers and --num_tflite_interpreters.
    assert sum(1 for f in FLAGS if f.tf) == 51
    text = usage()
    for flag in FLAGS:
        assert f"--{flag.name}=" in text


def test_older_2x_flag_names_are_accepted() -> None:
    options = parse_flags(["--use_tflite_model=false", "--rest_api_enable_cors_headers", "--num_tflite_interpreters=2"])
    assert (options.use_tflite_model, options.rest_api_enable_cors_headers) == (False, True)
    assert not FLAGS_BY_NAME["num_tflite_interpreters"].effect  # warned about at start, ignored


# ---- the real process ------------------------------------------------------------------------


def test_help_lists_flags_by_group() -> None:
    result = run("--help")
    assert result.returncode == 0
    for group in ("Models:", "gRPC:", "REST:", "Batching:"):
        assert group in result.stdout


def test_version_prints_two_lines() -> None:
    result = run("--version")
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("TensorFlow ModelServer: ") and lines[1].startswith("TensorFlow Library: ")


def test_unknown_flag_exits_2_naming_it() -> None:
    result = run("--model_base_path=/x", "--bogus=1")
    assert result.returncode == 2
    assert "unknown flag: --bogus" in result.stderr


def test_unknown_subcommand() -> None:
    result = run("serve-please")
    assert result.returncode == 2 and "unknown command: serve-please" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Both server_options.model_base_path and server_options.model_config_file are empty!"),
        (
            ["--model_base_path=/x", "--port=0"],
            "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set.",
        ),
        (
            ["--model_base_path=/x", "--batching_parameters_file=/b"],
            "server_options.batching_parameters_file is set without setting server_options.enable_batching to true.",
        ),
        (
            [
                "--model_base_path=/x",
                "--tensorflow_session_parallelism=1",
                "--tensorflow_intra_op_parallelism=1",
                "--tensorflow_inter_op_parallelism=1",
            ],
            "You cannot configure all.",
        ),
        (
            ["--model_base_path=/x", "--use_alts_credentials", "--ssl_config_file=/s"],
            "Either use_alts_credentials must be false or ssl_config_file must be empty.",
        ),
    ],
)
def test_start_up_validation(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 255
    assert "Failed to start server. Error:" in result.stderr and message in result.stderr


def test_bare_command_points_to_help_and_demo() -> None:
    result = run()
    assert result.returncode == 255
    assert "Both server_options.model_base_path and server_options.model_config_file are empty!" in result.stderr
    assert "'modelserve --help' lists the flags; 'modelserve demo' serves example models." in result.stderr


def test_demo_help_prints_its_usage(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}  # this checkout's modelserve, from tmp_path
    result = subprocess.run([*CMD, "demo", "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: modelserve demo [--dir=DIR] [flags]")
    assert not (tmp_path / "demo_models").exists()  # --help writes nothing


def test_missing_base_path_fails_fast(tmp_path: Path) -> None:
    result = run(f"--model_base_path={tmp_path / 'absent'}", "--port=-1", "--rest_api_port=-1")
    assert result.returncode == 255
    assert f"Could not find base path {tmp_path / 'absent'} for servable default" in result.stderr


def test_empty_base_path_fails_fast(tmp_path: Path) -> None:
    result = run(f"--model_base_path={tmp_path}", "--model_name=m", "--port=-1", "--rest_api_port=-1")
    assert result.returncode == 255
    assert f"No versions of servable m found under base path {tmp_path}" in result.stderr


def test_corrupt_model_fails_start_up(tmp_path: Path) -> None:
    om.write(tmp_path, 1, b"not an onnx model")
    result = run(f"--model_base_path={tmp_path}", "--port=-1", "--rest_api_port=-1", "--max_num_load_retries=0")
    assert result.returncode == 255
    assert "1 servable(s) did not become available: {{name: default version: 1} due to error:" in result.stderr


@pytest.mark.parametrize("flag", ["--rest_api_port", "--port"])
def test_a_busy_port_fails_start_up_naming_it(tmp_path: Path, flag: str) -> None:
    om.write(tmp_path / "half", 1, om.half_plus_two())
    with socket.socket() as holder:  # another process's listener, as a real socket
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        ports = {"--port": "-1", "--rest_api_port": "-1", flag: str(busy)}
        result = run(
            f"--model_base_path={tmp_path / 'half'}", "--host=127.0.0.1", *(f"{k}={v}" for k, v in ports.items())
        )
    assert result.returncode == 255, result.stderr
    assert "Failed to start server. Error:" in result.stderr
    expected = {
        "--rest_api_port": f"Failed to start HTTP Server at localhost:{busy}: Address already in use",
        "--port": f"Failed to BuildAndStart gRPC server: cannot listen on 127.0.0.1:{busy}",
    }
    assert expected[flag] in result.stderr, result.stderr


def test_serves_then_exits_0_on_sigterm(tmp_path: Path) -> None:
    om.write(tmp_path / "half", 1, om.half_plus_two())
    flags = ["--model_name=half", f"--model_base_path={tmp_path / 'half'}", "--flush_filesystem_caches=false"]
    with server_process(*flags) as server:
        text = server.text()
        assert "Successfully loaded servable version {name: half version: 1}" in text
        assert "--flush_filesystem_caches is accepted for compatibility with TF Serving and has no effect yet" in text
        req = urllib.request.Request(
            f"http://127.0.0.1:{server.rest_port}/v1/models/half:predict", data=b'{"instances": [1.0, 2.0, 5.0]}'
        )
        assert json.load(urllib.request.urlopen(req, timeout=10)) == {"predictions": [2.5, 3.0, 4.5]}
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
