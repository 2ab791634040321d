"""Does ``modelserve bench`` agree with wrk and h2load? The same server, the same run, interleaved rounds.

    python benchmarks/bench_agreement.py [--seconds=5] [--rounds=3] [--concurrency=1,8,64]
                                         [--protocols=tfs-rest,tfs-grpc,v2-rest,v2-grpc] [--processes=1]

modelserve serves the small MLP (784→128→10) pinned to CPU 1 with one intra-op and one inference thread;
every generator runs pinned to CPU 0: wrk for the REST protocols (TF Serving JSON, V2 binary tensors),
h2load for the gRPC ones (the same request bytes the bench sends, as one gRPC frame). For each protocol
and concurrency it prints both tools' req/s (median of the rounds), bench / external, both p50 and p99,
the bench's busiest generator process's share of a core, and the requests per second one bench process
could send at that share (req/s / CPU share): where that is near the server's rate, the bench needs
``--processes`` to stay out of the way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import LoadResult, ensure_tools, frame_file, free_port, h2load, median, pinned, python, wait_http, wrk

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modelserve.bench.transport import http_bytes
from modelserve.bench.wire import Spec, wire
from modelserve.demo import mlp


def external(protocol: str, port: int, grpc_port: int, files: dict[str, Path], c: int, seconds: int) -> LoadResult:
    if protocol == "tfs-rest":
        return wrk(f"http://127.0.0.1:{port}/v1/models/mlp:predict", files[protocol], c, seconds, cpu="0")
    if protocol == "v2-rest":
        headers = json.loads(files["v2-rest-headers"].read_text())
        return wrk(f"http://127.0.0.1:{port}/v2/models/mlp/infer", files[protocol], c, seconds, "0", headers)
    path = {
        "tfs-grpc": "/tensorflow.serving.PredictionService/Predict",
        "v2-grpc": "/inference.GRPCInferenceService/ModelInfer",
    }[protocol]
    log = files[protocol].with_suffix(".log")
    return h2load(grpc_port, files[protocol], c, seconds, path, cpu="0", log=log)


def bench(protocol: str, port: int, grpc_port: int, c: int, seconds: int, processes: int, out: Path) -> dict:
    target = f"127.0.0.1:{grpc_port}" if protocol.endswith("grpc") else f"http://127.0.0.1:{port}"
    subprocess.run(
        ["taskset", "-c", "0", python(), "-m", "modelserve.bench", f"--target={target}", f"--protocol={protocol}",
         "--model=mlp", f"--concurrency={c}", f"--duration={seconds}", "--warmup=1", f"--processes={processes}",
         "--quiet", f"--json={out}"],
        check=True, capture_output=True,
    )  # fmt: skip
    (step,) = json.loads(out.read_text())["steps"]
    return step


def request_files(work: Path, x: np.ndarray) -> dict[str, Path]:
    """Each protocol's request as the external tool sends it: the bench's own encoding of the same input."""
    files = {}
    spec = Spec("mlp")
    for protocol in ("tfs-rest", "v2-rest", "tfs-grpc", "v2-grpc"):
        request = wire(protocol).encode(spec, {"input": x})
        if protocol.endswith("grpc"):
            files[protocol] = frame_file(work / f"{protocol}.bin", request.body)
        else:
            files[protocol] = work / f"{protocol}.body"
            files[protocol].write_bytes(request.body)
            if protocol == "v2-rest":
                headers = {k: v for k, v in request.headers}
                (work / "v2-rest-headers.json").write_text(json.dumps(headers))
                files["v2-rest-headers"] = work / "v2-rest-headers.json"
            assert http_bytes("http://x", request, None)  # the same bytes the bench replays
    return files


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--protocols", default="tfs-rest,tfs-grpc,v2-rest,v2-grpc")
    parser.add_argument("--processes", type=int, default=1, help="bench generator processes")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    protocols = args.protocols.split(",")
    ensure_tools("wrk", "h2load")

    work = Path(tempfile.mkdtemp(prefix="bench-agree-"))
    (work / "mlp" / "1").mkdir(parents=True)
    (work / "mlp" / "1" / "model.onnx").write_bytes(mlp([784, 128, 10], seed=0, softmax=True))
    x = np.random.default_rng(0).random((1, 784), dtype=np.float32)
    files = request_files(work, x)
    port, grpc_port = free_port(), free_port()
    server = [python(), "-m", "modelserve", "--model_name=mlp", f"--model_base_path={work / 'mlp'}",
              f"--rest_api_port={port}", f"--port={grpc_port}", "--file_system_poll_wait_seconds=0",
              "--tensorflow_intra_op_parallelism=1", "--num_inference_threads=1"]  # fmt: skip
    ext: dict[tuple[str, int], list[LoadResult]] = {}
    ours: dict[tuple[str, int], list[dict]] = {}
    with pinned(server, "1", log=work / "server.log"):
        wait_http(f"http://127.0.0.1:{port}/v1/models/mlp")
        for protocol in protocols:
            external(protocol, port, grpc_port, files, 8, 1)  # warm-up
        for r in range(args.rounds):
            for protocol in protocols:
                for c in levels:
                    key = (protocol, c)
                    # Alternate which tool goes first, so that drift within a round falls on both.
                    order = ("ext", "bench") if r % 2 == 0 else ("bench", "ext")
                    for tool in order:
                        if tool == "ext":
                            ext.setdefault(key, []).append(external(protocol, port, grpc_port, files, c, args.seconds))
                        else:
                            step = bench(protocol, port, grpc_port, c, args.seconds, args.processes, work / "b.json")
                            ours.setdefault(key, []).append(step)

    print(f"\nmedian of {args.rounds} rounds of {args.seconds} s; server on CPU 1, generators on CPU 0, "
          f"bench with {args.processes} process(es)")  # fmt: skip
    print("| protocol | c | external req/s | bench req/s | bench / external | p50 ms ext / bench "
          "| p99 ms ext / bench | bench CPU | one bench process could send |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (protocol, c), runs in ext.items():
        e = median(runs)
        steps = ours[(protocol, c)]
        rps = statistics.median(s["throughput"] for s in steps)
        p50 = statistics.median(s["latency_ms"]["p50"] for s in steps)
        p99 = statistics.median(s["latency_ms"]["p99"] for s in steps)
        cpu = statistics.median(s["generator_cpu"] for s in steps)
        tool = "wrk" if protocol.endswith("rest") else "h2load"
        print(
            f"| {protocol} | {c} | {e.rps:,.0f} ({tool}) | {rps:,.0f} | {rps / e.rps:.2f}x "
            f"| {e.p50_ms:.2f} / {p50:.2f} | {e.p99_ms:.2f} / {p99:.2f} | {cpu:.0%} "
            f"| {rps / args.processes / max(cpu, 1e-3):,.0f} req/s |"
        )


if __name__ == "__main__":
    main()
