"""The PyTorch platform on its own: names and dtypes from the program or signature.json, devices, strings."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra: pip install 'modelserve[torch]'")

from modelserve.dtypes import DType  # noqa: E402
from modelserve.errors import FailedPrecondition, InvalidArgument  # noqa: E402
from modelserve.platforms import (  # noqa: E402
    LoadOptions,
    detect,
    torch_signature,
)
from modelserve.platforms import pytorch as ptp  # noqa: E402
from modelserve.signatures import TensorSpec  # noqa: E402

from . import onnx_models as om  # noqa: E402
from . import torch_models as tm  # noqa: E402

pytestmark = pytest.mark.torch
WEIGHTS = om.random_weights([4, 8, 3], seed=5)


class Pair(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b.to(a.dtype)[:, None], b * 2


class Cast(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.bfloat16) * 2


def test_exported_program_names_inputs_and_dict_outputs(tmp_path: Path) -> None:
    folder = tm.half_plus_two_pt2(tmp_path / "m")
    assert detect(folder) == "pytorch"
    servable = ptp.load(folder, LoadOptions())
    sig = servable.signatures["serving_default"]
    assert sig.inputs == {"x": TensorSpec("x", DType.DT_FLOAT, (-1,))}  # dynamic batch -> -1
    assert sig.outputs == {"y": TensorSpec("y", DType.DT_FLOAT, (-1,))}
    for n in (1, 7):  # any batch size
        x = np.arange(n, dtype=np.float32)
        np.testing.assert_array_equal(servable.predict("serving_default", {"x": x})["y"], 0.5 * x + 2)


def test_exported_tuple_outputs_are_numbered_and_dtypes_come_from_the_program(tmp_path: Path) -> None:
    folder = tm.export(Pair(), (torch.ones(2, 3), torch.arange(2)), tmp_path / "m")
    servable = ptp.load(folder, LoadOptions())
    sig = servable.signatures["serving_default"]
    assert sig.inputs == {"a": TensorSpec("a", DType.DT_FLOAT, (-1, 3)), "b": TensorSpec("b", DType.DT_INT64, (-1,))}
    assert list(sig.outputs) == ["output_0", "output_1"]
    assert sig.outputs["output_1"].dtype == DType.DT_INT64
    a, b = np.ones((4, 3), np.float32), np.arange(4, dtype=np.int64)
    out = servable.predict("serving_default", {"a": a, "b": b}, ["output_1"])
    assert list(out) == ["output_1"]
    np.testing.assert_array_equal(out["output_1"], b * 2)


def test_signature_file_renames_an_exported_programs_outputs(tmp_path: Path) -> None:
    servable = ptp.load(tm.mlp_pt2(tmp_path / "m", WEIGHTS), LoadOptions())
    sig = servable.signatures["serving_default"]
    assert sig.outputs == {"output": TensorSpec("output_0", DType.DT_FLOAT, (-1, 3))}
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    out = servable.predict("serving_default", {"input": x})["output"]
    np.testing.assert_allclose(out, om.mlp_reference(WEIGHTS, x), rtol=1e-5, atol=1e-5)


def test_signature_file_that_contradicts_the_program_fails_the_load(tmp_path: Path) -> None:
    folder = tm.half_plus_two_pt2(tmp_path / "m")
    tm.write_signature(folder, [{"name": "x", "dtype": "int64"}], [{"name": "y", "dtype": "float32"}])
    with pytest.raises(FailedPrecondition, match="says 'x' is int64 but the program has float"):
        ptp.load(folder, LoadOptions())
    tm.write_signature(folder, [{"name": "x", "dtype": "float32"}, {"name": "z", "dtype": "float32"}], [])
    with pytest.raises(FailedPrecondition, match="lists 2 inputs but the program has 1"):
        ptp.load(folder, LoadOptions())


def test_torchscript_takes_names_and_dtypes_from_signature_json(tmp_path: Path) -> None:
    servable = ptp.load(tm.mlp_script(tmp_path / "m", WEIGHTS), LoadOptions())
    sig = servable.signatures["serving_default"]
    assert sig.inputs == {"input": TensorSpec("input", DType.DT_FLOAT, (-1, 4))}
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    out = servable.predict("serving_default", {"input": x})["output"]
    np.testing.assert_allclose(out, om.mlp_reference(WEIGHTS, x), rtol=1e-5, atol=1e-5)


def test_torchscript_dict_outputs_are_picked_by_name(tmp_path: Path) -> None:
    servable = ptp.load(tm.half_plus_two_script(tmp_path / "m"), LoadOptions())
    out = servable.predict("serving_default", {"x": np.array([2.0], np.float32)})
    np.testing.assert_array_equal(out["y"], [3.0])


def test_torchscript_without_signature_file_says_what_to_write(tmp_path: Path) -> None:
    folder = tm.script(tm.HalfPlusTwo(), tmp_path / "m")
    with pytest.raises(FailedPrecondition, match=r"needs signature.json .* inputs \(x\)"):
        ptp.load(folder, LoadOptions())


@pytest.mark.parametrize("where", ["inputs", "outputs"])
def test_strings_are_refused_at_load(tmp_path: Path, where: str) -> None:
    folder = tm.script(tm.HalfPlusTwo(), tmp_path / "m")
    specs = {"inputs": [{"name": "x", "dtype": "float32"}], "outputs": [{"name": "y", "dtype": "float32"}]}
    specs[where][0]["dtype"] = "DT_STRING"
    (folder / "signature.json").write_text(json.dumps(specs))
    with pytest.raises(FailedPrecondition, match="PyTorch has no string tensors"):
        ptp.load(folder, LoadOptions())


def test_strings_are_refused_at_request_time(tmp_path: Path) -> None:
    servable = ptp.load(tm.half_plus_two_pt2(tmp_path / "m"), LoadOptions())
    with pytest.raises(InvalidArgument, match="cannot take string tensors"):
        servable.predict("serving_default", {"x": np.array([b"a"], dtype=object)})


def test_runtime_errors_are_invalid_argument(tmp_path: Path) -> None:
    servable = ptp.load(tm.mlp_script(tmp_path / "m", WEIGHTS), LoadOptions())
    with pytest.raises(InvalidArgument):
        servable.predict("serving_default", {"input": np.ones((2, 5), np.float32)})


def test_bfloat16_and_read_only_inputs(tmp_path: Path) -> None:
    servable = ptp.load(tm.export(Cast(), (torch.ones(2),), tmp_path / "m"), LoadOptions())
    assert servable.signatures["serving_default"].outputs["output_0"].dtype == DType.DT_BFLOAT16
    x = np.frombuffer(np.array([1.5, -2.0], np.float32).tobytes(), np.float32)  # read-only, like gRPC bytes
    out = servable.predict("serving_default", {"x": x})["output_0"]
    assert out.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(out.astype(np.float32), [3.0, -4.0])


def test_device_is_a_parameter(tmp_path: Path) -> None:
    folder = tm.half_plus_two_pt2(tmp_path / "m")
    assert ptp.load(folder, LoadOptions(device="cpu")).device == torch.device("cpu")
    wanted = torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")  # CPU fallback here
    servable = ptp.load(folder, LoadOptions(device="cuda:0"))
    assert servable.device == wanted
    out = servable.predict("serving_default", {"x": np.ones(2, np.float32)})
    np.testing.assert_array_equal(out["y"], [2.5, 2.5])


@pytest.mark.parametrize(
    "text,dtype",
    [
        ("float32", DType.DT_FLOAT),
        ("DT_INT64", DType.DT_INT64),
        ("float", DType.DT_FLOAT),
        ("bool", DType.DT_BOOL),
        ("half", DType.DT_HALF),
    ],
)
def test_signature_file_dtype_spellings(text: str, dtype: DType) -> None:
    assert torch_signature.parse_dtype(text) == dtype


def test_predict_is_thread_safe(tmp_path: Path) -> None:
    servable = ptp.load(tm.mlp_pt2(tmp_path / "m", WEIGHTS), LoadOptions())

    def worker(seed: int) -> None:
        x = np.random.default_rng(seed).standard_normal((seed + 1, 4)).astype(np.float32)
        want = om.mlp_reference(WEIGHTS, x)
        for _ in range(20):
            out = servable.predict("serving_default", {"input": x})["output"]
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5, err_msg=f"thread {seed}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))  # re-raises a worker's failure here


def test_tensorflow_and_pytorch_models_load_in_one_process(tmp_path: Path) -> None:
    """With PyPI's CUDA torch builds, triton's native library crashed the process when it loaded after
    TensorFlow's; the TensorFlow platform loads it first. A fresh process that, like a server, only
    loads models: a TensorFlow one, then a PyTorch one."""
    tfm = pytest.importorskip("tests.tf_models")
    saved = tfm.half_plus_two(tmp_path / "tf")
    exported = tm.half_plus_two_pt2(tmp_path / "pt")
    code = f"""
import numpy as np
from pathlib import Path
from modelserve import platforms
tf_model = platforms.load("a", "tensorflow", Path({str(saved)!r}), platforms.LoadOptions())
pt_model = platforms.load("b", "pytorch", Path({str(exported)!r}), platforms.LoadOptions())
x = {{"x": np.array([2.0], np.float32)}}
print(tf_model.predict("serving_default", x)["y"].tolist(), pt_model.predict("serving_default", x)["y"].tolist())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "[3.0] [3.0]"
