"""Small deterministic ONNX models built with onnx.helper for the tests."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def model(nodes: list, inputs: list, outputs: list, inits: Sequence = ()) -> bytes:
    """A serialized opset-17 model of one graph (the builders below and other test helpers use it)."""
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=OPSET).SerializeToString()


def half_plus_two() -> bytes:
    """y = 0.5 x + 2 on float32 ``x`` of any shape (TF Serving's test model, in ONNX)."""
    return model(
        [helper.make_node("Mul", ["x", "a"], ["ax"]), helper.make_node("Add", ["ax", "b"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.float32(0.5), "a"), numpy_helper.from_array(np.float32(2.0), "b")],
    )


def identity(
    elem_type: int, shape: Sequence[int | str | None] | None = ("batch",), name_in: str = "x", name_out: str = "y"
) -> bytes:
    return model(
        [helper.make_node("Identity", [name_in], [name_out])],
        [helper.make_tensor_value_info(name_in, elem_type, shape)],
        [helper.make_tensor_value_info(name_out, elem_type, shape)],
    )


def two_in_two_out() -> bytes:
    """a: float [-1, 2], b: int64 [-1] -> sum = a + b[:, None] (float), twice_b = 2 b (int64)."""
    return model(
        [
            helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["bf", "axes"], ["bcol"]),
            helper.make_node("Add", ["a", "bcol"], ["sum"]),
            helper.make_node("Add", ["b", "b"], ["twice_b"]),
        ],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch"]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("twice_b", TensorProto.INT64, ["batch"]),
        ],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )


def mlp(weights: Sequence[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """A ReLU MLP with input ``input`` and output ``output`` (no final activation)."""
    nodes, inits, current = [], [], "input"
    for i, (w, b) in enumerate(weights):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [f"h{i}"]))
        current = f"h{i}"
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"r{i}"]))
            current = f"r{i}"
    nodes.append(helper.make_node("Identity", [current], ["output"]))
    return model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", weights[0][0].shape[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", weights[-1][0].shape[1]])],
        inits,
    )


def mlp_reference(weights: Sequence[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    """The same MLP in numpy (float64 accumulation), for expected values."""
    h = x.astype(np.float64)
    for i, (w, b) in enumerate(weights):
        h = h @ w.astype(np.float64) + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0)
    return h


def random_weights(sizes: Sequence[int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        ((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), rng.standard_normal(b).astype(np.float32))
        for a, b in itertools.pairwise(sizes)
    ]


def version_marker(version: int) -> bytes:
    """y = x * 0 + version: each version answers with its own number."""
    return model(
        [helper.make_node("Mul", ["x", "zero"], ["z"]), helper.make_node("Add", ["z", "v"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.float32(version), "v")],
    )


def write(base: Path, version: int, blob: bytes, filename: str = "model.onnx") -> Path:
    folder = base / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / filename).write_bytes(blob)
    return folder


def slow(steps: int = 10, size: int = 512) -> bytes:
    """y = tanh-ish chain of ``steps`` [size, size] matmuls on input ``x`` [size, size]: takes a while."""
    w = (np.eye(size) * 0.5).astype(np.float32)
    nodes, current = [], "x"
    for i in range(steps):
        nodes.append(helper.make_node("MatMul", [current, "w"], [f"m{i}"]))
        current = f"m{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    return model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])],
        [numpy_helper.from_array(w, "w")],
    )


def simple() -> bytes:
    """Triton's ``simple`` example model: FP32 INPUT0, INPUT1 [-1, 16] -> OUTPUT0 = sum, OUTPUT1 = difference."""
    return model(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 16]) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 16]) for n in ("OUTPUT0", "OUTPUT1")],
    )


# Every KServe V2 datatype with its ONNX element type (for ``identities``).
V2_ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}
# BF16 is left out: onnxruntime's Python binding takes no ml_dtypes.bfloat16 array as an input
# ("Numpy_type 256 can't be converted to MLDataType"); the V2 codecs' tests cover BF16.


def identities(datatypes: Sequence[str] = tuple(V2_ONNX_TYPES)) -> bytes:
    """One Identity per V2 datatype (all but BF16 by default): input ``x_<DATATYPE>`` [-1, -1] -> output
    ``y_<DATATYPE>``."""
    types = {name: V2_ONNX_TYPES[name] for name in datatypes}
    nodes = [helper.make_node("Identity", [f"x_{name}"], [f"y_{name}"]) for name in types]
    inputs = [helper.make_tensor_value_info(f"x_{n}", t, ["a", "b"]) for n, t in types.items()]
    outputs = [helper.make_tensor_value_info(f"y_{n}", t, ["a", "b"]) for n, t in types.items()]
    return model(nodes, inputs, outputs)
