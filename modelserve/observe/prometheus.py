"""The two metrics pages, rendered at scrape time from the figures of that moment (``observe.metrics.Scrape``).

``MetricsPage``: modelserve's own metrics (``modelserve_*``, with HELP lines) through a
prometheus-client collector, so the page is prometheus-client's text format, next to its
``process_*`` metrics. ``tf_page``: TF Serving's
exposition as ``util/prometheus_exporter.cc`` writes it (``# TYPE`` lines only,
``:tensorflow:serving:*`` names, µs buckets), so existing boards and alerts keep working.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .metrics import Histogram, RequestKey, Scrape, Snapshot

log = logging.getLogger(__name__)

STATES = ("START", "LOADING", "AVAILABLE", "UNLOADING", "END")


@dataclass(frozen=True)
class Sources:
    """What a scrape reads from this process besides the figures (``Scrape``): the version states (known to
    every process) and modelserve's version."""

    # (model, version, state name) of every version the manager knows
    states: Callable[[], Iterable[tuple[str, int, str]]] = lambda: ()
    version: str = ""


class MetricsPage:
    """modelserve's ``/metrics``: rendered at each scrape from that scrape's figures, next to
    prometheus-client's ``process_*`` metrics (of the process that serves the page)."""

    def __init__(self, sources: Sources) -> None:
        self._sources = sources
        self._gpus = _Nvml.open()

    def render(self, scrape: Scrape) -> bytes:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(_Collector(scrape, self._sources, self._gpus))  # a Collector by shape (collect)
        ProcessCollector(registry=reg)
        return generate_latest(reg)


class _Collector:
    """One scrape's collector (registries key collectors by identity)."""

    def __init__(self, scrape: Scrape, sources: Sources, gpus: _Nvml | None) -> None:
        self.scrape = scrape
        self.sources = sources
        self.gpus = gpus

    def collect(self) -> Iterator[Metric]:
        data = self.scrape.snapshot
        yield from _requests(data)
        yield from _batches(data)
        yield from _lifecycle(data)
        yield from self._gauges()
        if self.gpus is not None:
            yield from self.gpus.collect()

    def _gauges(self) -> Iterator[Metric]:
        s = self.scrape
        depth = GaugeMetricFamily(
            "modelserve_queue_depth", "Requests waiting in a batch queue.", labels=["model", "version", "signature"]
        )
        for model, version, signature, n in s.depths:
            depth.add_metric([model, str(version), signature], n)
        yield depth
        inflight = GaugeMetricFamily(
            "modelserve_inflight_requests", "Requests being answered, by protocol.", labels=["protocol"]
        )
        for protocol, n in sorted(s.inflight.items()):
            inflight.add_metric([protocol], n)
        yield inflight
        states = GaugeMetricFamily(
            "modelserve_model_version_state",
            "1 for each version's current state (START LOADING AVAILABLE UNLOADING END), 0 for the others.",
            labels=["model", "version", "state"],
        )
        for model, version, current in self.sources.states():
            for state in STATES:
                states.add_metric([model, str(version), state], 1 if state == current else 0)
        yield states
        budget = GaugeMetricFamily(
            "modelserve_memory_budget_bytes",
            "The memory budget for requests in flight (--memory_budget_bytes): total and in use.",
            labels=["kind"],
        )
        budget.add_metric(["total"], s.budget_total)
        budget.add_metric(["in_use"], s.budget_used)
        yield budget
        info = GaugeMetricFamily("modelserve_build_info", "modelserve's version (always 1).", labels=["version"])
        info.add_metric([self.sources.version], 1)
        yield info


def _version(version: int | None) -> str:
    return "" if version is None else str(version)


def _buckets(hist: Histogram, scale: float = 1.0) -> list[tuple[str, float]]:
    bounds = [*(repr(float(f"{b * scale:.6g}")) for b in hist.bounds), "+Inf"]
    return list(zip(bounds, hist.cumulative(), strict=True))


def _add(family: HistogramMetricFamily, labels: list[str], hist: Histogram) -> None:
    family.add_metric(labels, _buckets(hist), hist.total)


