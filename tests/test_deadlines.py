"""A request's work ends with it: deadlines and departed clients, failed requests, the event loop, fault logs.

Real servers on free ports where the behaviour is the server's (a model whose calls are recorded,
and held at a gate where a test needs a call to wait); the worker pool alone where the behaviour
is its own. No timing assertions: every wait is a bounded poll for a state.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http.client
import json
import logging
import socket
import struct
import threading
import time
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from modelserve.api import tfs_grpc
from modelserve.codecs.tensor_proto import from_ndarray
from modelserve.errors import Code, DeadlineExceeded, InvalidArgument
from modelserve.execution.workers import WorkerPool
from modelserve.observe.faults import PER_MINUTE, FaultLog
from modelserve.platforms.onnx import OnnxServable
from modelserve.protos import pb
from modelserve.testing import ServerThread, default_frontend_processes, running_server

from . import onnx_models as om

HELD = 1.0  # a request whose x starts with this waits at the gate inside the model


@pytest.fixture(scope="module")
def half(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deadlines")
    om.write(root / "half", 1, om.half_plus_two())
    (root / "batching.txt").write_text("num_batch_threads { value: 1 }\nmax_batch_size { value: 1000000 }\n")
    return root


class Recorder:
    """``OnnxServable.predict`` recording the first x value of every call; a call with ``HELD``
    first waits at ``gate``, and ``entered`` says it has started."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[float] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        real = OnnxServable.predict

        def predict(servable: OnnxServable, signature: str, inputs: Any, output_filter: Any = ()) -> Any:
            first = float(np.asarray(inputs["x"]).reshape(-1)[0])
            self.seen.append(first)
            if first == HELD:
                self.entered.set()
                assert self.gate.wait(30), "the gate was never opened"
            return real(servable, signature, inputs, output_filter)

        monkeypatch.setattr(OnnxServable, "predict", predict)


def wait_for(predicate: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"not reached within {seconds} s: {what}"
        time.sleep(0.01)


def queued(server: ServerThread) -> int:
    """Requests waiting in the batch queues of model ``half``."""
    with server.server.manager.lease("half") as lease:
        return sum(queue.tasks for queue in lease.runner._queues.values())


def rest_body(value: float) -> bytes:
    return json.dumps({"instances": [value, 2.0]}).encode()


def grpc_request(value: float) -> Any:
    request = pb.PredictRequest()
    request.model_spec.name = "half"
    from_ndarray(np.array([value, 2.0], np.float32), out=request.inputs["x"])
    return request


def predict_call(channel: grpc.Channel) -> Any:
    return channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.PredictResponse.FromString,
    )


def held_rest_call(server: ServerThread) -> tuple[threading.Thread, list[int]]:
    """A REST request that waits at the gate, on a thread of its own; the list gets its status."""
    statuses: list[int] = []

    def call() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=60)
        conn.request("POST", "/v1/models/half:predict", rest_body(HELD))
        statuses.append(conn.getresponse().status)
        conn.close()

    thread = threading.Thread(target=call)
    thread.start()
    return thread, statuses


# ---- the worker pool: a call not wanted any more is not run, and lets go of its inputs at once --


@pytest.mark.parametrize("ending", ["deadline", "cancel"])
def test_a_call_that_ends_in_the_worker_queue_is_not_run_and_lets_go_of_its_inputs(ending: str) -> None:
    pool = WorkerPool(1)
    gate = threading.Event()
    ran: list[int] = []
    loop = asyncio.new_event_loop()

    async def scenario() -> None:
        first = asyncio.ensure_future(pool.run(lambda: gate.wait(30)))
        inputs = np.ones(1000)
        alive = weakref.ref(inputs)
        deadline = time.monotonic() + 0.05 if ending == "deadline" else None
        second = asyncio.ensure_future(pool.run(lambda array=inputs: ran.append(len(array)), deadline))
        del inputs
        if ending == "deadline":
            with pytest.raises(DeadlineExceeded):
                await second
        else:
            await asyncio.sleep(0.01)
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
        # Still queued behind the first call, yet its inputs are already free (no collector needed).
        assert alive() is None
        gate.set()
        await first

    try:
        loop.run_until_complete(scenario())
        assert ran == []
    finally:
        gate.set()
        pool.close()
        loop.close()


