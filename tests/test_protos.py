"""modelserve.protos: wire compatibility, the private pool, config text files, gRPC glue.

Expected bytes are written out by hand from the protobuf encoding rules
(tag = field_number << 3 | wire_type; 0 varint, 1 fixed64, 2 length-delimited,
5 fixed32), never produced by the code under test.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import struct
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from modelserve.protos import (
    INFERENCE_SERVICE,
    MODEL_SERVICE,
    POOL,
    PREDICTION_SERVICE,
    Stub,
    add_servicer,
    generic_handler,
    message_class,
    parse_text,
    pb,
)

ROOT = Path(__file__).resolve().parent.parent


# --- wire bytes -------------------------------------------------------------------------------


def _predict_request_with_name() -> Any:
    request = pb.PredictRequest()
    request.model_spec.name = "m"
    return request


def _model_spec_full() -> Any:
    spec = pb.ModelSpec(name="m", signature_name="s")
    spec.version.value = 3
    return spec


def _status_response() -> Any:
    response = pb.GetModelStatusResponse()
    response.model_version_status.add(version=2, state=pb.ModelVersionStatus.AVAILABLE)
    return response


def _versions_policy() -> Any:
    config = pb.ModelConfig()
    config.model_version_policy.specific.versions.append(7)
    return config


def _predict_log() -> Any:
    log = pb.PredictionLog()
    log.predict_log.request.model_spec.name = "m"
    return log


def _infer_request() -> Any:
    request = pb.ModelInferRequest(model_name="m")
    request.raw_input_contents.append(b"\x01")
    request.parameters["p"].double_param = 0.5
    return request


WIRE_CASES: list[tuple[str, Callable[[], Any], bytes]] = [
    # PredictRequest.model_spec (1) { name (1) "m" }
    ("predict_request", _predict_request_with_name, b"\n\x03\n\x01m"),
    # name (1); version (2) { Int64Value.value (1) = 3 }; signature_name (3)
    ("model_spec", _model_spec_full, b"\n\x01m" + b"\x12\x02\x08\x03" + b"\x1a\x01s"),
    ("version_label", lambda: pb.ModelSpec(version_label="x"), b"\x22\x01x"),
    # PredictResponse.model_spec is field 2, outputs field 1
    ("predict_response", lambda: pb.PredictResponse(model_spec=pb.ModelSpec(name="m")), b"\x12\x03\n\x01m"),
    # model_version_status (1) { version (1) = 2, state (2) = AVAILABLE = 30 }
    ("model_status", _status_response, b"\n\x04\x08\x02\x10\x1e"),
    # model_version_policy (7) { specific (102: tag 818 = b2 06) { versions (1) packed [7] } }
    ("version_policy", _versions_policy, b"\x3a\x06\xb2\x06\x03\x0a\x01\x07"),
    # SavedModelBundleSourceAdapterConfig.legacy_config (1000: tag 8002 = c2 3e) {}
    (
        "legacy_config",
        lambda: pb.SavedModelBundleSourceAdapterConfig(legacy_config=pb.SessionBundleConfig()),
        b"\xc2\x3e\x00",
    ),
    # SessionBundleConfig.enable_model_warmup (779: tag 6232 = d8 30) = true
    ("warmup_flag", lambda: pb.SessionBundleConfig(enable_model_warmup=True), b"\xd8\x30\x01"),
    # PredictionLog.predict_log (6) { request (1) { model_spec (1) { name "m" } } }
    ("prediction_log", _predict_log, b"\x32\x07\x0a\x05\x0a\x03\x0a\x01m"),
    # StatusProto.error_code (1) = NOT_FOUND (5), error_message (2)
    ("status", lambda: pb.StatusProto(error_code=5, error_message="x"), b"\x08\x05\x12\x01x"),
    # TensorInfo.name (1), dtype (2) = DT_FLOAT, tensor_shape (3) { dim (2) { size (1) = -1 } }
    (
        "tensor_info",
        lambda: pb.TensorInfo(
            name="x:0", dtype=1, tensor_shape=pb.TensorShapeProto(dim=[pb.TensorShapeProto.Dim(size=-1)])
        ),
        b"\n\x03x:0\x10\x01\x1a\x0d\x12\x0b\x08" + b"\xff" * 9 + b"\x01",
    ),
    # Feature.float_list (2) { value (1) packed [1.0] }
    (
        "feature",
        lambda: pb.Feature(float_list=pb.FloatList(value=[1.0])),
        b"\x12\x06\x0a\x04" + struct.pack("<f", 1.0),
    ),
    # ModelInferRequest.model_name (1); parameters (4) {key "p", value { double_param (4) }};
    # raw_input_contents (7)
    (
        "infer_request",
        _infer_request,
        b"\n\x01m" + b"\x22\x0e\x0a\x01p\x12\x09\x21" + struct.pack("<d", 0.5) + b"\x3a\x01\x01",
    ),
    # RepositoryModelLoadRequest.model_name (2)
    ("repository_load", lambda: pb.RepositoryModelLoadRequest(model_name="m"), b"\x12\x01m"),
    # ReloadConfigRequest.config (1) { model_config_list (1) { config (1) { name (1) "m" } } }
    (
        "reload_config",
        lambda: pb.ReloadConfigRequest(
            config=pb.ModelServerConfig(model_config_list=pb.ModelConfigList(config=[pb.ModelConfig(name="m")]))
        ),
        b"\x0a\x07\x0a\x05\x0a\x03\x0a\x01m",
    ),
]


@pytest.mark.parametrize(("builder", "expected"), [c[1:] for c in WIRE_CASES], ids=[c[0] for c in WIRE_CASES])
def test_serialized_bytes_match_hand_encoding(builder: Callable[[], Any], expected: bytes) -> None:
    message = builder()
    assert message.SerializeToString(deterministic=True) == expected
    assert type(message).FromString(expected) == message


def test_tf_session_config_fields_use_tensorflow_numbers() -> None:
    config = parse_text(
        """
        intra_op_parallelism_threads: 4
        inter_op_parallelism_threads: 2
        gpu_options { per_process_gpu_memory_fraction: 0.5 allow_growth: true visible_device_list: "0" }
        allow_soft_placement: true
        log_device_placement: true
        """,
        pb.ConfigProto(),
    )
    gpu = b"\x09" + struct.pack("<d", 0.5) + b"\x20\x01" + b"\x2a\x010"
    expected = b"\x10\x04\x28\x02\x32" + bytes([len(gpu)]) + gpu + b"\x38\x01\x40\x01"
    assert config.SerializeToString() == expected


# --- names, numbers and enums -----------------------------------------------------------------

# A word list reads better than 70 quoted strings.
EXPECTED_MESSAGES = """
tensorflow.TensorProto tensorflow.TensorShapeProto tensorflow.TensorShapeProto.Dim
tensorflow.ResourceHandleProto tensorflow.VariantTensorDataProto tensorflow.SignatureDef
tensorflow.TensorInfo tensorflow.TensorInfo.CooSparse tensorflow.TensorInfo.CompositeTensor
tensorflow.Example tensorflow.SequenceExample tensorflow.Features tensorflow.Feature
tensorflow.FeatureList tensorflow.FeatureLists tensorflow.BytesList tensorflow.FloatList
tensorflow.Int64List tensorflow.NamedTensorProto tensorflow.RunOptions tensorflow.RunMetadata
tensorflow.ConfigProto tensorflow.GPUOptions
tensorflow.serving.ModelSpec tensorflow.serving.PredictRequest tensorflow.serving.PredictResponse
tensorflow.serving.PredictRequest.RequestOptions tensorflow.serving.PredictStreamedOptions
tensorflow.serving.ClassificationRequest tensorflow.serving.ClassificationResponse
tensorflow.serving.RegressionRequest tensorflow.serving.RegressionResponse tensorflow.serving.Input
tensorflow.serving.ExampleList tensorflow.serving.ExampleListWithContext
tensorflow.serving.MultiInferenceRequest tensorflow.serving.MultiInferenceResponse
tensorflow.serving.SignatureDefMap tensorflow.serving.GetModelMetadataRequest
tensorflow.serving.GetModelMetadataResponse tensorflow.serving.GetModelStatusRequest
tensorflow.serving.GetModelStatusResponse tensorflow.serving.ModelVersionStatus
tensorflow.serving.StatusProto tensorflow.serving.ReloadConfigRequest
tensorflow.serving.ReloadConfigResponse tensorflow.serving.Metric tensorflow.serving.PredictionLog
tensorflow.serving.LogMetadata tensorflow.serving.SessionRunRequest tensorflow.serving.SessionRunResponse
tensorflow.serving.ModelServerConfig tensorflow.serving.ModelConfigList tensorflow.serving.ModelConfig
tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy
tensorflow.serving.LoggingConfig tensorflow.serving.SamplingConfig tensorflow.serving.LogCollectorConfig
tensorflow.serving.MonitoringConfig tensorflow.serving.PrometheusConfig tensorflow.serving.SSLConfig
tensorflow.serving.PlatformConfigMap tensorflow.serving.PlatformConfig
tensorflow.serving.BatchingParameters tensorflow.serving.SessionBundleConfig
tensorflow.serving.SavedModelBundleSourceAdapterConfig tensorflow.serving.ModelWarmupOptions
inference.ModelInferRequest inference.ModelInferResponse inference.InferTensorContents
inference.InferParameter inference.ModelMetadataResponse inference.RepositoryIndexResponse
""".split()  # noqa: SIM905


@pytest.mark.parametrize("full_name", EXPECTED_MESSAGES)
def test_message_exists_in_private_pool(full_name: str) -> None:
    assert message_class(full_name).DESCRIPTOR.full_name == full_name


SERVICES = {
    PREDICTION_SERVICE: {
        "Classify": ("ClassificationRequest", "ClassificationResponse"),
        "Regress": ("RegressionRequest", "RegressionResponse"),
        "Predict": ("PredictRequest", "PredictResponse"),
        "MultiInference": ("MultiInferenceRequest", "MultiInferenceResponse"),
        "GetModelMetadata": ("GetModelMetadataRequest", "GetModelMetadataResponse"),
    },
    MODEL_SERVICE: {
        "GetModelStatus": ("GetModelStatusRequest", "GetModelStatusResponse"),
        "HandleReloadConfigRequest": ("ReloadConfigRequest", "ReloadConfigResponse"),
    },
    "tensorflow.serving.SessionService": {"SessionRun": ("SessionRunRequest", "SessionRunResponse")},
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_tf_serving_services(service: str) -> None:
    descriptor = POOL.FindServiceByName(service)
    methods = {m.name: (m.input_type.full_name, m.output_type.full_name) for m in descriptor.methods}
    assert methods == {
        name: (f"tensorflow.serving.{req}", f"tensorflow.serving.{resp}")
        for name, (req, resp) in SERVICES[service].items()
    }


def test_v2_inference_service() -> None:
    methods = {m.name: m for m in POOL.FindServiceByName(INFERENCE_SERVICE).methods}
    required = {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    }
    assert required <= set(methods)
    assert methods["ModelInfer"].input_type.full_name == "inference.ModelInferRequest"
    stream = methods["ModelStreamInfer"]
    assert (stream.client_streaming, stream.server_streaming) == (True, True)


def test_enum_numbers() -> None:
    data_type = {
        "DT_INVALID": 0,
        "DT_FLOAT": 1,
        "DT_DOUBLE": 2,
        "DT_INT32": 3,
        "DT_UINT8": 4,
        "DT_INT16": 5,
        "DT_INT8": 6,
        "DT_STRING": 7,
        "DT_COMPLEX64": 8,
        "DT_INT64": 9,
        "DT_BOOL": 10,
        "DT_QINT8": 11,
        "DT_QUINT8": 12,
        "DT_QINT32": 13,
        "DT_BFLOAT16": 14,
        "DT_QINT16": 15,
        "DT_QUINT16": 16,
        "DT_UINT16": 17,
        "DT_COMPLEX128": 18,
        "DT_HALF": 19,
        "DT_RESOURCE": 20,
        "DT_VARIANT": 21,
        "DT_UINT32": 22,
        "DT_UINT64": 23,
        "DT_FLOAT8_E5M2": 24,
        "DT_FLOAT8_E4M3FN": 25,
        "DT_FLOAT8_E4M3FNUZ": 26,
        "DT_FLOAT8_E4M3B11FNUZ": 27,
        "DT_FLOAT8_E5M2FNUZ": 28,
        "DT_INT4": 29,
        "DT_UINT4": 30,
        "DT_INT2": 31,
        "DT_UINT2": 32,
        "DT_FLOAT4_E2M1FN": 33,
        "DT_FLOAT_REF": 101,
        "DT_FLOAT4_E2M1FN_REF": 133,
    }
    for name, number in data_type.items():
        assert pb.DataType.Value(name) == number, name
    assert len(pb.DataType.keys()) == 34 + 33
    codes = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ]
    assert [pb.Code.Value(name) for name in codes] == list(range(17))
    states = {"UNKNOWN": 0, "START": 10, "LOADING": 20, "AVAILABLE": 30, "UNLOADING": 40, "END": 50}
    assert {name: pb.ModelVersionStatus.State.Value(name) for name in states} == states
    policy = pb.FileSystemStoragePathSourceConfig.ServableVersionPolicy.DESCRIPTOR
    assert {f.name: f.number for f in policy.fields} == {"latest": 100, "all": 101, "specific": 102}


def test_tensor_proto_field_numbers() -> None:
    expected = {
        "dtype": 1,
        "tensor_shape": 2,
        "version_number": 3,
        "tensor_content": 4,
        "half_val": 13,
        "float_val": 5,
        "double_val": 6,
        "int_val": 7,
        "string_val": 8,
        "scomplex_val": 9,
        "int64_val": 10,
        "bool_val": 11,
        "dcomplex_val": 12,
        "resource_handle_val": 14,
        "variant_val": 15,
        "uint32_val": 16,
        "uint64_val": 17,
        "float8_val": 18,
    }
    assert {f.name: f.number for f in pb.TensorProto.DESCRIPTOR.fields} == expected


def test_batching_parameters_use_wrapper_types() -> None:
    fields = pb.BatchingParameters.DESCRIPTOR.fields_by_name
    wrappers = {
        "max_batch_size": (1, "Int64Value"),
        "batch_timeout_micros": (2, "Int64Value"),
        "max_enqueued_batches": (3, "Int64Value"),
        "num_batch_threads": (4, "Int64Value"),
        "thread_pool_name": (5, "StringValue"),
        "enable_large_batch_splitting": (8, "BoolValue"),
        "max_execution_batch_size": (9, "Int64Value"),
    }
    for name, (number, wrapper) in wrappers.items():
        assert (fields[name].number, fields[name].message_type.full_name) == (number, f"google.protobuf.{wrapper}")
    assert fields["allowed_batch_sizes"].number == 6
    assert fields["pad_variable_length_inputs"].number == 7


# --- the private pool and the generated files -------------------------------------------------


def test_pool_is_private_and_default_pool_untouched() -> None:
    assert POOL is not descriptor_pool.Default()
    # In a fresh interpreter: importing modelserve.protos registers nothing globally.
    code = (
        "import modelserve.protos\n"
        "from google.protobuf import descriptor_pool\n"
        "try:\n"
        "    descriptor_pool.Default().FindFileByName('tensorflow_serving/apis/predict.proto')\n"
        "except KeyError:\n"
        "    print('absent')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "absent"


def _load_gen_protos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_descriptor_set_and_pb_module_are_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) compiles the protos")
    gen = _load_gen_protos()
    fresh_set, fresh_pb = gen.generate(tmp_path)
    committed = descriptor_pb2.FileDescriptorSet.FromString(gen.DESCRIPTORS.read_bytes())
    # Compared as messages, so a protoc that orders bytes differently still passes.
    assert descriptor_pb2.FileDescriptorSet.FromString(fresh_set.read_bytes()) == committed
    assert fresh_pb.read_text() == gen.PB_MODULE.read_text()


def test_pb_exposes_every_top_level_definition() -> None:
    exported = set(pb.__all__)
    for name in exported:
        assert getattr(pb, name) is not None
    package_files = [f for f in _all_files() if not f.name.startswith("google/")]
    for file in package_files:
        names = [*file.message_types_by_name, *file.enum_types_by_name, *file.services_by_name]
        assert set(names) <= exported, file.name


def _all_files() -> Iterator[Any]:
    gen = _load_gen_protos()
    for file in descriptor_pb2.FileDescriptorSet.FromString(gen.DESCRIPTORS.read_bytes()).file:
        yield POOL.FindFileByName(file.name)


# --- Any ----------------------------------------------------------------------------------------


def test_signature_def_map_travels_in_an_any() -> None:
    signatures = pb.SignatureDefMap()
    signature = signatures.signature_def["serving_default"]
    signature.method_name = "tensorflow/serving/predict"
    signature.inputs["x"].name = "x:0"
    response = pb.GetModelMetadataResponse()
    response.metadata["signature_def"].Pack(signatures)

    wire = pb.GetModelMetadataResponse.FromString(response.SerializeToString())
    packed = wire.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    assert packed.Is(pb.SignatureDefMap.DESCRIPTOR)
    unpacked = pb.SignatureDefMap()
    assert packed.Unpack(unpacked)
    assert unpacked.signature_def["serving_default"].inputs["x"].name == "x:0"


# --- config files --------------------------------------------------------------

MODEL_CONFIG = """
model_config_list {
  config {
    name: "resnet"
    base_path: "/models/resnet"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 7 versions: 8 } }
    version_labels { key: "stable" value: 7 }
    version_labels { key: "canary" value: 8 }
  }
  config { name: "bert" base_path: "/models/bert" model_platform: "tensorflow" }
}
"""

BATCHING = """
max_batch_size { value: 128 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000000 }
num_batch_threads { value: 8 }
"""

PLATFORM = """
platform_configs {
  key: "tensorflow"
  value {
    source_adapter_config {
      [type.googleapis.com/tensorflow.serving.SavedModelBundleSourceAdapterConfig] {
        legacy_config {
          session_config { gpu_options { allow_growth: true } }
          batching_parameters { max_batch_size { value: 32 } }
        }
      }
    }
  }
}
"""


def test_model_server_config_example() -> None:
    config = parse_text(MODEL_CONFIG, pb.ModelServerConfig())
    assert config.WhichOneof("config") == "model_config_list"
    resnet, bert = config.model_config_list.config
    assert (resnet.name, resnet.base_path) == ("resnet", "/models/resnet")
    assert resnet.model_platform == "tensorflow"
    assert resnet.model_version_policy.WhichOneof("policy_choice") == "specific"
    assert list(resnet.model_version_policy.specific.versions) == [7, 8]
    assert dict(resnet.version_labels) == {"stable": 7, "canary": 8}
    assert (bert.name, bert.base_path) == ("bert", "/models/bert")
    assert not bert.HasField("model_version_policy")


def test_text_format_niceties_users_rely_on() -> None:
    text = """
    # a comment
    model_config_list: {
      config: { name: 'a', base_path: "/m/a", model_platform: "onnx",
                model_version_policy: { specific: { versions: [1, 2] } } },
      config: { name: "b" base_path: "/m/b" model_platform: "onnx"
                model_version_policy { latest { num_versions: 2 } } }
      config { name: "c" base_path: "/m/c" model_platform: "onnx" model_version_policy { all {} } }
    }
    """
    a, b, c = parse_text(text, pb.ModelServerConfig()).model_config_list.config
    assert list(a.model_version_policy.specific.versions) == [1, 2]
    assert b.model_version_policy.latest.num_versions == 2
    assert c.model_version_policy.WhichOneof("policy_choice") == "all"


def test_batching_parameters_file() -> None:
    params = parse_text(BATCHING, pb.BatchingParameters())
    assert params.max_batch_size.value == 128
    assert params.HasField("batch_timeout_micros") and params.batch_timeout_micros.value == 0
    assert params.max_enqueued_batches.value == 1000000
    assert params.num_batch_threads.value == 8
    assert not params.HasField("thread_pool_name")


def test_platform_config_file_with_any_expansion() -> None:
    platforms = parse_text(PLATFORM, pb.PlatformConfigMap())
    packed = platforms.platform_configs["tensorflow"].source_adapter_config
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SavedModelBundleSourceAdapterConfig"
    adapter = pb.SavedModelBundleSourceAdapterConfig()
    assert packed.Unpack(adapter)
    assert adapter.legacy_config.session_config.gpu_options.allow_growth is True
    assert adapter.legacy_config.batching_parameters.max_batch_size.value == 32
    # text_format's own default (protobuf's global pool) cannot resolve the type.
    with pytest.raises(text_format.ParseError):
        text_format.Parse(PLATFORM, pb.PlatformConfigMap())


def test_monitoring_and_ssl_files() -> None:
    monitoring = parse_text(
        'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }', pb.MonitoringConfig()
    )
    assert monitoring.prometheus_config.enable
    ssl = parse_text('server_key: "K" server_cert: "C" custom_ca: "A" client_verify: true', pb.SSLConfig())
    assert (ssl.server_key, ssl.server_cert, ssl.custom_ca, ssl.client_verify) == ("K", "C", "A", True)


def test_unknown_field_in_text_is_a_parse_error_naming_it() -> None:
    with pytest.raises(text_format.ParseError, match="no_such_field"):
        parse_text("no_such_field: 1", pb.ModelServerConfig())


# --- gRPC glue ----------------------------------------------------------------------------------


class _SyncServicer:
    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        response = pb.PredictResponse()
        response.model_spec.name = request.model_spec.name.upper()
        return response


class _AsyncServicer:
    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await asyncio.sleep(0)
        return pb.PredictResponse(model_spec=pb.ModelSpec(name=request.model_spec.name[::-1]))

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for request in requests:
            yield pb.ModelStreamInferResponse(infer_response=pb.ModelInferResponse(id=request.id))


@pytest.fixture
def sync_server() -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add_servicer(server, pb.PredictionService, _SyncServicer())
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(None)


def test_sync_server_and_stub(sync_server: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{sync_server}") as channel:
        stub = Stub(channel, PREDICTION_SERVICE)
        response = stub.Predict(pb.PredictRequest(model_spec=pb.ModelSpec(name="abc")), timeout=10)
        assert response.model_spec.name == "ABC"
        # An RPC the servicer does not implement is left to gRPC: UNIMPLEMENTED.
        with pytest.raises(grpc.RpcError) as raised:
            stub.Classify(pb.ClassificationRequest(), timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_aio_server_and_stub_with_coroutines_and_streams() -> None:
    async def scenario() -> None:
        server = grpc.aio.server()
        add_servicer(server, pb.PredictionService, _AsyncServicer())
        server.add_generic_rpc_handlers((generic_handler(pb.GRPCInferenceService, _AsyncServicer()),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                predict = await Stub(channel, pb.PredictionService).Predict(
                    pb.PredictRequest(model_spec=pb.ModelSpec(name="abc")), timeout=10
                )
                assert predict.model_spec.name == "cba"
                v2 = Stub(channel, pb.GRPCInferenceService)
                assert (await v2.ServerLive(pb.ServerLiveRequest(), timeout=10)).live
                call = v2.ModelStreamInfer(iter([pb.ModelInferRequest(id=str(i)) for i in range(3)]))
                assert [r.infer_response.id async for r in call] == ["0", "1", "2"]
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_add_servicer_refuses_a_servicer_without_any_rpc() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    with pytest.raises(TypeError, match="implements no RPC"):
        add_servicer(server, pb.ModelService, _SyncServicer())


def test_stub_names_the_rpcs_it_has() -> None:
    with grpc.insecure_channel("127.0.0.1:1") as channel, pytest.raises(AttributeError, match="Predict"):
        Stub(channel, pb.PredictionService).Predcit  # noqa: B018


def test_server_reflection_serves_our_pool(sync_server: int) -> None:
    from grpc_reflection.v1alpha import reflection
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add_servicer(server, pb.PredictionService, _SyncServicer())
    reflection.enable_server_reflection((PREDICTION_SERVICE, reflection.SERVICE_NAME), server, pool=POOL)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            assert PREDICTION_SERVICE in set(database.get_services())
            remote = descriptor_pool.DescriptorPool(database)
            service = remote.FindServiceByName(PREDICTION_SERVICE)
            assert [m.name for m in service.methods] == [
                "Classify",
                "Regress",
                "Predict",
                "MultiInference",
                "GetModelMetadata",
            ]
            tensor = remote.FindMessageTypeByName("tensorflow.TensorProto")
            assert tensor.fields_by_name["tensor_content"].number == 4
    finally:
        server.stop(None)


# --- side by side with TensorFlow's own protos ------------------------------------------------


@pytest.fixture(scope="module")
def tf_serving() -> ModuleType:
    """tensorflow + tensorflow_serving.apis imported into this process (skips without them)."""
    if importlib.util.find_spec("tensorflow_serving") is None:
        pytest.skip("tensorflow-serving-api is not installed (pip install tensorflow tensorflow-serving-api)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TF's own import-time deprecation warnings
        import tensorflow  # noqa: F401
        from tensorflow_serving import apis
        from tensorflow_serving.apis import (  # noqa: F401
            get_model_metadata_pb2,
            get_model_status_pb2,
            model_service_pb2_grpc,
            predict_pb2,
            prediction_log_pb2,
            prediction_service_pb2_grpc,
        )
        from tensorflow_serving.config import (  # noqa: F401
            file_system_storage_path_source_pb2,
            logging_config_pb2,
            model_server_config_pb2,
            platform_config_pb2,
        )
    return apis


def test_predict_request_bytes_cross_parse_with_tensorflow_serving(tf_serving: ModuleType) -> None:
    theirs = tf_serving.predict_pb2.PredictRequest()
    theirs.model_spec.name = "m"
    theirs.model_spec.version.value = 4
    theirs.inputs["x"].dtype = 1
    theirs.inputs["x"].tensor_shape.dim.add(size=2)
    theirs.inputs["x"].float_val.extend([1.0, 2.0])
    theirs.output_filter.append("y")

    ours = pb.PredictRequest()
    ours.model_spec.name = "m"
    ours.model_spec.version.value = 4
    ours.inputs["x"].dtype = pb.DataType.DT_FLOAT
    ours.inputs["x"].tensor_shape.dim.add(size=2)
    ours.inputs["x"].float_val.extend([1.0, 2.0])
    ours.output_filter.append("y")

    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    assert pb.PredictRequest.FromString(theirs.SerializeToString()) == ours
    assert tf_serving.predict_pb2.PredictRequest.FromString(ours.SerializeToString()) == theirs


_SUBSET_ONLY = {  # messages we declare with fewer fields than TensorFlow does, on purpose
    "tensorflow.ConfigProto",
    "tensorflow.GPUOptions",
    "tensorflow.RunOptions",
    "tensorflow.RunMetadata",
}
_BYTES_FOR_MESSAGE = {"tensorflow.TensorInfo.CompositeTensor.type_spec"}
# modelserve's own fields in TF's messages, numbered from 1000 (TF Serving's parser rejects them).
_EXTENSIONS = {"tensorflow.serving.ModelConfig.placement"}


def _field_signature(field: FieldDescriptor) -> tuple[Any, ...]:
    # protobuf 7 dropped FieldDescriptor.label; 6.x may lack is_repeated.
    repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
    target = field.message_type or field.enum_type
    return (field.number, field.type, repeated, target.full_name if target else None)


def _compare_message(ours: Descriptor, theirs: Descriptor) -> list[str]:
    problems = []
    their_fields = {f.name: f for f in theirs.fields}
    fields = [f for f in ours.fields if f.full_name not in _EXTENSIONS or f.number < 1000]
    for field in fields:
        other = their_fields.get(field.name)
        if other is None:
            problems.append(f"{field.full_name}: not in TensorFlow's descriptor")
        elif field.full_name in _BYTES_FOR_MESSAGE:
            assert (field.number, field.type, other.type) == (
                other.number,
                FieldDescriptor.TYPE_BYTES,
                FieldDescriptor.TYPE_MESSAGE,
            )
        elif _field_signature(field) != _field_signature(other):
            problems.append(f"{field.full_name}: {_field_signature(field)} != {_field_signature(other)}")
    if ours.full_name not in _SUBSET_ONLY and {f.name for f in fields} != set(their_fields):
        missing = set(their_fields) - {f.name for f in fields}
        problems.append(f"{ours.full_name}: fields {missing} missing")
    for nested in ours.nested_types:
        if nested.GetOptions().map_entry:
            continue
        problems += _compare_message(nested, theirs.nested_types_by_name[nested.name])
    return problems


def test_every_tf_message_matches_tensorflows_descriptor(tf_serving: ModuleType) -> None:
    default = descriptor_pool.Default()
    compared = 0
    problems: list[str] = []
    for file in _all_files():
        if file.package not in ("tensorflow", "tensorflow.serving", "tensorflow.error"):
            continue
        for message in file.message_types_by_name.values():
            try:
                theirs = default.FindMessageTypeByName(message.full_name)
            except KeyError:
                continue
            problems += _compare_message(message, theirs)
            compared += 1
        for enum in file.enum_types_by_name.values():
            theirs_enum = default.FindEnumTypeByName(enum.full_name)  # all are in TF's wheels
            assert {v.name: v.number for v in enum.values} == {v.name: v.number for v in theirs_enum.values}
    assert problems == []
    assert compared >= 60


def test_grpc_interop_with_tensorflow_serving_stubs(tf_serving: ModuleType, sync_server: int) -> None:
    # Their client -> our server.
    with grpc.insecure_channel(f"127.0.0.1:{sync_server}") as channel:
        stub = tf_serving.prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = tf_serving.predict_pb2.PredictRequest()
        request.model_spec.name = "abc"
        assert stub.Predict(request, timeout=10).model_spec.name == "ABC"

    # Our client -> their server.
    class TheirServicer(tf_serving.model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[name-defined,misc]
        def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
            response = tf_serving.get_model_status_pb2.GetModelStatusResponse()
            response.model_version_status.add(version=request.model_spec.version.value, state=30)
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    tf_serving.model_service_pb2_grpc.add_ModelServiceServicer_to_server(TheirServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = pb.GetModelStatusRequest()
            request.model_spec.version.value = 9
            status = Stub(channel, MODEL_SERVICE).GetModelStatus(request, timeout=10)
            assert [(s.version, s.state) for s in status.model_version_status] == [(9, pb.ModelVersionStatus.AVAILABLE)]
    finally:
        server.stop(None)


def test_v2_messages_match_tritonclients_descriptors() -> None:
    triton = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
    theirs = triton.service_pb2.DESCRIPTOR  # Triton's grpc_service.proto, in protobuf's default pool
    ours = POOL.FindFileByName("inference/grpc_predict_v2.proto")
    problems: list[str] = []
    for name, message in ours.message_types_by_name.items():
        problems += _compare_message(message, theirs.message_types_by_name[name])
    their_service = theirs.services_by_name["GRPCInferenceService"]
    for method in ours.services_by_name["GRPCInferenceService"].methods:
        other = their_service.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            other.input_type.full_name,
            other.output_type.full_name,
        )
        assert (method.client_streaming, method.server_streaming) == (other.client_streaming, other.server_streaming)
    assert problems == []
