"""GPU placement on a real NVIDIA GPU: torch and onnxruntime on CUDA, instances sharing a GPU, memory caps.

Every test here is marked ``gpu`` and skips, with its reason, where no CUDA GPU is visible (CI, laptops);
``pytest -m gpu`` runs them alone (scripts/gpu_check.sh does, on the H100). Models are built by the tests,
small and seeded; expected values come from numpy. No timing is asserted.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from modelserve.client import GrpcClient
from modelserve.errors import ResourceExhausted
from modelserve.execution.instances import PlacedLoader
from modelserve.execution.placement import Placement
from modelserve.lifecycle.config import ModelConfig, read_model_config_file
from modelserve.platforms import LoadOptions, devices
from modelserve.signatures import DEFAULT_SIGNATURE
from modelserve.testing import ServerThread, running_server

from . import onnx_models as om

INVENTORY = devices.detect()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not INVENTORY.cuda,
        reason="no CUDA GPU visible (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides every GPU)",
    ),
]

# 256 -> 2048 -> 2048 -> 16: about 18.9 MB of float32 weights.
SIZES = [256, 2048, 2048, 16]
WEIGHTS = om.random_weights(SIZES, seed=21)
WEIGHT_BYTES = sum(w.nbytes + b.nbytes for w, b in WEIGHTS)
CAP = 256 << 20  # per model: room for its weights and a few thousand rows of activations


def torch_cuda() -> Any:
    torch = pytest.importorskip("torch", reason="needs the torch extra")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here (a CPU build of torch)")
    return torch


def needs_onnxruntime_cuda() -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider: pip install 'modelserve[gpu]' (onnxruntime-gpu)")


def rows(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, SIZES[0])).astype(np.float32)


def close_to_numpy(out: np.ndarray, x: np.ndarray) -> None:
    # float32 on the GPU (cuBLAS may reorder sums) against float64 numpy.
    np.testing.assert_allclose(out, om.mlp_reference(WEIGHTS, x), rtol=2e-3, atol=2e-3)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch_cuda()
    from . import torch_models as tm

    root = tmp_path_factory.mktemp("gpu")
    for name in ("a", "b", "big"):
        tm.mlp_pt2(root / name, WEIGHTS)
    om.write(root / "onnx", 1, om.mlp(WEIGHTS))
    return root


def test_gpus_are_found_without_torch_and_nvml_reads_their_memory() -> None:
    torch = torch_cuda()
    assert len(INVENTORY.gpus) == torch.cuda.device_count()
    memory = devices.Nvml().memory(INVENTORY.nvml_id("cuda:0"))
    assert memory is not None
    free, total = memory
    assert 0 < free <= total
    # The driver counts a little memory that CUDA keeps for itself: the totals agree to a few percent.
    assert total == pytest.approx(torch.cuda.mem_get_info(0)[1], rel=0.05)


def test_torch_on_cuda_with_two_instances_on_one_gpu(repo: Path) -> None:
    torch = torch_cuda()
    loader = PlacedLoader(LoadOptions(), INVENTORY)
    group = loader(
        ModelConfig("a", str(repo / "a"), "pytorch", placement=Placement(("cuda:0",), 2, CAP)), repo / "a" / "1"
    )
    try:
        statuses = group.instance_status()
        assert [(s.device, s.requested_device, s.memory_limit_bytes) for s in statuses] == [
            ("cuda:0", "cuda:0", CAP // 2)
        ] * 2
        assert all(s.weights_bytes == WEIGHT_BYTES for s in statuses)
        streams = {id(i._stream) for i in group.instances}  # type: ignore[attr-defined]
        assert len(streams) == 2
        assert all(next(i._module.parameters()).is_cuda for i in group.instances)  # type: ignore[attr-defined]

        def run(seed: int) -> None:
            x = rows(seed, 1 + seed % 64)
            close_to_numpy(group.predict(DEFAULT_SIGNATURE, {"input": x})["output"], x)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(run, range(64)))
        assert all(s.calls > 0 for s in group.instance_status())
        assert sum(s.calls for s in group.instance_status()) == 64
        # Two instances capped at CAP/2 each: torch's allocator on the GPU is capped at their sum.
        total = torch.cuda.get_device_properties(0).total_memory
        from modelserve.platforms.pytorch import ALLOCATOR_CAPS

        assert ALLOCATOR_CAPS.fraction(0, total) == pytest.approx(CAP / total)
    finally:
        group.close()


def test_a_torch_model_over_its_cap_fails_before_touching_the_gpu(repo: Path) -> None:
    torch = torch_cuda()
    loader = PlacedLoader(LoadOptions(), INVENTORY)
    before = torch.cuda.memory_allocated(0)
    with pytest.raises(ResourceExhausted) as caught:
        loader(
            ModelConfig("big", str(repo / "big"), "pytorch", placement=Placement(("cuda:0",), 1, 1 << 20)),
            repo / "big" / "1",
        )
    assert str(caught.value).startswith("Model big does not fit on cuda:0: its weights (")
    limit = "exceed its memory limit there (1.00 MiB (1048576 bytes))"
    assert f"({WEIGHT_BYTES} bytes)) {limit}" in str(caught.value)
    assert torch.cuda.memory_allocated(0) == before


def test_onnxruntime_on_cuda_with_a_memory_cap(repo: Path) -> None:
    needs_onnxruntime_cuda()
    loader = PlacedLoader(LoadOptions(), INVENTORY)
    group = loader(
        ModelConfig("onnx", str(repo / "onnx"), "onnx", placement=Placement(("cuda:0",), 2, CAP)), repo / "onnx" / "1"
    )
    try:
        assert [s.device for s in group.instance_status()] == ["cuda:0", "cuda:0"]
        assert all("CUDAExecutionProvider" in i.providers for i in group.instances)  # type: ignore[attr-defined]
        for seed in range(4):
            x = rows(seed, 33)
            close_to_numpy(group.predict(DEFAULT_SIGNATURE, {"input": x})["output"], x)
    finally:
        group.close()


# ---- a real server: two capped models on one GPU, a third that does not fit ---------------------


def config_text(repo: Path, models: dict[str, str]) -> str:
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{repo / name}" model_platform: "pytorch" '
        f"placement {{ {placement} }} }}\n"
        for name, placement in models.items()
    )
    return "model_config_list {\n" + entries + "}\n"


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    path = repo / "models.config"
    path.write_text(
        config_text(
            repo,
            {
                "a": f'devices: "cuda:0" instances: 2 memory_limit_bytes: {CAP}',
                "b": f'devices: "cuda:0" memory_limit_bytes: {CAP}',
            },
        )
    )
    batching = repo / "batching.txt"
    batching.write_text(
        "max_batch_size { value: 256 }\nbatch_timeout_micros { value: 2000 }\n"
        "num_batch_threads { value: 4 }\nmax_enqueued_batches { value: 1000 }\n"
    )
    with running_server(
        f"--model_config_file={path}",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
        "--max_num_load_retries=0",
    ) as handle:
        yield handle


def instances_of(server: ServerThread, model: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{server.rest_url}/v1/models/{model}/instances", timeout=60) as answer:
        body = json.loads(answer.read())
    instances: list[dict[str, Any]] = body["model_version_instances"][0]["instances"]
    return instances


def test_two_capped_models_share_a_gpu_under_load(server: ServerThread) -> None:
    def client(seed: int) -> None:
        with GrpcClient(server.grpc_target) as grpc_client:
            for i in range(8):
                x = rows(seed * 100 + i, 1 + (seed * 7 + i) % 16)
                close_to_numpy(grpc_client.predict("ab"[seed % 2], {"input": x})["output"], x)

    with ThreadPoolExecutor(16) as pool:
        for future in [pool.submit(client, seed) for seed in range(16)]:
            future.result()
    a, b = instances_of(server, "a"), instances_of(server, "b")
    assert [(i["device"], i["memory_limit_bytes"]) for i in a] == [("cuda:0", CAP // 2)] * 2
    assert [(i["device"], i["memory_limit_bytes"]) for i in b] == [("cuda:0", CAP)]
    assert all(i["calls"] > 0 for i in a + b)
    assert all(i["weights_bytes"] == WEIGHT_BYTES for i in a + b)
    # Read from the driver (NVML) around each load: the load took device memory.
    assert all(i["device_memory_bytes"] is not None and i["device_memory_bytes"] > 0 for i in a + b)


def test_a_batch_over_the_cap_fails_alone_and_the_next_one_runs(server: ServerThread) -> None:
    # 40000 rows of 2048 float32 activations (328 MB) exceed what torch may hold on the GPU (2 x CAP).
    with server.server.manager.lease("b") as lease, pytest.raises(ResourceExhausted, match="Out of memory"):
        lease.servable.predict(DEFAULT_SIGNATURE, {"input": rows(1, 40000)})
    with GrpcClient(server.grpc_target) as grpc_client:
        x = rows(2, 8)
        close_to_numpy(grpc_client.predict("b", {"input": x})["output"], x)


def test_a_model_that_does_not_fit_fails_cleanly_and_the_others_keep_serving(server: ServerThread, repo: Path) -> None:
    torch = torch_cuda()
    path = repo / "models_big.config"
    path.write_text(
        config_text(
            repo,
            {
                "a": f'devices: "cuda:0" instances: 2 memory_limit_bytes: {CAP}',
                "b": f'devices: "cuda:0" memory_limit_bytes: {CAP}',
                "big": 'devices: "cuda:0" memory_limit_bytes: 1048576',
            },
        )
    )
    allocated = torch.cuda.memory_allocated(0)
    with pytest.raises(Exception, match="RESOURCE_EXHAUSTED: Model big does not fit on cuda:0"):
        server.server.core.reload_and_wait(read_model_config_file(str(path)))
    assert torch.cuda.memory_allocated(0) == allocated  # the failed load left nothing behind
    server.settle()  # a reload made in-process: every front-end process has its state
    with urllib.request.urlopen(f"{server.rest_url}/v1/models/big", timeout=60) as answer:
        (row,) = json.loads(answer.read())["model_version_status"]
    assert row["state"] == "END" and row["status"]["error_code"] == "RESOURCE_EXHAUSTED"
    assert "exceed its memory limit there (1.00 MiB (1048576 bytes))" in row["status"]["error_message"]
    with GrpcClient(server.grpc_target) as grpc_client:
        for model in ("a", "b"):
            x = rows(3, 5)
            close_to_numpy(grpc_client.predict(model, {"input": x})["output"], x)