# ---- departed clients: their queued requests are dropped, never run ----------------------


def test_a_rest_client_that_leaves_has_its_queued_request_dropped(half: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(monkeypatch)
    flags = [f"--model_base_path={half / 'half'}", "--model_name=half", "--enable_batching"]
    with running_server(*flags, f"--batching_parameters_file={half / 'batching.txt'}") as s:
        first, statuses = held_rest_call(s)
        try:
            assert recorder.entered.wait(20)
            body = rest_body(5.0)
            with socket.create_connection(("127.0.0.1", s.server.rest_port)) as leaving:
                head = f"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
                leaving.sendall(head.encode() + body)
                wait_for(lambda: queued(s) == 1, "the second request waits in the batch queue")
                # Gone for good (a reset): a plain close reads as a half-close, whose answer is still owed.
                leaving.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            wait_for(lambda: queued(s) == 0, "the request of the client that left is dropped")
        finally:
            recorder.gate.set()
            first.join(30)
        assert statuses == [200]
        assert recorder.seen == [HELD]  # the dropped request never ran


def test_a_cancelled_grpc_call_is_dropped_from_the_batch_queue(half: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(monkeypatch)
    flags = [f"--model_base_path={half / 'half'}", "--model_name=half", "--enable_batching"]
    with running_server(*flags, f"--batching_parameters_file={half / 'batching.txt'}") as s:
        with grpc.insecure_channel(s.grpc_target) as channel:
            call = predict_call(channel)
            first = call.future(grpc_request(HELD), timeout=60)
            try:
                assert recorder.entered.wait(20)
                second = call.future(grpc_request(5.0), timeout=60)
                wait_for(lambda: queued(s) == 1, "the second call waits in the batch queue")
                second.cancel()
                wait_for(lambda: queued(s) == 0, "the cancelled call is dropped")
            finally:
                recorder.gate.set()
            assert first.result(30).outputs["y"].float_val[:] == [2.5, 3.0]
        assert recorder.seen == [HELD]


def test_a_grpc_call_cancelled_while_it_waits_for_a_handler_thread_is_not_run(
    half: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(monkeypatch)
    flags = [f"--model_base_path={half / 'half'}", "--model_name=half", "--grpc_max_threads=1"]
    with running_server(*flags) as s, grpc.insecure_channel(s.grpc_target) as channel:
        call = predict_call(channel)
        first = call.future(grpc_request(HELD), timeout=60)
        try:
            assert recorder.entered.wait(20)
            second = call.future(grpc_request(5.0), timeout=60)  # waits for the only handler thread
            second.cancel()
        finally:
            recorder.gate.set()
        first.result(30)
        # One handler thread, first come first served: once a third call is answered, the second's
        # handler has had its turn.
        assert call(grpc_request(7.0), timeout=30).outputs["y"].float_val[:] == [5.5, 3.0]
        assert recorder.seen == [HELD, 7.0]


# ---- a failed request's arrays are freed at once, without the garbage collector -----------


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()
        gc.enable()


@pytest.mark.parametrize("front_end", ["rest", "grpc-threaded", "grpc-asyncio"])
def test_invalid_requests_free_their_decoded_inputs_without_the_garbage_collector(half: Path, front_end: str) -> None:
    """Each request decodes about 20 MB, then fails validation (no such input). Before, each one's
    arrays stayed in reference cycles (an exception, its frames, a future holding the exception)
    until a collection: memory grew by a request's worth per request."""
    flags = [f"--model_base_path={half / 'half'}", "--model_name=half", "--rest_api_max_body_bytes=100000000"]
    if front_end == "grpc-asyncio":
        flags.append("--enable_batching")
    elements = 5_000_000 if front_end != "rest" else 1_000_000  # JSON decodes to more per element
    with running_server(*flags) as s, collector_off():
        if front_end == "rest":
            body = b'{"inputs": {"wrong": [' + b",".join([b"1.5"] * elements) + b"]}}"

            def send() -> None:
                conn = http.client.HTTPConnection("127.0.0.1", s.server.rest_port, timeout=60)
                conn.request("POST", "/v1/models/half:predict", body)
                response = conn.getresponse()
                assert (response.status, list(json.loads(response.read()))) == (400, ["error"])
                conn.close()

        else:
            request = pb.PredictRequest()
            request.model_spec.name = "half"
            from_ndarray(np.ones(elements, np.float32), tensor_content=True, out=request.inputs["wrong"])
            channel = grpc.insecure_channel(s.grpc_target, options=[("grpc.max_send_message_length", -1)])
            call = predict_call(channel)

            def send() -> None:
                with pytest.raises(grpc.RpcError) as info:
                    call(request, timeout=60)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        send()
        settled = tracemalloc.get_traced_memory()[0]
        for _ in range(4):
            send()

        def kept() -> int:
            return int(tracemalloc.get_traced_memory()[0] - settled)

        # Less than one request's worth (the server may still be finishing the last call as its
        # client reads the answer); before, every failed request stayed.
        with contextlib.suppress(AssertionError):
            wait_for(lambda: kept() < 10_000_000, "the failed requests are freed", seconds=5)
        grown = kept()
        if front_end != "rest":
            channel.close()
    assert grown < 10_000_000, f"{grown} bytes kept by 4 failed requests"


# ---- grpc.aio: big requests are parsed and decoded off the event loop ---------------------


@pytest.mark.skipif(default_frontend_processes() > 1, reason="the single process's own event loop")
def test_grpc_asyncio_parses_and_decodes_big_requests_off_the_event_loop(
    half: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With batching the gRPC handlers share the REST listener's event loop: a request of 256 KiB or
    more (its proto parse), and tensors that decode to that much (a fill rule makes megabytes of a few
    bytes), are worked on off the loop; small ones stay inline, the fast path."""
    parses: list[tuple[int, bool]] = []  # (message bytes, on the loop)
    decodes: list[tuple[int, bool]] = []  # (elements, on the loop)
    real_class, real_decode = tfs_grpc.message_class, tfs_grpc.to_ndarrays

    class Recorded:
        def __init__(self, cls: Any) -> None:
            self.cls = cls
            self.DESCRIPTOR = cls.DESCRIPTOR

        def FromString(self, data: bytes) -> Any:
            parses.append((len(data), asyncio._get_running_loop() is not None))
            return self.cls.FromString(data)

    def decode(tensors: Any, account: Any) -> Any:
        arrays = real_decode(tensors, account)
        decodes.append((sum(a.size for a in arrays.values()), asyncio._get_running_loop() is not None))
        return arrays

    monkeypatch.setattr(tfs_grpc, "message_class", lambda name: Recorded(real_class(name)))
    monkeypatch.setattr(tfs_grpc, "to_ndarrays", decode)
    flags = [f"--model_base_path={half / 'half'}", "--model_name=half", "--enable_batching"]
    with (
        running_server(*flags, f"--batching_parameters_file={half / 'batching.txt'}") as s,
        grpc.insecure_channel(s.grpc_target) as channel,
    ):
        call = predict_call(channel)
        big = grpc_request(0.0)
        from_ndarray(np.zeros(100_000, np.float32), tensor_content=True, out=big.inputs["x"])  # 400 KB
        filled = grpc_request(0.0)
        filled.inputs["x"].tensor_shape.dim[0].size = 1_000_000  # one value, filled to 4 MB
        del filled.inputs["x"].float_val[1:]
        for request in (grpc_request(1.0), big, filled):
            call(request, timeout=30)
    predict_parses = [p for p in parses if p[0] > 10]  # health and reflection aside
    assert [on_loop for size, on_loop in predict_parses] == [True, False, True]
    assert decodes == [(2, True), (100_000, False), (1_000_000, False)]


# ---- client mistakes log nothing; faults log a bounded number of tracebacks ---------------


def test_faults_log_a_bounded_number_of_tracebacks_and_answer_without_python_text(
    half: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    flags = [f"--model_base_path={half / 'half'}", "--model_name=half"]
    with running_server(*flags) as s, grpc.insecure_channel(s.grpc_target) as channel:
        caplog.set_level(logging.INFO, logger="modelserve")
        caplog.clear()
        for _ in range(100):  # client mistakes: answered, never logged
            conn = http.client.HTTPConnection("127.0.0.1", s.server.rest_port, timeout=30)
            conn.request("POST", "/v1/models/half:predict", b'{"inputs": {"wrong": [1]}}')
            assert conn.getresponse().status == 400
            conn.close()
            with pytest.raises(grpc.RpcError):
                predict_call(channel)(grpc_request(1.0).__class__(), timeout=30)
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []

        async def broken(request: Any) -> Any:
            raise ValueError("a bug with /internal/details")

        monkeypatch.setattr(s.server.core, "predict", broken)
        for _ in range(3 * PER_MINUTE):
            conn = http.client.HTTPConnection("127.0.0.1", s.server.rest_port, timeout=30)
            conn.request("POST", "/v1/models/half:predict", rest_body(1.0))
            response = conn.getresponse()
            assert (response.status, json.loads(response.read())) == (500, {"error": "Internal error"})
            conn.close()
            with pytest.raises(grpc.RpcError) as info:
                predict_call(channel)(grpc_request(1.0), timeout=30)
            assert (info.value.code(), info.value.details()) == (grpc.StatusCode.UNKNOWN, "Internal error")
    # each front end (REST, gRPC) logs its share of the minute; with front-end processes the engine, whose
    # core the bug is in, logs it per protocol
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 2 * PER_MINUTE
    assert all("ValueError: a bug" in logging.Formatter().formatException(r.exc_info) for r in tracebacks)


def test_the_fault_log_counts_what_it_suppresses_and_says_so_once_a_minute_later() -> None:
    now = [0.0]
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("test_deadlines.faults")
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        faults = FaultLog(logger, per_minute=2, clock=lambda: now[0])
        for _ in range(5):
            faults.fault("REST", RuntimeError("boom"), "fault")
        assert [r.getMessage() for r in records] == ["fault", "fault"]
        now[0] = 61.0
        faults.fault("REST", RuntimeError("boom"), "fault")
        faults.fault("gRPC", RuntimeError("boom"), "other site")
        assert [r.getMessage() for r in records[2:]] == [
            "REST: suppressed 3 similar errors in the last minute",
            "fault",
            "other site",
        ]
    finally:
        logger.removeHandler(handler)


def test_what_a_client_is_told_of_a_failure() -> None:
    """A client mistake as it is; running out of memory is RESOURCE_EXHAUSTED as in TF (it was UNKNOWN
    with the MemoryError's text); any other fault "Internal error", with no Python text."""
    faults = FaultLog(logging.getLogger("test_deadlines.answers"))
    mistake = InvalidArgument("bad input")
    assert faults.answer("REST", mistake, "x") is mistake
    oom = faults.answer("gRPC", MemoryError("Unable to allocate 256. MiB for an array"), "x")
    assert oom.code == Code.RESOURCE_EXHAUSTED
    assert "Out of memory" in oom.message and "MiB" not in oom.message
    bug = faults.answer("gRPC", KeyError("secret"), "x")
    assert (bug.code, bug.message) == (Code.UNKNOWN, "Internal error")
