"""Hostile input to the pure codecs (issue 17, item 9): property tests with hypothesis.

Every decoder a client can reach is fed arbitrary input and must either return an array of the
shape and dtype the input declares, or raise a ``ServingError`` (which each front end maps to a
4xx / gRPC status): never another exception type, which would surface as HTTP 500 / gRPC UNKNOWN
with Python internals in its text (issue 17, finding 8). Each call also runs under tracemalloc
(numpy reports its buffers there too) and must peak under a stated bound, so that no input
expands past the cap it is decoded under (findings 1-3).

Examples are bounded (``max_examples``, no per-example deadline, derandomized, no example
database) so that the file runs in well under a minute and fails the same way in every run.
"""

from __future__ import annotations

import base64
import json
import math
import tracemalloc
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from modelserve.budget import MemoryBudget
from modelserve.codecs import tensor_proto, tfs_json
from modelserve.dtypes import DType, to_numpy
from modelserve.errors import ServingError
from modelserve.protos import pb

BOUNDED = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Properties of inputs that are slow to build: fewer examples, and a failure is not shrunk.
FEW = settings(BOUNDED, max_examples=60, report_multiple_bugs=False)

# What one tensor may cost when decoded in these tests: the per-request cap handed to the codec.
CAP = 4 * 1024 * 1024
# tracemalloc's own bookkeeping, protobuf's copies of small typed fields, numpy's small temporaries.
SLACK = 1024 * 1024
# JSON decoding costs up to ~180 bytes per element (issue 17, finding 3); a body of N bytes holds at
# most N / 2 elements ("0,"), so 256x the body bounds what a decode may take without a budget.
JSON_AMPLIFICATION = 256

# ---- bounded decoding ----------------------------------------------------------------------


def decode(proto: Message) -> np.ndarray:
    """to_ndarray under a request budget of CAP bytes."""
    with MemoryBudget(4 * CAP, CAP).account() as account:
        return tensor_proto.to_ndarray(proto, account=account)


def outcome(text: str) -> None:
    """Counted by ``--hypothesis-show-statistics``: how many inputs decoded, and how the others were refused."""
    if currently_in_test_context():
        event(text)


def peak_of(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``fn()``'s result (or the ServingError it raised) and the peak bytes it allocated."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            result = fn()
        except ServingError as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


# ---- TensorProto -----------------------------------------------------------------------------

HUGE_DIMS = [2**20, 2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1]
NEGATIVE_DIMS = [-1, -2, -(2**63)]
KNOWN_DTYPES = [int(d) for d in DType]
# The dtypes a tensor of values can have (no numpy type for these three: a request may not send them).
VALUE_DTYPES = [d for d in KNOWN_DTYPES if d not in (DType.DT_INVALID, DType.DT_RESOURCE, DType.DT_VARIANT)]
ODD_DTYPES = [99, 100, 1000, 2**31 - 1]  # no such DataType; the proto's open enum keeps them

int32s = st.integers(-(2**31), 2**31 - 1)
int64s = st.integers(-(2**63), 2**63 - 1)
f32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
f64 = st.floats(allow_nan=True, allow_infinity=True)
TYPED_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "float_val": f32,
    "double_val": f64,
    "int_val": int32s,
    "int64_val": int64s,
    "bool_val": st.booleans(),
    "string_val": st.binary(max_size=16),
    "half_val": int32s,
    "scomplex_val": f32,
    "dcomplex_val": f64,
    "uint32_val": st.integers(0, 2**32 - 1),
    "uint64_val": st.integers(0, 2**64 - 1),
}


def _overflows_numpy(dims: list[int]) -> bool:
    """numpy cannot make an empty array of this shape: its other dims multiply past int64."""
    return 0 in dims and math.prod(d for d in dims if d) >= 2**63


@st.composite
def tensor_protos(draw: st.DrawFn, max_rank: int = 6, odd_shapes: bool = False) -> Message:
    """Any combination of TensorProto fields: dtype, dims (small, huge, negative), typed values,
    tensor_content (random, or exactly the shape's bytes), float8 bytes, unknown rank."""
    proto = pb.TensorProto()
    proto.dtype = draw(st.sampled_from(KNOWN_DTYPES + ODD_DTYPES))
    small = st.integers(0, 5)
    dim = st.one_of(small, small, small, st.sampled_from(HUGE_DIMS), st.sampled_from(NEGATIVE_DIMS))
    dims = draw(st.lists(dim, max_size=max_rank))
    if not odd_shapes and _overflows_numpy(dims):
        dims = [d for d in dims if d]
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_shape.unknown_rank = draw(st.integers(0, 15)) == 0
    for name in draw(st.lists(st.sampled_from(sorted(TYPED_FIELDS)), max_size=3, unique=True)):
        getattr(proto, name).extend(draw(st.lists(TYPED_FIELDS[name], max_size=8)))
    if draw(st.booleans()):
        proto.float8_val = draw(st.binary(max_size=8))
    content = draw(st.sampled_from(["none", "random", "exact"]))
    if content == "random":
        proto.tensor_content = draw(st.binary(max_size=64))
    elif content == "exact" and proto.dtype in VALUE_DTYPES and dims and all(0 <= d <= 5 for d in dims):
        count = math.prod(dims)
        itemsize = 1 if proto.dtype == DType.DT_STRING else to_numpy(DType(proto.dtype)).itemsize
        proto.tensor_content = b"\0" * count * itemsize  # DT_STRING: count empty strings (varint 0 each)
    return proto


