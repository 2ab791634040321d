"""gRPC glue built from service descriptors, in place of generated ``_pb2_grpc`` modules.

Server side: ``add_servicer(server, pb.PredictionService, servicer)`` registers
the servicer's methods that are named like the service's RPCs (``Predict``,
``GetModelMetadata`` ...) with the signature gRPC expects of them:
``(request, context) -> response`` for unary calls, request iterators and
response iterators for streams. Works with ``grpc.server`` (plain functions)
and ``grpc.aio.server`` (coroutine functions and async generators). An RPC the
servicer lacks is not registered, so clients get UNIMPLEMENTED for it.

Client side: ``Stub(channel, pb.PredictionService).Predict(request, timeout=5)``
on a ``grpc.Channel``, or ``await ...`` on a ``grpc.aio.Channel``; the
attributes are the channel's multi-callables for each RPC.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from ._pool import service_descriptor

_SERVER_HANDLERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}
_CLIENT_FACTORIES = {
    (False, False): "unary_unary",
    (False, True): "unary_stream",
    (True, False): "stream_unary",
    (True, True): "stream_stream",
}


def _service(service: ServiceDescriptor | str) -> ServiceDescriptor:
    return service_descriptor(service) if isinstance(service, str) else service


def _kind(method: MethodDescriptor) -> tuple[bool, bool]:
    return bool(method.client_streaming), bool(method.server_streaming)


def method_path(method: MethodDescriptor) -> str:
    """The HTTP/2 path of an RPC, e.g. ``/tensorflow.serving.PredictionService/Predict``."""
    return f"/{method.containing_service.full_name}/{method.name}"


def method_handlers(service: ServiceDescriptor | str, servicer: object) -> dict[str, grpc.RpcMethodHandler]:
    """RPC name -> handler for every RPC of ``service`` that ``servicer`` implements."""
    handlers = {}
    for method in _service(service).methods:
        behaviour = getattr(servicer, method.name, None)
        if not callable(behaviour):
            continue
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = _SERVER_HANDLERS[_kind(method)](
            behaviour,
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
    return handlers


def generic_handler(service: ServiceDescriptor | str, servicer: object) -> grpc.GenericRpcHandler:
    """A ``grpc.GenericRpcHandler`` serving ``servicer``'s implementation of ``service``."""
    return grpc.method_handlers_generic_handler(_service(service).full_name, method_handlers(service, servicer))


def add_servicer(server: grpc.Server | grpc.aio.Server, service: ServiceDescriptor | str, servicer: object) -> None:
    """Register ``servicer`` for ``service`` on a sync or aio server, as generated code does.

    Raises TypeError if the servicer implements none of the service's RPCs
    (almost always a misspelt method or the wrong service).
    """
    service = _service(service)
    handlers = method_handlers(service, servicer)
    if not handlers:
        raise TypeError(f"{type(servicer).__name__} implements no RPC of {service.full_name}")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    # Registered methods skip the generic lookup per call (grpcio >= 1.62).
    register = getattr(server, "add_registered_method_handlers", None)
    if register is not None:
        register(service.full_name, handlers)


def _multi_callable(channel: grpc.Channel | grpc.aio.Channel, method: MethodDescriptor) -> Callable[..., Any]:
    request = message_factory.GetMessageClass(method.input_type)
    response = message_factory.GetMessageClass(method.output_type)
    factory = getattr(channel, _CLIENT_FACTORIES[_kind(method)])
    multi_callable: Callable[..., Any] = factory(
        method_path(method),
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
        _registered_method=True,
    )
    return multi_callable


class Stub:
    """Client callables of one service on a ``grpc.Channel`` or ``grpc.aio.Channel``.

    Each RPC is an attribute holding the channel's multi-callable, so the usual
    keyword arguments apply: ``stub.Predict(request, timeout=10, metadata=...)``,
    ``stub.Predict.future(...)`` on sync channels, ``await stub.Predict(...)``
    on aio channels.
    """

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel, service: ServiceDescriptor | str) -> None:
        self.service = _service(service)
        for method in self.service.methods:
            setattr(self, method.name, _multi_callable(channel, method))

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not RPCs; typed Any so that mypy
        # accepts stub.Predict(...) for the dynamically set attributes.
        if name == "service":  # not set yet: a half-built instance
            raise AttributeError(name)
        rpcs = ", ".join(m.name for m in self.service.methods)
        raise AttributeError(f"{self.service.full_name} has no RPC {name!r} (it has: {rpcs})")