def _requests(data: Snapshot) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "modelserve_requests",
        "Requests answered, by model, version, signature, protocol, API and status code.",
        labels=["model", "version", "signature", "protocol", "api", "code"],
    )
    duration = HistogramMetricFamily(
        "modelserve_request_duration_seconds",
        "From a request's arrival to its answer.",
        labels=["model", "version", "signature", "protocol", "api"],
    )
    by_version: dict[tuple[str, str, str], list[Any]] = {}  # (model, version, signature) -> [queue, run, rows]
    for (model, version, signature, protocol, api), series in sorted(data.requests.items(), key=_order):
        labels = [model, _version(version), signature, protocol, api]
        for code, n in sorted(series.codes.items()):
            requests.add_metric([*labels, code.name], n)
        both = Histogram(series.ok.bounds)
        both.merge(series.ok)
        both.merge(series.failed)
        _add(duration, labels, both)
        where = (model, _version(version), signature)
        if where not in by_version:
            by_version[where] = [Histogram(series.queue.bounds), Histogram(series.run.bounds), 0]
        mine = by_version[where]
        mine[0].merge(series.queue)
        mine[1].merge(series.run)
        mine[2] += series.rows
    queue = HistogramMetricFamily(
        "modelserve_queue_duration_seconds",
        "A request's wait for the model (a worker thread or its batch).",
        labels=["model", "version", "signature"],
    )
    inference = HistogramMetricFamily(
        "modelserve_inference_duration_seconds",
        "The model call a request ran in (its batch's, when batched).",
        labels=["model", "version", "signature"],
    )
    rows = CounterMetricFamily(
        "modelserve_inference_rows", "Rows (examples) of successful requests.", labels=["model", "version", "signature"]
    )
    for where, (queued, ran, n) in by_version.items():
        _add(queue, list(where), queued)
        _add(inference, list(where), ran)
        rows.add_metric(list(where), n)
    rejected = CounterMetricFamily(
        "modelserve_rejected_requests",
        "Requests refused: budget, too_large, queue_full, timeout, deadline, cancelled, auth.",
        labels=["model", "reason"],
    )
    for (model, reason), n in sorted(data.rejected.items()):
        rejected.add_metric([model, reason], n)
    yield from (requests, duration, queue, inference, rows, rejected)


def _order(item: tuple[RequestKey, Any]) -> tuple[str, int, str, str, str]:
    model, version, signature, protocol, api = item[0]
    return model, -1 if version is None else version, signature, protocol, api


def _batches(data: Snapshot) -> Iterator[Metric]:
    labels = ["model", "version", "signature"]
    sizes = HistogramMetricFamily("modelserve_batch_size", "Rows per executed batch (padding included).", labels=labels)
    padding = HistogramMetricFamily("modelserve_batch_padding_rows", "Padding rows per executed batch.", labels=labels)
    for (model, version, signature), batch in sorted(data.batches.items()):
        _add(sizes, [model, str(version), signature], batch.sizes)
        _add(padding, [model, str(version), signature], batch.padding)
    yield from (sizes, padding)


def _lifecycle(data: Snapshot) -> Iterator[Metric]:
    loads = CounterMetricFamily(
        "modelserve_model_loads", "Version loads, by outcome (ok, error).", labels=["model", "outcome"]
    )
    for (model, outcome), n in sorted(data.loads.items()):
        loads.add_metric([model, outcome], n)
    load_seconds = HistogramMetricFamily(
        "modelserve_model_load_duration_seconds", "How long a version took to load.", labels=["model"]
    )
    for model, hist in sorted(data.load_seconds.items()):
        _add(load_seconds, [model], hist)
    unloads = CounterMetricFamily("modelserve_model_unloads", "Version unloads.", labels=["model"])
    for model, n in sorted(data.unloads.items()):
        unloads.add_metric([model], n)
    unload_seconds = HistogramMetricFamily(
        "modelserve_model_unload_duration_seconds", "How long a version took to unload.", labels=["model"]
    )
    for model, hist in sorted(data.unload_seconds.items()):
        _add(unload_seconds, [model], hist)
    yield from (loads, load_seconds, unloads, unload_seconds)


class _Nvml:
    """Device memory and utilisation through NVML (the ``nvml`` extra: nvidia-ml-py), when a GPU is there."""

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self._nvml = nvml
        self._handles = handles

    @classmethod
    def open(cls) -> _Nvml | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # no module, no driver, no GPU: no device metrics
            return None
        log.info("Device metrics: %d GPU(s) through NVML", len(handles))
        return cls(pynvml, handles) if handles else None

    def collect(self) -> Iterator[Metric]:
        memory = GaugeMetricFamily(
            "modelserve_device_memory_bytes", "GPU memory (NVML): used and total.", labels=["device", "kind"]
        )
        utilization = GaugeMetricFamily(
            "modelserve_gpu_utilization_ratio",
            "GPU busy time over NVML's last sample period (0..1).",
            labels=["device"],
        )
        for index, handle in enumerate(self._handles):
            device = f"cuda:{index}"
            try:
                info = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
            except Exception:  # a device gone bad must not cost the page
                continue
            memory.add_metric([device, "used"], info.used)
            memory.add_metric([device, "total"], info.total)
            utilization.add_metric([device], rates.gpu / 100)
        yield from (memory, utilization)


# ---- TF Serving's exposition -----------------------------------------------------------------------

