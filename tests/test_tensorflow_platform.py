"""The TensorFlow platform alone: SignatureDefs as TF Serving shows them, both loaders, strings, errors."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs the tensorflow extra: pip install 'modelserve[tensorflow]'")

from modelserve.dtypes import DType
from modelserve.errors import FailedPrecondition, InvalidArgument, NotFound
from modelserve.platforms import LoadOptions, detect
from modelserve.platforms import tensorflow as tfp
from modelserve.signatures import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD, TensorSpec

from . import onnx_models as om
from . import tf_models

pytestmark = pytest.mark.tensorflow
LOADERS = ["function", "session"]


def example(**features: float) -> bytes:
    from modelserve.protos import pb

    ex = pb.Example()
    for name, value in features.items():
        ex.features.feature[name].float_list.value.append(value)
    return bytes(ex.SerializeToString())


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tf")
    return {
        "hp2_v1": tf_models.half_plus_two_v1(root / "hp2_v1"),
        "hp3_v1": tf_models.half_plus_three_v1(root / "hp3_v1"),
        "two_signatures": tf_models.two_signatures(root / "two_signatures"),
        "hp2": tf_models.half_plus_two(root / "hp2"),
        "strings": tf_models.string_identity(root / "strings"),
        "cond": tf_models.cond_with_training_placeholder_v1(root / "cond"),
        "mlp": tf_models.mlp(root / "mlp", om.random_weights([4, 8, 3], seed=3)),
    }


def load(path: Path, loader: str = "auto", **options: object) -> tfp.FunctionServable | tfp.SessionServable:
    return tfp.load(path, LoadOptions(extra={tfp.LOADER_KEY: loader}, **options))  # type: ignore[arg-type]


def test_saved_model_folders_are_detected_as_tensorflow(models: dict[str, Path]) -> None:
    assert detect(models["hp2"]) == "tensorflow"


@pytest.mark.parametrize("loader", LOADERS)
def test_tf1_half_plus_two_signatures_are_tf_servings(models: dict[str, Path], loader: str) -> None:
    sigs = load(models["hp2_v1"], loader).signatures
    assert set(sigs) == {"serving_default", "regress_x_to_y", "regress_x_to_y2", "regress_x2_to_y3", "classify_x_to_y"}
    default = sigs["serving_default"]
    assert default.inputs == {"x": TensorSpec("x:0", DType.DT_FLOAT, (-1, 1))}
    assert default.outputs == {"y": TensorSpec("y:0", DType.DT_FLOAT, (-1, 1))}
    assert default.method_name == PREDICT_METHOD
    assert sigs["classify_x_to_y"].method_name == CLASSIFY_METHOD
    assert sigs["classify_x_to_y"].inputs == {"inputs": TensorSpec("tf_example:0", DType.DT_STRING, (-1,))}
    assert sigs["classify_x_to_y"].outputs == {"scores": TensorSpec("y:0", DType.DT_FLOAT, (-1, 1))}
    assert sigs["regress_x2_to_y3"].method_name == REGRESS_METHOD
    assert sigs["regress_x2_to_y3"].inputs == {"inputs": TensorSpec("x2:0", DType.DT_FLOAT, (-1, 1))}


def test_tf2_init_op_signature_is_not_exposed(models: dict[str, Path]) -> None:
    saved = tfp.read_saved_model(models["hp2"])
    assert "__saved_model_init_op" in saved.meta_graphs[0].signature_def  # TF lists it...
    sigs = load(models["hp2"]).signatures
    assert list(sigs) == ["serving_default"]  # ...but it cannot be called
    assert sigs["serving_default"].inputs["x"] == TensorSpec("serving_default_x:0", DType.DT_FLOAT, (-1,))


@pytest.mark.parametrize("loader", LOADERS)
def test_predict_half_plus_two(models: dict[str, Path], loader: str) -> None:
    x = np.array([[1.0], [2.0], [5.0]], np.float32)
    out = load(models["hp2_v1"], loader).predict("serving_default", {"x": x})
    np.testing.assert_array_equal(out["y"], 0.5 * x + 2)
    assert out["y"].dtype == np.float32


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("model, offset", [("hp2_v1", 2.0), ("hp3_v1", 3.0)])
def test_the_graph_not_the_declared_shape_decides(
    models: dict[str, Path], loader: str, model: str, offset: float
) -> None:
    # x is declared [-1,1]; TF Serving's C++ session feeds [3] and [1] alike and the ops take them.
    # Python's Session.run would refuse them ("Cannot feed value of shape (3,) ...") before the graph.
    servable = load(models[model], loader)
    for x in ([1.0, 2.0, 5.0], [2.0], [[1.0, 2.0]]):
        got = servable.predict("serving_default", {"x": np.array(x, np.float32)})["y"]
        np.testing.assert_array_equal(got, 0.5 * np.array(x, np.float32) + offset)


@pytest.mark.parametrize("loader", LOADERS)
def test_what_the_graph_refuses_is_invalid_argument_in_tfs_words(models: dict[str, Path], loader: str) -> None:
    servable = load(models["mlp"], loader)
    with pytest.raises(InvalidArgument, match=r"Matrix size-incompatible: In\[0\]: \[2,3\], In\[1\]: \[4,8\]"):
        servable.predict("serving_default", {"input": np.zeros((2, 3), np.float32)})
    assert servable.predict("serving_default", {"input": np.zeros((2, 4), np.float32)})["output"].shape == (2, 3)


def test_a_fetched_input_is_answered_with_the_value_fed(models: dict[str, Path]) -> None:
    # A signature may name one tensor as input and output; the C++ callable refuses to feed and fetch one tensor.
    loaded = load(models["hp2_v1"], "session")
    assert isinstance(loaded, tfp.SessionServable)
    sig = loaded.signatures["serving_default"]
    echo = dataclasses.replace(sig, outputs={"x": sig.inputs["x"], **sig.outputs})
    servable = tfp.SessionServable(loaded._session, {"echo": echo})
    out = servable.predict("echo", {"x": np.array([4.0], np.float32)})
    assert out["x"].tolist() == [4.0] and out["y"].tolist() == [4.0]


@pytest.mark.parametrize("loader", LOADERS)
def test_two_signatures_of_a_tf2_model(models: dict[str, Path], loader: str) -> None:
    servable = load(models["two_signatures"], loader)
    x = {"x": np.array([2.0], np.float32)}
    assert servable.predict("serving_default", x)["y"].tolist() == 1.0
    assert servable.predict("custom_signature_key", x)["y"].tolist() == 2.0


@pytest.mark.parametrize("loader", LOADERS)
def test_regress_signature_takes_serialized_examples(models: dict[str, Path], loader: str) -> None:
    batch = np.array([example(x=1.0), example(x=3.0, x2=10.0)], dtype=object)
    run = load(models["hp2_v1"], loader).predict
    np.testing.assert_array_equal(run("regress_x_to_y", {"inputs": batch})["outputs"], [[2.5], [3.5]])
    np.testing.assert_array_equal(run("regress_x_to_y2", {"inputs": batch})["outputs"], [[3.5], [4.5]])
    np.testing.assert_array_equal(run("classify_x_to_y", {"inputs": batch})["scores"], [[2.5], [3.5]])


@pytest.mark.parametrize("loader", LOADERS)
def test_strings_in_and_out_are_object_arrays_of_bytes(models: dict[str, Path], loader: str) -> None:
    x = np.array([b"hello", b"\xff\x00binary", b""], dtype=object)
    y = load(models["strings"], loader).predict("serving_default", {"x": x})["y"]
    assert y.dtype == object
    assert list(y) == list(x)


def test_mlp_matches_numpy(models: dict[str, Path]) -> None:
    x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    out = load(models["mlp"]).predict("serving_default", {"input": x})["output"]
    want = om.mlp_reference(om.random_weights([4, 8, 3], seed=3), x)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_tf1_model_that_functions_cannot_hold_falls_back_to_a_session(models: dict[str, Path]) -> None:
    with pytest.raises(FailedPrecondition, match="load_functions"):
        load(models["cond"], "function")
    servable = load(models["cond"])
    assert servable.loader == "session"
    out = servable.predict("serving_default", {"x": np.array([[1.0, -2.0]], np.float32)})
    np.testing.assert_array_equal(out["y"], [[2.0, -4.0]])


def test_output_filter_returns_only_the_named_outputs(models: dict[str, Path]) -> None:
    servable = load(models["hp2_v1"], "session")
    batch = np.array([example(x=2.0)], dtype=object)
    assert set(servable.predict("regress_x_to_y", {"inputs": batch}, ["outputs"])) == {"outputs"}


@pytest.mark.parametrize("loader", LOADERS)
def test_runtime_errors_are_invalid_argument(models: dict[str, Path], loader: str) -> None:
    with pytest.raises(InvalidArgument, match="Could not parse example input"):
        load(models["hp2_v1"], loader).predict("regress_x_to_y", {"inputs": np.array([b"\x01junk"], object)})


def test_unknown_tags_are_not_found_with_tf_message(models: dict[str, Path]) -> None:
    message = r"Could not find meta graph def matching supplied tags: \{ serve gpu \}"
    with pytest.raises(NotFound, match=message):
        tfp.load(models["hp2"], LoadOptions(saved_model_tags=("serve", "gpu")))


def test_corrupt_saved_model_fails_the_load(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"\x0a\xff\xff not a proto")
    with pytest.raises(FailedPrecondition, match="Cannot read the SavedModel"):
        tfp.load(tmp_path, LoadOptions())


def test_unknown_loader_name_is_rejected(models: dict[str, Path]) -> None:
    with pytest.raises(InvalidArgument, match="tensorflow_loader"):
        load(models["hp2"], "graph")


def test_session_config_carries_the_flags() -> None:
    config = tfp.session_config(LoadOptions(intra_op_threads=3, inter_op_threads=2, gpu_memory_fraction=0.25))
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (3, 2)
    assert config.gpu_options.per_process_gpu_memory_fraction == pytest.approx(0.25)


@pytest.mark.parametrize("loader", LOADERS)
def test_predict_is_thread_safe(models: dict[str, Path], loader: str) -> None:
    servable = load(models["hp2_v1"], loader)

    def worker(seed: int) -> None:
        for i in range(20):
            x = np.full((seed + 1, 1), float(seed * 100 + i), np.float32)
            y = servable.predict("serving_default", {"x": x})["y"]
            np.testing.assert_array_equal(y, 0.5 * x + 2, err_msg=f"thread {seed} call {i}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))  # re-raises a worker's failure here
