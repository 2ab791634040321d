"""TF Serving's REST JSON codec, checked against TF Serving's json_tensor.cc and its tests.

Expected values are written out by hand, taken from TF Serving's docs and its
``json_tensor_test.cc``, or computed independently (numpy, ``fractions``) —
never by the codec under test. Decoding is checked on both of the codec's
paths: the fast one (given the raw body) and the exact one (without it).
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from modelserve.codecs import tfs_json
from modelserve.codecs.tfs_json import Feature, Format, render
from modelserve.dtypes import DType, tf_name
from modelserve.errors import InvalidArgument, ServingError, Unimplemented
from modelserve.signatures import Signature, TensorSpec

F32, F64, I32, I64, STR, BOOL = (
    DType.DT_FLOAT,
    DType.DT_DOUBLE,
    DType.DT_INT32,
    DType.DT_INT64,
    DType.DT_STRING,
    DType.DT_BOOL,
)


# ---- helpers -------------------------------------------------------------------------------


def _raw(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def predict(body: bytes | str, inputs: dict[str, DType]) -> tuple[dict[str, np.ndarray], Format]:
    """Decode on the fast path and on the exact path; both must agree."""
    raw = _raw(body)
    fast = tfs_json.decode_predict(tfs_json.loads(raw), inputs, body=raw)
    exact = tfs_json.decode_predict(tfs_json.loads(raw), inputs)
    assert fast[1] is exact[1]
    assert fast[0].keys() == exact[0].keys()
    for name in fast[0]:
        assert_same(fast[0][name], exact[0][name])
    return fast


def predict_error(body: bytes | str, inputs: dict[str, DType]) -> ServingError:
    """The error of both decoding paths, which must be the same."""
    raw = _raw(body)
    errors = []
    for given in (raw, b""):
        with pytest.raises(ServingError) as caught:
            tfs_json.decode_predict(tfs_json.loads(raw), inputs, body=given)
        errors.append(caught.value)
    assert type(errors[0]) is type(errors[1]) and str(errors[0]) == str(errors[1])
    return errors[0]


def load_error(body: bytes | str) -> str:
    with pytest.raises(InvalidArgument) as caught:
        tfs_json.loads(_raw(body))
    return str(caught.value)


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if actual.dtype == object:
        assert actual.tolist() == expected.tolist()
    else:
        assert np.array_equal(actual, expected, equal_nan=actual.dtype.kind == "f")


def encode(outputs: dict[str, Any], fmt: Format = Format.ROW) -> Any:
    """The response parsed back (Python's json accepts NaN and Infinity)."""
    return json.loads(tfs_json.encode_predict(outputs, fmt))


def strings(*values: bytes) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


# ---- parsing ---------------------------------------


def test_empty_body() -> None:
    assert load_error(b"") == "JSON Parse error: The document is empty"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # rapidjson v1.1.0's texts and offsets (iterative parser, NaN/Inf flag).
        (b"  ", "The document is empty. at offset: 2"),
        (b"]", "The document is empty. at offset: 0"),
        (b"{", "Missing a name for object member. at offset: 1"),
        (b"{,}", "Missing a name for object member. at offset: 1"),
        (b'{"a":1,}', "Missing a name for object member. at offset: 7"),
        (b'{"a"', "Missing a colon after a name of object member. at offset: 4"),
        (b'{"a" 1}', "Missing a colon after a name of object member. at offset: 5"),
        (b'{"a":', "Invalid value. at offset: 5"),
        (b'{"a":1', "Missing a comma or '}' after an object member. at offset: 6"),
        (b'{"a": 01}', "Missing a comma or '}' after an object member. at offset: 7"),
        (b'{"a": [1,]}', "Invalid value. at offset: 9"),
        (b'{"a": [1 2]}', "Missing a comma or ']' after an array element. at offset: 9"),
        (b'{"a": [1}', "Missing a comma or ']' after an array element. at offset: 8"),
        (b'{"a": tru}', "Invalid value. at offset: 9"),
        (b'{"a": nul', "Invalid value. at offset: 9"),
        (b'{"a": x}', "Invalid value. at offset: 6"),
        (b'{"a": -}', "Invalid value. at offset: 7"),
        (b'{"a": .5}', "Invalid value. at offset: 6"),
        (b'{"a": 1.}', "Miss fraction part in number. at offset: 8"),
        (b'{"a": 1e}', "Miss exponent in number. at offset: 8"),
        (b'{"a": 1e+}', "Miss exponent in number. at offset: 9"),
        (b'{"a": Infinit}', "Invalid value. at offset: 13"),
        (b'{"a": Na}', "Invalid value. at offset: 8"),
        (b'{"a": "x', "Missing a closing quotation mark in string. at offset: 8"),
        (b'{"a": "x\x01"}', "Invalid escape character in string. at offset: 8"),
        (b'{"a": "\\x"}', "Invalid escape character in string. at offset: 7"),
        (b'{"a": "\\u12G4"}', "Incorrect hex digit after \\u escape in string. at offset: 7"),
        (b'{"a": "\\ud800"}', "The surrogate pair in string is invalid. at offset: 7"),
        (b'{"a": "\\ud800\\u0041"}', "The surrogate pair in string is invalid. at offset: 7"),
        (b'{"a": 1e400}', "Number too big to be stored in double. at offset: 6"),
        (b'{"a": -1e309}', "Number too big to be stored in double. at offset: 6"),
        (b'{"a": ' + b"9" * 400 + b"}", "Number too big to be stored in double. at offset: 6"),
        (b'{"a": 1e' + b"9" * 5000 + b"}", "Number too big to be stored in double. at offset: 6"),
        (b'{"a":\x00}', "Invalid value. at offset: 5"),  # a NUL byte ends the input
    ],
)
def test_parse_errors(body: bytes, message: str) -> None:
    assert load_error(body) == "JSON Parse error: " + message


def test_top_level_must_be_an_object() -> None:
    assert load_error(b"[1, 2]") == "JSON Value: [1, 2] Is not object"
    assert load_error(b'"x"') == 'JSON Value: "x" Is not object'
    assert load_error(b"12") == "JSON Value: 12 Is not object"
    # rapidjson's writer refuses NaN, so the value prints as nothing.
    assert load_error(b"NaN") == "JSON Value:  Is not object"


def test_nan_and_infinity_tokens_are_accepted() -> None:
    doc = tfs_json.loads(b'{"a": [NaN, Infinity, -Infinity, Inf, -Inf, -NaN]}')
    a = doc["a"]
    assert math.isnan(a[0]) and math.isnan(a[5])
    assert a[1:5] == [math.inf, -math.inf, math.inf, -math.inf]


def test_trailing_bytes_after_the_first_value_are_ignored() -> None:
    assert tfs_json.loads(b'{"a": 1} trailing garbage [') == {"a": 1}
    assert tfs_json.loads(b'{"a": 1}\x00{') == {"a": 1}
    # TF's TensorFromNonNullTerminatedBuffer test, with the X kept.
    result, fmt = predict('{"instances": [[1,2],[3,4],[5,6]]}X', {"x": I32})
    assert fmt is Format.ROW
    assert_same(result["x"], np.array([[1, 2], [3, 4], [5, 6]], np.int32))


