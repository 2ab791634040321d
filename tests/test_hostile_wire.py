"""Hostile clients on the wire (issue 17, item 9): a bounded, seeded raw-socket fuzzer for both ports.

The server runs as a subprocess (``python -m modelserve``) under ``prlimit --as`` so that an attack
the code does not bound fails the test instead of the machine. Every case, HTTP/1.1 bytes on the
REST port or HTTP/2 frames and gRPC messages on the gRPC port, asserts four things:

* the answer class: a client mistake gets a 4xx (501 for an unsupported Transfer-Encoding), a gRPC
  status that is not UNKNOWN or INTERNAL, or a closed connection; never 500 or UNKNOWN;
* bounded time: answered or closed within ``ANSWER_SECONDS``;
* bounded memory: the server's peak RSS (``VmHWM``, reset before each case through
  ``/proc/PID/clear_refs``) grows by at most ``HEADROOM`` over its RSS before the case;
* then a good REST request and a good gRPC request still succeed.

Each finding of issue 17 has its case here too (they failed before the fixes, with the server's
memory, time or answer class); the server runs with small limits (``HOSTILE_FLAGS``) so that each
is hit quickly.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import re
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from onnx import TensorProto

from modelserve.protos import pb
from modelserve.testing import default_frontend_processes, server_process

from . import onnx_models as om

ROOT = Path(__file__).resolve().parent.parent
ANSWER_SECONDS = 10.0
MIB = 1024 * 1024
# What one case may add to the server's peak RSS: the per-request budget (32 MiB) a few times over,
# plus the allocator's and grpc-core's buffers.
HEADROOM = 192 * MIB
ADDRESS_SPACE = 3_000_000_000  # prlimit --as: an unbounded attack fails here, not on the machine
MAX_BODY = 8 * MIB
PREDICT = "/tensorflow.serving.PredictionService/Predict"

# Issue 17's limits, set small enough to be hit quickly; passed only when this checkout knows them.
HOSTILE_FLAGS = {
    "memory_budget_bytes": 256 * MIB,
    "request_memory_budget_bytes": 32 * MIB,
    "rest_api_header_timeout_seconds": 2,
    "rest_api_body_timeout_seconds": 2,
    "rest_api_max_gzip_ratio": 100,
}


def hostile_flags() -> list[str]:
    return [f"--{name}={value}" for name, value in HOSTILE_FLAGS.items()]


# ---- the server, as a subprocess -----------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[str]
    rest_port: int
    grpc_port: int
    log: list[str] = field(default_factory=list)
    before: int = 0  # RSS when the peak was last reset

    def status(self, key: str) -> int:
        """A ``/proc/PID/status`` figure in bytes (VmRSS, VmHWM)."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        assert match, text
        return int(match.group(1)) * 1024

    def reset_peak(self) -> int:
        """Reset VmHWM to the current RSS (Linux's clear_refs "5") and return that RSS."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        self.before = self.status("VmRSS")
        return self.before


def write_models(root: Path) -> Path:
    om.write(root / "half", 1, om.half_plus_two())  # y = x / 2 + 2, float32 of any shape
    om.write(root / "strings", 1, om.identity(TensorProto.STRING))  # y = x, DT_STRING [batch]
    config = root / "models.config"
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{root / name}" model_platform: "onnx" }}\n'
        for name in ("half", "strings")
    )
    config.write_text(f"model_config_list {{\n{entries}}}\n")
    return config


@contextlib.contextmanager
def serve(config: Path, *flags: str, nofile: int | None = None) -> Iterator[Server]:
    """``python -m modelserve`` from this checkout, bounded by prlimit; its log drained by a thread."""
    with server_process(
        f"--model_config_file={config}",
        f"--rest_api_max_body_bytes={MAX_BODY}",
        *flags,
        address_space=ADDRESS_SPACE,
        nofile=nofile,
    ) as process:
        yield Server(process.proc, process.rest_port, process.grpc_port, process.lines)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(config: Path) -> Iterator[Server]:
    with serve(config, *hostile_flags()) as s:
        yield s


def assert_bounded(server: Server) -> None:
    """The guards after a case: the peak RSS grew by at most HEADROOM, and good requests are served."""
    grown = server.status("VmHWM") - server.before
    assert grown <= HEADROOM, f"peak RSS grew by {grown / MIB:.0f} MiB"
    assert_serves(server)


@pytest.fixture
def guarded(server: Server) -> Iterator[Server]:
    """The shared server, with the guards after the case."""
    server.reset_peak()
    yield server
    assert_bounded(server)


@pytest.fixture
def attacked(config: Path) -> Iterator[Server]:
    """A fresh server for each amplification case: memory that an unfixed server keeps after one
    (findings 2, 3) would hide the next one's growth and count against the fuzz cases. The case
    calls ``assert_bounded`` itself."""
    with serve(config, *hostile_flags()) as server:
        server.reset_peak()
        yield server


# ---- good requests -------------------------------------------------------------------------


def good_rest(server: Server) -> tuple[int, bytes]:
    body = json.dumps({"instances": [1.0, 2.0, 5.0]}).encode()
    return exchange(server.rest_port, post("/v1/models/half:predict", body))[0][0]


def predict_request(model: str, tensor: pb.TensorProto, name: str = "x") -> bytes:
    request = pb.PredictRequest()
    request.model_spec.name = model
    request.inputs[name].CopyFrom(tensor)
    return bytes(request.SerializeToString())


def floats(values: Sequence[float]) -> pb.TensorProto:
    return pb.TensorProto(dtype=1, tensor_shape={"dim": [{"size": len(values)}]}, float_val=values)


def grpc_call(server: Server, message: bytes, timeout: float = ANSWER_SECONDS) -> tuple[grpc.StatusCode, bytes]:
    """One Predict of raw request bytes through grpcio's client: (status, response bytes)."""
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=options) as channel:
        call = channel.unary_unary(PREDICT)
        try:
            return grpc.StatusCode.OK, call(message, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code(), (exc.details() or "").encode()


def assert_serves(server: Server) -> None:
    status, body = good_rest(server)
    assert status == 200 and json.loads(body) == {"predictions": [2.5, 3.0, 4.5]}, (status, body)
    code, answer = grpc_call(server, predict_request("half", floats([1.0, 2.0, 5.0])))
    assert code == grpc.StatusCode.OK, (code, answer)
    outputs = pb.PredictResponse.FromString(answer).outputs["y"]
    assert list(outputs.float_val) == [2.5, 3.0, 4.5]


# ---- HTTP/1.1 on a raw socket --------------------------------------------------------------


def post(path: str, body: bytes, headers: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode() + body


def parse_responses(data: bytes) -> list[tuple[int, bytes]]:
    """Status and body of each complete HTTP/1.1 response in ``data`` (Content-Length framing)."""
    out = []
    while b"\r\n\r\n" in data:
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if head.startswith(b"HTTP/1.1 100 "):
            data = rest
            continue
        out.append((int(lines[0].split()[1]), rest[:length]))
        data = rest[length:]
    return out


def statuses_in(received: bytes) -> list[int]:
    """The status of every response in ``received``, whatever their framing: an answer to HEAD has a
    Content-Length but no body, and a fuzzed request may be a HEAD. A body cannot hold CRLF + a status
    line: error texts are JSON-escaped and a request line holds no CR or LF."""
    return [int(m) for m in re.findall(rb"(?:^|\r\n)HTTP/1\.1 (\d{3}) ", received)]


def exchange(port: int, data: bytes, pieces: int = 1, pause: float = 0.0) -> tuple[list[tuple[int, bytes]], bool]:
    """``send`` and the responses parsed by their Content-Length (for requests that are not HEAD)."""
    received, closed = send(port, data, pieces, pause)
    return parse_responses(received), closed


def send(port: int, data: bytes, pieces: int = 1, pause: float = 0.0) -> tuple[bytes, bool]:
    """Send ``data`` (in ``pieces`` with ``pause`` between), then EOF; read until the server closes.

    Returns what came back and whether the server closed within ANSWER_SECONDS."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_SECONDS) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        step = max(1, -(-len(data) // pieces))
        try:
            for i in range(0, len(data), step):
                sock.sendall(data[i : i + step])
                if pause:
                    time.sleep(pause)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered early and closed: read what it said
        received = b""
        closed = False
        while time.monotonic() - start < ANSWER_SECONDS:
            sock.settimeout(max(0.01, ANSWER_SECONDS - (time.monotonic() - start)))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    return received, closed


def client_mistake_class(statuses: Sequence[int]) -> bool:
    """1xx (100 Continue), 2xx, 4xx, or 501 (a Transfer-Encoding it does not implement): never another 5xx."""
    return all(100 <= s < 500 or s == 501 for s in statuses)


# Seeded generator of mutated requests. Every piece is something a broken or hostile client sends.
METHODS = ["POST", "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "P\x00ST", "", "x" * 300]
PATHS = [
    "/v1/models/half:predict",
    "/v1/models/half/versions/1:predict",
    "/v1/models/half/versions/99999999999999999999999:predict",
    "/v1/models/half/labels/%ff%00:predict",
    "/v1/models/strings:predict",
    "/v1/models/half:classify",
    "/v1/models/half/metadata",
    "/v1/models/half",
    "/v1/models/nope:predict",
    "/v1/models/..%2f..%2fetc%2fpasswd:predict",
    "//v1//models//half:predict",
    "*",
    "http://x/v1/models/half:predict",
    "/v1/models/half:predict?x=" + "%" * 50,
    "/v1/models/\xff\xfe:predict",
]
VERSIONS = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "HTTP/1.1 extra", "", "http/1.1"]
BODIES: list[Callable[[random.Random], bytes]] = [
    lambda r: json.dumps({"instances": [r.random() for _ in range(r.randint(0, 8))]}).encode(),
    lambda r: json.dumps({"inputs": {"x": [[1.0, 2.0], [3.0]]}}).encode(),
    lambda r: b'{"instances": [NaN, Infinity, -Infinity]}',
    lambda r: b'{"instances": ' + b"[" * r.randint(60, 70) + b"1" + b"]" * r.randint(60, 70) + b"}",
    lambda r: b'{"instances": [{"b64": "' + b"A" * r.randint(0, 64) + b'"}]}',
    lambda r: r.randbytes(r.randint(0, 512)),
    lambda r: b'{"instances": [1.0, 2.0',
    lambda r: b'{"signature_name": 5, "instances": [1]}',
    lambda r: b"",
]


def header_lines(r: random.Random, body: bytes) -> tuple[list[str], bytes]:
    """Headers (and the body, re-framed if they ask for chunked or gzip) with zero or more mutations."""
    headers = ["Host: x", "Content-Type: application/json"]
    framing = r.choice(["length", "length", "length", "chunked", "both", "none", "wrong"])
    if r.random() < 0.15:
        body = gzip.compress(body)
        headers.append("Content-Encoding: gzip")
    if r.random() < 0.1:
        headers.append("Content-Encoding: gzip")  # but the body is not gzip: TF reads it as empty
    if framing in ("length", "both"):
        headers.append(f"Content-Length: {len(body)}")
    if framing == "wrong":
        headers.append(
            "Content-Length: "
            + r.choice([str(len(body) + 5), str(max(0, len(body) - 3)), "-1", " 7", "0x10", "1e3", "9" * 30])
        )
    if framing in ("chunked", "both"):
        headers.append(
            "Transfer-Encoding: " + r.choice(["chunked", "Chunked", "chunked, chunked", "identity, chunked"])
        )
        body = chunked(r, body)
    for _ in range(r.randint(0, 3)):
        headers.append(
            r.choice(
                [
                    "Content-Length: 3",
                    "Expect: 100-continue",
                    "Connection: close",
                    "Connection: keep-alive, Upgrade",
                    "Upgrade: h2c",
                    " folded continuation",
                    "No-Colon-Here",
                    "Bad Name: x",
                    "X-Ctl: a\x01b\x7fc",
                    "X-Long: " + "v" * r.randint(1, 8000),
                    "X-Null: \x00",
                    ": empty-name",
                    "Authorization: Bearer " + "t" * 40,
                    "Content-Type: application/grpc",
                    "Host: y",
                ]
            )
        )
    r.shuffle(headers)
    return headers, body


def chunked(r: random.Random, body: bytes) -> bytes:
    """``body`` in chunked framing, sometimes broken: bad sizes, extensions, trailers, no end."""
    out = b""
    pos = 0
    while pos < len(body):
        size = r.randint(1, max(1, len(body) - pos))
        piece = body[pos : pos + size]
        pos += size
        mark = r.random()
        if mark < 0.05:
            out += b"zz\r\n" + piece + b"\r\n"
        elif mark < 0.1:
            out += b"%x\r\n" % (len(piece) + 9) + piece + b"\r\n"
        elif mark < 0.15:
            out += b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n"
        elif mark < 0.18:
            out += b"ffffffffffffffffff\r\n" + piece
        else:
            out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    end = r.random()
    if end < 0.1:
        return out + b"0\r\nX-Trailer: 1\r\n\r\n"
    if end < 0.15:
        return out  # never ends
    return out + b"0\r\n\r\n"


def http_case(seed: int) -> tuple[bytes, int, float]:
    """Case ``seed``: the bytes, how many pieces they are sent in, and the pause between pieces."""
    r = random.Random(seed)
    requests = []
    for _ in range(r.choice([1, 1, 1, 2, 4])):
        method = r.choice(METHODS)
        path = r.choice(PATHS)
        version = r.choice(VERSIONS)
        body = r.choice(BODIES)(r)
        headers, body = header_lines(r, body)
        line = " ".join(part for part in (method, path, version) if part)
        raw = (line + "\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode("latin-1") + body
        if r.random() < 0.1:  # a few bytes anywhere replaced by noise
            at = r.randrange(len(raw))
            raw = raw[:at] + r.randbytes(r.randint(1, 4)) + raw[at + 4 :]
        requests.append(raw)
    data = b"".join(requests)
    if r.random() < 0.1:
        data = data[: r.randrange(len(data) + 1)]  # cut short
    slow = r.random() < 0.1
    return data, r.randint(5, 20) if slow else 1, 0.01 if slow else 0.0


HTTP_CASES = 200


@pytest.mark.parametrize("seed", range(HTTP_CASES))
def test_http_fuzz(guarded: Server, seed: int) -> None:
    data, pieces, pause = http_case(seed)
    received, closed = send(guarded.rest_port, data, pieces, pause)
    statuses = statuses_in(received)
    assert closed, f"not closed within {ANSWER_SECONDS} s after EOF; answers {statuses}"
    assert client_mistake_class(statuses), (received[:1000], data[:300])


def test_pipelined_requests_are_all_answered(guarded: Server) -> None:
    bodies = [json.dumps({"instances": [float(i)]}).encode() for i in range(100)]
    responses, closed = exchange(guarded.rest_port, b"".join(post("/v1/models/half:predict", b) for b in bodies))
    assert closed and [json.loads(b)["predictions"] for _, b in responses] == [[i / 2 + 2] for i in range(100)]


def test_a_request_sent_byte_by_byte_is_answered(guarded: Server) -> None:
    data = post("/v1/models/half:predict", b'{"instances": [4.0]}')
    responses, closed = exchange(guarded.rest_port, data, pieces=len(data), pause=0.002)
    assert closed and responses == [(200, b'{"predictions":[4.0]}')]


def test_a_gzip_body_is_answered(guarded: Server) -> None:
    data = post("/v1/models/half:predict", gzip.compress(b'{"instances": [6.0]}'), "Content-Encoding: gzip\r\n")
    assert exchange(guarded.rest_port, data) == ([(200, b'{"predictions":[5.0]}')], True)


def single_status(server: Server, data: bytes, **kwargs: float) -> int:
    responses, closed = exchange(server.rest_port, data, **kwargs)  # type: ignore[arg-type]
    assert closed and len(responses) == 1, responses
    return responses[0][0]


def test_a_5000_digit_version_is_a_400(guarded: Server) -> None:
    data = post(f"/v1/models/half/versions/{'9' * 5000}:predict", b'{"instances": [1.0]}')
    responses, closed = exchange(guarded.rest_port, data)
    assert closed and [s for s, _ in responses] == [400], responses
    assert b"ValueError" not in responses[0][1]


def test_a_huge_url_is_a_414(guarded: Server) -> None:
    assert single_status(guarded, post("/v1/models/half:predict?" + "q" * 100_000, b"{}")) == 414


def test_huge_headers_are_a_431(guarded: Server) -> None:
    data = post("/v1/models/half:predict", b'{"instances": [1.0]}', "X-Big: " + "h" * 70_000 + "\r\n")
    assert single_status(guarded, data) == 431


def test_many_headers_are_a_431(guarded: Server) -> None:
    data = post("/v1/models/half:predict", b'{"instances": [1.0]}', "".join(f"X-{i}: v\r\n" for i in range(150)))
    assert single_status(guarded, data) == 431


def test_transfer_encoding_gzip_chunked_is_a_501(guarded: Server) -> None:
    body = gzip.compress(b'{"instances": [1.0]}')
    data = (
        b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )
    assert single_status(guarded, data) == 501


def test_a_gzip_bomb_is_a_413(attacked: Server) -> None:
    body = gzip.compress(b'{"instances": [' + b"0," * 1_000_000 + b"0]}", 9)  # 2 MB of JSON in ~3 KB
    data = post("/v1/models/half:predict", body, "Content-Encoding: gzip\r\n")
    assert single_status(attacked, data) == 413
    assert_bounded(attacked)


def test_json_zeros_over_the_request_budget_are_refused(attacked: Server) -> None:
    data = post("/v1/models/half:predict", b'{"instances": [' + b"0," * 1_000_000 + b"0]}")
    assert single_status(attacked, data) in (413, 429)
    assert_bounded(attacked)


def drip(server: Server, head: bytes, lines: Sequence[bytes], pause: float) -> tuple[list[tuple[int, bytes]], bool]:
    """Send ``head``, then one of ``lines`` every ``pause`` seconds while the connection stays open."""
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=ANSWER_SECONDS) as sock:
        sock.sendall(head)
        try:
            for line in lines:
                time.sleep(pause)
                sock.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(0.5)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            return parse_responses(received), False
        return parse_responses(received), True


def test_a_header_drip_is_cut_by_the_header_timeout(guarded: Server) -> None:
    # One header line every 0.5 s for 5 s: the 2 s header timeout must end it (408, then close).
    responses, closed = drip(guarded, b"POST /v1/models/half:predict HTTP/1.1\r\n", [b"X-Drip: 1\r\n"] * 10, 0.5)
    assert closed and [s for s, _ in responses] in ([408], []), responses


def test_a_stalled_body_is_cut_by_the_body_timeout(guarded: Server) -> None:
    head = b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
    responses, closed = drip(guarded, head, [b""] * 8, 0.5)  # nothing more for 4 s
    assert closed and [s for s, _ in responses] in ([408], []), responses


# ---- gRPC: grpcio's client with raw bytes, and raw HTTP/2 frames ---------------------------

GRPC_CLIENT_MISTAKE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
}


def grpc_case(seed: int) -> bytes:
    """A PredictRequest's bytes, valid or mutated (flips, cuts, noise), for the models served."""
    r = random.Random(10_000 + seed)
    tensor = pb.TensorProto(dtype=r.choice([1, 1, 7, 3, 9, 2, 10, 19, 99, 0, 21]))
    for _ in range(r.choice([0, 1, 1, 2, 3])):
        tensor.tensor_shape.dim.add(size=r.choice([0, 1, 2, 3, 7, -1, 2**20]))
    tensor.float_val.extend(r.random() for _ in range(r.randint(0, 4)))
    tensor.string_val.extend(r.randbytes(r.randint(0, 8)) for _ in range(r.randint(0, 3)))
    if r.random() < 0.3:
        tensor.tensor_content = r.randbytes(r.choice([0, 4, 12, 28]))
    data = bytearray(predict_request(r.choice(["half", "strings", "nope", ""]), tensor, r.choice(["x", "y", ""])))
    for _ in range(r.choice([0, 0, 1, 2, 3])):
        at = r.randrange(len(data) + 1)
        op = r.random()
        if op < 0.4 and at < len(data):
            data[at] ^= 1 << r.randrange(8)
        elif op < 0.6:
            del data[at:]
        else:
            data[at:at] = r.randbytes(r.randint(1, 6))
    return bytes(data)


GRPC_CASES = 100


@pytest.mark.parametrize("seed", range(GRPC_CASES))
def test_grpc_fuzz(guarded: Server, seed: int) -> None:
    start = time.monotonic()
    code, details = grpc_call(guarded, grpc_case(seed))
    assert time.monotonic() - start < ANSWER_SECONDS
    assert code in GRPC_CLIENT_MISTAKE, (code, details)


def h2_call(
    server: Server, messages: Sequence[bytes], extra: Sequence[tuple[str, str]] = (), path: str = PREDICT
) -> dict[str, str]:
    """One gRPC call as raw HTTP/2 frames: ``messages`` are sent as they are (prefix included), as
    fast as the server's flow-control window lets them.

    Returns the trailers / headers seen, plus "reset" or "closed" when the stream or connection ended
    without a status."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    stream = connection.get_next_available_stream_id()
    headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x")]
    connection.send_headers(stream, [*headers, ("content-type", "application/grpc"), ("te", "trailers"), *extra])
    pending = b"".join(messages)
    ended = False
    seen: dict[str, str] = {}
    deadline = time.monotonic() + ANSWER_SECONDS
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=ANSWER_SECONDS) as sock:
        while time.monotonic() < deadline and not seen.keys() & {"grpc-status", "reset", "closed"}:
            window = min(connection.local_flow_control_window(stream), connection.max_outbound_frame_size)
            if pending and window > 0:
                ended = len(pending) <= window
                connection.send_data(stream, pending[:window], end_stream=ended)
                pending = pending[window:]
            elif not pending and not ended:
                connection.end_stream(stream)
                ended = True
            if data := connection.data_to_send():
                sock.sendall(data)
                if pending:
                    continue  # more to send while the window lasts
            received = sock.recv(65536)
            if not received:
                seen["closed"] = "1"
                break
            _h2_events(connection, received, seen)
    assert seen, f"no answer within {ANSWER_SECONDS} s"
    return seen


def _h2_events(connection: h2.connection.H2Connection, data: bytes, seen: dict[str, str]) -> None:
    for ev in connection.receive_data(data):
        if isinstance(ev, h2.events.ResponseReceived | h2.events.TrailersReceived):
            seen.update((k.decode(), v.decode()) for k, v in ev.headers)
        elif isinstance(ev, h2.events.StreamReset):
            seen["reset"] = str(ev.error_code)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            seen["closed"] = str(ev.error_code)
        elif isinstance(ev, h2.events.DataReceived):
            connection.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)


def frame(message: bytes, flag: int = 0, length: int | None = None) -> bytes:
    """gRPC's length-prefixed message: compressed flag, big-endian length, bytes."""
    return bytes([flag]) + struct.pack(">I", len(message) if length is None else length) + message


GOOD = predict_request("half", floats([1.0, 2.0, 5.0]))
# Answers that come from grpc-core's transport, before any modelserve code runs, for a broken frame:
# grpc-core says INTERNAL for a compression error (documented in docs/security.md).
CORE_COMPRESSION = {"13"}
H2_CASES: dict[str, tuple[list[bytes], list[tuple[str, str]], set[str]]] = {
    "good": ([frame(GOOD)], [], {"0"}),
    "gzip-compressed message": ([frame(gzip.compress(GOOD), flag=1)], [("grpc-encoding", "gzip")], {"0"}),
    "no message": ([], [], {"12"}),
    "prefix cut short": ([b"\x00\x00"], [], {"12"}),
    "message cut short": ([frame(GOOD[:10], length=len(GOOD))], [], {"12"}),
    "declared 2 GiB, sent 3 bytes": ([frame(b"abc", length=2**31)], [], {"8"}),
    "declared 4 GiB, sent 3 bytes": ([frame(b"abc", length=2**32 - 1)], [], {"8"}),
    "two messages for a unary call": ([frame(GOOD), frame(GOOD)], [], {"0", "12"}),
    "random protobuf bytes": ([frame(bytes(range(256)) * 4)], [], {"3"}),
    "compressed flag without grpc-encoding": ([frame(GOOD, flag=1)], [], CORE_COMPRESSION),
    "grpc-encoding gzip, not gzip": ([frame(b"garbage", flag=1)], [("grpc-encoding", "gzip")], CORE_COMPRESSION),
    "unknown grpc-encoding": ([frame(GOOD, flag=1)], [("grpc-encoding", "br")], CORE_COMPRESSION),
    "empty model name": ([frame(predict_request("", floats([1.0])))], [], {"3", "5"}),
}


# A unary call whose stream ends without a whole message: the threaded server answers UNIMPLEMENTED;
# grpc.aio's (front-end processes, --enable_batching) never dispatches it, and the client's deadline
# ends it (docs/security.md).
NO_WHOLE_MESSAGE = {"no message", "prefix cut short", "message cut short"}


@pytest.mark.parametrize("case", sorted(H2_CASES))
def test_grpc_frames(guarded: Server, case: str) -> None:
    messages, extra, expected = H2_CASES[case]
    if case in NO_WHOLE_MESSAGE and default_frontend_processes() > 1:
        with pytest.raises(TimeoutError):  # no answer; assert_bounded then checks the server serves on
            h2_call(guarded, messages, extra)
        return
    seen = h2_call(guarded, messages, extra)
    assert seen.get("grpc-status") in expected, seen


def test_a_grpc_gzip_bomb_is_bounded(attacked: Server) -> None:
    # 128 MiB of zeros in 0.6 MB: the server's peak RSS grew by 276 MiB before (512 MiB: by 1.6 GiB).
    bomb = gzip.compress(b"\0" * (128 * MIB), 1)
    seen = h2_call(attacked, [frame(bomb, flag=1)], [("grpc-encoding", "gzip")])
    assert seen.get("grpc-status") in {"3", "8"}, seen
    assert_bounded(attacked)


# ---- amplification through the fill rule: one small request, a huge tensor ----------------


def fill(dtype: int, dims: Sequence[int], **values: list[object]) -> bytes:
    tensor = pb.TensorProto(dtype=dtype, tensor_shape={"dim": [{"size": d} for d in dims]}, **values)
    return predict_request("strings" if dtype == 7 else "half", tensor)


def test_a_float_fill_rule_expansion_is_refused(attacked: Server) -> None:
    code, details = grpc_call(attacked, fill(1, [2**26], float_val=[1.0]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details[:200])
    assert_bounded(attacked)


def test_a_string_fill_rule_expansion_is_refused(attacked: Server) -> None:
    code, details = grpc_call(attacked, fill(7, [2**22], string_val=[b"x"]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details[:200])
    assert_bounded(attacked)


def test_rank_over_64_is_invalid_argument(guarded: Server) -> None:
    code, details = grpc_call(guarded, fill(1, [1] * 65, float_val=[1.0]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and b"ValueError" not in details, (code, details)


def test_overflowing_empty_dims_are_invalid_argument(guarded: Server) -> None:
    code, details = grpc_call(guarded, fill(1, [2**62, 2**62, 0]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and b"ValueError" not in details, (code, details)


# ---- file descriptors: a REST connection flood must leave gRPC working ---------------------


def test_a_rest_connection_flood_leaves_grpc_working(config: Path) -> None:
    with serve(config, *hostile_flags(), nofile=256) as server:
        idle = []
        try:
            for _ in range(300):
                with contextlib.suppress(OSError):
                    idle.append(socket.create_connection(("127.0.0.1", server.rest_port), timeout=2))
            time.sleep(0.5)  # let the server accept what it can
            code, details = grpc_call(server, GOOD, timeout=5)
            assert code == grpc.StatusCode.OK, (code, details)
        finally:
            for sock in idle:
                sock.close()
        assert_serves(server)
