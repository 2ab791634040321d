"""The REST listener's HTTP/1.1 behaviour (api/httpd.py, as server.py runs it), over raw sockets.

A real server serves half_plus_two (y = x / 2 + 2, computed here with numpy); each test writes
bytes the way a client would and reads what comes back, so keep-alive, pipelining, chunked bodies,
100-continue, early answers and bad requests are checked on the wire, not through a client library.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelserve.testing import ServerThread, running_server

from . import onnx_models as om

LIMIT = 100_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("models")
    om.write(root / "half", 1, om.half_plus_two())
    with running_server(
        f"--model_base_path={root / 'half'}", "--model_name=half", f"--rest_api_max_body_bytes={LIMIT}"
    ) as s:
        yield s


def connect(server: ServerThread) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.server.rest_port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Reader:
    """Reads HTTP/1.1 responses (Content-Length bodies) off a socket, one after the other."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"connection closed; got {self.buffer!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("connection closed inside a body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def closed(self) -> bool:
        """True once the server has closed the connection (and nothing more came)."""
        try:
            return not self._fill()
        except ConnectionResetError:
            return True


def predict_request(values: list[float], extra: str = "", body: bytes | None = None) -> bytes:
    data = json.dumps({"instances": values}).encode() if body is None else body
    return (
        f"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n{extra}\r\n"
    ).encode() + data


def expected(values: list[float]) -> list[float]:
    return (np.asarray(values, np.float32) / 2 + 2).tolist()


def predictions(body: bytes) -> list[float]:
    return list(json.loads(body)["predictions"])


def test_keep_alive_answers_several_requests_on_one_connection(server: ServerThread) -> None:
    with connect(server) as sock:
        reader = Reader(sock)
        for values in ([1.0], [2.0, 4.0], [-6.0]):
            sock.sendall(predict_request(values))
            status, headers, body = reader.response()
            assert status == 200 and predictions(body) == expected(values)
            assert "connection" not in headers
            assert headers["date"].endswith("GMT")


def test_pipelined_requests_are_answered_in_order(server: ServerThread) -> None:
    batches = [[float(i), float(i) + 0.5] for i in range(8)]
    with connect(server) as sock:
        sock.sendall(b"".join(predict_request(v) for v in batches) + b"GET /v1/models/half HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        for values in batches:
            status, _, body = reader.response()
            assert status == 200 and predictions(body) == expected(values)
        status, _, body = reader.response()
        assert status == 200 and json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE"


def test_chunked_request_body(server: ServerThread) -> None:
    data = json.dumps({"instances": [3.0, 5.0, 7.0]}).encode()
    chunks = [data[:7], data[7:20], data[20:]]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (encoded[:10], encoded[10:30], encoded[30:]):  # arrives in several reads
            sock.sendall(piece)
            time.sleep(0.02)
        status, _, body = Reader(sock).response()
    assert status == 200 and predictions(body) == expected([3.0, 5.0, 7.0])


def test_expect_100_continue_gets_continue_then_the_answer(server: ServerThread) -> None:
    data = json.dumps({"instances": [8.0]}).encode()
    with connect(server) as sock:
        head = predict_request([8.0], "Expect: 100-continue\r\n", data)[: -len(data)]
        sock.sendall(head)  # headers only: the body waits for "100 Continue"
        reader = Reader(sock)
        status, _, _ = reader.response(head_only=True)
        assert status == 100
        sock.sendall(data)
        status, _, body = reader.response()
    assert status == 200 and predictions(body) == expected([8.0])


def test_expect_100_continue_over_the_limit_gets_413_and_no_continue(server: ServerThread) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
            b"Expect: 100-continue\r\n\r\n" % (LIMIT + 1)
        )
        reader = Reader(sock)
        status, _, body = reader.response()
        assert status == 413 and "limit" in json.loads(body)["error"]  # and no "100 Continue" before it


def test_early_answer_reads_the_rest_of_the_body_and_keeps_the_connection(server: ServerThread) -> None:
    big = b'{"instances": [' + b",".join([b"1.0"] * (LIMIT // 4)) + b"]}"
    assert len(big) > LIMIT
    with connect(server) as sock:
        sock.sendall(predict_request([], body=big))  # all of it, as a client without Expect does
        reader = Reader(sock)
        status, _, body = reader.response()
        assert status == 413 and "limit" in json.loads(body)["error"]
        sock.sendall(predict_request([10.0]))
        status, _, body = reader.response()
    assert status == 200 and predictions(body) == expected([10.0])


def test_unparseable_request_gets_400_and_the_server_goes_on(server: ServerThread) -> None:
    for garbage in (
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"POST /v1/models/half:predict HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    ):
        with connect(server) as sock:
            sock.sendall(garbage)
            reader = Reader(sock)
            status, headers, _ = reader.response()
            assert status == 400 and headers["connection"] == "close"
            assert reader.closed()
    with connect(server) as sock:
        sock.sendall(predict_request([0.0]))
        status, _, body = Reader(sock).response()
    assert status == 200 and predictions(body) == [2.0]


def test_http_1_0_closes_after_the_answer(server: ServerThread) -> None:
    data = json.dumps({"instances": [4.0]}).encode()
    with connect(server) as sock:
        sock.sendall(b"POST /v1/models/half:predict HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
        reader = Reader(sock)
        status, headers, body = reader.response()
        assert status == 200 and predictions(body) == expected([4.0])
        assert headers["connection"] == "close"
        assert reader.closed()


def test_head_gets_headers_without_a_body(server: ServerThread) -> None:
    with connect(server) as sock:
        sock.sendall(b"HEAD /v1/models/half HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        status, headers, _ = reader.response(head_only=True)
        assert int(headers["content-length"]) > 0
        sock.sendall(b"GET /v1/models/half HTTP/1.1\r\nHost: x\r\n\r\n")  # nothing of a body came between
        status, _, body = reader.response()
    assert status == 200 and json.loads(body)["model_version_status"][0]["version"] == "1"


def test_client_that_disconnects_mid_body_costs_nothing(server: ServerThread) -> None:
    with connect(server) as sock:
        sock.sendall(b'POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"inst')
    with connect(server) as sock:
        sock.sendall(predict_request([6.0]))
        status, _, body = Reader(sock).response()
    assert status == 200 and predictions(body) == expected([6.0])


def test_shutdown_lets_a_request_in_flight_finish(tmp_path: Path) -> None:
    om.write(tmp_path / "half", 1, om.half_plus_two())
    data = json.dumps({"instances": [12.0]}).encode()
    with running_server(f"--model_base_path={tmp_path / 'half'}", "--model_name=half") as s:
        sock = connect(s)
        sock.sendall(b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data))
        idle = connect(s)
        idle.sendall(b"GET /v1/models/half HTTP/1.1\r\nHost: x\r\n\r\n")
        idle_reader = Reader(idle)
        assert idle_reader.response()[0] == 200
        # The request above is in flight (its body is still to come) when the drain starts.
        stopping = asyncio.run_coroutine_threadsafe(s.server.stop(), s.loop)
        time.sleep(0.3)
        assert idle_reader.closed()  # idle keep-alive connections close at once
        sock.sendall(data)
        reader = Reader(sock)
        status, headers, body = reader.response()
        assert status == 200 and predictions(body) == expected([12.0])
        assert headers["connection"] == "close"
        stopping.result(60)
        sock.close()
        idle.close()
