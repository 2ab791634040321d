"""TF Serving's gRPC API: ``PredictionService`` and ``ModelService``, wire-compatible with the official stubs.

Thin by design: decode protos to numpy, call the core, encode the answer, and
map core errors to gRPC status codes once (``GRPC_STATUS``).

Each RPC is written once, for both server models (``api.grpc_server``): a
method that needs the core's inference yields a ``CoreCall`` and gets its
result back. On grpcio's threaded server the call runs blocking on the
handler thread (the model inline, no hand-off); on ``grpc.aio`` (with
``--enable_batching``) it is awaited on the event loop, so a call waiting in a
batch queue holds no thread. Both live in the same process as the REST server
and share the core, the models and their leases with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc
import numpy as np
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from ..codecs.tensor_proto import from_ndarray, shape_to_proto, to_ndarrays
from ..codecs.tensor_wire import tensor_entry
from ..errors import Code, InvalidArgument, ServingError, as_serving_error
from ..execution import request_options
from ..execution.request_options import RequestOptions
from ..lifecycle.config import model_configs
from ..lifecycle.leases import Lease
from ..protos import MODEL_SERVICE, PREDICTION_SERVICE, message_class, pb, service_descriptor
from ..serving import example_tasks
from ..serving.core import ModelSpec, ServingCore
from ..signatures import Signature, TensorSpec

log = logging.getLogger(__name__)

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


def _lenient_parser(cls: type[Message]) -> Callable[[bytes], Message | _Malformed]:
    def parse(data: bytes) -> Message | _Malformed:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return _Malformed(cls.DESCRIPTOR.full_name, str(exc))

    return parse


class CoreCall(NamedTuple):
    """A core call an RPC needs: made blocking on a threaded server's handler thread, or awaited on
    the event loop under ``grpc.aio`` (``_run_blocking`` / ``_run_awaited``)."""

    blocking: Callable[..., Any]
    awaited: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...]


# An RPC's body: its answer, or a generator that yields CoreCalls and returns the answer.
Body = Callable[[Any, Any], Any]


def blocking_rpc(body: Body) -> Callable[[Any, grpc.ServicerContext], Any]:
    """For grpcio's threaded server. Errors become gRPC statuses (once, here); a bug costs one
    request, never the server."""

    @functools.wraps(body)
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return _run_blocking(body(_parsed(request), context))
        except ServingError as exc:
            _abort(context, exc)
        except Exception as exc:
            log.exception("Unhandled error in %s", body.__name__)
            _abort(context, as_serving_error(exc))
        raise AssertionError("unreachable: abort raises")

    return handler


def async_rpc(body: Body) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    """For ``grpc.aio``: the same, with the core's calls awaited on the event loop."""

    @functools.wraps(body)
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await _run_awaited(body(_parsed(request), context))
        except ServingError as exc:
            await _abort_async(context, exc)
        except Exception as exc:
            log.exception("Unhandled error in %s", body.__name__)
            await _abort_async(context, as_serving_error(exc))
        raise AssertionError("unreachable: abort raises")

    return handler


def _parsed(request: Any) -> Any:
    if isinstance(request, _Malformed):
        raise InvalidArgument(f"Could not parse {request.message_type}: {request.error}")
    return request


def _run_blocking(result: Any) -> Any:
    if not isinstance(result, Generator):
        return result
    with contextlib.closing(result):  # a call cut short (cancelled) still unwinds the RPC's leases
        done, value = _resume(result, None, None)
        while not done:
            try:
                reply, error = value.blocking(*value.args), None
            except Exception as exc:  # thrown back into the RPC, where its with-blocks unwind
                reply, error = None, exc
            done, value = _resume(result, reply, error)
    return value


async def _run_awaited(result: Any) -> Any:
    if not isinstance(result, Generator):
        return result
    with contextlib.closing(result):
        done, value = _resume(result, None, None)
        while not done:
            try:
                reply, error = await value.awaited(*value.args), None
            except Exception as exc:
                reply, error = None, exc
            done, value = _resume(result, reply, error)
    return value


