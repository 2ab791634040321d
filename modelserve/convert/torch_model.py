"""``convert torch``: a TorchScript file or an ExportedProgram to ONNX (dynamic batch) or to ``model.pt2``.

An ExportedProgram knows its inputs; a TorchScript file needs ``--input
NAME:DTYPE:SHAPE`` for each (``x:float32:-1,4``; -1 in dim 0 is the batch).
ONNX export goes through torch.onnx: the torch.export-based exporter for
ExportedPrograms, the TorchScript exporter for TorchScript files (the only
one that takes them). ``--to pt2`` writes ``model.pt2`` (TorchScript is
converted with torch's TS2EPConverter) plus ``signature.json`` naming the
outputs when ``--output`` is given.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..dtypes import tf_name
from ..signatures import TensorSpec
from .common import Check, ConvertError, Progress, convert_and_check, sample

HELP = "TorchScript (.pt) or ExportedProgram (.pt2) -> ONNX with a dynamic batch, or model.pt2"


def _pt() -> Any:
    """The PyTorch platform module, imported (with torch) only when this command runs."""
    from ..platforms import pytorch

    return pytorch


def _sig() -> Any:
    """The PyTorch platform's signature rules, imported (with torch) only when this command runs."""
    from ..platforms import torch_signature

    return torch_signature


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", choices=("onnx", "pt2"), default="onnx", help="what to write (default: onnx)")
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME:DTYPE:SHAPE",
        help="an input of a TorchScript model, in forward()'s order, e.g. x:float32:-1,4",
    )
    parser.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="NAME",
        help="output names in the order the model returns them (default: dict keys or output_N)",
    )
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")


def parse_input(text: str) -> tuple[str, TensorSpec]:
    try:
        name, dtype, shape = text.split(":")
        dims = tuple(int(d) for d in shape.split(",") if d)
    except ValueError:
        raise ConvertError(f"--input {text!r}: expected NAME:DTYPE:SHAPE such as x:float32:-1,4") from None
    return name, TensorSpec(name, _sig().parse_dtype(dtype), dims)


@contextmanager
def _quiet_torchscript() -> Iterator[None]:
    with _pt().torchscript_allowed():
        yield


class Source:
    """The source program, its inputs (name -> spec, in call order) and its output names."""

    def __init__(self, path: Path, inputs: list[str], outputs: list[str]) -> None:
        import torch

        self.exported = path.suffix == ".pt2"
        if self.exported:
            from ..platforms.torch_signature import exported_signature

            self.program = torch.export.load(str(path))
            found_in, found_out = exported_signature(self.program)
            self.module: Any = self.program.module()
            self.inputs = found_in
            names = list(found_out)
        else:
            with _quiet_torchscript():
                self.module = torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
            if not inputs:
                args = [a.name for a in self.module.forward.schema.arguments[1:]]
                raise ConvertError(f"a TorchScript model needs --input NAME:DTYPE:SHAPE for each of {args}")
            self.inputs = dict(map(parse_input, inputs))
            names = []
        for alias, spec in self.inputs.items():
            if spec.dtype not in _sig().TORCH_DTYPES.values():
                raise ConvertError(f"input {alias!r}: torch has no {tf_name(spec.dtype)} tensors")
        self.outputs = outputs or names

    def examples(self, batch: int) -> tuple[Any, ...]:
        """Sample inputs in call order, as tensors; running them once teaches the source its output names."""
        import torch

        rng = np.random.default_rng(0)
        feed = {a: sample(s.dtype, s.shape, batch, rng) for a, s in self.inputs.items()}
        self(feed)
        cpu = torch.device("cpu")
        return tuple(_pt().to_torch(feed[a], cpu) for a in self.inputs)

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            result = self.module(*(_pt().to_torch(feed[a], torch.device("cpu")) for a in self.inputs))
        count = len(result) if isinstance(result, (tuple, list, dict)) else 1
        names = self.outputs or _sig().output_names(count, list(result) if isinstance(result, dict) else None)
        self.outputs = names
        values = _pt().flatten_outputs(result, names)
        return {n: _pt().to_numpy(v) for n, v in zip(names, values, strict=True)}


def write_onnx(source: Source, folder: Path, opset: int) -> None:
    import torch

    examples = source.examples(2)
    path = str(folder / "model.onnx")
    input_names = list(source.inputs)
    if source.exported:
        batch = torch.export.Dim("batch", min=1)
        dynamic = tuple({0: batch} if (s.shape or (-1,))[0] == -1 else {} for s in source.inputs.values())
        program = torch.onnx.export(
            source.module,
            examples,
            input_names=input_names,
            output_names=source.outputs,
            dynamic_shapes=dynamic,
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
        assert program is not None  # dynamo=True always returns the program
        program.save(path)
        return
    axes = {n: {0: "batch"} for n in [*input_names, *source.outputs]}
    with _quiet_torchscript():
        torch.onnx.export(
            source.module,
            examples,
            path,
            input_names=input_names,
            output_names=source.outputs,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )


def write_pt2(source: Source, folder: Path) -> None:
    import torch

    examples = source.examples(2)
    module = source.module
    if not source.exported:
        from torch._export.converter import TS2EPConverter

        with _quiet_torchscript():
            module = TS2EPConverter(source.module, examples).convert().module()
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} for _ in examples)
    program = torch.export.export(module, examples, dynamic_shapes=dynamic)
    torch.export.save(program, str(folder / "model.pt2"))
    spec = {
        "inputs": [{"name": a, "dtype": tf_name(s.dtype)} for a, s in source.inputs.items()],
        "outputs": [
            {"name": n, "dtype": tf_name(_sig().TORCH_DTYPES[v.meta["val"].dtype])}
            for n, v in zip(source.outputs, _output_nodes(program), strict=True)
        ],
    }
    (folder / "signature.json").write_text(json.dumps(spec, indent=1) + "\n")


def _output_nodes(program: Any) -> list[Any]:
    node = next(n for n in program.graph.nodes if n.op == "output")
    count = len(program.graph_signature.user_outputs)
    return list(node.args[0][-count:])


def run(args: argparse.Namespace, progress: Progress) -> None:
    with progress.step("importing torch"):
        import torch  # noqa: F401

    with progress.step(f"loading {args.source}"):
        source = Source(Path(args.source), args.input, args.output)
    target = "ONNX" if args.to == "onnx" else "model.pt2"

    def write(folder: Path) -> None:
        with (
            progress.step(f"exporting to {target} with a dynamic batch dimension"),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")  # the exporters' advice is for model authors, not for this command
            if args.to == "onnx":
                write_onnx(source, folder, args.opset)
            else:
                write_pt2(source, folder)

    platform = "onnx" if args.to == "onnx" else "pytorch"
    convert_and_check(args.base_path, Check(source, platform, args.samples, args.seed, args.atol), progress, write)