_TF_ENTRYPOINT = {"tfs_rest": "REST", "v2_rest": "REST", "tfs_grpc": "GRPC", "v2_grpc": "GRPC"}
_TF_REST_VERBS = ("predict", "classify", "regress")


def _tf_api(protocol: str, api: str) -> str:
    """TF Serving's ``API`` label: the REST URL's verb ("" for a GET), gRPC's method name."""
    if protocol == "tfs_rest":
        return api if api in _TF_REST_VERBS else ""
    if protocol.endswith("grpc"):
        return "".join(part.capitalize() for part in api.split("_"))
    return api


class _TfPage:
    """TF Serving's text: ``# TYPE`` and sample lines, int counters, ``%g`` sums (six digits)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def counter(self, name: str, samples: Mapping[tuple[tuple[str, str], ...], int]) -> None:
        self.lines.append(f"# TYPE {name} counter")
        self.lines += [f"{name}{_tf_labels(labels)} {n}" for labels, n in samples.items()]

    def histogram(self, name: str, samples: Mapping[tuple[tuple[str, str], ...], Histogram], scale: float) -> None:
        self.lines.append(f"# TYPE {name} histogram")
        for labels, hist in samples.items():
            bounds = [*(f"{b * scale:g}" for b in hist.bounds), "+Inf"]
            for bound, n in zip(bounds, hist.cumulative(), strict=True):
                self.lines.append(f"{name}_bucket{_tf_labels((*labels, ('le', bound)))} {n}")
            self.lines.append(f"{name}_sum{_tf_labels(labels)} {hist.total * scale:g}")
            self.lines.append(f"{name}_count{_tf_labels(labels)} {hist.count}")


def _tf_labels(labels: Iterable[tuple[str, str]]) -> str:
    text = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
    return "{" + text + "}" if text else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


_NAME = re.compile(r"[^a-zA-Z0-9_]")


def tf_name(monitoring_name: str) -> str:
    """TF's metric name for Prometheus: every character outside ``[a-zA-Z0-9_]`` becomes ``:``."""
    return _NAME.sub(":", monitoring_name)


def tf_page(data: Snapshot, batching: bool) -> bytes:
    """TF Serving's metrics page from ``data``: request counts and latencies, model call times,
    loads, and (``batching``) the batching session's figures."""
    page = _TfPage()
    counts: dict[tuple[tuple[str, str], ...], int] = {}
    latency: dict[tuple[tuple[str, str], ...], Histogram] = {}
    runtime: dict[tuple[tuple[str, str], ...], Histogram] = {}
    for (model, _, _, protocol, api), series in data.requests.items():
        for code, n in series.codes.items():
            key = (("model_name", model), ("status", code.name))
            counts[key] = counts.get(key, 0) + n
        tf_api = _tf_api(protocol, api)
        if series.ok.count:  # successful requests only, as TF records it
            lat_key = (("model_name", model), ("API", tf_api), ("entrypoint", _TF_ENTRYPOINT.get(protocol, "")))
            latency.setdefault(lat_key, Histogram(series.ok.bounds)).merge(series.ok)
        if series.run.count:
            run_key = (("model_name", model), ("API", tf_api), ("runtime", "TF1"))
            runtime.setdefault(run_key, Histogram(series.run.bounds)).merge(series.run)
    page.counter(tf_name("/tensorflow/serving/request_count"), counts)
    page.histogram(tf_name("/tensorflow/serving/request_latency"), latency, 1e6)
    page.histogram(tf_name("/tensorflow/serving/runtime_latency"), runtime, 1e6)
    if batching:
        base = "/tensorflow/serving/batching_session/"
        page.histogram(
            tf_name(base + "queuing_latency"),
            {(("thread_pool_name", pool),): hist for pool, hist in data.batch_queue.items()},
            1e6,
        )
        page.counter(tf_name(base + "wrapped_run_count"), {(): data.wrapped_runs})
        page.histogram(tf_name(base + "input_batch_size"), {(): data.task_sizes}, 1.0)
        processed = Histogram(data.task_sizes.bounds)
        for batch in data.batches.values():
            processed.merge(batch.sizes)
        page.histogram(tf_name(base + "processed_batch_size"), {(): processed}, 1.0)
        page.histogram(
            tf_name(base + "padding_size"),
            {(("execution_batch_size", str(size)),): hist for size, hist in sorted(data.padding_by_size.items())},
            1.0,
        )
    page.counter(
        tf_name("/tensorflow/cc/saved_model/load_attempt_count"),
        {(("model_path", path), ("status", status)): n for (path, status), n in data.load_attempts.items()},
    )
    page.counter(
        tf_name("/tensorflow/cc/saved_model/load_latency"),
        {(("model_path", path),): n for path, n in data.load_micros.items()},
    )
    return ("\n".join(page.lines) + "\n").encode()
