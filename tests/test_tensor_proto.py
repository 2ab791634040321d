"""numpy <-> TensorProto, checked against hand-written bytes, bit patterns and TF itself.

Expected values are written out here (or computed by numpy / protobuf's own
encoder), never by the codec under test.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import warnings
from types import ModuleType
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from google.protobuf import text_format

from modelserve.codecs.tensor_proto import from_ndarray, shape_from_proto, shape_to_proto, to_ndarray
from modelserve.codecs.tensor_util import make_ndarray, make_tensor_proto
from modelserve.errors import InvalidArgument, ResourceExhausted
from modelserve.protos import pb

# numpy dtype -> TF DataType number, from TF's types.proto.
DTYPES: list[tuple[Any, int]] = [
    (np.float32, 1),
    (np.float64, 2),
    (np.int32, 3),
    (np.uint8, 4),
    (np.int16, 5),
    (np.int8, 6),
    (np.complex64, 8),
    (np.int64, 9),
    (np.bool_, 10),
    (ml_dtypes.bfloat16, 14),
    (np.uint16, 17),
    (np.complex128, 18),
    (np.float16, 19),
    (np.uint32, 22),
    (np.uint64, 23),
    (ml_dtypes.float8_e5m2, 24),
    (ml_dtypes.float8_e4m3fn, 25),
    (ml_dtypes.float8_e4m3fnuz, 26),
    (ml_dtypes.float8_e4m3b11fnuz, 27),
    (ml_dtypes.float8_e5m2fnuz, 28),
    (ml_dtypes.int4, 29),
    (ml_dtypes.uint4, 30),
    (ml_dtypes.int2, 31),
    (ml_dtypes.uint2, 32),
    (ml_dtypes.float4_e2m1fn, 33),
]


def _sample(dtype: Any) -> np.ndarray:
    """A 2x3 array of ``dtype`` with negative, zero and extreme values where the type has them."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        values: Any = [True, False, True, True, False, False]
    elif dtype.kind == "c":
        values = [1 + 2j, -3.5 - 0.25j, 0, 1e10 + 1j, -1j, 7]
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([info.min, info.max, 0, 1, info.max // 2, info.min // 2 + 1], dtype).reshape(2, 3)
    elif dtype in (np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.int2)):
        values = [-2, 1, 0, -1, 1, -2]
    elif dtype in (np.dtype(ml_dtypes.uint4), np.dtype(ml_dtypes.uint2)):
        values = [0, 3, 1, 2, 3, 0]
    else:  # floats of every width: values exactly representable in all of them
        values = [1.0, -2.0, 0.0, 0.5, -1.5, 4.0]
    return np.array(values).astype(dtype).reshape(2, 3)


@pytest.mark.parametrize("tensor_content", [False, True], ids=["typed", "content"])
@pytest.mark.parametrize(("dtype", "number"), DTYPES, ids=[np.dtype(d).name for d, _ in DTYPES])
def test_round_trip_every_dtype(dtype: Any, number: int, tensor_content: bool) -> None:
    array = _sample(dtype)
    proto = from_ndarray(array, tensor_content=tensor_content)
    assert proto.dtype == number
    assert [d.size for d in proto.tensor_shape.dim] == [2, 3]
    assert bool(proto.tensor_content) == tensor_content
    decoded = to_ndarray(pb.TensorProto.FromString(proto.SerializeToString()))
    assert decoded.dtype == np.dtype(dtype)
    assert decoded.shape == (2, 3)
    assert decoded.tobytes() == array.tobytes()


def test_round_trip_scalar_and_empty() -> None:
    scalar = to_ndarray(from_ndarray(np.float64(2.5)))
    assert scalar.shape == () and scalar.dtype == np.float64 and scalar == 2.5
    empty = to_ndarray(from_ndarray(np.zeros((0, 4), np.int64), tensor_content=True))
    assert empty.shape == (0, 4) and empty.dtype == np.int64


# --- typed fields on the wire -----------------------------------------------------------------

_SHAPE_2 = b"\x12\x04\x12\x02\x08\x02"  # tensor_shape (2) { dim (2) { size (1) = 2 } }
_SHAPE_1 = b"\x12\x04\x12\x02\x08\x01"


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        # dtype (1) = DT_FLOAT; float_val (5) packed fixed32
        (np.array([1.0, 2.0], np.float32), b"\x08\x01" + _SHAPE_2 + b"\x2a\x08" + struct.pack("<2f", 1, 2)),
        # double_val (6)
        (np.array([0.5], np.float64), b"\x08\x02" + _SHAPE_1 + b"\x32\x08" + struct.pack("<d", 0.5)),
        # int_val (7): a negative int32 is a 10-byte varint
        (np.array([-1], np.int32), b"\x08\x03" + _SHAPE_1 + b"\x3a\x0a" + b"\xff" * 9 + b"\x01"),
        # int_val for uint8: 200 = c8 01
        (np.array([200], np.uint8), b"\x08\x04" + _SHAPE_1 + b"\x3a\x02\xc8\x01"),
        # int64_val (10): 300 = ac 02
        (np.array([300], np.int64), b"\x08\x09" + _SHAPE_1 + b"\x52\x02\xac\x02"),
        # bool_val (11)
        (np.array([True, False]), b"\x08\x0a" + _SHAPE_2 + b"\x5a\x02\x01\x00"),
        # half_val (13): float16 1.0 = 0x3c00 = varint 80 78
        (np.array([1.0], np.float16), b"\x08\x13" + _SHAPE_1 + b"\x6a\x02\x80\x78"),
        # half_val for bfloat16: 1.0 = 0x3f80 = varint 80 7f
        (np.array([1.0], ml_dtypes.bfloat16), b"\x08\x0e" + _SHAPE_1 + b"\x6a\x02\x80\x7f"),
        # scomplex_val (9): (re, im) pairs
        (np.array([1 + 2j], np.complex64), b"\x08\x08" + _SHAPE_1 + b"\x4a\x08" + struct.pack("<2f", 1, 2)),
        # uint32_val (16: tag 82 01)
        (np.array([1], np.uint32), b"\x08\x16" + _SHAPE_1 + b"\x82\x01\x01\x01"),
        # uint64_val (17: tag 8a 01): 2**64-1 is ten bytes
        (np.array([2**64 - 1], np.uint64), b"\x08\x17" + _SHAPE_1 + b"\x8a\x01\x0a" + b"\xff" * 9 + b"\x01"),
        # string_val (8)
        (np.array([b"ab"], dtype=object), b"\x08\x07" + _SHAPE_1 + b"\x42\x02ab"),
        # float8_val (18: tag 92 01): e5m2 1.0 = 0x3c
        (np.array([1.0], ml_dtypes.float8_e5m2), b"\x08\x18" + _SHAPE_1 + b"\x92\x01\x01\x3c"),
    ],
    ids=lambda v: str(v.dtype) if isinstance(v, np.ndarray) else "",
)
def test_typed_encoding_bytes(array: np.ndarray, expected: bytes) -> None:
    assert from_ndarray(array).SerializeToString() == expected


