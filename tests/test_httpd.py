"""The REST listener (``api/httpd.py``) on its own, with a plain handler, over raw sockets.

tests/test_http_wire.py checks the listener as the server runs it, in front of a model; these
tests check what needs a handler of their own: slow and failing handlers, keep-alive expiry,
long pipelines, half-closed clients, upgrades and the grace period of a stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from modelserve.api.http import JSON_HEADERS, Request, Response
from modelserve.api.httpd import HttpOptions, HttpServer

from .test_http_wire import Reader

LIMIT = 1000
KEEP_ALIVE = 0.4


async def handler(request: Request) -> Response:
    """Echoes what it got; ``/slow?S`` answers after S seconds, ``/boom`` raises."""
    if request.path == "/slow":
        await asyncio.sleep(float(request.query))
    if request.path == "/boom":
        raise RuntimeError("boom")
    echo = {"method": request.method, "path": request.path, "query": request.query, "body": request.body.decode()}
    return Response(200, json.dumps(echo).encode(), JSON_HEADERS)


class Listener:
    def __init__(self, server: HttpServer, loop: asyncio.AbstractEventLoop, port: int) -> None:
        self.server = server
        self.loop = loop
        self.port = port

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def stop(self, grace: float) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop).result(30)


@contextlib.contextmanager
def listening(**options: object) -> Iterator[Listener]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = HttpServer(handler, HttpOptions(**options))  # type: ignore[arg-type]
    asyncio.run_coroutine_threadsafe(server.start(sock), loop).result(10)
    listener = Listener(server, loop, sock.getsockname()[1])
    try:
        yield listener
    finally:
        if not server.draining:
            listener.stop(1.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    with listening(max_body_bytes=LIMIT) as it:
        yield it


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def echo(body: bytes) -> dict[str, str]:
    return dict(json.loads(body))


def test_a_failing_handler_costs_its_request_a_500_and_nothing_else(listener: Listener) -> None:
    with listener.connect() as sock:
        sock.sendall(get("/boom") + get("/after?1"))
        reader = Reader(sock)
        status, headers, _ = reader.response()
        assert status == 500 and "connection" not in headers
        status, _, body = reader.response()
        assert status == 200 and echo(body)["query"] == "1"


def test_a_long_pipeline_is_answered_in_order(listener: Listener) -> None:
    # Far more than the listener parses ahead of its turn, so reading pauses and resumes.
    count = 200
    with listener.connect() as sock:
        sock.sendall(b"".join(post("/n", str(i).encode()) for i in range(count)))
        reader = Reader(sock)
        bodies = [echo(reader.response()[2])["body"] for _ in range(count)]
    assert bodies == [str(i) for i in range(count)]


def test_a_slow_answer_holds_back_the_next_one_on_its_connection_only(listener: Listener) -> None:
    with listener.connect() as slow, listener.connect() as quick:
        slow.sendall(get("/slow?2") + get("/second"))
        quick.sendall(get("/quick"))
        assert echo(Reader(quick).response()[2])["path"] == "/quick"
        slow.setblocking(False)
        with pytest.raises(BlockingIOError):
            slow.recv(1)  # nothing yet: its first answer is still on its way
        slow.setblocking(True)
        reader = Reader(slow)
        assert [echo(reader.response()[2])["path"] for _ in range(2)] == ["/slow", "/second"]


def test_a_chunked_body_over_the_limit_gets_413_and_the_connection_goes_on(listener: Listener) -> None:
    chunk = b"x" * 400
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4)) + b"0\r\n\r\n"
    with listener.connect() as sock:
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
        reader = Reader(sock)
        assert reader.response()[0] == 413
        sock.sendall(post("/small", b"abc"))
        status, _, body = reader.response()
    assert status == 200 and echo(body)["body"] == "abc"


def test_garbage_after_pipelined_requests_is_answered_400_after_them(listener: Listener) -> None:
    with listener.connect() as sock:
        sock.sendall(get("/slow?0.1") + b"NOT HTTP\r\n\r\n")
        reader = Reader(sock)
        status, _, body = reader.response()
        assert status == 200 and echo(body)["path"] == "/slow"
        status, headers, _ = reader.response()
        assert status == 400 and headers["connection"] == "close"
        assert reader.closed()


def test_continue_is_sent_only_when_the_answers_ahead_are_out(listener: Listener) -> None:
    body = b"payload"
    with listener.connect() as sock:
        head = post("/expecting", body, "Expect: 100-continue\r\n")[: -len(body)]
        sock.sendall(get("/slow?0.2") + head)
        reader = Reader(sock)
        status, _, first = reader.response()
        assert status == 200 and echo(first)["path"] == "/slow"
        assert reader.response(head_only=True)[0] == 100
        sock.sendall(body)
        status, _, second = reader.response()
    assert status == 200 and echo(second)["body"] == "payload"


def test_a_half_closed_client_gets_every_answer_it_is_owed(listener: Listener) -> None:
    with listener.connect() as sock:
        sock.sendall(get("/slow?0.1") + get("/next"))
        sock.shutdown(socket.SHUT_WR)
        reader = Reader(sock)
        assert echo(reader.response()[2])["path"] == "/slow"
        status, headers, body = reader.response()
        assert status == 200 and echo(body)["path"] == "/next" and headers["connection"] == "close"
        assert reader.closed()


def test_an_upgrade_request_is_answered_plainly_then_the_connection_closes(listener: Listener) -> None:
    with listener.connect() as sock:
        sock.sendall(get("/ws", "Connection: Upgrade\r\nUpgrade: websocket\r\n") + get("/never"))
        reader = Reader(sock)
        status, headers, body = reader.response()
        assert status == 200 and echo(body)["path"] == "/ws" and headers["connection"] == "close"
        assert reader.closed()


def test_head_answers_with_the_length_of_the_body_it_leaves_out(listener: Listener) -> None:
    with listener.connect() as sock:
        sock.sendall(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n" + get("/after"))
        reader = Reader(sock)
        status, headers, _ = reader.response(head_only=True)
        expected = json.dumps({"method": "HEAD", "path": "/h", "query": "", "body": ""})
        assert status == 200 and int(headers["content-length"]) == len(expected)
        assert echo(reader.response()[2])["path"] == "/after"


def test_idle_connections_close_after_the_keep_alive_time_busy_ones_do_not() -> None:
    with listening(keep_alive_seconds=KEEP_ALIVE) as listener, listener.connect() as idle, listener.connect() as busy:
        idle.sendall(get("/once"))
        idle_reader = Reader(idle)
        assert idle_reader.response()[0] == 200
        busy.sendall(get(f"/slow?{KEEP_ALIVE * 4}"))
        started = time.monotonic()
        assert idle_reader.closed()  # blocks until the listener closes it
        assert time.monotonic() - started >= KEEP_ALIVE
        status, headers, _ = Reader(busy).response()  # answered, not cut off while it waited
        assert status == 200 and "connection" not in headers


def test_stop_cuts_what_is_still_running_when_the_grace_period_ends() -> None:
    with listening() as listener, listener.connect() as sock:
        sock.sendall(get("/slow?30"))
        time.sleep(0.1)
        started = time.monotonic()
        listener.stop(0.3)
        assert time.monotonic() - started >= 0.3  # the handler had its grace period
        assert Reader(sock).closed()
        with pytest.raises(OSError):
            listener.connect().close()
