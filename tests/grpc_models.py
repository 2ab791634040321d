"""ONNX models and a model repository for the gRPC and client tests (classify/regress shapes included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from . import onnx_models as om

# Every dtype onnxruntime takes from numpy through an Identity (not bfloat16: its Python binding refuses
# ml_dtypes arrays, nor complex: no kernels), by ONNX type -> numpy dtype.
IDENTITY_DTYPES = {
    "float": (TensorProto.FLOAT, np.float32),
    "double": (TensorProto.DOUBLE, np.float64),
    "int32": (TensorProto.INT32, np.int32),
    "uint8": (TensorProto.UINT8, np.uint8),
    "int16": (TensorProto.INT16, np.int16),
    "int8": (TensorProto.INT8, np.int8),
    "int64": (TensorProto.INT64, np.int64),
    "bool": (TensorProto.BOOL, np.bool_),
    "uint16": (TensorProto.UINT16, np.uint16),
    "uint32": (TensorProto.UINT32, np.uint32),
    "uint64": (TensorProto.UINT64, np.uint64),
    "half": (TensorProto.FLOAT16, np.float16),
    "string": (TensorProto.STRING, object),
}
MLP_SIZES = [784, 128, 10]
MLP_SEED = 11


def echo_examples_classifier() -> bytes:
    """TF Serving's classify shape: DT_STRING ``inputs`` [batch] -> ``classes`` = the example bytes
    ([batch, 1]) and ``scores`` = 0.5 ([batch, 1]), so tests can see exactly what was fed."""
    nodes = [
        helper.make_node("Unsqueeze", ["inputs", "axis1"], ["classes"]),
        helper.make_node("Shape", ["classes"], ["shape"]),
        helper.make_node("Expand", ["half", "shape"], ["scores"]),
    ]
    return om.model(
        nodes,
        [helper.make_tensor_value_info("inputs", TensorProto.STRING, ["batch"])],
        [
            helper.make_tensor_value_info("classes", TensorProto.STRING, ["batch", 1]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 1]),
        ],
        [
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
            numpy_helper.from_array(np.array([[0.5]], dtype=np.float32), "half"),
        ],
    )


def constant_regressor() -> bytes:
    """TF Serving's regress shape: DT_STRING ``inputs`` [batch] -> ``outputs`` = 1.5 per example."""
    return om.model(
        [
            helper.make_node("Shape", ["inputs"], ["shape"]),
            helper.make_node("Expand", ["value", "shape"], ["outputs"]),
        ],
        [helper.make_tensor_value_info("inputs", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(np.array([1.5], dtype=np.float32), "value")],
    )


def feature_scorer() -> bytes:
    """By-name feeding: ``x`` float [batch, 2], ``k`` int64 [batch] -> ``scores`` = 2 x + k; ``total``."""
    return om.model(
        [
            helper.make_node("Mul", ["x", "two"], ["x2"]),
            helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["kf", "axis1"], ["kcol"]),
            helper.make_node("Add", ["x2", "kcol"], ["scores"]),
            helper.make_node("ReduceSum", ["scores", "axis1"], ["total"], keepdims=0),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("k", TensorProto.INT64, ["batch"]),
        ],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch"]),
        ],
        [
            numpy_helper.from_array(np.float32(2.0), "two"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )


def feature_regressor() -> bytes:
    """By-name feeding with one output of another name: ``x`` float [batch, 2] -> ``y`` = x0 - x1."""
    return om.model(
        [
            helper.make_node("Mul", ["x", "signs"], ["signed"]),
            helper.make_node("ReduceSum", ["signed", "axis1"], ["y"], keepdims=0),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        [
            numpy_helper.from_array(np.array([1.0, -1.0], dtype=np.float32), "signs"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )


def mlp_weights() -> list[tuple[np.ndarray, np.ndarray]]:
    return om.random_weights(MLP_SIZES, seed=MLP_SEED)


def build_repository(root: Path) -> Path:
    """Models for the gRPC tests; returns the models.config path."""
    for name, (onnx_type, _) in IDENTITY_DTYPES.items():
        om.write(root / f"id_{name}", 1, om.identity(onnx_type, ["batch", 2]))
    om.write(root / "half", 1, om.half_plus_two())
    for version in (1, 2, 3):
        om.write(root / "versions", version, om.version_marker(version))
    om.write(root / "two", 1, om.two_in_two_out())
    om.write(root / "mlp", 1, om.mlp(mlp_weights()))
    om.write(root / "tf_classify", 1, echo_examples_classifier())
    om.write(root / "tf_regress", 1, constant_regressor())
    om.write(root / "by_name", 1, feature_scorer())
    om.write(root / "by_name_regress", 1, feature_regressor())
    names = [p.name for p in sorted(root.iterdir()) if p.is_dir() and p.name != "versions"]
    entries = [model_entry(root, n) for n in names]
    entries.append(
        f'config {{ name: "versions" base_path: "{root / "versions"}" model_platform: "onnx" '
        "model_version_policy { all {} } "
        'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 } }'
    )
    config = root / "models.config"
    config.write_text(config_text(entries))
    return config


def model_entry(root: Path, name: str) -> str:
    return f'config {{ name: "{name}" base_path: "{root / name}" model_platform: "onnx" }}'


def config_text(entries: list[str]) -> str:
    return "model_config_list {\n" + "\n".join(entries) + "\n}\n"
