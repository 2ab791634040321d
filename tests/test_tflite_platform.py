"""The TF Lite platform: model.tflite through LiteRT, on its own and behind a real server.

Models are converted from tf.Modules by the tests (tests/tflite_models.py);
expected values come from numpy. TF Serving's two TF Lite end-to-end tests
(half_plus_two without a SignatureDef, and with one in the model's metadata)
are rebuilt here with models made the same way.
"""

from __future__ import annotations

import base64
import http.client
import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="needs the tflite extra: pip install 'modelserve[tflite]'")
tf = pytest.importorskip("tensorflow", reason="the tests convert their models with TensorFlow")
pytest.importorskip("tensorflow_serving.apis")

from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from modelserve import platforms  # noqa: E402
from modelserve.dtypes import DType  # noqa: E402
from modelserve.errors import FailedPrecondition, InvalidArgument  # noqa: E402
from modelserve.execution.instances import PlacedLoader  # noqa: E402
from modelserve.lifecycle.config import ModelConfig  # noqa: E402
from modelserve.platforms import LoadOptions, detect  # noqa: E402
from modelserve.platforms import tflite as tfl  # noqa: E402
from modelserve.signatures import TensorSpec  # noqa: E402
from modelserve.testing import ServerThread, running_server  # noqa: E402

from . import tf_models as tm  # noqa: E402
from . import tflite_models as lm  # noqa: E402

pytestmark = [pytest.mark.tflite, pytest.mark.tensorflow]
DEFAULT = "serving_default"


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    """Each test model converted once."""
    return {
        "half": lm.half_plus_two(),
        "bare": lm.half_plus_two(signatures=False),
        "two": lm.two_in_two_out(),
        "ints": lm.ints(),
        "strings": lm.strings(),
        "signatures": lm.two_signatures(),
        "tfs": lm.tf_serving_half_plus_two(),
        "tfs_sigdef": lm.tf_serving_half_plus_two_with_signature_def(),
    }


def load(tmp_path: Path, model: bytes, **options: Any) -> tfl.TfLiteServable:
    return tfl.load(lm.write(tmp_path / "m", 1, model), LoadOptions(**options))


# ---- signatures: the model's own, TF Serving's metadata ones, or synthesised -------------------


def test_the_flatbuffers_signature_def_names_inputs_and_outputs(tmp_path: Path, models: dict[str, bytes]) -> None:
    folder = lm.write(tmp_path / "m", 1, models["half"])
    assert detect(folder) == "tflite"
    servable = tfl.load(folder, LoadOptions())
    sig = servable.signatures[DEFAULT]
    assert sig.inputs == {"x": TensorSpec("serving_default_x:0", DType.DT_FLOAT, (-1,))}
    assert sig.outputs == {"y": TensorSpec("PartitionedCall:0", DType.DT_FLOAT, (-1,))}
    assert sig.method_name == "tensorflow/serving/predict"
    for n in (1, 5, 2, 0):  # the runner resizes to each batch
        x = np.linspace(-1, 1, n, dtype=np.float32)
        np.testing.assert_array_equal(servable.predict(DEFAULT, {"x": x})["y"], np.float32(0.5) * x + np.float32(2))


def test_without_signatures_serving_default_is_built_like_tf_serving(tmp_path: Path, models: dict[str, bytes]) -> None:
    servable = load(tmp_path, models["bare"])
    sig = servable.signatures[DEFAULT]
    # Aliases are the tensor names without a ":N" suffix; TensorSpec.name the tensor's own name.
    assert sig.inputs == {"x": TensorSpec("x", DType.DT_FLOAT, (-1,))}
    assert sig.outputs == {"Identity": TensorSpec("Identity", DType.DT_FLOAT, (-1,))}
    x = np.array([1.0, 2.0, 5.0], np.float32)
    np.testing.assert_array_equal(servable.predict(DEFAULT, {"x": x})["Identity"], [2.5, 3.0, 4.5])


