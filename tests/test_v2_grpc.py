"""KServe V2 over gRPC (``inference.GRPCInferenceService``) against the real server, through the
private-pool stubs (tritonclient's own tests are in test_v2_grpc_tritonclient.py, protobuf-6 venv)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from modelserve.codecs.v2.proto import to_raw
from modelserve.protos import INFERENCE_SERVICE, Stub, pb
from modelserve.testing import ServerThread, running_server

from . import onnx_models as om
from .traffic import steady_traffic

ADMIN = "admin-token-0123456789abcdef"
INFER = "infer-token-0123456789abcdef"
NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}  # BF16: onnxruntime takes no bfloat16 numpy input (tests/onnx_models.py); test_v2_proto.py covers it


def repository(root: Path) -> Path:
    om.write(root / "simple", 1, om.simple())
    om.write(root / "ids", 1, om.identities())
    om.write(root / "typed_ids", 1, om.identities([d for d in NUMPY if d != "FP16"]))  # FP16 travels raw only
    om.write(root / "spare", 1, om.half_plus_two())
    for version in (1, 2):
        om.write(root / "versions", version, om.version_marker(version))
    entries = [
        f'config {{ name: "{n}" base_path: "{root / n}" model_platform: "onnx" }}'
        for n in ("ids", "simple", "typed_ids")
    ]
    entries.append(f'config {{ name: "spare" base_path: "{root / "spare"}" model_platform: "onnx" }}')
    entries.append(
        f'config {{ name: "versions" base_path: "{root / "versions"}" model_platform: "onnx" '
        'model_version_policy { all {} } version_labels { key: "stable" value: 1 } }'
    )
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    return config


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return repository(tmp_path_factory.mktemp("v2grpc"))


@pytest.fixture(scope="module", params=["threaded", "asyncio"])
def server(request: pytest.FixtureRequest, config: Path) -> Iterator[ServerThread]:
    """Both gRPC server models: grpcio's threaded server, and grpc.aio (which --enable_batching picks)."""
    batching = ("--enable_batching",) if request.param == "asyncio" else ()
    with running_server(f"--model_config_file={config}", *batching) as s:
        yield s


@pytest.fixture
def stub(server: ServerThread) -> Iterator[Any]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield Stub(channel, INFERENCE_SERVICE)


def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    code: grpc.StatusCode = info.value.code()
    return code


def raw_request(model: str, arrays: dict[str, np.ndarray], datatypes: dict[str, str], **fields: Any) -> Any:
    request = pb.ModelInferRequest(model_name=model, **fields)
    for name, array in arrays.items():
        request.inputs.add(name=name, datatype=datatypes[name], shape=array.shape)
        request.raw_input_contents.append(to_raw(array))
    return request


def outputs_of(response: Any) -> dict[str, np.ndarray]:
    """A ModelInferResponse's raw outputs as arrays, read here independently of the server's codec."""
    arrays = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        if tensor.datatype == "BYTES":
            items, pos = [], 0
            while pos < len(raw):
                length = int.from_bytes(raw[pos : pos + 4], "little")
                items.append(raw[pos + 4 : pos + 4 + length])
                pos += 4 + length
            array = np.array(items, dtype=object)
        else:
            array = np.frombuffer(raw, dtype=NUMPY[tensor.datatype])
        arrays[tensor.name] = array.reshape(tuple(tensor.shape))
    return arrays


def simple_inputs() -> tuple[np.ndarray, np.ndarray]:
    a = np.arange(32, dtype=np.float32).reshape(2, 16)
    return a, np.full((2, 16), 1.5, dtype=np.float32)


def sample(datatype: str) -> np.ndarray:
    values = np.arange(6).reshape(2, 3)
    if datatype == "BYTES":
        return np.array([[b"a", b"", b"\x00z"], [b"long" * 50, b"e", "\u00e9".encode()]], dtype=object)
    if datatype == "BOOL":
        return values % 2 == 0
    return (values * 7 + 1).astype(NUMPY[datatype])


# --- health and metadata ------------------------------------------------------------------------