def test_byte_order_mark_is_skipped() -> None:
    assert tfs_json.loads(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


def test_numbers() -> None:
    doc = tfs_json.loads(
        b'{"i": -0, "u": 18446744073709551615, "n": -9223372036854775808, "big": 18446744073709551616,'
        b' "neg": -9223372036854775809, "f": 1E2, "tiny": 1e-400, "edge": 2e308}'
    )
    assert doc["i"] == 0 and type(doc["i"]) is int
    assert doc["u"] == 2**64 - 1 and type(doc["u"]) is int
    assert doc["n"] == -(2**63) and type(doc["n"]) is int
    assert doc["big"] == 1.8446744073709552e19 and type(doc["big"]) is float  # past uint64: a double
    assert doc["neg"] == -9.223372036854776e18 and type(doc["neg"]) is float
    assert doc["f"] == 100.0 and type(doc["f"]) is float
    assert doc["tiny"] == 0.0
    assert doc["edge"] == math.inf  # rapidjson 1.1.0 lets this one overflow silently


def test_strings_keep_their_bytes() -> None:
    raw = b'{"inputs": ["caf\\u00e9", "\\ud83d\\ude00", "\xff\xfe", "a\\"b\\\\\\/\\b\\f\\n\\r\\t"]}'
    result, _ = predict(raw, {"x": STR})
    assert result["x"].tolist() == ["café".encode(), "😀".encode(), b"\xff\xfe", b'a"b\\/\b\f\n\r\t']


def test_deep_nesting_is_parsed_without_recursion() -> None:
    # TF's DeeplyNestedWellFormed test: an unused, deeply nested key.
    body = b'{"instances": [1], "nested": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    result, _ = predict(body, {"x": I32})
    assert_same(result["x"], np.array([1], np.int32))
    unclosed = b'{"instances": ' + b"[" * 100_000
    assert load_error(unclosed) == "JSON Parse error: Invalid value. at offset: 100014"


def test_deeply_nested_signature_name() -> None:
    # TF's DeeplyNestedMalformed test; the message shows the document cut after 256 bytes.
    body = b'{"signature_name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    doc = tfs_json.loads(body)
    with pytest.raises(InvalidArgument) as caught:
        tfs_json.signature_name(doc)
    message = str(caught.value)
    assert message.endswith(" not formatted correctly. 'signature_name' key must be a string value.")
    assert message.startswith('JSON Value: {\n    "signature_name": [[[[')
    assert len(message) < 256 + 100


def test_too_deep_for_numpy_is_a_clean_error() -> None:
    error = predict_error(b'{"inputs": ' + b"[" * 100 + b"1" + b"]" * 100 + b"}", {"x": F32})
    assert isinstance(error, InvalidArgument)
    assert "rank 100" in str(error)
    error = predict_error(b'{"instances": ' + b"[" * 70 + b"1" + b"]" * 70 + b"}", {"x": F32})
    assert isinstance(error, InvalidArgument)


# ---- signature_name --------------------------------------------------------------------------


def test_signature_name() -> None:
    assert tfs_json.signature_name({"instances": []}) == ""
    assert tfs_json.signature_name({"signature_name": "predict_images"}) == "predict_images"
    with pytest.raises(InvalidArgument) as caught:
        tfs_json.signature_name(tfs_json.loads(b'{"signature_name": 1}'))
    assert str(caught.value) == (
        'JSON Value: {\n    "signature_name": 1\n} not formatted correctly. '
        "'signature_name' key must be a string value."
    )


# ---- predict requests: the docs' examples (api_rest.md) ------------------------------------


def test_docs_row_format_scalars_and_nested_lists() -> None:
    result, fmt = predict('{"instances": [ "foo", "bar", "baz" ]}', {"x": STR})
    assert fmt is Format.ROW
    assert_same(result["x"], strings(b"foo", b"bar", b"baz"))
    result, _ = predict('{"instances": [ [[1, 2]], [[3, 4]] ]}', {"x": F32})
    assert_same(result["x"], np.array([[[1, 2]], [[3, 4]]], np.float32))


DOCS_INPUTS = {"tag": STR, "signal": I32, "sensor": F32}
DOCS_EXPECTED = {
    "tag": strings(b"foo", b"bar"),
    "signal": np.array([[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]], np.int32),
    "sensor": np.array([[[1, 2], [3, 4]], [[4, 5], [6, 8]]], np.float32),
}


def test_docs_row_format_named_inputs() -> None:
    body = """{"instances": [
        {"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},
        {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]}
    ]}"""
    result, fmt = predict(body, DOCS_INPUTS)
    assert fmt is Format.ROW
    for name, expected in DOCS_EXPECTED.items():
        assert_same(result[name], expected)


def test_docs_columnar_format() -> None:
    body = """{"inputs": {
        "tag": ["foo", "bar"],
        "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
        "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]]
    }}"""
    result, fmt = predict(body, DOCS_INPUTS)
    assert fmt is Format.COLUMNAR
    for name, expected in DOCS_EXPECTED.items():
        assert_same(result[name], expected)


def test_docs_b64_values() -> None:
    result, _ = predict('{"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}', {"x": STR})
    assert_same(result["x"], strings(b"hello", b"world"))
    result, _ = predict('{"instances": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}', {"x": STR})
    assert result["x"].shape == (2, 1) and result["x"].ravel().tolist() == [b"hello", b"world"]
    # TF's SingleNamedTensorBase64: a named object holding b64 lists.
    body = '{"instances": [{"default": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}]}'
    result, _ = predict(body, {"default": STR})
    assert result["default"].shape == (1, 2, 1)
    assert result["default"].ravel().tolist() == [b"hello", b"world"]
    result, fmt = predict('{"inputs": {"b64": "aGVsbG8="}}', {"x": STR})
    assert fmt is Format.COLUMNAR and result["x"].shape == () and result["x"].item() == b"hello"


def test_signature_name_and_other_keys_are_ignored_by_decode() -> None:
    result, _ = predict('{"signature_name": "predict_images", "extra": 1, "instances": [[1,2]]}', {"x": I32})
    assert_same(result["x"], np.array([[1, 2]], np.int32))


def test_single_input_may_be_named_in_rows() -> None:
    result, _ = predict('{"instances": [{"x": [1, 2]}, {"x": [3, 4]}]}', {"x": F64})
    assert_same(result["x"], np.array([[1, 2], [3, 4]], np.float64))


def test_columnar_keeps_shapes_and_ignores_extra_keys() -> None:
    result, _ = predict('{"inputs": {"a": 5, "b": [[1], [2], [3]], "unused": "x"}}', {"a": I64, "b": F32})
    assert_same(result["a"], np.array(5, np.int64))  # a bare scalar: rank 0
    assert_same(result["b"], np.array([[1], [2], [3]], np.float32))
    result, _ = predict('{"inputs": [[], []]}', {"x": I32})
    assert_same(result["x"], np.zeros((2, 0), np.int32))


# ---- dtype rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "json_values", "expected"),
    [
        (
            F32,
            "[1, 2.0, 3, 4, 5.003, 0.007, 0.0]",  # TF's MixedInputForFloatTensor
            np.array([1, 2, 3, 4, 5.003, 0.007, 0], np.float32),
        ),
        (F32, "[1435774380, 1435774380.0]", np.array([1435774336, 1435774336], np.float32)),
        (
            F32,
            "[1.7976931348623157e308, -1.7976931348623157e308, 2.2250738585072014e-308, 1e39]",
            np.array([np.inf, -np.inf, 0, np.inf], np.float32),
        ),
        (F32, "[NaN, Infinity, -Infinity, Inf]", np.array([np.nan, np.inf, -np.inf, np.inf], np.float32)),
        (F64, "[0.1, 1, 9007199254740993]", np.array([0.1, 1, 9007199254740992.0])),
        (DType.DT_HALF, "[1, 0.5, 70000, -1e10]", np.array([1, 0.5, np.inf, -np.inf], np.float16)),
        (DType.DT_BFLOAT16, "[1, 0.5, 3]", np.array([1, 0.5, 3], ml_dtypes.bfloat16)),
        (I32, "[-2147483648, 2147483647, 0]", np.array([-(2**31), 2**31 - 1, 0], np.int32)),
        # The narrow types take any int32 and wrap like TF's int_val does.
        (DType.DT_UINT8, "[255, 256, -1, 300]", np.array([255, 0, 255, 44], np.uint8)),
        (DType.DT_INT8, "[127, 128, 200]", np.array([127, -128, -56], np.int8)),
        (DType.DT_INT16, "[32767, 32768]", np.array([32767, -32768], np.int16)),
        (
            I64,
            "[9007199254740993, -9223372036854775808, 9223372036854775807]",
            np.array([2**53 + 1, -(2**63), 2**63 - 1], np.int64),
        ),
        (DType.DT_UINT32, "[0, 4294967295]", np.array([0, 2**32 - 1], np.uint32)),
        (DType.DT_UINT64, "[0, 18446744073709551615]", np.array([0, 2**64 - 1], np.uint64)),
        (BOOL, "[true, false]", np.array([True, False])),
        (STR, '["a", "", {"b64": ""}]', strings(b"a", b"", b"")),
    ],
)
def test_accepted_values(dtype: DType, json_values: str, expected: np.ndarray) -> None:
    result, _ = predict(f'{{"inputs": {json_values}}}', {"x": dtype})
    assert_same(result["x"], expected)
    rows, _ = predict(f'{{"instances": {json_values}}}', {"x": dtype})
    assert_same(rows["x"], expected)


