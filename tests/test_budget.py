"""The memory budget: accounts, the charges of every decode path, and the answers a server gives.

Findings of issue 17 proven here: (1) a 33-byte gRPC DT_STRING [2**28] request with one string_val,
(2) DT_FLOAT [2**28] from 30 bytes, (3) a JSON body whose parse costs 30x its size, (8) rank above
64 and overflowing dims answered as INVALID_ARGUMENT; and a model whose outputs amplify.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelserve import budget
from modelserve.budget import UNMETERED, Account, MemoryBudget
from modelserve.codecs import tfs_json
from modelserve.codecs.tensor_proto import to_ndarray, to_ndarrays
from modelserve.errors import BudgetFull, Cancelled, InvalidArgument, ResourceExhausted, TooLarge
from modelserve.execution.batching import rows
from modelserve.protos import pb
from modelserve.serving.example_tasks import serialized_examples
from modelserve.testing import ServerThread, default_frontend_processes, running_server

from . import onnx_models as om

MB = 1_000_000

# --- accounts ------------------------------------------------------------------------------------


def test_accounts_share_the_budget_and_give_it_back() -> None:
    memory = MemoryBudget(total=1000, per_request=600)
    first, second = memory.account(), memory.account()
    first.charge(500, "decode input 'a'")
    second.charge(300, "decode input 'b'")
    assert memory.used == 800
    with pytest.raises(ResourceExhausted) as full:
        second.charge(300, "decode input 'c'")
    assert type(full.value) is BudgetFull  # the server is full: 429, not 413 (TooLarge)
    assert "--memory_budget_bytes" in str(full.value) and "800 of 1000 bytes" in str(full.value)
    first.close()
    first.close()  # idempotent
    assert memory.used == 300
    second.charge(300, "decode input 'c'")
    with second:
        pass
    assert memory.used == 0


def test_a_request_over_its_own_cap_is_too_large_with_a_clear_text() -> None:
    memory = MemoryBudget(total=2**40, per_request=536870912)
    with memory.account() as account, pytest.raises(TooLarge) as caught:
        account.charge(2147483648, "decode input 'x' (DT_STRING [268435456])")
    assert str(caught.value) == (
        "Request needs 2147483648 bytes to decode input 'x' (DT_STRING [268435456]); the per-request "
        "memory budget is 536870912 bytes (--request_memory_budget_bytes)"
    )
    assert memory.used == 0


def test_a_closed_account_takes_no_more_charges() -> None:
    memory = MemoryBudget(1000, 1000)
    account = memory.account()
    account.close()
    with pytest.raises(Cancelled):
        account.charge(1, "decode")
    assert memory.used == 0


def test_the_budget_is_thread_safe() -> None:
    memory = MemoryBudget(total=10_000, per_request=10_000)
    refused = []

    def work() -> None:
        for _ in range(2000):
            with memory.account() as account:
                try:
                    account.charge(700, "work")
                    account.charge(700, "more work")
                except ResourceExhausted:
                    refused.append(1)
                assert memory.used <= memory.total

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert memory.used == 0


def test_unmetered_charges_nothing() -> None:
    UNMETERED.charge(2**62, "anything")
    UNMETERED.close()
    UNMETERED.charge(1, "still nothing")


def test_available_memory_takes_the_least_limit(tmp_path: Path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("0::/kubepods/pod1\n")
    group = tmp_path / "sys/fs/cgroup/kubepods/pod1"
    group.mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/cgroup.controllers").write_text("memory cpu\n")
    (group / "memory.max").write_text("max\n")
    (group.parent / "memory.max").write_text("3000000000\n")
    memory = budget.available_memory(tmp_path)
    assert memory.limit == min(3_000_000_000, budget.available_memory().limit)
    if memory.limit == 3_000_000_000:
        assert memory.source == "/sys/fs/cgroup/kubepods/memory.max"
    for limit, expected in ((3_000_000_000, (1_500_000_000, 375_000_000)), (64 * 2**30, (32 * 2**30, 2 * 2**30))):
        total = budget.default_total(budget.Memory(limit, ""))
        assert (total, budget.default_per_request(total)) == expected


def test_cgroup_v1_limit(tmp_path: Path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("4:memory:/docker/abc\n")
    mount = tmp_path / "sys/fs/cgroup/memory"
    mount.mkdir(parents=True)
    (mount / "memory.limit_in_bytes").write_text("1000000000\n")
    assert budget.available_memory(tmp_path) == budget.Memory(
        1_000_000_000, "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    )


# --- TensorProto --------------------------------------------------------------------------------


def _proto(dtype: int, dims: list[int], **fields: Any) -> Any:
    return pb.TensorProto(dtype=dtype, tensor_shape=pb.TensorShapeProto(dim=[{"size": d} for d in dims]), **fields)


def _peak(fn: Any) -> tuple[BaseException, int]:
    tracemalloc.start()
    try:
        fn()
    except BaseException as exc:
        return exc, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    raise AssertionError("no error")


def test_a_string_fill_is_refused_before_it_allocates() -> None:
    """Finding 1: one string_val filling DT_STRING [2**28] is charged per element, before anything is made."""
    proto = _proto(7, [2**28], string_val=[b"a"])
    assert len(proto.SerializeToString()) < 40
    with MemoryBudget(2**40, 512 * MB).account() as account:
        error, peak = _peak(lambda: to_ndarrays({"x": proto}, account))
    assert isinstance(error, TooLarge) and peak < MB
    assert "decode input 'x' (DT_STRING [268435456])" in str(error)
    assert "--request_memory_budget_bytes" in str(error)


def test_a_float_fill_is_refused_before_it_allocates() -> None:
    """Finding 2: DT_FLOAT [2**28] from a 30-byte request costs 1 GiB: over a 512 MB request budget."""
    proto = _proto(1, [2**28], float_val=[1.0])
    assert len(proto.SerializeToString()) <= 30
    with MemoryBudget(2**40, 512 * MB).account() as account:
        error, peak = _peak(lambda: to_ndarray(proto, account=account, name="x"))
    assert isinstance(error, TooLarge) and peak < MB
    assert "Request needs 1073741832 bytes to decode input 'x' (DT_FLOAT [268435456])" in str(error)


def test_string_costs_count_elements_and_bytes() -> None:
    memory = MemoryBudget(2**40, 2**40)
    with memory.account() as account:
        to_ndarray(_proto(7, [3], string_val=[b"ab", b"cdef"]), account=account)
        # Three elements, the last one repeated: 2 + 4 + 4 payload bytes.
        assert memory.used == budget.string_tensor_bytes(3, 10)
    with memory.account() as account:
        content = b"\x02\x01abc"  # the lengths, then the bytes
        to_ndarray(_proto(7, [2], tensor_content=content), account=account)
        assert memory.used == budget.string_tensor_bytes(2, len(content))


def test_string_tensor_content_shorter_than_its_lengths_is_invalid_at_once() -> None:
    with pytest.raises(InvalidArgument, match="truncated"):
        to_ndarray(_proto(7, [2**28], tensor_content=b"\x01a"), account=MemoryBudget(MB, MB).account())


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        ([1] * 65, "Tensor rank 65 is over the limit of 64 dimensions"),
        ([2**62, 2**62, 0], "would have more than 2**63 - 1 elements"),
        ([2**62, 2**62], "would have more than 2**63 - 1 elements"),
    ],
    ids=["rank-65", "overflow-times-zero", "overflow"],
)
def test_shapes_numpy_cannot_hold_are_invalid_arguments(dims: list[int], message: str) -> None:
    """Finding 8: these were UNKNOWN (a ValueError from numpy), a client's mistake answered as a server fault."""
    for fields in ({}, {"float_val": [1.0]}):
        with pytest.raises(InvalidArgument, match=message.replace("*", r"\*")):
            to_ndarray(_proto(1, dims, **fields))


