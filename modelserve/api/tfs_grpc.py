"""TF Serving's gRPC API: ``PredictionService`` and ``ModelService``, wire-compatible with the official stubs.

Thin by design: decode protos to numpy, call the core, encode the answer, and
map core errors to gRPC status codes once (``GRPC_STATUS``).

Each RPC is written once, as a coroutine, for both server models
(``api.grpc_server``): one execution path, two drivers. On grpcio's threaded
server (without ``--enable_batching``) the handler thread runs it inline
(``inline_rpc``, ``execution.runner.run_inline``), the model on that thread
itself, with no hand-off; under ``grpc.aio`` (with batching) it is awaited on
the event loop (``async_rpc``), so a call waiting in a batch queue holds no
thread. Both live in the same process as the REST server and share the core,
the models and their leases with it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import grpc
import numpy as np
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from ..budget import Account
from ..codecs.tensor_proto import from_ndarray, shape_to_proto, to_ndarrays
from ..codecs.tensor_wire import tensor_entry
from ..dtypes import DType, to_numpy
from ..errors import Cancelled, Code, InvalidArgument, Unimplemented
from ..execution import request_options
from ..execution.request_options import RequestOptions
from ..execution.runner import run_inline
from ..lifecycle.config import model_configs
from ..protos import MODEL_SERVICE, PREDICTION_SERVICE, message_class, pb, service_descriptor
from ..serving import example_tasks
from ..serving.core import ServingCore
from ..serving.request import ExamplesRequest, ExamplesResponse, InferenceRequest, InferenceResponse, ModelSpec
from ..signatures import DEFAULT_SIGNATURE, Signature, TensorSpec
from .faults import FaultLog, release

log = logging.getLogger(__name__)
T = TypeVar("T")

# absl and gRPC share the canonical numbering, so every core code has a gRPC twin of the same name.
GRPC_STATUS: dict[Code, grpc.StatusCode] = {
    Code.CANCELLED: grpc.StatusCode.CANCELLED,
    Code.UNKNOWN: grpc.StatusCode.UNKNOWN,
    Code.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Code.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Code.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Code.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Code.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Code.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Code.ABORTED: grpc.StatusCode.ABORTED,
    Code.OUT_OF_RANGE: grpc.StatusCode.OUT_OF_RANGE,
    Code.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    Code.INTERNAL: grpc.StatusCode.INTERNAL,
    Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.DATA_LOSS: grpc.StatusCode.DATA_LOSS,
    Code.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
}

# tensorflow_serving/model_servers/grpc_status_util.cc
MAX_ERROR_MESSAGE = 1024
# Requests (and decoded inputs) this big are parsed and decoded off grpc.aio's event loop, as REST
# does (``tfs_rest._OFFLOAD_BYTES``); smaller ones, the usual case, inline.
OFFLOAD_BYTES = 256 * 1024
_STRING_WIDTH = 8  # a reference per element, before the bytes themselves
_OUTPUTS_FIELD = pb.PredictResponse.DESCRIPTOR.fields_by_name["outputs"].number
# Outputs at least this big skip protobuf's copies (codecs.tensor_wire); below, protobuf is faster.
_WIRE_BYTES = 16 * 1024


def status_details(message: str) -> str:
    """TF Serving cuts gRPC error messages at 1024 characters."""
    if len(message) > MAX_ERROR_MESSAGE:
        return message[:MAX_ERROR_MESSAGE] + "...TRUNCATED"
    return message


# --- request plumbing -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Malformed:
    """What a request that is not a valid proto deserializes to; its RPC answers INVALID_ARGUMENT."""

    message_type: str
    error: str


@dataclass(frozen=True)
class _Unparsed:
    """A big request as grpc.aio's deserializer leaves it: parsed off the event loop by its handler."""

    parse: Callable[[bytes], Message | _Malformed]
    data: bytes


def _lenient_parser(cls: type[Message], on_loop: bool = False) -> Callable[[bytes], Any]:
    """The request deserializer. ``on_loop``: grpc.aio calls it on the event loop, where a request of
    ``OFFLOAD_BYTES`` or more is only kept, to be parsed off the loop (``_off_loop``)."""

    def parse(data: bytes) -> Message | _Malformed:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return _Malformed(cls.DESCRIPTOR.full_name, str(exc))

    def deserialize(data: bytes) -> Message | _Malformed | _Unparsed:
        return _Unparsed(parse, data) if len(data) >= OFFLOAD_BYTES else parse(data)

    return deserialize if on_loop else parse