def test_int64_precision_survives() -> None:
    result, _ = predict('{"instances": [[9007199254740993, 1]]}', {"x": I64})
    assert int(result["x"][0, 0]) == 2**53 + 1


@pytest.mark.parametrize(
    ("dtype", "value", "shown", "json_type"),
    [
        (F32, '"1"', '"1"', "String"),
        (F32, "true", "true", "True"),
        (F32, "null", "null", "Null"),
        (F64, "false", "false", "False"),
        (I32, "1.0", "1.0", "Number"),
        (I32, "true", "true", "True"),
        (I32, "2147483648", "2147483648", "Number"),
        (I32, "-2147483649", "-2147483649", "Number"),
        (I32, "1e30", "1e30", "Number"),
        (I32, "0.001", "0.001", "Number"),
        (I32, "1.5e-7", "1.5e-7", "Number"),
        (I32, "1e20", "100000000000000000000.0", "Number"),
        (DType.DT_UINT8, "2147483648", "2147483648", "Number"),
        (I64, "9223372036854775808", "9223372036854775808", "Number"),
        (I64, "1.5", "1.5", "Number"),
        (DType.DT_UINT32, "-1", "-1", "Number"),
        (DType.DT_UINT32, "4294967296", "4294967296", "Number"),
        (DType.DT_UINT64, "-1", "-1", "Number"),
        (BOOL, "1", "1", "Number"),
        (BOOL, '"true"', '"true"', "String"),
        (BOOL, "null", "null", "Null"),
        (STR, "1", "1", "Number"),
        (STR, "null", "null", "Null"),
        (STR, "[]", "[]", "Array"),
        (DType.DT_HALF, '"x"', '"x"', "String"),
        (F32, '{"a": 1}', '{\n    "a": 1\n}', "Object"),
    ],
)
def test_rejected_values(dtype: DType, value: str, shown: str, json_type: str) -> None:
    message = f"JSON Value: {shown} Type: {json_type} is not of expected type: {tf_name(dtype)}"
    if dtype is STR and value == "[]":
        # An empty list inside a string list is a shape error, not a type error.
        return
    error = predict_error(f'{{"inputs": [{value}]}}', {"x": dtype})
    assert isinstance(error, InvalidArgument)
    assert str(error) == message
    error = predict_error(f'{{"instances": [{value}]}}', {"x": dtype})
    if json_type == "Object":  # an object in "instances" names inputs
        assert str(error) == (
            "Failed to process element: 0 key: a of 'instances' list. Error: "
            "INVALID_ARGUMENT: JSON object: does not have named input: a"
        )
        return
    prefix = "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
    assert str(error) == prefix + message


def test_nan_in_an_error_message_prints_as_nothing() -> None:
    error = predict_error('{"inputs": [NaN]}', {"x": I32})
    assert str(error) == "JSON Value:  Type: Number is not of expected type: int32"


def test_hidden_bool_in_a_float_list() -> None:
    # np.array([1.5, True]) silently gives [1.5, 1.0]; TF rejects the true.
    error = predict_error('{"instances": [[1.5, 2.5], [3.5, true]]}', {"x": F32})
    assert str(error) == (
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON Value: true Type: True is not of expected type: float"
    )
    error = predict_error('{"inputs": [1, false]}', {"x": I64})
    assert str(error) == "JSON Value: false Type: False is not of expected type: int64"
    # A "true" anywhere else in the body only costs speed.
    result, _ = predict('{"signature_name": "true", "instances": [1.5, 2]}', {"x": F32})
    assert_same(result["x"], np.array([1.5, 2], np.float32))


def test_b64_rules() -> None:
    cases = {
        '{"b64": "aGVsbG8"}': b"hello",  # padding is optional
        '{"b64": "aGVs\\nbG8="}': b"hello",  # whitespace is skipped
        '{"b64": "+/8="}': b"\xfb\xff",  # the standard alphabet
    }
    for value, expected in cases.items():
        result, _ = predict(f'{{"inputs": [{value}]}}', {"x": STR})
        assert result["x"].tolist() == [expected], value
    for value in ('{"b64": "-_8="}', '{"b64": "aGVsbG8=="}', '{"b64": "a"}', '{"b64": "é"}'):
        assert str(predict_error(f'{{"inputs": [{value}]}}', {"x": STR})) == "Unable to base64 decode", value
    for value, shown in (
        ('{"b64": 1}', '{\n    "b64": 1\n}'),
        ('{"b64": "", "x": 1}', '{\n    "b64": "",\n    "x": 1\n}'),
        ("{}", "{}"),
    ):
        error = predict_error(f'{{"inputs": [{value}]}}', {"x": STR})
        assert str(error) == f"JSON Value: {shown} not formatted correctly for base64 data"


