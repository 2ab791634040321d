"""Batching end to end: TF Serving's flags, a real server, plain HTTP and gRPC clients under concurrency.

Expected values come from numpy; every request must get exactly its own rows
back, whatever batch it shared. No timing is asserted anywhere.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from modelserve.codecs.tensor_proto import from_ndarray, to_ndarray
from modelserve.dtypes import DType
from modelserve.execution.batching import Batcher, BatchingParameters, BatchingRunners
from modelserve.execution.runner import DirectRunner, Runner
from modelserve.execution.workers import WorkerPool
from modelserve.lifecycle.config import ModelConfig
from modelserve.lifecycle.manager import ManagerOptions, ModelManager
from modelserve.protos import PREDICTION_SERVICE, Stub, pb
from modelserve.signatures import DEFAULT_SIGNATURE, Signature, TensorSpec
from modelserve.testing import ServerThread, running_server

from . import onnx_models as om

WEIGHTS = om.random_weights([6, 16, 16, 3], seed=11)
BATCHING = """
max_batch_size { value: 8 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 1000 }
num_batch_threads { value: 2 }
allowed_batch_sizes: 2
allowed_batch_sizes: 4
allowed_batch_sizes: 8
priority_levels { value: 2 }
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batching")
    om.write(root / "mlp", 1, om.mlp(WEIGHTS))
    om.write(root / "two", 1, om.two_in_two_out())
    (root / "models.config").write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{n}" base_path: "{root / n}" model_platform: "onnx" }}\n' for n in ("mlp", "two")
        )
        + "}\n"
    )
    (root / "batching.txt").write_text(BATCHING)
    return root


@pytest.fixture(scope="module")
def server(repo: Path, frontend_processes: int) -> Iterator[ServerThread]:
    with running_server(
        "--enable_batching",
        f"--batching_parameters_file={repo / 'batching.txt'}",
        f"--model_config_file={repo / 'models.config'}",
        "--grpc_max_threads=64",
        frontend_processes=frontend_processes,
    ) as handle:
        yield handle


def post(server: ServerThread, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        server.rest_url + path, data=json.dumps(body).encode(), headers=headers or {}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def mlp_rows(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 6)).astype(np.float32)


def runner_of(server: ServerThread, model: str) -> Runner:
    with server.server.manager.lease(model) as lease:
        return lease.runner


def test_every_concurrent_rest_request_gets_its_own_rows(server: ServerThread) -> None:
    assert isinstance(runner_of(server, "mlp"), Batcher)

    def client(seed: int) -> None:
        for i in range(8):
            x = mlp_rows(seed * 100 + i, 1 + (seed + i) % 3)  # 1-3 rows: batches pad to 2, 4 or 8
            status, body = post(server, "/v1/models/mlp:predict", {"instances": x.tolist()})
            assert status == 200, body
            np.testing.assert_allclose(
                np.array(body["predictions"]), om.mlp_reference(WEIGHTS, x), rtol=1e-4, atol=1e-5
            )
            a = x[:, :2] * 1000
            b = np.arange(len(x), dtype=np.int64) + seed * 1000 + i
            inputs = {"a": a.tolist(), "b": b.tolist()}
            status, body = post(server, "/v1/models/two:predict", {"inputs": inputs})
            assert status == 200, body
            np.testing.assert_array_equal(np.array(body["outputs"]["twice_b"]), 2 * b)
            np.testing.assert_allclose(np.array(body["outputs"]["sum"]), a + b[:, None].astype(np.float32))

    with ThreadPoolExecutor(32) as pool:
        for future in [pool.submit(client, seed) for seed in range(32)]:
            future.result()


def test_a_request_larger_than_max_batch_size_is_refused_as_tf_serving_does(server: ServerThread) -> None:
    status, body = post(server, "/v1/models/mlp:predict", {"instances": mlp_rows(1, 9).tolist()})
    assert (status, body) == (400, {"error": "Task size 9 is larger than maximum input batch size 8"})


