"""``GrpcClient`` and ``AsyncGrpcClient``: TF Serving's gRPC API and KServe V2's from numpy."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import Message

from ..protos import Stub, pb
from .protos import (
    channel_options,
    check_reload,
    classes_of,
    examples_request,
    metadata_of,
    metadata_request,
    outputs_of,
    predict_request,
    regressions_of,
    reload_request,
    rpc_error,
    sole_input,
    status_request,
    statuses_of,
)
from .types import (
    DEFAULT_TIMEOUT,
    MAX_MESSAGE_BYTES,
    Classes,
    Example,
    Inputs,
    ModelMetadata,
    VersionStatus,
)
from .v2 import (
    Parameters,
    RepositoryModel,
    V2ModelMetadata,
    V2ServerMetadata,
    grpc_index,
    grpc_infer_request,
    grpc_metadata,
    grpc_outputs,
)


def _version(version: int | None) -> str:
    """V2 names a version by a string; empty: the highest ready one."""
    return "" if version is None else str(version)


class _GrpcBase:
    _grpc: Any  # where channels come from: grpc (sync) or grpc.aio

    def __init__(
        self,
        target: str = "localhost:8500",
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        token: str | None = None,
    ) -> None:
        """``target``: host:port or unix:path; ``timeout``: seconds per call (None: none); ``credentials``:
        TLS (``grpc.ssl_channel_credentials(ca, key, cert)``; key and cert for mutual TLS); ``options``: more
        channel arguments; ``max_message_bytes``: the limit both ways; ``token``: a bearer token, sent as
        ``authorization: Bearer <token>`` metadata with every call (a server's ``--auth_token_file``)."""
        module = self._grpc
        opts = channel_options(max_message_bytes, options)
        self._channel = (
            module.secure_channel(target, credentials, options=opts)
            if credentials is not None
            else module.insecure_channel(target, options=opts)
        )
        self._prediction = Stub(self._channel, pb.PredictionService)
        self._models = Stub(self._channel, pb.ModelService)
        self._inference = Stub(self._channel, pb.GRPCInferenceService)
        self._timeout = timeout
        self._call_metadata = None if token is None else (("authorization", f"Bearer {token}"),)
        self._metadata_cache: dict[tuple[str, int | None, str | None], ModelMetadata] = {}

    def _timeout_for(self, timeout: float | None) -> float | None:
        return self._timeout if timeout is None else timeout


class GrpcClient(_GrpcBase):
    """TF Serving's gRPC API from numpy. Thread-safe; close it (or use ``with``) when done."""

    _grpc = grpc

    def _call(self, method: Callable[..., Any], request: Message, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self._timeout_for(timeout), metadata=self._call_metadata)
        except grpc.RpcError as exc:
            raise rpc_error(exc) from None

    def predict(
        self,
        model: str,
        inputs: Inputs,
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        output_filter: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the model on ``inputs`` (by input name, or one bare array); outputs by name."""
        if isinstance(inputs, np.ndarray):
            inputs = {sole_input(self._cached_metadata(model, version, label), signature): inputs}
        request = predict_request(model, inputs, version, label, signature, output_filter)
        response = self._call(self._prediction.Predict, request, timeout)
        return outputs_of(response)

    def metadata(
        self,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> ModelMetadata:
        request = metadata_request(model, version, label)
        return metadata_of(self._call(self._prediction.GetModelMetadata, request, timeout))

    def _cached_metadata(self, model: str, version: int | None, label: str | None) -> ModelMetadata:
        key = (model, version, label)
        if key not in self._metadata_cache:
            self._metadata_cache[key] = self.metadata(model, version=version, label=label)
        return self._metadata_cache[key]

    def status(self, model: str, *, version: int | None = None, timeout: float | None = None) -> list[VersionStatus]:
        return statuses_of(self._call(self._models.GetModelStatus, status_request(model, version), timeout))

    def classify(
        self,
        model: str,
        examples: Sequence[Example],
        *,
        context: Example | None = None,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout: float | None = None,
    ) -> list[Classes]:
        """(label, score) pairs per example, as TF Serving's Classify returns them."""
        request = examples_request(pb.ClassificationRequest, model, examples, context, version, label, signature)
        return classes_of(self._call(self._prediction.Classify, request, timeout))

    def regress(
        self,
        model: str,
        examples: Sequence[Example],
        *,
        context: Example | None = None,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout: float | None = None,
    ) -> list[float]:
        request = examples_request(pb.RegressionRequest, model, examples, context, version, label, signature)
        return regressions_of(self._call(self._prediction.Regress, request, timeout))

    def reload_config(self, config: str | Message, *, timeout: float | None = None) -> None:
        """Serve exactly the models of ``config`` (text-format or a ModelServerConfig message)."""
        check_reload(self._call(self._models.HandleReloadConfigRequest, reload_request(config), timeout))

    # --- the Open Inference Protocol (KServe V2) ---

    def v2_infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: int | None = None,
        label: str | None = None,
        outputs: Sequence[str] | None = None,
        parameters: Parameters | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """``ModelInfer`` with every input in ``raw_input_contents``; outputs by name (read-only views
        of the answer). ``label``: a TF Serving version label (the ``version_label`` parameter)."""
        request = grpc_infer_request(model, inputs, version, label, outputs, parameters)
        return grpc_outputs(self._call(self._inference.ModelInfer, request, timeout))

    def v2_model_metadata(
        self, model: str, *, version: int | None = None, timeout: float | None = None
    ) -> V2ModelMetadata:
        request = pb.ModelMetadataRequest(name=model, version=_version(version))
        return grpc_metadata(self._call(self._inference.ModelMetadata, request, timeout))

    def v2_server_metadata(self, *, timeout: float | None = None) -> V2ServerMetadata:
        answer = self._call(self._inference.ServerMetadata, pb.ServerMetadataRequest(), timeout)
        return V2ServerMetadata(answer.name, answer.version, tuple(answer.extensions))

    def v2_live(self, *, timeout: float | None = None) -> bool:
        return bool(self._call(self._inference.ServerLive, pb.ServerLiveRequest(), timeout).live)

    def v2_ready(self, model: str | None = None, *, version: int | None = None, timeout: float | None = None) -> bool:
        if model is None:
            return bool(self._call(self._inference.ServerReady, pb.ServerReadyRequest(), timeout).ready)
        request = pb.ModelReadyRequest(name=model, version=_version(version))
        return bool(self._call(self._inference.ModelReady, request, timeout).ready)

    def v2_repository_index(self, *, ready: bool = False, timeout: float | None = None) -> list[RepositoryModel]:
        request = pb.RepositoryIndexRequest(ready=ready)
        return grpc_index(self._call(self._inference.RepositoryIndex, request, timeout))

    def v2_load_model(self, model: str, *, timeout: float | None = None) -> None:
        self._call(self._inference.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name=model), timeout)

    def v2_unload_model(self, model: str, *, timeout: float | None = None) -> None:
        request = pb.RepositoryModelUnloadRequest(model_name=model)
        self._call(self._inference.RepositoryModelUnload, request, timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGrpcClient(_GrpcBase):
    """``GrpcClient`` on ``grpc.aio``: the same methods, awaited. Use it on one event loop."""

    _grpc = grpc.aio

    async def _call(self, method: Callable[..., Any], request: Message, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=self._timeout_for(timeout), metadata=self._call_metadata)
        except grpc.RpcError as exc:
            raise rpc_error(exc) from None

    async def predict(
        self,
        model: str,
        inputs: Inputs,
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        output_filter: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        if isinstance(inputs, np.ndarray):
            metadata = await self._cached_metadata(model, version, label)
            inputs = {sole_input(metadata, signature): inputs}
        request = predict_request(model, inputs, version, label, signature, output_filter)
        response = await self._call(self._prediction.Predict, request, timeout)
        return outputs_of(response)

    async def metadata(
        self,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> ModelMetadata:
        request = metadata_request(model, version, label)
        return metadata_of(await self._call(self._prediction.GetModelMetadata, request, timeout))

    async def _cached_metadata(self, model: str, version: int | None, label: str | None) -> ModelMetadata:
        key = (model, version, label)
        if key not in self._metadata_cache:
            self._metadata_cache[key] = await self.metadata(model, version=version, label=label)
        return self._metadata_cache[key]

    async def status(
        self, model: str, *, version: int | None = None, timeout: float | None = None
    ) -> list[VersionStatus]:
        return statuses_of(await self._call(self._models.GetModelStatus, status_request(model, version), timeout))

    async def classify(
        self,
        model: str,
        examples: Sequence[Example],
        *,
        context: Example | None = None,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout: float | None = None,
    ) -> list[Classes]:
        request = examples_request(pb.ClassificationRequest, model, examples, context, version, label, signature)
        return classes_of(await self._call(self._prediction.Classify, request, timeout))

    async def regress(
        self,
        model: str,
        examples: Sequence[Example],
        *,
        context: Example | None = None,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout: float | None = None,
    ) -> list[float]:
        request = examples_request(pb.RegressionRequest, model, examples, context, version, label, signature)
        return regressions_of(await self._call(self._prediction.Regress, request, timeout))

    async def reload_config(self, config: str | Message, *, timeout: float | None = None) -> None:
        request = reload_request(config)
        check_reload(await self._call(self._models.HandleReloadConfigRequest, request, timeout))

    async def v2_infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: int | None = None,
        label: str | None = None,
        outputs: Sequence[str] | None = None,
        parameters: Parameters | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        request = grpc_infer_request(model, inputs, version, label, outputs, parameters)
        return grpc_outputs(await self._call(self._inference.ModelInfer, request, timeout))

    async def v2_model_metadata(
        self, model: str, *, version: int | None = None, timeout: float | None = None
    ) -> V2ModelMetadata:
        request = pb.ModelMetadataRequest(name=model, version=_version(version))
        return grpc_metadata(await self._call(self._inference.ModelMetadata, request, timeout))

    async def v2_server_metadata(self, *, timeout: float | None = None) -> V2ServerMetadata:
        answer = await self._call(self._inference.ServerMetadata, pb.ServerMetadataRequest(), timeout)
        return V2ServerMetadata(answer.name, answer.version, tuple(answer.extensions))

    async def v2_live(self, *, timeout: float | None = None) -> bool:
        return bool((await self._call(self._inference.ServerLive, pb.ServerLiveRequest(), timeout)).live)

    async def v2_ready(
        self, model: str | None = None, *, version: int | None = None, timeout: float | None = None
    ) -> bool:
        if model is None:
            return bool((await self._call(self._inference.ServerReady, pb.ServerReadyRequest(), timeout)).ready)
        request = pb.ModelReadyRequest(name=model, version=_version(version))
        return bool((await self._call(self._inference.ModelReady, request, timeout)).ready)

    async def v2_repository_index(self, *, ready: bool = False, timeout: float | None = None) -> list[RepositoryModel]:
        request = pb.RepositoryIndexRequest(ready=ready)
        return grpc_index(await self._call(self._inference.RepositoryIndex, request, timeout))

    async def v2_load_model(self, model: str, *, timeout: float | None = None) -> None:
        request = pb.RepositoryModelLoadRequest(model_name=model)
        await self._call(self._inference.RepositoryModelLoad, request, timeout)

    async def v2_unload_model(self, model: str, *, timeout: float | None = None) -> None:
        request = pb.RepositoryModelUnloadRequest(model_name=model)
        await self._call(self._inference.RepositoryModelUnload, request, timeout)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncGrpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
