"""A numpy-native client for modelserve and TensorFlow Serving: gRPC and REST, sync and async, no TensorFlow.

::

    from modelserve.client import GrpcClient

    with GrpcClient("localhost:8500") as client:
        outputs = client.predict("mnist", {"input": batch})      # {"output": ndarray}

``GrpcClient``, ``RestClient``, ``AsyncGrpcClient`` and ``AsyncRestClient``
have the same methods and return the same types: ``predict``, ``metadata``,
``status``, ``classify``, ``regress`` and ``reload_config``. Every failure the
server reports, and every transport failure, raises ``ClientError`` carrying
the canonical status ``code`` (``modelserve.errors.Code``) and the message.

The gRPC clients raise the receive limit to 2 GiB - 1 (gRPC's default of
4 MiB is what TF Serving users hit with big answers). Calls time out after
``timeout`` seconds (30 by default; ``None``: never). Predicting with a bare
array (no input name), and any REST predict (whose JSON has no dtypes), look
the model's signature up once per model/version/label and cache it.
"""

from __future__ import annotations

from ..codecs.tensor_util import make_ndarray, make_tensor_proto
from .grpc_client import AsyncGrpcClient, GrpcClient
from .rest_client import AsyncRestClient, RestClient
from .types import ClientError, ModelMetadata, SignatureInfo, TensorInfo, VersionStatus

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
    "make_ndarray",
    "make_tensor_proto",
]