def test_priority_and_queue_timeout_headers(server: ServerThread) -> None:
    x = mlp_rows(3, 1)
    for headers in (
        {"X-Modelserve-Priority": "1"},
        {"x-modelserve-priority": "2"},
        {"X-Modelserve-Queue-Timeout-Ms": "2.5"},
    ):
        status, body = post(server, "/v1/models/mlp:predict", {"instances": x.tolist()}, headers)
        assert status == 200, (headers, body)
    status, body = post(server, "/v1/models/mlp:predict", {"instances": x.tolist()}, {"X-ModelServe-Priority": "3"})
    message = "Priority level 3 is out of range: model mlp has 2 priority levels"
    assert (status, body) == (400, {"error": message})
    status, body = post(
        server, "/v1/models/mlp:predict", {"instances": x.tolist()}, {"X-Modelserve-Queue-Timeout-Ms": "soon"}
    )
    assert status == 400 and "x-modelserve-queue-timeout-ms" in body["error"]


def test_every_concurrent_grpc_request_gets_its_own_rows(server: ServerThread) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = Stub(channel, PREDICTION_SERVICE)

        def client(seed: int) -> None:
            for i in range(8):
                x = mlp_rows(seed * 100 + i + 50_000, 1 + (seed + i) % 3)
                request = pb.PredictRequest()
                request.model_spec.name = "mlp"
                request.inputs["input"].CopyFrom(from_ndarray(x))
                metadata = (("x-modelserve-priority", str(1 + i % 2)),)
                answer = stub.Predict(request, timeout=60, metadata=metadata)
                np.testing.assert_allclose(
                    to_ndarray(answer.outputs["output"]), om.mlp_reference(WEIGHTS, x), rtol=1e-4, atol=1e-5
                )

        with ThreadPoolExecutor(32) as pool:
            for future in [pool.submit(client, seed) for seed in range(32)]:
                future.result()

        request = pb.PredictRequest()
        request.model_spec.name = "mlp"
        request.inputs["input"].CopyFrom(from_ndarray(mlp_rows(1, 9)))
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "Task size 9 is larger than maximum input batch size 8"


def test_per_model_parameters_batch_only_the_models_that_have_them(repo: Path, tmp_path: Path) -> None:
    om.write(tmp_path / "batched", 1, om.mlp(WEIGHTS))
    (tmp_path / "batched" / "1" / "batching_params.pbtxt").write_text("max_batch_size { value: 4 }\n")
    om.write(tmp_path / "plain", 1, om.mlp(WEIGHTS))
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "batched" base_path: "{tmp_path / "batched"}" model_platform: "onnx" }}\n'
        f'  config {{ name: "plain" base_path: "{tmp_path / "plain"}" model_platform: "onnx" }}\n'
        "}\n"
    )
    with running_server(
        "--enable_batching", "--enable_per_model_batching_parameters", f"--model_config_file={config}"
    ) as handle:
        batched = runner_of(handle, "batched")
        assert isinstance(batched, Batcher) and batched.params.max_batch_size == 4
        assert isinstance(runner_of(handle, "plain"), DirectRunner)
        x = mlp_rows(5, 5)
        status, body = post(handle, "/v1/models/batched:predict", {"instances": x.tolist()})
        assert (status, body) == (400, {"error": "Task size 5 is larger than maximum input batch size 4"})
        status, body = post(handle, "/v1/models/plain:predict", {"instances": x.tolist()})
        assert status == 200
        want = om.mlp_reference(WEIGHTS, x)
        np.testing.assert_allclose(np.array(body["predictions"]), want, rtol=1e-4, atol=1e-5)