def test_signature_defs_in_the_metadata_are_tf_servings_and_win(tmp_path: Path, models: dict[str, bytes]) -> None:
    servable = load(tmp_path, models["tfs_sigdef"])
    sig = servable.signatures[DEFAULT]
    # The proto's alias, dtype and shape; "tflite_input:0" found as the converter's "tflite_input".
    assert sig.inputs == {"x": TensorSpec("tflite_input", DType.DT_FLOAT, (-1, 1))}
    assert list(sig.outputs) == ["y"]
    x = np.array([[2.0], [4.0]], np.float32)
    np.testing.assert_array_equal(servable.predict(DEFAULT, {"x": x})["y"], [[3.0], [4.0]])

    # Beside the flatbuffer's own SignatureDefs, the metadata's are the ones served (TF Serving reads only those).
    renamed = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    renamed.inputs["input"].CopyFrom(lm.tensor_info("serving_default_x:0", 1, [-1]))
    renamed.outputs["output"].CopyFrom(lm.tensor_info("PartitionedCall:0", 1, [-1]))
    both = load(tmp_path / "both", lm.with_signature_defs(models["half"], {"renamed": renamed}))
    assert list(both.signatures) == ["renamed"]
    np.testing.assert_array_equal(both.predict("renamed", {"input": np.ones(3, np.float32)})["output"], [2.5] * 3)


def test_a_signature_def_naming_an_unknown_tensor_fails_the_load(tmp_path: Path, models: dict[str, bytes]) -> None:
    wrong = meta_graph_pb2.SignatureDef()
    wrong.inputs["x"].CopyFrom(lm.tensor_info("nope:0", 1, [-1]))
    wrong.outputs["y"].CopyFrom(lm.tensor_info("PartitionedCall:0", 1, [-1]))
    with pytest.raises(FailedPrecondition, match=r"Signature serving_default input x references an unknown tensor"):
        load(tmp_path, lm.with_signature_defs(models["half"], {DEFAULT: wrong}))


def test_a_fixed_batch_model_serves_any_batch(tmp_path: Path, models: dict[str, bytes]) -> None:
    """Converted with a [1, 1] input, as TF Serving's half_plus_two was: dim 0 is resized per request."""
    servable = load(tmp_path, models["tfs"])
    assert servable.signatures[DEFAULT].inputs["x"].shape == (-1, 1)
    x = np.arange(4, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(servable.predict(DEFAULT, {"x": x})["Identity"], 0.5 * x + 2)


def test_several_signatures(tmp_path: Path, models: dict[str, bytes]) -> None:
    servable = load(tmp_path, models["signatures"])
    assert sorted(servable.signatures) == [DEFAULT, "times_ten"]
    x = np.array([1.0, -2.0], np.float32)
    np.testing.assert_array_equal(servable.predict(DEFAULT, {"x": x})["y"], [2.5, 1.0])
    np.testing.assert_array_equal(servable.predict("times_ten", {"x": x})["y"], [10.0, -20.0])


def test_a_model_converted_from_a_saved_model_keeps_its_signature(tmp_path: Path) -> None:
    saved = tm.half_plus_two(tmp_path / "saved")
    servable = load(tmp_path, lm.from_saved_model(saved))
    assert list(servable.signatures[DEFAULT].inputs) == ["x"]
    np.testing.assert_array_equal(servable.predict(DEFAULT, {"x": np.array([2.0], np.float32)})["y"], [3.0])


# ---- dtypes and outputs ------------------------------------------------------------------------


def test_two_inputs_two_outputs_and_the_output_filter(tmp_path: Path, models: dict[str, bytes]) -> None:
    servable = load(tmp_path, models["two"])
    sig = servable.signatures[DEFAULT]
    assert {a: s.shape for a, s in sig.inputs.items()} == {"a": (-1, 3), "b": (-1,)}
    assert {a: s.shape for a, s in sig.outputs.items()} == {"total": (-1, 3), "twice": (-1,)}
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((4, 3), dtype=np.float32), rng.standard_normal(4, dtype=np.float32)
    out = servable.predict(DEFAULT, {"a": a, "b": b})
    np.testing.assert_allclose(out["total"], a + b[:, None], rtol=1e-6)
    np.testing.assert_allclose(out["twice"], 2 * b, rtol=1e-6)
    assert list(servable.predict(DEFAULT, {"a": a, "b": b}, ["twice"])) == ["twice"]


def test_integers(tmp_path: Path, models: dict[str, bytes]) -> None:
    servable = load(tmp_path, models["ints"])
    assert servable.signatures[DEFAULT].inputs["i"].dtype == DType.DT_INT32
    i = np.array([-4, 0, 7, 2**20], np.int32)
    out = servable.predict(DEFAULT, {"i": i})["j"]
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, 3 * i + 1)