def test_health_and_server_metadata(stub: Any) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="simple"), timeout=10).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="versions", version="1"), timeout=10).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="versions", version="7"), timeout=10).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="nope"), timeout=10).ready
    bad = pb.ModelReadyRequest(name="simple", version="one")
    assert code_of(lambda: stub.ModelReady(bad, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    server = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
    assert server.name == "modelserve"
    assert {"model_repository", "binary_tensor_data"} <= set(server.extensions)


def test_model_metadata(stub: Any) -> None:
    answer = stub.ModelMetadata(pb.ModelMetadataRequest(name="simple"), timeout=10)
    assert (answer.name, list(answer.versions), answer.platform) == ("simple", ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in answer.inputs] == [
        ("INPUT0", "FP32", [-1, 16]),
        ("INPUT1", "FP32", [-1, 16]),
    ]
    assert {t.name for t in answer.outputs} == {"OUTPUT0", "OUTPUT1"}
    versions = stub.ModelMetadata(pb.ModelMetadataRequest(name="versions"), timeout=10)
    assert list(versions.versions) == ["1", "2"]
    ids = stub.ModelMetadata(pb.ModelMetadataRequest(name="ids"), timeout=10)
    assert {t.datatype for t in ids.inputs} == set(NUMPY)
    missing = pb.ModelMetadataRequest(name="nope")
    assert code_of(lambda: stub.ModelMetadata(missing, timeout=10)) == grpc.StatusCode.NOT_FOUND


# --- inference ----------------------------------------------------------------------------------


def test_simple_raw_and_typed_answer_raw(stub: Any) -> None:
    a, b = simple_inputs()
    fp32 = {"INPUT0": "FP32", "INPUT1": "FP32"}
    raw = stub.ModelInfer(raw_request("simple", {"INPUT0": a, "INPUT1": b}, fp32, id="req-7"), timeout=10)
    assert (raw.model_name, raw.model_version, raw.id) == ("simple", "1", "req-7")
    assert not any(t.HasField("contents") for t in raw.outputs)  # answered raw, as Triton
    got = outputs_of(raw)
    np.testing.assert_array_equal(got["OUTPUT0"], a + b)
    np.testing.assert_array_equal(got["OUTPUT1"], a - b)

    typed = pb.ModelInferRequest(model_name="simple")
    for name, array in (("INPUT0", a), ("INPUT1", b)):
        typed.inputs.add(name=name, datatype="FP32", shape=array.shape).contents.fp32_contents.extend(array.ravel())
    typed.outputs.add(name="OUTPUT1")
    only = outputs_of(stub.ModelInfer(typed, timeout=10))
    assert list(only) == ["OUTPUT1"]
    np.testing.assert_array_equal(only["OUTPUT1"], a - b)


def test_every_datatype_raw_and_typed(stub: Any) -> None:
    arrays = {f"x_{d}": sample(d) for d in NUMPY}
    raw = stub.ModelInfer(raw_request("ids", arrays, {f"x_{d}": d for d in NUMPY}), timeout=10)
    got = outputs_of(raw)
    for datatype in NUMPY:
        assert next(t.datatype for t in raw.outputs if t.name == f"y_{datatype}") == datatype
        np.testing.assert_array_equal(got[f"y_{datatype}"], sample(datatype), err_msg=datatype)

    # Typed contents: every datatype that has a field (FP16 and BF16 travel raw only).
    typed = pb.ModelInferRequest(model_name="typed_ids")
    fields = {
        "BOOL": "bool_contents",
        "UINT8": "uint_contents",
        "UINT16": "uint_contents",
        "UINT32": "uint_contents",
        "UINT64": "uint64_contents",
        "INT8": "int_contents",
        "INT16": "int_contents",
        "INT32": "int_contents",
        "INT64": "int64_contents",
        "FP32": "fp32_contents",
        "FP64": "fp64_contents",
        "BYTES": "bytes_contents",
    }
    for datatype, field in fields.items():
        tensor = typed.inputs.add(name=f"x_{datatype}", datatype=datatype, shape=[2, 3])
        getattr(tensor.contents, field).extend(sample(datatype).ravel().tolist())
        typed.outputs.add(name=f"y_{datatype}")
    got = outputs_of(stub.ModelInfer(typed, timeout=10))
    for datatype in fields:
        np.testing.assert_array_equal(got[f"y_{datatype}"], sample(datatype), err_msg=datatype)


def test_errors(stub: Any) -> None:
    a, b = simple_inputs()
    fp32 = {"INPUT0": "FP32", "INPUT1": "FP32"}

    def infer(request: Any) -> Any:
        return stub.ModelInfer(request, timeout=10)

    def refused(request: Any, code: grpc.StatusCode, text: str) -> None:
        with pytest.raises(grpc.RpcError) as info:
            infer(request)
        assert info.value.code() == code, info.value.details()
        assert text in info.value.details()

    good = raw_request("simple", {"INPUT0": a, "INPUT1": b}, fp32)
    mixed = pb.ModelInferRequest()
    mixed.CopyFrom(good)
    mixed.inputs[0].contents.fp32_contents.extend(a.ravel())
    refused(mixed, grpc.StatusCode.INVALID_ARGUMENT, "contents field must not be specified")
    short = raw_request("simple", {"INPUT0": a, "INPUT1": b[:1]}, fp32)
    short.inputs[1].shape[:] = [2, 16]
    refused(short, grpc.StatusCode.INVALID_ARGUMENT, "needs 128")
    one_raw = pb.ModelInferRequest()
    one_raw.CopyFrom(good)
    del one_raw.raw_input_contents[1]
    refused(one_raw, grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents")
    ints = raw_request("simple", {"INPUT0": a.astype(np.int32), "INPUT1": b}, {"INPUT0": "INT32", "INPUT1": "FP32"})
    refused(ints, grpc.StatusCode.INVALID_ARGUMENT, "unexpected datatype INT32 for input 'INPUT0', expecting FP32")
    refused(
        raw_request("simple", {"INPUT0": a, "INPUT1": b}, {"INPUT0": "FLOAT", "INPUT1": "FP32"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FLOAT",
    )
    refused(raw_request("simple", {"INPUT0": a}, fp32), grpc.StatusCode.INVALID_ARGUMENT, "INPUT1")
    half = pb.ModelInferRequest(model_name="ids")
    half.inputs.add(name="x_FP16", datatype="FP16", shape=[1])
    refused(half, grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents")
    count = pb.ModelInferRequest(model_name="simple")
    count.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16]).contents.fp32_contents.extend([1.0])
    refused(count, grpc.StatusCode.INVALID_ARGUMENT, "needs 16 values, 1 given")
    negative = raw_request("simple", {"INPUT0": a, "INPUT1": b}, fp32)
    negative.inputs[0].shape[:] = [-2, -16]
    refused(negative, grpc.StatusCode.INVALID_ARGUMENT, "negative")
    unknown_output = pb.ModelInferRequest()
    unknown_output.CopyFrom(good)
    unknown_output.outputs.add(name="OUTPUT9")
    refused(unknown_output, grpc.StatusCode.INVALID_ARGUMENT, "OUTPUT9")
    refused(raw_request("nope", {"INPUT0": a}, fp32), grpc.StatusCode.NOT_FOUND, "nope")
    refused(raw_request("simple", {"INPUT0": a}, fp32, model_version="3"), grpc.StatusCode.NOT_FOUND, "3")
    refused(raw_request("simple", {"INPUT0": a}, fp32, model_version="x"), grpc.StatusCode.INVALID_ARGUMENT, "x")
    signature = pb.ModelInferRequest()
    signature.CopyFrom(good)
    signature.parameters["signature_name"].string_param = "other"
    refused(signature, grpc.StatusCode.FAILED_PRECONDITION, "other")
    # The server is unharmed.
    np.testing.assert_array_equal(outputs_of(infer(good))["OUTPUT0"], a + b)


def test_versions_and_labels(stub: Any) -> None:
    x = np.zeros(3, dtype=np.float32)

    def answer(**fields: Any) -> tuple[str, float]:
        labels = fields.pop("label", None)
        request = raw_request("versions", {"x": x}, {"x": "FP32"}, **fields)
        if labels is not None:
            request.parameters["version_label"].string_param = labels
        response = stub.ModelInfer(request, timeout=10)
        return response.model_version, float(outputs_of(response)["y"][0])

    assert answer() == ("2", 2.0)  # the highest ready version
    assert answer(model_version="1") == ("1", 1.0)
    assert answer(label="stable") == ("1", 1.0)
    both = raw_request("versions", {"x": x}, {"x": "FP32"}, model_version="2")
    both.parameters["version_label"].string_param = "stable"
    assert code_of(lambda: stub.ModelInfer(both, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT


def test_stream_answers_each_request_in_order(stub: Any) -> None:
    a, b = simple_inputs()
    fp32 = {"INPUT0": "FP32", "INPUT1": "FP32"}
    requests = [
        raw_request("simple", {"INPUT0": a, "INPUT1": b}, fp32, id="one"),
        raw_request("simple", {"INPUT0": a}, fp32, id="two"),  # INPUT1 is missing
        raw_request("nope", {"INPUT0": a}, fp32, id="three"),
        raw_request("simple", {"INPUT0": b, "INPUT1": a}, fp32, id="four"),
    ]
    answers = list(stub.ModelStreamInfer(iter(requests), timeout=20))
    assert [m.infer_response.id for m in answers] == ["one", "two", "three", "four"]
    assert [bool(m.error_message) for m in answers] == [False, True, True, False]
    assert "INPUT1" in answers[1].error_message
    np.testing.assert_array_equal(outputs_of(answers[0].infer_response)["OUTPUT1"], a - b)
    np.testing.assert_array_equal(outputs_of(answers[3].infer_response)["OUTPUT1"], b - a)


# --- the model repository -------------------------------------------------------------------------


def index(stub: Any, ready: bool = False) -> dict[tuple[str, str], tuple[str, str]]:
    answer = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=ready), timeout=10)
    return {(m.name, m.version): (m.state, m.reason) for m in answer.models}


def test_repository_unload_and_load_leave_other_models_alone(stub: Any) -> None:
    assert index(stub)[("spare", "1")] == ("READY", "")
    assert ("versions", "2") in index(stub, ready=True)
    a, b = simple_inputs()
    request = raw_request("simple", {"INPUT0": a, "INPUT1": b}, {"INPUT0": "FP32", "INPUT1": "FP32"})

    def traffic() -> None:  # another model, served all along
        np.testing.assert_array_equal(outputs_of(stub.ModelInfer(request, timeout=10))["OUTPUT0"], a + b)

    with steady_traffic(traffic):
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="spare"), timeout=30)
        assert index(stub)[("spare", "1")] == ("UNAVAILABLE", "unloaded")
        assert ("spare", "1") not in index(stub, ready=True)
        assert not stub.ModelReady(pb.ModelReadyRequest(name="spare"), timeout=10).ready
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready  # asked for: still ready
        x = raw_request("spare", {"x": np.ones(2, np.float32)}, {"x": "FP32"})
        assert code_of(lambda: stub.ModelInfer(x, timeout=10)) == grpc.StatusCode.NOT_FOUND
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="spare"), timeout=30)
        assert index(stub)[("spare", "1")] == ("READY", "")
        np.testing.assert_array_equal(outputs_of(stub.ModelInfer(x, timeout=10))["y"], [2.5, 2.5])
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="spare"), timeout=30)  # loaded: a no-op
        assert stub.ModelReady(pb.ModelReadyRequest(name="spare"), timeout=10).ready
    for call, message in (
        (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="nope")),
        (stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="nope")),
    ):
        assert code_of(lambda c=call, m=message: c(m, timeout=10)) == grpc.StatusCode.NOT_FOUND
    config_override = pb.RepositoryModelLoadRequest(model_name="spare")
    config_override.parameters["config"].string_param = "{}"
    assert code_of(lambda: stub.RepositoryModelLoad(config_override, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT


def test_repository_needs_admin(config: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ADMIN} admin\n{INFER} infer\n")
    with (
        running_server(f"--model_config_file={config}", f"--auth_token_file={tokens}") as s,
        grpc.insecure_channel(s.grpc_target) as channel,
    ):
        stub = Stub(channel, INFERENCE_SERVICE)

        def as_(token: str) -> tuple[tuple[str, str]]:
            return (("authorization", f"Bearer {token}"),)

        unload = pb.RepositoryModelUnloadRequest(model_name="spare")
        assert code_of(lambda: stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert code_of(lambda: stub.RepositoryModelUnload(unload, timeout=10, metadata=as_(INFER))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert stub.ModelReady(pb.ModelReadyRequest(name="spare"), timeout=10, metadata=as_(INFER)).ready
        stub.RepositoryModelUnload(unload, timeout=30, metadata=as_(ADMIN))
        assert not stub.ModelReady(pb.ModelReadyRequest(name="spare"), timeout=10, metadata=as_(INFER)).ready
    with (
        running_server(f"--model_config_file={config}", "--enable_management_api=false") as s,
        grpc.insecure_channel(s.grpc_target) as channel,
    ):
        stub = Stub(channel, INFERENCE_SERVICE)
        assert code_of(lambda: stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)) == (
            grpc.StatusCode.UNIMPLEMENTED
        )
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready


def test_priority_and_timeout_parameters_are_read_as_on_rest(stub: Any) -> None:
    """Triton's ``priority`` and ``timeout`` request parameters (int64 or uint64) queue a V2 gRPC
    request as they do a V2 REST one; anything else is the client's mistake."""
    a, b = simple_inputs()
    fp32 = {"INPUT0": "FP32", "INPUT1": "FP32"}
    request = raw_request("simple", {"INPUT0": a, "INPUT1": b}, fp32)
    request.parameters["priority"].uint64_param = 1
    request.parameters["timeout"].int64_param = 5_000_000
    np.testing.assert_array_equal(outputs_of(stub.ModelInfer(request, timeout=10))["OUTPUT0"], a + b)
    for key in ("priority", "timeout"):
        bad = raw_request("simple", {"INPUT0": a, "INPUT1": b}, fp32)
        bad.parameters[key].string_param = "high"
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(bad, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"Unable to parse '{key}'" in info.value.details()
