"""``modelserve demo``: build a small model repository and serve it on 8500/8501.

The repository is generated deterministically (fixed seeds), so the same
request always gets the same answer:

    half_plus_two/{1,2}/model.onnx   y = 0.5 * x + 2 (any shape), like TF Serving's test model
    mnist/{1,2}/model.onnx           an MNIST-shaped MLP 784 -> 128 -> 10 (softmax), different weights
    models.config                    TF Serving's text-format ModelServerConfig for both
                                     (mnist serves both versions: ``model_version_policy { all {} }``)
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def half_plus_two(scale: float = 0.5, offset: float = 2.0) -> bytes:
    """ONNX bytes of ``y = scale * x + offset`` with input ``x`` of unknown shape."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "a"], ["ax"]), helper.make_node("Add", ["ax", "b"], ["y"])],
        "half_plus_two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(np.array(scale, dtype=np.float32), "a"),
            numpy_helper.from_array(np.array(offset, dtype=np.float32), "b"),
        ],
    )
    return _serialize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def mlp(sizes: Sequence[int], seed: int, softmax: bool = True) -> bytes:
    """ONNX bytes of a ReLU MLP with input ``input`` [-1, sizes[0]] and output ``output``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "input"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [f"h{i}"])]
        current = f"h{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [current], [f"r{i}"]))
            current = f"r{i}"
    if softmax:
        nodes.append(helper.make_node("Softmax", [current], ["output"], axis=-1))
    else:
        nodes.append(helper.make_node("Identity", [current], ["output"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", sizes[-1]])],
        initializer=inits,
    )
    return _serialize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _serialize(model: object) -> bytes:
    # Not onnx.checker: it insists on a shape for every graph input, and half_plus_two's
    # ``x`` deliberately has none (any shape works, as with TF Serving's model).
    return model.SerializeToString()  # type: ignore[attr-defined, no-any-return]


def build_repository(root: Path) -> Path:
    """Write the demo repository under ``root``; returns the models.config path."""
    models = {
        "half_plus_two": {1: half_plus_two(), 2: half_plus_two()},
        "mnist": {1: mlp([784, 128, 10], seed=1), 2: mlp([784, 128, 10], seed=2)},
    }
    for name, versions in models.items():
        for version, blob in versions.items():
            folder = root / name / str(version)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "model.onnx").write_bytes(blob)
    config = root / "models.config"
    policies = {"mnist": "\n    model_version_policy { all {} }"}  # serve both versions side by side
    entries = "".join(
        f'  config {{\n    name: "{name}"\n    base_path: "{(root / name).absolute()}"\n'
        f'    model_platform: "tensorflow"{policies.get(name, "")}\n  }}\n'
        for name in models
    )
    config.write_text(f"model_config_list {{\n{entries}}}\n")
    return config


USAGE = """\
usage: modelserve demo [--dir=DIR] [flags]

Writes a small model repository to DIR (default ./demo_models): ONNX half_plus_two (versions 1
and 2; the newest, 2, is served) and an MNIST-shaped MLP (versions 1 and 2, both served), then
serves it like `modelserve --model_config_file=DIR/models.config`, on gRPC :8500 and REST :8501
unless --port / --rest_api_port say otherwise (-1: any free port). Once the ports are open it
prints example requests. Any server flag may follow (modelserve --help lists them), except
--model_base_path and --model_config_file."""

EXAMPLES = """\
modelserve demo: serving {root}
  REST on :{rest}, gRPC on :{grpc}. Try:

  curl localhost:{rest}/v1/models/half_plus_two
  curl -d '{{"instances": [1.0, 2.0, 5.0]}}' localhost:{rest}/v1/models/half_plus_two:predict
  curl -d '{{"inputs": {{"x": [[1.0], [2.0]]}}}}' localhost:{rest}/v1/models/half_plus_two/versions/2:predict
  curl localhost:{rest}/v1/models/mnist                    # versions 1 and 2 are both served
  curl localhost:{rest}/v1/models/mnist/versions/1/metadata
  python -c "import json; print(json.dumps({{'instances': [[0.5] * 784]}}))" | \\
      curl -d @- localhost:{rest}/v1/models/mnist:predict
  curl localhost:{rest}/readyz                             # the readiness probe
  curl -s localhost:{rest}/metrics | grep modelserve_requests_total

  Watch it live at http://localhost:{rest}/dashboard; the REST API is described at http://localhost:{rest}/docs
"""


def banner(root: Path, rest_port: int | None, grpc_port: int | None) -> str:
    """The examples, with the ports the server really bound (``--port=-1`` picks any free one)."""
    return EXAMPLES.format(root=root.absolute(), rest=rest_port, grpc=grpc_port)


def main(argv: Sequence[str]) -> int:
    from .options import UsageError, parse_flags
    from .server import Server, run

    args = list(argv)
    if any(arg in ("-h", "--help") for arg in args):
        print(USAGE)
        return 0
    root = Path("demo_models")
    for arg in list(args):
        if arg.startswith("--dir="):
            root = Path(arg.partition("=")[2])
            args.remove(arg)
    options = parse_flags(["--port=8500", "--rest_api_port=8501", *args])
    if options.model_base_path or options.model_config_file:
        raise UsageError("modelserve demo serves its own models; drop --model_base_path and --model_config_file")
    options = options.replace(model_config_file=str(build_repository(root)))

    def started(server: Server) -> None:
        print(banner(root, server.rest_port, server.grpc_port), file=sys.stderr, flush=True)

    return run(options, started)
