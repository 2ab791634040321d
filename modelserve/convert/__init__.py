"""``modelserve convert``: turn a model users have into a served version, then prove it answers the same.

Each command writes the next free version folder under a base path (staged in
a hidden folder and renamed into place, so a polling server never sees half a
version), then loads that version through the platform that will serve it and
compares its answers with the source model's on sample inputs, printing the
largest absolute difference per output. Too large a difference fails the
command and leaves no version behind.

    modelserve convert pb FROZEN.pb BASE --input x=input --output y=logits [--signature-name NAME]
    modelserve convert keras MODEL.keras|MODEL.h5 BASE
    modelserve convert torch MODEL.pt2|MODEL.pt BASE [--to onnx|pt2] [--input NAME:DTYPE:SHAPE] [--output N]
    modelserve convert sklearn MODEL.pkl|MODEL.joblib BASE --trust-pickle

TensorFlow, torch, skl2onnx and onnxscript are imported only by the command that needs them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .common import ConvertError, Progress, missing_extra

COMMANDS: dict[str, str] = {
    "pb": "modelserve.convert.frozen_graph",
    "keras": "modelserve.convert.keras_model",
    "torch": "modelserve.convert.torch_model",
    "sklearn": "modelserve.convert.sklearn_model",
}


def parser() -> argparse.ArgumentParser:
    import importlib

    # The docstring's reST quoting (``...``) is for readers of the code, not for a terminal.
    description = __doc__.split("\n\n")[0].replace("``", "")
    root = argparse.ArgumentParser(prog="modelserve convert", description=description)
    commands = root.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        sub.add_argument("source", help="the model file to convert")
        sub.add_argument("base_path", help="the model's base path; the next free version folder is written there")
        sub.add_argument("--samples", type=int, default=8, help="batch size of the random check inputs (default 8)")
        sub.add_argument("--seed", type=int, default=0, help="seed of the random check inputs")
        sub.add_argument("--atol", type=float, default=1e-4, help="largest absolute difference accepted (1e-4)")
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return root


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    progress = Progress(f"convert {args.command}")
    run: Callable[[argparse.Namespace, Progress], object] = args.run
    try:
        run(args, progress)
    except ConvertError as exc:
        print(f"modelserve convert {args.command}: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # an import outside a step
        print(f"modelserve convert {args.command}: {missing_extra(exc)}", file=sys.stderr)
        return 1
    return 0