def _expected_dtype(proto: Message) -> np.dtype:
    return np.dtype(object) if proto.dtype == DType.DT_STRING else to_numpy(DType(proto.dtype))


def check_tensor(proto: Message) -> None:
    """The property: a well-shaped array of the declared dtype, or a ServingError; peak under the cap."""
    result, peak = peak_of(lambda: decode(proto))
    assert peak <= CAP + SLACK + 4 * proto.ByteSize(), (peak, proto)
    outcome(f"tensor: {type(result).__name__}")
    if isinstance(result, ServingError):
        return
    assert isinstance(result, np.ndarray)
    assert result.shape == tuple(d.size for d in proto.tensor_shape.dim)
    assert result.dtype == _expected_dtype(proto)


@BOUNDED
@given(tensor_protos())
@example(pb.TensorProto(dtype=DType.DT_STRING, tensor_shape={"dim": [{"size": 2**28}]}, string_val=[b"x"]))
@example(pb.TensorProto(dtype=DType.DT_FLOAT, tensor_shape={"dim": [{"size": 2**28}]}, float_val=[1.0]))
@example(pb.TensorProto(dtype=DType.DT_STRING, tensor_shape={"dim": [{"size": 2**40}]}, tensor_content=b"\0" * 64))
def test_tensor_proto_decodes_or_refuses_within_its_cap(proto: Message) -> None:
    check_tensor(proto)


@BOUNDED
@given(st.integers(0, 5), st.lists(f32, min_size=1, max_size=4))
def test_the_fill_rule_repeats_the_last_value(size: int, values: list[float]) -> None:
    proto = pb.TensorProto(dtype=DType.DT_FLOAT, tensor_shape={"dim": [{"size": size}]}, float_val=values)
    expected = np.array((values + [values[-1]] * size)[:size], dtype=np.float32)
    np.testing.assert_array_equal(decode(proto), expected)


@FEW
@given(st.integers(65, 300), st.sampled_from([DType.DT_FLOAT, DType.DT_STRING, DType.DT_INT32]), st.booleans())
def test_rank_over_64_is_refused_as_a_client_mistake(rank: int, dtype: DType, content: bool) -> None:
    proto = pb.TensorProto(dtype=dtype, tensor_shape={"dim": [{"size": 1}] * rank})
    if content:
        proto.tensor_content = b"\0" if dtype == DType.DT_STRING else b"\0" * to_numpy(dtype).itemsize
    check_tensor(proto)


@st.composite
def overflowing_protos(draw: st.DrawFn) -> Message:
    """Any TensorProto whose dims hold a 0 and other dims multiplying to 2^63 or more, in any order."""
    proto = draw(tensor_protos(max_rank=4, odd_shapes=True))
    dims = [d.size for d in proto.tensor_shape.dim]
    big = draw(st.lists(st.sampled_from([2**31, 2**32, 2**62, 2**63 - 1]), min_size=2, max_size=3))
    for size in [0, *big]:
        dims.insert(draw(st.integers(0, len(dims))), size)
    if not _overflows_numpy(dims):  # two 2^31s with small dims: one more makes sure
        dims.append(2**62)
    del proto.tensor_shape.dim[:]
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    return proto


@FEW
@given(overflowing_protos())
@example(pb.TensorProto(dtype=DType.DT_FLOAT, tensor_shape={"dim": [{"size": 2**62}, {"size": 2**62}, {"size": 0}]}))
def test_empty_tensors_with_overflowing_dims_are_refused_as_a_client_mistake(proto: Message) -> None:
    check_tensor(proto)


# ---- PredictRequest bytes --------------------------------------------------------------------


