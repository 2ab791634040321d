"""codecs.v2.proto: ModelInferRequest/Response tensors <-> numpy, pure, with plain asserts."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from modelserve.budget import MemoryBudget
from modelserve.codecs.v2.proto import decode_inputs, from_raw, join_bytes, response_parts, split_bytes, to_raw
from modelserve.errors import InvalidArgument, TooLarge
from modelserve.protos import pb

ARRAYS = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([[0, 200, 255]], np.uint8),
    "UINT64": np.array([[0, 2**63, 2**64 - 1]], np.uint64),
    "INT8": np.array([[-128, 0, 127]], np.int8),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1]], np.int64),
    "FP16": np.array([[0.5, -1.0, 65504.0]], np.float16),
    "BF16": np.array([[0.5, -1.0, 3.0]], ml_dtypes.bfloat16),
    "FP32": np.array([[0.5, -1.0, 3.25]], np.float32),
    "FP64": np.array([[0.5, -1.0, 1e300]], np.float64),
    "BYTES": np.array([[b"", b"abc", b"\x00\xff"]], dtype=object),
}


def request(arrays: dict[str, np.ndarray]) -> object:
    message = pb.ModelInferRequest(model_name="m")
    for datatype, array in arrays.items():
        message.inputs.add(name=datatype, datatype=datatype, shape=array.shape)
        message.raw_input_contents.append(to_raw(array))
    return message


def test_raw_round_trip_of_every_width_and_a_view_for_fixed_sizes() -> None:
    decoded = decode_inputs(request(ARRAYS))
    for datatype, array in ARRAYS.items():
        assert decoded[datatype].dtype == array.dtype, datatype
        np.testing.assert_array_equal(decoded[datatype], array, err_msg=datatype)
    assert not decoded["FP32"].flags.writeable  # a view of the message, no copy


def test_response_parts_parse_back_as_raw_outputs() -> None:
    response = pb.ModelInferResponse(model_name="m", id="7")
    parts = response_parts(ARRAYS, response)
    parsed = pb.ModelInferResponse.FromString(b"".join([response.SerializeToString(), *parts]))
    assert [(t.name, t.datatype, list(t.shape)) for t in parsed.outputs] == [(k, k, [1, 3]) for k in ARRAYS]
    for tensor, raw in zip(parsed.outputs, parsed.raw_output_contents, strict=True):
        assert raw == to_raw(ARRAYS[tensor.name]), tensor.name
    assert parsed.id == "7"


def test_bytes_framing() -> None:
    assert join_bytes(np.array(["é", b"x"], dtype=object)) == b"\x02\x00\x00\x00\xc3\xa9\x01\x00\x00\x00x"
    assert list(split_bytes("b", b"\x01\x00\x00\x00x\x00\x00\x00\x00", 2)) == [b"x", b""]
    for data, count, text in (
        (b"\x05\x00\x00\x00ab", 1, "runs past"),
        (b"\x01\x00", 1, "ends before"),
        (b"\x01\x00\x00\x00xy", 1, "left after"),
    ):
        with pytest.raises(InvalidArgument, match=text):
            split_bytes("b", data, count)


def test_refusals() -> None:
    mixed = request({"FP32": ARRAYS["FP32"]})
    mixed.inputs[0].contents.fp32_contents.append(1.0)
    twice = request({"FP32": ARRAYS["FP32"]})
    twice.inputs.add(name="FP32", datatype="FP32", shape=[1])
    twice.raw_input_contents.append(b"\x00" * 4)
    deep = pb.ModelInferRequest()
    deep.inputs.add(name="d", datatype="FP32", shape=[1] * 65).contents.fp32_contents.append(1.0)
    for message, text in (
        (mixed, "must not be specified"),
        (twice, "more than once"),
        (deep, "at most 64"),
    ):
        with pytest.raises(InvalidArgument, match=text):
            decode_inputs(message)
    with pytest.raises(InvalidArgument, match="invalid datatype 'FLOAT'"):
        from_raw("x", "FLOAT", [1], b"\x00" * 4)


def test_decoding_is_charged_before_it_allocates() -> None:
    """A typed request of a million int64 values, or raw BYTES, costs its request's budget first."""
    big = pb.ModelInferRequest()
    big.inputs.add(name="x", datatype="INT64", shape=[1_000_000]).contents.int64_contents.extend(range(1_000_000))
    with MemoryBudget(1 << 30, 1 << 20).account() as account, pytest.raises(TooLarge):
        decode_inputs(big, account)
    strings = request({"BYTES": np.array([b"x"] * 100_000, dtype=object)})
    with MemoryBudget(1 << 30, 1 << 20).account() as account, pytest.raises(TooLarge):
        decode_inputs(strings, account)
    with MemoryBudget(1 << 30, 64 << 20).account() as account:
        assert decode_inputs(big, account)["x"][-1] == 999_999
