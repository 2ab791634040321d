"""The metrics recording on its own: buckets, and snapshots of several recorders adding up (what the
page of several worker processes will show)."""

from __future__ import annotations

from modelserve.errors import Code
from modelserve.observe.metrics import LATENCY_BUCKETS, Histogram, Metrics
from modelserve.observe.prometheus import tf_page
from modelserve.observe.trace import RequestTrace


def finished(metrics: Metrics, code: Code = Code.OK, seconds: float = 0.001, protocol: str = "tfs_rest") -> None:
    trace = RequestTrace(protocol, "predict", start=0.0)  # type: ignore[arg-type]
    trace.model, trace.version, trace.signature, trace.rows = "m", 1, "serving_default", 2
    trace.queued = 0.0
    trace.ran(0.0001, 0.0005)
    trace.finish(code)
    trace.end = seconds
    metrics.finished(trace)


def test_a_value_on_a_bound_is_in_that_bound_bucket() -> None:
    hist = Histogram((1.0, 2.0))
    for value in (0.5, 1.0, 1.5, 2.0, 3.0):
        hist.observe(value)
    assert hist.cumulative() == [2, 4, 5] and hist.total == 8.0


def test_snapshots_of_several_recorders_add_up() -> None:
    one, two = Metrics(), Metrics()
    for _ in range(3):
        finished(one)
    finished(two)
    finished(two, Code.NOT_FOUND)
    finished(two, protocol="")  # not an API request: not recorded
    one.loaded("m", 1, "/models/m/1", True, 0.5)
    two.loaded("m", 1, "/models/m/1", False, 0.25)
    merged = one.snapshot()
    merged.merge(two.snapshot())
    (series,) = merged.requests.values()
    assert series.codes == {Code.OK: 4, Code.NOT_FOUND: 1}
    assert series.ok.count == 4 and series.failed.count == 1 and series.rows == 8
    assert series.run.count == 5 and series.queue.count == 5
    assert merged.loads == {("m", "ok"): 1, ("m", "error"): 1}
    assert merged.load_micros == {"/models/m/1": 750000}
    assert one.snapshot().requests[("m", 1, "serving_default", "tfs_rest", "predict")].ok.count == 3  # untouched
    text = tf_page(merged, batching=False).decode()
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 4' in text
    assert ':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"} 1' in text
    assert f'le="{LATENCY_BUCKETS[1] * 1e6:g}"' in text