def _resume(rpc: Generator[CoreCall, Any, Any], reply: Any, error: Exception | None) -> tuple[bool, Any]:
    """Send the last call's reply (or throw its error) into the RPC: (True, answer) or (False, next call)."""
    try:
        return False, (rpc.throw(error) if error is not None else rpc.send(reply))
    except StopIteration as stop:
        return True, stop.value


def _abort(context: grpc.ServicerContext, exc: ServingError) -> None:
    context.abort(GRPC_STATUS.get(exc.code, grpc.StatusCode.UNKNOWN), status_details(exc.message))


async def _abort_async(context: grpc.aio.ServicerContext[Any, Any], exc: ServingError) -> None:
    await context.abort(GRPC_STATUS.get(exc.code, grpc.StatusCode.UNKNOWN), status_details(exc.message))


def _in_thread(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """A blocking core call (a config reload) awaited from the event loop, on a thread of its own."""
    return functools.partial(asyncio.to_thread, fn)


def _deadline(context: grpc.ServicerContext) -> float | None:
    remaining: float | None = context.time_remaining()
    if remaining is None or not math.isfinite(remaining) or remaining > 1e8:
        return None
    return time.monotonic() + remaining


def _options(context: grpc.ServicerContext) -> RequestOptions:
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
        signature_name=spec.signature_name,
    )


def _answer_spec(out: Message, spec: ModelSpec, version: int) -> None:
    """TF's MakeModelSpec: the requested name, the version used, the signature (default filled in)."""
    out.name = spec.name
    out.version.value = version
    out.signature_name = spec.signature


# --- PredictionService ----------------------------------------------------------------------


RpcResult = Generator[CoreCall, Any, Message]


class PredictionServicer:
    """``tensorflow.serving.PredictionService``; its methods are RPC bodies (see ``CoreCall``)."""

    def __init__(self, core: ServingCore, *, tensor_content: bool = False) -> None:
        self._core = core
        self._tensor_content = tensor_content

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Generator[CoreCall, Any, Answer]:
        spec = model_spec(request)
        core = self._core
        with core.lease(spec) as lease:
            inputs = to_ndarrays(request.inputs)
            args = (lease, spec.signature, inputs, list(request.output_filter), _deadline(context), _options(context))
            outputs = yield CoreCall(core.predict_blocking, core.predict, args)
            version = lease.version
        return predict_answer(outputs, spec, version, self._tensor_content)

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Message:
        spec = model_spec(request)
        if not request.metadata_field:
            raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise InvalidArgument(f"Metadata field {field} is not supported")
        with self._core.lease(spec) as lease:
            signatures = signature_def_map(lease.servable.signatures)
            version = lease.version
        response = pb.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(signatures)
        return response

    def Classify(self, request: Any, context: grpc.ServicerContext) -> RpcResult:
        return self._one_task("classify", request, context, pb.ClassificationResponse())

    def Regress(self, request: Any, context: grpc.ServicerContext) -> RpcResult:
        return self._one_task("regress", request, context, pb.RegressionResponse())

    def _one_task(
        self, kind: example_tasks.Kind, request: Any, context: grpc.ServicerContext, response: Message
    ) -> RpcResult:
        """Classify or Regress: one plan run, its result and model spec written into ``response``."""
        spec = model_spec(request)
        with self._core.lease(spec) as lease:
            plan = example_tasks.plan(
                kind, lease.servable.signatures, spec.signature_name, example_tasks.from_input(request.input)
            )
            (result,) = yield self._plans(lease, [plan], context)
            version = lease.version
        _write_result(kind, response.result, result)
        _answer_spec(response.model_spec, spec, version)
        return response

    def _plans(self, lease: Lease, plans: list[example_tasks.Plan], context: grpc.ServicerContext) -> CoreCall:
        core = self._core
        return CoreCall(core.run_plans_blocking, core.run_plans, (lease, plans, _deadline(context), _options(context)))

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> RpcResult:
        tasks = list(request.tasks)
        example_tasks.check_multi_inference(
            [(t.model_spec.name, t.model_spec.signature_name, t.method_name) for t in tasks]
        )
        spec = spec_of(tasks[0].model_spec) if tasks else ModelSpec("")
        with self._core.lease(spec) as lease:
            plans = example_tasks.multi_plans(
                lease.servable.signatures,
                [(t.model_spec.signature_name, t.method_name) for t in tasks],
                example_tasks.from_input(request.input),
            )
            results = yield self._plans(lease, plans, context)
            version = lease.version
        response = pb.MultiInferenceResponse()
        for task, plan, result in zip(tasks, plans, results, strict=True):
            out = response.results.add()
            out.model_spec.CopyFrom(task.model_spec)
            out.model_spec.version.value = version
            field = "classification_result" if plan.kind == "classify" else "regression_result"
            _write_result(plan.kind, getattr(out, field), result)
        return response


