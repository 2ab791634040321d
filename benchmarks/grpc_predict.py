"""gRPC Predict throughput and large-tensor bandwidth: modelserve vs bare grpcio servers, same run.

    python benchmarks/grpc_predict.py [--seconds=10] [--rounds=3] [--concurrency=1,8,64]
                                      [--big-concurrency=1,8] [--mlserver-python=VENV/bin/python]

1. Small MLP (784→128→10, batch 1, tensor_content request, typed float_val answer) at each
   concurrency, against two bare servers running the same model inline (``baseline_grpc.py``):
   ``grpc.aio`` and the synchronous ``grpc.server`` with 8 threads, plus raw onnxruntime in-process.
2. A 1×224×224×3 float32 ``tensor_content`` round trip (an Identity model, the server started with
   ``--enable_serialization_as_tensor_content``) in MB/s of tensor each way, against a raw
   ``grpc.aio`` echo server that moves the same bytes without protobuf.

Every server is pinned to CPU 1 (onnxruntime intra-op threads 1); the load generator to CPU 0.
The load generator is h2load (Debian ``nghttp2-client``, installed with apt-get when missing)
replaying one prebuilt gRPC frame: it costs 10-26 % of its core at these rates where a Python
gRPC client would need more than the server's core (ghz is not installable here). h2load does not
read ``grpc-status``, so one answer of each server is checked with a real gRPC call first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ensure_tools, frame_file, free_port, h2load, mlserver_command, pinned, python
from rest_predict import raw_onnxruntime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modelserve.codecs.tensor_util import make_ndarray, make_tensor_proto
from modelserve.demo import mlp
from modelserve.protos import Stub, pb

T = TypeVar("T")
BIG_SHAPE = (1, 224, 224, 3)
PATH = "/tensorflow.serving.PredictionService/Predict"


def identity_model(shape: tuple[int, ...]) -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "identity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(shape))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def request_bytes(model: str, x: np.ndarray) -> bytes:
    request = pb.PredictRequest()
    request.model_spec.name = model
    request.inputs["input"].CopyFrom(make_tensor_proto(x))  # tensor_content, as tf.make_tensor_proto
    data: bytes = request.SerializeToString()
    return data


def first_answer(call: Callable[[], T], timeout: float, pause: float) -> T:
    """``call()``'s answer once the server gives one (a server still loading its model fails the call);
    its last RpcError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(pause)


def wait_and_check(port: int, message: bytes, expected: np.ndarray | None, timeout: float = 60) -> None:
    """Block until the server answers; check one Predict answer (h2load cannot see grpc-status)."""
    options = [("grpc.max_receive_message_length", 2**31 - 1)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout)
        stub = Stub(channel, pb.PredictionService)
        request = pb.PredictRequest.FromString(message)
        response = first_answer(lambda: stub.Predict(request, timeout=10), timeout, 0.2)
    if expected is not None:
        got = make_ndarray(response.outputs["output"])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def checked_h2load(port: int, body: Path, connections: int, seconds: int, path: str) -> float:
    """Requests per second of h2load pinned to CPU 0; a failed request stops the benchmark."""
    result = h2load(port, body, connections, seconds, path, cpu="0")
    assert result.errors == 0, f"{result.errors} failed requests (port {port}, c={connections})"
    return result.rps


def modelserve_cmd(base: Path, name: str, *extra: str) -> list[str]:
    return [
        python(),
        "-m",
        "modelserve",
        f"--model_name={name}",
        f"--model_base_path={base}",
        "--port={port}",
        "--rest_api_port=0",
        "--tensorflow_intra_op_parallelism=1",
        "--file_system_poll_wait_seconds=0",
        *extra,
    ]


@dataclass(frozen=True)
class Peer:
    """One server of a comparison: how to start it on a port, what to send, how to check an answer."""

    command: Callable[[int], list[str]]
    body: Path
    check: Callable[[int], None]
    path: str = PATH


