"""A numpy-native client for modelserve, TensorFlow Serving and KServe V2: gRPC and REST, sync and async,
no TensorFlow.

::

    from modelserve.client import GrpcClient

    with GrpcClient("localhost:8500") as client:
        outputs = client.predict("mnist", {"input": batch})      # {"output": ndarray}

``GrpcClient``, ``RestClient``, ``AsyncGrpcClient`` and ``AsyncRestClient``
have the same methods and return the same types: ``predict``, ``metadata``,
``status``, ``classify``, ``regress`` and ``reload_config``. Every failure the
server reports, and every transport failure, raises ``ClientError`` carrying
the canonical status ``code`` (``modelserve.errors.Code``) and the message.

The same four clients speak the Open Inference Protocol (KServe V2, Triton's
API; docs/v2.md) through ``v2_*`` methods, numpy in and numpy out::

    with RestClient("http://localhost:8501") as client:
        outputs = client.v2_infer("simple", {"INPUT0": a, "INPUT1": b})   # {"OUTPUT0": ndarray, ...}

``v2_infer`` (datatypes from the arrays: BYTES as object arrays of bytes, BF16
as ``ml_dtypes.bfloat16``; REST sends Triton's binary tensor data unless
``binary=False``, gRPC ``raw_input_contents``), ``v2_model_metadata``,
``v2_server_metadata``, ``v2_live``, ``v2_ready`` (the server's, or a model's),
and the repository calls ``v2_repository_index``, ``v2_load_model``,
``v2_unload_model``. Errors are ``ClientError`` as for TF Serving's API.

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
from .v2 import RepositoryModel, V2ModelMetadata, V2ServerMetadata, V2TensorInfo

__all__ = [
    "AsyncGrpcClient",
    "AsyncRestClient",
    "ClientError",
    "GrpcClient",
    "ModelMetadata",
    "RepositoryModel",
    "RestClient",
    "SignatureInfo",
    "TensorInfo",
    "V2ModelMetadata",
    "V2ServerMetadata",
    "V2TensorInfo",
    "VersionStatus",
    "make_ndarray",
    "make_tensor_proto",
]