@dataclass(frozen=True)
class Answer:
    """A PredictResponse whose big tensors are still arrays: ``serialize`` writes them from their
    own buffers (``codecs.tensor_wire``), one copy for the whole answer."""

    message: Message  # model_spec and the outputs protobuf encodes itself
    parts: tuple[bytes | memoryview, ...]

    def serialize(self) -> bytes:
        return b"".join((self.message.SerializeToString(), *self.parts))


def predict_answer(outputs: Mapping[str, np.ndarray], spec: ModelSpec, version: int, tensor_content: bool) -> Answer:
    """The Predict answer: raw-buffer tensors as wire parts, the rest (strings, varints) via protobuf."""
    response = pb.PredictResponse()
    parts: list[bytes | memoryview] = []
    for alias, array in outputs.items():
        entry = None
        if array.nbytes >= _WIRE_BYTES:
            entry = tensor_entry(_OUTPUTS_FIELD, alias, array, tensor_content=tensor_content)
        if entry is None:
            from_ndarray(array, tensor_content=tensor_content, out=response.outputs[alias])
        else:
            parts += entry
    _answer_spec(response.model_spec, spec, version)
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

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Message:
        spec = model_spec(request)  # a label is ignored, as in TF Serving
        response = pb.GetModelStatusResponse()
        for row in self._core.status(spec.name, spec.version):
            entry = response.model_version_status.add(version=row.version, state=int(row.state))
            entry.status.error_code = int(row.error_code)
            entry.status.error_message = row.error_message
        return response

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> RpcResult:
        response = pb.ReloadConfigResponse()
        if request.config.WhichOneof("config") is None:
            log.info("Taking no action for empty config.")  # as TF Serving: a later config may follow
        else:
            reload = self._core.reload_and_wait
            yield CoreCall(reload, _in_thread(reload), (model_configs(request.config),))
        response.status.error_code = int(Code.OK)
        return response


# --- registration ---------------------------------------------------------------------------


def add_services(server: Any, core: ServingCore, *, tensor_content: bool = False) -> list[str]:
    """Register PredictionService and ModelService on ``server`` (threaded or ``grpc.aio``); returns
    their full names."""
    _register(server, PREDICTION_SERVICE, PredictionServicer(core, tensor_content=tensor_content))
    _register(server, MODEL_SERVICE, ModelServicer(core))
    return [PREDICTION_SERVICE, MODEL_SERVICE]


def _register(server: Any, service: str, servicer: object) -> None:
    descriptor: ServiceDescriptor = service_descriptor(service)
    wrap = async_rpc if isinstance(server, grpc.aio.Server) else blocking_rpc
    handlers = {}
    for method in descriptor.methods:
        body = getattr(servicer, method.name, None)
        if body is None:
            continue  # clients get UNIMPLEMENTED
        request = message_class(method.input_type.full_name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            wrap(body),
            request_deserializer=_lenient_parser(request),
            response_serializer=_serialize,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))
    register = getattr(server, "add_registered_method_handlers", None)
    if register is not None:  # grpcio >= 1.62: no generic lookup per call
        register(descriptor.full_name, handlers)