# --- JSON ------------------------------------------------------------------------------------------


_RSS_OF_A_PARSE = """
import resource, sys, orjson
body = open(sys.argv[1], "rb").read()
def rss(): return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024
start = max(rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
doc = orjson.loads(body)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start)
"""


@pytest.mark.parametrize(
    "item",
    [b"0", b"0.5", b"123456", b'"abcdefghij"', b'""', b"[]", b"{}", b'{"a":0}', b"[0.5,0.5,0.5,0.5]"],
)
def test_the_parse_estimate_covers_what_orjson_allocates(item: bytes, tmp_path: Path) -> None:
    """The resident memory a parse adds, measured in a fresh process (the budget bounds RSS)."""
    path = tmp_path / "body.json"
    path.write_bytes(b'{"instances":[' + b",".join([item] * 1_000_000) + b"]}")
    grown = subprocess.run([sys.executable, "-c", _RSS_OF_A_PARSE, str(path)], capture_output=True, check=True)
    assert tfs_json.parse_bytes(path.read_bytes()) >= int(grown.stdout)


def test_a_pathological_json_body_is_refused_before_it_is_parsed() -> None:
    """Finding 3: 200k empty lists (600 KB) would cost ~18 MB parsed."""
    body = b'{"instances":[' + b",".join([b"[]"] * 200_000) + b"]}"
    with MemoryBudget(2**40, MB).account() as account:
        error, peak = _peak(lambda: tfs_json.loads(body, account))
    assert isinstance(error, TooLarge) and peak < 100_000
    assert f"to parse a JSON body of {len(body)} bytes" in str(error)


