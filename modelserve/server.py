"""Wires the server: options → models → front ends, and the lifecycle around them.

start-up → serve → drain → shut down. Models load before any port opens (as
TF Serving), but a bad base path fails start-up at once with TF Serving's
message instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import budget, platforms, processes, storage
from .api.grpc_server import GrpcServer
from .api.http import Handler, Router
from .api.httpd import HttpServer
from .api.metrics import tf_metrics_path
from .errors import InvalidArgument, ServingError, Unavailable
from .execution.batching import NO_METRICS, BatchingRunners, BatchMetrics
from .execution.instances import PlacedLoader
from .execution.runner import DirectRunner, Runner, RunnerFactory
from .execution.workers import WorkerPool
from .frontends import FrontEnds, Listening, Pages, request_observers
from .lifecycle.config import ModelConfig, read_model_config_file
from .lifecycle.events import NO_EVENTS
from .lifecycle.manager import ManagerOptions, ModelManager, no_warmup
from .lifecycle.reload import ConfigFileWatcher
from .observe import logs
from .observe.metrics import Metrics
from .observe.requests import Watch
from .observe.trace import Observer, Observers
from .options import FLAGS, ServerOptions
from .platforms import cpus, devices
from .platforms.servable import Servable
from .serving.core import ServingCore
from .serving.engine import Engine
from .serving.warmup import ReplayWarmup

log = logging.getLogger("modelserve")

DRAIN_PUBLISH_SECONDS = 10.0  # how long a drain waits for every front-end process to report not ready


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
        cache_dir=options.model_cache_dir or None,
        cache_bytes=options.model_cache_bytes,
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
        self._batching: BatchingRunners | None = None
        self._runners: RunnerFactory = self._direct_runner  # chosen once, in start()
        self._closers: list[Callable[[], None]] = []
        # The listeners around the core (one piece of code with the front-end processes: ``frontends``);
        # what they show is known once start() has read the flags' files.
        self.pages = Pages(self.metrics)
        self.frontends = FrontEnds(
            options,
            self.core,
            self.budget,
            self.pages,
            Listening(grpc_on_loop=options.enable_batching, watch=self.watch),
        )
        # With two front-end processes or more (chosen in start()), this process is their engine and
        # ``frontends`` never listens.
        self.engine: Engine | None = None
        self.processes: processes.FrontEndProcesses | None = None

    @property
    def rest_port(self) -> int | None:
        return self.frontends.rest_port if self.processes is None else self.processes.ports.rest

    @property
    def grpc_port(self) -> int | None:
        return self.frontends.grpc_port if self.processes is None else self.processes.ports.grpc

    @property
    def metrics_port(self) -> int | None:
        return self.frontends.metrics_port if self.processes is None else self.processes.ports.metrics

    @property
    def http(self) -> HttpServer | None:
        """The REST listener, once started."""
        return self.frontends.http

    @property
    def _grpc(self) -> GrpcServer | None:
        return self.frontends.grpc

    @property
    def rest_tls(self) -> bool:
        """REST serves HTTPS (known once started)."""
        return self.frontends.rest_tls is not None

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
        """Load the models, then open the ports: here, or in the front-end processes (``processes``)."""
        count, why = processes.count(self.options.frontend_processes, cpus.budget())
        if count > 1:
            check_options(self.options)  # before the children read the same flags
            # Started before the models load, so their imports overlap the loading; they open their
            # ports only once the engine below is attached to them.
            self.processes = processes.FrontEndProcesses(self.options, count)
            self.processes.spawn()
        await self.start_core()
        log.info("Front ends: %d process%s (%s)", count, "" if count == 1 else "es", why)
        if self.processes is None:
            await self.frontends.start()
            return
        self.engine = Engine(
            self.core,
            processes.share_of(self.budget, count).total,  # each front end's outputs: as much as its inputs
            self.frontends.figures,  # this process's: batches, loads, batch queues, the budget
            self.pages.batching,
            self._reload_config_file,
        )
        await self.processes.start(self.engine)

    async def start_core(self) -> None:
        """Everything but the listeners: flags checked, security and readers configured, models loaded
        and polled (also how a modelserve.ray replica starts, whose requests come through Ray's proxy)."""
        check_options(self.options)
        warn_ignored_flags(self.options)
        log_thread_choices(self.options)
        log_memory_budget(self.options, self.budget, self._memory)
        self.pages.tf_metrics_path = tf_metrics_path(self.options.monitoring_config_file)  # a bad file fails here
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
        self.pages.depths = self._batching.scheduler.depths if self._batching is not None else (lambda: ())
        self.pages.batching = None if self._batching is None else self._batching.params
        self.pages.reload = self._reload_config_file

    def guarded(self, router: Router) -> Handler:
        """``router`` behind this server's tokens and management switch (``FrontEnds.guarded``)."""
        return self.frontends.guarded(router)

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
        self.frontends.configure_security()

    def _configure_observers(self) -> None:
        """--access_log and --enable_tracing join the metrics recorder as readers of finished requests;
        before any listener opens, so every request meets the same readers."""
        readers, closers = request_observers(self.options, [*self.observers])
        self._closers += closers
        self.observers = self.watch.observers = Observers(readers)

    async def drain(self) -> None:
        """Start a drain: readiness is false at once on every probe (REST, V2, gRPC health) of every
        front-end process; requests are still served until ``stop``."""
        await self.frontends.drain()
        if self.engine is not None:
            await self.engine.publish(DRAIN_PUBLISH_SECONDS, "the drain")

    async def _reload_config_file(self) -> None:
        """The dashboard's reload button: read --model_config_file again and apply it, as its poller does."""
        models = await asyncio.to_thread(model_list, self.options)
        await self.core.reload_config(models)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (both front ends at once, or every front-end
        process, whose requests the engine serves meanwhile), unload every model."""
        self.core.drain()  # not ready from here on, if a drain did not already say so
        if self._watcher is not None:
            self._watcher.close()
        if self.processes is not None:
            await self.processes.stop(self.options.drain_grace_seconds)
        if self.engine is not None:
            self.engine.close()
        await asyncio.gather(*self.frontends.stopping(self.options.drain_grace_seconds))
        await asyncio.to_thread(self.manager.close)
        if self._batching is not None:
            await asyncio.to_thread(self._batching.close)
        self._pool.close()
        for close in self._closers:  # last: the answers written while draining are logged and traced
            close()
        self._closers = []


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
    failed = server.processes.failed if server.processes is not None else asyncio.Event()
    waits = [loop.create_task(event.wait()) for event in (stop, failed)]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    if failed.is_set():
        log.error("Shutting down: no front-end process serves any more")
        await server.stop()
        raise Unavailable("every front-end process exited again and again (see above)")
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