def test_strings_cross_as_bytes(tmp_path: Path, models: dict[str, bytes]) -> None:
    servable = load(tmp_path, models["strings"])
    sig = servable.signatures[DEFAULT]
    assert sig.inputs["text"].dtype == DType.DT_STRING and sig.outputs["picked"].dtype == DType.DT_STRING
    text = np.array([b"a", b"\xff\x00 not utf-8", b""], dtype=object)
    out = servable.predict(DEFAULT, {"text": text, "pick": np.array([1, 2, 0, 1], np.int32)})["picked"]
    assert out.dtype == object
    assert out.tolist() == [b"\xff\x00 not utf-8", b"", b"a", b"\xff\x00 not utf-8"]


# ---- errors --------------------------------------------------------------------------------------


def test_runtime_errors_are_invalid_argument_and_the_next_call_is_served(
    tmp_path: Path, models: dict[str, bytes]
) -> None:
    servable = load(tmp_path, models["strings"], tflite_interpreters=1)
    bad = {"text": np.array([b"a"], dtype=object), "pick": np.array([3], np.int32)}
    with pytest.raises(InvalidArgument, match="gather index out of bounds") as first:
        servable.predict(DEFAULT, bad)
    # LiteRT repeats an interpreter's earlier errors in each new one; the client sees only its own.
    with pytest.raises(InvalidArgument) as second:
        servable.predict(DEFAULT, bad)
    assert str(second.value) == str(first.value)
    good = {"text": np.array([b"a", b"b"], dtype=object), "pick": np.array([1], np.int32)}
    assert servable.predict(DEFAULT, good)["picked"].tolist() == [b"b"]


def test_inputs_the_runtime_refuses_are_invalid_argument(tmp_path: Path, models: dict[str, bytes]) -> None:
    servable = load(tmp_path, models["bare"])  # the tensor path (no signature runner)
    with pytest.raises(InvalidArgument, match="Cannot set tensor"):
        servable.predict(DEFAULT, {"x": np.array([1, 2], np.int32)})
    two = load(tmp_path / "two", models["two"])
    with pytest.raises(InvalidArgument):  # a and b disagree on the batch: ADD cannot broadcast
        two.predict(DEFAULT, {"a": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)})
    np.testing.assert_array_equal(servable.predict(DEFAULT, {"x": np.zeros(1, np.float32)})["Identity"], [2.0])


def test_load_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FailedPrecondition, match=r"No model\.tflite in"):
        tfl.load(tmp_path / "empty", LoadOptions())
    with pytest.raises(FailedPrecondition, match="Failed to load TF Lite model"):
        load(tmp_path, b"not a flatbuffer at all")
    # TF ops inside the model ("select TF ops") need the Flex delegate, which LiteRT's wheel lacks.
    with pytest.raises(FailedPrecondition, match=r"Failed to load TF Lite model .*Select TensorFlow op"):
        load(tmp_path / "flex", lm.needs_flex())


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "modelserve.platforms.tflite")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # None in sys.modules: the import fails
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(
        FailedPrecondition, match=r"The tflite platform needs an extra: pip install 'modelserve\[tflite\]'"
    ):
        platforms.loader("tflite")


# ---- interpreters: threads and the pool ------------------------------------------------------------


REAL_INTERPRETER = tfl.Interpreter


class CountingInterpreter:
    """Wraps LiteRT's Interpreter, recording how each one was made."""

    made: list[dict[str, Any]]

    def __init__(self, **kwargs: Any) -> None:
        type(self).made.append(kwargs)
        self._inner = REAL_INTERPRETER(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[CountingInterpreter]:
    counter = type("Counter", (CountingInterpreter,), {"made": []})
    monkeypatch.setattr(tfl, "Interpreter", counter)
    return counter


def test_threads_per_interpreter(tmp_path: Path, models: dict[str, bytes], counting: Any) -> None:
    load(tmp_path, models["half"])
    load(tmp_path / "b", models["half"], intra_op_threads=3)
    assert [m["num_threads"] for m in counting.made] == [1, 3]


def test_interpreters_are_made_on_demand_up_to_the_pool_size(
    tmp_path: Path, models: dict[str, bytes], counting: Any
) -> None:
    servable = load(tmp_path, models["half"], tflite_interpreters=2)
    for _ in range(5):  # one caller at a time: the first interpreter does
        servable.predict(DEFAULT, {"x": np.ones(2, np.float32)})
    assert len(counting.made) == 1
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: servable.predict(DEFAULT, {"x": np.ones(64, np.float32)}), range(200)))
    assert len(counting.made) <= 2
    assert servable.interpreters == 2