def test_a_context_copied_into_every_example_is_charged_first() -> None:
    with MemoryBudget(2**40, MB).account() as account, pytest.raises(TooLarge, match="10000 serialized examples"):
        serialized_examples([b""] * 10_000, b"c" * 1000, account)


def test_merged_batches_cost_what_merge_allocates() -> None:
    a = {"x": np.zeros((2, 3), np.float32)}
    b = {"x": np.zeros((1, 5), np.float32)}
    assert rows.merged_bytes([(a, 0, 2)], 2, False) == 0  # one piece, no padding: its own array
    assert rows.merged_bytes([(a, 0, 2)], 4, False) == 4 * 3 * 4
    assert rows.merged_bytes([(a, 0, 2), (b, 0, 1)], 4, True) == 4 * 5 * 4
    merged = rows.merge([(a, 0, 2), (b, 0, 1)], 4, True)
    assert merged["x"].nbytes == rows.merged_bytes([(a, 0, 2), (b, 0, 1)], 4, True)


# --- end to end ------------------------------------------------------------------------------------


def _amplifier() -> bytes:
    """``x`` (float [batch, 1]) -> ``y`` (float [batch, 1000000]): 4 MB out per 4 bytes in."""
    return om.model(
        [helper.make_node("Tile", ["x", "repeats"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1_000_000])],
        [numpy_helper.from_array(np.array([1, 1_000_000], np.int64), "repeats")],
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    om.write(root / "half", 1, om.half_plus_two())
    om.write(root / "strings", 1, om.identity(TensorProto.STRING, ["batch"], "s", "t"))
    om.write(root / "amplifier", 1, _amplifier())
    entries = [
        f'config {{ name: "{n}" base_path: "{root / n}" model_platform: "onnx" }}'
        for n in ("half", "strings", "amplifier")
    ]
    (root / "models.config").write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    return root


@pytest.fixture(scope="module", params=["threaded", "asyncio"])
def server(repo: Path, request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    flags = [
        f"--model_config_file={repo / 'models.config'}",
        f"--memory_budget_bytes={64 * MB}",
        f"--request_memory_budget_bytes={MB}",
    ]
    if request.param == "asyncio":
        flags.append("--enable_batching")
    with running_server(*flags) as s:
        yield s


def _post(server: ServerThread, path: str, body: bytes) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=30)
    try:
        conn.request("POST", path, body=body)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, json.loads(data).get("error", "") if response.status != 200 else data.decode()


def _predict(channel: grpc.Channel, request: Any) -> Any:
    call = channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.PredictResponse.FromString,
    )
    return call(request, timeout=30)


def _request(model: str, alias: str, tensor: Any) -> Any:
    request = pb.PredictRequest()
    request.model_spec.name = model
    request.inputs[alias].CopyFrom(tensor)
    return request


def _good(server: ServerThread) -> None:
    assert _post(server, "/v1/models/half:predict", b'{"instances": [1.0, 2.0]}') == (
        200,
        '{"predictions":[2.5,3.0]}',
    )


def test_grpc_string_fill_is_refused_fast_and_the_server_goes_on(server: ServerThread) -> None:
    """Finding 1 end to end: RESOURCE_EXHAUSTED at once (it took the old server 21 GB and minutes)."""
    request = _request("strings", "s", _proto(7, [2**28], string_val=[b"a"]))
    assert len(request.SerializeToString()) < 60
    with grpc.insecure_channel(server.grpc_target) as channel:
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            _predict(channel, request)
        assert time.monotonic() - start < 10
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "per-request memory budget is 1000000 bytes" in caught.value.details()
        good = _predict(channel, _request("half", "x", _proto(1, [2], float_val=[1.0, 2.0])))
        assert list(good.outputs["y"].float_val) == [2.5, 3.0]
    assert server.server.budget.used == 0