@pytest.mark.parametrize(
    ("dtype", "number", "field"),
    [
        (np.int32, 3, "int_val"),
        (np.int64, 9, "int64_val"),
        (np.uint32, 22, "uint32_val"),
        (np.uint64, 23, "uint64_val"),
        (np.int8, 6, "int_val"),
        (np.uint16, 17, "int_val"),
        (np.float32, 1, "float_val"),
        (np.float64, 2, "double_val"),
        (np.complex64, 8, "scomplex_val"),
        (np.complex128, 18, "dcomplex_val"),
    ],
)
def test_typed_fields_match_protobufs_own_encoder(dtype: Any, number: int, field: str) -> None:
    rng = np.random.default_rng(7)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        # Magnitudes of every varint length from 1 to 10 bytes, both signs, and the extremes.
        shifts = (62 - np.minimum(rng.integers(0, 64, size=2000), 62)).astype(np.uint64)
        magnitudes = rng.integers(0, 2**62, size=2000, dtype=np.uint64) >> shifts
        signed = np.clip(magnitudes * rng.choice([-1.0, 1.0], 2000), info.min, info.max).astype(dtype)
        values = np.concatenate([signed, np.array([info.min, info.max, 0], dtype=dtype)])
        listed = values.tolist()
    else:
        values = (rng.standard_normal(2000) * 1e3).astype(dtype)
        pairs = values.view(np.float32 if dtype == np.complex64 else np.float64)
        listed = (pairs if np.dtype(dtype).kind == "c" else values).tolist()
    reference = pb.TensorProto(dtype=number)
    reference.tensor_shape.dim.add(size=len(values))
    getattr(reference, field).extend(listed)
    assert from_ndarray(values.astype(dtype)).SerializeToString() == reference.SerializeToString()


