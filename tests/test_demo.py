"""The demo repository: built deterministically, served, answers checked with numpy."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from modelserve.demo import build_repository
from modelserve.testing import running_server


def _post(url: str, doc: object) -> dict:
    req = urllib.request.Request(url, data=json.dumps(doc).encode())
    return json.load(urllib.request.urlopen(req, timeout=30))  # type: ignore[no-any-return]


def _numpy_forward(model_path: Path, x: np.ndarray) -> np.ndarray:
    """The MLP computed from the file's weights with numpy (Gemm + ReLU, softmax at the end)."""
    weights = {
        t.name: numpy_helper.to_array(t).astype(np.float64) for t in onnx.load(str(model_path)).graph.initializer
    }
    h = x.astype(np.float64)
    layers = sorted({k[1:] for k in weights if k.startswith("w")})
    for i, layer in enumerate(layers):
        h = h @ weights[f"w{layer}"] + weights[f"b{layer}"]
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_demo_repository_is_deterministic(tmp_path: Path) -> None:
    build_repository(tmp_path / "a")
    build_repository(tmp_path / "b")
    for rel in ["half_plus_two/1/model.onnx", "mnist/1/model.onnx", "mnist/2/model.onnx"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert (tmp_path / "a/mnist/1/model.onnx").read_bytes() != (tmp_path / "a/mnist/2/model.onnx").read_bytes()


def test_demo_models_serve(tmp_path: Path) -> None:
    config = build_repository(tmp_path)
    with running_server(f"--model_config_file={config}") as server:
        assert _post(f"{server.rest_url}/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0, 5.0]}) == {
            "predictions": [2.5, 3.0, 4.5]
        }
        x = np.random.default_rng(3).random((2, 784), dtype=np.float32)
        for version in (1, 2):
            got = _post(f"{server.rest_url}/v1/models/mnist/versions/{version}:predict", {"instances": x.tolist()})
            expected = _numpy_forward(tmp_path / f"mnist/{version}/model.onnx", x)
            np.testing.assert_allclose(np.array(got["predictions"]), expected, rtol=1e-4, atol=1e-6)