@pytest.mark.parametrize(
    ("dtype", "name"),
    [
        (DType.DT_COMPLEX64, "complex64"),
        (DType.DT_UINT16, "uint16"),
        (DType.DT_QINT8, "qint8"),
        (DType.DT_COMPLEX128, "complex128"),
    ],
)
def test_unsupported_input_dtypes(dtype: DType, name: str) -> None:
    error = predict_error('{"inputs": [[1, 2]]}', {"x": dtype})
    assert isinstance(error, Unimplemented)
    assert str(error) == f"Conversion of JSON Value: 1 to type: {name}"
    # The row format wraps every element error as INVALID_ARGUMENT, this one too (400, not 501).
    error = predict_error('{"instances": ["a"]}', {"x": dtype})
    assert type(error) is InvalidArgument
    assert str(error) == (
        f"Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: "
        f'Conversion of JSON Value: "a" to type: {name}'
    )


# ---- predict request errors ---------------------------------------------------------

TWO = {"a": I32, "b": I32}


def test_missing_inputs_and_instances() -> None:
    assert str(predict_error('{"signature_name": "x"}', TWO)) == "Missing 'inputs' or 'instances' key"


def test_both_keys() -> None:
    assert str(predict_error('{"inputs": 1, "instances": [1]}', {"x": I32})) == (
        'JSON Value: {\n    "inputs": 1,\n    "instances": [1]\n} Not formatted correctly expecting only '
        "one of 'inputs' or 'instances' keys to exist "
    )


def test_instances_must_be_a_non_empty_list() -> None:
    assert str(predict_error('{"instances": 1}', {"x": I32})) == (
        "JSON Value: {\n    \"instances\": 1\n} Expecting 'instances' to be an list/array"
    )
    assert str(predict_error('{"instances": []}', {"x": I32})) == (
        "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"
    )


def test_no_signature_inputs() -> None:
    with pytest.raises(InvalidArgument) as caught:
        tfs_json.decode_predict({"instances": [1]}, {})
    assert str(caught.value) == "Failed to get input map for signature: DEFAULT"
    with pytest.raises(InvalidArgument) as caught:
        tfs_json.decode_predict({"signature_name": "sig", "instances": [1]}, {})
    assert str(caught.value) == "Failed to get input map for signature: sig"


def test_multiple_inputs_need_objects() -> None:
    assert str(predict_error('{"instances": [[1, 2]]}', TWO)) == (
        "instances is a plain list, but expecting list of objects as multiple input tensors required "
        "as per tensorinfo_map"
    )
    assert str(predict_error('{"inputs": [1, 2]}', TWO)) == (
        "inputs is a plain value/list, but expecting an object as multiple input tensors required as per tensorinfo_map"
    )


def test_objects_and_lists_do_not_mix() -> None:
    assert str(predict_error('{"instances": [{"a": 1, "b": 2}, [1]]}', TWO)) == (
        "Expecting object but got list at item 1 of input list"
    )
    assert str(predict_error('{"instances": [1, {"x": 1}]}', {"x": I32})) == (
        "Expecting value/list but got object at item 1 of input list"
    )


def test_row_object_keys() -> None:
    assert str(predict_error('{"instances": [{"a": 1, "z": 2}]}', TWO)) == (
        "Failed to process element: 0 key: z of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: z"
    )
    assert str(predict_error('{"instances": [{"a": 1, "b": 2}, {"a": 1}]}', TWO)) == (
        "Failed to process element: 1 of 'instances' list. JSON object: {\n    \"a\": 1\n} keys must be equal to: a,b"
    )


def test_missing_named_input_in_columns() -> None:
    assert str(predict_error('{"inputs": {"a": 1}}', TWO)) == "Missing named input: b in 'inputs' object."


@pytest.mark.parametrize(
    ("instances", "inner"),
    [
        ("[[1, 2], [1, 2, 3]]", "Expecting tensor size: 2 but got: 3"),
        ("[[1, 2], 3]", "Expecting tensor size: 2 but got: 1"),
        ("[[[1], [2]], [[1, 2]]]", "Expecting shape [2,1] but got: [1,2]"),
        ("[[], [[]]]", "Expecting shape [0] but got: [1,0]"),
        ("[[1, 2], [[3], [4]]]", "Expecting shape [2] but got: [2,1]"),
        ("[[1, 2], [3, [4]]]", "Encountered list at unexpected level: 1 expected < 1"),
        ("[[1, 2], [[3, 4], [5]]]", "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        ("[[1, 2], [[3], 4]]", "JSON Value: 4 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
        (
            '[[1, 2], [[3], {"b64": ""}]]',
            'JSON Value: {\n    "b64": ""\n} found at incorrect level: 2 in the JSON DOM. Expected at level: 2',
        ),
    ],
)
def test_element_shapes(instances: str, inner: str) -> None:
    error = predict_error(f'{{"instances": {instances}}}', {"x": I32})
    assert str(error) == f"Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: {inner}"


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ("[[1, 2], [3]]", "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        ("[[1, 2], 3]", "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
        ("[1, [2]]", "Encountered list at unexpected level: 1 expected < 1"),
        ("[[[1]], [[2, 3]]]", "Encountered list at unexpected size: 2 at level: 2 expected size: 1"),
    ],
)
def test_ragged_columns(inputs: str, message: str) -> None:
    assert str(predict_error(f'{{"inputs": {inputs}}}', {"x": F32})) == message


def test_error_values_are_cut_after_256_bytes() -> None:
    keys = ", ".join(f'"k{i}": {i}' for i in range(100))
    error = predict_error(f'{{"instances": 1, {keys}}}', {"x": I32})
    value = str(error).removeprefix("JSON Value: ").removesuffix(" Expecting 'instances' to be an list/array")
    assert value.startswith('{\n    "instances": 1,\n    "k0": 0,\n    "k1": 1,')
    assert 256 <= len(value) < 256 + 12 and "k99" not in value and not value.endswith("}")
    assert load_error(json.dumps(list(range(1000)))).startswith("JSON Value: [0, 1, 2, 3, ")


# ---- predict responses -------------------------------------------------------


def exact_float32(text: str) -> float:
    """The float32 nearest to the decimal `text` (ties to even), by exact arithmetic."""
    value = Fraction(text)
    guess = np.float32(float(text))
    candidates = [guess, np.nextafter(guess, np.float32(np.inf)), np.nextafter(guess, np.float32(-np.inf))]
    best = min(candidates, key=lambda c: (abs(Fraction(float(c)) - value), int(np.array(c).view(np.uint32)) & 1))
    return float(best)


