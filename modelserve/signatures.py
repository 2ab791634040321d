"""What a model version offers its clients: SignatureDefs of named, typed tensors.

Platforms take a batch and return a batch: ``predict`` receives whole tensors
(dim 0 is the batch when the signature has one) and returns whole tensors.
Batching, request validation and wire formats all live above this line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .dtypes import DType

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature.

    ``name`` is the tensor's name inside the model (``x:0``, an ONNX input
    name); clients address tensors by the signature's alias instead.
    ``shape`` is None when the rank is unknown; -1 marks an unknown size.
    """

    name: str
    dtype: DType
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class Signature:
    """A SignatureDef: inputs and outputs keyed by alias."""

    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    method_name: str = PREDICT_METHOD
    defaults: Mapping[str, np.ndarray] = field(default_factory=dict)
