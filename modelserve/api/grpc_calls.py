"""The gRPC plumbing both gRPC front ends share (``api.tfs_grpc``, TF Serving's; ``api.v2_grpc``, KServe V2's).

Each RPC is written once, as a coroutine (a ``Body``), and driven by either server model: inline on
grpcio's handler thread (``inline_rpc``) or awaited on grpc.aio's loop (``async_rpc``). Requests parse
leniently (``lenient_parser``: a malformed one answers INVALID_ARGUMENT, a big one parses off the loop),
errors map to gRPC codes once (``GRPC_STATUS``, ``grpc_status``), and answers may carry big tensors as
raw parts written without protobuf's copies (``Answer``, ``serialize``).
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from ..errors import Cancelled, Code, InvalidArgument
from ..execution import request_options
from ..execution.request_options import RequestOptions
from ..execution.runner import run_inline
from ..observe.faults import FaultLog, release
from ..observe.requests import Watch
from ..observe.trace import Front, RequestTrace
from .http import failed

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
# does (``http.OFFLOAD_BYTES``); smaller ones, the usual case, inline.
OFFLOAD_BYTES = 256 * 1024


def status_details(message: str) -> str:
    """TF Serving cuts gRPC error messages at 1024 characters."""
    if len(message) > MAX_ERROR_MESSAGE:
        return message[:MAX_ERROR_MESSAGE] + "...TRUNCATED"
    return message


@dataclass(frozen=True)
class Malformed:
    """What a request that is not a valid proto deserializes to; its RPC answers INVALID_ARGUMENT."""

    message_type: str
    error: str


@dataclass(frozen=True)
class Unparsed:
    """A big request as grpc.aio's deserializer leaves it: parsed off the event loop by its handler."""

    parse: Callable[[bytes], Message | Malformed]
    data: bytes


def lenient_parser(cls: type[Message], on_loop: bool = False) -> Callable[[bytes], Any]:
    """The request deserializer. ``on_loop``: grpc.aio calls it on the event loop, where a request of
    ``OFFLOAD_BYTES`` or more is only kept, to be parsed off the loop (``off_loop``)."""

    def parse(data: bytes) -> Message | Malformed:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return Malformed(cls.DESCRIPTOR.full_name, str(exc))

    def deserialize(data: bytes) -> Message | Malformed | Unparsed:
        return Unparsed(parse, data) if len(data) >= OFFLOAD_BYTES else parse(data)

    return deserialize if on_loop else parse


# Either server model's context; bodies read only time_remaining() and invocation_metadata().
Context: TypeAlias = grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any]
# An RPC's body: a coroutine method of a servicer, (request, context, its trace) -> answer.
Body = Callable[[Any, Context, RequestTrace], Coroutine[Any, Any, Any]]

# The ``api`` label of an RPC (the names REST uses for the same thing); others: the method's name in snake case.
_APIS = {
    "GetModelMetadata": "metadata",
    "GetModelStatus": "status",
    "HandleReloadConfigRequest": "reload_config",
    "ModelInfer": "infer",
    "ModelStreamInfer": "infer",
    "ModelReady": "ready",
    "ModelMetadata": "metadata",
    "ServerLive": "live",
    "RepositoryModelLoad": "load",
    "RepositoryModelUnload": "unload",
}


def api_name(method: str) -> str:
    return _APIS.get(method) or "".join(f"_{c.lower()}" if c.isupper() else c for c in method).lstrip("_")


def open_trace(watch: Watch, protocol: Front, api: str, context: Context) -> RequestTrace:
    """A call's trace: its ``x-request-id`` and ``traceparent`` metadata, its peer."""
    request_id = traceparent = ""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            request_id = str(value)[:200]
        elif key == "traceparent":
            traceparent = str(value)[:200]
    return watch.open(protocol, api, request_id=request_id, peer=context.peer(), traceparent=traceparent)


def _id_metadata(trace: RequestTrace) -> tuple[tuple[str, str]]:
    """The request id, returned in the call's initial metadata."""
    return (("x-request-id", trace.request_id),)


def inline_rpc(
    body: Body, faults: FaultLog, watch: Watch, protocol: Front
) -> Callable[[Any, grpc.ServicerContext], Any]:
    """The threaded server's handler of an RPC body: run inline on the handler thread. Errors become
    gRPC statuses (once, in ``grpc_status``); a bug costs one request, never the server. A call whose
    client has gone (cancelled, or its deadline passed) while it waited for a thread is not run.
    Each call's trace is opened and closed here (``watch``)."""
    api = api_name(body.__name__)

    @functools.wraps(body)
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        trace = open_trace(watch, protocol, api, context)
        try:
            context.send_initial_metadata(_id_metadata(trace))
            check_active(context)
            answer = run_inline(body(parsed(request), context, trace))
        except Exception as exc:
            status = grpc_status(exc, body, faults)
            failed(trace, exc)
            release(exc)
        else:
            watch.close(trace)
            return answer
        watch.close(trace, trace.code, 0, trace.reason)
        context.abort(*status)
        raise AssertionError("unreachable: abort raises")

    return handler


