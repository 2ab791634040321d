"""OpenTelemetry spans for finished requests (``--enable_tracing``; the ``otel`` extra).

Spans are made after the fact, from a finished ``RequestTrace``, with the
times it recorded: nothing on a request's path opens or closes a span, and a
request costs the same whether tracing is on or off until it is answered. Each
request gives a root span ``modelserve <api>`` (kind SERVER) whose parent is
the caller's W3C ``traceparent`` when it sent one, and children for the steps
it went through: ``decode``, ``queue``, ``inference`` (with the rows of the
batch it ran in) and ``encode``.

Where the spans go (``tracer_provider``): to the global TracerProvider when the
user set one (``opentelemetry-instrument``, or code that embeds the server),
else to an SDK provider exporting by OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or ``..._TRACES_ENDPOINT``) is set; the choice is logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from ..errors import Code, MissingExtra
from .offload import Offload
from .trace import RequestTrace

log = logging.getLogger(__name__)

INSTRUMENTATION = "modelserve"


def _require_otel() -> None:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise MissingExtra(
            "--enable_tracing needs OpenTelemetry: pip install 'modelserve[otel]' "
            "(opentelemetry-api, opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http)"
        ) from None


def tracer_provider(environ: Mapping[str, str] = os.environ) -> Any:
    """The TracerProvider spans go to: the global one if configured, else an SDK one (OTLP when the
    environment names an endpoint). Logs which."""
    _require_otel()
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    current = trace.get_tracer_provider()
    if not isinstance(current, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        log.info("Tracing: spans go to the TracerProvider already configured (%s)", type(current).__name__)
        return current
    # OTEL_RESOURCE_ATTRIBUTES still applies (Resource.create reads it); the service is modelserve by default.
    service = environ.get("OTEL_SERVICE_NAME", "modelserve")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        log.warning(
            "Tracing: no exporter configured, spans are dropped; set OTEL_EXPORTER_OTLP_ENDPOINT "
            "(e.g. http://localhost:4318) or run under opentelemetry-instrument"
        )
        return provider
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        package = "opentelemetry-exporter-otlp-proto-" + ("grpc" if protocol == "grpc" else "http")
        log.warning("Tracing: %s is not installed, spans are dropped (OTLP endpoint %s)", package, endpoint)
        return provider
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("Tracing: spans exported by OTLP/%s to %s", "gRPC" if protocol == "grpc" else "HTTP", endpoint)
    return provider


class Tracing:
    """An ``Observer``: the spans of each finished request, on ``provider`` (``tracer_provider()``).

    Making five SDK spans costs tens of microseconds: the answering thread only queues the finished
    record (read-only from then on), and a thread of its own makes the spans."""

    def __init__(self, provider: Any = None) -> None:
        _require_otel()
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = tracer_provider() if provider is None else provider
        self._tracer = self._provider.get_tracer(INSTRUMENTATION)
        self._propagator = TraceContextTextMapPropagator()
        self._trace = trace
        self._empty = Context  # a fresh context: no span current on this thread becomes a parent
        self._spans = Offload[RequestTrace]("modelserve-tracing", self._make_all)

    def finished(self, record: RequestTrace) -> None:
        if record.end is not None:
            self._spans.put(record)

    def _make_all(self, records: list[RequestTrace]) -> None:
        for record in records:
            self.spans(record)

    def spans(self, record: RequestTrace) -> None:
        """Make ``record``'s spans now, on this thread (``finished`` has them made on the tracing thread)."""
        assert record.end is not None
        otel = self._trace

        # Epoch nanoseconds (1.7e18) are past a float's precision: add the offsets from the start to a
        # base, so that durations keep the monotonic clock's.
        base = int(record.wall * 1e9)

        def ns(t: float) -> int:
            return base + round((t - record.start) * 1e9)

        carrier = {"traceparent": record.traceparent} if record.traceparent else {}
        parent = self._propagator.extract(carrier, context=self._empty())
        attributes: dict[str, Any] = {
            "modelserve.protocol": record.protocol,
            "modelserve.api": record.api,
            "modelserve.model": record.model,
            "modelserve.signature": record.signature,
            "modelserve.status": record.code.name,
            "modelserve.request_id": record.request_id,
        }
        if record.version is not None:
            attributes["modelserve.version"] = record.version
        if record.reason:
            attributes["modelserve.reason"] = record.reason
        root = self._tracer.start_span(
            f"modelserve {record.api or record.protocol}",
            context=parent,
            kind=otel.SpanKind.SERVER,
            start_time=ns(record.start),
            attributes=attributes,
        )
        if record.code is not Code.OK:
            root.set_status(otel.Status(otel.StatusCode.ERROR, record.reason or record.code.name))
        inside = otel.set_span_in_context(root, self._empty())
        ran = record.run_start is not None and record.run_end is not None
        steps = (
            ("decode", record.start, record.decoded, None),
            ("queue", record.queued, record.run_start, None),
            ("inference", record.run_start, record.run_end, {"modelserve.batch_rows": record.batch_rows}),
            ("encode", record.run_end if ran else None, record.end, None),
        )
        for name, begin, end, extra in steps:
            if begin is None or end is None:
                continue
            span = self._tracer.start_span(name, context=inside, start_time=ns(begin), attributes=extra)
            span.end(end_time=ns(max(begin, end)))
        root.end(end_time=ns(record.end))

    def close(self) -> None:
        """Make the spans still queued and export what is pending (the provider is flushed, not shut down)."""
        self._spans.close()
        flush = getattr(self._provider, "force_flush", None)
        if flush is not None:
            flush()
