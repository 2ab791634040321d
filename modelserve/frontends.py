"""The listeners of one process around a core: gRPC, REST (with health, API docs, metrics pages and the
dashboard) and ``--metrics_port``; with the flags' tokens, TLS and HTTP limits.

One piece of code for both shapes of the server: the single process (``server.Server``, around a
``ServingCore``) and each front-end process of ``--frontend_processes`` (``frontend``, around a
``serving.remote.RemoteCore``). The constructor does no I/O; ``start`` binds.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import resource
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from . import __version__, budget
from .api import auth, dashboard, openapi, tls
from .api.grpc_server import GrpcOptions, GrpcServer
from .api.health import HEALTH_PATHS, HealthApp
from .api.http import Handler, Router
from .api.httpd import HttpOptions, HttpServer
from .api.metrics import metrics_page, tf_metrics_page
from .api.tfs_rest import RestOptions, TfsRestApp
from .api.v2_rest import V2RestApp
from .errors import NotFound, ServingError, Unavailable
from .execution.batching.params import BatchingParameters
from .observe import logs
from .observe.metrics import Metrics, Scrape, Snapshot
from .observe.prometheus import MetricsPage, Sources
from .observe.requests import Watch
from .observe.trace import Front, Observer
from .options import FLAGS, ServerOptions
from .serving.contract import Core

log = logging.getLogger("modelserve")


async def _alone(own: Scrape) -> Scrape:
    return own


@dataclass
class Pages:
    """What the metrics pages and the dashboard read besides the core: this process's recording (None:
    none), how a scrape gets the whole server's figures from this process's own (``whole``: they are the
    whole server's in the single process; a front-end process asks the engine, ``RemoteCore.scrape``), the
    batch queues' depths (the process that runs them), the TF metrics page's path (None: off), the
    batching parameters (None: off), and how the dashboard reloads the config file."""

    metrics: Metrics | None = None
    whole: Callable[[Scrape], Awaitable[Scrape]] = _alone
    depths: Callable[[], Iterable[tuple[str, int, str, int]]] = lambda: ()
    tf_metrics_path: str | None = None
    batching: BatchingParameters | None = None
    reload: Callable[[], Awaitable[None]] | None = None


@dataclass
class Listening:
    """How this process binds: ``reuse_port`` (front-end processes share the ports, SO_REUSEPORT);
    ``grpc_on_loop``: grpc.aio instead of the threaded server; ``announce``: log the "Exporting" and
    "Running gRPC" lines (a front-end process leaves them to its parent); ``share``: the number of
    processes that share the ports (server-wide limits are split among them)."""

    reuse_port: bool = False
    share: int = 1
    grpc_on_loop: bool = False
    announce: bool = True
    watch: Watch = field(default_factory=Watch)


def request_observers(
    options: ServerOptions, readers: list[Observer]
) -> tuple[list[Observer], list[Callable[[], None]]]:
    """``readers`` of finished requests, with --access_log and --enable_tracing joined (each logged), and
    what closes them. Every process that answers requests has its own (access log lines are whole lines
    appended to one file)."""
    o = options
    closers: list[Callable[[], None]] = []
    readers = list(readers)
    if o.access_log:
        access = logs.AccessLog(o.access_log, o.log_format, o.access_log_sample_rate)
        closers.append(access.close)
        readers.append(access)
        log.info(
            "Access log: one %s line per request to %s%s",
            o.log_format,
            "stderr" if o.access_log == "-" else o.access_log,
            "" if o.access_log_sample_rate >= 1 else f", {o.access_log_sample_rate:g} of successes (all errors)",
        )
    if o.enable_tracing:
        from .observe.tracing import Tracing

        tracing = Tracing()
        closers.append(tracing.close)
        readers.append(tracing)
    return readers, closers


def security(options: ServerOptions) -> tuple[auth.Guard | None, ssl.SSLContext | None]:
    """Tokens, the management switch and REST's TLS from the flags, each logged (docs/security.md)."""
    o = options
    guard = auth.build(o.auth_token_file, o.enable_management_api)
    if o.auth_token_file:
        log.info("Bearer tokens required on both ports (--auth_token_file %s)", o.auth_token_file)
    if not o.enable_management_api:
        log.info("Model management is switched off (--enable_management_api=false)")
    rest_tls = None
    if o.ssl_config_file and o.rest_api_port != 0:
        config = tls.read_ssl_config(o.ssl_config_file)
        if o.rest_api_tls:
            rest_tls = tls.server_context(config)
            log.info("REST API serves HTTPS with %s from --ssl_config_file", tls.describe(config))
        else:
            log.warning("REST API serves plain HTTP although --ssl_config_file is set (--rest_api_tls=false)")
    plain = [name for name, secure in (("gRPC", o.ssl_config_file), ("REST", rest_tls)) if not secure]
    if o.auth_token_file and plain and not _loopback(o.host):
        log.warning(
            "Bearer tokens cross the network in clear text: %s on %s without TLS (--ssl_config_file)",
            " and ".join(plain),
            o.host,
        )
    return guard, rest_tls


def rest_connection_cap(options: ServerOptions, share: int = 1) -> int:
    """This process's cap on REST connections; the choice is logged. --rest_api_max_connections is the
    server's total: with ``share`` front-end processes each gets 1/share of it (as of the memory budget).
    Else (0) the file descriptor limit less a reserve, which is each process's own (each has its own
    descriptors).

    The reserve (a quarter of the limit, at least 64) keeps descriptors for what must go on working when
    REST is at its cap: gRPC connections, the version poller, model files, logs. With no limit known
    (unlimited) the cap is off."""
    total = options.rest_api_max_connections
    if total > 0:
        if share <= 1:
            log.info("REST connections: at most %d (--rest_api_max_connections)", total)
            return total
        cap = max(total // share, 1)
        log.info(
            "REST connections: at most %d in this process (--rest_api_max_connections %d across %d processes)",
            cap,
            total,
            share,
        )
        return cap
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        log.info("REST connections: no cap (no file descriptor limit)")
        return 0
    reserve = max(64, soft // 4)
    cap = max(soft - reserve, 1)
    log.info(
        "REST connections: at most %d%s (file descriptor limit %d less %d kept for gRPC, polling, models and logs)",
        cap,
        " per process" if share > 1 else "",
        soft,
        reserve,
    )
    return cap


def http_options(
    options: ServerOptions,
    rest: TfsRestApp,
    memory: budget.MemoryBudget,
    tls: ssl.SSLContext | None,
    listening: Listening,
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
        max_connections=rest_connection_cap(options, listening.share),
        tls=tls,
        watch=listening.watch,
    )


def grpc_protocol(method: str) -> Front:
    return "v2_grpc" if method.startswith("/inference.") else "tfs_grpc"


def rest_options(options: ServerOptions) -> RestOptions:
    """The REST front ends' timeout and body limits, from the --rest_api_* flags."""
    return RestOptions(
        timeout_ms=options.rest_api_timeout_in_ms,
        enable_cors=options.rest_api_enable_cors_support or options.rest_api_enable_cors_headers,
        max_body_bytes=options.rest_api_max_body_bytes,
        max_gzip_ratio=options.rest_api_max_gzip_ratio,
    )


def api_routes(core: Core, rest: TfsRestApp) -> list[tuple[str, Handler]]:
    """TF Serving REST under /v1/ and V2 REST under /v2/, with the same limits (also modelserve.ray's routes)."""
    return [("/v1/", rest), ("/v2/", V2RestApp(core, rest.options))]


class FrontEnds:
    """gRPC, REST and the metrics port of one process, around ``core``; ``budget`` is what this process's
    requests may hold (a front-end process's share of --memory_budget_bytes)."""

    def __init__(
        self, options: ServerOptions, core: Core, memory: budget.MemoryBudget, pages: Pages, listening: Listening
    ) -> None:
        self.options = options
        self.core = core
        self.budget = memory
        self.pages = pages
        self.listening = listening
        self.watch = listening.watch
        self.guard: auth.Guard | None = None
        self.rest_tls: ssl.SSLContext | None = None
        self.rest_port: int | None = None
        self.grpc_port: int | None = None
        self.metrics_port: int | None = None
        self.http: HttpServer | None = None
        self.grpc: GrpcServer | None = None
        self._metrics_http: HttpServer | None = None

    def configure_security(self) -> None:
        self.guard, self.rest_tls = security(self.options)
        if self.guard is not None:
            self.guard = dataclasses.replace(self.guard, refused=self._grpc_refused)

    async def start(self) -> None:
        await self.start_grpc()
        await self.start_rest()

    async def start_grpc(self) -> None:
        o = self.options
        self.grpc = GrpcServer(
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
                asyncio=self.listening.grpc_on_loop,
                guard=self.guard,
                max_receive_bytes=self.budget.per_request,
                watch=self.watch,
                announce=self.listening.announce,
                reuse_port=self.listening.reuse_port,
            ),
        )
        await self.grpc.start()
        self.grpc_port = self.grpc.port

    async def start_rest(self) -> None:
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
            sock = bind(self.options.host, max(port, 0), self.listening.reuse_port)
        except OSError as exc:
            raise rest_port_taken(port, exc) from None
        self.rest_port = sock.getsockname()[1]
        handler, rest = self.rest_handler()
        self.http = HttpServer(handler, http_options(self.options, rest, self.budget, self.rest_tls, self.listening))
        await self.http.start(sock)
        if self.listening.announce:
            log.info("Exporting HTTP/REST API at:localhost:%d ...", self.rest_port)
        await self._start_metrics_port()

    def rest_handler(self) -> tuple[Handler, TfsRestApp]:
        """The REST port's routes behind the token guard, and its TF Serving app (whose answers the listener uses)."""
        rest = TfsRestApp(self.core, rest_options(self.options))
        docs = openapi.OpenApiApp(self.rest_tls is not None)
        health = HealthApp(self.core)
        routes: list[tuple[str, Handler]] = [
            *api_routes(self.core, rest),
            *((path, health) for path in HEALTH_PATHS),
            (openapi.SPEC_PATH, docs),
            (openapi.DOCS_PATH + "/", docs),
        ]
        routes += self._metrics_routes()
        routes += self._dashboard_routes()
        return self.guarded(Router(routes)), rest

    def guarded(self, router: Router) -> Handler:
        """``router`` behind --auth_token_file's tokens and the management switch, when configured
        (also modelserve.ray's replicas, in front of ``api_routes``)."""
        if self.guard is None:
            return router
        tf_path = self.pages.tf_metrics_path
        open_paths = (*auth.REST_OPEN_PATHS, *((tf_path.lower(),) if tf_path else ()))
        return auth.RestGuard(router, self.guard, open_paths)

    # ---- metrics ------------------------------------------------------------------------------

    def _metrics_routes(self) -> list[tuple[str, Handler]]:
        """The metrics pages on the REST port: modelserve's /metrics (unless on its own port) and TF
        Serving's at its configured path; each choice logged."""
        routes: list[tuple[str, Handler]] = []
        o = self.options
        if o.enable_metrics and o.metrics_port == 0:
            routes.append(("/metrics", metrics_page(self._metrics_page(), self.scrape)))
            log.info("modelserve metrics at /metrics on the REST port (--enable_metrics)")
        elif not o.enable_metrics:
            log.info("modelserve metrics are off (--enable_metrics=false)")
        path, metrics = self.pages.tf_metrics_path, self.pages.metrics
        if path and metrics is not None:
            routes.append((path, tf_metrics_page(path, self.scrape, self.pages.batching is not None)))
            log.info("TF Serving metrics at %s on the REST port (--monitoring_config_file)", path)
        return routes

    def figures(self) -> Scrape:
        """This process's own figures now (with front-end processes the engine adds every process's up)."""
        metrics = self.pages.metrics
        return Scrape(
            metrics.snapshot() if metrics is not None else Snapshot(),
            self.watch.inflight(),
            self.budget.total,
            self.budget.used,
            tuple(self.pages.depths()),
        )

    async def scrape(self) -> Scrape:
        """The whole server's figures at this moment (what a metrics page shows)."""
        return await self.pages.whole(self.figures())

    def _metrics_page(self) -> MetricsPage:
        return MetricsPage(Sources(states=self._version_states, version=__version__))

    def _version_states(self) -> list[tuple[str, int, str]]:
        states = []
        manager = self.core.manager
        for name in manager.model_names():
            try:
                rows = manager.status(name)
            except NotFound:  # no version seen yet
                continue
            states += [(name, row.version, row.state.name) for row in rows]
        return states

    async def _start_metrics_port(self) -> None:
        """--metrics_port: /metrics on a plain-HTTP listener of its own (no tokens: a scraper's port)."""
        o = self.options
        if not o.enable_metrics or o.metrics_port == 0:
            return
        sock = bind(o.host, max(o.metrics_port, 0), self.listening.reuse_port)
        self.metrics_port = sock.getsockname()[1]
        page = metrics_page(self._metrics_page(), self.scrape)
        self._metrics_http = HttpServer(Router([("/metrics", page)]), HttpOptions())
        await self._metrics_http.start(sock)
        log.info("modelserve metrics at /metrics on port %d (--metrics_port)", self.metrics_port)

    def _grpc_refused(self, method: str, exc: ServingError) -> None:
        """A gRPC call the token guard refused: its trace, so refusals are counted as the others."""
        trace = self.watch.open(grpc_protocol(method), method.rsplit("/", 1)[-1])
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
            batching=self.pages.batching,
            per_model_batching=o.enable_per_model_batching_parameters,
            guard=self.guard,
            reload=self.pages.reload if o.model_config_file else None,
            # the page charts /metrics from the port it came from: none there when off or on its own port
            metrics_path="/metrics" if o.enable_metrics and o.metrics_port == 0 else "",
        )
        log.info("Dashboard at /dashboard on the REST port (--enable_dashboard)")
        return [(dashboard.PREFIX + "/", dashboard.DashboardApp(self.core, setup))]

    # ---- drain and stop -----------------------------------------------------------------------

    async def drain(self) -> None:
        """Readiness false at once on every probe (the core's), gRPC health NOT_SERVING."""
        self.core.drain()
        if self.grpc is not None:
            await self.grpc.drain()

    def stopping(self, grace: float) -> list[Awaitable[None]]:
        """Stop accepting; what finishes once in-flight requests did (at most ``grace`` seconds)."""
        draining: list[Awaitable[None]] = []
        if self.grpc is not None:
            draining.append(self.grpc.stop(grace))
        if self.http is not None:
            draining.append(self.http.stop(grace))
        if self._metrics_http is not None:
            draining.append(self._metrics_http.stop(0))
        return draining


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def rest_port_taken(port: int, exc: OSError) -> Unavailable:
    # TF Serving logs this and serves gRPC alone; failing is kinder: otherwise a REST client
    # reaches whatever else holds the port.
    return Unavailable(
        f"Failed to start HTTP Server at localhost:{port}: {exc.strerror or exc}; "
        f"another process holds port {port}? Choose a free --rest_api_port (or -1 for any free port)."
    )


def _bound(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def reserve(host: str, port: int) -> socket.socket:
    """A bound socket that holds the port (0: any free one) for the front-end processes and receives no
    connection (it never listens). Bound alone first, so that a port another process holds fails here
    even if that process shares it with SO_REUSEPORT (a second server must not join this one's
    connections); then opened to the processes' listeners (SO_REUSEPORT)."""
    sock = _bound(host, port, reuse_port=False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening socket; ``reuse_port``: shared with the other front-end processes (the kernel spreads
    connections among them)."""
    sock = _bound(host, port, reuse_port)
    sock.listen(2048)
    sock.setblocking(False)
    return sock
