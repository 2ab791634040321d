"""The gRPC listener(s) of a modelserve process, and TF Serving's gRPC flags.

Binds ``--port`` and ``--grpc_socket_path``, applies ``--grpc_channel_arguments`` over TF
Serving's message-size defaults, TLS from ``--ssl_config_file``, the standard health service
(``--enable_grpc_healthcheck_service``, on by default: per-model service names, NOT_SERVING from the start
of a drain) and server reflection. The services themselves are
``api.tfs_grpc``'s (TF Serving) and ``api.v2_grpc``'s (KServe V2).

Two server models, chosen at start-up, both driving the same RPC coroutines
(``api.tfs_grpc``). Without batching, grpcio's threaded server
(``--grpc_max_threads`` threads): a handler thread runs its call inline
(``run_inline``), the model on that thread, with no hand-off to the worker
pool and back (on one pinned core ``grpc.aio`` cost 1.24x its CPU per
request; docs/grpc.md). With ``--enable_batching``, ``grpc.aio`` on the
process's event loop, which the REST listener shares: a call waiting in a
batch queue holds no thread, and a batch's answers go out from the loop
without waking a thread per call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from concurrent import futures
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool

from ..errors import InvalidArgument, Unknown
from ..observe.requests import Watch
from ..protos import INFERENCE_SERVICE, MODEL_SERVICE, PREDICTION_SERVICE, pb
from ..protos._pool import DESCRIPTOR_SET
from ..protos.text import read_text_proto
from ..serving.contract import Core
from .auth import AsyncGrpcGuard, GrpcGuard, Guard
from .health import model_states
from .tfs_grpc import add_services
from .v2_grpc import add_service as add_v2_service

log = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1
# TF Serving's ServerBuilder::SetMaxMessageSize(INT32_MAX): a 1 GiB request fits.
DEFAULT_MAX_MESSAGE_BYTES = INT32_MAX
HEALTH_SERVICE = "grpc.health.v1.Health"
# Names the health service reports SERVING until a drain: TF Serving's three, plus the full names gRPC
# tooling asks for. "" (the server) follows readiness instead, and each model's name its own state.
HEALTH_SERVICES = ("ModelService", "PredictionService", PREDICTION_SERVICE, MODEL_SERVICE, INFERENCE_SERVICE)
# How often the health service re-reads the models' states: a probe sees a change at most this late.
HEALTH_REFRESH_SECONDS = 1.0


@dataclass(frozen=True)
class GrpcOptions:
    """What the gRPC front end takes from the flags."""

    host: str = "0.0.0.0"
    port: int = 8500  # 0: no TCP listener; -1: any free port
    socket_path: str = ""
    channel_arguments: str = ""
    max_threads: int = 8  # the threaded server's handler threads
    health: bool = True
    tensor_content: bool = False
    ssl_config_file: str = ""
    asyncio: bool = False  # grpc.aio on the event loop instead of the threaded server
    guard: Guard | None = None  # tokens and the management switch (api.auth); None: every call runs
    watch: Watch = field(default_factory=Watch)  # opens and closes every call's trace (observe.requests)
    # The largest request message, also after grpc-core inflates a compressed one (it stops at this
    # size): the server passes its per-request memory budget, so a 1 KB gzip bomb cannot grow to 2 GiB.
    max_receive_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    announce: bool = True  # log "Running gRPC ModelServer at ..." (a front-end process leaves it to its parent)
    reuse_port: bool = False  # SO_REUSEPORT: the front-end processes of --frontend_processes share the port


def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """``--grpc_channel_arguments``: comma-separated key=value; int32-parsable values become ints (as TF)."""
    parsed: list[tuple[str, int | str]] = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgument(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        parsed.append((key.strip(), _int32_or_text(value)))
    return parsed


def _int32_or_text(value: str) -> int | str:
    try:
        number = int(value.strip())
    except ValueError:
        return value
    return number if -(2**31) <= number <= INT32_MAX and "_" not in value else value


def server_channel_options(
    channel_arguments: str, max_receive_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, reuse_port: bool = False
) -> list[tuple[str, int | str]]:
    """Defaults (TF's INT32_MAX message size, or less to receive, SO_REUSEPORT only when ``reuse_port``),
    then the user's arguments on top."""
    options: dict[str, int | str] = {
        "grpc.max_receive_message_length": min(max_receive_bytes, DEFAULT_MAX_MESSAGE_BYTES),
        "grpc.max_send_message_length": DEFAULT_MAX_MESSAGE_BYTES,
        # Off unless the front-end processes share the port: else a second server could bind it silently.
        "grpc.so_reuseport": int(reuse_port),
    }
    options.update(parse_channel_arguments(channel_arguments))
    return list(options.items())


def server_credentials(ssl_config_file: str) -> grpc.ServerCredentials | None:
    """``--ssl_config_file`` (an SSLConfig holding PEM text): TLS, and mTLS with ``client_verify``."""
    if not ssl_config_file:
        return None
    config = read_text_proto(ssl_config_file, pb.SSLConfig())
    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() or None,
        require_client_auth=config.client_verify,
    )