def _request_bytes(tensors: list[Message]) -> bytes:
    request = pb.PredictRequest()
    request.model_spec.name = "m"
    for i, tensor in enumerate(tensors):
        request.inputs[f"x{i}"].CopyFrom(tensor)
    return bytes(request.SerializeToString())


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """A valid PredictRequest's bytes, then bytes flipped, cut, inserted or duplicated; or pure noise."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=256))
    data = bytearray(_request_bytes(draw(st.lists(tensor_protos(max_rank=3), min_size=1, max_size=2))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "repeat"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data += data[at:]
    return bytes(data)


def check_request(data: bytes) -> None:
    """Parse like the gRPC front end (a DecodeError answers INVALID_ARGUMENT), then decode each input."""
    try:
        request = pb.PredictRequest.FromString(data)
    except DecodeError:
        return
    for tensor in request.inputs.values():
        check_tensor(tensor)


@BOUNDED
@given(mutated_requests())
@example(b"\x1a" + b"\xff" * 10)  # a length-delimited field whose length is a 10-byte varint
@example(b"\x12\x84\x80\x80\x80\x08")  # inputs: an entry declaring 2 GiB, then nothing
def test_predict_request_bytes_parse_and_decode_or_refuse(data: bytes) -> None:
    check_request(data)


def _nested_variants(depth: int) -> bytes:
    """A TensorProto nesting itself ``depth`` times through variant_val -> VariantTensorDataProto.tensors."""
    varint = tensor_proto.varint
    tensor = b"\x08\x15"  # dtype: DT_VARIANT
    for _ in range(depth):
        variant = b"\x1a" + varint(len(tensor)) + tensor  # VariantTensorDataProto.tensors (3)
        tensor = b"\x08\x15\x7a" + varint(len(variant)) + variant  # TensorProto.variant_val (15)
    return tensor


def test_deeply_nested_messages_are_refused_by_the_parser() -> None:
    varint = tensor_proto.varint
    tensor = _nested_variants(5000)
    entry = b"\x0a\x01x\x12" + varint(len(tensor)) + tensor  # inputs["x"]
    check_request(b"\x0a\x03\x0a\x01m\x12" + varint(len(entry)) + entry)


# ---- TF Serving REST JSON ----------------------------------------------------------------------

JSON_DTYPES = [
    DType.DT_FLOAT,
    DType.DT_DOUBLE,
    DType.DT_INT32,
    DType.DT_INT64,
    DType.DT_UINT8,
    DType.DT_BOOL,
    DType.DT_STRING,
    DType.DT_HALF,
    DType.DT_COMPLEX64,  # not expressible in TF's JSON: Unimplemented
]

b64_objects = st.builds(lambda b: {"b64": base64.b64encode(b).decode()}, st.binary(max_size=12)) | st.builds(
    lambda t: {"b64": t}, st.text(max_size=8)
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
json_trees = st.recursive(
    json_scalars | b64_objects,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=24,
)


def _nest(flat: list[Any], shape: tuple[int, ...]) -> Any:
    if not shape:
        return flat[0]
    step = len(flat) // shape[0]
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


@st.composite
def tensor_values(draw: st.DrawFn) -> Any:
    """A rectangular nested list of one kind of leaf (what a client means to send), sometimes ragged."""
    shape = tuple(draw(st.lists(st.integers(1, 3), max_size=3)))
    leaf = draw(st.sampled_from([json_scalars, st.floats(width=32), st.integers(-(2**40), 2**40), b64_objects]))
    flat = draw(st.lists(leaf, min_size=math.prod(shape), max_size=math.prod(shape)))
    value = _nest(flat, shape)
    if shape and draw(st.integers(0, 4)) == 0:
        value = [*value, draw(leaf)]  # ragged
    return value


@st.composite
def predict_docs(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(["x", "y", "b64", ""]), min_size=1, max_size=2, unique=True))
    json_values = draw(st.sampled_from([json_trees, tensor_values()]))
    layout = draw(st.sampled_from(["instances", "inputs", "both", "neither"]))
    doc: dict[str, Any] = {}
    if layout in ("instances", "both"):
        doc["instances"] = draw(
            st.lists(json_values | st.fixed_dictionaries({n: json_values for n in names}), max_size=4)
        )
    if layout in ("inputs", "both"):
        doc["inputs"] = draw(json_values | st.fixed_dictionaries({n: json_values for n in names}))
    if draw(st.booleans()):
        doc["signature_name"] = draw(json_scalars)
    return doc


def json_bytes(doc: Any) -> bytes:
    # Python writes NaN / Infinity / -Infinity tokens, which TF's rapidjson accepts.
    return json.dumps(doc, allow_nan=True).encode()


def check_json(body: bytes, inputs: Mapping[str, DType]) -> None:
    """loads + decode_predict: arrays for every input, or a ServingError; memory bounded by the body."""

    def run() -> dict[str, np.ndarray]:
        return tfs_json.decode_predict(tfs_json.loads(body), inputs, body=body)[0]

    result, peak = peak_of(run)
    assert peak <= JSON_AMPLIFICATION * len(body) + SLACK, (peak, body[:200])
    outcome(f"json: {type(result).__name__}")
    if not isinstance(result, ServingError):
        assert set(result) == set(inputs)
        for name, array in result.items():
            assert isinstance(array, np.ndarray)
            assert array.dtype == (np.dtype(object) if inputs[name] == DType.DT_STRING else to_numpy(inputs[name]))


input_maps = st.dictionaries(st.sampled_from(["x", "y", "b64"]), st.sampled_from(JSON_DTYPES), min_size=0, max_size=2)


@BOUNDED
@given(st.binary(max_size=200), input_maps)
@example(b"[" * 100_000, {"x": DType.DT_FLOAT})
@example(b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {"x": DType.DT_FLOAT})
@example(b'{"instances": [NaN, Infinity, -Infinity, nan]}', {"x": DType.DT_FLOAT})
def test_json_bytes_decode_or_refuse(body: bytes, inputs: dict[str, DType]) -> None:
    check_json(body, inputs)


@BOUNDED
@given(predict_docs(), input_maps)
def test_json_documents_decode_or_refuse(doc: dict[str, Any], inputs: dict[str, DType]) -> None:
    check_json(json_bytes(doc), inputs)


@st.composite
def mutated_json(draw: st.DrawFn) -> bytes:
    """A valid predict body with bytes cut, swapped for JSON punctuation, or NaN tokens spliced in."""
    data = bytearray(json_bytes(draw(predict_docs())))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        piece = draw(
            st.sampled_from([b"NaN", b"Infinity", b"-Inf", b"[", b"]", b"{", b"}", b",", b'"', b"\\", b"\xff"])
        )
        if draw(st.booleans()):
            data[at : at + 1] = piece
        else:
            del data[at:]
    return bytes(data)


@BOUNDED
@given(mutated_json(), input_maps)
def test_mutated_json_decodes_or_refuses(body: bytes, inputs: dict[str, DType]) -> None:
    check_json(body, inputs)


def _nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize("layout", ["instances", "inputs"])
@pytest.mark.parametrize("rank", [63, 64, 65, 200])
def test_json_tensors_deeper_than_64_are_refused(layout: str, rank: int) -> None:
    body = json_bytes({layout: _nested(rank, 1.5)})
    result, _ = peak_of(lambda: tfs_json.decode_predict(tfs_json.loads(body), {"x": DType.DT_FLOAT}, body=body)[0])
    if rank <= 64:
        assert not isinstance(result, ServingError) and result["x"].shape == (1,) * rank
    else:
        assert isinstance(result, ServingError)


shapes = st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple)
# dtype -> (JSON leaves a client sends for it, the array expected from a flat list of them)
TYPED_LEAVES: dict[DType, tuple[st.SearchStrategy[Any], Callable[[list[Any]], np.ndarray]]] = {
    DType.DT_FLOAT: (st.floats(width=32, allow_nan=False), lambda v: np.array(v, np.float32)),
    DType.DT_DOUBLE: (st.floats(allow_nan=False), lambda v: np.array(v, np.float64)),
    DType.DT_INT32: (st.integers(-(2**31), 2**31 - 1), lambda v: np.array(v, np.int32)),
    DType.DT_INT64: (st.integers(-(2**63), 2**63 - 1), lambda v: np.array(v, np.int64)),
    DType.DT_BOOL: (st.booleans(), lambda v: np.array(v, np.bool_)),
    DType.DT_STRING: (st.text(max_size=6), lambda v: np.array([t.encode() for t in v], object)),
}


@BOUNDED
@given(st.sampled_from(sorted(TYPED_LEAVES)), shapes, st.sampled_from(["instances", "inputs"]), st.data())
def test_json_rectangular_tensors_keep_their_shape_and_values(
    dtype: DType, shape: tuple[int, ...], layout: str, data: Any
) -> None:
    leaves, expected = TYPED_LEAVES[dtype]
    flat = data.draw(st.lists(leaves, min_size=math.prod(shape), max_size=math.prod(shape)))
    body = json_bytes({layout: _nest(flat, shape)})
    arrays, _ = tfs_json.decode_predict(tfs_json.loads(body), {"x": dtype}, body=body)
    np.testing.assert_array_equal(arrays["x"], expected(flat).reshape(shape))
    assert arrays["x"].dtype == expected(flat).dtype


def _zeros_body(count: int) -> Iterator[bytes]:
    yield b'{"instances": ['
    yield b"0," * (count - 1) + b"0"
    yield b"]}"


def test_json_zeros_cost_a_bounded_multiple_of_the_body() -> None:
    """Finding 3 scaled down: 1M zeros (2 MB of JSON) must stay within the stated amplification."""
    body = b"".join(_zeros_body(1_000_000))
    check_json(body, {"x": DType.DT_FLOAT})
