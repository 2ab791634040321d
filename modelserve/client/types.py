"""What the clients return and raise: plain dataclasses and one exception type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import Code
from ..signatures import DEFAULT_SIGNATURE

DEFAULT_TIMEOUT = 30.0
MAX_MESSAGE_BYTES = 2**31 - 1
Inputs = Mapping[str, Any] | np.ndarray
Example = Mapping[str, Any]  # feature name -> value or list: bytes/str, float, int/bool (or an ndarray)
Classes = list[tuple[str, float]]


class ClientError(Exception):
    """A failed call: the server's status ``code`` and ``message`` (``http_status`` for REST)."""

    def __init__(self, code: Code, message: str, http_status: int | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # DT_FLOAT, DT_STRING, ...
    shape: tuple[int, ...] | None  # -1 for an unknown size; None for an unknown rank


@dataclass(frozen=True)
class SignatureInfo:
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    method_name: str


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: int
    signatures: dict[str, SignatureInfo]


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str  # OK, NOT_FOUND, ...
    error_message: str


def signature_info(metadata: ModelMetadata, signature: str | None) -> SignatureInfo:
    """Signature ``signature`` of the model (``serving_default`` when not named); INVALID_ARGUMENT if absent."""
    name = signature or DEFAULT_SIGNATURE
    info = metadata.signatures.get(name)
    if info is None:
        raise ClientError(Code.INVALID_ARGUMENT, f"Model {metadata.name} has no signature {name}")
    return info
