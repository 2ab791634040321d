"""The REST listener's limits against slow and hostile clients (issue 17), over raw sockets.

Each limit is checked on the wire: its status code, the connection closed after it, a bounded time
(a guard, not a measurement), and a good request served next. The findings they answer: a 128 KB URL
delaying everyone and getting a generic 400; a million headers accepted; a header line every few
seconds keeping a connection open forever (the idle timer restarted on every byte); no connection
cap, so that slow clients at ``ulimit -n 256`` broke gRPC and the version poller; ``Transfer-Encoding:
gzip, chunked`` served with the gzip ignored; gzip bodies inflated without a ratio limit, on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelserve.client import GrpcClient
from modelserve.frontends import rest_connection_cap
from modelserve.options import parse_flags
from modelserve.testing import ServerThread, default_frontend_processes, running_server, server_process

from . import onnx_models as om
from .test_http_wire import Reader, connect, expected, predict_request, predictions
from .test_httpd import get, listening

TIMEOUT = 1.0  # the header, body and keep-alive timeouts of the ``slow`` server
GUARD = 10.0  # seconds any refusal may take at most (they take milliseconds)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Every limit at its default."""
    root = tmp_path_factory.mktemp("models")
    om.write(root / "half", 1, om.half_plus_two())
    with running_server(f"--model_base_path={root / 'half'}", "--model_name=half") as s:
        yield s


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Short read timeouts, so that a slow client is seen in a second."""
    root = tmp_path_factory.mktemp("models")
    om.write(root / "half", 1, om.half_plus_two())
    with running_server(
        f"--model_base_path={root / 'half'}",
        "--model_name=half",
        f"--rest_api_header_timeout_seconds={TIMEOUT}",
        f"--rest_api_body_timeout_seconds={TIMEOUT}",
        f"--rest_api_keep_alive_seconds={TIMEOUT}",
    ) as s:
        yield s


def refused(sock: socket.socket, status: int) -> dict[str, str]:
    """The answer is ``status`` and the connection then closes; its headers."""
    reader = Reader(sock)
    got, headers, body = reader.response()
    assert got == status, body
    assert headers["connection"] == "close"
    assert reader.closed()
    return headers


def still_serves(server: ServerThread) -> None:
    with connect(server) as sock:
        sock.sendall(predict_request([6.0]))
        status, _, body = Reader(sock).response()
    assert status == 200 and predictions(body) == expected([6.0])


@contextlib.contextmanager
def sending(sock: socket.socket, pieces: Iterator[bytes]) -> Iterator[None]:
    """Send ``pieces`` from a thread while the test reads; the server may close before they are all out."""

    def send() -> None:
        with contextlib.suppress(OSError):
            for piece in pieces:
                sock.sendall(piece)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(GUARD)


# ---- request line and headers -----------------------------------------------------------------


def test_a_128_kb_url_gets_414_at_once(server: ServerThread) -> None:
    started = time.monotonic()
    with connect(server) as sock:
        sock.sendall(b"GET /v1/models/" + b"a" * 128 * 1024 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        refused(sock, 414)
    assert time.monotonic() - started < GUARD
    still_serves(server)


def test_after_a_refusal_the_listener_reads_a_megabyte_at_most(server: ServerThread) -> None:
    """What a client sends after the answer that closes its connection is read and dropped only up to
    a megabyte (then left to the kernel until the close): 64 MB of URL cost the loop one megabyte."""
    with connect(server) as sock:
        sock.setblocking(False)
        chunk = b"GET /v1/models/" + b"a" * (1024 * 1024)
        sent = 0
        deadline = time.monotonic() + 1  # within the listener's 2 s of lingering, which ends in a close
        while sent < 64 * 1024 * 1024 and time.monotonic() < deadline:
            try:
                sent += sock.send(chunk)
                chunk = b"a" * (1024 * 1024)
            except BlockingIOError:
                time.sleep(0.01)  # the kernel's buffers are full: the listener is not reading
        sock.setblocking(True)
        assert sent < 32 * 1024 * 1024  # the megabyte read plus what both ends' buffers hold
        refused(sock, 414)
    still_serves(server)


def test_a_url_within_the_limit_is_served(server: ServerThread) -> None:
    with connect(server) as sock:
        sock.sendall(get("/v1/models/half?pad=" + "a" * 15_000))
        status, _, body = Reader(sock).response()
    assert status == 200 and json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE"


def test_a_million_headers_get_431_at_once(server: ServerThread) -> None:
    started = time.monotonic()
    lines = b"X-A: b\r\n" * 10_000
    with connect(server) as sock, sending(sock, iter([b"GET /v1/models/half HTTP/1.1\r\n", *[lines] * 100])):
        refused(sock, 431)
    assert time.monotonic() - started < GUARD
    still_serves(server)


def test_a_32_mb_header_gets_431_before_it_is_all_read(server: ServerThread) -> None:
    started = time.monotonic()
    piece = b"b" * 64 * 1024
    with connect(server) as sock, sending(sock, iter([b"GET /v1/models/half HTTP/1.1\r\nX-Big: ", *[piece] * 512])):
        refused(sock, 431)
    assert time.monotonic() - started < GUARD
    still_serves(server)


def test_headers_within_the_limits_are_served(server: ServerThread) -> None:
    headers = "".join(f"X-H{i}: {'v' * 500}\r\n" for i in range(90))
    with connect(server) as sock:
        sock.sendall(predict_request([1.0], headers))
        status, _, body = Reader(sock).response()
    assert status == 200 and predictions(body) == expected([1.0])


# ---- framing ------------------------------------------------------------------------------------


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


@pytest.mark.parametrize("coding", ["gzip, chunked", "gzip", "deflate, chunked"])
def test_a_transfer_encoding_other_than_chunked_gets_501(server: ServerThread, coding: str) -> None:
    data = json.dumps({"instances": [1.0]}).encode()
    with connect(server) as sock:
        head = f"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {coding}\r\n\r\n"
        sock.sendall(head.encode() + chunked(data))
        refused(sock, 501)
    still_serves(server)


def test_chunked_in_any_case_is_served(server: ServerThread) -> None:
    data = json.dumps({"instances": [3.0]}).encode()
    with connect(server) as sock:
        sock.sendall(b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n")
        sock.sendall(chunked(data))
        status, _, body = Reader(sock).response()
    assert status == 200 and predictions(body) == expected([3.0])


@pytest.mark.parametrize("order", ["te-first", "cl-first"])
def test_transfer_encoding_with_content_length_gets_400(server: ServerThread, order: str) -> None:
    # Request smuggling: the two framings disagree about where the body ends. httptools refuses it.
    data = json.dumps({"instances": [1.0]}).encode()
    te, cl = "Transfer-Encoding: chunked\r\n", f"Content-Length: {len(data)}\r\n"
    both = te + cl if order == "te-first" else cl + te
    with connect(server) as sock:
        sock.sendall(f"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\n{both}\r\n".encode() + chunked(data))
        refused(sock, 400)


# ---- gzip ---------------------------------------------------------------------------------------


def gzip_post(data: bytes) -> bytes:
    body = gzip.compress(data, 9)
    return (
        b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def test_a_gzip_bomb_gets_413_by_its_ratio(server: ServerThread) -> None:
    # 30 MB of zeros is 30 KB of gzip (a thousandfold): refused after 100 times that, far below the 256 MiB body cap.
    with connect(server) as sock:
        sock.sendall(gzip_post(b"0" * 30_000_000))
        status, _, body = Reader(sock).response()
        assert status == 413
        assert "--rest_api_max_gzip_ratio" in json.loads(body)["error"]
        sock.sendall(predict_request([2.0]))  # the connection goes on: the body was read whole
        status, _, body = Reader(sock).response()
    assert status == 200 and predictions(body) == expected([2.0])


def test_a_small_gzip_body_is_served_whatever_its_ratio(server: ServerThread) -> None:
    values = [0.0] * 100_000  # 500 KB of JSON, a few hundred times smaller gzipped
    data = json.dumps({"instances": values}).encode()
    assert len(data) > 100 * len(gzip.compress(data, 9))
    with connect(server) as sock:
        sock.sendall(gzip_post(data))
        status, _, body = Reader(sock).response()
    assert status == 200 and predictions(body) == expected(values)


def test_a_gzip_body_is_inflated_off_the_event_loop(tmp_path: Path) -> None:
    # No ratio limit, so that inflating takes a while; a heartbeat on the server's loop must keep ticking.
    om.write(tmp_path / "half", 1, om.half_plus_two())
    # Its first byte is not UTF-8, so the JSON parser refuses it at once: what takes the time is the inflation.
    request = gzip_post(b"\xff" + b"0" * 150_000_000)
    with running_server(
        f"--model_base_path={tmp_path / 'half'}", "--model_name=half", "--rest_api_max_gzip_ratio=0"
    ) as s:
        beating = threading.Event()
        stop = threading.Event()

        async def heartbeat() -> float:
            gap, last = 0.0, time.monotonic()
            beating.set()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gap, last = max(gap, now - last), now
            return gap

        beat = asyncio.run_coroutine_threadsafe(heartbeat(), s.loop)
        assert beating.wait(GUARD)
        with connect(s) as sock:
            started = time.monotonic()
            sock.sendall(request)
            status, _, _ = Reader(sock).response()
            took = time.monotonic() - started
        stop.set()
        gap = beat.result(GUARD)
    assert status == 400  # it inflated whole (and is not JSON)
    assert took > 0.1, "inflating took too little time to tell"
    assert gap < took / 3, (gap, took)


# ---- read timeouts and keep-alive ---------------------------------------------------------------


def test_a_header_line_every_half_second_gets_408_and_closes(slow: ServerThread) -> None:
    started = time.monotonic()
    with connect(slow) as sock:
        sock.sendall(b"GET /v1/models/half HTTP/1.1\r\n")

        def drip() -> Iterator[bytes]:
            for i in range(int(GUARD / 0.5)):
                time.sleep(0.5)
                yield f"X-Drip-{i}: x\r\n".encode()

        with sending(sock, drip()):
            refused(sock, 408)
    assert time.monotonic() - started < GUARD
    still_serves(slow)


def test_a_stalled_body_gets_408_and_closes(slow: ServerThread) -> None:
    with connect(slow) as sock:
        sock.sendall(b'POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"inst')
        refused(sock, 408)


def test_a_body_whose_reads_come_within_the_timeout_is_served(slow: ServerThread) -> None:
    data = json.dumps({"instances": [5.0]}).encode()
    with connect(slow) as sock:
        sock.sendall(predict_request([5.0], body=data)[: -len(data)])
        for i in range(0, len(data), 5):  # about 2 s in all, 0.4 s between reads
            time.sleep(0.4)
            sock.sendall(data[i : i + 5])
        status, _, body = Reader(sock).response()
    assert status == 200 and predictions(body) == expected([5.0])


def test_keep_alive_counts_from_the_last_answer_not_the_last_byte() -> None:
    # Line breaks between requests start no request: a client sending one every 0.3 s is idle all the same.
    with listening(keep_alive_seconds=TIMEOUT) as listener, listener.connect() as sock:
        sock.sendall(get("/once"))
        reader = Reader(sock)
        assert reader.response()[0] == 200
        started = time.monotonic()
        closed = False
        while not closed and time.monotonic() - started < GUARD:
            try:
                sock.sendall(b"\r\n")
                readable, _, _ = select.select([sock], [], [], 0.3)
                closed = bool(readable) and sock.recv(1) == b""
            except OSError:  # reset: closed too
                closed = True
        assert closed


def test_a_connection_between_requests_keeps_its_keep_alive(slow: ServerThread) -> None:
    with connect(slow) as sock:
        reader = Reader(sock)
        for values in ([1.0], [2.0], [3.0]):  # each within the keep-alive time of the last answer
            sock.sendall(predict_request(values))
            status, _, body = reader.response()
            assert status == 200 and predictions(body) == expected(values)
            time.sleep(TIMEOUT / 2)


# ---- the connection cap -------------------------------------------------------------------------


def test_over_the_cap_a_connection_gets_503_and_the_others_go_on() -> None:
    with listening(max_connections=3) as listener:
        held = [listener.connect() for _ in range(3)]
        for sock in held:  # all three are in (served), then busy sending a body: none may be let go
            sock.sendall(get("/in"))
            assert Reader(sock).response()[0] == 200
            sock.sendall(b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        time.sleep(1.2)  # longer than a connection waiting on its client may hold its slot at the cap
        with listener.connect() as extra:
            headers = refused(extra, 503)
            assert headers["content-length"] == "26"
        held[0].sendall(b"67890")  # a busy one finishes its request
        assert Reader(held[0]).response()[0] == 200
        held.pop().close()
        for _ in range(50):  # the listener sees the close at its next turn
            with listener.connect() as again:
                again.sendall(get("/again"))
                status, _, _ = Reader(again).response()
            if status == 200:
                break
            time.sleep(0.05)
        assert status == 200
        for sock in held:
            sock.close()


def test_at_the_cap_the_oldest_client_waiting_makes_room_for_a_new_one() -> None:
    """A slowloris holding every slot is pushed out: at the cap, the oldest connection that has waited
    on its client for over half a second (idle, or inside a request's head) is closed to admit a new one;
    a connection busy with a request never is."""
    with listening(max_connections=3) as listener:
        idle = listener.connect()  # connected, says nothing
        time.sleep(0.1)
        head = listener.connect()
        head.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        busy = listener.connect()
        busy.sendall(b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        time.sleep(1.2)
        fresh = []
        for expected_gone in (idle, head):  # the oldest goes first
            sock = listener.connect()
            sock.sendall(get("/new"))
            assert Reader(sock).response()[0] == 200
            assert Reader(expected_gone).closed()
            fresh.append(sock)
        with listener.connect() as extra:  # the two new ones were just answered, the third is busy
            refused(extra, 503)
        busy.sendall(b"67890")
        assert Reader(busy).response()[0] == 200
        for sock in (*fresh, busy, idle, head):
            sock.close()


def test_an_explicit_connection_cap_is_the_server_s_split_across_front_end_processes() -> None:
    options = parse_flags(["--rest_api_max_connections=1000"])
    assert [rest_connection_cap(options, share) for share in (1, 2, 3)] == [1000, 500, 333]
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY:  # from the descriptor limit: each process's own, whatever the share
        default = parse_flags([])
        assert rest_connection_cap(default, 1) == rest_connection_cap(default, 4) > 0


def test_at_ulimit_256_rest_refuses_over_its_cap_while_grpc_and_the_poller_go_on(tmp_path: Path) -> None:
    base = tmp_path / "m"
    om.write(base, 1, om.version_marker(1))
    log = tmp_path / "server.log"
    flags = ["--model_name=m", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"]
    held: list[socket.socket] = []
    with server_process(*flags, address_space=3_000_000_000, nofile=256, log=log) as server:
        rest, grpc_port = server.rest_port, server.grpc_port
        try:
            # more than the 256 descriptors each process may open (each front-end process has its own)
            for _ in range(300 * default_frontend_processes()):
                held.append(socket.create_connection(("127.0.0.1", rest), timeout=10))
            refusals = 0
            deadline = time.monotonic() + GUARD
            waiting = list(held)
            while waiting and time.monotonic() < deadline:
                readable, _, _ = select.select(waiting, [], [], 1.0)
                if not readable:
                    break  # the rest are in and waiting for a request
                for sock in readable:
                    waiting.remove(sock)
                    with contextlib.suppress(OSError):
                        refusals += sock.recv(100).startswith(b"HTTP/1.1 503 Service Unavailable")
            assert refusals > 0, log.read_text()
            with GrpcClient(f"127.0.0.1:{grpc_port}", timeout=30) as client:
                one = np.array([1.0, 2.0], np.float32)
                assert client.predict("m", {"x": one})["y"].tolist() == [1.0, 1.0]
                om.write(base, 2, om.version_marker(2))  # the poller finds it and loads it
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and client.predict("m", {"x": one})["y"].tolist() != [2.0, 2.0]:
                    time.sleep(0.2)
                assert client.predict("m", {"x": one})["y"].tolist() == [2.0, 2.0], log.read_text()
            assert "Too many open files" not in log.read_text()
            for sock in held:
                sock.close()
            held.clear()
            for _ in range(100):  # REST serves again once connections are let go
                with socket.create_connection(("127.0.0.1", rest), timeout=10) as sock:
                    sock.sendall(get("/v1/models/m"))
                    status = Reader(sock).response()[0]
                if status == 200:
                    break
                time.sleep(0.1)
            assert status == 200
        finally:
            for sock in held:
                sock.close()
