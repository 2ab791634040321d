"""Small deterministic PyTorch models for the tests: torch.export programs and TorchScript files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelserve.platforms.pytorch import torchscript_allowed


class HalfPlusTwo(torch.nn.Module):
    """y = 0.5 x + 2, returned as a dict so the output is named by the program."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": 0.5 * x + 2.0}


class Mlp(torch.nn.Module):
    """The ReLU MLP of onnx_models.mlp with the same weights (``w`` is [in, out])."""

    def __init__(self, weights: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList()
        for w, b in weights:
            layer = torch.nn.Linear(w.shape[0], w.shape[1])
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(w.T.copy()))
                layer.bias.copy_(torch.from_numpy(b))
            self.layers.append(layer)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        h = input
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h


def _folder(base: Path, version: int) -> Path:
    folder = base / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_signature(folder: Path, inputs: Sequence[dict[str, Any]], outputs: Sequence[dict[str, Any]]) -> None:
    (folder / "signature.json").write_text(json.dumps({"inputs": list(inputs), "outputs": list(outputs)}))


def export(module: torch.nn.Module, example: tuple[torch.Tensor, ...], base: Path, version: int = 1) -> Path:
    """``model.pt2`` with a dynamic batch dimension on every input."""
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} for _ in example)
    program = torch.export.export(module, example, dynamic_shapes=dynamic)
    folder = _folder(base, version)
    torch.export.save(program, str(folder / "model.pt2"))
    return folder


def script(module: torch.nn.Module, base: Path, version: int = 1) -> Path:
    """``model.pt`` (TorchScript, scripted); the caller writes signature.json."""
    folder = _folder(base, version)
    with torchscript_allowed():  # TorchScript is deprecated, and exactly what users still have
        torch.jit.save(torch.jit.script(module), str(folder / "model.pt"))
    return folder


def half_plus_two_pt2(base: Path, version: int = 1) -> Path:
    return export(HalfPlusTwo(), (torch.ones(3),), base, version)


def half_plus_two_script(base: Path, version: int = 1) -> Path:
    folder = script(HalfPlusTwo(), base, version)
    write_signature(
        folder, [{"name": "x", "dtype": "float32", "shape": [-1]}], [{"name": "y", "dtype": "float32", "shape": [-1]}]
    )
    return folder


def mlp_pt2(base: Path, weights: Sequence[tuple[np.ndarray, np.ndarray]], version: int = 1) -> Path:
    """``input`` float [-1, n] -> ``output``: the program names the output output_0, the file renames it."""
    folder = export(Mlp(weights), (torch.ones(2, weights[0][0].shape[0]),), base, version)
    write_signature(folder, [{"name": "input", "dtype": "float32"}], [{"name": "output", "dtype": "float32"}])
    return folder


def mlp_script(base: Path, weights: Sequence[tuple[np.ndarray, np.ndarray]], version: int = 1) -> Path:
    folder = script(Mlp(weights), base, version)
    n_in, n_out = weights[0][0].shape[0], weights[-1][0].shape[1]
    write_signature(
        folder,
        [{"name": "input", "dtype": "float32", "shape": [-1, n_in]}],
        [{"name": "output", "dtype": "float32", "shape": [-1, n_out]}],
    )
    return folder