# Either server model's context; bodies read only time_remaining() and invocation_metadata().
Context: TypeAlias = grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any]
# An RPC's body: a coroutine method of a servicer, (request, context) -> answer.
Body = Callable[[Any, Context], Coroutine[Any, Any, Any]]


def inline_rpc(body: Body, faults: FaultLog) -> Callable[[Any, grpc.ServicerContext], Any]:
    """The threaded server's handler of an RPC body: run inline on the handler thread. Errors become
    gRPC statuses (once, in ``_status``); a bug costs one request, never the server. A call whose
    client has gone (cancelled, or its deadline passed) while it waited for a thread is not run."""

    @functools.wraps(body)
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            _check_active(context)
            return run_inline(body(_parsed(request), context))
        except Exception as exc:
            status = _status(exc, body, faults)
            release(exc)
        context.abort(*status)
        raise AssertionError("unreachable: abort raises")

    return handler


def async_rpc(body: Body, faults: FaultLog) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    """``grpc.aio``'s handler of the same body, awaited on the event loop; errors as ``inline_rpc``.

    A client that goes away cancels the handler's task, and with it the call wherever it waits
    (a batch queue drops it). The status is set, not raised (``abort``): grpc.aio keeps a raised
    abort in a reference cycle with the handler's frame, and so the request, until the garbage
    collector runs."""

    @functools.wraps(body)
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            if isinstance(request, _Unparsed):
                request = await _off_loop(request.parse, request.data)
            return await body(_parsed(request), context)
        except Exception as exc:
            code, details = _status(exc, body, faults)
            release(exc)
        context.set_code(code)
        context.set_details(details)
        return None  # grpc.aio sends no message with a status that is not OK

    return handler