def test_an_interpreter_whose_error_text_grew_large_is_replaced(
    tmp_path: Path, models: dict[str, bytes], counting: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tfl, "_MAX_ERROR_TEXT", 500)
    servable = load(tmp_path, models["strings"], tflite_interpreters=1)
    bad = {"text": np.array([b"a"], dtype=object), "pick": np.array([3], np.int32)}
    for _ in range(6):  # about 110 characters each
        with pytest.raises(InvalidArgument, match="gather index out of bounds"):
            servable.predict(DEFAULT, bad)
    assert len(counting.made) == 2
    good = {"text": np.array([b"a", b"b"], dtype=object), "pick": np.array([0], np.int32)}
    assert servable.predict(DEFAULT, good)["picked"].tolist() == [b"a"]


@pytest.mark.parametrize("model", ["half", "bare"])  # the signature runner and the tensor path
@pytest.mark.parametrize("interpreters", [1, 3])
def test_concurrent_requests_get_their_own_answers(
    tmp_path: Path, models: dict[str, bytes], model: str, interpreters: int
) -> None:
    servable = load(tmp_path, models[model], tflite_interpreters=interpreters)
    output = next(iter(servable.signatures[DEFAULT].outputs))

    def call(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(30):
            x = rng.standard_normal(int(rng.integers(1, 40)), dtype=np.float32)
            np.testing.assert_array_equal(servable.predict(DEFAULT, {"x": x})[output], np.float32(0.5) * x + 2)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(call, range(12)))


# ---- which format a folder serves ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SavedModel (y = 0.5 x + 2) and, beside it, a model.tflite that computes y = 0.5 x + 3."""
    folder = tm.half_plus_two(tmp_path_factory.mktemp("both") / "m", 1)
    (folder / "model.tflite").write_bytes(lm.half_plus_two(b=3.0))
    return folder


def test_a_saved_model_is_served_unless_tflite_is_preferred(both: Path) -> None:
    assert detect(both) == "tensorflow"
    assert detect(both, prefer_tflite_model=True) == "tflite"
    x = {"x": np.array([2.0], np.float32)}
    saved = platforms.load("m", "tensorflow", both, LoadOptions())
    assert saved.predict(DEFAULT, x)["y"].tolist() == [3.0]
    lite = platforms.load("m", "tensorflow", both, LoadOptions(prefer_tflite_model=True))
    assert isinstance(lite, tfl.TfLiteServable)
    assert lite.predict(DEFAULT, x)["y"].tolist() == [4.0]
    # The placed loader (what the server uses) follows the same rule.
    group = PlacedLoader(LoadOptions(prefer_tflite_model=True))(ModelConfig("m", str(both.parent), "tensorflow"), both)
    assert group.predict(DEFAULT, x)["y"].tolist() == [4.0]


def test_the_platform_names(tmp_path: Path, models: dict[str, bytes]) -> None:
    folder = lm.write(tmp_path / "m", 1, models["half"])
    assert platforms.resolve("m", "tensorflow", folder) == "tflite"  # what TF Serving configs say
    assert platforms.resolve("m", "tflite", folder) == "tflite"
    tm.half_plus_two(tmp_path / "saved")
    with pytest.raises(FailedPrecondition, match=r"No model\.tflite in"):
        platforms.load("m", "tflite", tmp_path / "saved" / "1", LoadOptions())


# ---- behind a real server: TF Serving's REST and gRPC ----------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models: dict[str, bytes], both: Path) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("tflite_models")
    lm.write(root / "half", 1, models["half"])
    lm.write(root / "strings", 1, models["strings"])
    lm.write(root / "tfs", 123, models["tfs"])
    lm.write(root / "tfs_sigdef", 123, models["tfs_sigdef"])
    bases = {"half": root / "half", "strings": root / "strings", "tfs": root / "tfs", "tfs_sigdef": root / "tfs_sigdef"}
    bases["both"] = both.parent
    entries = [f'config {{ name: "{n}" base_path: "{p}" model_platform: "tensorflow" }}' for n, p in bases.items()]
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    with running_server(f"--model_config_file={config}") as s:
        yield s


