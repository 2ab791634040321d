"""Small deterministic ``.tflite`` models converted from tf.Modules by the tests.

Each builder writes ``<base>/<version>/model.tflite`` and returns the folder.
Three ways a model can state its signatures, as in the wild: the flatbuffer's
own SignatureDefs (TF2's converter given the module), none at all (the
converter given bare concrete functions), and SignatureDef protos in the
``signature_defs_metadata`` entry (what TF Lite's ``set_signature_defs``
writes and TF Serving reads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flatbuffers
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers
from tensorflow.core.protobuf import meta_graph_pb2


def write(base: Path, version: int, model: bytes) -> Path:
    folder = base / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tflite").write_bytes(model)
    return folder


def convert(functions: Sequence[Any], module: tf.Module | None = None) -> bytes:
    """``module`` given: its signatures go into the flatbuffer; None: a model without any."""
    concrete = [f.get_concrete_function() for f in functions]
    converted: bytes = tf.lite.TFLiteConverter.from_concrete_functions(concrete, module).convert()
    return converted


class HalfPlus(tf.Module):
    """``x`` float [-1] -> ``y`` = 0.5 x + ``b``."""

    def __init__(self, b: float = 2.0) -> None:
        super().__init__()
        self.b = b

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": 0.5 * x + self.b}


def half_plus_two(signatures: bool = True, b: float = 2.0) -> bytes:
    module = HalfPlus(b)
    return convert([module.serve], module if signatures else None)


class TwoInTwoOut(tf.Module):
    """``a`` float [-1, 3], ``b`` float [-1] -> ``total`` = a + b[:, None], ``twice`` = 2 b."""

    @tf.function(
        input_signature=[tf.TensorSpec([None, 3], tf.float32, name="a"), tf.TensorSpec([None], tf.float32, name="b")]
    )
    def serve(self, a: tf.Tensor, b: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"total": a + b[:, None], "twice": 2.0 * b}


def two_in_two_out() -> bytes:
    module = TwoInTwoOut()
    return convert([module.serve], module)


class Ints(tf.Module):
    """``i`` int32 [-1] -> ``j`` = 3 i + 1."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="i")])
    def serve(self, i: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"j": 3 * i + 1}


def ints() -> bytes:
    module = Ints()
    return convert([module.serve], module)


class Strings(tf.Module):
    """``text`` string [-1], ``pick`` int32 [-1] -> ``picked`` = text[pick] (TF Lite's GATHER takes strings)."""

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name="text"), tf.TensorSpec([None], tf.int32, name="pick")]
    )
    def serve(self, text: tf.Tensor, pick: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"picked": tf.gather(text, pick)}


def strings() -> bytes:
    module = Strings()
    return convert([module.serve], module)


class TwoSignatures(tf.Module):
    """``serving_default``: x -> y = 0.5 x + 2; ``times_ten``: x -> y = 10 x."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serving_default(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": 0.5 * x + 2.0}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def times_ten(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": 10.0 * x}


def two_signatures() -> bytes:
    module = TwoSignatures()  # the converter names each signature after its function
    return convert([module.serving_default, module.times_ten], module)


class Reverse(tf.Module):
    """``s`` string [-1] -> ``r`` reversed: TF Lite has no builtin REVERSE_V2 for strings, so this needs Flex."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="s")])
    def serve(self, s: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"r": tf.reverse(s, [0])}


def needs_flex() -> bytes:
    module = Reverse()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    converted: bytes = converter.convert()
    return converted


def from_saved_model(folder: Path) -> bytes:
    converted: bytes = tf.lite.TFLiteConverter.from_saved_model(str(folder)).convert()
    return converted


def tf_serving_half_plus_two(input_name: str = "x") -> bytes:
    """Like TF Serving's saved_model_half_plus_two_tflite: a fixed [1, 1] input, no SignatureDef."""

    @tf.function(input_signature=[tf.TensorSpec([1, 1], tf.float32, name=input_name)])
    def serve(x: tf.Tensor) -> tf.Tensor:
        return 0.5 * x + 2.0

    return convert([serve])


def tensor_info(name: str, dtype: int, shape: Sequence[int]) -> meta_graph_pb2.TensorInfo:
    info = meta_graph_pb2.TensorInfo(name=name, dtype=dtype)
    for size in shape:
        info.tensor_shape.dim.add().size = size
    return info


def with_signature_defs(model: bytes, signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]) -> bytes:
    """``model`` with SignatureDef protos in its ``signature_defs_metadata`` entry, laid out as TF Lite's writer
    lays them out: a FlexBuffer map of key -> serialized proto, stored as a FlexBuffer string."""
    fbb = flexbuffers.Builder()
    with fbb.Map():
        for key, definition in signature_defs.items():
            fbb.Key(key)
            # Builder.String() only takes text; the serialized proto is bytes, stored with the string type.
            fbb._WriteBlob(definition.SerializeToString(), append_zero=True, type_=flexbuffers.Type.STRING)
    unpacked = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    buffer = schema.BufferT()
    buffer.data = list(fbb.Finish())
    unpacked.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = "signature_defs_metadata"
    entry.buffer = len(unpacked.buffers) - 1
    unpacked.metadata = [*(unpacked.metadata or []), entry]
    builder = flatbuffers.Builder(1024)
    builder.Finish(unpacked.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tf_serving_half_plus_two_with_signature_def() -> bytes:
    """Like TF Serving's saved_model_half_plus_two_tflite_with_sigdef: input tensor ``tflite_input``,
    aliased ``x`` by a SignatureDef in the metadata that names the graph's tensors (``tflite_input:0``)."""
    from ai_edge_litert.interpreter import Interpreter

    model = tf_serving_half_plus_two("tflite_input")
    output = Interpreter(model_content=model).get_output_details()[0]["name"]
    definition = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    definition.inputs["x"].CopyFrom(tensor_info("tflite_input:0", 1, [-1, 1]))
    definition.outputs["y"].CopyFrom(tensor_info(f"{output}:0", 1, [-1, 1]))
    return with_signature_defs(model, {"serving_default": definition})
