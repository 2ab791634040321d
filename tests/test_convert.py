"""``modelserve convert``: real source models built here, converted into versions, served, and compared.

Each command must write the next free version, print the max abs difference it measured against the
source, and the served answers (REST, through a real server) must match the source model's.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelserve.cli import main
from modelserve.testing import running_server

from . import onnx_models as om

HAS_TF = importlib.util.find_spec("tensorflow") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("onnxscript") is not None
HAS_SKL = importlib.util.find_spec("skl2onnx") is not None
needs_tf = [pytest.mark.tensorflow, pytest.mark.skipif(not HAS_TF, reason="needs the tensorflow extra")]
needs_torch = [
    pytest.mark.torch,
    pytest.mark.skipif(not HAS_TORCH, reason="needs the torch and convert extras"),
]
needs_skl = pytest.mark.skipif(not HAS_SKL, reason="needs the convert extra (skl2onnx)")
WEIGHTS = om.random_weights([4, 8, 3], seed=21)
X = np.random.default_rng(5).standard_normal((6, 4)).astype(np.float32)


def convert(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["convert", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def diffs(output: str) -> dict[str, float]:
    return {m[0]: float(m[1]) for m in re.findall(r"max abs difference (\S+): (\S+)", output)}


def predict(base: Path, doc: dict[str, Any], version: int) -> Any:
    with running_server("--model_name=m", f"--model_base_path={base}") as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=60)
        try:
            conn.request("POST", f"/v1/models/m/versions/{version}:predict", body=json.dumps(doc))
            response = conn.getresponse()
            body = json.loads(response.read())
        finally:
            conn.close()
        assert response.status == 200, body
        return body


# ---- sklearn -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_pickle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    estimator = LogisticRegression(max_iter=500).fit(x, y)
    path = tmp_path_factory.mktemp("skl") / "model.pkl"
    path.write_bytes(pickle.dumps(estimator))
    return path, estimator


@needs_skl
def test_sklearn_refuses_to_unpickle_without_trust(
    classifier_pickle: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = convert(capsys, "sklearn", str(classifier_pickle[0]), str(tmp_path / "m"))
    assert code == 1
    assert "refusing to unpickle" in output and "--trust-pickle" in output
    assert not (tmp_path / "m" / "1").exists()


@needs_skl
def test_sklearn_classifier_to_onnx_serves_the_same_probabilities(
    classifier_pickle: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, estimator = classifier_pickle
    code, output = convert(capsys, "sklearn", str(path), str(tmp_path / "m"), "--trust-pickle")
    assert code == 0, output
    assert (tmp_path / "m" / "1" / "model.onnx").is_file()
    assert set(diffs(output)) == {"label", "probabilities"}
    assert max(diffs(output).values()) < 1e-5
    body = predict(tmp_path / "m", {"inputs": {"input": X.tolist()}}, 1)
    np.testing.assert_allclose(body["outputs"]["probabilities"], estimator.predict_proba(X), atol=1e-5)
    assert body["outputs"]["label"] == estimator.predict(X).tolist()


# ---- torch ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [pytest.param("pt2", marks=needs_torch), pytest.param("pt", marks=needs_torch)])
def test_torch_to_onnx_has_a_dynamic_batch_and_serves_the_same(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from . import torch_models as tm

    base = tmp_path / "m"
    om.write(base, 1, om.half_plus_two())  # an existing version: the conversion becomes version 2
    if kind == "pt2":
        folder = tm.export(tm.Mlp(WEIGHTS), (tm.torch.ones(2, 4),), tmp_path / "src")
        args = [str(folder / "model.pt2"), str(base), "--output", "output"]
    else:
        folder = tm.script(tm.Mlp(WEIGHTS), tmp_path / "src")
        args = [str(folder / "model.pt"), str(base), "--input", "input:float32:-1,4", "--output", "output"]
    code, output = convert(capsys, "torch", *args)
    assert code == 0, output
    assert (base / "2" / "model.onnx").is_file()
    assert diffs(output)["output"] < 1e-5
    body = predict(base, {"instances": X.tolist()}, 2)  # 6 rows: not the batch size exported with
    np.testing.assert_allclose(body["predictions"], om.mlp_reference(WEIGHTS, X), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", [pytest.param("pt2", marks=needs_torch), pytest.param("pt", marks=needs_torch)])
def test_torch_straight_into_the_repository_as_pt2(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from . import torch_models as tm

    if kind == "pt2":
        source = tm.half_plus_two_pt2(tmp_path / "src") / "model.pt2"
        extra: list[str] = []
    else:
        source = tm.script(tm.Mlp(WEIGHTS), tmp_path / "src") / "model.pt"
        extra = ["--input", "input:float32:-1,4", "--output", "output"]
    code, output = convert(capsys, "torch", str(source), str(tmp_path / "m"), "--to", "pt2", *extra)
    assert code == 0, output
    assert (tmp_path / "m" / "1" / "model.pt2").is_file()
    assert max(diffs(output).values()) < 1e-5
    if kind == "pt2":
        body = predict(tmp_path / "m", {"instances": [1.0, 4.0, 6.0]}, 1)
        assert body == {"predictions": [2.5, 4.0, 5.0]}
    else:
        body = predict(tmp_path / "m", {"instances": X.tolist()}, 1)
        np.testing.assert_allclose(body["predictions"], om.mlp_reference(WEIGHTS, X), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dummy", [pytest.param(0, marks=needs_torch)])
def test_torchscript_without_inputs_says_which_step_failed(
    dummy: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from . import torch_models as tm

    source = tm.script(tm.Mlp(WEIGHTS), tmp_path / "src") / "model.pt"
    code, output = convert(capsys, "torch", str(source), str(tmp_path / "m"))
    assert code == 1
    assert "needs --input NAME:DTYPE:SHAPE for each of ['input']" in output
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


# ---- TensorFlow ----------------------------------------------------------------------------


@pytest.mark.parametrize("dummy", [pytest.param(0, marks=needs_tf)])
def test_frozen_graph_to_saved_model_with_aliases(
    dummy: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from . import tf_models

    source = tmp_path / "frozen.pb"
    source.write_bytes(tf_models.frozen_graph(WEIGHTS))
    base = tmp_path / "m"
    args = [str(source), str(base), "--input", "features=input", "--output", "scores=logits:0"]
    code, output = convert(capsys, "pb", *args)
    assert code == 0, output
    assert (base / "1" / "saved_model.pb").is_file()
    assert diffs(output)["scores"] < 1e-5
    body = predict(base, {"inputs": {"features": X.tolist()}}, 1)
    np.testing.assert_allclose(body["outputs"], om.mlp_reference(WEIGHTS, X), rtol=1e-4, atol=1e-4)
    code, output = convert(capsys, "pb", str(source), str(base), "--input", "features=nope", "--output", "s=logits")
    assert code == 1
    assert "input 'features': the graph has no tensor nope:0" in output


@pytest.mark.parametrize("suffix", [pytest.param(".keras", marks=needs_tf), pytest.param(".h5", marks=needs_tf)])
def test_keras_to_saved_model_serves_the_same(suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((4,), name="features")
    outputs = keras.layers.Dense(3, name="logits")(keras.layers.Dense(8, activation="relu")(inputs))
    model = keras.Model(inputs, outputs)
    source = tmp_path / f"model{suffix}"
    with warnings.catch_warnings():  # Keras warns about .h5 and numpy about Keras' __array__
        warnings.simplefilter("ignore")
        model.save(source)
    code, output = convert(capsys, "keras", str(source), str(tmp_path / "m"))
    assert code == 0, output
    assert diffs(output)["logits"] < 1e-5
    body = predict(tmp_path / "m", {"inputs": {"features": X.tolist()}}, 1)
    np.testing.assert_allclose(body["outputs"], np.asarray(model(X)), rtol=1e-4, atol=1e-4)


# ---- the command as a newcomer meets it (a real process) ----------------------------------------


def run_cli(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    paths = [str(pythonpath)] if pythonpath else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(Path(__file__).parents[1])])}
    return subprocess.run(
        [sys.executable, "-m", "modelserve", "convert", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_convert_help_is_plain_text() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert "modelserve convert: turn a model" in result.stdout
    assert "``" not in result.stdout


def test_a_missing_converter_package_names_the_extra(tmp_path: Path) -> None:
    # A package on the path that imports as if it were not installed.
    (tmp_path / "skl2onnx").mkdir()
    (tmp_path / "skl2onnx/__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'skl2onnx'\", name='skl2onnx')\n"
    )
    result = run_cli("sklearn", str(tmp_path / "m.pkl"), str(tmp_path / "base"), "--trust-pickle", pythonpath=tmp_path)
    assert result.returncode == 1
    assert "No module named 'skl2onnx': pip install 'modelserve[convert]'" in result.stderr
    assert "Traceback" not in result.stderr
