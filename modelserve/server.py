"""Wires the server: options → models → front ends, and the lifecycle around them.

start-up → serve → drain → shut down. Models load before any port opens (as
TF Serving), but a bad base path fails start-up at once with TF Serving's
message instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import resource
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import __version__, budget, platforms, storage
from .api import auth, dashboard, openapi, tls
from .api.grpc_server import GrpcOptions, GrpcServer
from .api.health import HEALTH_PATHS, HealthApp
from .api.http import Handler, Router
from .api.httpd import HttpOptions, HttpServer
from .api.metrics import metrics_page, tf_metrics_page, tf_metrics_path
from .api.tfs_rest import RestOptions, TfsRestApp
from .api.v2_rest import V2RestApp
from .errors import InvalidArgument, NotFound, ServingError, Unavailable
from .execution.batching import NO_METRICS, BatchingRunners, BatchMetrics
from .execution.instances import PlacedLoader
from .execution.runner import DirectRunner, Runner, RunnerFactory
from .execution.workers import WorkerPool
from .lifecycle.config import ModelConfig, read_model_config_file
from .lifecycle.events import NO_EVENTS
from .lifecycle.manager import ManagerOptions, ModelManager, no_warmup
from .lifecycle.reload import ConfigFileWatcher
from .observe import logs
from .observe.metrics import Metrics
from .observe.prometheus import ModelserveCollector, Sources, registry
from .observe.requests import Watch
from .observe.trace import Front, Observer, Observers
from .options import FLAGS, ServerOptions
from .platforms import cpus, devices
from .platforms.servable import Servable
from .serving.core import ServingCore
from .serving.warmup import ReplayWarmup

log = logging.getLogger("modelserve")


def check_options(options: ServerOptions) -> None:
    """TF Serving's start-up validation, with its messages."""
    if options.port == 0 and not options.grpc_socket_path:
        raise InvalidArgument(
            "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set."
        )
    if options.use_alts_credentials and options.ssl_config_file:
        raise InvalidArgument("Either use_alts_credentials must be false or ssl_config_file must be empty.")
    if not options.model_base_path and not options.model_config_file:
        raise InvalidArgument("Both server_options.model_base_path and server_options.model_config_file are empty!")
    if options.batching_parameters_file and not options.enable_batching:
        raise InvalidArgument(
            "server_options.batching_parameters_file is set without setting server_options.enable_batching to true."
        )
    parallel = (
        options.tensorflow_session_parallelism,
        options.tensorflow_intra_op_parallelism,
        options.tensorflow_inter_op_parallelism,
    )
    if all(p > 0 for p in parallel):
        raise InvalidArgument(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, server_options.tensorflow_inter_op_parallelism) "
            "separately. You cannot configure all."
        )


def warn_ignored_flags(options: ServerOptions) -> None:
    for flag in FLAGS:
        if not flag.effect and flag.name in options.explicit:
            log.warning("--%s is accepted for compatibility with TF Serving and has no effect yet", flag.name)


def log_thread_choices(options: ServerOptions) -> None:
    """Every thread default follows the CPUs this process may really use (docs/platforms.md); say which."""
    budget = cpus.budget()
    intra = options.tensorflow_intra_op_parallelism or options.tensorflow_session_parallelism
    grpc = (
        "gRPC on the event loop, batch threads per --batching_parameters_file"
        if options.enable_batching
        else f"{options.grpc_max_threads} gRPC"
    )
    log.info(
        "%s; threads: %s intra-op per model, %d inference, %s",
        budget.describe(),
        intra or f"{platforms.threads(0)} (default)",
        options.num_inference_threads,
        grpc,
    )


def memory_budget(options: ServerOptions, memory: budget.Memory) -> budget.MemoryBudget:
    """--memory_budget_bytes and --request_memory_budget_bytes, each 0 derived from ``memory``, what the
    process may use (``budget.available_memory``)."""
    total = options.memory_budget_bytes or budget.default_total(memory)
    return budget.MemoryBudget(total, options.request_memory_budget_bytes or budget.default_per_request(total))