class GrpcServer:
    """The gRPC listener(s) of one modelserve process. The constructor does no I/O; ``start`` and
    ``stop`` are awaited on the event loop (which the ``grpc.aio`` model serves on)."""

    def __init__(self, core: Core, options: GrpcOptions) -> None:
        self._core = core
        self._options = options
        self._server: grpc.Server | grpc.aio.Server | None = None
        self._health: Any = None
        self._health_states: dict[str, bool] = {}  # what the health service reports now, by name
        self._refresh: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self) -> None:
        """Bind, register the services and start serving; Unknown if a listener cannot bind."""
        options = self._options
        channel_options = server_channel_options(
            options.channel_arguments, options.max_receive_bytes, options.reuse_port
        )
        server: grpc.Server | grpc.aio.Server
        guard = options.guard
        if options.asyncio:
            server = grpc.aio.server(options=channel_options, interceptors=[AsyncGrpcGuard(guard)] if guard else None)
        else:
            threads = futures.ThreadPoolExecutor(max(1, options.max_threads), thread_name_prefix="modelserve-grpc")
            server = grpc.server(threads, options=channel_options, interceptors=[GrpcGuard(guard)] if guard else None)
        names = add_services(server, self._core, tensor_content=options.tensor_content, watch=options.watch)
        names.append(add_v2_service(server, self._core, options.watch))  # KServe V2 on the same port (api.v2_grpc)
        if options.health:
            names.append(await self._add_health(server))
        _add_reflection(server, names)
        credentials = server_credentials(options.ssl_config_file)
        if options.port != 0:
            self.port = _listen(server, f"{options.host}:{max(options.port, 0)}", credentials)
        if options.socket_path:
            _listen(server, f"unix:{options.socket_path}", credentials)
        if isinstance(server, grpc.aio.Server):
            await server.start()
        else:
            await asyncio.to_thread(server.start)
        self._server = server
        if self.port is not None and options.announce:
            log.info("Running gRPC ModelServer at %s:%d ...", options.host, self.port)
        if options.socket_path and options.announce:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", options.socket_path)

    async def _add_health(self, server: grpc.Server | grpc.aio.Server) -> str:
        from grpc_health.v1 import health, health_pb2_grpc

        asynchronous = isinstance(server, grpc.aio.Server)
        servicer = health.aio.HealthServicer() if asynchronous else health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        self._health = servicer
        await self._set_health(dict.fromkeys(HEALTH_SERVICES, True))
        await self._refresh_health()
        self._refresh = asyncio.create_task(self._keep_health(), name="modelserve-grpc-health")
        return HEALTH_SERVICE

    async def _keep_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_REFRESH_SECONDS)
            try:
                await self._refresh_health()
            except Exception:  # a probe's view must outlive a bug in one round
                log.exception("Refreshing the gRPC health states failed")

    async def _refresh_health(self) -> None:
        """ "" SERVING iff the core is ready; each model's name SERVING iff it has an AVAILABLE version."""
        states = model_states(self._core)
        states[""] = self._core.ready()
        await self._set_health(states)

    async def _set_health(self, states: dict[str, bool]) -> None:
        """Tell the servicer the states that changed (a model no longer configured: NOT_SERVING)."""
        from grpc_health.v1 import health_pb2

        gone = {name: False for name in self._health_states if name not in states and name not in HEALTH_SERVICES}
        for name, serving in {**gone, **states}.items():
            if self._health_states.get(name) == serving:
                continue
            self._health_states[name] = serving
            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            done = self._health.set(name, status)
            if asyncio.iscoroutine(done):
                await done  # the grpc.aio servicer's set is a coroutine

    async def drain(self) -> None:
        """A drain starts: every name the health service knows turns NOT_SERVING at once (calls still run)."""
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        if self._health is not None:
            await self._set_health(dict.fromkeys(self._health_states, False))

    async def stop(self, grace: float) -> None:
        """Refuse new RPCs, let running ones finish for up to ``grace`` seconds."""
        await self.drain()
        if self._health is not None:
            done = self._health.enter_graceful_shutdown()
            if asyncio.iscoroutine(done):  # the grpc.aio servicer's (also when its server never started)
                await done
        server = self._server
        if isinstance(server, grpc.aio.Server):
            await server.stop(grace)
            return
        if server is not None:  # its stop returns at once; the event is set once the calls are done
            await asyncio.to_thread(lambda: server.stop(grace).wait())


def _add_reflection(server: grpc.Server | grpc.aio.Server, names: Iterable[str]) -> None:
    """Server reflection, so ``grpcurl list`` / ``describe`` and calls by name work."""
    try:
        from grpc_reflection.v1alpha import reflection, reflection_pb2
    except Exception as exc:  # e.g. a protobuf too old for its generated code: serve without it
        log.warning("gRPC server reflection is off: %s", exc)
        return
    extra = [reflection_pb2.DESCRIPTOR.serialized_pb]
    if HEALTH_SERVICE in names:
        from grpc_health.v1 import health_pb2

        extra.append(health_pb2.DESCRIPTOR.serialized_pb)
    pool = reflection_pool(extra)
    reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), server, pool=pool)


def reflection_pool(extra_files: Iterable[bytes]) -> descriptor_pool.DescriptorPool:
    """modelserve's protos plus the health and reflection services' own files, in a pool of its own.

    ``POOL`` stays as it is (never changed after import); the health and reflection files
    live in protobuf's default pool, where reflection over ``POOL`` alone cannot see them.
    """
    pool = descriptor_pool.DescriptorPool()
    data = resources.files("modelserve.protos").joinpath(DESCRIPTOR_SET).read_bytes()
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.Add(file)
    for serialized in extra_files:
        pool.AddSerializedFile(serialized)
    return pool


def _listen(server: grpc.Server | grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise Unknown(f"Failed to BuildAndStart gRPC server: cannot listen on {address}: {exc}") from None
    if address.startswith("unix:"):
        return 0
    if not port:
        raise Unknown(f"Failed to BuildAndStart gRPC server: cannot listen on {address}")
    return int(port)
