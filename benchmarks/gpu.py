"""GPU serving: a ResNet-50-shaped torch model with batching vs raw torch on the same GPU; two capped models.

    python benchmarks/gpu.py [--device=cuda:0] [--seconds=8] [--concurrency=1,8,32,64,128]
                             [--instances=1,2] [--max-batch=128] [--timeout-us=5000] [--rows=1]
                             [--quick] [--out=FILE]

The model is a ResNet-50 (bottleneck blocks 3-4-6-3, 25.6 M parameters) built in code with seeded
random weights, exported with ``torch.export`` (dynamic batch) and served as ``model.pt2``. It takes
uint8 images [N, 224, 224, 3] (150 KB a row, what a client sends) and normalises them on the device.

1. **Raw torch**, in this process, on the same device: the exported program, each batch size from 1 to
   256, inputs copied to the device and logits back each call (as the server does). Its best rows/s
   is the limit the ratios divide by.
2. **Served**: ``modelserve`` in its own process with ``--enable_batching`` and the model placed on
   the device with ``placement { instances: N }``; gRPC Predict requests of one image (``--rows``)
   from a closed-loop Python load generator (``grpc_load.py``, spawned client processes) at each
   concurrency. Answers are checked against raw torch first. Target: >= 0.85 x the raw best at high
   concurrency.
3. **Two models on one GPU**: the ResNet (memory cap 6 GiB) and a large MLP 4096-8192-8192-1000
   (436 MB of weights, cap 2 GiB) in one server; each alone, then both loaded at once; with the memory
   each instance reports on ``/v1/models/NAME/instances``.

``--device=cpu --quick`` runs the same steps with a tiny ResNet and MLP (32x32 images, 2 s cells) to
check the script end to end on a machine without a GPU. With ``$OUT`` set (the GPU machine) the JSON
results go to ``$OUT/gpu_bench.json`` unless ``--out`` says otherwise. scripts/gpu_check.sh runs it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grpc_load
from common import ROOT, free_port, pinned, python, wait_http

sys.path.insert(0, str(ROOT))
from modelserve.codecs.tensor_proto import from_ndarray
from modelserve.protos import pb

RAW_SIZES = [1, 8, 16, 32, 64, 128, 256]
RESNET_CAP = 6 << 30
MLP_CAP = 2 << 30


@dataclass(frozen=True)
class Shape:
    """Sizes of the benchmark's two models (full or --quick)."""

    image: int = 224
    blocks: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64
    classes: int = 1000
    mlp: tuple[int, ...] = (4096, 8192, 8192, 1000)


QUICK = Shape(image=32, blocks=(1, 1, 1, 1), width=8, classes=10, mlp=(64, 128, 128, 10))


# ---- the models (torch is imported only here and in raw_rates: client processes never load it) ----


def build_resnet(shape: Shape) -> Any:
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            cout = width * 4
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
            nn.init.constant_(self.bn3.weight, 0.2)  # keeps random activations in range through 16 blocks
            self.down = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            return torch.relu(self.bn3(self.conv3(y)) + self.down(x))

    class ResNet(nn.Module):
        """uint8 NHWC images in, logits out (normalisation on the device)."""

        def __init__(self) -> None:
            super().__init__()
            w = shape.width
            self.stem = nn.Sequential(
                nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            )
            layers, cin = [], w
            for stage, count in enumerate(shape.blocks):
                width = w * 2**stage
                for i in range(count):
                    layers.append(Bottleneck(cin, width, 2 if i == 0 and stage > 0 else 1))
                    cin = width * 4
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(cin, shape.classes)
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = (images.permute(0, 3, 1, 2).float() - self.mean) / self.std
            x = self.layers(self.stem(x))
            return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(0)
    return ResNet().eval()


def build_mlp(shape: Shape) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(1)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(shape.mlp, shape.mlp[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(shape.mlp) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def export(
    module: Any, example: Any, folder: Path, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]
) -> Path:
    """``folder/1/model.pt2`` (dynamic batch) and its signature.json; returns the version folder."""
    import torch

    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(version / "model.pt2"))
    (version / "signature.json").write_text(json.dumps({"inputs": inputs, "outputs": outputs}))
    return version