def test_per_model_parameters_are_read_from_a_remote_base_path() -> None:
    """A base path on an fsspec file system (memory:// here, as s3:// or gs:// would be): the version's
    batching_params.pbtxt comes with its folder's local copy, and is honoured."""
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    fs.pipe("/batching_remote/batched/1/model.onnx", om.mlp(WEIGHTS))
    fs.pipe("/batching_remote/batched/1/batching_params.pbtxt", b"max_batch_size { value: 4 }\n")
    fs.pipe("/batching_remote/plain/1/model.onnx", om.mlp(WEIGHTS))
    config = (
        "model_config_list {\n"
        '  config { name: "batched" base_path: "memory://batching_remote/batched" model_platform: "onnx" }\n'
        '  config { name: "plain" base_path: "memory://batching_remote/plain" model_platform: "onnx" }\n'
        "}\n"
    )
    fs.pipe("/batching_remote/models.config", config.encode())
    try:
        with running_server(
            "--enable_batching",
            "--enable_per_model_batching_parameters",
            "--model_config_file=memory://batching_remote/models.config",
        ) as handle:
            batched = runner_of(handle, "batched")
            assert isinstance(batched, Batcher) and batched.params.max_batch_size == 4
            assert isinstance(runner_of(handle, "plain"), DirectRunner)
            status, body = post(handle, "/v1/models/batched:predict", {"instances": mlp_rows(5, 5).tolist()})
            assert (status, body) == (400, {"error": "Task size 5 is larger than maximum input batch size 4"})
    finally:
        fs.rm("/batching_remote", recursive=True)


