"""Metrics against the real server: /metrics (modelserve's) and TF Serving's exposition, scraped over
HTTP and parsed with prometheus-client's parser; every expected count is the requests this test sent."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelserve.client import GrpcClient
from modelserve.client.types import ClientError
from modelserve.testing import ServerThread, running_server

from . import onnx_models as om

N = 3
TOKEN = "infer-token-0123456789abcdef"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("metrics")
    om.write(root / "m", 1, om.half_plus_two())
    (root / "monitoring.config").write_text("prometheus_config { enable: true }\n")
    return root


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def post(url: str, doc: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    request = urllib.request.Request(url, json.dumps(doc).encode(), headers={"content-type": "application/json"})
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def scrape(url: str) -> dict[str, list[Any]]:
    """Every sample of the page at ``url``, by sample name."""
    status, body, _ = get(url)
    assert status == 200, body
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def predict_v1(server: ServerThread, model: str = "m", **headers: str) -> tuple[int, bytes, Any]:
    return post(f"{server.rest_url}/v1/models/{model}:predict", {"instances": [1.0, 2.0]}, headers)


def infer_v2(server: ServerThread) -> tuple[int, bytes, Any]:
    doc = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    return post(f"{server.rest_url}/v2/models/m/infer", doc)


@pytest.fixture(scope="module")
def server(base: Path) -> Iterator[ServerThread]:
    with running_server(
        "--model_name=m", f"--model_base_path={base / 'm'}", f"--monitoring_config_file={base / 'monitoring.config'}"
    ) as running:
        yield running


def test_counts_match_requests_over_all_four_protocols(server: ServerThread) -> None:
    x = np.array([1.0, 2.0], np.float32)
    with GrpcClient(server.grpc_target) as client:
        for _ in range(N):
            assert predict_v1(server)[0] == 200
            assert infer_v2(server)[0] == 200
            np.testing.assert_allclose(client.predict("m", {"x": x})["y"], [2.5, 3.0])
            np.testing.assert_allclose(client.v2_infer("m", {"x": x})["y"], [2.5, 3.0])
    samples = scrape(f"{server.rest_url}/metrics")
    ok = {"model": "m", "version": "1", "signature": "serving_default", "code": "OK"}
    for protocol, api in (("tfs_rest", "predict"), ("tfs_grpc", "predict"), ("v2_rest", "infer"), ("v2_grpc", "infer")):
        assert value(samples, "modelserve_requests_total", protocol=protocol, api=api, **ok) == N, protocol
        labels = {"model": "m", "version": "1", "signature": "serving_default", "protocol": protocol, "api": api}
        assert value(samples, "modelserve_request_duration_seconds_count", **labels) == N
    where = {"model": "m", "version": "1", "signature": "serving_default"}
    assert value(samples, "modelserve_inference_rows_total", **where) >= 4 * N * 2  # other tests may add more
    assert value(samples, "modelserve_inference_duration_seconds_count", **where) >= 4 * N
    assert value(samples, "modelserve_model_loads_total", model="m", outcome="ok") == 1
    assert value(samples, "modelserve_model_load_duration_seconds_count", model="m") == 1
    assert value(samples, "modelserve_model_version_state", model="m", version="1", state="AVAILABLE") == 1
    assert value(samples, "modelserve_model_version_state", model="m", version="1", state="LOADING") == 0
    assert value(samples, "modelserve_memory_budget_bytes", kind="total") > 0
    assert value(samples, "modelserve_build_info") == 1
    assert "process_cpu_seconds_total" in samples


def test_errors_are_counted_by_code_with_bounded_labels(server: ServerThread) -> None:
    before = scrape(f"{server.rest_url}/metrics")
    for _ in range(2):
        assert predict_v1(server, model="no-such-model")[0] == 404
    bad = post(f"{server.rest_url}/v1/models/m:predict", {"signature_name": "nope", "instances": [1.0]})
    assert bad[0] == 400
    with GrpcClient(server.grpc_target) as client, pytest.raises(Exception, match="not found"):
        client.predict("m", {"x": np.array([1.0], np.float32)}, signature="nope")
    after = scrape(f"{server.rest_url}/metrics")

    def grew(**labels: str) -> float:
        return value(after, "modelserve_requests_total", **labels) - value(
            before, "modelserve_requests_total", **labels
        )

    # An unknown model's name is not a label (model=""), so clients cannot grow the page.
    assert grew(model="", protocol="tfs_rest", code="NOT_FOUND") == 2
    assert not any(s.labels["model"] == "no-such-model" for s in after["modelserve_requests_total"])
    assert grew(model="m", signature="", protocol="tfs_rest", code="INVALID_ARGUMENT") == 1
    assert grew(model="m", signature="", protocol="tfs_grpc", code="FAILED_PRECONDITION") == 1


def test_request_ids_are_returned_on_rest_and_grpc(server: ServerThread) -> None:
    status, _, headers = predict_v1(server, **{"x-request-id": "abc-123"})
    assert status == 200 and headers["x-request-id"] == "abc-123"
    status, _, headers = get(f"{server.rest_url}/v1/models/nope")  # an error answer has one too
    assert status == 404 and headers["x-request-id"]
    first, second = (get(f"{server.rest_url}/v1/models/m")[2]["x-request-id"] for _ in range(2))
    assert first and first != second
    with grpc.insecure_channel(server.grpc_target) as channel:
        live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive")
        _, call = live.with_call(b"", metadata=(("x-request-id", "grpc-7"),))
        assert ("x-request-id", "grpc-7") in call.initial_metadata()


def test_tf_serving_exposition(server: ServerThread) -> None:
    for _ in range(N):
        assert predict_v1(server)[0] == 200
    status, body, _ = get(f"{server.rest_url}/monitoring/prometheus/metrics")
    assert status == 200
    text = body.decode()
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert "# HELP" not in text
    assert ":tensorflow:serving:batching_session" not in text  # no batching: none of its metrics
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    # TF's exact line (the parser reads a counter's samples as ..._total)
    count = re.search(r'^:tensorflow:serving:request_count\{model_name="m",status="OK"\} (\d+)$', text, re.M)
    assert count is not None and int(count.group(1)) >= N
    assert value(samples, ":tensorflow:serving:request_count_total", model_name="m", status="OK") >= N
    latency = {"model_name": "m", "API": "predict", "entrypoint": "REST"}
    assert value(samples, ":tensorflow:serving:request_latency_count", **latency) >= N
    buckets = [
        s
        for s in samples[":tensorflow:serving:request_latency_bucket"]
        if s.labels["model_name"] == "m" and s.labels["API"] == "predict"
    ]
    assert [s.labels["le"] for s in buckets[:3]] == ["10", "18", "32.4"] and len(buckets) == 34  # 33 and +Inf
    runtime = {"model_name": "m", "API": "predict", "runtime": "TF1"}
    assert value(samples, ":tensorflow:serving:runtime_latency_count", **runtime) >= N
    assert value(samples, ":tensorflow:cc:saved_model:load_attempt_count_total", status="success") == 1
    assert value(samples, ":tensorflow:cc:saved_model:load_latency_total") > 0


def test_metrics_off_is_404_and_a_port_of_its_own_serves_them(base: Path) -> None:
    with running_server("--model_name=m", f"--model_base_path={base / 'm'}", "--enable_metrics=false") as off:
        assert get(f"{off.rest_url}/metrics")[0] == 404
        assert get(f"{off.rest_url}/monitoring/prometheus/metrics")[0] == 404
    with running_server("--model_name=m", f"--model_base_path={base / 'm'}", "--metrics_port=-1") as own:
        assert own.server.metrics_port not in (None, own.server.rest_port)
        fresh = scrape(f"http://127.0.0.1:{own.server.metrics_port}/metrics")
        # before any request, each API protocol's in-flight series is there, at 0 (an autoscaler reads it)
        inflight = {s.labels["protocol"]: s.value for s in fresh["modelserve_inflight_requests"]}
        assert inflight == {"tfs_rest": 0, "tfs_grpc": 0, "v2_rest": 0, "v2_grpc": 0}
        assert get(f"{own.rest_url}/metrics")[0] == 404
        assert predict_v1(own)[0] == 200
        samples = scrape(f"http://127.0.0.1:{own.server.metrics_port}/metrics")
        assert value(samples, "modelserve_requests_total", model="m", protocol="tfs_rest", code="OK") == 1


def test_a_bad_monitoring_config_stops_start_up(base: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.config"
    config.write_text("prometheus_config { enable: maybe }\n")
    with (
        pytest.raises(Exception, match="Invalid protobuf file"),
        running_server("--model_name=m", f"--model_base_path={base / 'm'}", f"--monitoring_config_file={config}"),
    ):
        pass


def test_refusals_by_reason(base: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} infer\n")
    flags = ("--model_name=m", f"--model_base_path={base / 'm'}", f"--auth_token_file={tokens}")
    with running_server(*flags, "--rest_api_max_body_bytes=64") as running:
        assert predict_v1(running)[0] == 401
        big = {"instances": [1.0] * 100}
        auth = {"authorization": f"Bearer {TOKEN}"}
        assert post(f"{running.rest_url}/v1/models/m:predict", big, auth)[0] == 413
        with GrpcClient(running.grpc_target) as client, pytest.raises(ClientError, match="UNAUTHENTICATED"):
            client.predict("m", {"x": np.array([1.0], np.float32)})
        samples = scrape(f"{running.rest_url}/metrics")  # open without a token
    assert value(samples, "modelserve_rejected_requests_total", reason="auth") == 2
    assert value(samples, "modelserve_rejected_requests_total", reason="too_large") == 1
    assert value(samples, "modelserve_requests_total", protocol="tfs_grpc", code="UNAUTHENTICATED") == 1
    assert value(samples, "modelserve_requests_total", protocol="tfs_rest", code="RESOURCE_EXHAUSTED") == 1


def test_batches_padding_and_queue_depth(base: Path, tmp_path: Path) -> None:
    params = tmp_path / "batching.config"
    params.write_text(
        "max_batch_size { value: 4 } batch_timeout_micros { value: 60000000 } num_batch_threads { value: 1 } "
        "allowed_batch_sizes: 2 allowed_batch_sizes: 4"
    )
    flags = (
        "--model_name=m",
        f"--model_base_path={base / 'm'}",
        "--enable_batching",
        f"--batching_parameters_file={params}",
        f"--monitoring_config_file={base / 'monitoring.config'}",
    )
    with running_server(*flags) as running:
        # The model blocks until the test opens the gate: the first request runs alone (a batch of 1,
        # padded to 2), the next three wait behind it and then run as one batch of 3 (padded to 4).
        gate, entered = threading.Event(), threading.Semaphore(0)
        with running.server.manager.lease("m") as lease:
            servable = lease.servable
        run = servable.predict

        def blocking(*args: Any) -> Any:
            entered.release()
            gate.wait(60)
            return run(*args)

        servable.predict = blocking  # type: ignore[method-assign]
        answers: list[int] = []

        def send() -> None:
            answers.append(post(f"{running.rest_url}/v1/models/m:predict", {"instances": [1.0]})[0])

        threads = [threading.Thread(target=send) for _ in range(4)]
        threads[0].start()
        assert entered.acquire(timeout=30)
        for thread in threads[1:]:
            thread.start()
        where = {"model": "m", "version": "1", "signature": "serving_default"}
        deadline = time.monotonic() + 30
        while value(scrape(f"{running.rest_url}/metrics"), "modelserve_queue_depth", **where) != 3:
            assert time.monotonic() < deadline, "three requests never showed in the queue"
            time.sleep(0.05)
        gate.set()
        for thread in threads:
            thread.join(30)
        assert answers == [200] * 4
        samples = scrape(f"{running.rest_url}/metrics")
        tf: dict[str, list[Any]] = {}
        tf_text = get(f"{running.rest_url}/monitoring/prometheus/metrics")[1].decode()
        for family in text_string_to_metric_families(tf_text):
            for sample in family.samples:
                tf.setdefault(sample.name, []).append(sample)
    assert value(samples, "modelserve_queue_depth", **where) == 0
    assert value(samples, "modelserve_batch_size_count", **where) == 2
    assert value(samples, "modelserve_batch_size_sum", **where) == 6  # 2 + 4 rows ran
    assert value(samples, "modelserve_batch_size_bucket", le="2.0", **where) == 1
    assert value(samples, "modelserve_batch_size_bucket", le="4.0", **where) == 2
    assert value(samples, "modelserve_batch_padding_rows_sum", **where) == 2
    assert value(samples, "modelserve_queue_duration_seconds_count", **where) == 4
    assert value(samples, "modelserve_inference_rows_total", **where) == 4
    prefix = ":tensorflow:serving:batching_session:"
    assert value(tf, prefix + "input_batch_size_count") == 4
    assert value(tf, prefix + "input_batch_size_sum") == 4
    assert value(tf, prefix + "processed_batch_size_sum") == 6
    assert value(tf, prefix + "padding_size_count", execution_batch_size="2") == 1
    assert value(tf, prefix + "padding_size_count", execution_batch_size="4") == 1
    assert value(tf, prefix + "wrapped_run_count_total") == 4
    assert value(tf, prefix + "queuing_latency_count", thread_pool_name="batch_threads") == 4