def _off_loop(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _parsed(request: Any) -> Any:
    if isinstance(request, _Malformed):
        raise InvalidArgument(f"Could not parse {request.message_type}: {request.error}")
    return request


def _check_active(context: Context) -> None:
    """On the threaded server: CANCELLED once the call is over for its client (its deadline passed, or
    it cancelled), so no more work goes into it. grpc.aio cancels the handler's task instead."""
    if isinstance(context, grpc.ServicerContext) and not context.is_active():
        raise Cancelled("Cancelled")


def _status(exc: Exception, body: Body, faults: FaultLog) -> tuple[grpc.StatusCode, str]:
    error = faults.answer("gRPC", exc, "Unhandled error in %s", body.__name__)
    return GRPC_STATUS.get(error.code, grpc.StatusCode.UNKNOWN), status_details(error.message)


def _deadline(context: Context) -> float | None:
    remaining: float | None = context.time_remaining()
    if remaining is None or not math.isfinite(remaining) or remaining > 1e8:
        return None
    return time.monotonic() + remaining


def _options(context: Context) -> RequestOptions:
    return request_options.from_headers(context.invocation_metadata())


def model_spec(message: Message) -> ModelSpec:
    """The core's ModelSpec from a request's ``model_spec`` (INVALID_ARGUMENT when it is missing)."""
    if not message.HasField("model_spec"):
        raise InvalidArgument("Missing ModelSpec")
    return spec_of(message.model_spec)


def spec_of(spec: Message) -> ModelSpec:
    choice = spec.WhichOneof("version_choice")
    return ModelSpec(
        name=spec.name,
        version=spec.version.value if choice == "version" else None,
        label=spec.version_label if choice == "version_label" else None,
    )


def _answer_spec(out: Message, model: str, version: int, signature_name: str) -> None:
    """TF's MakeModelSpec: the requested name, the version used, the signature (default filled in)."""
    out.name = model
    out.version.value = version
    out.signature_name = signature_name or DEFAULT_SIGNATURE


# --- PredictionService ----------------------------------------------------------------------


class PredictionServicer:
    """``tensorflow.serving.PredictionService``; its methods are RPC bodies (``inline_rpc``, ``async_rpc``)."""

    def __init__(self, core: ServingCore, *, tensor_content: bool = False) -> None:
        self._core = core
        self._tensor_content = tensor_content

    async def Predict(self, request: Any, context: Context) -> Answer:
        spec = model_spec(request)
        # The request's share of the memory budget, held until its answer is built (grpcio
        # serializes it after the body returns: the parts are the outputs already charged).
        with self._core.budget.account() as account:
            response = await self._core.predict(
                InferenceRequest(
                    spec,
                    functools.partial(_decoded_inputs, request.inputs, account),  # once the model is found, as TF
                    request.model_spec.signature_name,
                    list(request.output_filter),
                    _deadline(context),
                    _options(context),
                    account,
                )
            )
            _check_active(context)  # a client gone while the model ran: its answer is not encoded
            return predict_answer(response, self._tensor_content)

    async def GetModelMetadata(self, request: Any, context: Context) -> Message:
        spec = model_spec(request)
        if not request.metadata_field:
            raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise InvalidArgument(f"Metadata field {field} is not supported")
        metadata = self._core.metadata(spec)
        response = pb.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = metadata.version
        response.metadata["signature_def"].Pack(signature_def_map(metadata.signatures))
        return response

    async def Classify(self, request: Any, context: Context) -> Message:
        return await self._one_task("classify", request, context, pb.ClassificationResponse())

    async def Regress(self, request: Any, context: Context) -> Message:
        return await self._one_task("regress", request, context, pb.RegressionResponse())

    async def _one_task(self, kind: example_tasks.Kind, request: Any, context: Context, response: Message) -> Message:
        """Classify or Regress: one task's result and the model spec written into ``response``."""
        run = self._core.classify if kind == "classify" else self._core.regress
        with self._core.budget.account() as account:
            answer = await run(self._examples(request, context, account))
        _write_result(kind, response.result, answer.results[0])
        _answer_spec(response.model_spec, answer.model, answer.version, request.model_spec.signature_name)
        return response

    def _examples(self, request: Any, context: Context, account: Account) -> ExamplesRequest:
        spec = model_spec(request)
        examples = example_tasks.from_input(request.input, account)
        signature_name = request.model_spec.signature_name
        return ExamplesRequest(spec, examples, signature_name, (), _deadline(context), _options(context), account)

    async def MultiInference(self, request: Any, context: Context) -> Message:
        tasks = list(request.tasks)
        with self._core.budget.account() as account:
            answer = await self._core.multi_inference(
                ExamplesRequest(
                    spec_of(tasks[0].model_spec) if tasks else ModelSpec(""),
                    example_tasks.from_input(request.input, account),
                    tasks=[(t.model_spec.name, t.model_spec.signature_name, t.method_name) for t in tasks],
                    deadline=_deadline(context),
                    options=_options(context),
                    account=account,
                )
            )
        return _multi_response(tasks, answer)


def _multi_response(tasks: list[Any], answer: ExamplesResponse) -> Message:
    response = pb.MultiInferenceResponse()
    for task, result in zip(tasks, answer.results, strict=True):
        out = response.results.add()
        out.model_spec.CopyFrom(task.model_spec)
        out.model_spec.version.value = answer.version
        kind = example_tasks.METHODS[task.method_name]
        field = "classification_result" if kind == "classify" else "regression_result"
        _write_result(kind, getattr(out, field), result)
    return response


def _decoded_inputs(
    tensors: Mapping[str, Message], account: Account, signatures: object
) -> Mapping[str, np.ndarray] | asyncio.Future[Mapping[str, np.ndarray]]:
    """A Predict request's arrays. On the event loop (grpc.aio), tensors that decode to
    ``OFFLOAD_BYTES`` or more (a fill rule expands a few bytes into many) are decoded off it."""
    if asyncio._get_running_loop() is not None and _decodes_big(tensors):
        return _off_loop(to_ndarrays, tensors, account)
    return to_ndarrays(tensors, account)


def _decodes_big(tensors: Mapping[str, Message]) -> bool:
    """Whether ``to_ndarrays`` allocates ``OFFLOAD_BYTES`` or more: elements (by the shape) times their
    width. Sizes are capped as they are multiplied, so a hostile shape stays cheap to measure."""
    total = 0
    for tensor in tensors.values():
        size = _WIDTHS.get(tensor.dtype, _STRING_WIDTH)
        for dim in tensor.tensor_shape.dim:
            size = min(size * max(0, dim.size), OFFLOAD_BYTES)
        total += size + len(tensor.tensor_content)
        if total >= OFFLOAD_BYTES:
            return True
    return False


def _width(dtype: DType) -> int:
    try:
        return int(to_numpy(dtype).itemsize)
    except Unimplemented:
        return _STRING_WIDTH


# Bytes per element by TensorProto dtype; strings, and dtypes numpy cannot hold, count a reference.
_WIDTHS = {int(d): _width(d) for d in DType if d != DType.DT_STRING}


@dataclass(frozen=True)
class Answer:
    """A PredictResponse whose big tensors are still arrays: ``serialize`` writes them from their
    own buffers (``codecs.tensor_wire``), one copy for the whole answer."""

    message: Message  # model_spec and the outputs protobuf encodes itself
    parts: tuple[bytes | memoryview, ...]

    def serialize(self) -> bytes:
        return b"".join((self.message.SerializeToString(), *self.parts))


def predict_answer(answer: InferenceResponse, tensor_content: bool) -> Answer:
    """The Predict answer: raw-buffer tensors as wire parts, the rest (strings, varints) via protobuf."""
    response = pb.PredictResponse()
    parts: list[bytes | memoryview] = []
    for alias, array in answer.outputs.items():
        entry = None
        if array.nbytes >= _WIRE_BYTES:
            entry = tensor_entry(_OUTPUTS_FIELD, alias, array, tensor_content=tensor_content)
        if entry is None:
            from_ndarray(array, tensor_content=tensor_content, out=response.outputs[alias])
        else:
            parts += entry
    _answer_spec(response.model_spec, answer.model, answer.version, answer.signature_name)
    return Answer(response, tuple(parts))


def _serialize(answer: Answer | Message) -> bytes:
    if isinstance(answer, Answer):
        return answer.serialize()
    data: bytes = answer.SerializeToString()
    return data


def _write_result(kind: example_tasks.Kind, out: Message, result: example_tasks.Result) -> None:
    """A plan's result as a ClassificationResult or a RegressionResult (``out``)."""
    if kind == "classify":
        for classes in result:
            add = out.classifications.add().classes.add
            for label, score in classes:  # type: ignore[union-attr]
                add(label=label, score=score)
    else:
        add = out.regressions.add
        for value in result:
            add(value=value)


def signature_def_map(signatures: Mapping[str, Signature]) -> Message:
    """The servable's signatures as TF Serving's ``SignatureDefMap``."""
    out = pb.SignatureDefMap()
    for key, signature in signatures.items():
        definition = out.signature_def[key]
        definition.method_name = signature.method_name
        for alias, spec in signature.inputs.items():
            _tensor_info(definition.inputs[alias], spec)
        for alias, spec in signature.outputs.items():
            _tensor_info(definition.outputs[alias], spec)
    return out


def _tensor_info(out: Message, spec: TensorSpec) -> None:
    out.name = spec.name
    out.dtype = int(spec.dtype)
    out.tensor_shape.CopyFrom(shape_to_proto(spec.shape))


# --- ModelService ---------------------------------------------------------------------------


class ModelServicer:
    """``tensorflow.serving.ModelService``: version status and config reloads."""

    def __init__(self, core: ServingCore) -> None:
        self._core = core

    async def GetModelStatus(self, request: Any, context: Context) -> Message:
        spec = model_spec(request)  # a label is ignored, as in TF Serving
        response = pb.GetModelStatusResponse()
        for row in self._core.status(spec.name, spec.version):
            entry = response.model_version_status.add(version=row.version, state=int(row.state))
            entry.status.error_code = int(row.error_code)
            entry.status.error_message = row.error_message
        return response

    async def HandleReloadConfigRequest(self, request: Any, context: Context) -> Message:
        response = pb.ReloadConfigResponse()
        if request.config.WhichOneof("config") is None:
            log.info("Taking no action for empty config.")  # as TF Serving: a later config may follow
        else:
            await self._core.reload_config(model_configs(request.config))
        response.status.error_code = int(Code.OK)
        return response


# --- registration ---------------------------------------------------------------------------


def add_services(
    server: grpc.Server | grpc.aio.Server, core: ServingCore, *, tensor_content: bool = False
) -> list[str]:
    """Register PredictionService and ModelService on ``server`` (threaded or ``grpc.aio``); returns
    their full names."""
    faults = FaultLog(log)  # one rate limit for the whole gRPC front end
    _register(server, PREDICTION_SERVICE, PredictionServicer(core, tensor_content=tensor_content), faults)
    _register(server, MODEL_SERVICE, ModelServicer(core), faults)
    return [PREDICTION_SERVICE, MODEL_SERVICE]


def _register(server: grpc.Server | grpc.aio.Server, service: str, servicer: object, faults: FaultLog) -> None:
    descriptor: ServiceDescriptor = service_descriptor(service)
    on_loop = isinstance(server, grpc.aio.Server)
    wrap = async_rpc if on_loop else inline_rpc
    handlers = {}
    for method in descriptor.methods:
        body = getattr(servicer, method.name, None)
        if body is None:
            continue  # clients get UNIMPLEMENTED
        request = message_class(method.input_type.full_name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            wrap(body, faults),
            request_deserializer=_lenient_parser(request, on_loop),
            response_serializer=_serialize,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))
    register = getattr(server, "add_registered_method_handlers", None)
    if register is not None:  # grpcio >= 1.62: no generic lookup per call
        register(descriptor.full_name, handlers)
