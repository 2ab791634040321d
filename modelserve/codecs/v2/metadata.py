"""What V2's server and model metadata say, for both front ends (``api.v2_rest``, ``api.v2_grpc``).

One source for the extensions a V2 client may rely on and for how a signature is described
as V2 tensors, so the REST and gRPC answers cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ...signatures import DEFAULT_SIGNATURE, Signature, TensorSpec
from .datatypes import v2_name

SERVER_NAME = "modelserve"
# ServerMetadata's extensions, Triton's names, served on both protocols: binary tensor data (REST's
# binary_tensor_data extension; on gRPC, raw_input_contents / raw_output_contents, which Triton lists
# under the same name), the model repository (index, load, unload) and request parameters.
EXTENSIONS = ("binary_tensor_data", "model_repository", "parameters")


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    """One tensor of model metadata: its name, V2 datatype and shape (-1 for a dimension of unknown size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def described_signature(signatures: Mapping[str, Signature]) -> Signature:
    """The signature model metadata describes: ``serving_default``, else the first by name (none: empty)."""
    if DEFAULT_SIGNATURE in signatures:
        return signatures[DEFAULT_SIGNATURE]
    return signatures[min(signatures)] if signatures else Signature({}, {})


def tensors(specs: Mapping[str, TensorSpec]) -> list[TensorMetadata]:
    """Inputs or outputs as V2 tensors; an unknown rank as one dimension of unknown size."""
    return [
        TensorMetadata(alias, v2_name(spec.dtype), (-1,) if spec.shape is None else tuple(spec.shape))
        for alias, spec in specs.items()
    ]
