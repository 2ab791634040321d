"""codecs.tensor_wire: hand-framed map entries parse into exactly what protobuf and from_ndarray build."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from modelserve.codecs.tensor_proto import from_ndarray
from modelserve.codecs.tensor_wire import tensor_entry
from modelserve.protos import pb

ARRAYS = {
    "float": np.arange(6, dtype=np.float32).reshape(2, 3),
    "double": np.array([1.5, -2.0, np.inf]),
    "complex64": np.array([1 + 2j, 3 - 4j], np.complex64),
    "complex128": np.array([[1 + 2j]], np.complex128),
    "int32": np.array([1, -2, 3], np.int32),
    "int64": np.array([2**40, -1], np.int64),
    "uint8": np.arange(256, dtype=np.uint8),
    "bool": np.array([True, False, True]),
    "half": np.array([1.5, -0.25], np.float16),
    "bfloat16": np.array([1.5, 3.0], ml_dtypes.bfloat16),
    "scalar": np.float32(2.5) * np.ones((), np.float32),
    "empty": np.zeros((0, 4), np.float32),
    "big_endian": np.array([1.0, 2.0], dtype=">f4"),
    "strided": np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2],
    "large": np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32),
}


@pytest.mark.parametrize("tensor_content", [True, False])
@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_entry_parses_like_from_ndarray(name: str, tensor_content: bool) -> None:
    array = ARRAYS[name]
    expected = pb.PredictResponse()
    expected.model_spec.name = "m"
    expected.outputs["out é"].CopyFrom(from_ndarray(array, tensor_content=tensor_content))
    parts = tensor_entry(1, "out é", array, tensor_content=tensor_content)
    if parts is None:  # not a raw buffer in this encoding: protobuf's job
        assert not tensor_content and name not in ("float", "double", "complex64", "complex128")
        return
    head = pb.PredictResponse()
    head.model_spec.name = "m"
    got = pb.PredictResponse.FromString(b"".join([head.SerializeToString(), *parts]))
    assert got == expected


def test_strings_are_left_to_protobuf() -> None:
    assert tensor_entry(1, "s", np.array([b"a"], dtype=object), tensor_content=True) is None


def test_large_tensor_content_is_the_arrays_own_buffer() -> None:
    array = ARRAYS["large"]
    parts = tensor_entry(1, "y", array, tensor_content=True)
    assert parts is not None
    payload = parts[-1]
    assert isinstance(payload, memoryview) and payload.nbytes == array.nbytes
    assert np.shares_memory(np.frombuffer(payload, np.uint8), array)