def tf_serving_peer(command: list[str], body: Path, message: bytes, expected: np.ndarray | None) -> Peer:
    return Peer(
        lambda port: [c.replace("{port}", str(port)) for c in command],
        body,
        lambda port: wait_and_check(port, message, expected),
    )


def run_servers(peers: dict[str, Peer], levels: list[int], seconds: int, rounds: int) -> dict[str, dict[int, float]]:
    """Best req/s of each server at each concurrency over interleaved rounds.

    All servers run at once (idle ones cost nothing) and take turns, so a noisy neighbour on a
    shared machine hits every server alike; the best of the rounds is each one's figure.
    """
    results: dict[str, dict[int, float]] = {name: dict.fromkeys(levels, 0.0) for name in peers}
    with ExitStack() as stack:
        ports = {}
        for name, peer in peers.items():
            ports[name] = port = free_port()
            stack.enter_context(pinned(peer.command(port), "1"))
        for name, port in ports.items():
            peers[name].check(port)
            checked_h2load(port, peers[name].body, 8, 2, peers[name].path)  # warm-up
        for _ in range(rounds):
            for c in levels:
                for name, port in ports.items():
                    rps = checked_h2load(port, peers[name].body, c, seconds, peers[name].path)
                    results[name][c] = max(results[name][c], rps)
            print(
                "  "
                + "; ".join(
                    f"{name}: " + ", ".join(f"{r:,.0f}" for r in by_c.values()) for name, by_c in results.items()
                ),
                flush=True,
            )
    return results


# --- MLServer as a peer (its own virtual environment: docs/benchmarking.md) -----------------------


def mlserver_peer(mlserver_python: str, work: Path, model: Path, x: np.ndarray, expected: np.ndarray) -> Peer:
    """MLServer 1.7 V2 gRPC, ``parallel_workers: 0`` (its fastest mode), the same ONNX file."""
    request = pb.ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    message = request.SerializeToString()
    body = frame_file(work / "v2.bin", message)

    def command(port: int) -> list[str]:
        return mlserver_command(mlserver_python, work / "mlserver", model, http_port=free_port(), grpc_port=port)

    def check(port: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            infer = Stub(channel, pb.GRPCInferenceService).ModelInfer
            request = pb.ModelInferRequest.FromString(message)
            response = first_answer(lambda: infer(request, timeout=10), 120, 0.5)
        out = response.outputs[0]
        got = (
            np.frombuffer(response.raw_output_contents[0], np.float32)
            if response.raw_output_contents
            else np.array(out.contents.fp32_contents, np.float32)
        )
        np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-5, atol=1e-6)

    return Peer(command, body, check, "/inference.GRPCInferenceService/ModelInfer")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--big-concurrency", default="1,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mlserver-python", default="", help="python of a venv with mlserver==1.7.1 + onnxruntime")
    args = parser.parse_args()
    ensure_tools("h2load")
    work = Path(tempfile.mkdtemp(prefix="bench-grpc-"))
    here = str(Path(__file__).resolve().parent / "baseline_grpc.py")

    # 1. Small MLP.
    model = work / "mlp" / "1" / "model.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(mlp([784, 128, 10], seed=0, softmax=True))
    x = np.random.default_rng(0).random((1, 784), dtype=np.float32)
    raw = raw_onnxruntime(model, x, 3.0)
    import onnxruntime as ort

    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    message = request_bytes("mlp", x)
    body = frame_file(work / "mlp.bin", message)
    print(f"raw onnxruntime in-process, batch 1, 1 thread: {raw:,.0f} calls/s", flush=True)
    levels = [int(c) for c in args.concurrency.split(",")]
    peers = {
        "bare grpc.aio": tf_serving_peer([python(), here, "aio", "{port}", str(model)], body, message, expected),
        "bare grpc.server, 8 threads": tf_serving_peer(
            [python(), here, "sync", "{port}", str(model)], body, message, expected
        ),
        "modelserve": tf_serving_peer(modelserve_cmd(work / "mlp", "mlp"), body, message, expected),
    }
    if args.mlserver_python:
        peers["MLServer 1.7 V2 gRPC, parallel_workers 0"] = mlserver_peer(
            args.mlserver_python, work, model, x, expected
        )
    small = run_servers(peers, levels, args.seconds, args.rounds)

    # 2. Large tensor round trip.
    big_model = work / "big" / "1" / "model.onnx"
    big_model.parent.mkdir(parents=True)
    big_model.write_bytes(identity_model(BIG_SHAPE))
    big_x = np.random.default_rng(1).random(BIG_SHAPE, dtype=np.float32)
    big_message = request_bytes("big", big_x)
    big_body = frame_file(work / "big.bin", big_message)
    big_levels = [int(c) for c in args.big_concurrency.split(",")]
    big_peers = {
        "raw grpc.aio echo (bytes, no protobuf)": tf_serving_peer(
            [python(), here, "echo", "{port}"], big_body, big_message, None
        ),
        "raw grpc.server echo, 8 threads": tf_serving_peer(
            [python(), here, "echo-threads", "{port}"], big_body, big_message, None
        ),
        "modelserve": tf_serving_peer(
            modelserve_cmd(work / "big", "big", "--enable_serialization_as_tensor_content"),
            big_body,
            big_message,
            big_x,
        ),
    }
    big = run_servers(big_peers, big_levels, args.seconds, args.rounds)
    report(small, raw, levels, big, big_levels, big_x.nbytes)


