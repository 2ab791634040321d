"""The Open Inference Protocol (KServe V2) over gRPC: ``inference.GRPCInferenceService``, as Triton serves it.

Thin, as ``api.tfs_grpc``: decode the ``ModelInferRequest`` (``codecs.v2.proto``)
into the one ``InferenceRequest``, call the core, encode; the same two server
models drive the same coroutines (``grpc_calls.inline_rpc`` / ``async_rpc``) and
errors map once, through ``grpc_calls.GRPC_STATUS``: the core's codes are gRPC's,
and Triton's gRPC front end maps its own errors onto the same names
(INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, UNIMPLEMENTED ...).

Served: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata,
ModelInfer, ModelStreamInfer (Triton's bidirectional stream: every request
answered on the stream, in order, an error as a message with
``error_message``, the stream going on), and Triton's model repository
extension: RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload (the
auth guard lets only ``admin`` tokens call them, ``api.auth``).

Request parameters modelserve reads: ``signature_name`` (default
``serving_default``) and ``version_label`` (TF Serving's version labels; not
with ``model_version``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import grpc
from google.protobuf.message import Message

from .. import __version__
from ..budget import Account
from ..codecs.tensor_proto import length_delimited
from ..codecs.v2 import proto as v2_proto
from ..codecs.v2.datatypes import v2_name
from ..codecs.v2.metadata import EXTENSIONS, SERVER_NAME, described_signature, tensors
from ..errors import Code, InvalidArgument
from ..execution import request_options
from ..execution.runner import run_inline
from ..observe.faults import FaultLog, release
from ..observe.requests import Watch
from ..observe.trace import RequestTrace
from ..protos import INFERENCE_SERVICE, message_class, pb, service_descriptor
from ..serving.contract import Core
from ..serving.request import InferenceRequest, InferenceResponse, ModelSpec
from ..signatures import DEFAULT_SIGNATURE, Signature
from .grpc_calls import (
    OFFLOAD_BYTES,
    Answer,
    Context,
    Unparsed,
    add_handlers,
    async_rpc,
    check_active,
    deadline_of,
    grpc_status,
    inline_rpc,
    lenient_parser,
    off_loop,
    open_trace,
    parsed,
    request_options_of,
    serialize,
)
from .http import failed

log = logging.getLogger(__name__)

# The request parameters modelserve reads.
SIGNATURE_PARAMETER = "signature_name"
LABEL_PARAMETER = "version_label"
_STREAM_ANSWER_FIELD = 2  # ModelStreamInferResponse.infer_response


# --- small readers ---------------------------------------------------------------------------


def parse_version(text: str) -> int | None:
    """A V2 ``version`` string: empty is the server's choice (the latest available), else an int64."""
    if not text:
        return None
    try:
        version = int(text)
    except ValueError:
        raise InvalidArgument(f"failed to parse version '{text}': expected an integer") from None
    if not 0 <= version < 2**63:
        raise InvalidArgument(f"version {text} is out of range")
    return version


def string_parameter(parameters: Mapping[str, Any], key: str) -> str:
    """A request parameter that must be a string (INVALID_ARGUMENT otherwise); "" when absent."""
    if key not in parameters:
        return ""
    parameter = parameters[key]
    if parameter.WhichOneof("parameter_choice") != "string_param":
        raise InvalidArgument(f"parameter '{key}' must be a string")
    value: str = parameter.string_param
    return value


def _int_parameter(parameters: Mapping[str, Any], key: str) -> object:
    """An integer request parameter as Triton's clients send it (``int64_param`` or ``uint64_param``);
    None when absent; any other kind is handed on for ``with_parameters`` to refuse."""
    if key not in parameters:
        return None
    parameter = parameters[key]
    choice = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, choice) if choice in ("int64_param", "uint64_param") else parameter


def model_spec(name: str, version_text: str, parameters: Mapping[str, Any]) -> ModelSpec:
    """The core's ModelSpec: a version, or TF Serving's ``version_label`` parameter, or neither."""
    if not name:
        raise InvalidArgument("model name is required")
    version = parse_version(version_text)
    label = string_parameter(parameters, LABEL_PARAMETER) or None
    if label is not None and version is not None:
        raise InvalidArgument("a request may name a model_version or a version_label parameter, not both")
    return ModelSpec(name, version, label)


# --- inference -------------------------------------------------------------------------------