def write_models(shape: Shape, work: Path) -> None:
    import torch

    h = shape.image
    export(
        build_resnet(shape),
        torch.zeros(2, h, h, 3, dtype=torch.uint8),
        work / "resnet",
        [{"name": "images", "dtype": "uint8", "shape": [-1, h, h, 3]}],
        [{"name": "logits", "dtype": "float32", "shape": [-1, shape.classes]}],
    )
    export(
        build_mlp(shape),
        torch.zeros(2, shape.mlp[0]),
        work / "mlp",
        [{"name": "features", "dtype": "float32", "shape": [-1, shape.mlp[0]]}],
        [{"name": "scores", "dtype": "float32", "shape": [-1, shape.mlp[-1]]}],
    )


def resnet_input(shape: Shape, rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (rows, shape.image, shape.image, 3), dtype=np.uint8)


def mlp_input(shape: Shape, rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, shape.mlp[0])).astype(np.float32)


# ---- 1. raw torch ----------------------------------------------------------------------------------


def load_program(version: Path, device: str) -> Any:
    import torch
    from torch.export.passes import move_to_device_pass

    program = torch.export.load(str(version / "model.pt2"))
    if device != "cpu":
        program = move_to_device_pass(program, torch.device(device))
    return program.module()


def raw_rates(module: Any, make: Any, device: str, sizes: Sequence[int], seconds: float) -> dict[int, float]:
    """Rows/s of ``module`` at each batch size: input to the device, output back, one call at a time."""
    import torch

    rates: dict[int, float] = {}
    with torch.inference_mode():
        for size in sizes:
            x = make(size)
            warm = time.perf_counter() + max(0.5, seconds / 4)
            while time.perf_counter() < warm:  # cuDNN plans, the allocator's pools, CPU caches
                module(torch.from_numpy(x).to(device)).cpu()
            calls, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds:
                module(torch.from_numpy(x).to(device)).cpu()
                calls += 1
            rates[size] = calls * size / elapsed
            print(f"    raw batch {size:>4}: {rates[size]:9.1f} rows/s", flush=True)
    return rates


def raw_answer(module: Any, x: np.ndarray, device: str) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out: np.ndarray = module(torch.from_numpy(x).to(device)).cpu().numpy()
    return out


# ---- 2. the server ---------------------------------------------------------------------------------


@dataclass
class Server:
    rest: int
    grpc: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def instances(self, model: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.rest}/v1/models/{model}/instances"
        with urllib.request.urlopen(url, timeout=30) as answer:
            found: list[dict[str, Any]] = json.loads(answer.read())["model_version_instances"][0]["instances"]
        return found


def models_config(work: Path, placements: dict[str, str]) -> str:
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{work / name}" model_platform: "pytorch" '
        f"placement {{ {placement} }} }}\n"
        for name, placement in placements.items()
    )
    return "model_config_list {\n" + entries + "}\n"


@contextlib.contextmanager
def serve(work: Path, name: str, placements: dict[str, str], batching: str) -> Iterator[Server]:
    config = work / f"{name}.config"
    config.write_text(models_config(work, placements))
    params = work / f"{name}.batching"
    params.write_text(batching)
    rest, grpc_port = free_port(), free_port()
    log = work / f"{name}.log"
    cmd = [
        python(),
        "-m",
        "modelserve",
        f"--port={grpc_port}",
        f"--rest_api_port={rest}",
        f"--model_config_file={config}",
        "--enable_batching",
        f"--batching_parameters_file={params}",
        "--grpc_max_threads=512",
        "--file_system_poll_wait_seconds=0",
        "--max_num_load_retries=0",
    ]
    with pinned(cmd, None, log=log):  # unpinned, from the checkout (cwd)
        try:
            wait_http(f"http://127.0.0.1:{rest}/v1/models/{next(iter(placements))}", timeout=300)
        except OSError:
            raise SystemExit(f"server did not start; its log:\n{log.read_text()[-4000:]}") from None
        yield Server(rest, grpc_port, log)