def tf_float32_text(x: np.float32) -> str:
    """For DT_FLOAT, as TF Serving's json_tensor.cc writes it: %g, else %.9g, then '.0'."""
    v = float(x)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    text = f"{v:g}"
    if exact_float32(text) != v:
        text = f"{v:.9g}"
    return text if "." in text or "e" in text else text + ".0"


FLOAT32_EXAMPLES = [
    (9000000, "9e+06"),
    (999999, "999999.0"),
    (0.5, "0.5"),
    (0.0003, "0.0003"),
    (0.00003, "3e-05"),
    (555557.5, "555557.5"),
    (3, "3.0"),
    (1 / 3, "0.333333343"),
    (1435774380, "1.43577434e+09"),
    (123456789, "123456792.0"),
]


@pytest.mark.parametrize(("value", "text"), FLOAT32_EXAMPLES)
def test_float32_examples(value: float, text: str) -> None:
    assert tfs_json.format_float32(value) == text


@pytest.mark.parametrize(
    ("value", "text"), [(1 / 3, "0.33333333333333331"), (0.1, "0.1"), (1435774380.0, "1435774380.0")]
)
def test_double_examples(value: float, text: str) -> None:
    assert tfs_json.format_double(value) == text


def test_non_finite_and_signed_zero() -> None:
    for fmt in (tfs_json.format_float32, tfs_json.format_double):
        assert [fmt(v) for v in (math.nan, math.inf, -math.inf, 0.0, -0.0)] == [
            "NaN",
            "Infinity",
            "-Infinity",
            "0.0",
            "-0.0",
        ]


def test_examples_in_a_response_small_and_vectorised() -> None:
    values = np.array([v for v, _ in FLOAT32_EXAMPLES], np.float32)
    texts = [t for _, t in FLOAT32_EXAMPLES]
    small = tfs_json.encode_predict({"y": values}, Format.COLUMNAR)
    assert small == ('{"outputs":[' + ",".join(texts) + "]}").encode()
    copies = render._VECTOR_MIN // len(values) + 1  # enough values for the numpy path
    large = tfs_json.encode_predict({"y": np.tile(values, (copies, 1))}, Format.COLUMNAR)
    rows = ",".join("[" + ",".join(texts) + "]" for _ in range(copies))
    assert large == ('{"outputs":[' + rows + "]}").encode()


def test_a_six_digit_text_on_a_tie_reads_back_as_the_even_float() -> None:
    # 6.71089e+07 lies exactly halfway between the float32s 67108896 (even significand)
    # and 67108904 (odd): parsed as a float32 it gives the even one only.
    assert tfs_json.format_float32(67108896) == "6.71089e+07"
    assert tfs_json.format_float32(67108904) == "67108904.0"
    tiled = np.tile(np.array([67108896, 67108904], np.float32), render._VECTOR_MIN)
    assert (
        tfs_json.encode_predict({"y": tiled}, Format.COLUMNAR)
        == ('{"outputs":[' + ",".join(["6.71089e+07,67108904.0"] * render._VECTOR_MIN) + "]}").encode()
    )


def test_float32_formatting_against_an_exact_oracle() -> None:
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, size=3000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    special = np.array(
        [1.4e-45, 1.17549435e-38, 3.4028235e38, 100000.5, 16777217, 1e-3, 9.99999e-5, -2.5e-40, 65504, 1e10, 1e-10],
        np.float32,
    )
    values = np.concatenate(
        [
            bits,
            special,
            rng.random(1000).astype(np.float32),
            (rng.integers(-(10**6), 10**6, 500) / 1000).astype(np.float32),
        ]
    )
    values = values[np.isfinite(values)]
    expected = [tf_float32_text(v) for v in values]
    assert [tfs_json.format_float32(float(v)) for v in values] == expected
    # The same values through the vectorised path, in one response.
    assert (
        tfs_json.encode_predict({"y": values}, Format.COLUMNAR) == ('{"outputs":[' + ",".join(expected) + "]}").encode()
    )


def tf_double_text(v: float) -> str:
    """For DT_DOUBLE: %g, else %.17g (Python's float() reads a decimal exactly), then '.0'."""
    if not math.isfinite(v):
        return tf_float32_text(np.float32(v))  # NaN and the infinities are written alike
    text = f"{v:g}"
    if float(text) != v:
        text = f"{v:.17g}"
    return text if "." in text or "e" in text else text + ".0"


def test_double_formatting_against_python() -> None:
    rng = np.random.default_rng(8)
    for v in np.concatenate([rng.standard_normal(500), rng.random(500) * 1e-300, [2.0**60, 1e16, 5e-324]]):
        assert tfs_json.format_double(float(v)) == tf_double_text(float(v))


