"""The hand-off end to end: an engine (a real ``Server`` in this process) and ONE front-end process
(``python -m modelserve.frontend``) over a socket pair, with real clients on the front end's ports.

Each answer is checked against numpy; errors, deadlines, a version swap, a client that goes away, string
and 64 MB tensors, and a killed front end (its arenas freed in the engine: no descriptor left) are seen
from the outside, and in the engine through ``serving.engine.Engine``'s counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from onnx import TensorProto
from prometheus_client.parser import text_string_to_metric_families

from modelserve.budget import MemoryBudget
from modelserve.client import ClientError, GrpcClient, RestClient
from modelserve.codecs.tensor_util import make_tensor_proto
from modelserve.dtypes import to_numpy
from modelserve.errors import Code
from modelserve.execution.handoff import wire
from modelserve.processes import ChildArgs, command
from modelserve.protos import PREDICTION_SERVICE, pb
from modelserve.serving.engine import Engine
from modelserve.serving.remote import RemoteCore
from modelserve.serving.request import InferenceRequest, ModelSpec
from modelserve.testing import CHECKOUT, ServerThread, running_server

from . import onnx_models as om

MODELS = ("hpt", "ids", "strings", "swap", "slow")


def repository(root: Path) -> Path:
    om.write(root / "hpt", 1, om.half_plus_two())
    om.write(root / "ids", 1, om.identity(TensorProto.FLOAT, None))
    om.write(root / "strings", 1, om.identity(TensorProto.STRING, None))
    om.write(root / "swap", 1, om.identity(TensorProto.FLOAT, None))  # v2 (int64) comes in the swap test
    om.write(root / "slow", 1, om.slow(steps=400, size=512))  # seconds on an idle machine too
    entries = "\n".join(f'config {{ name: "{n}" base_path: "{root / n}" model_platform: "onnx" }}' for n in MODELS)
    config = root / "models.config"
    config.write_text("model_config_list {\n" + entries + "\n}\n")
    return config


def free_port() -> socket.socket:
    """A port held (bound, not listening, SO_REUSEPORT) for the front end to bind, as the parent does."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class FrontEnd:
    def __init__(self, st: ServerThread, engine: Engine, proc: subprocess.Popen[bytes], rest: int, grpc_port: int):
        self.st, self.engine, self.proc, self.rest, self.grpc = st, engine, proc, rest, grpc_port

    def on_loop(self, fn: Any) -> Any:
        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.st.loop).result(30)


def wait_until(predicate: Any, seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


@contextlib.contextmanager
def front_end(st: ServerThread, *flags: str) -> Iterator[FrontEnd]:
    """Attach an engine to ``st``'s core and start one front-end process on its own ports."""
    server = st.server
    engine_end, child_end = wire.pair()

    def attach() -> Engine:
        engine = Engine(server.core, 1 << 30, server.frontends.figures)
        engine.attach(engine_end)
        return engine

    engine = asyncio.run_coroutine_threadsafe(_call(attach), st.loop).result(30)
    rest, grpc_sock = free_port(), free_port()
    ports = (rest.getsockname()[1], grpc_sock.getsockname()[1])
    argv = command(
        ChildArgs(
            child_end.fileno(), flags=[f"--rest_api_port={ports[0]}", f"--port={ports[1]}", "--host=127.0.0.1", *flags]
        )
    )
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    proc = subprocess.Popen(argv, pass_fds=(child_end.fileno(),), env=env, cwd=CHECKOUT)
    child_end.close()
    try:
        wait_until(lambda: ready(ports[0]) or proc.poll() is not None)
        assert proc.poll() is None, "the front end exited"
        yield FrontEnd(st, engine, proc, *ports)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        rest.close()
        grpc_sock.close()
        asyncio.run_coroutine_threadsafe(_call(engine.close), st.loop).result(30)


async def _call(fn: Any) -> Any:
    return fn()


@pytest.fixture(scope="module")
def fe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontEnd]:
    config = repository(tmp_path_factory.mktemp("handoff"))
    with (
        running_server(f"--model_config_file={config}", "--enable_metrics=true") as st,
        front_end(st, f"--model_config_file={config}", "--rest_api_timeout_in_ms=300") as frontend,
    ):
        yield frontend


def rest_json(port: int, path: str, doc: Any) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(doc).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_predict_over_all_four_front_ends_matches_numpy(fe: FrontEnd) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    want = 0.5 * x + 2
    status, doc = rest_json(fe.rest, "/v1/models/hpt:predict", {"instances": x.tolist()})
    assert status == 200 and np.allclose(doc["predictions"], want)
    with GrpcClient(f"127.0.0.1:{fe.grpc}") as client:
        np.testing.assert_allclose(client.predict("hpt", {"x": x})["y"], want)
        np.testing.assert_allclose(client.v2_infer("hpt", {"x": x})["y"], want)
    with RestClient(f"http://127.0.0.1:{fe.rest}") as rest:
        np.testing.assert_allclose(rest.v2_infer("hpt", {"x": x})["y"], want)
    status, doc = rest_json(
        fe.rest,
        "/v2/models/hpt/infer",
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": x.ravel().tolist()}]},
    )
    assert status == 200 and np.allclose(doc["outputs"][0]["data"], want.ravel())