def async_rpc(
    body: Body, faults: FaultLog, watch: Watch, protocol: Front
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    """``grpc.aio``'s handler of the same body, awaited on the event loop; errors and traces as ``inline_rpc``.

    A client that goes away cancels the handler's task, and with it the call wherever it waits
    (a batch queue drops it). The status is set, not raised (``abort``): grpc.aio keeps a raised
    abort in a reference cycle with the handler's frame, and so the request, until the garbage
    collector runs."""
    api = api_name(body.__name__)

    @functools.wraps(body)
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        trace = open_trace(watch, protocol, api, context)
        try:
            await context.send_initial_metadata(_id_metadata(trace))
            if isinstance(request, Unparsed):
                request = await off_loop(request.parse, request.data)
            answer = await body(parsed(request), context, trace)
        except asyncio.CancelledError:
            watch.close(trace, Code.CANCELLED, 0, "cancelled")
            raise
        except Exception as exc:
            code, details = grpc_status(exc, body, faults)
            failed(trace, exc)
            release(exc)
        else:
            watch.close(trace)
            return answer
        watch.close(trace, trace.code, 0, trace.reason)
        context.set_code(code)
        context.set_details(details)
        return None  # grpc.aio sends no message with a status that is not OK

    return handler


def off_loop(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``fn(*args)`` on the loop's default executor: bulk parsing and decoding, never on grpc.aio's loop."""
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)


def parsed(request: Any) -> Any:
    """The request, or INVALID_ARGUMENT for one that did not parse (``Malformed``)."""
    if isinstance(request, Malformed):
        raise InvalidArgument(f"Could not parse {request.message_type}: {request.error}")
    return request


def check_active(context: Context) -> None:
    """On the threaded server: CANCELLED once the call is over for its client (its deadline passed, or
    it cancelled), so no more work goes into it. grpc.aio cancels the handler's task instead."""
    if isinstance(context, grpc.ServicerContext) and not context.is_active():
        raise Cancelled("Cancelled")


def grpc_status(exc: Exception, body: Body, faults: FaultLog) -> tuple[grpc.StatusCode, str]:
    """What a failed call answers: its code (``GRPC_STATUS``) and its message, cut as TF Serving cuts it;
    an unexpected error is logged (rate-limited, ``faults``) and answered without its details."""
    error = faults.answer("gRPC", exc, "Unhandled error in %s", body.__name__)
    return GRPC_STATUS.get(error.code, grpc.StatusCode.UNKNOWN), status_details(error.message)


def deadline_of(context: Context) -> float | None:
    """The call's deadline on the ``time.monotonic()`` clock (None: none, or one too far to matter)."""
    remaining: float | None = context.time_remaining()
    if remaining is None or not math.isfinite(remaining) or remaining > 1e8:
        return None
    return time.monotonic() + remaining


def request_options_of(context: Context) -> RequestOptions:
    """How the call is queued, from its ``x-modelserve-*`` metadata (``execution.request_options``)."""
    return request_options.from_headers(context.invocation_metadata())


@dataclass(frozen=True)
class Answer:
    """A PredictResponse whose big tensors are still arrays: ``serialize`` writes them from their
    own buffers (``codecs.tensor_wire``), one copy for the whole answer."""

    message: Message  # model_spec and the outputs protobuf encodes itself
    parts: tuple[bytes | memoryview, ...]

    def serialize(self) -> bytes:
        return b"".join((self.message.SerializeToString(), *self.parts))


def serialize(answer: Answer | Message) -> bytes:
    """The response serializer of every RPC: an ``Answer`` writes its parts, a message serializes itself."""
    if isinstance(answer, Answer):
        return answer.serialize()
    data: bytes = answer.SerializeToString()
    return data


def add_handlers(server: grpc.Server | grpc.aio.Server, service: str, handlers: Mapping[str, Any]) -> None:
    """Register ``handlers`` (method name -> RPC method handler) as ``service`` (its full name) on ``server``."""
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    register = getattr(server, "add_registered_method_handlers", None)
    if register is not None:  # grpcio >= 1.62: no generic lookup per call
        register(service, handlers)
