"""The metrics pages on the REST port: modelserve's ``/metrics`` and TF Serving's (``--monitoring_config_file``).

Both render at scrape time from the figures of that moment (``observe.metrics.Scrape``: with front-end
processes, the whole server's, which the engine adds up); see
``observe.prometheus`` for the two formats and docs/observability.md for the list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST

from ..errors import InvalidArgument, ServingError
from ..observe.metrics import Scrape
from ..observe.prometheus import MetricsPage, tf_page
from ..protos import pb
from ..protos.text import read_text_proto
from .http import Headers, Request, Response, not_found_html

# TF Serving's default (model_servers/server.cc): where its exposition is served when the config names no path.
TF_METRICS_PATH = "/monitoring/prometheus/metrics"
_PROMETHEUS: Headers = ((b"content-type", CONTENT_TYPE_LATEST.encode()),)
_TF_TEXT: Headers = ((b"content-type", b"text/plain; charset=utf-8"),)
_HTML: Headers = ((b"content-type", b"text/html"),)


def tf_metrics_path(config_file: str) -> str | None:
    """The path of TF Serving's exposition from a text-format MonitoringConfig (None: not enabled).
    A file that does not parse, or a path that is not absolute, stops start-up with what is wrong."""
    if not config_file:
        return None
    config = read_text_proto(config_file, pb.MonitoringConfig())
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    path: str = prometheus.path or TF_METRICS_PATH
    if not path.startswith("/"):
        raise InvalidArgument(
            f"Invalid --monitoring_config_file '{config_file}': prometheus_config.path must start with '/', "
            f"got '{path}'"
        )
    return path


class _Page:
    """One exact path, GET or HEAD, rendered from the figures of that moment; anything else there is the
    listener's usual 404 or a 405."""

    def __init__(
        self, path: str, scrape: Callable[[], Awaitable[Scrape]], render: Callable[[Scrape], bytes], headers: Headers
    ) -> None:
        self.path = path
        self._scrape = scrape
        self._render = render
        self._headers = headers

    async def __call__(self, request: Request) -> Response:
        if request.path.lower() != self.path.lower():
            return Response(404, not_found_html(request.path), _HTML)
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"Method Not Allowed", _TF_TEXT)
        try:
            scrape = await self._scrape()
        except ServingError as exc:  # the engine did not answer (front-end processes): no partial page
            return Response(503, f"{exc}\n".encode(), _TF_TEXT)
        return Response(200, self._render(scrape), self._headers)


def metrics_page(page: MetricsPage, scrape: Callable[[], Awaitable[Scrape]], path: str = "/metrics") -> _Page:
    """modelserve's own metrics, in Prometheus's text format (prometheus-client's)."""
    return _Page(path, scrape, page.render, _PROMETHEUS)


def tf_metrics_page(path: str, scrape: Callable[[], Awaitable[Scrape]], batching: bool) -> _Page:
    """TF Serving's exposition at ``path``."""
    return _Page(path, scrape, lambda figures: tf_page(figures.snapshot, batching), _TF_TEXT)