def test_small_float_outputs_against_the_reference() -> None:
    # Outputs under render._VECTOR_MIN values are formatted a list at a time (one %-format,
    # one parse of the %g texts); whole, tiny, non-finite and mixed lists, all list sizes.
    rng = np.random.default_rng(11)
    bits = rng.integers(0, 2**32, size=2000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    pool = np.concatenate(
        [
            bits,
            rng.random(300).astype(np.float32),
            (rng.integers(-999, 999, 300) / 4).astype(np.float32),
            (rng.random(300) * 1e-5).astype(np.float32),
            np.float32([0.0, -0.0, 1e6, 16777216, 3.4028235e38]),
        ]
    )
    pool = pool[rng.permutation(len(pool))]
    for size in (1, 4, 5, 6, 10, 31):
        for start in range(0, 600, size):
            chunk = pool[start : start + size]
            expected = "[" + ",".join(tf_float32_text(v) for v in chunk) + "]"
            body = tfs_json.encode_predict({"y": chunk}, Format.COLUMNAR)
            assert body == b'{"outputs":' + expected.encode() + b"}"
    whole = np.float32([[1, 2, 3], [4e6, -0.0, 0.5]])
    body = tfs_json.encode_predict({"y": whole}, Format.COLUMNAR)
    assert json.loads(body, parse_float=str) == {"outputs": [["1.0", "2.0", "3.0"], ["4e+06", "-0.0", "0.5"]]}


def test_small_double_outputs_against_python() -> None:
    rng = np.random.default_rng(12)
    values = np.concatenate(
        [
            rng.standard_normal(200),
            np.round(rng.standard_normal(200), 2),
            [1e308, 1e308, -1e308, 5e-324, 2.0**60, 0.0, -0.0, math.inf, math.nan],
        ]
    )
    for size in (3, 5, 9):
        for start in range(0, len(values), size):
            chunk = values[start : start + size]
            expected = '{"outputs":[' + ",".join(map(tf_double_text, chunk.tolist())) + "]}"
            assert tfs_json.encode_predict({"y": chunk}, Format.COLUMNAR) == expected.encode()


def test_small_float32_outputs_share_one_formatting_pass() -> None:
    # Several outputs: the small float32 ones are formatted together, then cut apart again.
    rng = np.random.default_rng(13)
    bits = rng.integers(0, 2**32, size=4000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    finite = bits[np.isfinite(bits)]
    outputs = {
        "a": finite[:6].reshape(2, 3),
        "b": np.float32([0.5, -0.0]),
        "c": np.float32([[[1e-7, 3]], [[np.nan, 1e6]]]),
        "d": rng.standard_normal((2, 4)),
        "e": np.arange(2, dtype=np.int64),
        "f": finite[6 : 6 + 2 * (render._VECTOR_MIN // 2 + 1)].reshape(2, -1),  # the numpy path
        "g": finite[-2:].reshape(2, 1, 1),
    }

    def texts(array: np.ndarray) -> Any:
        text = tf_float32_text if array.dtype == np.float32 else tf_double_text
        return np.array([text(v) for v in array.ravel().tolist()], dtype=object).reshape(array.shape).tolist()

    expected = {name: texts(a) if a.dtype.kind == "f" else a.tolist() for name, a in outputs.items()}
    body = tfs_json.encode_predict(outputs, Format.COLUMNAR)
    assert json.loads(body, parse_float=str, parse_constant=str) == {"outputs": expected}
    body = tfs_json.encode_predict(outputs, Format.ROW)
    assert json.loads(body, parse_float=str, parse_constant=str) == {
        "predictions": [{name: value[i] for name, value in expected.items()} for i in range(2)]
    }


def test_no_six_digit_decimal_parses_onto_a_float32_midpoint_it_is_not() -> None:
    # Small outputs read each %g text back as a float32 through a double. That is exactly
    # absl::SimpleAtof unless a decimal's nearest double is a float32 midpoint the decimal
    # is not (rounding twice). Every 6-digit decimal in float32's range is checked: doubles
    # within a few ULPs find those near a midpoint; exact arithmetic settles the ones that
    # a double cannot hold (a double that holds its decimal exactly is never misread).
    whole = np.arange(100000, 1000000, dtype=np.int64)
    digits = whole.astype(np.float64)
    odd = whole // (whole & -whole)
    ties = 0
    for k in range(-51, 34):  # 100000e-51 .. 999999e33 covers 1.4e-45 .. 3.4e38
        approx = digits * 10.0**k if k >= 0 else digits / 10.0**-k  # a few ULPs from the decimal
        with np.errstate(over="ignore"):
            nearest = approx.astype(np.float32)
        up = (nearest.astype(np.float64) + np.nextafter(nearest, np.float32(np.inf))) / 2
        down = (nearest.astype(np.float64) + np.nextafter(nearest, np.float32(-np.inf))) / 2
        slack = 8 * np.spacing(approx)
        near = np.isfinite(up) & ((np.abs(approx - up) <= slack) | (np.abs(approx - down) <= slack))
        if k >= 0:
            exact = odd * 5.0**k < 2.0**53  # D * 10**k = odd * 5**k * 2**(k + twos)
        else:
            exact = (whole % 5**-k == 0) if -k <= 8 else np.zeros_like(near)
        for i in np.flatnonzero(near & ~exact):
            text = f"{whole[i]}e{k}"
            double = float(text)
            assert double not in (up[i], down[i]) or Fraction(double) == Fraction(text), text
        ties += np.count_nonzero(near & exact & ((approx == up) | (approx == down)))
    assert ties > 100000  # the search finds the exact ties, 671089e2 (test above) among them


def test_row_format_single_output() -> None:
    # TF's FromJsonSingleTensor / FromJsonSingleScalarTensor.
    tensor = np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32)
    expected = [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]
    assert encode({"int_tensor": tensor}) == {"predictions": expected}
    assert encode({"int_tensor": tensor}, Format.COLUMNAR) == {"outputs": expected}
    assert tfs_json.encode_predict({"x": np.array([1, 2, 3, 4, 5], np.int32)}, Format.ROW) == (
        b'{"predictions":[1,2,3,4,5]}'
    )


def test_multiple_outputs() -> None:
    # TF's FromJsonMultipleNamedTensors.
    outputs = {
        "double_scalar_tensor": np.array([8.0, 9.0]),
        "float_tensor": np.array([[1.0], [2.0]], np.float32),
        "int_tensor": np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32),
        "str_tensor": np.array([[b"foo", b"bar"], [b"baz", b"bat"]], dtype=object),
        "str_tensor_bytes": np.array([[b"hello", b"world"], [b"tf", b"serving"]], dtype=object),
    }
    assert encode(outputs) == {
        "predictions": [
            {
                "double_scalar_tensor": 8.0,
                "float_tensor": [1.0],
                "int_tensor": [[1, 2], [3, 4], [5, 6]],
                "str_tensor": ["foo", "bar"],
                "str_tensor_bytes": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
            },
            {
                "double_scalar_tensor": 9.0,
                "float_tensor": [2.0],
                "int_tensor": [[7, 8], [9, 0], [1, 2]],
                "str_tensor": ["baz", "bat"],
                "str_tensor_bytes": [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
            },
        ]
    }
    assert encode(outputs, Format.COLUMNAR) == {
        "outputs": {
            "double_scalar_tensor": [8.0, 9.0],
            "float_tensor": [[1.0], [2.0]],
            "int_tensor": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]],
            "str_tensor": [["foo", "bar"], ["baz", "bat"]],
            "str_tensor_bytes": [
                [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
                [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
            ],
        }
    }


def test_multiple_large_float_outputs_per_row() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, render._VECTOR_MIN // 20 + 1, 5)).astype(np.float32)  # the numpy path
    b = np.arange(4, dtype=np.int64)
    body = tfs_json.encode_predict({"a": a, "b": b}, Format.ROW)
    rows = json.loads(body)["predictions"]
    assert [r["b"] for r in rows] == [0, 1, 2, 3]
    for i, row in enumerate(rows):
        assert_same(np.array(row["a"], np.float32), a[i])
    # Each float is TF's text for it.
    flat = json.loads(body, parse_float=str)["predictions"][2]["a"][1]
    assert flat == [tf_float32_text(v) for v in a[2, 1]]


def test_zero_batch_and_empty_tensors() -> None:
    # TF's FromJsonSingleZeroBatchTensor / FromJsonMultipleZeroBatchTensors.
    assert tfs_json.encode_predict({"x": np.zeros((0, 2), np.int32)}, Format.ROW) == b'{"predictions":[]}'
    outputs = {"s": np.empty((0, 1, 2), dtype=object), "f": np.zeros((0, 3, 4), np.float32)}
    assert tfs_json.encode_predict(outputs, Format.ROW) == b'{"predictions":[]}'
    assert encode({"x": np.zeros((2, 0, 3), np.float32)}, Format.COLUMNAR) == {"outputs": [[], []]}
    # An empty tensor of an unsupported type writes no value, hence no error.
    assert encode({"c": np.zeros((0,), np.complex64)}, Format.COLUMNAR) == {"outputs": []}


def test_row_format_errors() -> None:
    with pytest.raises(InvalidArgument) as caught:
        tfs_json.encode_predict({}, Format.ROW)
    assert str(caught.value) == "Cannot convert empty tensor map to JSON"
    with pytest.raises(InvalidArgument) as caught:
        tfs_json.encode_predict({"tensor": np.array(1, np.int32)}, Format.ROW)
    assert str(caught.value) == "Tensor name: tensor has no shape information "
    with pytest.raises(InvalidArgument) as caught:
        tfs_json.encode_predict({"a": np.zeros((2, 3)), "b": np.zeros((1, 3))}, Format.ROW)
    assert str(caught.value) == "Tensor name: b has inconsistent batch size: 1 expecting: 2"
    with pytest.raises(InvalidArgument, match="inconsistent batch size: 1 expecting: 0"):
        tfs_json.encode_predict({"a": np.zeros((0, 2), np.int32), "b": strings(b"x")}, Format.ROW)


def test_columnar_scalars_print_bare() -> None:
    assert tfs_json.encode_predict({"y": np.array(2.5, np.float32)}, Format.COLUMNAR) == b'{"outputs":2.5}'
    assert tfs_json.encode_predict({"y": np.array(7, np.int64)}, Format.COLUMNAR) == b'{"outputs":7}'
    assert encode({"a": np.array(True), "b": np.array(b"x", dtype=object)}, Format.COLUMNAR) == {
        "outputs": {"a": True, "b": "x"}
    }


def test_non_finite_outputs_are_bare_tokens() -> None:
    # TF's FromJsonSingleFloatTensorNonFinite.
    tensor = np.array([[np.nan, np.inf], [3, -np.inf]], np.float32)
    assert tfs_json.encode_predict({"float_tensor": tensor}, Format.ROW) == (
        b'{"predictions":[[NaN,Infinity],[3.0,-Infinity]]}'
    )
    assert tfs_json.encode_predict({"d": np.array([np.nan, -np.inf])}, Format.COLUMNAR) == (
        b'{"outputs":[NaN,-Infinity]}'
    )


def test_integer_and_bool_outputs() -> None:
    out = tfs_json.encode_predict({"a": np.array([2**53 + 1, -(2**63)], np.int64)}, Format.COLUMNAR)
    assert out == b'{"outputs":[9007199254740993,-9223372036854775808]}'
    outputs = {
        "u": np.array([2**64 - 1], np.uint64),
        "i8": np.array([-128], np.int8),
        "b": np.array([True]),
        "u32": np.array([4294967295], np.uint32),
    }
    assert encode(outputs) == {"predictions": [{"u": 2**64 - 1, "i8": -128, "b": True, "u32": 4294967295}]}
    big_endian = np.array([[1, 2], [3, 4]], dtype=">i4")
    transposed = np.arange(6, dtype=np.int16).reshape(2, 3).T
    assert encode({"x": big_endian, "t": transposed}, Format.COLUMNAR) == {
        "outputs": {"x": [[1, 2], [3, 4]], "t": [[0, 3], [1, 4], [2, 5]]}
    }


def test_half_and_bfloat16_print_as_float32() -> None:
    values = [0.1, 1 / 3, 65504]
    half = np.array(values, np.float16)
    assert (
        tfs_json.encode_predict({"h": half}, Format.COLUMNAR)
        == ('{"outputs":[' + ",".join(tf_float32_text(np.float32(v)) for v in half) + "]}").encode()
    )
    bf16 = np.array(values, ml_dtypes.bfloat16)
    expected = ",".join(tf_float32_text(np.float32(v)) for v in bf16)
    assert tfs_json.encode_predict({"b": bf16}, Format.COLUMNAR) == f'{{"outputs":[{expected}]}}'.encode()


def test_string_outputs() -> None:
    outputs = {"text": strings(b"caf\xc3\xa9", b"\xff", b'q"'), "image_bytes": strings(b"\x00\xff", b"", b"hi")}
    assert encode(outputs) == {
        "predictions": [
            {"text": "café", "image_bytes": {"b64": "AP8="}},
            {"text": "\ufffd", "image_bytes": {"b64": ""}},
            {"text": 'q"', "image_bytes": {"b64": "aGk="}},
        ]
    }
    # numpy's own string dtypes are DT_STRING too.
    assert encode({"s": np.array(["a", "b"]), "t_bytes": np.array([b"a", b"b"])}, Format.COLUMNAR) == {
        "outputs": {"s": ["a", "b"], "t_bytes": [{"b64": "YQ=="}, {"b64": "Yg=="}]}
    }
    # "_bytes" only matters for strings.
    assert encode({"n_bytes": np.array([1, 2], np.int32)}, Format.COLUMNAR) == {"outputs": [1, 2]}


@pytest.mark.parametrize(
    ("array", "name"),
    [
        (np.array([1 + 2j, 2], np.complex64), "complex64"),
        (np.array([1], np.uint16), "uint16"),
        (np.array([1], np.complex128), "complex128"),
    ],
)
def test_unsupported_output_dtypes(array: np.ndarray, name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        tfs_json.encode_predict({"tensor": array}, Format.ROW)
    assert str(caught.value) == f"Failed to write JSON value for tensor type: {name}"


def test_large_output_round_trips() -> None:
    rng = np.random.default_rng(11)
    y = (rng.standard_normal((50, 40, 3)) * 10.0 ** rng.integers(-40, 38, (50, 40, 3))).astype(np.float32)
    y[0, 0, :] = [0.0, -0.0, np.nan]
    y[1, 1, :] = [np.inf, -np.inf, 1e-45]
    parsed = np.array(encode({"y": y}, Format.COLUMNAR)["outputs"], np.float32)
    assert_same(parsed, y)
    assert np.signbit(parsed[0, 0, 1])


# ---- classify / regress requests ----------------------------------------------------


def examples(body: str) -> tuple[list[dict[str, Feature]], dict[str, Feature] | None]:
    return tfs_json.decode_examples(tfs_json.loads(body.encode()))


def examples_error(body: str) -> str:
    with pytest.raises(InvalidArgument) as caught:
        examples(body)
    return str(caught.value)


def test_docs_classify_request() -> None:
    found, context = examples("""{
      "signature_name": "classify_objects",
      "examples": [
        {"image": { "b64": "aW1hZ2UgYnl0ZXM=" }, "caption": "seaside"},
        {"image": { "b64": "YXdlc29tZSBpbWFnZSBieXRlcw==" }, "caption": "mountains"}
      ]
    }""")
    assert context is None
    assert found == [
        {"image": Feature("bytes", (b"image bytes",)), "caption": Feature("bytes", (b"seaside",))},
        {"image": Feature("bytes", (b"awesome image bytes",)), "caption": Feature("bytes", (b"mountains",))},
    ]


def test_feature_kinds() -> None:
    found, context = examples("""{
      "context": {"lang": "en", "ids": [1, 2]},
      "examples": [{"i": 2, "f": 2.0, "b": [true, false], "n": [NaN, -Infinity, 1e39], "e": [],
                    "x": 1e-1, "big": 18446744073709551616, "neg": -9223372036854775808}]
    }""")
    assert context == {"lang": Feature("bytes", (b"en",)), "ids": Feature("int64", (1, 2))}
    (example,) = found
    assert example["i"] == Feature("int64", (2,))
    assert example["f"] == Feature("float", (2.0,))  # 2 and 2.0 differ
    assert example["b"] == Feature("int64", (1, 0))
    assert example["n"].kind == "float" and math.isnan(example["n"].values[0])
    assert example["n"].values[1:] == (-math.inf, math.inf)  # float32: 1e39 overflows
    assert example["e"] == Feature(None, ())
    assert example["x"] == Feature("float", (float(np.float32(0.1)),))
    assert example["big"] == Feature("float", (float(np.float32(2.0**64)),))  # past uint64: a double
    assert example["neg"] == Feature("int64", (-(2**63),))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"examples": [{"names": [null]}]}', "Feature: names has element with unexpected JSON type: Null"),
        ('{"examples": [{"names": [[1]]}]}', "Feature: names has element with unexpected JSON type: Array"),
        ('{"examples": [{"names": {"a": 1}}]}', "Feature: names has element with unexpected JSON type: Object"),
        ('{"examples": [{"names": ["a", 1]}]}', "Unexpected element type in feature: names expecting type: bytes"),
        ('{"examples": [{"names": [1, 1.5]}]}', "Unexpected element type in feature: names expecting type: int64"),
        ('{"examples": [{"names": [1.5, true]}]}', "Unexpected element type in feature: names expecting type: float"),
        (
            '{"examples": [{"names": [1, 9223372036854775808]}]}',
            "Feature: names has uint64_t element. Only int64_t is supported.",
        ),
        ('{"examples": [{"names": {"b64": "!"}}]}', "Unable to base64 decode"),
        ('{"examples": [[1]]}', "Example must be JSON object but got JSON Array"),
        ('{"examples": [1]}', "Example must be JSON object but got JSON Number"),
        ('{"context": "x", "examples": [{}]}', "Example must be JSON object but got JSON String"),
        ('{"context": [], "examples": 1}', "Example must be JSON object but got JSON Array"),  # context first
        ('{"examples": 1}', "JSON Value: {\n    \"examples\": 1\n} Expecting 'examples' value to be an list/array"),
        ('{"examples": []}', "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array"),
        (
            '{"example": []}',
            "JSON Value: {\n    \"example\": []\n} When method is classify, key 'examples' "
            "is expected and was not found",
        ),
    ],
)
def test_examples_errors(body: str, message: str) -> None:
    assert examples_error(body) == message


# ---- other bodies ----------------------------------------------------------------------------


def test_encode_classify() -> None:
    # TF's JsonFromClassificationResult (scores are float32).
    body = tfs_json.encode_classify(
        [[("car", 0.2), ("bike", 0.7), ("bus", 0.1)], [("car", 0.7), ("bike", 0.1), ("bus", 0.2)]]
    )
    assert body == (b'{"results":[[["car",0.2],["bike",0.7],["bus",0.1]],[["car",0.7],["bike",0.1],["bus",0.2]]]}')
    assert tfs_json.encode_classify([[("", 0.0), ('q"', 1 / 3)]]) == (b'{"results":[[["",0.0],["q\\"",0.333333343]]]}')
    with pytest.raises(InvalidArgument) as caught:
        tfs_json.encode_classify([])
    assert str(caught.value) == "Cannot convert empty ClassificationResults to JSON"


def test_encode_regress() -> None:
    # TF's JsonFromRegressionResult and JsonFromRegressionResultWithNonFinite.
    assert tfs_json.encode_regress([0.2, 0.9, 1.0]) == b'{"results":[0.2,0.9,1.0]}'
    assert tfs_json.encode_regress([0.2, math.inf, 1.0, -math.inf, math.nan]) == (
        b'{"results":[0.2,Infinity,1.0,-Infinity,NaN]}'
    )
    with pytest.raises(InvalidArgument) as caught:
        tfs_json.encode_regress([])
    assert str(caught.value) == "Cannot convert empty RegressionResults to JSON"


def test_encode_error() -> None:
    assert json.loads(tfs_json.encode_error('Bad key: "key"')) == {"error": 'Bad key: "key"'}
    assert json.loads(tfs_json.encode_error("Bad key: 'key'")) == {"error": "Bad key: 'key'"}
    assert json.loads(tfs_json.encode_error("lone \udcff surrogate")) == {"error": "lone ? surrogate"}


def test_encode_status() -> None:
    body = tfs_json.encode_status([(123, "AVAILABLE", "OK", ""), (7, "END", "UNKNOWN", "failed")])
    assert json.loads(body) == {
        "model_version_status": [
            {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
            {"version": "7", "state": "END", "status": {"error_code": "UNKNOWN", "error_message": "failed"}},
        ]
    }


def test_encode_metadata() -> None:
    # The shape of TF's saved_model_half_plus_two_2_versions_metadata.json golden file.
    x = TensorSpec("x:0", DType.DT_FLOAT, (-1, 1))
    signatures = {
        "serving_default": Signature({"x": x}, {"y": TensorSpec("y:0", DType.DT_FLOAT, (-1, 1))}),
        "classify_x_to_y": Signature(
            {"inputs": TensorSpec("tf_example:0", DType.DT_STRING, None)},
            {"scores": TensorSpec("y:0", DType.DT_FLOAT, (-1, 1))},
            "tensorflow/serving/classify",
        ),
    }
    body = tfs_json.encode_metadata("saved_model_half_plus_two_2_versions", 123, signatures)
    dim = [{"size": "-1", "name": ""}, {"size": "1", "name": ""}]
    float_info = {"dtype": "DT_FLOAT", "tensor_shape": {"dim": dim, "unknown_rank": False}}
    assert json.loads(body) == {
        "model_spec": {"name": "saved_model_half_plus_two_2_versions", "signature_name": "", "version": "123"},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": {
                        "inputs": {"x": {**float_info, "name": "x:0"}},
                        "outputs": {"y": {**float_info, "name": "y:0"}},
                        "method_name": "tensorflow/serving/predict",
                        "defaults": {},
                    },
                    "classify_x_to_y": {
                        "inputs": {
                            "inputs": {
                                "dtype": "DT_STRING",
                                "tensor_shape": {"dim": [], "unknown_rank": True},
                                "name": "tf_example:0",
                            }
                        },
                        "outputs": {"scores": {**float_info, "name": "y:0"}},
                        "method_name": "tensorflow/serving/classify",
                        "defaults": {},
                    },
                }
            }
        },
    }
    # Field order as in the golden file (protobuf JSON: plain fields, then the oneof).
    assert body.index(b'"dtype"') < body.index(b'"tensor_shape"') < body.index(b'"name":"x:0"')
    assert body.index(b'"signature_name"') < body.index(b'"version"')
