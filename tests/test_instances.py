"""Model instances on the CPU: dispatch to idle instances, the batcher running one batch per instance,
memory caps that refuse a model without disturbing the others, CUDA fallbacks that are logged, and the
``/v1/models/NAME/instances`` status extension. Expected values come from numpy; no timing is asserted.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from modelserve.client import GrpcClient
from modelserve.errors import ResourceExhausted
from modelserve.execution.batching import Batcher, BatchingParameters, BatchScheduler
from modelserve.execution.instances import InstanceGroup, PlacedLoader
from modelserve.execution.placement import Placement
from modelserve.execution.runner import run_inline
from modelserve.lifecycle.config import ModelConfig
from modelserve.platforms import LoadOptions
from modelserve.platforms.devices import Inventory
from modelserve.platforms.servable import InstanceStatus
from modelserve.signatures import DEFAULT_SIGNATURE
from modelserve.testing import EchoServable, ServerThread, running_server

from . import onnx_models as om

WEIGHTS = om.random_weights([6, 32, 32, 3], seed=5)
WAIT = 30.0  # barrier timeouts: only a broken dispatcher ever waits this long


class Gate(EchoServable):
    """An instance that records how many calls it runs at once, and can hold calls at a barrier."""

    def __init__(self, tag: float, barrier: threading.Barrier | None = None) -> None:
        super().__init__(tag)
        self.barrier = barrier
        self.running = 0
        self.most = 0
        self.calls = 0
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def predict(self, signature: str, inputs: Any, output_filter: Any = ()) -> dict[str, Any]:
        with self._lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
        self.entered.set()
        try:
            if self.barrier is not None:
                self.barrier.wait(WAIT)
            return super().predict(signature, inputs, output_filter)
        finally:
            with self._lock:
                self.running -= 1


def group(gates: list[Gate], exclusive: bool = True) -> InstanceGroup:
    statuses = [InstanceStatus(i, "cpu", "cpu", None, None, 0) for i in range(len(gates))]
    return InstanceGroup(gates, statuses, exclusive)


def call(instances: InstanceGroup, value: float) -> float:
    return float(instances.predict(DEFAULT_SIGNATURE, {"x": np.array([value], np.float32)})["y"][0])


# ---- InstanceGroup ---------------------------------------------------------------------------


def test_concurrent_calls_run_on_as_many_instances_at_once() -> None:
    # Three calls meet at a barrier inside the instances: they pass only if three instances run at once.
    barrier = threading.Barrier(3)
    gates = [Gate(100.0 * i, barrier) for i in range(3)]
    instances = group(gates)
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda v: call(instances, v), [1.0, 2.0, 3.0]))
    assert sorted(a % 100 for a in answers) == [1.0, 2.0, 3.0]
    assert [g.calls for g in gates] == [1, 1, 1]
    assert [s.calls for s in instances.instance_status()] == [1, 1, 1]


def test_each_instance_runs_one_call_at_a_time_and_answers_are_right() -> None:
    gates = [Gate(1000.0 * (i + 1)) for i in range(3)]
    instances = group(gates)
    values = [float(v) for v in range(120)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda v: call(instances, v), values))
    assert [a % 1000 for a in answers] == values  # each caller got its own value back
    assert max(g.most for g in gates) == 1
    assert sum(g.calls for g in gates) == 120 and all(g.calls > 0 for g in gates)


def test_idle_instances_take_turns() -> None:
    gates = [Gate(0.0) for _ in range(3)]
    instances = group(gates)
    for v in range(6):
        call(instances, v)
    assert [g.calls for g in gates] == [2, 2, 2]


def test_a_shared_instance_runs_concurrent_calls() -> None:
    # The default placement: one instance, as TF Serving runs a model, shared by concurrent calls.
    barrier = threading.Barrier(2)
    gate = Gate(0.0, barrier)
    instances = group([gate], exclusive=False)
    assert instances.instance_count == 1
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda v: call(instances, v), [1.0, 2.0]))
    assert gate.most == 2
    assert instances.instance_status()[0].calls == 2


def test_the_batcher_runs_one_batch_per_instance_at_once() -> None:
    # Two single-row requests; the second comes once the first's batch runs. With two instances the
    # second runs at once on the other one (both meet at the barrier); with one, it would wait out the
    # 60 s batch timeout and the barrier would break.
    barrier = threading.Barrier(2)
    gates = [Gate(0.0, barrier), Gate(10.0, barrier)]
    instances = group(gates)
    assert instances.instance_count == 2
    params = BatchingParameters(max_batch_size=4, batch_timeout_micros=60_000_000, num_batch_threads=2)
    scheduler = BatchScheduler(2)
    batcher = Batcher(scheduler, instances, params, "m", 1)

    def request(value: float) -> float:
        answer = run_inline(batcher.predict(DEFAULT_SIGNATURE, {"x": np.array([value], np.float32)}))
        return float(answer["y"][0])

    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(request, 1.0)
            assert gates[0].entered.wait(WAIT)  # its batch runs on the first instance
            second = pool.submit(request, 2.0)
            answers = [first.result(WAIT), second.result(WAIT)]
        assert answers == [1.0, 12.0]
        assert [s.calls for s in instances.instance_status()] == [1, 1]
    finally:
        batcher.close()
        scheduler.close()


# ---- PlacedLoader on the CPU ------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("instances")
    om.write(root / "mlp", 1, om.mlp(WEIGHTS))
    om.write(root / "small", 1, om.half_plus_two())
    return root


def config(repo: Path, name: str, placement: Placement) -> ModelConfig:
    return ModelConfig(name, str(repo / name), "onnx", placement=placement)


def test_loader_places_instances_and_reports_them(repo: Path) -> None:
    loader = PlacedLoader(LoadOptions(intra_op_threads=1), Inventory())
    loaded = loader(config(repo, "mlp", Placement(("cpu",), 3, 10 << 20)), repo / "mlp" / "1")
    try:
        size = (repo / "mlp" / "1" / "model.onnx").stat().st_size
        statuses = loaded.instance_status()
        assert [(s.index, s.device, s.requested_device, s.weights_bytes, s.memory_limit_bytes) for s in statuses] == [
            (i, "cpu", "cpu", size, (10 << 20) // 3) for i in range(3)
        ]
        assert all(s.device_memory_bytes is None for s in statuses)  # no device memory on a CPU
        x = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
        for _ in range(3):
            out = loaded.predict(DEFAULT_SIGNATURE, {"input": x})["output"]
            np.testing.assert_allclose(out, om.mlp_reference(WEIGHTS, x), rtol=1e-4, atol=1e-5)
        assert [s.calls for s in loaded.instance_status()] == [1, 1, 1]
    finally:
        loaded.close()


def test_cpu_loads_run_in_parallel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Only GPU loads are serialized (to read each one's device memory); two models loading on the
    # CPU at once must both be inside their platform's loader together, or the barrier breaks.
    barrier = threading.Barrier(2, timeout=WAIT)

    def load(folder: Path, options: LoadOptions) -> EchoServable:
        barrier.wait()
        return EchoServable()

    monkeypatch.setattr("modelserve.platforms.loader", lambda platform: load)
    loader = PlacedLoader(LoadOptions(), Inventory())
    models = [ModelConfig(name, str(tmp_path / name), "onnx", placement=Placement(("cpu",))) for name in "ab"]
    with ThreadPoolExecutor(2) as pool:
        groups = list(pool.map(lambda m: loader(m, tmp_path / m.name / "1"), models))
    assert [g.instance_status()[0].device for g in groups] == ["cpu", "cpu"]


def test_a_model_over_its_cap_fails_with_resource_exhausted(repo: Path) -> None:
    loader = PlacedLoader(LoadOptions(), Inventory())
    with pytest.raises(ResourceExhausted) as caught:
        loader(config(repo, "mlp", Placement(("cpu",), 2, 4096)), repo / "mlp" / "1")
    size = (repo / "mlp" / "1" / "model.onnx").stat().st_size
    assert str(caught.value) == (
        f"Model mlp does not fit on cpu: its weights ({size / 1024:.2f} KiB ({size} bytes)) exceed its "
        "memory limit there (2.00 KiB (2048 bytes))"
    )


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="this onnxruntime has a CUDA provider: there is no fallback to see",
)
def test_onnx_on_a_gpu_without_the_cuda_provider_falls_back_to_cpu_loudly(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # As if one GPU were visible: the default device is cuda:0, but this onnxruntime is the CPU build.
    loader = PlacedLoader(LoadOptions(), Inventory(("0",)))
    with caplog.at_level(logging.WARNING, "modelserve.platforms.onnx"):
        loaded = loader(config(repo, "small", Placement()), repo / "small" / "1")
    try:
        assert (
            "device cuda:0 requested but onnxruntime has no CUDA provider (install modelserve[gpu]); "
            "running on CPU" in caplog.text
        )
        status = loaded.instance_status()[0]
        assert (status.device, status.requested_device) == ("cpu", "cuda:0")
        out = loaded.predict(DEFAULT_SIGNATURE, {"x": np.array([1.0, 4.0], np.float32)})["y"]
        np.testing.assert_allclose(out, [2.5, 4.0])
    finally:
        loaded.close()


def test_torch_on_a_gpu_without_cuda_falls_back_to_cpu_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch = pytest.importorskip("torch", reason="needs the torch extra")
    if torch.cuda.is_available():
        pytest.skip("torch has CUDA here: there is no fallback to see")
    from . import torch_models as tm

    tm.mlp_pt2(tmp_path / "m", WEIGHTS)
    loader = PlacedLoader(LoadOptions(), Inventory(("0",)))
    model = ModelConfig("m", str(tmp_path / "m"), "pytorch", placement=Placement(("cuda:0",), 2))
    with caplog.at_level(logging.WARNING, "modelserve.platforms.pytorch"):
        loaded = loader(model, tmp_path / "m" / "1")
    try:
        assert "device cuda:0 requested but torch has no CUDA here; running on CPU" in caplog.text
        assert [(s.device, s.requested_device) for s in loaded.instance_status()] == [("cpu", "cuda:0")] * 2
        x = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
        out = loaded.predict(DEFAULT_SIGNATURE, {"input": x})["output"]
        np.testing.assert_allclose(out, om.mlp_reference(WEIGHTS, x), rtol=1e-4, atol=1e-5)
    finally:
        loaded.close()


# ---- a real server -----------------------------------------------------------------------------


def write_config(repo: Path, name: str, entries: Mapping[str, str]) -> Path:
    path = repo / name
    path.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{model}" base_path: "{repo / folder}" model_platform: "onnx" {extra} }}\n'
            for model, (folder, extra) in ((m, e.split("|", 1)) for m, e in entries.items())
        )
        + "}\n"
    )
    return path


@pytest.fixture(scope="module", params=["direct", "batching"])
def server(request: pytest.FixtureRequest, repo: Path) -> Iterator[ServerThread]:
    models = write_config(
        repo,
        f"models_{request.param}.config",
        {
            "mlp": 'mlp|placement { devices: "cpu" instances: 3 }',
            "small": "small|",
        },
    )
    batching = repo / "batching.txt"
    batching.write_text(
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000 }\n"
        "num_batch_threads { value: 4 }\nmax_enqueued_batches { value: 1000 }\n"
    )
    flags = [f"--model_config_file={models}", "--tensorflow_intra_op_parallelism=1", "--max_num_load_retries=0"]
    if request.param == "batching":
        flags += ["--enable_batching", f"--batching_parameters_file={batching}"]
    with running_server(*flags) as handle:
        yield handle


def get(server: ServerThread, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(server.rest_url + path, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_concurrent_requests_get_their_own_answers_from_every_instance(server: ServerThread) -> None:
    def client(seed: int) -> None:
        with GrpcClient(server.grpc_target) as grpc_client:
            for i in range(6):
                x = np.random.default_rng(seed * 10 + i).standard_normal((1 + i % 3, 6)).astype(np.float32)
                out = grpc_client.predict("mlp", {"input": x})["output"]
                np.testing.assert_allclose(out, om.mlp_reference(WEIGHTS, x), rtol=1e-4, atol=1e-5)

    with ThreadPoolExecutor(12) as pool:
        for future in [pool.submit(client, seed) for seed in range(12)]:
            future.result()
    status, body = get(server, "/v1/models/mlp/instances")
    assert status == 200, body
    (version,) = body["model_version_instances"]
    assert (version["version"], version["state"]) == ("1", "AVAILABLE")
    instances = version["instances"]
    assert [(i["index"], i["device"], i["requested_device"]) for i in instances] == [
        (0, "cpu", "cpu"),
        (1, "cpu", "cpu"),
        (2, "cpu", "cpu"),
    ]
    assert all(i["calls"] > 0 for i in instances)
    assert sum(i["calls"] for i in instances) <= 72  # 72 requests; batching merges some


def test_status_endpoint_keeps_tf_serving_shape(server: ServerThread) -> None:
    status, body = get(server, "/v1/models/mlp")
    assert (status, body) == (
        200,
        {
            "model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        },
    )
    status, body = get(server, "/v1/models/small/versions/1/instances")
    assert status == 200
    (instance,) = body["model_version_instances"][0]["instances"]
    assert instance["device"] == "cpu" and instance["memory_limit_bytes"] == 0
    assert get(server, "/v1/models/nope/instances") == (404, {"error": "Could not find any versions of model nope"})


def test_a_model_that_does_not_fit_fails_alone(server: ServerThread, repo: Path) -> None:
    # Add a model whose cap is below its weights: its load fails with RESOURCE_EXHAUSTED, naming the model,
    # device and sizes; the models already serving keep answering.
    models = write_config(
        repo,
        f"models_big_{id(server)}.config",
        {
            "mlp": 'mlp|placement { devices: "cpu" instances: 3 }',
            "small": "small|",
            "big": 'mlp|placement { devices: "cpu" memory_limit_bytes: 1024 }',
        },
    )
    from modelserve.lifecycle.config import read_model_config_file

    with pytest.raises(Exception, match="big") as caught:
        server.server.core.reload_and_wait(read_model_config_file(str(models)))
    assert "RESOURCE_EXHAUSTED: Model big does not fit on cpu: its weights" in str(caught.value)
    server.settle()  # a reload made in-process: every front-end process has its state
    status, body = get(server, "/v1/models/big")
    assert status == 200
    (row,) = body["model_version_status"]
    assert row["state"] == "END" and row["status"]["error_code"] == "RESOURCE_EXHAUSTED"
    assert "exceed its memory limit there (1.00 KiB (1024 bytes))" in row["status"]["error_message"]
    with GrpcClient(server.grpc_target) as grpc_client:
        x = np.ones((2, 6), np.float32)
        np.testing.assert_allclose(
            grpc_client.predict("mlp", {"input": x})["output"], om.mlp_reference(WEIGHTS, x), rtol=1e-4, atol=1e-5
        )
        small = grpc_client.predict("small", {"x": np.array([2.0], np.float32)})["y"]
        np.testing.assert_allclose(small, [3.0])


# ---- the GPU-side rules that need no GPU --------------------------------------------------------


def test_torch_allocator_cap_is_the_sum_of_the_caps_while_all_have_one() -> None:
    pytest.importorskip("torch", reason="needs the torch extra")
    from modelserve.platforms.pytorch import cap_fraction

    assert cap_fraction([], 1000) == 1.0
    assert cap_fraction([100, 150], 1000) == 0.25
    assert cap_fraction([100, 0], 1000) == 1.0  # one uncapped torch model lifts the cap
    assert cap_fraction([800, 800], 1000) == 1.0


def test_onnx_cuda_provider_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelserve.platforms import onnx as onnx_platform

    monkeypatch.setattr(
        onnx_platform.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert onnx_platform.providers(LoadOptions(device="cuda:1", memory_limit_bytes=1 << 30)) == [
        (
            "CUDAExecutionProvider",
            {"device_id": 1, "gpu_mem_limit": 1 << 30, "arena_extend_strategy": "kSameAsRequested"},
        ),
        "CPUExecutionProvider",
    ]
    assert onnx_platform.providers(LoadOptions(device="cuda:0")) == [
        ("CUDAExecutionProvider", {"device_id": 0}),
        "CPUExecutionProvider",
    ]
    assert onnx_platform.providers(LoadOptions(device="cpu")) == ["CPUExecutionProvider"]


def test_onnx_says_when_its_cuda_provider_did_not_start(caplog: pytest.LogCaptureFixture) -> None:
    from modelserve.platforms import onnx as onnx_platform

    class Session:
        def __init__(self, providers: list[str]) -> None:
            self._providers = providers

        def get_providers(self) -> list[str]:
            return self._providers

    wanted = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    started = Session(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_platform._running_on(started, "cuda:0", wanted) == "cuda:0"  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, "modelserve.platforms.onnx"):
        dropped = Session(["CPUExecutionProvider"])
        assert onnx_platform._running_on(dropped, "cuda:0", wanted) == "cpu"  # type: ignore[arg-type]
    assert "device cuda:0 requested but onnxruntime could not start its CUDA provider" in caplog.text
