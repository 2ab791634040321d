"""V2 (Open Inference Protocol) predict throughput: modelserve against MLServer 1.7.1, same run.

    python benchmarks/v2_predict.py [--seconds=3] [--rounds=3] [--concurrency=1,8] [--models=mlp,big]
                                    [--mlserver-python=/tmp/mlsv/bin/python]

Two models, each at batch 1:

* "mlp": the small MLP of rest_predict.py (784→128→10);
* "big": a 1×224×224×3 float32 input reduced to its per-channel mean, then a 3→10 dense layer: its
  inference costs microseconds, so the 602 KB request on the wire (and its decoding) is what is measured.

On each, modelserve's V2 REST with a JSON body, V2 REST with Triton's binary tensor data extension
(``Inference-Header-Content-Length``, binary input and ``binary_data_output``, as tritonclient sends
by default) and V2 gRPC ``ModelInfer`` with ``raw_input_contents`` (as tritonclient sends), against
MLServer's V2 REST JSON and V2 gRPC (also ``raw_input_contents``; it answers raw then). MLServer has no
binary tensor data extension over REST (it answers 422), so modelserve's binary form is set against its JSON. On "big",
TF Serving's REST predict (``/v1/models/big:predict``, ``{"instances": ...}``) on modelserve too: what
moving a TF Serving client to V2 binary buys.

Both servers run for the whole run, pinned to CPU 1 (onnxruntime intra-op threads 1; MLServer with
``parallel_workers: 0``, its fastest mode, through benchmarks/mlserver_peer/runtime.py); the load
generators run pinned to CPU 0: wrk (a Lua script posting the body) for REST, h2load replaying one
gRPC frame for gRPC (docs/benchmarking.md). Every server, protocol and model answers once through a
real client and is checked against onnxruntime in-process before any load; rounds interleave every
cell, and each figure is the median over rounds. Without ``--mlserver-python`` only modelserve runs.

Two ceilings, same run, where 3× MLServer may be out of reach of any Python server:

* V2 gRPC on "mlp": two bare grpcio servers (``baseline_grpc.py v2-aio`` and ``v2-sync``, grpc.aio and
  grpc.server with 8 threads, pinned to CPU 1 too) that only parse the ``ModelInferRequest``,
  ``np.frombuffer`` its ``raw_input_contents``, run onnxruntime and answer raw: the most a grpcio-based
  Python server can do. Printed as their own rows, with modelserve / ceiling and MLServer / ceiling.
* V2 REST JSON: calls per second, in-process on CPU 1, of ``orjson.loads`` alone on each model's exact
  JSON request body, and of ``orjson.loads`` + ``np.asarray(data, float32)``: what parsing alone costs
  a request, against the time a request 3× MLServer's rate leaves.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batching import v2_body
from common import (
    LoadResult,
    ensure_tools,
    frame_file,
    free_port,
    h2load,
    median,
    mlserver_command,
    pinned,
    python,
    wait_http,
    wrk,
)
from grpc_predict import first_answer
from rest_predict import raw_onnxruntime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modelserve.demo import mlp
from modelserve.protos import Stub, pb

BIG_SHAPE = (1, 224, 224, 3)
INFER = "/inference.GRPCInferenceService/ModelInfer"
MODELSERVE, MLSERVER = "modelserve", "MLServer 1.7.1"
V2_JSON, V2_BINARY, V2_GRPC, V1_JSON = "V2 REST JSON", "V2 REST binary", "V2 gRPC", "TF Serving REST JSON"
# The gRPC ceilings: bare grpcio V2 servers (baseline_grpc.py), "mlp" only.
BARE = {"bare grpc.aio": "v2-aio", "bare grpc.server, 8 threads": "v2-sync"}
# The REST JSON ceilings on "mlp": baseline_starlette.py's V2 infer (orjson, np.asarray, onnxruntime),
# inference inline on the event loop or in a thread pool (the shape modelserve keeps).
BARE_REST = {"bare Starlette, inline": {}, "bare Starlette, thread pool": {"THREADPOOL": "1"}}


def pool_dense_model(shape: tuple[int, ...], outputs: int = 10) -> bytes:
    """ONNX bytes: ``input`` [-1, H, W, C] float32 → mean over H and W → C→``outputs`` dense → ``output``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    channels = shape[-1]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["pooled"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["z"]),
            helper.make_node("Add", ["z", "b"], ["output"]),
        ],
        "pool_dense",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [-1, *shape[1:]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [-1, outputs])],
        [
            numpy_helper.from_array(rng.standard_normal((channels, outputs)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal(outputs).astype(np.float32), "b"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


# --- requests and their checks ------------------------------------------------------------------


def binary_request(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A V2 REST body with ``x`` as binary tensor data and every output asked for as binary, and its headers."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return header + x.astype("<f4").tobytes(), headers


def infer_request(model: str, x: np.ndarray) -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.astype("<f4").tobytes())
    return bytes(request.SerializeToString())


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(url, body, headers)
    with urllib.request.urlopen(request, timeout=60) as answer:
        return {k.lower(): v for k, v in answer.getheaders()}, answer.read()


def rest_output(headers: dict[str, str], body: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The one output of a V2 REST answer, JSON or binary tensor data (a TF Serving answer's predictions)."""
    length = int(headers.get("inference-header-content-length", len(body)))
    doc = json.loads(body[:length])
    if "predictions" in doc:
        return np.array(doc["predictions"], np.float32).reshape(shape)
    if length < len(body):
        return np.frombuffer(body[length:], "<f4").reshape(shape)
    return np.array(doc["outputs"][0]["data"], np.float32).reshape(shape)


def grpc_output(port: int, message: bytes, shape: tuple[int, ...]) -> np.ndarray:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        infer = Stub(channel, pb.GRPCInferenceService).ModelInfer
        request = pb.ModelInferRequest.FromString(message)
        response = first_answer(lambda: infer(request, timeout=10), 120, 0.5)
    if response.raw_output_contents:
        return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(shape)
    return np.array(response.outputs[0].contents.fp32_contents, np.float32).reshape(shape)


def json_parse_rate(body: bytes, seconds: float, to_array: bool) -> float:
    """Calls per second, on CPU 1 (the servers' core), of ``orjson.loads(body)`` (and, with ``to_array``,
    ``np.asarray`` of its first input's data as float32): the least a V2 JSON request costs to parse."""

    def parse() -> None:
        doc = orjson.loads(body)
        if to_array:
            np.asarray(doc["inputs"][0]["data"], np.float32)

    os.sched_setaffinity(0, {1})
    for _ in range(3):
        parse()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(10):
            parse()
        n += 10
    os.sched_setaffinity(0, {0, 1})
    return n / elapsed


@dataclass(frozen=True)
class Parse:
    """The JSON parse ceiling of one model's V2 REST JSON body."""

    body_bytes: int
    loads: float  # orjson.loads calls/s
    loads_array: float  # orjson.loads + np.asarray(data, float32) calls/s


@dataclass(frozen=True)
class Cell:
    """One server, protocol and model: how to load it for a while, and how to check one answer."""

    load: Callable[[int, int], LoadResult]  # (connections, seconds) -> result
    check: Callable[[], np.ndarray]


def rest_cell(port: int, path: str, body: Path, headers: dict[str, str], shape: tuple[int, ...]) -> Cell:
    url = f"http://127.0.0.1:{port}{path}"
    return Cell(
        lambda c, seconds: wrk(url, body, c, seconds, headers=headers),
        lambda: rest_output(*post(url, body.read_bytes(), {"Content-Type": "application/json", **headers}), shape),
    )


def grpc_cell(port: int, body: Path, message: bytes, shape: tuple[int, ...]) -> Cell:
    log = body.with_suffix(".log")
    return Cell(
        lambda c, seconds: h2load(port, body, c, seconds, INFER, cpu="0", log=log),
        lambda: grpc_output(port, message, shape),
    )


@dataclass(frozen=True)
class Model:
    name: str
    path: Path  # the ONNX file, in a TF Serving version folder ``name/1/model.onnx``
    x: np.ndarray
    expected: np.ndarray


def cells(server: str, model: Model, work: Path, rest: int, grpc_port: int) -> dict[str, Cell]:
    """The protocols measured for ``server`` on ``model``, their bodies written into ``work``."""
    stem = work / f"{server.split()[0]}-{model.name}"
    shape = model.expected.shape
    v2_path = f"/v2/models/{model.name}/infer"
    json_body = Path(f"{stem}-v2.json")
    json_body.write_text(v2_body(model.x))
    message = infer_request(model.name, model.x)
    out = {V2_JSON: rest_cell(rest, v2_path, json_body, {}, shape)}
    if server == MODELSERVE:
        binary, headers = binary_request(model.x)
        binary_body = Path(f"{stem}-v2.bin")
        binary_body.write_bytes(binary)
        out[V2_BINARY] = rest_cell(rest, v2_path, binary_body, headers, shape)
    out[V2_GRPC] = grpc_cell(grpc_port, frame_file(Path(f"{stem}-grpc.bin"), message), message, shape)
    if server == MODELSERVE and model.name == "big":
        v1_body = Path(f"{stem}-v1.json")
        v1_body.write_text(json.dumps({"instances": model.x.tolist()}))
        out[V1_JSON] = rest_cell(rest, f"/v1/models/{model.name}:predict", v1_body, {}, shape)
    return out


def make_model(work: Path, name: str, onnx: bytes, x: np.ndarray) -> Model:
    path = work / name / "1" / "model.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(onnx)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    return Model(name, path, x, expected)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="mlp,big", help="a comma list of mlp and big")
    parser.add_argument("--mlserver-python", default="", help="a venv's python with mlserver==1.7.1 and onnxruntime")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    ensure_tools("wrk", "h2load")
    work = Path(tempfile.mkdtemp(prefix="bench-v2-"))

    # Rounded to 4 decimals so that the JSON bodies stay short; every protocol sends the same values.
    rng = np.random.default_rng(0)
    every = [
        make_model(work, "mlp", mlp([784, 128, 10], seed=0, softmax=True), rng.random((1, 784), np.float32).round(4)),
        make_model(work, "big", pool_dense_model(BIG_SHAPE), rng.random(BIG_SHAPE, np.float32).round(4)),
    ]
    chosen = args.models.split(",")
    assert set(chosen) <= {m.name for m in every}, args.models
    models = [m for m in every if m.name in chosen]
    parse: dict[str, Parse] = {}
    for model in models:
        raw = raw_onnxruntime(model.path, model.x, 1.0)
        print(f"raw onnxruntime in-process, {model.name}, batch 1, 1 thread: {raw:,.0f} calls/s", flush=True)
        body = v2_body(model.x).encode()  # the exact V2 REST JSON body every server is sent
        parse[model.name] = Parse(len(body), json_parse_rate(body, 1.0, False), json_parse_rate(body, 1.0, True))
        print(
            f"V2 JSON body of {model.name} ({len(body):,} bytes) in-process: orjson.loads "
            f"{parse[model.name].loads:,.0f} calls/s, + np.asarray {parse[model.name].loads_array:,.0f} calls/s",
            flush=True,
        )

    config = work / "models.config"
    config.write_text(
        "model_config_list {"
        + "".join(
            f' config {{ name: "{m.name}" base_path: "{m.path.parent.parent}" model_platform: "onnx" }}' for m in models
        )
        + " }\n"
    )
    table: dict[tuple[str, str], dict[str, Cell]] = {}  # (model, server) -> protocol -> cell
    with ExitStack() as stack:
        rest, grpc_port = free_port(), free_port()
        modelserve = [
            python(),
            "-m",
            "modelserve",
            f"--model_config_file={config}",
            f"--rest_api_port={rest}",
            f"--port={grpc_port}",
            "--tensorflow_intra_op_parallelism=1",
            "--file_system_poll_wait_seconds=0",
        ]
        stack.enter_context(pinned(modelserve, "1", log=work / "modelserve.log"))
        servers = {MODELSERVE: (rest, grpc_port)}
        if args.mlserver_python:
            ml_rest, ml_grpc = free_port(), free_port()
            for m in models:
                command = mlserver_command(
                    args.mlserver_python, work / "mlserver", m.path, http_port=ml_rest, grpc_port=ml_grpc, name=m.name
                )
            stack.enter_context(pinned(command, "1", log=work / "mlserver.log"))
            servers[MLSERVER] = (ml_rest, ml_grpc)
        for m in models:
            if m.name == "mlp":
                baseline = str(Path(__file__).resolve().parent / "baseline_grpc.py")
                for server, kind in BARE.items():
                    port = free_port()
                    log = work / f"{kind}.log"
                    stack.enter_context(pinned([python(), baseline, kind, str(port), str(m.path)], "1", log=log))
                    message = infer_request(m.name, m.x)
                    body = frame_file(work / f"{kind}-grpc.bin", message)
                    table[m.name, server] = {V2_GRPC: grpc_cell(port, body, message, m.expected.shape)}
                for server, env in BARE_REST.items():
                    port = free_port()
                    uvicorn = [python(), "-m", "uvicorn", "benchmarks.baseline_starlette:app", "--loop", "uvloop"]
                    uvicorn += ["--http", "httptools", "--no-access-log", "--log-level", "warning", "--port", str(port)]
                    log = work / f"{server.split(',')[1].strip().replace(' ', '-')}.log"
                    stack.enter_context(pinned(uvicorn, "1", log=log, env={"MODEL": str(m.path), **env}))
                    wait_http(f"http://127.0.0.1:{port}/v2/models/{m.name}/ready", timeout=60)
                    stem = work / server.split(",")[1].strip().replace(" ", "-")
                    json_body = Path(f"{stem}-v2.json")
                    json_body.write_text(v2_body(m.x))
                    binary, headers = binary_request(m.x)
                    binary_body = Path(f"{stem}-v2.bin")
                    binary_body.write_bytes(binary)
                    path = f"/v2/models/{m.name}/infer"
                    table[m.name, server] = {
                        V2_JSON: rest_cell(port, path, json_body, {}, m.expected.shape),
                        V2_BINARY: rest_cell(port, path, binary_body, headers, m.expected.shape),
                    }
        for server, (rest_port, grpc_at) in servers.items():
            for m in models:
                wait_http(f"http://127.0.0.1:{rest_port}/v2/models/{m.name}/ready", timeout=120)
                table[m.name, server] = cells(server, m, work, rest_port, grpc_at)
        expected = {m.name: m.expected for m in models}
        for (name, server), by_protocol in table.items():
            for protocol, cell in by_protocol.items():
                np.testing.assert_allclose(
                    cell.check(), expected[name], rtol=1e-4, atol=1e-5, err_msg=f"{server} {protocol} {name}"
                )
                cell.load(8, 1)  # warm-up
        print(f"every answer checked; {len(levels)} × {sum(map(len, table.values()))} cells a round", flush=True)

        # Rounds interleave every cell so that noise from other work on the machine falls on all alike.
        runs: dict[tuple[str, str, str], dict[int, list[LoadResult]]] = {
            (name, server, protocol): {c: [] for c in levels}
            for (name, server), by_protocol in table.items()
            for protocol in by_protocol
        }
        for r in range(args.rounds):
            for (name, server, protocol), by_c in runs.items():
                for c in levels:
                    by_c[c].append(table[name, server][protocol].load(c, args.seconds))
            print(f"  round {r + 1} of {args.rounds} done", flush=True)
    report({key: {c: median(rs) for c, rs in by_c.items()} for key, by_c in runs.items()}, parse, args, levels)


def report(
    results: dict[tuple[str, str, str], dict[int, LoadResult]],
    parse: dict[str, Parse],
    args: argparse.Namespace,
    levels: list[int],
) -> None:
    print(f"\nmedian of {args.rounds} rounds of {args.seconds} s; servers pinned to CPU 1, load to CPU 0")
    print("| model | server | protocol | c | req/s | p50 ms | p99 ms | errors | vs MLServer |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for (name, server, protocol), by_c in sorted(results.items(), key=lambda kv: (kv[0][0] != "mlp", kv[0][1:])):
        for c, r in by_c.items():
            # MLServer has no binary tensor data over REST: modelserve's binary form is set against its JSON.
            peer = results.get((name, MLSERVER, V2_JSON if protocol == V2_BINARY else protocol))
            versus = f"{r.rps / peer[c].rps:.2f}x" if peer and server == MODELSERVE else ""
            print(
                f"| {name} | {server} | {protocol} | {c} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
                f"| {r.errors} | {versus} |"
            )
    if ("big", MODELSERVE, V1_JSON) in results:
        binary, v1 = results["big", MODELSERVE, V2_BINARY], results["big", MODELSERVE, V1_JSON]
        print(
            "\nbig: modelserve V2 REST binary / TF Serving REST JSON: "
            + ", ".join(f"{binary[c].rps / v1[c].rps:.2f}x at c={c}" for c in levels)
        )
    grpc_ceiling(results, levels)
    rest_ceiling(results, levels)
    json_ceiling(results, parse, levels)


def grpc_ceiling(results: dict[tuple[str, str, str], dict[int, LoadResult]], levels: list[int]) -> None:
    """V2 gRPC on "mlp" against the bare grpcio servers: a ratio above 1 in the last row means 3× MLServer
    is more than any grpcio-based Python server does on this core."""
    bare = {name: results[key] for name in BARE if (key := ("mlp", name, V2_GRPC)) in results}
    if not bare:
        return
    best = {c: max(by_c[c].rps for by_c in bare.values()) for c in levels}
    print("\nV2 gRPC ceiling, mlp: bare grpcio servers (parse, np.frombuffer, onnxruntime, answer raw), same run")
    print("| ratio | " + " | ".join(f"c={c}" for c in levels) + " |")
    print("| --- |" + " ---: |" * len(levels))
    rows = [(server, name) for server in (MODELSERVE, MLSERVER) for name in bare]
    for server, name in rows:
        if (ours := results.get(("mlp", server, V2_GRPC))) is not None:
            ratios = " | ".join(f"{ours[c].rps / bare[name][c].rps:.2f}x" for c in levels)
            print(f"| {server} / {name} | {ratios} |")
    if (peer := results.get(("mlp", MLSERVER, V2_GRPC))) is not None:
        print(
            "| 3× MLServer / best bare grpcio (above 1: the target is past the ceiling) | "
            + " | ".join(f"{3 * peer[c].rps / best[c]:.2f}x" for c in levels)
            + " |"
        )


def rest_ceiling(results: dict[tuple[str, str, str], dict[int, LoadResult]], levels: list[int]) -> None:
    """V2 REST on "mlp" against the bare Starlette servers (JSON and binary): a ratio above 1 in a
    "3× MLServer" row means 3× MLServer is more than a minimal Python V2 server does on this core
    (inline, or as modelserve keeps it, with inference off the event loop). MLServer has no binary
    form: modelserve's binary is set against its JSON, as in the main table."""
    peer = results.get(("mlp", MLSERVER, V2_JSON))
    rows = []
    for name in BARE_REST:
        for protocol in (V2_JSON, V2_BINARY):
            if (bare := results.get(("mlp", name, protocol))) is None:
                continue
            if (ours := results.get(("mlp", MODELSERVE, protocol))) is not None:
                rows.append((f"modelserve {protocol} / {name}", [ours[c].rps / bare[c].rps for c in levels]))
            if peer is not None:
                label = f"3× MLServer (REST JSON) / {name} {protocol} (above 1: past the ceiling)"
                rows.append((label, [3 * peer[c].rps / bare[c].rps for c in levels]))
    if not rows:
        return
    print("\nV2 REST ceiling, mlp: bare Starlette + uvicorn V2 infer (orjson, numpy, onnxruntime), same run")
    print("| ratio | " + " | ".join(f"c={c}" for c in levels) + " |")
    print("| --- |" + " ---: |" * len(levels))
    for label, ratios in rows:
        print(f"| {label} | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")


def json_ceiling(
    results: dict[tuple[str, str, str], dict[int, LoadResult]], parse: dict[str, Parse], levels: list[int]
) -> None:
    """V2 REST JSON against what parsing its body alone costs on one core: 3× MLServer's rate leaves
    1 / (3 × its req/s) of a core a request; if parsing alone takes more, the target is out of reach."""
    print("\nV2 REST JSON parse ceiling: in-process on CPU 1, the exact request body, same run")
    print(
        "| model | body bytes | orjson.loads | + np.asarray float32 | c | modelserve | 3× MLServer "
        "| 3× MLServer / loads + asarray (above 1: past the ceiling) |"
    )
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |")

    def cost(rate: float) -> str:
        return f"{rate:,.0f}/s ({1e3 / rate:.2f} ms)" if rate else ""

    for name, p in parse.items():
        for c in levels:
            ours = results[name, MODELSERVE, V2_JSON][c].rps
            peer = results.get((name, MLSERVER, V2_JSON))
            target = 3 * peer[c].rps if peer else 0.0
            print(
                f"| {name} | {p.body_bytes:,} | {cost(p.loads)} | {cost(p.loads_array)} | {c} | {cost(ours)} "
                f"| {cost(target)} | {f'{target / p.loads_array:.2f}x' if peer else ''} |"
            )


if __name__ == "__main__":
    main()
