"""OpenTelemetry spans from finished requests (the otel extra), read back with the SDK's in-memory exporter,
and through the OTLP/HTTP exporter to a collector stand-in."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from modelserve.errors import Code
from modelserve.observe import RequestTrace
from modelserve.observe.tracing import Tracing, tracer_provider
from modelserve.testing import default_frontend_processes, running_server, server_process

from . import onnx_models as om
from .otlp import otlp_collector

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def exported() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider), exporter
    provider.shutdown()


def predict_trace(traceparent: str = TRACEPARENT, code: Code = Code.OK) -> RequestTrace:
    record = RequestTrace("v2_rest", "infer", request_id="r-7", traceparent=traceparent, start=50.0)
    record.model, record.version, record.signature = "half", 2, "serving_default"
    record.decoded, record.queued = 50.001, 50.002
    record.ran(50.003, 50.007, batch_rows=8)
    record.finish(code, bytes_out=10, reason="" if code is Code.OK else "queue_full")
    record.end = 50.009
    return record


def by_name(spans: Any) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def test_a_request_becomes_a_server_span_with_its_steps_under_the_callers_parent(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    record = predict_trace()
    tracing.finished(record)
    tracing.close()  # the spans are made on the tracing thread: wait for them
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"modelserve infer", "decode", "queue", "inference", "encode"}
    root = spans["modelserve infer"]
    assert root.kind is trace.SpanKind.SERVER
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert root.parent is not None and format(root.parent.span_id, "016x") == PARENT_ID and root.parent.is_remote
    assert dict(root.attributes or {}) == {
        "modelserve.protocol": "v2_rest",
        "modelserve.api": "infer",
        "modelserve.model": "half",
        "modelserve.version": 2,
        "modelserve.signature": "serving_default",
        "modelserve.status": "OK",
        "modelserve.request_id": "r-7",
    }
    assert root.status.status_code is trace.StatusCode.UNSET
    steps = [spans[name] for name in ("decode", "queue", "inference", "encode")]
    for step in steps:
        assert step.parent is not None and step.parent.span_id == root.context.span_id
        assert step.context.trace_id == root.context.trace_id
    # Times are the record's, in order: decode, queue, inference, encode within the root span.
    times = [t for step in steps for t in (step.start_time, step.end_time)]
    assert times == sorted(times)
    assert root.start_time == steps[0].start_time and root.end_time == steps[-1].end_time
    assert root.start_time is not None and root.end_time is not None
    assert root.end_time - root.start_time == 9_000_000  # 9 ms, in ns
    inference = spans["inference"]
    assert inference.start_time is not None and inference.end_time is not None
    assert inference.end_time - inference.start_time == 4_000_000
    assert dict(spans["inference"].attributes or {}) == {"modelserve.batch_rows": 8}
    assert abs(root.start_time / 1e9 - record.epoch(record.start)) < 1e-6


def test_without_a_traceparent_each_request_starts_a_trace_and_errors_are_marked(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    tracing.finished(predict_trace(""))
    tracing.finished(predict_trace("not-a-traceparent", Code.RESOURCE_EXHAUSTED))
    tracing.close()
    roots = [s for s in exporter.get_finished_spans() if s.name == "modelserve infer"]
    assert len(roots) == 2 and all(root.parent is None for root in roots)
    assert roots[0].context.trace_id != roots[1].context.trace_id
    assert roots[1].status.status_code is trace.StatusCode.ERROR and roots[1].status.description == "queue_full"
    assert (roots[1].attributes or {})["modelserve.reason"] == "queue_full"


def test_a_request_that_ran_nothing_has_only_its_own_span(exported: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = exported
    record = RequestTrace("tfs_grpc", "metadata", start=10.0)
    record.finish(Code.NOT_FOUND)
    tracing.finished(record)
    unfinished = RequestTrace("tfs_grpc", "predict")
    tracing.finished(unfinished)  # never finished: nothing to say
    tracing.close()
    (span,) = exporter.get_finished_spans()
    assert span.name == "modelserve metadata" and "modelserve.version" not in (span.attributes or {})


def test_the_provider_is_the_global_one_or_an_sdk_one_with_otlp(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    configured = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: configured)
    with caplog.at_level(logging.INFO, "modelserve.observe.tracing"):
        assert tracer_provider({}) is configured
        monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)  # none configured
        alone = tracer_provider({})
        assert isinstance(alone, TracerProvider) and alone is not configured
        exporting = tracer_provider({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    exporting.shutdown()
    alone.shutdown()
    configured.shutdown()
    said = [r.getMessage() for r in caplog.records]
    assert said[0] == "Tracing: spans go to the TracerProvider already configured (TracerProvider)"
    assert said[1].startswith("Tracing: no exporter configured, spans are dropped; set OTEL_EXPORTER_OTLP_ENDPOINT")
    assert said[2] == "Tracing: spans exported by OTLP/HTTP to http://127.0.0.1:4318"


# ---- end to end (after helper M's plumbing) ----------------------------------------------------


@pytest.fixture(scope="module")
def half(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("half") / "half"
    om.write(base, 1, om.half_plus_two())
    return base


def post_predict(url: str, traceparent: str) -> None:
    body = json.dumps({"instances": [1.0, 2.0]}).encode()
    headers = {"traceparent": traceparent, "content-type": "application/json"}
    request = urllib.request.Request(f"{url}/v1/models/half:predict", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


@pytest.mark.skipif(
    default_frontend_processes() > 1,
    reason="the in-memory TracerProvider of this test's process: with front-end processes the spans are made in "
    "theirs (test_spans_reach_an_otlp_collector sees them over OTLP)",
)
def test_a_traced_server_exports_spans_in_the_callers_trace(half: Path) -> None:
    """--enable_tracing with a TracerProvider set by the embedding program (as opentelemetry-instrument does)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)  # once per process: OpenTelemetry allows no second
    if trace.get_tracer_provider() is not provider:
        pytest.skip("another test set the global TracerProvider")
    with running_server(f"--model_base_path={half}", "--model_name=half", "--enable_tracing") as s:
        post_predict(s.rest_url, TRACEPARENT)
    spans = [span for span in exporter.get_finished_spans() if format(span.context.trace_id, "032x") == TRACE_ID]
    names = {span.name for span in spans}
    assert {"modelserve predict", "decode", "inference", "encode"} <= names
    (root,) = [span for span in spans if span.name == "modelserve predict"]
    assert root.parent is not None and format(root.parent.span_id, "016x") == PARENT_ID
    assert (root.attributes or {})["modelserve.model"] == "half"


def test_spans_reach_an_otlp_collector(half: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What docs/observability.md ("Traces") shows: OTEL_EXPORTER_OTLP_ENDPOINT and --enable_tracing."""
    with otlp_collector() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export within 0.1 s, not 5 s
        with server_process(f"--model_base_path={half}", "--model_name=half", "--enable_tracing") as p:
            assert "Tracing: spans exported by OTLP/HTTP to http://127.0.0.1:" in p.text()
            post_predict(f"http://127.0.0.1:{p.rest_port}", TRACEPARENT)
            assert collector.seen.wait(30), p.text()
    assert "modelserve predict" in collector.span_names(TRACE_ID)
