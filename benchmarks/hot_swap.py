"""Hot swap under load: failed requests, time to first answer of a new version, p99 during swaps.

    python benchmarks/hot_swap.py [--concurrency=16] [--swaps=10] [--steady=10] [--gap=3]

A modelserve process (pinned to CPU 1, onnxruntime intra-op threads 1, --file_system_poll_wait_seconds=1)
serves an MLP (784→512→512→10) whose every version also answers its own version number. A keep-alive
HTTP/1.1 client (asyncio + uvloop, pinned to CPU 0) keeps ``concurrency`` requests in flight: first for
``steady`` seconds with nothing changing (the baseline), then while a new version folder is renamed
into the base path every ``gap`` seconds, ``swaps`` times. Reported: requests that failed (non-200 or
transport errors) or came from a version that was not the newest or the one before; for each new
version the time from its folder appearing to the first answer it gave, against the target of
poll interval + load time + 100 ms (load time = the in-process onnxruntime session creation plus
one run, median of 5, measured in the same run on CPU 1); p99 latency during swaps vs steady state.

Each gap between swaps has two halves: the first holds the swap (the poll that finds the folder, the
load, the first answers, the unload of the old version), the second is quiet. The p99 ratio compares
the swap halves with the quiet halves of the same run, interleaved, so that other work on the machine
weighs on both alike; the p99 of the steady phase before any swap is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, pinned, python, wait_http

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modelserve.demo import mlp

POLL_SECONDS = 1.0
SIZES = (784, 512, 512, 10)


def versioned_mlp(version: int) -> bytes:
    """modelserve.demo's MLP (``input`` → ``output`` [batch, 10]) plus an output ``version`` [batch]: its number."""
    model = onnx.load_from_string(mlp(SIZES, seed=version, softmax=False))
    graph = model.graph
    # version = ReduceSum(input * 0, axis 1) + v: one value per row
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.float32(0), "zero"),
            numpy_helper.from_array(np.float32(version), "v"),
            numpy_helper.from_array(np.array([1], np.int64), "axis"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Mul", ["input", "zero"], ["x0"]),
            helper.make_node("ReduceSum", ["x0", "axis"], ["s"], keepdims=0),
            helper.make_node("Add", ["s", "v"], ["version"]),
        ]
    )
    graph.output.append(helper.make_tensor_value_info("version", TensorProto.FLOAT, ["batch"]))
    return model.SerializeToString()


def stage(base: Path, version: int) -> float:
    """Write the version aside and rename it in; returns the moment it appeared."""
    staging = base.parent / f".staging-{version}"
    staging.mkdir()
    (staging / "model.onnx").write_bytes(versioned_mlp(version))
    os.rename(staging, base / str(version))
    return time.monotonic()


def load_seconds(folder: Path) -> float:
    """Median of 5: an onnxruntime session for the version, plus its first run (what a load costs)."""
    os.sched_setaffinity(0, {1})
    times = []
    x = np.zeros((1, SIZES[0]), np.float32)
    for _ in range(5):
        start = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        session.run(None, {"input": x})
        times.append(time.perf_counter() - start)
    os.sched_setaffinity(0, {0, 1})
    return statistics.median(times)


@dataclass
class Record:
    sent: float
    latency: float
    version: int  # -1: failed


@dataclass
class Load:
    records: list[Record] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: bool = False


async def read_body(reader: asyncio.StreamReader) -> bytes:
    """The body after the status line: Content-Length or chunked."""
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
        elif name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return await reader.readexactly(length)
    parts = []
    while size := int((await reader.readline()).split(b";")[0], 16):
        parts.append(await reader.readexactly(size))
        await reader.readline()
    await reader.readline()
    return b"".join(parts)


async def client(port: int, body: bytes, load: Load) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        b"POST /v1/models/m:predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    try:
        while not load.stop:
            sent = time.monotonic()
            writer.write(request)
            status_line = await reader.readline()
            payload = await read_body(reader)
            latency = time.monotonic() - sent
            if b" 200 " not in status_line:
                load.failures.append(f"{status_line!r} {payload[:200]!r}")
                load.records.append(Record(sent, latency, -1))
                continue
            version = int(json.loads(payload)["predictions"][0]["version"])
            load.records.append(Record(sent, latency, version))
    except (OSError, asyncio.IncompleteReadError) as exc:
        load.failures.append(f"transport: {exc!r}")
    finally:
        writer.close()