def report(
    small: dict[str, dict[int, float]],
    raw: float,
    levels: list[int],
    big: dict[str, dict[int, float]],
    big_levels: list[int],
    tensor_bytes: int,
) -> None:
    aio, threaded = small["bare grpc.aio"], small["bare grpc.server, 8 threads"]
    print("\nSmall MLP 784→128→10, gRPC Predict, req/s (server on 1 pinned core)\n")
    print("| server | " + " | ".join(f"c={c}" for c in levels) + " |")
    print("| --- |" + " --- |" * len(levels))
    for name, by_c in small.items():
        print(f"| {name} | " + " | ".join(f"{by_c[c]:,.0f}" for c in levels) + " |")
    ms = small["modelserve"]
    for name, by_c in small.items():
        if name.startswith("MLServer"):
            print(f"| modelserve / {name} | " + " | ".join(f"{ms[c] / by_c[c]:.2f}x" for c in levels) + " |")
    print("| modelserve / bare grpc.aio | " + " | ".join(f"{ms[c] / aio[c]:.2f}x" for c in levels) + " |")
    print("| modelserve / bare grpc.server | " + " | ".join(f"{ms[c] / threaded[c]:.2f}x" for c in levels) + " |")
    print(
        f"| modelserve / raw onnxruntime ({raw:,.0f} calls/s) | "
        + " | ".join(f"{ms[c] / raw:.3f}x" for c in levels)
        + " |"
    )
    echo = big["raw grpc.aio echo (bytes, no protobuf)"]
    mb = tensor_bytes / 1e6
    print(f"\n1×224×224×3 float32 tensor_content round trip, MB/s of tensor each way ({mb:.2f} MB per request)\n")
    print("| server | " + " | ".join(f"c={c}" for c in big_levels) + " |")
    print("| --- |" + " --- |" * len(big_levels))
    for name, by_c in big.items():
        print(
            f"| {name} | " + " | ".join(f"{by_c[c] * mb:,.0f} MB/s ({by_c[c]:,.0f} req/s)" for c in big_levels) + " |"
        )
    mbig, threaded_echo = big["modelserve"], big["raw grpc.server echo, 8 threads"]
    print("| modelserve / grpc.aio echo | " + " | ".join(f"{mbig[c] / echo[c]:.2f}x" for c in big_levels) + " |")
    print(
        "| modelserve / grpc.server echo | "
        + " | ".join(f"{mbig[c] / threaded_echo[c]:.2f}x" for c in big_levels)
        + " |"
    )


if __name__ == "__main__":
    main()
