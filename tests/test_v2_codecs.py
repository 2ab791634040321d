"""The V2 codecs (codecs/v2/json.py, binary.py): plain asserts and a hypothesis property; no server."""

from __future__ import annotations

import math
import struct
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

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


def test_fp32_beyond_its_range_is_infinity_without_a_warning() -> None:
    """As Triton casts the parsed double: 1e39 is +inf in FP32 (pytest turns a numpy warning into an error)."""
    got = v2json.decode_data(v2json.Input("x", "FP32", (3,), data=[1e39, -1e39, 1.5]))
    np.testing.assert_array_equal(got, np.array([np.inf, -np.inf, 1.5], np.float32))


def test_decoding_is_charged_before_it_allocates() -> None:
    budget = MemoryBudget(10**9, 1000)
    with budget.account() as account, pytest.raises(TooLarge):
        v2json.decode_data(v2json.Input("x", "FP64", (200,), data=[0.0] * 200), account)
    with budget.account() as account, pytest.raises(TooLarge):
        binary.decode_tensor("s", "BYTES", [100], memoryview(struct.pack("<I", 0) * 100), account)
    assert budget.used == 0


# What decode_data must do, element by element (the rules its set-of-types check stands for).
_JSON_DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64")
_ALLOWED: dict[str, tuple[type, ...]] = {"BOOL": (bool,), "FP32": (int, float), "FP64": (int, float)}
_RANGES = {name: (int(np.iinfo(name.lower()).min), int(np.iinfo(name.lower()).max)) for name in _JSON_DATATYPES[1:9]}


def _leaves(data: Any) -> list[Any]:
    return [leaf for item in data for leaf in _leaves(item)] if type(data) is list else [data]


def _expected(data: Any, datatype: str, shape: tuple[int, ...]) -> np.ndarray | str:
    """The array decode_data must give, or the start of its error."""
    if type(data) is not list:
        return "Unable to parse 'data': input 'x' has no array in 'data'"
    flat, count = _leaves(data), math.prod(shape)
    if len(flat) != count:
        return f"Unable to parse 'data': input 'x' has {len(flat)} elements"
    if datatype in _RANGES:
        low, high = _RANGES[datatype]
        ok = all(type(v) is int and low <= v <= high for v in flat)
    else:
        ok = all(type(v) in _ALLOWED[datatype] for v in flat)
        if ok and datatype == "FP64" and any(type(v) is int and abs(v) >= 2**1024 for v in flat):
            ok = False  # past what a double holds
    if not ok:
        return f"Unable to parse 'data': input 'x' of datatype {datatype} holds values it cannot hold"
    values = [float(v) for v in flat] if datatype[:2] == "FP" else flat
    return np.array(values, dtype=datatype.lower().replace("fp", "float")).reshape(shape)


_SCALARS = (
    st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.integers(-300, 300)
    | st.floats(-1e30, 1e30)
    | st.text(max_size=2)
    | st.none()
    | st.just({"b64": "AA=="})
)
_NUMBERS = st.integers(-300, 300) | st.floats(-1e30, 1e30) | st.booleans()
_DATA = (
    st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4), max_leaves=12)
    | st.recursive(_NUMBERS, lambda inner: st.lists(inner, max_size=4), max_leaves=12)
    | st.integers(1, 3).flatmap(lambda width: st.lists(st.lists(st.integers(0, 127), min_size=width, max_size=width)))
)


@settings(max_examples=400, deadline=None)
@given(data=_DATA, datatype=st.sampled_from(_JSON_DATATYPES), extra=st.sampled_from((None, 0, 1, -1)))
@example(data=[[1, 2], [3, True]], datatype="INT32", extra=None)
@example(data=[[[1], [2]], [[3], [4]]], datatype="INT8", extra=None)
@example(data=[[1.5, 2], [3, True]], datatype="FP32", extra=None)
@example(data=[[1, [2]], [], [[3]]], datatype="UINT8", extra=None)
@example(data=[[], []], datatype="FP64", extra=None)
@example(data=[2**64 - 1, 2**63], datatype="UINT64", extra=None)
@example(data=[2**1024], datatype="FP64", extra=None)
def test_json_data_decodes_as_each_element_checked_would(data: Any, datatype: str, extra: int | None) -> None:
    # The shape: one that fits the leaves (as a row, or split in two), or one element off.
    count = len(_leaves(data)) if type(data) is list else 1
    count = max(0, count + (extra or 0))
    shape = (2, count // 2) if extra is None and count % 2 == 0 else (count,)
    expected = _expected(data, datatype, shape)
    if isinstance(expected, str):
        with pytest.raises(InvalidArgument) as caught:
            v2json.decode_data(v2json.Input("x", datatype, shape, data=data))
        assert str(caught.value).startswith(expected)
    else:
        got = v2json.decode_data(v2json.Input("x", datatype, shape, data=data))
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