def batching_text(max_batch: int, timeout_us: int, threads: int) -> str:
    return (
        f"max_batch_size {{ value: {max_batch} }}\nbatch_timeout_micros {{ value: {timeout_us} }}\n"
        f"max_enqueued_batches {{ value: 100000 }}\nnum_batch_threads {{ value: {threads} }}\n"
    )


def request_bytes(model: str, name: str, x: np.ndarray) -> bytes:
    request = pb.PredictRequest()
    request.model_spec.name = model
    request.inputs[name].CopyFrom(from_ndarray(x))
    serialized: bytes = request.SerializeToString()
    return serialized


def check_answers(server: Server, model: str, name: str, output: str, x: np.ndarray, expected: np.ndarray) -> None:
    """The served model answers as raw torch does (one request per row, then all rows at once)."""
    from modelserve.client import GrpcClient

    scale = max(1.0, float(np.abs(expected).max()))
    with GrpcClient(server.target) as client:
        got = np.concatenate([client.predict(model, {name: x[i : i + 1]})[output] for i in range(len(x))])
        together = client.predict(model, {name: x})[output]
    for answer in (got, together):
        np.testing.assert_allclose(answer, expected, rtol=1e-3, atol=1e-3 * scale)


# ---- results ----------------------------------------------------------------------------------------


@dataclass
class Cell:
    instances: int
    concurrency: int
    rows_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    ratio: float


@dataclass
class Results:
    device: str
    device_name: str
    torch: str
    python: str
    quick: bool
    raw: dict[int, float] = field(default_factory=dict)
    raw_best: float = 0.0
    served: list[Cell] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)


def cell_line(cell: Cell) -> str:
    return (
        f"| {cell.instances} | {cell.concurrency} | {cell.rows_per_second:,.0f} | {cell.p50_ms:.1f} | "
        f"{cell.p99_ms:.1f} | {cell.ratio:.2f} | {cell.errors} |"
    )