def test_fortran_order_and_big_endian_arrays_encode_in_c_order() -> None:
    array = np.arange(6, dtype=">i4").reshape(2, 3).T  # non-native and non-contiguous
    for tensor_content in (False, True):
        decoded = to_ndarray(from_ndarray(array, tensor_content=tensor_content))
        assert decoded.tolist() == [[0, 3], [1, 4], [2, 5]]


# --- decoding rules ---------------------------------------------------------------------------


def _proto(dtype: int, shape: list[int], **fields: Any) -> Any:
    proto = pb.TensorProto(dtype=dtype, **fields)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def test_tensor_content_is_decoded_without_copying() -> None:
    image = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    proto = pb.TensorProto.FromString(from_ndarray(image, tensor_content=True).SerializeToString())
    decoded = to_ndarray(proto)
    assert decoded.shape == (1, 224, 224, 3)
    assert np.array_equal(decoded, image)
    assert not decoded.flags.writeable and not decoded.flags.owndata
    root = decoded
    while isinstance(root, np.ndarray):
        root = root.base
    assert isinstance(root, bytes) and len(root) == image.nbytes  # a view of the field's bytes


def test_tensor_content_wins_over_typed_fields() -> None:
    proto = _proto(1, [2], tensor_content=struct.pack("<2f", 5, 6), float_val=[1, 2])
    assert to_ndarray(proto).tolist() == [5.0, 6.0]


@pytest.mark.parametrize(("size", "shape"), [(8, [3]), (16, [3]), (1, [])])
def test_tensor_content_size_must_match_shape(size: int, shape: list[int]) -> None:
    with pytest.raises(InvalidArgument, match=rf"holds {size} bytes .* needs {4 * (3 if shape else 1)}"):
        to_ndarray(_proto(1, shape, tensor_content=b"\0" * size))


@pytest.mark.parametrize(
    ("dtype", "fields", "shape", "expected"),
    [
        (1, {"float_val": [1, 2]}, [4], [1.0, 2.0, 2.0, 2.0]),  # last value repeated
        (1, {"float_val": [7]}, [2, 2], [[7.0, 7.0], [7.0, 7.0]]),  # one value fills all
        (1, {}, [3], [0.0, 0.0, 0.0]),  # nothing given -> zeros
        (1, {"float_val": [1, 2, 3, 4]}, [2], [1.0, 2.0]),  # extras ignored
        (3, {"int_val": [5, 6]}, [3], [5, 6, 6]),
        (9, {"int64_val": [2**40]}, [2], [2**40, 2**40]),
        (10, {"bool_val": [False, True]}, [3], [False, True, True]),
        (23, {"uint64_val": [2**64 - 1]}, [2], [2**64 - 1, 2**64 - 1]),
        (7, {"string_val": [b"x", b"y"]}, [4], [b"x", b"y", b"y", b"y"]),
        (7, {}, [2], [b"", b""]),
        (8, {"scomplex_val": [1, 2, 3]}, [3], [1 + 2j, 1 + 2j, 1 + 2j]),  # dangling 3 ignored, as in TF
        (18, {"dcomplex_val": [1, 2, 3, 4]}, [3], [1 + 2j, 3 + 4j, 3 + 4j]),
        (19, {"half_val": [0x3C00, 0xC100]}, [3], [1.0, -2.5, -2.5]),
    ],
)
def test_fill_rule(dtype: int, fields: dict[str, Any], shape: list[int], expected: list[Any]) -> None:
    decoded = to_ndarray(_proto(dtype, shape, **fields))
    assert decoded.tolist() == expected


def test_narrow_integer_types_wrap_like_a_cpp_cast() -> None:
    # TF static_casts int_val's int32 values; tf.io.parse_tensor gives [1, 255] here.
    assert to_ndarray(_proto(4, [2], int_val=[257, -1])).tolist() == [1, 255]
    assert to_ndarray(_proto(6, [2], int_val=[128, -129])).tolist() == [-128, 127]


