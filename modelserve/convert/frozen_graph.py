"""``convert pb``: a frozen GraphDef to a SavedModel, the way TF Serving users have long done it by hand.

The graph is imported into a TF1 session and written with ``SavedModelBuilder``
under one signature whose input and output aliases the client will use,
mapped to the graph's node names (``--input x=input_node``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..signatures import DEFAULT_SIGNATURE, PREDICT_METHOD
from .common import Check, ConvertError, Progress, convert_and_check, split_alias

HELP = "frozen TensorFlow GraphDef (.pb) -> SavedModel with a named signature"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="ALIAS=NODE",
        help="a signature input: the alias clients send and the graph node (or tensor) it feeds",
    )
    parser.add_argument(
        "--output",
        action="append",
        required=True,
        metavar="ALIAS=NODE",
        help="a signature output: the alias clients get and the graph node (or tensor) it reads",
    )
    parser.add_argument("--signature-name", default=DEFAULT_SIGNATURE, help="default: serving_default")
    parser.add_argument("--tags", default="serve", help="comma-separated MetaGraph tags (default: serve)")


def _tensor_name(name: str) -> str:
    return name if ":" in name else f"{name}:0"


def _tensors(graph: Any, specs: list[str], kind: str) -> dict[str, Any]:
    found = {}
    for alias, name in map(split_alias, specs):
        try:
            found[alias] = graph.get_tensor_by_name(_tensor_name(name))
        except (KeyError, ValueError) as exc:
            raise ConvertError(f"{kind} {alias!r}: the graph has no tensor {_tensor_name(name)} ({exc})") from None
    return found


def run(args: argparse.Namespace, progress: Progress) -> None:
    with progress.step("importing TensorFlow"):
        from ..platforms import before_tensorflow

        before_tensorflow()
        import tensorflow as tf

    v1 = tf.compat.v1
    with progress.step(f"reading the GraphDef {args.source}"):
        graph_def = v1.GraphDef()
        graph_def.ParseFromString(Path(args.source).read_bytes())
        graph = tf.Graph()
        with graph.as_default():
            tf.import_graph_def(graph_def, name="")
        inputs = _tensors(graph, args.input, "input")
        outputs = _tensors(graph, args.output, "output")
    session = v1.Session(graph=graph)

    def write(folder: Path) -> None:
        with (
            progress.step(f"writing a SavedModel with signature {args.signature_name!r}"),
            graph.as_default(),
        ):
            info = v1.saved_model.utils.build_tensor_info
            signature = v1.saved_model.signature_def_utils.build_signature_def(
                {a: info(t) for a, t in inputs.items()},
                {a: info(t) for a, t in outputs.items()},
                PREDICT_METHOD,
            )
            builder = v1.saved_model.builder.SavedModelBuilder(str(folder / "saved"))
            tags = [t for t in args.tags.split(",") if t]
            builder.add_meta_graph_and_variables(session, tags, signature_def_map={args.signature_name: signature})
            builder.save()
            for item in (folder / "saved").iterdir():  # the builder insists on creating its folder itself
                item.rename(folder / item.name)
            (folder / "saved").rmdir()

    def source(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = session.run(outputs, {inputs[a]: v for a, v in feed.items()})
        return {a: np.asarray(v) for a, v in values.items()}

    check = Check(source, "tensorflow", args.samples, args.seed, args.atol, args.signature_name)
    try:
        convert_and_check(args.base_path, check, progress, write)
    finally:
        session.close()
