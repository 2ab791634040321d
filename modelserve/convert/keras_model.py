"""``convert keras``: a Keras model file (``.keras`` or legacy ``.h5``) to a SavedModel.

The model is wrapped in a ``tf.Module`` whose ``serving_default`` takes the
model's inputs by their names and returns a dict keyed by its output names,
so clients see the names the model was built with.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .common import Check, Progress, convert_and_check

HELP = "Keras model (.keras or .h5) -> SavedModel with serving_default"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _names(tensors: list[Any], given: list[str] | None, prefix: str) -> list[str]:
    """The model's names, or ``input_0``... where Keras made one up (``keras_tensor_12``)."""
    names = list(given) if given else [getattr(t, "name", "") for t in tensors]
    if any(not n or n.startswith("keras_tensor") for n in names) or len(set(names)) != len(names):
        return [f"{prefix}_{i}" for i in range(len(tensors))]
    return [n.split(":")[0] for n in names]


def named_outputs(model: Any, args: Sequence[Any], output_names: list[str]) -> dict[str, Any]:
    """Call ``model`` on its inputs in order (one input is passed bare) and name what it returns."""
    result = model(args[0] if len(args) == 1 else list(args), training=False)
    values = result if isinstance(result, (list, tuple)) else [result]
    return dict(zip(output_names, values, strict=True))


def serving_module(model: Any) -> tuple[Any, list[str], list[str]]:
    """A tf.Module holding ``model`` with a serving function, its input names and output names."""
    from ..platforms import before_tensorflow

    before_tensorflow()
    import tensorflow as tf

    inputs = list(model.inputs)
    input_names = _names(inputs, None, "input")
    outputs = model.outputs if isinstance(model.outputs, list) else [model.outputs]
    output_names = _names(outputs, getattr(model, "output_names", None), "output")
    specs = [tf.TensorSpec(t.shape, t.dtype, name=n) for t, n in zip(inputs, input_names, strict=True)]

    def serve(*args: Any) -> dict[str, Any]:
        return named_outputs(model, args, output_names)

    module = tf.Module()
    module.model = model
    module.serve = tf.function(serve, input_signature=specs)
    return module, input_names, output_names


def run(args: argparse.Namespace, progress: Progress) -> None:
    with progress.step("importing TensorFlow and Keras"):
        import keras
        import tensorflow as tf

    with progress.step(f"loading {args.source}"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # .h5 is "legacy", and still what many users have
        model = keras.models.load_model(args.source, compile=False)
    module, input_names, output_names = serving_module(model)
    progress.say(f"    inputs {input_names}, outputs {output_names}")

    def write(folder: Path) -> None:
        with progress.step("writing the SavedModel"):
            tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})

    def source(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = named_outputs(model, [feed[n] for n in input_names], output_names)
        return {n: np.asarray(v) for n, v in outputs.items()}

    convert_and_check(args.base_path, Check(source, "tensorflow", args.samples, args.seed, args.atol), progress, write)