@pytest.mark.parametrize(
    ("dtype", "bits", "expected"),
    [
        # IEEE half: 0x3c00 = 1, 0xc100 = -2.5, 0x7bff = 65504 (max), 0x0001 = 2**-24, 0x7c00 = inf
        (19, [0x3C00, 0xC100, 0x7BFF, 0x0001, 0x7C00], [1.0, -2.5, 65504.0, 2.0**-24, float("inf")]),
        # bfloat16 = the top 16 bits of a float32: 0x3f80 = 1, 0xc020 = -2.5, 0x4049 = 3.140625
        (14, [0x3F80, 0xC020, 0x4049, 0xFF80], [1.0, -2.5, 3.140625, float("-inf")]),
        # Only the low 16 bits count (TF casts int32 -> uint16): 0x13c00 is 1.0
        (19, [0x13C00], [1.0]),
    ],
)
def test_half_val_bit_patterns(dtype: int, bits: list[int], expected: list[float]) -> None:
    decoded = to_ndarray(_proto(dtype, [len(bits)], half_val=bits))
    assert decoded.dtype == (np.float16 if dtype == 19 else ml_dtypes.bfloat16)
    assert decoded.astype(np.float64).tolist() == expected
    if dtype == 14:  # cross-check the bfloat16 bits with float32's upper half
        as_float32 = (np.array(bits, np.uint32) << 16).view(np.float32)
        assert decoded.astype(np.float32).tolist() == as_float32.tolist()


def test_half_encoding_writes_numpy_bit_patterns() -> None:
    values = np.array([1.0, -2.5, 65504.0], np.float16)
    assert list(from_ndarray(values).half_val) == [0x3C00, 0xC100, 0x7BFF]
    bvalues = np.array([1.0, -2.5], ml_dtypes.bfloat16)
    assert list(from_ndarray(bvalues).half_val) == [0x3F80, 0xC020]


def test_float8_val_fill() -> None:
    # e4m3fn: 0x38 = 1.0, 0x40 = 2.0
    decoded = to_ndarray(_proto(25, [3], float8_val=b"\x38\x40"))
    assert decoded.astype(np.float32).tolist() == [1.0, 2.0, 2.0]


@pytest.mark.parametrize(
    ("proto", "message"),
    [
        (_proto(1, [-1, 3]), "negative dimension"),
        (pb.TensorProto(dtype=1, tensor_shape=pb.TensorShapeProto(unknown_rank=True)), "unknown rank"),
        (_proto(0, [1]), "DT_INVALID"),
        (_proto(20, [1]), "resource"),
        (_proto(21, [1]), "variant"),
        (_proto(99, [1]), "unknown dtype: 99"),
        (_proto(101, [1]), "unknown dtype: 101"),  # reference types never travel
    ],
    ids=["negative-dim", "unknown-rank", "invalid", "resource", "variant", "unknown", "ref"],
)
def test_invalid_request_tensors(proto: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        to_ndarray(proto)


def test_fill_rule_cannot_expand_beyond_the_limit() -> None:
    with pytest.raises(ResourceExhausted, match="limit"):
        to_ndarray(_proto(1, [2**20, 2**20], float_val=[1]))
    with pytest.raises(ResourceExhausted):
        to_ndarray(_proto(1, [1000], float_val=[1]), max_bytes=3999)
    assert to_ndarray(_proto(1, [1000], float_val=[1]), max_bytes=4000).shape == (1000,)


# --- strings ----------------------------------------------------------------------------------


def test_string_tensors_are_object_arrays_of_bytes() -> None:
    decoded = to_ndarray(_proto(7, [2, 2], string_val=[b"a", b"", b"\x00\xff", "é".encode()]))
    assert decoded.dtype == object and decoded.shape == (2, 2)
    assert decoded.tolist() == [[b"a", b""], [b"\x00\xff", b"\xc3\xa9"]]


@pytest.mark.parametrize(
    "array",
    [
        np.array(["é", "ab"]),
        np.array([b"\xc3\xa9", b"ab"], dtype=object),
        np.array(["é", b"ab"], dtype=object),
    ],
    ids=["unicode", "bytes", "mixed"],
)
def test_string_encoding_always_uses_string_val(array: np.ndarray) -> None:
    for tensor_content in (False, True):
        proto = from_ndarray(array, tensor_content=tensor_content)
        assert proto.dtype == 7 and proto.tensor_content == b""
        assert list(proto.string_val) == [b"\xc3\xa9", b"ab"]


def test_string_tensor_content_in_tensorflows_layout() -> None:
    # TF writes DT_STRING tensor_content as the varint lengths, then the bytes.
    assert to_ndarray(_proto(7, [2], tensor_content=b"\x02\x01abc")).tolist() == [b"ab", b"c"]
    long = b"x" * 200
    assert to_ndarray(_proto(7, [1], tensor_content=b"\xc8\x01" + long)).tolist() == [long]
    with pytest.raises(InvalidArgument, match="does not match"):
        to_ndarray(_proto(7, [2], tensor_content=b"\x02\x01abcd"))
    with pytest.raises(InvalidArgument, match="truncated"):
        to_ndarray(_proto(7, [3], tensor_content=b"\x02\x01"))


def test_non_string_objects_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="int"):
        from_ndarray(np.array([1, b"x"], dtype=object))


