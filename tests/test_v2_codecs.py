"""The V2 codecs (codecs/v2/json.py, binary.py) with plain asserts: no server."""

from __future__ import annotations

import struct

import ml_dtypes
import numpy as np
import pytest

from modelserve.budget import MemoryBudget
from modelserve.codecs.v2 import binary
from modelserve.codecs.v2 import json as v2json
from modelserve.errors import InvalidArgument, TooLarge, Unimplemented


def test_bf16_and_fp16_round_trip_as_binary() -> None:
    for dtype, datatype in ((ml_dtypes.bfloat16, "BF16"), (np.float16, "FP16")):
        array = np.array([[0.5, -2.0], [256.0, 3.0]], dtype=dtype)
        wire = binary.tensor_bytes(array, datatype)
        assert bytes(wire) == array.tobytes()  # little-endian machine: the wire is the memory
        back = binary.decode_tensor("x", datatype, [2, 2], wire)
        assert back.dtype == array.dtype
        np.testing.assert_array_equal(back, array)
        with pytest.raises(InvalidArgument, match=f"sending {datatype} data via JSON is not supported"):
            v2json.output_data("y", datatype, array)


def test_aligned_input_is_a_view_and_misaligned_one_a_copy() -> None:
    body = bytes(4) + np.arange(4, dtype=np.float32).tobytes() + bytes(1) + np.arange(2, dtype=np.float64).tobytes()
    view = memoryview(body)
    aligned = binary.decode_tensor("a", "FP32", [4], view[4:20])
    assert np.shares_memory(aligned, np.frombuffer(body, np.uint8))
    misaligned = binary.decode_tensor("b", "FP64", [2], view[21:37])
    assert misaligned.flags.aligned and not np.shares_memory(misaligned, np.frombuffer(body, np.uint8))
    np.testing.assert_array_equal(misaligned, [0.0, 1.0])


def test_bytes_elements_are_length_prefixed() -> None:
    wire = b"".join(struct.pack("<I", len(s)) + s for s in (b"", b"ab", b"\xff"))
    array = binary.decode_tensor("s", "BYTES", [3], memoryview(wire))
    assert list(array) == [b"", b"ab", b"\xff"]
    assert bytes(binary.tensor_bytes(array, "BYTES")) == wire
    with pytest.raises(InvalidArgument, match="runs past"):
        binary.decode_tensor("s", "BYTES", [1], memoryview(struct.pack("<I", 9) + b"ab"))
    with pytest.raises(InvalidArgument, match="its 1 elements take 6"):
        binary.decode_tensor("s", "BYTES", [1], memoryview(struct.pack("<I", 2) + b"abc"))


def test_header_length_and_raw_shape() -> None:
    assert binary.header_length(None, 10) is None
    assert binary.header_length(b"0", 10) == 0
    with pytest.raises(InvalidArgument, match="should be in range"):
        binary.header_length(b"11", 10)
    with pytest.raises(InvalidArgument, match="Unable to parse"):
        binary.header_length(b"x", 10)
    assert binary.raw_shape("x", "FP32", (-1, 4), 64) == (4, 4)
    assert binary.raw_shape("x", "BYTES", (-1,), 5) == (1,)
    with pytest.raises(InvalidArgument, match="more than one"):
        binary.raw_shape("x", "FP32", (-1, -1), 64)
    with pytest.raises(InvalidArgument, match="does not fill"):
        binary.raw_shape("x", "FP32", (-1, 4), 60)


def test_json_data_checks() -> None:
    tensor = v2json.Input("x", "INT16", (2, 2), data=[[1, 2], [3, -4]])
    np.testing.assert_array_equal(v2json.decode_data(tensor), np.array([[1, 2], [3, -4]], np.int16))
    for data in ([1, 2, 3, 70000], [1, 2, 3, 1.5], [1, 2, 3, True], [1, 2, 3, "4"]):
        with pytest.raises(InvalidArgument, match="INT16"):
            v2json.decode_data(v2json.Input("x", "INT16", (4,), data=data))
    with pytest.raises(InvalidArgument, match="3 elements in 'data' but its shape"):
        v2json.decode_data(v2json.Input("x", "FP32", (2, 2), data=[1, 2, 3]))
    with pytest.raises(Unimplemented, match="shared memory"):
        v2json.parse_request(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"shared_memory_region": "r"}}]}
        )
    with pytest.raises(InvalidArgument, match="already exists"):
        x = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}
        v2json.parse_request({"inputs": [x, x]})


def test_decoding_is_charged_before_it_allocates() -> None:
    budget = MemoryBudget(10**9, 1000)
    with budget.account() as account, pytest.raises(TooLarge):
        v2json.decode_data(v2json.Input("x", "FP64", (200,), data=[0.0] * 200), account)
    with budget.account() as account, pytest.raises(TooLarge):
        binary.decode_tensor("s", "BYTES", [100], memoryview(struct.pack("<I", 0) * 100), account)
    assert budget.used == 0