def test_a_scrape_adds_up_every_process_s_figures_of_that_moment(fe: FrontEnd) -> None:
    """Each process records its own; a scrape of the engine asks the front end for its figures now, and the
    front end's page asks the engine for the whole server's: both count every answered request at once."""

    def rest_predicts() -> int:
        series = fe.st.call(fe.engine.scrape()).snapshot.requests
        return sum(
            sum(s.codes.values()) for key, s in series.items() if key[0] == "hpt" and key[3:] == ("tfs_rest", "predict")
        )

    before = rest_predicts()
    for _ in range(3):
        assert rest_json(fe.rest, "/v1/models/hpt:predict", {"instances": [1.0]})[0] == 200
    assert rest_predicts() == before + 3
    with urllib.request.urlopen(f"http://127.0.0.1:{fe.rest}/metrics", timeout=30) as page:
        text = page.read().decode()
    page_predicts = sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelserve_requests_total"
        and sample.labels["model"] == "hpt"
        and (sample.labels["protocol"], sample.labels["api"]) == ("tfs_rest", "predict")
    )
    assert page_predicts == before + 3  # the front end's own requests
    assert 'modelserve_model_loads_total{model="hpt"' in text, text[:2000]  # the engine's figures


def test_string_tensors_cross(fe: FrontEnd) -> None:
    strings = np.array([[b"a", b""], [b"\x00 nul", "é".encode()]], dtype=object)
    with GrpcClient(f"127.0.0.1:{fe.grpc}") as client:
        assert client.predict("strings", {"x": strings})["y"].tolist() == strings.tolist()
        assert client.v2_infer("strings", {"x": strings})["y"].tolist() == strings.tolist()
    status, doc = rest_json(fe.rest, "/v1/models/strings:predict", {"instances": ["one", "two"]})
    assert status == 200 and doc["predictions"] == ["one", "two"]


def test_errors_cross_with_their_codes_and_texts(fe: FrontEnd) -> None:
    status, doc = rest_json(fe.rest, "/v1/models/nope:predict", {"instances": [1.0]})
    assert status == 404 and doc["error"] == "Servable not found for request: Latest(nope)"
    with GrpcClient(f"127.0.0.1:{fe.grpc}") as client, pytest.raises(ClientError) as caught:
        client.predict("ids", {"x": np.zeros(2, np.int64)})
    assert caught.value.code == Code.INVALID_ARGUMENT and "Expects arg[0] to be float but int64 is provided" in str(
        caught.value
    )
    status, doc = rest_json(fe.rest, "/v1/models/hpt/versions/7:predict", {"instances": [1.0]})
    assert status == 404 and doc["error"] == "Servable not found for request: Specific(hpt, 7)"


def test_a_deadline_crosses_to_the_engine(fe: FrontEnd) -> None:
    x = np.ones((512, 512), np.float32)
    status, doc = rest_json(fe.rest, "/v1/models/slow:predict", {"instances": x.tolist()})
    # --rest_api_timeout_in_ms=300 on a model that takes seconds: the engine's worker gives up
    assert (status, doc) == (504, {"error": "Deadline exceeded"})


def test_a_client_that_goes_away_cancels_its_request_in_the_engine(fe: FrontEnd) -> None:
    before = fe.engine.cancelled
    x = np.ones((512, 512), np.float32)
    channel = grpc.insecure_channel(f"127.0.0.1:{fe.grpc}", options=[("grpc.max_send_message_length", 1 << 30)])
    request = pb.PredictRequest()
    request.model_spec.name = "slow"
    request.inputs["x"].CopyFrom(make_tensor_proto(x))
    call = channel.unary_unary(
        f"/{PREDICTION_SERVICE}/Predict",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.PredictResponse.FromString,
    ).future(request)
    wait_until(lambda: fe.engine.inflight() == 1)
    call.cancel()
    wait_until(lambda: fe.engine.inflight() == 0)
    assert fe.engine.cancelled == before + 1
    channel.close()


def test_big_tensors_cross_in_shared_memory_not_in_the_control_messages(fe: FrontEnd) -> None:
    x = np.random.default_rng(0).random(16 << 20, dtype=np.float32)  # 64 MB
    (link,) = fe.engine.links
    sent, received = link.conn.sent_bytes, link.conn.received_bytes
    with GrpcClient(f"127.0.0.1:{fe.grpc}", timeout=120) as client:  # REST here has a 300 ms deadline
        y = client.v2_infer("ids", {"x": x})["y"]
    np.testing.assert_array_equal(y, x)
    assert link.conn.received_bytes - received < 64 << 10  # control data only, both ways
    assert link.conn.sent_bytes - sent < 64 << 10


