"""modelserve: a TensorFlow Serving compatible model server for ONNX, TensorFlow and PyTorch.

The public API is the names in ``__all__``; everything else may move.
They are imported on first use, so ``import modelserve`` stays cheap::

    from modelserve import GrpcClient

    with GrpcClient("localhost:8500") as client:
        outputs = client.predict("mnist", {"input": batch})
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> "module:attribute" it lives in.
_EXPORTS = {
    "AsyncGrpcClient": "modelserve.client:AsyncGrpcClient",
    "AsyncRestClient": "modelserve.client:AsyncRestClient",
    "ClientError": "modelserve.client:ClientError",
    "GrpcClient": "modelserve.client:GrpcClient",
    "ModelMetadata": "modelserve.client:ModelMetadata",
    "RestClient": "modelserve.client:RestClient",
    "SignatureInfo": "modelserve.client:SignatureInfo",
    "TensorInfo": "modelserve.client:TensorInfo",
    "VersionStatus": "modelserve.client:VersionStatus",
    "make_ndarray": "modelserve.codecs.tensor_util:make_ndarray",
    "make_tensor_proto": "modelserve.codecs.tensor_util:make_tensor_proto",
}

__all__ = [
    "AsyncGrpcClient",
    "AsyncRestClient",
    "ClientError",
    "GrpcClient",
    "ModelMetadata",
    "RestClient",
    "SignatureInfo",
    "TensorInfo",
    "VersionStatus",
    "__version__",
    "make_ndarray",
    "make_tensor_proto",
]

if TYPE_CHECKING:
    from .client import (
        AsyncGrpcClient,
        AsyncRestClient,
        ClientError,
        GrpcClient,
        ModelMetadata,
        RestClient,
        SignatureInfo,
        TensorInfo,
        VersionStatus,
    )
    from .codecs.tensor_util import make_ndarray, make_tensor_proto


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'modelserve' has no attribute {name!r}")
    module, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