def _decoder(request: Message, account: Account) -> Any:
    """The request's inputs, decoded once the version (and so its signatures) is known: datatypes are
    checked against the signature in V2's words; big typed contents decode off the event loop."""
    signature_name = string_parameter(request.parameters, SIGNATURE_PARAMETER) or DEFAULT_SIGNATURE

    def decode(signatures: Mapping[str, Signature]) -> Any:
        signature = signatures.get(signature_name)
        if signature is not None:
            _check_datatypes(request, signature)
        if asyncio._get_running_loop() is not None and _decodes_big(request):
            return off_loop(v2_proto.decode_inputs, request, account)
        return v2_proto.decode_inputs(request, account)

    return decode


def _check_datatypes(request: Message, signature: Signature) -> None:
    for tensor in request.inputs:
        spec = signature.inputs.get(tensor.name)
        if spec is None:
            continue  # the core names the inputs that do not belong, with every other input it expects
        expected = v2_name(spec.dtype)
        if tensor.datatype != expected:
            raise InvalidArgument(
                f"unexpected datatype {tensor.datatype} for input '{tensor.name}', expecting {expected}"
            )


def _decodes_big(request: Message) -> bool:
    """Decoding allocates ``OFFLOAD_BYTES`` or more: typed values (8 bytes each at most), BYTES data."""
    total = 0
    for index, tensor in enumerate(request.inputs):
        if request.raw_input_contents:
            if tensor.datatype == "BYTES":
                total += len(request.raw_input_contents[index])
            continue  # a fixed-size raw input is a view: nothing to decode
        field = v2_proto.CONTENTS_FIELD.get(tensor.datatype)
        if field is not None:
            values = getattr(tensor.contents, field[0])
            total += 8 * len(values) if tensor.datatype != "BYTES" else sum(map(len, values))
    return total >= OFFLOAD_BYTES


def infer_answer(request: Message, answer: InferenceResponse) -> Answer:
    """The ModelInferResponse: outputs raw (as Triton answers), the request's ``id`` echoed."""
    response = pb.ModelInferResponse(model_name=answer.model, model_version=str(answer.version), id=request.id)
    parts = v2_proto.response_parts(answer.outputs, response)
    return Answer(response, tuple(parts))


def stream_answer(answer: Answer) -> Answer:
    """A ModelInferResponse wrapped as a ModelStreamInferResponse, its raw parts still not copied."""
    head = answer.message.SerializeToString()
    size = len(head) + sum(len(p) if isinstance(p, bytes) else p.nbytes for p in answer.parts)
    return Answer(pb.ModelStreamInferResponse(), (length_delimited(_STREAM_ANSWER_FIELD, size), head, *answer.parts))


def stream_error(request: Any, message: str) -> Message:
    """Triton's stream error: ``error_message``, and the request's model and id so a client can match it."""
    response = pb.ModelStreamInferResponse(error_message=message)
    if isinstance(request, Message):
        response.infer_response.model_name = request.model_name
        response.infer_response.id = request.id
    return response


# --- the service -----------------------------------------------------------------------------


class InferenceServicer:
    """``inference.GRPCInferenceService``; its unary methods are RPC bodies (``grpc_calls.inline_rpc``,
    ``async_rpc``); ModelStreamInfer is driven by ``stream_handler``."""

    def __init__(self, core: Core) -> None:
        self._core = core

    async def ServerLive(self, request: Any, context: Context, trace: RequestTrace) -> Message:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Context, trace: RequestTrace) -> Message:
        return pb.ServerReadyResponse(ready=self._core.ready())

    async def ModelReady(self, request: Any, context: Context, trace: RequestTrace) -> Message:
        if not request.name:
            raise InvalidArgument("model name is required")
        return pb.ModelReadyResponse(ready=self._core.ready(request.name, parse_version(request.version)))

    async def ServerMetadata(self, request: Any, context: Context, trace: RequestTrace) -> Message:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request: Any, context: Context, trace: RequestTrace) -> Message:
        metadata = self._core.metadata(model_spec(request.name, request.version, {}), trace)
        signature = described_signature(metadata.signatures)
        response = pb.ModelMetadataResponse(name=metadata.model, platform=metadata.platform)
        response.versions.extend(str(v) for v in metadata.versions or (metadata.version,))
        for tensor in tensors(signature.inputs):
            response.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        for tensor in tensors(signature.outputs):
            response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        return response

    async def ModelInfer(self, request: Any, context: Context, trace: RequestTrace) -> Answer:
        spec = model_spec(request.model_name, request.model_version, request.parameters)
        signature_name = string_parameter(request.parameters, SIGNATURE_PARAMETER)
        # The request's share of the memory budget, held until its answer is built.
        with self._core.budget.account() as account:
            answer = await self._core.predict(
                InferenceRequest(
                    spec,
                    _decoder(request, account),
                    signature_name,
                    [output.name for output in request.outputs],
                    deadline_of(context),
                    request_options.with_parameters(
                        request_options_of(context),
                        _int_parameter(request.parameters, "priority"),
                        _int_parameter(request.parameters, "timeout"),
                    ),
                    account,
                    trace,
                )
            )
            check_active(context)  # a client gone while the model ran: its answer is not encoded
            return infer_answer(request, answer)

    async def RepositoryIndex(self, request: Any, context: Context, trace: RequestTrace) -> Message:
        # One repository (the model config): ``repository_name`` picks nothing, as in a one-repository Triton.
        response = pb.RepositoryIndexResponse()
        for entry in self._core.repository_index(request.ready):
            version = "" if entry.version is None else str(entry.version)
            response.models.add(name=entry.name, version=version, state=entry.state, reason=entry.reason)
        return response

    async def RepositoryModelLoad(self, request: Any, context: Context, trace: RequestTrace) -> Message:
        if request.parameters:
            names = ", ".join(sorted(request.parameters))
            raise InvalidArgument(f"load parameters are not supported (models come from the model config): {names}")
        await self._core.load_model(_repository_model(request))
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Context, trace: RequestTrace) -> Message:
        # ``unload_dependents`` has nothing to act on: modelserve has no ensembles.
        await self._core.unload_model(_repository_model(request))
        return pb.RepositoryModelUnloadResponse()


