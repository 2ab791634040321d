"""Small deterministic SavedModels built with TensorFlow for the tests.

Each builder writes ``<base>/<version>/`` and returns that folder. TF1-style
models use ``tf.compat.v1``'s SavedModelBuilder exactly like TF Serving's own
test models; TF2-style ones use ``tf.Module`` and ``tf.saved_model.save``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def _folder(base: Path, version: int) -> Path:
    folder = base / str(version)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder


def _signature(inputs: dict[str, tf.Tensor], outputs: dict[str, tf.Tensor], method: str) -> object:
    info = v1.saved_model.utils.build_tensor_info
    return v1.saved_model.signature_def_utils.build_signature_def(
        {k: info(t) for k, t in inputs.items()}, {k: info(t) for k, t in outputs.items()}, method
    )


@contextlib.contextmanager
def _builder(folder: Path, extra: dict[str, object] | None = None) -> Iterator[tuple[v1.Session, dict[str, object]]]:
    """A graph session; the caller fills the signature map (and ``extra``, the builder's other
    arguments such as ``main_op``, made in the graph), then it is saved with the variables."""
    signatures: dict[str, object] = {}
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        yield sess, signatures
        sess.run(v1.global_variables_initializer())
        builder = v1.saved_model.builder.SavedModelBuilder(str(folder))
        builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=signatures, **(extra or {}))
        builder.save()


def half_plus_two_v1(base: Path, version: int = 1) -> Path:
    """TF Serving's saved_model_half_plus_two: y = 0.5 x + 2 with predict, regress and classify signatures.

    ``tf_example`` (serialized tf.Example, features ``x`` and optional ``x2``)
    feeds the classify/regress signatures; ``x`` feeds serving_default.
    """
    folder = _folder(base, version)
    with _builder(folder) as (_, signatures):
        a, b, c = v1.Variable(0.5, name="a"), v1.Variable(2.0, name="b"), v1.Variable(3.0, name="c")
        serialized = v1.placeholder(tf.string, name="tf_example", shape=[None])
        features = v1.parse_example(
            serialized,
            {
                "x": v1.FixedLenFeature([1], dtype=tf.float32),
                "x2": v1.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0]),
            },
        )
        x = tf.identity(features["x"], name="x")
        y = tf.identity(a * x + b, name="y")
        y2 = tf.identity(a * x + c, name="y2")
        x2 = tf.identity(features["x2"], name="x2")
        y3 = tf.identity(a * x2 + c, name="y3")
        signatures.update(
            {
                "regress_x_to_y": _signature({"inputs": serialized}, {"outputs": y}, REGRESS),
                "regress_x_to_y2": _signature({"inputs": serialized}, {"outputs": y2}, REGRESS),
                "regress_x2_to_y3": _signature({"inputs": x2}, {"outputs": y3}, REGRESS),
                "classify_x_to_y": _signature({"inputs": serialized}, {"scores": y}, CLASSIFY),
                "serving_default": _signature({"x": x}, {"y": y}, PREDICT),
            }
        )
    return folder


def half_plus_three_v1(base: Path, version: int = 1) -> Path:
    """TF Serving's saved_model_half_plus_three: y = 0.5 x + 3, an older-style TF1 export.

    Like the original it has an asset and a main op that assigns the asset's
    file name to a variable when the model loads, and a ``tf_example``
    placeholder of unknown shape; ``x`` is its parsed ``x`` feature (static
    shape [-1, 1]).
    """
    folder = _folder(base, version)
    asset_dir = folder.parent / f".assets-{version}"
    asset_dir.mkdir(parents=True, exist_ok=True)
    asset = asset_dir / "foo.txt"
    asset.write_text("asset-file-contents")
    extra: dict[str, object] = {}
    with _builder(folder, extra) as (_, signatures):
        a, b = v1.Variable(0.5, name="a"), v1.Variable(3.0, name="b")
        serialized = v1.placeholder(tf.string, name="tf_example")  # no static shape, as the original
        features = v1.parse_example(serialized, {"x": v1.FixedLenFeature([1], dtype=tf.float32)})
        x = tf.identity(features["x"], name="x")
        y = tf.identity(a * x + b, name="y")
        asset_path = tf.constant(str(asset), name="asset_filepath")
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset_path)
        filename = v1.Variable("", name="filename_tensor", trainable=False, collections=[])
        extra["main_op"] = tf.group(v1.assign(filename, asset_path), v1.tables_initializer())
        extra["assets_collection"] = v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS)
        signatures.update(
            {
                "regress_x_to_y": _signature({"inputs": serialized}, {"outputs": y}, REGRESS),
                "serving_default": _signature({"x": x}, {"y": y}, PREDICT),
            }
        )
    return folder


def cond_with_training_placeholder_v1(base: Path, version: int = 1) -> Path:
    """y = 2 x through a TF1 ``cond`` whose untaken branch holds a placeholder.

    A session runs it (the branch is dead); ``tf.saved_model.load`` cannot
    prune it into a function, so only session loading serves it.
    """
    folder = _folder(base, version)
    v1.disable_control_flow_v2()
    try:
        with _builder(folder) as (_, signatures):
            x = v1.placeholder(tf.float32, [None, 2], name="x")

            def training_branch() -> tf.Tensor:
                return x - v1.placeholder(tf.float32, [None, 2], name="labels")

            y = tf.identity(tf.cond(tf.constant(True), lambda: x * 2.0, training_branch), name="y")
            signatures["serving_default"] = _signature({"x": x}, {"y": y}, PREDICT)
    finally:
        v1.enable_control_flow_v2()
    return folder


def frozen_graph(weights: Sequence[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """A frozen GraphDef of the ReLU MLP: input node ``input`` (float [-1, n]), output node ``logits``."""
    graph = tf.Graph()
    with graph.as_default():
        h = v1.placeholder(tf.float32, [None, weights[0][0].shape[0]], name="input")
        for i, (w, b) in enumerate(weights):
            h = tf.matmul(h, tf.constant(w)) + tf.constant(b)
            if i < len(weights) - 1:
                h = tf.nn.relu(h)
        tf.identity(h, name="logits")
    return graph.as_graph_def().SerializeToString()  # type: ignore[no-any-return]


class _HalfPlusTwo(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = tf.Variable(0.5)
        self.b = tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": self.a * x + self.b}


class _Mlp(tf.Module):
    def __init__(self, weights: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__()
        self.layers = [(tf.Variable(w), tf.Variable(b)) for w, b in weights]
        self.serve = tf.function(
            self._forward, input_signature=[tf.TensorSpec([None, weights[0][0].shape[0]], tf.float32)]
        )

    def _forward(self, input: tf.Tensor) -> dict[str, tf.Tensor]:
        h = input
        for i, (w, b) in enumerate(self.layers):
            h = tf.matmul(h, w) + b
            if i < len(self.layers) - 1:
                h = tf.nn.relu(h)
        return {"output": h}


class _StringIdentity(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.identity(x)}


def _save(module: tf.Module, base: Path, version: int) -> Path:
    folder = _folder(base, version)
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return folder


def half_plus_two(base: Path, version: int = 1) -> Path:
    """TF2 half_plus_two: ``x`` float [-1] -> ``y`` = 0.5 x + 2."""
    return _save(_HalfPlusTwo(), base, version)


def mlp(base: Path, weights: Sequence[tuple[np.ndarray, np.ndarray]], version: int = 1) -> Path:
    """TF2 ReLU MLP: ``input`` float [-1, n] -> ``output``."""
    return _save(_Mlp(weights), base, version)


def string_identity(base: Path, version: int = 1) -> Path:
    """TF2 string identity: ``x`` string [-1] -> ``y``."""
    return _save(_StringIdentity(), base, version)


class _TwoSignatures(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
    def one(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.constant(1.0)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
    def two(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.constant(2.0)}


def two_signatures(base: Path, version: int = 1) -> Path:
    """TF2, two signatures taking ``x`` of any shape: serving_default -> y = 1.0, custom_signature_key -> y = 2.0."""
    folder = _folder(base, version)
    module = _TwoSignatures()
    tf.saved_model.save(
        module, str(folder), signatures={"serving_default": module.one, "custom_signature_key": module.two}
    )
    return folder