async def run_load(port: int, concurrency: int, body: bytes, load: Load) -> None:
    await asyncio.gather(*(client(port, body, load) for _ in range(concurrency)))


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99)) * 1000 if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--steady", type=float, default=10.0)
    parser.add_argument("--gap", type=float, default=3.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-hot-swap-"))
    base = work / "m"
    base.mkdir()
    stage(base, 1)
    load_time = load_seconds(base / "1")
    rest, grpc = free_port(), free_port()
    cmd = [
        python(),
        "-m",
        "modelserve",
        "--model_name=m",
        f"--model_base_path={base}",
        f"--port={grpc}",
        f"--rest_api_port={rest}",
        "--host=127.0.0.1",
        f"--file_system_poll_wait_seconds={int(POLL_SECONDS)}",
        "--tensorflow_intra_op_parallelism=1",
        "--num_inference_threads=1",
    ]
    body = json.dumps({"instances": np.random.default_rng(0).random((1, SIZES[0])).round(4).tolist()}).encode()
    os.sched_setaffinity(0, {0})
    import uvloop

    with pinned(cmd, "1"):
        wait_http(f"http://127.0.0.1:{rest}/v1/models/m")
        load = Load()

        async def scenario() -> tuple[float, float, list[tuple[int, float]]]:
            task = asyncio.ensure_future(run_load(rest, args.concurrency, body, load))
            await asyncio.sleep(2)  # warm the connections up
            steady_start = time.monotonic()
            await asyncio.sleep(args.steady)
            swap_start = time.monotonic()
            appeared = []
            for version in range(2, 2 + args.swaps):
                appeared.append((version, await asyncio.to_thread(stage, base, version)))
                await asyncio.sleep(args.gap)
            load.stop = True
            await task
            return steady_start, swap_start, appeared

        steady_start, swap_start, appeared = uvloop.run(scenario())

    # Each gap is two halves: the first holds the swap (poll, load, first answers, unload), the second
    # is quiet. Comparing interleaved halves keeps noise from other processes out of the ratio.
    half = args.gap / 2
    swapping = [r.latency for r in load.records if any(at <= r.sent < at + half for _, at in appeared)]
    quiet = [r.latency for r in load.records if any(at + half <= r.sent < at + args.gap for _, at in appeared)]
    steady = [r.latency for r in load.records if steady_start <= r.sent < swap_start]
    first_answer = []
    for version, at in appeared:
        served = [r.sent + r.latency for r in load.records if r.version == version]
        first_answer.append(min(served) - at if served else float("nan"))
    # Every answer must come from the newest version or the one before it (swaps are seconds apart).
    newest = 1
    stale = 0
    for record in sorted(load.records, key=lambda r: r.sent + r.latency):
        if record.version > newest:
            newest = record.version
        elif record.version >= 0 and record.version < newest - 1:
            stale += 1
    failed = len(load.failures) + stale
    target = POLL_SECONDS + load_time + 0.1
    print(
        json.dumps(
            {
                "requests": len(load.records),
                "failed": failed,
                "failures": load.failures[:5],
                "first_answer_s": [round(t, 3) for t in first_answer],
                "load_s": round(load_time, 4),
                "p99_steady_ms": round(p99(steady), 2),
                "p99_quiet_halves_ms": round(p99(quiet), 2),
                "p99_swap_halves_ms": round(p99(swapping), 2),
            },
            indent=1,
        )
    )
    print()
    print("| measure | result | target |")
    print("| --- | --- | --- |")
    print(f"| requests (c={args.concurrency}) | {len(load.records)} | |")
    print(f"| failed requests during {args.swaps} swaps | {failed} | 0 |")
    print(
        f"| folder appears → first answer, median (max) | {statistics.median(first_answer):.3f} s "
        f"({max(first_answer):.3f} s) | ≤ {target:.3f} s (poll {POLL_SECONDS:.0f} s + load "
        f"{load_time * 1000:.0f} ms + 100 ms) |"
    )
    print(f"| p99 latency, steady phase (no swaps, {args.steady:.0f} s) | {p99(steady):.2f} ms | |")
    ratio = p99(swapping) / p99(quiet)
    print(
        f"| p99 latency, quiet half-gaps → swap half-gaps (interleaved) | {p99(quiet):.2f} ms → "
        f"{p99(swapping):.2f} ms (×{ratio:.2f}) | ≤ ×2 |"
    )
    print(
        f"| throughput, steady phase → swap phase | {len(steady) / args.steady:.0f} → "
        f"{len(quiet + swapping) / (args.swaps * args.gap):.0f} req/s | |"
    )


if __name__ == "__main__":
    main()