# --- shapes -----------------------------------------------------------------------------------


def test_shape_helpers() -> None:
    proto = shape_to_proto([2, None, 3])
    assert [d.size for d in proto.dim] == [2, -1, 3] and not proto.unknown_rank
    assert shape_from_proto(proto) == (2, -1, 3)
    assert shape_to_proto([]).SerializeToString() == b""
    assert shape_to_proto(None).SerializeToString() == b"\x18\x01"  # unknown_rank (3) = true
    assert shape_from_proto(shape_to_proto(None)) is None


# --- make_tensor_proto / make_ndarray ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [  # expectations copied from tf.make_tensor_proto 2.21's output
        (
            ([1, 2, 3],),
            {},
            "dtype: DT_INT32 tensor_shape { dim { size: 3 } } "
            'tensor_content: "\\001\\000\\000\\000\\002\\000\\000\\000\\003\\000\\000\\000"',
        ),
        ((3,), {}, "dtype: DT_INT32 tensor_shape { } int_val: 3"),
        ((2**40,), {}, "dtype: DT_INT64 tensor_shape { } int64_val: 1099511627776"),
        ((3.0,), {"shape": [2, 2]}, "dtype: DT_FLOAT tensor_shape { dim { size: 2 } dim { size: 2 } } float_val: 3"),
        (
            ([1.0, 2.0],),
            {"shape": [2, 2]},
            "dtype: DT_FLOAT tensor_shape { dim { size: 2 } dim { size: 2 } } float_val: 1 float_val: 2",
        ),
        (([True, False],), {}, "dtype: DT_BOOL tensor_shape { dim { size: 2 } } bool_val: true bool_val: false"),
        (([1 + 2j],), {}, "dtype: DT_COMPLEX128 tensor_shape { dim { size: 1 } } dcomplex_val: 1 dcomplex_val: 2"),
        ((["a", "bc"],), {}, 'dtype: DT_STRING tensor_shape { dim { size: 2 } } string_val: "a" string_val: "bc"'),
        ((b"raw",), {}, 'dtype: DT_STRING tensor_shape { } string_val: "raw"'),
        ((1.5,), {"dtype": np.float16}, "dtype: DT_HALF tensor_shape { } half_val: 15872"),
        ((np.array([1, 2], np.uint16),), {}, "dtype: DT_UINT16 tensor_shape { dim { size: 2 } } int_val: 1 int_val: 2"),
        (
            (np.array([1.0, 2.0], np.float16),),
            {},
            'dtype: DT_HALF tensor_shape { dim { size: 2 } } tensor_content: "\\000<\\000@"',
        ),
        (([],), {}, "dtype: DT_FLOAT tensor_shape { dim { } }"),
        (
            ([1, 2],),
            {"dtype": 9},
            "dtype: DT_INT64 tensor_shape { dim { size: 2 } } tensor_content: "
            '"\\001\\000\\000\\000\\000\\000\\000\\000\\002\\000\\000\\000\\000\\000\\000\\000"',
        ),
    ],
)
def test_make_tensor_proto_matches_tensorflow(args: tuple[Any, ...], kwargs: dict[str, Any], expected: str) -> None:
    assert make_tensor_proto(*args, **kwargs) == text_format.Parse(expected, pb.TensorProto())


