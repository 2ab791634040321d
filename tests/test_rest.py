"""TF Serving's REST API end to end: a real server on a free port, plain HTTP, numpy expectations.

Reference: TF Serving's REST API documentation (api_rest.md). Each test names the behaviour it checks.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto

from modelserve.testing import ServerThread, running_server

from . import onnx_models as om


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    om.write(root / "half", 1, om.half_plus_two())
    om.write(root / "half", 2, om.half_plus_two())
    om.write(root / "two", 1, om.two_in_two_out())
    om.write(root / "strings", 1, om.identity(TensorProto.STRING, ["batch"], "text", "text_bytes"))
    om.write(root / "plain_strings", 1, om.identity(TensorProto.STRING, ["batch"], "s", "t"))
    om.write(root / "ints", 1, om.identity(TensorProto.INT64, ["batch"], "i", "o"))
    om.write(root / "int32", 1, om.identity(TensorProto.INT32, ["batch"], "i", "o"))
    om.write(root / "bools", 1, om.identity(TensorProto.BOOL, ["batch"], "b", "o"))
    om.write(root / "doubles", 1, om.identity(TensorProto.DOUBLE, ["batch"], "d", "o"))
    om.write(root / "u16", 1, om.identity(TensorProto.UINT16, ["batch"], "u", "o"))
    om.write(root / "fp16", 1, om.identity(TensorProto.FLOAT16, ["batch"], "h", "o"))
    om.write(root / "mlp", 1, om.mlp(om.random_weights([4, 8, 3], seed=7)))
    om.write(root / "mlp", 7, om.mlp(om.random_weights([4, 8, 3], seed=8)))
    om.write(root / "weird name", 1, om.half_plus_two())
    names = [
        "half",
        "two",
        "strings",
        "plain_strings",
        "ints",
        "int32",
        "bools",
        "doubles",
        "u16",
        "fp16",
        "weird name",
    ]
    entries = [f'config {{ name: "{n}" base_path: "{root / n}" model_platform: "tensorflow" }}' for n in names]
    entries.append(
        f'config {{ name: "mlp" base_path: "{root / "mlp"}" model_platform: "onnx" '
        'model_version_policy { all {} } version_labels { key: "stable" value: 1 } '
        'version_labels { key: "canary" value: 7 } }'
    )
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    return root


@pytest.fixture(scope="module")
def server(repo: Path, frontend_processes: int) -> Iterator[ServerThread]:
    with running_server(
        f"--model_config_file={repo / 'models.config'}",
        "--rest_api_max_body_bytes=1000000",
        frontend_processes=frontend_processes,
    ) as s:
        yield s


def request(
    server: ServerThread, method: str, path: str, body: bytes | str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=30)
    try:
        data = body.encode() if isinstance(body, str) else body
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def post(server: ServerThread, path: str, doc: Any) -> tuple[int, Any]:
    status, _, body = request(server, "POST", path, json.dumps(doc))
    return status, json.loads(body)


def get(server: ServerThread, path: str) -> tuple[int, Any]:
    status, _, body = request(server, "GET", path)
    return status, json.loads(body)


def error_of(server: ServerThread, method: str, path: str, body: bytes | str | None = None) -> tuple[int, str]:
    status, headers, raw = request(server, method, path, body)
    assert headers["content-type"] == "application/json"
    doc = json.loads(raw)
    assert list(doc) == ["error"]
    return status, doc["error"]


# ---- the acceptance example --------------------------------------------------------


def test_half_plus_two_predict_and_status(server: ServerThread) -> None:
    assert post(server, "/v1/models/half:predict", {"instances": [1.0, 2.0, 5.0]}) == (
        200,
        {"predictions": [2.5, 3.0, 4.5]},
    )
    status, doc = get(server, "/v1/models/half")
    assert status == 200
    assert doc == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


# ---- status and metadata ------------------------------------------------------


def test_status_of_one_version_and_label_is_ignored(server: ServerThread) -> None:
    assert get(server, "/v1/models/mlp/versions/1")[1]["model_version_status"][0]["version"] == "1"
    # The status endpoint ignores the label and lists every version, highest first.
    status, doc = get(server, "/v1/models/mlp/labels/stable")
    assert status == 200
    assert [v["version"] for v in doc["model_version_status"]] == ["7", "1"]


def test_status_errors(server: ServerThread) -> None:
    assert error_of(server, "GET", "/v1/models/nope") == (404, "Could not find any versions of model nope")
    assert error_of(server, "GET", "/v1/models/mlp/versions/3") == (404, "Could not find version 3 of model mlp")
    assert error_of(server, "GET", "/v1/models") == (400, "Missing model name in request.")


def test_metadata_renders_signature_def_like_tf_serving(server: ServerThread) -> None:
    status, doc = get(server, "/v1/models/two/metadata")
    assert status == 200
    assert doc["model_spec"] == {"name": "two", "signature_name": "", "version": "1"}
    sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["a"] == {
        "dtype": "DT_FLOAT",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "2", "name": ""}], "unknown_rank": False},
        "name": "a",
    }
    assert sig["inputs"]["b"]["dtype"] == "DT_INT64"
    assert sig["outputs"]["twice_b"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    # unknown rank (half_plus_two's x has no shape)
    half = get(server, "/v1/models/half/metadata")[1]["metadata"]["signature_def"]["signature_def"]
    assert half["serving_default"]["inputs"]["x"]["tensor_shape"] == {"dim": [], "unknown_rank": True}


def test_metadata_resolves_versions_and_labels(server: ServerThread) -> None:
    assert get(server, "/v1/models/mlp/labels/stable/metadata")[1]["model_spec"]["version"] == "1"
    assert get(server, "/v1/models/mlp/labels/canary/metadata")[1]["model_spec"]["version"] == "7"
    assert get(server, "/v1/models/mlp/versions/1/metadata")[1]["model_spec"]["version"] == "1"
    assert error_of(server, "GET", "/v1/models/mlp/labels/beta/metadata") == (
        400,
        "Unrecognized servable version label: beta",
    )


# ---- predict formats ------------------------------------------------------------


def test_row_and_columnar_formats(server: ServerThread) -> None:
    x = [[1.0], [2.0]]
    assert post(server, "/v1/models/half:predict", {"instances": x}) == (200, {"predictions": [[2.5], [3.0]]})
    assert post(server, "/v1/models/half:predict", {"inputs": x}) == (200, {"outputs": [[2.5], [3.0]]})
    # a bare scalar in columnar form is a rank-0 tensor and prints as a bare value
    assert post(server, "/v1/models/half:predict", {"inputs": 4.0}) == (200, {"outputs": 4.0})
    # the single input may be named
    assert post(server, "/v1/models/half:predict", {"instances": [{"x": 2.0}]}) == (200, {"predictions": [3.0]})
    assert post(server, "/v1/models/half:predict", {"inputs": {"x": [6.0]}}) == (200, {"outputs": [5.0]})


def test_several_inputs_and_outputs(server: ServerThread) -> None:
    a = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    b = np.array([10, 2**40], dtype=np.int64)
    status, doc = post(
        server, "/v1/models/two:predict", {"instances": [{"a": a[i].tolist(), "b": int(b[i])} for i in range(2)]}
    )
    assert status == 200
    expected_sum = a + b.astype(np.float32)[:, None]
    # float32 outputs print with 9 significant digits at most: compare in float32
    assert [sorted(p) for p in doc["predictions"]] == [["sum", "twice_b"]] * 2
    np.testing.assert_array_equal(np.array([p["sum"] for p in doc["predictions"]], dtype=np.float32), expected_sum)
    assert [p["twice_b"] for p in doc["predictions"]] == (2 * b).tolist()
    status, doc = post(server, "/v1/models/two:predict", {"inputs": {"a": a.tolist(), "b": b.tolist(), "extra": 1}})
    assert status == 200
    np.testing.assert_array_equal(np.array(doc["outputs"]["sum"], dtype=np.float32), expected_sum)
    assert doc["outputs"]["twice_b"] == (2 * b).tolist()


def test_mlp_matches_numpy_for_each_version_and_label(server: ServerThread) -> None:
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    for path, seed in [("mlp/versions/1", 7), ("mlp/versions/7", 8), ("mlp/labels/stable", 7), ("mlp", 8)]:
        status, doc = post(server, f"/v1/models/{path}:predict", {"instances": x.tolist()})
        assert status == 200
        expected = om.mlp_reference(om.random_weights([4, 8, 3], seed=seed), x)
        np.testing.assert_allclose(np.array(doc["predictions"]), expected, rtol=1e-5, atol=1e-5)


def test_b64_strings_and_bytes_outputs(server: ServerThread) -> None:
    raw = b"\x00\x01binary"
    status, doc = post(
        server, "/v1/models/strings:predict", {"instances": [{"b64": base64.b64encode(raw).decode()}, "plain"]}
    )
    assert status == 200
    # the output alias ends in _bytes: every string comes back as {"b64": ...}
    assert doc == {"predictions": [{"b64": "AAFiaW5hcnk="}, {"b64": "cGxhaW4="}]}
    # onnxruntime holds strings as UTF-8 text: other bytes get a clear 400
    status, message = error_of(server, "POST", "/v1/models/strings:predict", '{"instances": [{"b64": "/w=="}]}')
    assert status == 400 and "UTF-8" in message
    assert post(server, "/v1/models/plain_strings:predict", {"instances": ["héllo", "x"]}) == (
        200,
        {"predictions": ["héllo", "x"]},
    )


def test_int64_is_exact_and_bools_and_doubles(server: ServerThread) -> None:
    big = 2**53 + 1  # not representable in float64
    status, _, body = request(server, "POST", "/v1/models/ints:predict", json.dumps({"instances": [big, -(2**63)]}))
    assert status == 200
    assert json.loads(body) == {"predictions": [big, -(2**63)]}
    assert post(server, "/v1/models/bools:predict", {"instances": [True, False]}) == (
        200,
        {"predictions": [True, False]},
    )
    status, _, body = request(server, "POST", "/v1/models/doubles:predict", '{"instances": [0.1, 1435774380]}')
    assert body.replace(b" ", b"").replace(b"\n", b"") == b'{"predictions":[0.1,1435774380.0]}'


def test_nan_and_infinity_tokens(server: ServerThread) -> None:
    status, _, body = request(server, "POST", "/v1/models/half:predict", '{"instances": [NaN, Infinity, -Infinity]}')
    assert status == 200
    compact = body.replace(b" ", b"").replace(b"\n", b"")
    assert compact == b'{"predictions":[NaN,Infinity,-Infinity]}'
    values = json.loads(body)["predictions"]
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf]


def test_float32_output_formatting(server: ServerThread) -> None:
    # y = 0.5 x + 2: choose x so that y hits TF Serving's formatting cases
    ys = np.array([9000000, 999999, 0.5, 3, 1 / 3, 123456789], dtype=np.float32)
    xs = ((ys.astype(np.float64) - 2) * 2).tolist()
    status, _, body = request(server, "POST", "/v1/models/half:predict", json.dumps({"inputs": xs}))
    assert status == 200
    got = body.replace(b" ", b"").replace(b"\n", b"").decode()
    expected_y = (np.array(xs, dtype=np.float32) * np.float32(0.5) + np.float32(2)).tolist()
    assert json.loads(got)["outputs"] == pytest.approx(expected_y, rel=1e-6)
    assert got.startswith('{"outputs":[9e+06,999999.0,')


def test_half_precision_is_served_as_json_numbers(server: ServerThread) -> None:
    # An extension: TF Serving answers 501 for DT_HALF in JSON (its issue #1639).
    assert post(server, "/v1/models/fp16:predict", {"instances": [1.5, -2.0]}) == (200, {"predictions": [1.5, -2.0]})


def test_empty_batch(server: ServerThread) -> None:
    # an empty tensor is a tensor: shape [0] in, shape [0] out
    assert post(server, "/v1/models/half:predict", {"inputs": []}) == (200, {"outputs": []})
    # JSON cannot spell shape [0, 2]; [] is [0], which onnxruntime refuses for the model's [-1, 2]
    # in its own words (no signature-shape check runs before it, as none does in TF Serving)
    status, message = error_of(server, "POST", "/v1/models/two:predict", '{"inputs": {"a": [], "b": []}}')
    assert (status, message) == (
        400,
        "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Invalid rank for input: a Got: 1 Expected: 2 "
        "Please fix either the inputs/outputs or the model.",
    )


# ---- errors -------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/models/half/versions/HELLO:predict"),
        ("POST", "/v1/models/half/version/1:predict"),
        ("POST", "/v1/models/half/label/x:predict"),
        ("POST", "/v1/models/half/versions/1/labels/x:predict"),
        ("POST", "/v1/models/half:PREDICT"),
        ("POST", "/v1/models/half:predict/"),
        ("POST", "/v1/models/half/metadata"),
        ("GET", "/v1/models/half:predict"),
        ("PUT", "/v1/models/half:predict"),
        ("DELETE", "/v1/models/half"),
    ],
)
def test_malformed_urls(server: ServerThread, method: str, path: str) -> None:
    assert error_of(server, method, path, "{}") == (400, f"Malformed request: {method} {path}")


def test_version_must_fit_int64(server: ServerThread) -> None:
    path = "/v1/models/half/versions/18446744073709551615:regress"
    assert error_of(server, "POST", path, "{}") == (400, "Failed to convert version: 18446744073709551615 to numeric.")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_version_of_thousands_of_digits_is_the_clients_mistake(server: ServerThread, method: str) -> None:
    # Python's int() refuses strings over 4300 digits with a ValueError of its own: that was a 500
    # carrying Python's text. TF Serving answers 400 with its own text; leading zeros still count for nothing.
    digits = "9" * 5000
    suffix = ":predict" if method == "POST" else ""
    assert error_of(server, method, f"/v1/models/half/versions/{digits}{suffix}", "{}") == (
        400,
        f"Failed to convert version: {digits} to numeric.",
    )
    assert get(server, f"/v1/models/half/versions/{'0' * 5000}2")[0] == 200


def test_prefix_is_case_insensitive_and_names_are_percent_decoded(server: ServerThread) -> None:
    assert post(server, "/V1/MODELS/half:predict", {"instances": [0.0]}) == (200, {"predictions": [2.0]})
    assert post(server, "/v1/models/weird%20name:predict", {"instances": [0.0]}) == (200, {"predictions": [2.0]})


def test_lookup_errors(server: ServerThread) -> None:
    body = '{"instances": [1.0]}'
    assert error_of(server, "POST", "/v1/models/nope:predict", body) == (
        404,
        "Servable not found for request: Latest(nope)",
    )
    assert error_of(server, "POST", "/v1/models/half/versions/9:predict", body) == (
        404,
        "Servable not found for request: Specific(half, 9)",
    )
    assert error_of(server, "POST", "/v1/models/half/labels/beta:predict", body) == (
        400,
        "Unrecognized servable version label: beta",
    )
    assert error_of(server, "POST", "/v1/models/half:predict", '{"signature_name": "other", "instances": [1.0]}') == (
        400,
        'Serving signature name: "other" not found in signature def',
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("", "JSON Parse error: The document is empty"),
        ("{", "JSON Parse error"),
        ("[1, 2]", "Is not object"),
        ('{"signature_name": 5, "instances": [1]}', "'signature_name' key must be a string value"),
        ('{"foo": 1}', "Missing 'inputs' or 'instances' key"),
        ('{"instances": [1], "inputs": [1]}', "expecting only one of 'inputs' or 'instances' keys to exist"),
        ('{"instances": 1}', "to be an list/array"),
        ('{"instances": []}', "No values in 'instances' array"),
        ('{"instances": [[1.0], [2.0, 3.0]]}', "Expecting tensor size: 1 but got: 2"),
        ('{"inputs": [[1.0], [2.0, 3.0]]}', "Encountered list at unexpected size: 2 at level: 1 expected size: 1"),
        ('{"instances": ["a"]}', "is not of expected type: float"),
        ('{"instances": [null]}', "Type: Null is not of expected type: float"),
        ('{"instances": [true]}', "Type: True is not of expected type: float"),
        ('{"instances": [{"y": 1.0}]}', "does not have named input: y"),
        ("[" * 100000, "JSON Parse error"),
    ],
)
def test_bad_json_bodies(server: ServerThread, body: str, fragment: str) -> None:
    status, message = error_of(server, "POST", "/v1/models/half:predict", body)
    assert status == 400
    assert fragment in message


def test_multi_input_errors(server: ServerThread) -> None:
    status, message = error_of(server, "POST", "/v1/models/two:predict", '{"instances": [1.0]}')
    assert (status, message) == (
        400,
        "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
        "tensorinfo_map",
    )
    status, message = error_of(server, "POST", "/v1/models/two:predict", '{"inputs": {"a": [[1.0, 2.0]]}}')
    assert (status, message) == (400, "Missing named input: b in 'inputs' object.")


def test_integer_rules(server: ServerThread) -> None:
    assert error_of(server, "POST", "/v1/models/int32:predict", '{"instances": [1.0]}')[1].endswith(
        "is not of expected type: int32"
    )
    assert error_of(server, "POST", "/v1/models/int32:predict", '{"instances": [3000000000]}')[0] == 400
    assert error_of(server, "POST", "/v1/models/ints:predict", '{"instances": [9223372036854775808]}')[0] == 400
    assert post(server, "/v1/models/int32:predict", {"instances": [-5, 7]}) == (200, {"predictions": [-5, 7]})


def test_unsupported_dtype_is_501(server: ServerThread) -> None:
    status, message = error_of(server, "POST", "/v1/models/u16:predict", '{"inputs": [1]}')
    assert status == 501
    assert message.startswith("Conversion of JSON Value: 1 to type: uint16")
    # In row format TF Serving wraps every element error as INVALID_ARGUMENT.
    status, message = error_of(server, "POST", "/v1/models/u16:predict", '{"instances": [1]}')
    assert (status, message) == (
        400,
        "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: "
        "Conversion of JSON Value: 1 to type: uint16",
    )


def test_shape_mismatch_is_a_clear_400(server: ServerThread) -> None:
    status, message = error_of(
        server, "POST", "/v1/models/two:predict", '{"inputs": {"a": [[1.0, 2.0, 3.0]], "b": [1]}}'
    )
    assert status == 400
    # onnxruntime's own verdict, as the model's runtime gives it in TF Serving (no signature-shape check first)
    assert (
        "INVALID_ARGUMENT : Got invalid dimensions for input: a for the following indices\n index: 1 Got: 3 Expected: 2"
        in message
    )


def test_classify_and_regress_on_a_predict_signature(server: ServerThread) -> None:
    # No DT_STRING "inputs": features feed the inputs of the same name, the sole output is read
    # as scores / regression values (docs/grpc.md).
    status, doc = post(server, "/v1/models/half:classify", {"examples": [{"x": 1.0}, {"x": 3.0}]})
    assert (status, doc) == (200, {"results": [[["", 2.5]], [["", 3.5]]]})
    assert post(server, "/v1/models/half:regress", {"examples": [{"x": 1.0}]}) == (200, {"results": [2.5]})
    status, message = error_of(server, "POST", "/v1/models/half:regress", '{"examples": [{"z": 1.0}]}')
    assert status == 400 and "no feature 'x'" in message
    assert error_of(server, "POST", "/v1/models/half:regress", '{"signature_name": "s", "examples": [{}]}') == (
        400,
        "No signature was found with the name: s",
    )
    status, message = error_of(server, "POST", "/v1/models/half:classify", "{}")
    assert "When method is classify, key 'examples' is expected and was not found" in message


# ---- HTTP behaviour -----------------------------------------------------------------


def test_non_v1_paths_get_an_html_404(server: ServerThread) -> None:
    status, headers, _ = request(server, "GET", "/foo")
    assert status == 404
    assert headers["content-type"].startswith("text/html")


def test_gzip_request_body(server: ServerThread) -> None:
    body = gzip.compress(b'{"instances": [2.0]}')
    status, _, raw = request(server, "POST", "/v1/models/half:predict", body, {"Content-Encoding": "gzip"})
    assert (status, json.loads(raw)) == (200, {"predictions": [3.0]})


def test_body_over_the_limit_gets_413_and_the_server_goes_on(server: ServerThread) -> None:
    body = '{"instances": [' + ",".join(["1.0"] * 300000) + "]}"
    status, message = error_of(server, "POST", "/v1/models/half:predict", body)
    assert status == 413 and "limit" in message
    assert post(server, "/v1/models/half:predict", {"instances": [0.0]}) == (200, {"predictions": [2.0]})


def test_options_preflight(server: ServerThread) -> None:
    assert request(server, "OPTIONS", "/v1/models/half:predict", None, {"Origin": "http://example.com"})[0] == 200
    assert request(server, "OPTIONS", "/v1/models/half:predict")[0] == 400


def test_responses_are_json_without_cors_by_default(server: ServerThread) -> None:
    _, headers, _ = request(server, "GET", "/v1/models/half")
    assert headers["content-type"] == "application/json"
    assert "access-control-allow-origin" not in headers


def test_cors_flag_adds_headers(repo: Path) -> None:
    with running_server(
        f"--model_base_path={repo / 'half'}", "--model_name=half", "--rest_api_enable_cors_support"
    ) as s:
        _, headers, _ = request(s, "GET", "/v1/models/half")
        assert headers["access-control-allow-origin"] == "*"
        assert headers["access-control-allow-methods"] == "POST, GET"
        assert headers["access-control-allow-headers"] == "Content-Type"


def test_bad_requests_do_not_harm_the_server(server: ServerThread) -> None:
    bad = [
        "",
        "{",
        "[",
        '{"instances": [[[[[[' * 50,
        '{"inputs": {"x": "str"}}',
        '{"instances": [' + "[" * 5000 + "]" * 5000 + "]}",
        "\xff\xfe",
        '{"instances": [[1], 2]}',
        '{"instances": [' + "9" * 5000 + "]}",
    ]
    for body in bad:
        status, _, raw = request(server, "POST", "/v1/models/half:predict", body)
        assert status < 500, (body[:40], status, raw[:200])
        assert status == 200 or "error" in json.loads(raw)
    assert post(server, "/v1/models/half:predict", {"instances": [1.0, 2.0, 5.0]}) == (
        200,
        {"predictions": [2.5, 3.0, 4.5]},
    )


def test_rest_timeout_answers_504(tmp_path: Path) -> None:
    om.write(tmp_path / "slow", 1, om.slow(steps=20))
    with running_server(
        f"--model_base_path={tmp_path / 'slow'}", "--model_name=slow", "--rest_api_timeout_in_ms=1"
    ) as s:
        x = np.ones((512, 512), dtype=np.float32)
        status, message = error_of(s, "POST", "/v1/models/slow:predict", json.dumps({"inputs": x.tolist()}))
        assert status == 504 and "Deadline" in message
    # with the default 30 s deadline the same request is answered
    with running_server(f"--model_base_path={tmp_path / 'slow'}", "--model_name=slow") as s:
        status, doc = post(s, "/v1/models/slow:predict", {"inputs": x.tolist()})
        assert status == 200
        np.testing.assert_allclose(np.array(doc["outputs"]), x * 0.5**20, rtol=1e-6)