def print_tables(results: Results) -> None:
    print(f"\n## {results.device_name} ({results.device}), torch {results.torch}, Python {results.python}")
    print(
        "\nRaw torch, rows/s by batch size: "
        + ", ".join(f"{rate:,.0f} ({size})" for size, rate in results.raw.items())
        + f"; best {results.raw_best:,.0f}"
    )
    print("\n| instances | concurrency | rows/s | p50 ms | p99 ms | x raw best | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for cell in results.served:
        print(cell_line(cell))
    shared = results.shared
    if shared:
        print(
            "\nTwo models on one device (rows/s; concurrency "
            f"{shared['concurrency']} each): resnet alone {shared['resnet_alone']:,.0f}, "
            f"mlp alone {shared['mlp_alone']:,.0f}; together resnet {shared['resnet_together']:,.0f} + "
            f"mlp {shared['mlp_together']:,.0f}"
        )
        for model in ("resnet", "mlp"):
            for i in shared["instances"][model]:
                print(
                    f"  {model}[{i['index']}] on {i['device']}: weights {i['weights_bytes']} B, "
                    f"device memory at load {i['device_memory_bytes']} B, cap {i['memory_limit_bytes']} B, "
                    f"{i['calls']} calls"
                )


# ---- main ----------------------------------------------------------------------------------------------


def measure_served(
    args: argparse.Namespace, shape: Shape, work: Path, raw_best: float, expected: np.ndarray, sample: np.ndarray
) -> list[Cell]:
    cells = []
    for instances in args.instances:
        placement = f'devices: "{args.device}" instances: {instances} memory_limit_bytes: {RESNET_CAP}'
        batching = batching_text(args.max_batch, args.timeout_us, 2 * instances)
        with serve(work, f"resnet_x{instances}", {"resnet": placement}, batching) as server:
            check_answers(server, "resnet", "images", "logits", sample, expected)
            body = request_bytes("resnet", "images", resnet_input(shape, args.rows, seed=9))
            for c in args.concurrency:
                load = grpc_load.run(server.target, body, args.rows, c, args.seconds, args.warmup, args.client_procs)
                cell = Cell(
                    instances,
                    c,
                    load.rows_per_second,
                    load.p50_ms,
                    load.p99_ms,
                    load.errors,
                    load.rows_per_second / raw_best,
                )
                error = f" first error: {load.first_error}" if load.errors else ""
                print(cell_line(cell) + error, flush=True)
                cells.append(cell)
    return cells


def measure_shared(args: argparse.Namespace, shape: Shape, work: Path) -> dict[str, Any]:
    placements = {
        "resnet": f'devices: "{args.device}" memory_limit_bytes: {RESNET_CAP}',
        "mlp": f'devices: "{args.device}" memory_limit_bytes: {MLP_CAP}',
    }
    c = args.shared_concurrency
    with serve(work, "shared", placements, batching_text(args.max_batch, args.timeout_us, 4)) as server:
        bodies = {
            "resnet": request_bytes("resnet", "images", resnet_input(shape, 1)),
            "mlp": request_bytes("mlp", "features", mlp_input(shape, 1)),
        }

        def run(model: str) -> float:
            load = grpc_load.run(server.target, bodies[model], 1, c, args.seconds, args.warmup, args.client_procs)
            if load.errors:
                print(f"    {model}: {load.errors} errors, first: {load.first_error}", flush=True)
            return load.rows_per_second

        alone = {model: run(model) for model in bodies}
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            together = dict(zip(bodies, pool.map(run, bodies), strict=True))
        return {
            "concurrency": c,
            "resnet_alone": alone["resnet"],
            "mlp_alone": alone["mlp"],
            "resnet_together": together["resnet"],
            "mlp_together": together["mlp"],
            "instances": {model: server.instances(model) for model in bodies},
        }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", default="1,8,32,64,128")
    parser.add_argument("--instances", default="1,2")
    parser.add_argument("--max-batch", type=int, default=128)
    parser.add_argument("--timeout-us", type=int, default=5000)
    parser.add_argument("--shared-concurrency", type=int, default=64)
    parser.add_argument("--rows", type=int, default=1, help="rows (images) per request in step 2")
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="tiny models and 2 s cells: checks the script")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.instances = [int(n) for n in args.instances.split(",")]
    if args.quick:
        args.seconds, args.warmup = min(args.seconds, 2.0), min(args.warmup, 1.0)
        args.shared_concurrency = min(args.shared_concurrency, 8)
    if not args.out and os.environ.get("OUT"):
        args.out = str(Path(os.environ["OUT"]) / "gpu_bench.json")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    shape = QUICK if args.quick else Shape()
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.processor()
    results = Results(args.device, name or "cpu", torch.__version__, platform.python_version(), args.quick)
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        work = Path(tmp)
        print(f"exporting the models ({'quick' if args.quick else 'ResNet-50, MLP'}) ...", flush=True)
        write_models(shape, work)
        print("1. raw torch", flush=True)
        module = load_program(work / "resnet" / "1", args.device)
        sizes = [s for s in RAW_SIZES if not args.quick or s <= 64]
        results.raw = raw_rates(module, lambda n: resnet_input(shape, n, seed=n), args.device, sizes, args.seconds / 2)
        results.raw_best = max(results.raw.values())
        sample = resnet_input(shape, 4, seed=7)
        expected = raw_answer(module, sample, args.device)
        del module
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        print(f"2. served, gRPC requests of {args.rows} row(s)", flush=True)
        results.served = measure_served(args, shape, work, results.raw_best, expected, sample)
        print("3. two models on one device, with memory caps", flush=True)
        results.shared = measure_shared(args, shape, work)
    print_tables(results)
    if args.out:
        Path(args.out).write_text(json.dumps(asdict(results), indent=1))
        print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