def log_memory_budget(options: ServerOptions, chosen: budget.MemoryBudget, memory: budget.Memory) -> None:
    """Say what requests may hold, and where a derived default came from (docs/security.md)."""
    log.info(
        "Memory budget: %d bytes for requests in flight%s, %d per request%s; gRPC messages up to %d bytes "
        "(also once inflated)",
        chosen.total,
        "" if options.memory_budget_bytes else f" (half of {memory.limit} bytes, {memory.source})",
        chosen.per_request,
        "" if options.request_memory_budget_bytes else " (a quarter of that, at most 2 GiB)",
        min(chosen.per_request, 2**31 - 1),
    )


def rest_connection_cap(options: ServerOptions) -> int:
    """--rest_api_max_connections, or (0) the file descriptor limit less a reserve; the choice is logged.

    The reserve (a quarter of the limit, at least 64) keeps descriptors for what must go on working when
    REST is at its cap: gRPC connections, the version poller, model files, logs. With no limit known
    (unlimited) the cap is off."""
    if options.rest_api_max_connections > 0:
        log.info("REST connections: at most %d (--rest_api_max_connections)", options.rest_api_max_connections)
        return options.rest_api_max_connections
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        log.info("REST connections: no cap (no file descriptor limit)")
        return 0
    reserve = max(64, soft // 4)
    cap = max(soft - reserve, 1)
    log.info(
        "REST connections: at most %d (file descriptor limit %d less %d kept for gRPC, polling, models and logs)",
        cap,
        soft,
        reserve,
    )
    return cap


def http_options(
    options: ServerOptions, rest: TfsRestApp, memory: budget.MemoryBudget, tls: ssl.SSLContext | None, watch: Watch
) -> HttpOptions:
    """The REST listener's limits, from the --rest_api_* flags."""
    return HttpOptions(
        max_body_bytes=options.rest_api_max_body_bytes,
        too_large=rest.too_large,
        refused=rest.error_answer,
        budget=memory,
        keep_alive_seconds=options.rest_api_keep_alive_seconds,
        max_url_bytes=options.rest_api_max_url_bytes,
        max_header_bytes=options.rest_api_max_header_bytes,
        max_headers=options.rest_api_max_headers,
        header_timeout_seconds=options.rest_api_header_timeout_seconds,
        body_timeout_seconds=options.rest_api_body_timeout_seconds,
        max_connections=rest_connection_cap(options),
        tls=tls,
        watch=watch,
    )


def rest_options(options: ServerOptions) -> RestOptions:
    """The REST front ends' timeout and body limits, from the --rest_api_* flags."""
    return RestOptions(
        timeout_ms=options.rest_api_timeout_in_ms,
        enable_cors=options.rest_api_enable_cors_support or options.rest_api_enable_cors_headers,
        max_body_bytes=options.rest_api_max_body_bytes,
        max_gzip_ratio=options.rest_api_max_gzip_ratio,
    )


def api_routes(core: ServingCore, rest: TfsRestApp) -> list[tuple[str, Handler]]:
    """TF Serving REST under /v1/ and V2 REST under /v2/, with the same limits (also modelserve.ray's routes)."""
    return [("/v1/", rest), ("/v2/", V2RestApp(core, rest.options))]


def model_list(options: ServerOptions) -> list[ModelConfig]:
    if options.model_config_file:
        return read_model_config_file(options.model_config_file)
    base = options.model_base_path
    # A URI (s3://, file://, ...) is kept as given, as in models.config; only a plain path is made absolute.
    return [ModelConfig(name=options.model_name, base_path=base if "://" in base else str(Path(base).absolute()))]


def load_options(options: ServerOptions) -> platforms.LoadOptions:
    session = options.tensorflow_session_parallelism
    return platforms.LoadOptions(
        intra_op_threads=options.tensorflow_intra_op_parallelism or session,
        inter_op_threads=options.tensorflow_inter_op_parallelism or session,
        saved_model_tags=tuple(t for t in options.saved_model_tags.split(",") if t),
        gpu_memory_fraction=options.per_process_gpu_memory_fraction,
        prefer_tflite_model=options.prefer_tflite_model or options.use_tflite_model,
        tflite_interpreters=options.num_tflite_pools,
    )


def manager_options(options: ServerOptions) -> ManagerOptions:
    return ManagerOptions(
        file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
        max_num_load_retries=options.max_num_load_retries,
        load_retry_interval_seconds=options.load_retry_interval_micros / 1e6,
        num_load_threads=options.num_load_threads or 4 * (options.num_inference_threads or 1),
        num_unload_threads=options.num_unload_threads or 1,
        allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
        expose_paths_in_errors=options.expose_paths_in_errors,
    )


# ---- monitoring: who reads finished requests, and the metrics pages -------------------------------


def observers(options: ServerOptions, metrics: Metrics | None) -> list[Observer]:
    """The readers of finished requests known before start-up (``observe.trace.Observers``): the
    metrics recorder when a metrics page is on. ``Server._configure_observers`` adds the access log
    and tracing, whose files and exporters open in ``start``."""
    readers: list[Observer] = []
    if metrics is not None:
        readers.append(metrics)
    return readers


def _grpc_protocol(method: str) -> Front:
    return "v2_grpc" if method.startswith("/inference.") else "tfs_grpc"


class Server:
    """One modelserve process: the models and the front ends around them.

    The constructor does no I/O; ``start`` loads the models and binds the ports.
    """

    def __init__(self, options: ServerOptions, batch_metrics: BatchMetrics = NO_METRICS) -> None:
        self.options = options
        # One recording feeds both metrics pages; none when neither is on (the TF page's config is
        # read in start(), so a given --monitoring_config_file records even if it turns out off).
        recording = options.enable_metrics or bool(options.monitoring_config_file)
        self.metrics: Metrics | None = Metrics() if recording else None
        self._batch_metrics = self.metrics if batch_metrics is NO_METRICS and self.metrics else batch_metrics
        self.observers = Observers(observers(options, self.metrics))
        self.watch = Watch(self.observers)  # every front end opens and closes its requests' traces here
        self._tf_metrics_path: str | None = None  # --monitoring_config_file's, read in start()
        self._metrics_http: HttpServer | None = None  # --metrics_port's own listener
        self.metrics_port: int | None = None
        self._pool = WorkerPool(options.num_inference_threads, "modelserve-infer")
        self._placed = PlacedLoader(load_options(options))  # devices are found in start()
        self.manager = ModelManager(
            manager_options(options),
            loader=self._placed,
            runner_factory=self._runner,
            warmup=ReplayWarmup(options.num_request_iterations_for_warmup)
            if options.enable_model_warmup
            else no_warmup,
            events=self.metrics or NO_EVENTS,
        )
        self._memory = budget.available_memory()
        self.budget = memory_budget(options, self._memory)
        self.core = ServingCore(self.manager, self.budget)
        self._watcher: ConfigFileWatcher | None = None
        self.rest_port: int | None = None
        self.grpc_port: int | None = None
        self.http: HttpServer | None = None  # the REST listener, once started
        self._grpc: GrpcServer | None = None
        self._batching: BatchingRunners | None = None
        self._runners: RunnerFactory = self._direct_runner  # chosen once, in start()
        self._guard: auth.Guard | None = None  # tokens and the management switch, from the flags in start()
        self._rest_tls: ssl.SSLContext | None = None
        self._closers: list[Callable[[], None]] = []

    @property
    def rest_tls(self) -> bool:
        """REST serves HTTPS (known once started)."""
        return self._rest_tls is not None

    def _runner(self, model: str, version: int, folder: Path, servable: Servable) -> Runner:
        return self._runners(model, version, folder, servable)

    def _direct_runner(self, model: str, version: int, folder: Path, servable: Servable) -> Runner:
        return DirectRunner(servable, self._pool)

    def _choose_runners(self) -> None:
        """--enable_batching: batch every version (or those with their own parameters); reads the file."""
        if self.options.enable_batching:
            self._batching = BatchingRunners.from_flags(
                self.options.batching_parameters_file,
                self.options.enable_per_model_batching_parameters,
                self._direct_runner,
                self._batch_metrics,
                self.budget,
            )
            self._runners = self._batching
            if self.metrics is not None:
                self.metrics.thread_pool_name = self._batching.params.thread_pool_name

    async def start(self) -> None:
        await self.start_core()
        await self._start_grpc()
        await self._start_rest()

    async def start_core(self) -> None:
        """Everything but the listeners: checks, security, observers, devices, runners, the models and
        their pollers (``modelserve.ray`` runs this alone in each Ray Serve replica)."""
        check_options(self.options)
        warn_ignored_flags(self.options)
        log_thread_choices(self.options)
        log_memory_budget(self.options, self.budget, self._memory)
        self._tf_metrics_path = tf_metrics_path(self.options.monitoring_config_file)  # a bad file fails here
        self._configure_security()
        self._configure_observers()
        self._placed.inventory = devices.prepare(os.environ)
        self._choose_runners()
        models = model_list(self.options)
        await asyncio.to_thread(self.manager.reload, models)  # ports open only once models serve
        self.manager.start_polling()
        if self.options.model_config_file:
            self._watcher = ConfigFileWatcher(
                self.options.model_config_file,
                self.options.model_config_file_poll_wait_seconds,
                self.core.reload_and_wait,
            )
            self._watcher.start()

    def _configure_security(self) -> None:
        """Storage allow-list and timeouts, tokens, management, REST's TLS: from the flags, each logged
        (docs/security.md). Before any config file is read, since the allow-list covers config files too."""
        o = self.options
        policy = storage.configure(o.storage_protocols.split(","), o.storage_timeout_seconds)
        log.info(
            "Storage: protocols %s; remote calls time out after %s s",
            ",".join(sorted(policy.protocols)),
            policy.timeout_seconds if policy.timeout_seconds > 0 else "(their own defaults)",
        )
        self._guard = auth.build(o.auth_token_file, o.enable_management_api)
        if self._guard is not None:
            self._guard = dataclasses.replace(self._guard, refused=self._grpc_refused)
        if o.auth_token_file:
            log.info("Bearer tokens required on both ports (--auth_token_file %s)", o.auth_token_file)
        if not o.enable_management_api:
            log.info("Model management is switched off (--enable_management_api=false)")
        if o.ssl_config_file and o.rest_api_port != 0:
            config = tls.read_ssl_config(o.ssl_config_file)
            if o.rest_api_tls:
                self._rest_tls = tls.server_context(config)
                log.info("REST API serves HTTPS with %s from --ssl_config_file", tls.describe(config))
            else:
                log.warning("REST API serves plain HTTP although --ssl_config_file is set (--rest_api_tls=false)")
        plain = [name for name, secure in (("gRPC", o.ssl_config_file), ("REST", self._rest_tls)) if not secure]
        if o.auth_token_file and plain and not _loopback(o.host):
            log.warning(
                "Bearer tokens cross the network in clear text: %s on %s without TLS (--ssl_config_file)",
                " and ".join(plain),
                o.host,
            )

    def _configure_observers(self) -> None:
        """--access_log and --enable_tracing join the metrics recorder as readers of finished requests,
        each logged; before any listener opens, so every request meets the same readers."""
        o = self.options
        observers: list[Observer] = [*self.observers]
        if o.access_log:
            access = logs.AccessLog(o.access_log, o.log_format, o.access_log_sample_rate)
            self._closers.append(access.close)
            observers.append(access)
            log.info(
                "Access log: one %s line per request to %s%s",
                o.log_format,
                "stderr" if o.access_log == "-" else o.access_log,
                "" if o.access_log_sample_rate >= 1 else f", {o.access_log_sample_rate:g} of successes (all errors)",
            )
        if o.enable_tracing:
            from .observe.tracing import Tracing

            tracing = Tracing()
            self._closers.append(tracing.close)
            observers.append(tracing)
        self.observers = self.watch.observers = Observers(observers)

    async def drain(self) -> None:
        """Start a drain: readiness is false at once on every probe (REST, V2, gRPC health); requests are
        still served until ``stop``."""
        self.core.drain()
        if self._grpc is not None:
            await self._grpc.drain()

    async def _start_grpc(self) -> None:
        o = self.options
        self._grpc = GrpcServer(
            self.core,
            GrpcOptions(
                host=o.host,
                port=o.port,
                socket_path=o.grpc_socket_path,
                channel_arguments=o.grpc_channel_arguments,
                max_threads=o.grpc_max_threads,
                health=o.enable_grpc_healthcheck_service,
                tensor_content=o.enable_serialization_as_tensor_content,
                ssl_config_file=o.ssl_config_file,
                asyncio=o.enable_batching,  # docs/grpc.md: the server model follows batching
                guard=self._guard,
                max_receive_bytes=self.budget.per_request,
                watch=self.watch,
            ),
        )
        await self._grpc.start()
        self.grpc_port = self._grpc.port

    async def _start_rest(self) -> None:
        port = self.options.rest_api_port
        if port == 0:
            return
        if port == self.options.port and port > 0:
            log.warning(
                "server_options.http_port cannot be same as grpc_port. Please use a different port for "
                "HTTP/REST API. Skipped exporting HTTP/REST API."
            )
            return
        try:
            sock = _bind(self.options.host, max(port, 0))
        except OSError as exc:
            # TF Serving logs this and serves gRPC alone; failing is kinder: otherwise a REST client
            # reaches whatever else holds the port.
            raise Unavailable(
                f"Failed to start HTTP Server at localhost:{port}: {exc.strerror or exc}; "
                f"another process holds port {port}? Choose a free --rest_api_port (or -1 for any free port)."
            ) from None
        self.rest_port = sock.getsockname()[1]
        rest = TfsRestApp(self.core, rest_options(self.options))
        docs = openapi.OpenApiApp(self._rest_tls is not None)
        health = HealthApp(self.core)
        routes: list[tuple[str, Handler]] = [
            *api_routes(self.core, rest),
            *((path, health) for path in HEALTH_PATHS),
            (openapi.SPEC_PATH, docs),
            (openapi.DOCS_PATH + "/", docs),
        ]
        routes += self._metrics_routes()
        routes += self._dashboard_routes()
        self.http = HttpServer(
            self.guarded(Router(routes)), http_options(self.options, rest, self.budget, self._rest_tls, self.watch)
        )
        await self.http.start(sock)
        log.info("Exporting HTTP/REST API at:localhost:%d ...", self.rest_port)
        await self._start_metrics_port()

    def guarded(self, router: Router) -> Handler:
        """``router`` behind --auth_token_file's tokens and the management switch, when configured."""
        if self._guard is None:
            return router
        open_paths = (*auth.REST_OPEN_PATHS, *((self._tf_metrics_path.lower(),) if self._tf_metrics_path else ()))
        return auth.RestGuard(router, self._guard, open_paths)

    # ---- metrics ------------------------------------------------------------------------------

    def _metrics_routes(self) -> list[tuple[str, Handler]]:
        """The metrics pages on the REST port: modelserve's /metrics (unless on its own port) and TF
        Serving's at its configured path; each choice logged."""
        routes: list[tuple[str, Handler]] = []
        o = self.options
        if o.enable_metrics and o.metrics_port == 0:
            routes.append(("/metrics", metrics_page(self._registry())))
            log.info("modelserve metrics at /metrics on the REST port (--enable_metrics)")
        elif not o.enable_metrics:
            log.info("modelserve metrics are off (--enable_metrics=false)")
        if self._tf_metrics_path and self.metrics is not None:
            snapshot = self.metrics.snapshot
            routes.append(
                (self._tf_metrics_path, tf_metrics_page(self._tf_metrics_path, snapshot, self._batching is not None))
            )
            log.info("TF Serving metrics at %s on the REST port (--monitoring_config_file)", self._tf_metrics_path)
        return routes

    def _registry(self) -> Any:
        """modelserve's metrics registry: the recording, and what a scrape asks the server."""
        assert self.metrics is not None
        return registry(
            ModelserveCollector(
                self.metrics,
                Sources(
                    states=self._version_states,
                    depths=self._batching.scheduler.depths if self._batching is not None else (lambda: ()),
                    budget=lambda: (self.budget.total, self.budget.used),
                    inflight=self.watch.inflight,
                    version=__version__,
                ),
            )
        )

    def _version_states(self) -> list[tuple[str, int, str]]:
        states = []
        for name in self.manager.model_names():
            try:
                rows = self.manager.status(name)
            except NotFound:  # no version seen yet
                continue
            states += [(name, row.version, row.state.name) for row in rows]
        return states

    async def _start_metrics_port(self) -> None:
        """--metrics_port: /metrics on a plain-HTTP listener of its own (no tokens: a scraper's port)."""
        o = self.options
        if not o.enable_metrics or o.metrics_port == 0:
            return
        sock = _bind(o.host, max(o.metrics_port, 0))
        self.metrics_port = sock.getsockname()[1]
        self._metrics_http = HttpServer(Router([("/metrics", metrics_page(self._registry()))]), HttpOptions())
        await self._metrics_http.start(sock)
        log.info("modelserve metrics at /metrics on port %d (--metrics_port)", self.metrics_port)

    def _grpc_refused(self, method: str, exc: ServingError) -> None:
        """A gRPC call the token guard refused: its trace, so refusals are counted as the others."""
        trace = self.watch.open(_grpc_protocol(method), method.rsplit("/", 1)[-1])
        self.watch.close(trace, exc.code, 0, exc.reason)

    def _dashboard_routes(self) -> list[tuple[str, Handler]]:
        """--enable_dashboard: the page at /dashboard, with the configuration it shows."""
        if not self.options.enable_dashboard:
            return []
        o = self.options
        setup = dashboard.DashboardSetup(
            flags=tuple(
                dashboard.FlagSetting(f.name, getattr(o, f.name), f.default, f.group, f.name in o.explicit)
                for f in FLAGS
            ),
            model_config_file=o.model_config_file,
            batching=None if self._batching is None else self._batching.params,
            per_model_batching=o.enable_per_model_batching_parameters,
            guard=self._guard,
            reload=self._reload_config_file if o.model_config_file else None,
            # the page charts /metrics from the port it came from: none there when off or on its own port
            metrics_path="/metrics" if o.enable_metrics and o.metrics_port == 0 else "",
        )
        log.info("Dashboard at /dashboard on the REST port (--enable_dashboard)")
        return [(dashboard.PREFIX + "/", dashboard.DashboardApp(self.core, setup))]

    async def _reload_config_file(self) -> None:
        """The dashboard's reload button: read --model_config_file again and apply it, as its poller does."""
        models = await asyncio.to_thread(model_list, self.options)
        await self.core.reload_config(models)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (both front ends at once), unload every model."""
        self.core.drain()  # not ready from here on, if a drain did not already say so
        if self._watcher is not None:
            self._watcher.close()
        draining: list[Awaitable[None]] = []
        if self._grpc is not None:
            draining.append(self._grpc.stop(self.options.drain_grace_seconds))
        if self.http is not None:
            draining.append(self.http.stop(self.options.drain_grace_seconds))
        if self._metrics_http is not None:
            draining.append(self._metrics_http.stop(0))
        await asyncio.gather(*draining)
        await asyncio.to_thread(self.manager.close)
        if self._batching is not None:
            await asyncio.to_thread(self._batching.close)
        self._pool.close()
        for close in self._closers:  # last: the answers written while draining are logged and traced
            close()
        self._closers = []


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(options: ServerOptions, started: Callable[[Server], None] = lambda server: None) -> None:
    """Run until SIGTERM or SIGINT, then drain and stop; ``started`` is called once the ports are bound."""
    server = Server(options)
    try:
        await server.start()
    except BaseException:
        await server.stop()  # what started (models, gRPC) is let go before the process exits
        raise
    started(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    stop.clear()
    delay = options.drain_delay_seconds
    # Load balancers take a while to see the readiness change and stop sending: serve on meanwhile.
    if delay > 0:
        log.info("Shutting down: not ready from now on; serving on for %g s (--drain_delay_seconds)", delay)
    await server.drain()
    if delay > 0:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)  # a second signal ends the delay early
    log.info("Shutting down: draining in-flight requests")
    await server.stop()


def configure_logging(options: ServerOptions) -> None:
    """--log_level and --log_format for the whole process (TF Serving-like text lines by default)."""
    logs.configure(options.log_level, options.log_format)


def run(options: ServerOptions, started: Callable[[Server], None] = lambda server: None) -> int:
    """The process's life; returns its exit status (255 on a failed start, as TF Serving)."""
    try:
        configure_logging(options)
    except ServingError as exc:
        logs.configure()
        log.error("Failed to start server. Error: %s: %s", exc.code.name, exc)
        return 255
    try:
        _event_loop_runner()(serve(options, started))
    except ServingError as exc:
        log.error("Failed to start server. Error: %s: %s", exc.code.name, exc)
        return 255
    return 0


def _event_loop_runner() -> Any:
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run