def test_rest_body_of_zeros_gets_413_with_a_clear_text(server: ServerThread) -> None:
    """Finding 3 end to end (without gzip): 200k zeros parse into far more than a 1 MB request budget."""
    body = b'{"instances": [' + b",".join([b"0"] * 200_000) + b"]}"
    status, message = _post(server, "/v1/models/half:predict", body)
    assert status == 413
    assert message.startswith("Request needs ") and "to parse a JSON body of" in message
    assert "--request_memory_budget_bytes" in message
    _good(server)
    assert server.server.budget.used == 0


def test_outputs_over_the_request_budget_are_refused(server: ServerThread) -> None:
    """A model may amplify: 4 MB of zeros from a 30-byte request is over the 1 MB request budget."""
    status, message = _post(server, "/v1/models/amplifier:predict", b'{"instances": [[1.0]]}')
    assert status == 413 and "to hold the outputs of model 'amplifier'" in message
    with grpc.insecure_channel(server.grpc_target) as channel, pytest.raises(grpc.RpcError) as caught:
        _predict(channel, _request("amplifier", "x", _proto(1, [1, 1], float_val=[1.0])))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "to hold the outputs of model 'amplifier'" in caught.value.details()
    _good(server)
    assert server.server.budget.used == 0


@pytest.mark.skipif(default_frontend_processes() > 1, reason="holds the single process's own budget")
def test_a_full_server_answers_429_and_resource_exhausted(server: ServerThread) -> None:
    """What requests in flight hold counts for every new one; once given back, requests pass again."""
    memory: MemoryBudget = server.server.budget
    held: Account = memory.account(cap=memory.total)  # a request in flight holding nearly everything
    held.charge(memory.total - 10, "hold a large request")
    try:
        status, message = _post(server, "/v1/models/half:predict", b'{"instances": [1.0, 2.0]}')
        assert status == 429 and "--memory_budget_bytes" in message and "try again later" in message
        with grpc.insecure_channel(server.grpc_target) as channel, pytest.raises(grpc.RpcError) as caught:
            _predict(channel, _request("half", "x", _proto(1, [2], float_val=[1.0, 2.0])))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Server memory budget is full" in caught.value.details()
    finally:
        held.close()
    _good(server)
    assert memory.used == 0


def test_flags_set_the_budgets_and_zero_derives_them() -> None:
    from modelserve.options import parse_flags
    from modelserve.server import memory_budget

    machine = budget.Memory(3_000_000_000, "RLIMIT_AS")
    chosen = memory_budget(
        parse_flags(["--memory_budget_bytes=4000000", "--request_memory_budget_bytes=300000"]), machine
    )
    assert (chosen.total, chosen.per_request) == (4_000_000, 300_000)
    assert memory_budget(parse_flags(["--memory_budget_bytes=4000000"]), machine).per_request == 1_000_000
    derived = memory_budget(parse_flags([]), machine)  # half the machine's 3 GB, a quarter of that
    assert (derived.total, derived.per_request) == (1_500_000_000, 375_000_000)


@pytest.mark.skipif(default_frontend_processes() > 1, reason="holds the single process's own budget")
def test_bodies_are_charged_as_they_arrive(server: ServerThread) -> None:
    """A body is charged before the listener buffers it: bodies still being read count for the server,
    one over the request budget is refused while it arrives, and all is given back when they end."""
    import socket

    memory: MemoryBudget = server.server.budget
    head = b"POST /v1/models/half:predict HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n"
    # Half a megabyte each, sent but not finished: 12 such bodies hold 6 MB of the 64 MB budget.
    slow = []
    for _ in range(12):
        sock = socket.create_connection(("127.0.0.1", server.server.rest_port), timeout=30)
        sock.sendall(head % (2 * MB) + b" " * (MB // 2))
        slow.append(sock)
    deadline = time.monotonic() + 10
    while memory.used < 12 * (MB // 2) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert memory.used >= 12 * (MB // 2)
    # One body over the 1 MB request budget: 413 from the listener, before the rest of it is kept.
    with socket.create_connection(("127.0.0.1", server.server.rest_port), timeout=30) as sock:
        sock.sendall(head % (2 * MB) + b" " * (2 * MB))
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"per-request memory budget is 1000000 bytes" in answer
    for sock in slow:
        sock.close()
    deadline = time.monotonic() + 10
    while memory.used and time.monotonic() < deadline:
        time.sleep(0.02)
    assert memory.used == 0
    _good(server)