def test_a_version_swap_is_resolved_by_the_engine_for_every_request(fe: FrontEnd, tmp_path: Path) -> None:
    """v2 of "swap" takes int64 (v1 float): TF REST bodies are decoded by the version the engine resolves
    (RETRY when the front end's state is behind), and no request fails during the swap."""
    config = fe.st.server.manager.configs()["swap"]
    failures: list[Any] = []
    answers: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            request = urllib.request.Request(
                f"http://127.0.0.1:{fe.rest}/v1/models/swap:predict", b'{"instances": [3, 4]}', method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    answers.append(answer.read().decode())
            except Exception as exc:
                failures.append(exc)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        wait_until(lambda: len(answers) > 5)
        om.write(Path(config.base_path), 2, om.identity(TensorProto.INT64, None))
        fe.st.server.manager.poll(["swap"])
        wait_until(lambda: fe.st.server.manager.available_versions("swap") == (2,))
        seen = len(answers)
        wait_until(lambda: len(answers) > seen + 5)
    finally:
        stop.set()
        thread.join(60)
    assert failures == []
    assert all(json.loads(a)["predictions"] in ([3.0, 4.0], [3, 4]) for a in answers)
    assert '"predictions": [3, 4]' in answers[-1].replace(",", ", ").replace("  ", " ") or json.loads(answers[-1])[
        "predictions"
    ] == [3, 4]
    assert "3.0" not in answers[-1]


def test_a_drain_reaches_the_front_end_and_a_killed_front_end_frees_its_arenas_in_the_engine(tmp_path: Path) -> None:
    config = repository(tmp_path)
    with running_server(f"--model_config_file={config}") as st:
        gc.collect()
        baseline = len(os.listdir("/proc/self/fd"))
        with front_end(st, f"--model_config_file={config}") as frontend:
            with RestClient(f"http://127.0.0.1:{frontend.rest}") as rest:
                for size in (10, 1 << 20, 4 << 20):  # several segments each way
                    x = np.ones(size, np.float32)
                    np.testing.assert_array_equal(rest.v2_infer("ids", {"x": x})["y"], x)
            assert len(os.listdir("/proc/self/fd")) > baseline
            st.server.core.drain()  # the engine's drain reaches the front end with its state
            wait_until(lambda: not ready(frontend.rest))
            frontend.proc.send_signal(signal.SIGKILL)
            frontend.proc.wait(30)
            wait_until(lambda: not frontend.engine.links)
        gc.collect()
        wait_until(lambda: len(os.listdir("/proc/self/fd")) == baseline)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


def test_a_body_decoded_for_a_version_the_engine_no_longer_resolves_is_decoded_again(tmp_path: Path) -> None:
    """RETRY, made certain: a front end's state one swap behind (v1 float) decodes by v1; the engine resolves
    v2 (int64), answers RETRY with v2's signatures, and the body is decoded again by them."""
    config = repository(tmp_path)
    with running_server(f"--model_config_file={config}") as st:
        engine_end, front_end_end = wire.pair()
        memory = MemoryBudget(1 << 30, 1 << 28)
        remote = RemoteCore(memory, 1 << 30)

        async def connect() -> Engine:
            engine = Engine(st.server.core, 1 << 30)
            engine.attach(engine_end)
            await remote.connect(front_end_end)
            return engine

        engine = asyncio.run_coroutine_threadsafe(connect(), st.loop).result(30)
        stale = remote.manager.state
        om.write(tmp_path / "swap", 2, om.identity(TensorProto.INT64, None))
        st.server.manager.poll(["swap"])
        wait_until(lambda: st.server.manager.available_versions("swap") == (2,))
        decoded_by: list[str] = []

        def decode(signatures: Any) -> dict[str, np.ndarray]:
            dtype = to_numpy(signatures["serving_default"].inputs["x"].dtype)
            decoded_by.append(np.dtype(dtype).name)
            return {"x": np.array([3, 4], dtype)}

        async def predict() -> Any:
            remote.manager.state = stale  # one swap behind
            return await remote.predict(InferenceRequest(ModelSpec("swap"), decode))

        response = asyncio.run_coroutine_threadsafe(predict(), st.loop).result(30)
        assert decoded_by == ["float32", "int64"]
        assert response.version == 2 and response.outputs["y"].dtype == np.int64
        assert response.outputs["y"].tolist() == [3, 4]

        async def close() -> None:
            remote.close()
            engine.close()

        asyncio.run_coroutine_threadsafe(close(), st.loop).result(30)