def rest(server: ServerThread, method: str, path: str, doc: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=30)
    try:
        conn.request(method, path, body=None if doc is None else json.dumps(doc))
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_rest_predict_and_metadata(server: ServerThread) -> None:
    assert rest(server, "POST", "/v1/models/half:predict", {"instances": [1.0, 2.0, 5.0]}) == (
        200,
        {"predictions": [2.5, 3.0, 4.5]},
    )
    status, doc = rest(server, "GET", "/v1/models/half/metadata")
    assert status == 200
    assert doc["model_spec"] == {"name": "half", "signature_name": "", "version": "1"}
    sig = doc["metadata"]["signature_def"]["signature_def"][DEFAULT]
    assert sig == {
        "inputs": {
            "x": {
                "dtype": "DT_FLOAT",
                "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
                "name": "serving_default_x:0",
            }
        },
        "outputs": {
            "y": {
                "dtype": "DT_FLOAT",
                "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
                "name": "PartitionedCall:0",
            }
        },
        "method_name": "tensorflow/serving/predict",
        "defaults": {},
    }


def test_rest_strings_and_runtime_errors(server: ServerThread) -> None:
    # Base64 in (TF Serving's {"b64": ...}); text out, the output alias not ending in "_bytes".
    body = {"inputs": {"text": [{"b64": base64.b64encode("hé".encode()).decode()}, "plain"], "pick": [1, 0]}}
    assert rest(server, "POST", "/v1/models/strings:predict", body) == (200, {"outputs": ["plain", "hé"]})
    status, doc = rest(server, "POST", "/v1/models/strings:predict", {"inputs": {"text": ["a"], "pick": [5]}})
    assert status == 400 and "gather index out of bounds" in doc["error"]


def test_rest_a_folder_with_both_formats_serves_the_saved_model_by_default(server: ServerThread) -> None:
    assert rest(server, "POST", "/v1/models/both:predict", {"instances": [2.0]}) == (200, {"predictions": [3.0]})


@pytest.mark.parametrize("flag", ["--prefer_tflite_model", "--use_tflite_model=true"])
def test_the_prefer_flags_serve_the_tflite_model_of_a_folder_with_both(both: Path, flag: str) -> None:
    with running_server(f"--model_base_path={both.parent}", "--model_name=both", flag) as s:
        assert rest(s, "POST", "/v1/models/both:predict", {"instances": [2.0]}) == (200, {"predictions": [4.0]})


def grpc_predict(server: ServerThread, name: str, x: np.ndarray, output_filter: list[str]) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = DEFAULT
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    request.output_filter.extend(output_filter)
    with grpc.insecure_channel(server.grpc_target) as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 30.0)


@pytest.mark.parametrize(("name", "output"), [("tfs", "Identity"), ("tfs_sigdef", "y")])
def test_grpc_predict_like_tf_servings_tflite_tests(server: ServerThread, name: str, output: str) -> None:
    """TF Serving's testPredictOnTfLite and testPredictWithSignatureDefOnTfLite: x = 2.0 gives y = 3.0."""
    for output_filter in ([output], []):
        response = grpc_predict(server, name, np.array([[2.0]], np.float32), output_filter)
        assert response.outputs[output].dtype == tf.float32.as_datatype_enum
        assert list(response.outputs[output].float_val) == [3.0]
        assert (response.model_spec.name, response.model_spec.signature_name) == (name, DEFAULT)
        assert response.model_spec.version.value == 123


def test_grpc_metadata(server: ServerThread) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "tfs_sigdef"
    request.metadata_field.append("signature_def")
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, 30.0)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    default = signatures.signature_def[DEFAULT]
    assert default.method_name == "tensorflow/serving/predict"
    assert default.inputs["x"].name == "tflite_input"
    assert default.inputs["x"].dtype == tf.float32.as_datatype_enum
    assert [d.size for d in default.inputs["x"].tensor_shape.dim] == [-1, 1]
    assert list(default.outputs) == ["y"]