def _repository_model(request: Any) -> str:
    if not request.model_name:
        raise InvalidArgument("model name is required")
    name: str = request.model_name
    return name


# --- ModelStreamInfer --------------------------------------------------------------------------


def _stream_reply(
    request: Any, exc: Exception, faults: FaultLog, servicer: InferenceServicer, watch: Watch, trace: RequestTrace
) -> Message:
    _, details = grpc_status(exc, servicer.ModelInfer, faults)
    failed(trace, exc)
    watch.close(trace, trace.code, 0, trace.reason)
    release(exc)
    return stream_error(request, details)


def stream_handler(servicer: InferenceServicer, faults: FaultLog, watch: Watch) -> Any:
    """ModelStreamInfer on the threaded server: each request run inline, answered in order; each
    message has a trace of its own."""

    def handler(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Answer | Message]:
        for request in requests:
            trace = open_trace(watch, "v2_grpc", "infer", context)
            try:
                check_active(context)
                answer = stream_answer(run_inline(servicer.ModelInfer(parsed(request), context, trace)))
            except Exception as exc:
                yield _stream_reply(request, exc, faults, servicer, watch, trace)
            else:
                watch.close(trace)
                yield answer

    return handler


def async_stream_handler(servicer: InferenceServicer, faults: FaultLog, watch: Watch) -> Any:
    """ModelStreamInfer on ``grpc.aio``: each request awaited on the loop, answered in order."""

    async def handler(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Answer | Message]:
        async for request in requests:
            trace = open_trace(watch, "v2_grpc", "infer", context)
            try:
                if isinstance(request, Unparsed):
                    request = await off_loop(request.parse, request.data)
                answer = stream_answer(await servicer.ModelInfer(parsed(request), context, trace))
            except asyncio.CancelledError:
                watch.close(trace, Code.CANCELLED, 0, "cancelled")
                raise
            except Exception as exc:
                yield _stream_reply(request, exc, faults, servicer, watch, trace)
            else:
                watch.close(trace)
                yield answer

    return handler


# --- registration ----------------------------------------------------------------------------


def add_service(server: grpc.Server | grpc.aio.Server, core: Core, watch: Watch) -> str:
    """Register ``inference.GRPCInferenceService`` on ``server`` (threaded or ``grpc.aio``); its full name."""
    faults = FaultLog(log)  # one rate limit for the V2 service's unexpected errors
    servicer = InferenceServicer(core)
    on_loop = isinstance(server, grpc.aio.Server)
    wrap = async_rpc if on_loop else inline_rpc
    descriptor = service_descriptor(INFERENCE_SERVICE)
    handlers = {}
    for method in descriptor.methods:
        parse = lenient_parser(message_class(method.input_type.full_name), on_loop)
        if method.name == "ModelStreamInfer":
            stream = async_stream_handler if on_loop else stream_handler
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                stream(servicer, faults, watch), request_deserializer=parse, response_serializer=serialize
            )
            continue
        body = getattr(servicer, method.name, None)
        if body is None:
            continue  # ModelStatistics: clients get UNIMPLEMENTED
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            wrap(body, faults, watch, "v2_grpc"), request_deserializer=parse, response_serializer=serialize
        )
    add_handlers(server, descriptor.full_name, handlers)
    return INFERENCE_SERVICE


__all__ = ["InferenceServicer", "add_service", "infer_answer", "stream_answer"]