def test_make_tensor_proto_errors_like_tensorflow() -> None:
    with pytest.raises(TypeError, match="Expected int32"):
        make_tensor_proto([1.5], dtype=np.int32)
    with pytest.raises(ValueError, match=r"Too many elements provided\. Takes at most 2, but got 3\."):
        make_tensor_proto([1, 2, 3], shape=[2])
    with pytest.raises(ValueError, match=r"None values not supported\."):
        make_tensor_proto(None)
    with pytest.raises(ValueError):
        make_tensor_proto([[1, 2], [3]])


def test_make_tensor_proto_keeps_nul_bytes_of_python_strings() -> None:
    assert list(make_tensor_proto([b"a\x00", b"b"]).string_val) == [b"a\x00", b"b"]


def test_make_ndarray_is_writable_and_equal() -> None:
    proto = make_tensor_proto(np.arange(6, dtype=np.float32).reshape(2, 3))
    array = make_ndarray(proto)
    assert array.flags.writeable
    array[0, 0] = 9
    assert array.tolist() == [[9, 1, 2], [3, 4, 5]]
    assert make_ndarray(make_tensor_proto(["a", "b"])).tolist() == [b"a", b"b"]


# --- against TensorFlow -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf() -> ModuleType:
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow

    return tensorflow


_TF_VALUES: list[tuple[Any, dict[str, Any]]] = [
    ([1, 2, 3], {}),
    (3, {}),
    (2**40, {}),
    (3.0, {"shape": [2, 2]}),
    ([1.0, 2.0], {"shape": [2, 3]}),
    ([True, False], {}),
    ([1 + 2j, 3], {}),
    (["a", "bc"], {}),
    (b"raw", {}),
    ([[1, 2], [3, 4]], {"dtype": "float64"}),
    (np.arange(12, dtype=np.int16).reshape(3, 4), {}),
    (np.array([1, 2], np.uint16), {}),
    (np.array([1.5, -2], np.float16), {}),
    (np.array([0.5], np.float16), {}),
    (np.float32(1.5), {}),
    (np.array([[b"x", b"yy"]], dtype=object), {}),
    ([], {}),
    (np.zeros((0, 3), np.float32), {}),
    (np.array([2**63 - 1, -(2**63)], np.int64), {}),
    (np.array([2**64 - 1], np.uint64), {}),
]


@pytest.mark.parametrize(("values", "kwargs"), _TF_VALUES)
def test_make_tensor_proto_bytes_equal_tensorflows(tf: ModuleType, values: Any, kwargs: dict[str, Any]) -> None:
    theirs = tf.make_tensor_proto(values, **kwargs)
    ours = make_tensor_proto(values, **kwargs)
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    expected = tf.make_ndarray(theirs)
    decoded = to_ndarray(pb.TensorProto.FromString(theirs.SerializeToString()))
    assert decoded.dtype == expected.dtype and decoded.shape == expected.shape
    assert decoded.tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("dtype", "fields", "shape"),
    [
        (1, {"float_val": [1, 2]}, [4]),
        (1, {}, [3]),
        (7, {"string_val": [b"x", b"y"]}, [4]),
        (7, {"tensor_content": b"\x02\x01abc"}, [2]),
        (4, {"int_val": [257, -1]}, [2]),
        (19, {"half_val": [0x3C00, 0x13C00]}, [2]),
        (8, {"scomplex_val": [1, 2, 3]}, [3]),
        (14, {"half_val": [0x3F80]}, [2, 2]),
        (10, {"tensor_content": b"\x01\x00"}, [2]),
    ],
)
def test_decoding_agrees_with_tensorflows_c_plus_plus_parser(
    tf: ModuleType, dtype: int, fields: dict[str, Any], shape: list[int]
) -> None:
    proto = _proto(dtype, shape, **fields)
    tf_dtype = tf.dtypes.as_dtype(dtype)
    expected = tf.io.parse_tensor(proto.SerializeToString(), tf_dtype).numpy()
    decoded = to_ndarray(proto)
    assert decoded.dtype == expected.dtype
    assert decoded.tolist() == expected.tolist()


def test_a_size_mismatch_is_refused_by_tensorflow_too(tf: ModuleType) -> None:
    proto = _proto(1, [3], tensor_content=b"\0" * 8)
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.parse_tensor(proto.SerializeToString(), tf.float32)
    with pytest.raises(InvalidArgument):
        to_ndarray(proto)
