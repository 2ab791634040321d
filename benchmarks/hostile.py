"""Good traffic under hostile floods (issue 17): good-request p50/p99 against a quiet run, and peak RSS.

    python benchmarks/hostile.py [--seconds=8] [--floods=a,b,...] [--scale=1.0]
                                 [--server-flag=--memory_budget_bytes=1073741824 ...]
                                 [--checkout=DIR ...] [--address-space=3000000000] [--nofile=1024]

A server (``python -m modelserve``, a small MLP 64→64→10 as "mlp", and an Identity over DT_STRING
as "strings") runs as a subprocess under ``prlimit --as`` (an attack the code does not bound then
fails inside the server, not on the machine) and ``--nofile`` (file descriptors, as a container
has them). One good REST client (a new connection per request) and one good gRPC client (one
channel) send requests one after the other for ``--seconds``: first with no attack (the quiet
run), then during each flood, each flood run by a separate attacker process:

  a  gRPC DT_STRING fill rule: shape [2^22 x scale] and one string_val (issue 17, finding 1)
  b  gRPC DT_FLOAT fill rule: shape [2^20 x scale, 64] (256 MiB) and one float_val (finding 2)
  c  gzip bombs: 256 KB bodies inflating to the body cap (256 MiB of zeros), back to back (finding 4)
  d  JSON zeros: a gzip body of 2M x scale zeros, one at a time (finding 3, scaled from 50M)
  e  a huge URL (8 MB), huge headers (8 MB) and 100k headers, in turn, new connections (finding 4)
  f  slowloris: 1200 connections each sending a header line a second (finding 5; --nofile=1024)
  g  invalid requests that decode big inputs: DT_FLOAT [2^25] under a wrong input name (finding 6)
  h  (b) again against a second server started with --enable_batching (finding 7), with its own
     quiet run

Each run has a fresh server. Each row: good p50 and p99 per protocol, the p99 as a ratio to the
quiet run's, good requests that failed, the server's RSS at the start and its peak (VmHWM from
/proc), the tracebacks it logged, and what the attack got back (status codes and how many).

``--server-flag`` passes a flag to the servers (repeatable): issue 17's flags
(``--memory_budget_bytes`` ...) exist only in a checkout that has them, and a server given a flag
it does not know exits with status 2, which is reported here.
``--checkout=DIR`` runs the same benchmark from another checkout (``git worktree add DIR COMMIT``)
after this one: before and after, side by side. Floods share the machine's cores with the server
and the good clients: the figures are ratios within one run, on one machine.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import http.client
import json
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modelserve.demo import mlp
from modelserve.protos import pb
from modelserve.testing import ServerStartError, server_process

ROOT = Path(__file__).resolve().parent.parent
PREDICT = "/tensorflow.serving.PredictionService/Predict"
MIB = 1024 * 1024
FLOODS = "abcdefgh"


# ---- the server ------------------------------------------------------------------------------


def string_identity() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "strings",
        [helper.make_tensor_value_info("x", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, ["batch"])],
    )
    return bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


def write_models(root: Path) -> Path:
    for name, blob in (("mlp", mlp([64, 64, 10], seed=0)), ("strings", string_identity())):
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        (root / name / "1" / "model.onnx").write_bytes(blob)
    config = root / "models.config"
    entries = "".join(
        f'  config {{ name: "{n}" base_path: "{root / n}" model_platform: "onnx" }}\n' for n in ("mlp", "strings")
    )
    config.write_text(f"model_config_list {{\n{entries}}}\n")
    return config


@dataclass(frozen=True)
class Ports:
    """What an attacker process is given of the server."""

    rest: int
    grpc: int


@dataclass
class Server:
    proc: subprocess.Popen[str]
    rest: int
    grpc: int

    @property
    def ports(self) -> Ports:
        return Ports(self.rest, self.grpc)

    def kb(self, key: str) -> int:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        return int(match.group(1)) if match else 0

    def reset_peak(self) -> None:
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def peak_mib(self) -> float:
        return self.kb("VmHWM") / 1024

    def alive(self) -> bool:
        return self.proc.poll() is None


@contextlib.contextmanager
def serve(checkout: Path, config: Path, flags: Sequence[str], args: argparse.Namespace, log: Path) -> Iterator[Server]:
    with server_process(
        f"--model_config_file={config}",
        *flags,
        address_space=args.address_space,
        nofile=args.nofile,
        cpus=args.server_cpus,
        checkout=checkout,
        log=log,
    ) as process:
        yield Server(process.proc, process.rest_port, process.grpc_port)


# ---- good traffic ----------------------------------------------------------------------------

X = np.random.default_rng(0).random((1, 64), dtype=np.float32).round(4)
REST_BODY = json.dumps({"instances": X.tolist()}).encode()


def grpc_request(model: str, tensor: pb.TensorProto, name: str = "input") -> bytes:
    request = pb.PredictRequest()
    request.model_spec.name = model
    request.inputs[name].CopyFrom(tensor)
    return bytes(request.SerializeToString())


GRPC_BODY = grpc_request(
    "mlp", pb.TensorProto(dtype=1, tensor_shape={"dim": [{"size": 1}, {"size": 64}]}, tensor_content=X.tobytes())
)


@dataclass
class Good:
    rest_ms: list[float] = field(default_factory=list)
    grpc_ms: list[float] = field(default_factory=list)
    rest_errors: int = 0
    grpc_errors: int = 0


def good_rest(server: Server, stop: float, out: Good) -> None:
    while time.monotonic() < stop:
        start = time.perf_counter()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", server.rest, timeout=30)
            connection.request("POST", "/v1/models/mlp:predict", REST_BODY)
            response = connection.getresponse()
            ok = response.status == 200 and len(json.loads(response.read())["predictions"][0]) == 10
            connection.close()
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            ok = False
        if ok:
            out.rest_ms.append((time.perf_counter() - start) * 1000)
        else:
            out.rest_errors += 1
            time.sleep(0.05)


def good_grpc(server: Server, stop: float, out: Good) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc}") as channel:
        call = channel.unary_unary(PREDICT)
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                ok = len(pb.PredictResponse.FromString(call(GRPC_BODY, timeout=30)).outputs["output"].float_val) == 10
            except grpc.RpcError:
                ok = False
            if ok:
                out.grpc_ms.append((time.perf_counter() - start) * 1000)
            else:
                out.grpc_errors += 1
                time.sleep(0.05)


def good_traffic(server: Server, seconds: float) -> Good:
    out = Good()
    stop = time.monotonic() + seconds
    threads = [threading.Thread(target=fn, args=(server, stop, out)) for fn in (good_rest, good_grpc)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


# ---- the floods (each runs in an attacker process until ``stop``) ---------------------------


def _grpc_flood(port: int, stop: float, message: bytes, workers: int) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()

    def worker() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(PREDICT)
            while time.monotonic() < stop:
                try:
                    call(message, timeout=max(0.1, stop - time.monotonic()))
                    seen["OK"] += 1
                except grpc.RpcError as exc:
                    details = exc.details() or ""
                    if "CLIENT: Received message larger than max" in details:
                        seen["OK (answer over 4 MB, dropped by the client)"] += 1
                    elif exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() >= stop - 0.2:
                        seen["unanswered at the end"] += 1
                    else:
                        seen[exc.code().name] += 1
                        if exc.code() == grpc.StatusCode.UNAVAILABLE:
                            time.sleep(0.2)  # the server may be down: do not spin

    _run_threads(worker, workers)
    return seen


def _run_threads(worker: Callable[[], None], count: int) -> None:
    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _fill(dtype: int, dims: Sequence[int], model: str, name: str = "x", **values: list[object]) -> bytes:
    """A request of a few dozen bytes whose one value fills ``dims`` (TF's fill rule)."""
    tensor = pb.TensorProto(dtype=dtype, tensor_shape={"dim": [{"size": d} for d in dims]}, **values)
    return grpc_request(model, tensor, name)


def flood_a(ports: Ports, stop: float, scale: float) -> collections.Counter[str]:
    return _grpc_flood(ports.grpc, stop, _fill(7, [int(2**22 * scale)], "strings", string_val=[b"x"]), 2)


def flood_b(ports: Ports, stop: float, scale: float) -> collections.Counter[str]:
    # [2^20, 64]: 256 MiB of floats, a batch the MLP accepts.
    rows = int(2**20 * scale)
    return _grpc_flood(ports.grpc, stop, _fill(1, [rows, 64], "mlp", "input", float_val=[1.0]), 2)


def flood_g(ports: Ports, stop: float, scale: float) -> collections.Counter[str]:
    # Decoded (128 MiB), then refused: the signature has no such input.
    return _grpc_flood(ports.grpc, stop, _fill(1, [int(2**25 * scale)], "mlp", "wrong_name", float_val=[1.0]), 1)


def _http(port: int, data: bytes, timeout: float) -> str:
    """Send one request, then read its status line (or how the connection ended)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            with contextlib.suppress(OSError):  # answered early and closed: read what it said
                sock.sendall(data)
            head = b""
            while b"\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    return "closed" if not head else "cut"
                head += chunk
            return head.split(b"\r\n", 1)[0].split(b" ", 2)[1].decode()
    except TimeoutError:
        return "unanswered at the end"  # its timeout is the time left in the run
    except OSError as exc:
        return type(exc).__name__


def _http_flood(port: int, stop: float, requests: Sequence[bytes], workers: int) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()

    def worker() -> None:
        i = 0
        while time.monotonic() < stop:
            seen[_http(port, requests[i % len(requests)], max(1.0, stop - time.monotonic()))] += 1
            i += 1

    _run_threads(worker, workers)
    return seen


def _post(body: bytes, headers: bytes = b"") -> bytes:
    return (
        b"POST /v1/models/mlp:predict HTTP/1.1\r\nHost: x\r\n" + headers + b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body


def flood_c(ports: Ports, stop: float, scale: float) -> collections.Counter[str]:
    bomb = gzip.compress(b"\0" * int(256 * MIB * scale), 9)
    return _http_flood(ports.rest, stop, [_post(bomb, b"Content-Encoding: gzip\r\n")], 2)


def flood_d(ports: Ports, stop: float, scale: float) -> collections.Counter[str]:
    count = int(2_000_000 * scale)
    body = gzip.compress(b'{"instances": [' + b"0," * (count - 1) + b"0]}", 9)
    return _http_flood(ports.rest, stop, [_post(body, b"Content-Encoding: gzip\r\n")], 1)


def flood_e(ports: Ports, stop: float, scale: float) -> collections.Counter[str]:
    size = int(8 * MIB * scale)
    requests = [
        _post(b"{}").replace(b":predict", b":predict?" + b"q" * size, 1),
        _post(b"{}", b"X-Big: " + b"h" * size + b"\r\n"),
        _post(b"{}", b"".join(b"X-%d: v\r\n" % i for i in range(int(100_000 * scale)))),
    ]
    return _http_flood(ports.rest, stop, requests, 2)


def flood_f(ports: Ports, stop: float, scale: float) -> collections.Counter[str]:
    """Slowloris: open connections until ``1200 x scale``, each sending one header line a second."""
    seen: collections.Counter[str] = collections.Counter()
    open_: list[socket.socket] = []
    target = int(1200 * scale)
    next_drip = time.monotonic()
    while time.monotonic() < stop:
        while len(open_) < target and time.monotonic() < stop:
            try:
                sock = socket.create_connection(("127.0.0.1", ports.rest), timeout=1)
                sock.sendall(b"POST /v1/models/mlp:predict HTTP/1.1\r\n")
                sock.setblocking(False)
                open_.append(sock)
                seen["opened"] += 1
            except OSError:
                seen["connect failed"] += 1
                break
        if time.monotonic() >= next_drip:
            next_drip += 1.0
            for sock in list(open_):
                try:
                    sock.send(b"X-Drip: 1\r\n")
                    if sock.recv(4096) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    pass  # nothing to read: still open
                except OSError:
                    seen["closed by the server"] += 1
                    open_.remove(sock)
                    sock.close()
        time.sleep(0.05)
    seen["still open at the end"] = len(open_)
    for sock in open_:
        sock.close()
    return seen


FLOOD_FUNCTIONS: dict[str, tuple[str, Callable[[Ports, float, float], collections.Counter[str]]]] = {
    "a": ("gRPC DT_STRING fill rule [2^22]", flood_a),
    "b": ("gRPC DT_FLOAT fill rule [2^20, 64]", flood_b),
    "c": ("gzip bombs (256 KB -> 256 MiB)", flood_c),
    "d": ("JSON zeros, 2M in a gzip body", flood_d),
    "e": ("8 MB URL / 8 MB headers / 100k headers", flood_e),
    "f": ("slowloris, 1200 connections", flood_f),
    "g": ("invalid requests decoding [2^25] floats", flood_g),
    "h": ("(b) with --enable_batching", flood_b),
}


def _attacker(flood: str, ports: Ports, stop: float, scale: float, out: multiprocessing.Queue[object]) -> None:
    out.put(dict(FLOOD_FUNCTIONS[flood][1](ports, stop, scale)))


# ---- the run ---------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    good: Good
    start_mib: float
    peak_mib: float
    outcome: str
    tracebacks: int = 0  # logged by the server during the run (issue 17, finding 8: log amplification)


def phase(server: Server, flood: str | None, args: argparse.Namespace) -> Row:
    server.reset_peak()
    start_mib = server.kb("VmRSS") / 1024
    stop = time.monotonic() + args.seconds
    attacker = None
    queue: multiprocessing.Queue[object] = multiprocessing.get_context("spawn").Queue()
    if flood is not None:
        attacker = multiprocessing.get_context("spawn").Process(
            target=_attacker, args=(flood, server.ports, stop, args.scale, queue)
        )
        attacker.start()
        time.sleep(min(1.0, args.seconds / 4))  # the flood is under way before good traffic starts
    good = good_traffic(server, max(1.0, stop - time.monotonic()))
    outcome = "-"
    if attacker is not None:
        attacker.join(60)
        if attacker.is_alive():
            attacker.kill()
            outcome = "attacker stuck"
        else:
            counts = queue.get(timeout=5) if not queue.empty() else {}
            outcome = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"  # type: ignore[union-attr]
    peak = server.peak_mib()
    if not server.alive():
        outcome += f"; SERVER DIED (exit status {server.proc.returncode})"
    name = "quiet" if flood is None else f"{flood}: {FLOOD_FUNCTIONS[flood][0]}"
    return Row(name, good, start_mib, peak, outcome)


def percentiles(ms: list[float]) -> tuple[float, float]:
    if len(ms) < 2:
        return (ms[0], ms[0]) if ms else (float("nan"), float("nan"))
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return q[49], q[98]


def cells(ms: list[float], quiet_p99: float) -> str:
    """p50 | p99 | p99 / quiet; dashes when no good request of the run succeeded."""
    if not ms:
        return "- | - | all failed"
    p50, p99 = percentiles(ms)
    return f"{p50:.2f} | {p99:.2f} | {p99 / quiet_p99:.2f}x"


def run_checkout(checkout: Path, config: Path, args: argparse.Namespace, work: Path) -> list[Row]:
    """The quiet run and each flood, each on a fresh server: memory a server keeps after one flood
    (issue 17, finding 2) must not count in the next one's peak."""
    floods = [f for f in args.floods.split(",") if f]
    flags: list[str] = list(args.server_flag)
    plain: list[str | None] = [None, *(f for f in floods if f != "h")]
    groups = [(flags, plain)] + ([([*flags, "--enable_batching"], [None, "h"])] if "h" in floods else [])
    rows: list[Row] = []
    for server_flags, runs in groups:
        for flood in runs:
            log = work / f"server-{len(rows)}.log"
            with serve(checkout, config, server_flags, args, log) as server:
                good_traffic(server, 1.0)  # warm-up
                rows.append(phase(server, flood, args))
            rows[-1].tracebacks = log.read_text(errors="replace").count("Traceback (most recent call last)")
            if flood is None and "--enable_batching" in server_flags:
                rows[-1].name = "quiet, --enable_batching"
    return rows


def print_rows(title: str, rows: list[Row]) -> None:
    print(f"\n### {title}\n")
    print(
        "| run | REST p50 ms | REST p99 ms | REST p99 / quiet | gRPC p50 ms | gRPC p99 ms | gRPC p99 / quiet "
        "| good failed REST / gRPC | RSS at start MiB | peak RSS MiB | tracebacks logged | attack got |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    quiet = (float("nan"), float("nan"))
    for row in rows:
        if row.name.startswith("quiet"):
            quiet = (percentiles(row.good.rest_ms)[1], percentiles(row.good.grpc_ms)[1])
        failed = f"{row.good.rest_errors} / {row.good.grpc_errors}"
        print(
            f"| {row.name} | {cells(row.good.rest_ms, quiet[0])} | {cells(row.good.grpc_ms, quiet[1])} | {failed} "
            f"| {row.start_mib:,.0f} | {row.peak_mib:,.0f} | {row.tracebacks} | {row.outcome} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the quiet run and of each flood")
    parser.add_argument("--floods", default=",".join(FLOODS), help="which floods, e.g. a,b,c (h: with batching)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies each attack's size")
    parser.add_argument("--server-flag", action="append", default=[], help="a flag for the servers (repeatable)")
    parser.add_argument("--checkout", action="append", default=[], help="also run from this checkout, after")
    parser.add_argument("--address-space", type=int, default=3_000_000_000, help="the server's prlimit --as")
    parser.add_argument("--nofile", type=int, default=1024, help="the server's prlimit --nofile")
    # docs/benchmarking.md's recipe: the server on its own core, the load (good and hostile) on the others,
    # so that a flood's figure is the server's, not the attacker's CPU taken from the server.
    cpus = sorted(os.sched_getaffinity(0))
    parser.add_argument(
        "--server-cpus",
        default=str(cpus[-1]) if len(cpus) > 1 else "",
        help="taskset CPU list for the server ('' for no pinning); the clients get the other CPUs",
    )
    args = parser.parse_args()
    if args.server_cpus:
        server_cpus = {int(c) for c in args.server_cpus.split(",")}
        if set(cpus) - server_cpus:
            os.sched_setaffinity(0, set(cpus) - server_cpus)  # the attackers (spawned) inherit it
    work = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    config = write_models(work / "models")
    print(
        f"server: prlimit --as={args.address_space} --nofile={args.nofile}; flags: {args.server_flag or 'none'}; "
        f"CPUs: server {args.server_cpus or 'any'}, clients {','.join(map(str, sorted(os.sched_getaffinity(0))))}"
    )
    print(f"good traffic: 1 REST client (new connection each) + 1 gRPC client, {args.seconds:g} s per run")
    for checkout in [ROOT, *map(Path, args.checkout)]:
        try:
            rows = run_checkout(checkout.resolve(), config, args, work)
        except ServerStartError as exc:
            print(f"\n### {checkout}\n\n{exc}")
            continue
        print_rows(str(checkout.resolve()), rows)
    print(f"\nserver logs: {work}")


if __name__ == "__main__":
    main()
