"""The curated public API: what ``import modelserve`` offers is decided here, not by accident."""

from __future__ import annotations

import subprocess
import sys

import modelserve

PUBLIC = [
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


def test_exported_members_are_locked() -> None:
    assert sorted(modelserve.__all__) == sorted(PUBLIC)


def test_every_exported_member_resolves() -> None:
    for name in modelserve.__all__:
        assert getattr(modelserve, name) is not None, name
    from modelserve.client import GrpcClient

    assert modelserve.GrpcClient is GrpcClient


def test_importing_the_package_loads_neither_grpc_nor_tensorflow() -> None:
    heavy = "('grpc', 'tensorflow', 'onnxruntime')"
    code = f"import sys, modelserve; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