def test_an_invalid_batching_file_stops_start_up_with_tf_servings_message(repo: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("max_batch_size { value: 16 }\nallowed_batch_sizes: 8\n")
    with (
        pytest.raises(
            Exception,
            match="Last entry in allowed_batch_sizes must match max_batch_size; last entry was 8; expected 16",
        ),
        running_server(
            "--enable_batching", f"--batching_parameters_file={bad}", f"--model_config_file={repo / 'models.config'}"
        ),
    ):
        pass


# ---- a version swap while requests wait in the queue ----------------------------------------


class Tagged:
    """Answers x + version; version 1 blocks in predict until ``gate`` opens."""

    def __init__(self, version: int, gate: threading.Event, entered: threading.Semaphore) -> None:
        spec = TensorSpec("x", DType.DT_FLOAT, (-1,))
        self.signatures = {DEFAULT_SIGNATURE: Signature({"x": spec}, {"y": spec})}
        self.version = version
        self.gate = gate
        self.entered = entered

    def predict(self, signature: str, inputs: Any, output_filter: Any = ()) -> dict[str, np.ndarray]:
        if self.version == 1:
            self.entered.release()
            self.gate.wait(60)
        return {"y": inputs["x"] + self.version}

    def close(self) -> None:
        pass


def test_a_version_swap_while_requests_wait_in_the_queue_loses_none_of_them(tmp_path: Path) -> None:
    gate, entered = threading.Event(), threading.Semaphore(0)
    params = BatchingParameters(max_batch_size=8, batch_timeout_micros=60_000_000, num_batch_threads=2)
    pool = WorkerPool(1)
    runners = BatchingRunners(params, lambda model, version, folder, servable: DirectRunner(servable, pool))
    manager = ModelManager(
        ManagerOptions(file_system_poll_wait_seconds=0, max_num_load_retries=0),
        lambda config, path: Tagged(int(path.name), gate, entered),
        runners,
    )
    (tmp_path / "1").mkdir()
    manager.apply_config([ModelConfig("m", str(tmp_path))])
    manager.wait_until_settled(["m"])
    loop = asyncio.new_event_loop()

    async def call(x: float) -> np.ndarray:
        with manager.lease("m") as lease:
            outputs = await lease.runner.predict(DEFAULT_SIGNATURE, {"x": np.array([x], np.float32)})
        return outputs["y"]

    def states() -> dict[int, str]:
        return {s.version: s.state.name for s in manager.status("m")}

    try:
        first = loop.create_task(call(10))
        loop.run_until_complete(asyncio.sleep(0))
        assert entered.acquire(timeout=60)  # version 1 is busy with the first request
        waiting = [loop.create_task(call(x)) for x in (20, 30, 40)]
        loop.run_until_complete(asyncio.sleep(0))  # queued behind it; the batch timeout is a minute
        (tmp_path / "2").mkdir()
        manager.poll()
        assert manager.wait_for(lambda: states() == {2: "AVAILABLE", 1: "UNLOADING"}, 60)
        assert loop.run_until_complete(call(50)).tolist() == [52]  # new requests go to version 2
        gate.set()
        results = loop.run_until_complete(asyncio.gather(first, *waiting))
        assert [r.tolist() for r in results] == [[11], [21], [31], [41]]  # all answered by version 1
        assert manager.wait_for(lambda: states() == {2: "AVAILABLE", 1: "END"}, 60)
    finally:
        gate.set()
        manager.close()
        runners.close()
        pool.close()
        loop.close()


def test_a_grpc_call_its_client_gave_up_on_holds_no_version(tmp_path: Path) -> None:
    """gRPC runs on grpc.aio with batching: a call whose deadline passes while it runs or waits is
    answered DEADLINE_EXCEEDED (or, still queued, the batch queue's RESOURCE_EXHAUSTED), the server
    goes on, and its lease ends with it, so the version can still unload (an unload waits for every
    lease)."""
    from modelserve.client import ClientError, GrpcClient
    from modelserve.errors import Code

    om.write(tmp_path / "slow", 1, om.slow(steps=200))
    om.write(tmp_path / "half", 1, om.half_plus_two())
    with running_server(f"--model_base_path={tmp_path / 'slow'}", "--model_name=slow", "--enable_batching") as s:
        x = np.ones((512, 512), np.float32)
        with GrpcClient(s.grpc_target) as client:
            for _ in range(3):
                with pytest.raises(ClientError) as info:
                    client.predict("slow", {"x": x}, timeout=0.05)
                assert info.value.code in (Code.DEADLINE_EXCEEDED, Code.RESOURCE_EXHAUSTED)
            np.testing.assert_allclose(client.predict("slow", {"x": x})["y"], x * 0.5**200, rtol=1e-6)
        # Swap the config for another model: the slow one unloads once every lease on it has ended.
        other = [ModelConfig(name="half", base_path=str(tmp_path / "half"))]
        s.call(asyncio.to_thread(s.server.core.reload_and_wait, other), timeout=60)
        # The reload waits for what it adds; what it removes unloads in the background, once its
        # leases end: a lease the cancelled calls kept would hold it UNLOADING past the wait.
        ended = s.server.manager.wait_for(lambda: [v.state.name for v in s.server.core.status("slow")] == ["END"], 30)
        assert [v.state.name for v in s.server.core.status("slow")] == ["END"], ended


def test_a_shape_the_model_refuses_fails_alone_among_concurrent_requests(server: ServerThread) -> None:
    # No signature-shape check runs before the batcher: requests of another shape are never merged
    # with the rest (the queue keys on non-batch dims), so onnxruntime's refusal reaches only them.
    def client(seed: int) -> None:
        bad = seed % 2 == 1
        x = np.random.default_rng(seed).standard_normal((2, 5 if bad else 6)).astype(np.float32)
        status, body = post(server, "/v1/models/mlp:predict", {"instances": x.tolist()})
        if bad:
            assert status == 400, body
            assert "INVALID_ARGUMENT : Got invalid dimensions for input" in body["error"], body
        else:
            assert status == 200, body
            np.testing.assert_allclose(
                np.array(body["predictions"]), om.mlp_reference(WEIGHTS, x), rtol=1e-4, atol=1e-5
            )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client, range(16)))
    assert post(server, "/v1/models/mlp:predict", {"instances": mlp_rows(7, 1).tolist()})[0] == 200
