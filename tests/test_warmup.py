"""Model warm-up: TFRecord files of PredictionLog replayed before a version serves."""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import Message

from modelserve import platforms
from modelserve.codecs.tensor_proto import from_ndarray
from modelserve.codecs.tfrecord import write_records
from modelserve.errors import Code, DataLoss, FailedPrecondition, InvalidArgument, ServingError, Unimplemented
from modelserve.execution.runner import DirectRunner
from modelserve.execution.workers import WorkerPool
from modelserve.protos import pb
from modelserve.serving.warmup import ReplayWarmup
from modelserve.testing import running_server

from . import onnx_models as om


def predict_record(inputs: dict[str, np.ndarray], signature: str = "", output_filter: Sequence[str] = ()) -> bytes:
    entry: Any = pb.PredictionLog()
    request = entry.predict_log.request
    request.model_spec.name = "some other model"  # ignored: warm-up runs on the version being loaded
    request.model_spec.signature_name = signature
    request.output_filter.extend(output_filter)
    for alias, array in inputs.items():
        request.inputs[alias].CopyFrom(from_ndarray(array))
    return bytes(entry.SerializeToString())


def example_request(entry: Message, kind: str, features: dict[str, list[float]]) -> None:
    request: Any = getattr(entry, kind).request
    example = request.input.example_list.examples.add()
    for name, values in features.items():
        example.features.feature[name].float_list.value.extend(values)


def write_warmup(folder: Path, records: Sequence[bytes]) -> Path:
    path = folder / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as stream:
        write_records(stream, records)
    return path


class CountingRunner(DirectRunner):
    calls = 0

    def predict(self, *args: Any, **kwargs: Any) -> Awaitable[dict[str, np.ndarray]]:
        self.calls += 1
        return super().predict(*args, **kwargs)


def warm(folder: Path, iterations: int = 0) -> CountingRunner:
    servable = platforms.load("m", "tensorflow", folder, platforms.LoadOptions())
    runner = CountingRunner(servable, WorkerPool(1))
    ReplayWarmup(iterations)(folder, servable, runner)
    return runner


X = np.array([1.0, 2.0], dtype=np.float32)


def test_each_record_runs_num_request_iterations_times(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = om.write(tmp_path, 1, om.half_plus_two())
    path = write_warmup(folder, [predict_record({"x": X}), predict_record({"x": X}, "serving_default", ["y"])])
    caplog.set_level(logging.INFO, "modelserve.serving.warmup")
    assert warm(folder).calls == 2
    assert warm(folder, iterations=3).calls == 6
    assert f"Starting to read warmup data for model at {path} with model-warmup-options" in caplog.text
    assert f"Finished reading warmup data for model at {path}. Number of warmup records read: 2." in caplog.text


def test_no_file_is_fine(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = om.write(tmp_path, 1, om.half_plus_two())
    caplog.set_level(logging.INFO, "modelserve.serving.warmup")
    assert warm(folder).calls == 0
    assert f"No warmup data file found at {folder / 'assets.extra' / 'tf_serving_warmup_requests'}" in caplog.text


def test_classify_and_regress_records(tmp_path: Path) -> None:
    mlp = om.write(tmp_path / "mlp", 1, om.mlp(om.random_weights([4, 8, 3], seed=1)))
    classify: Any = pb.PredictionLog()
    example_request(classify, "classify_log", {"input": [1.0, 2.0, 3.0, 4.0]})
    multi: Any = pb.PredictionLog()
    task = multi.multi_inference_log.request.tasks.add()
    task.model_spec.name = "m"
    task.method_name = "tensorflow/serving/classify"
    multi.multi_inference_log.request.input.example_list.examples.add().features.feature["input"].float_list.value[
        :
    ] = [0.0, 1.0, 0.0, 1.0]
    write_warmup(mlp, [classify.SerializeToString(), multi.SerializeToString()])
    assert warm(mlp).calls == 2
    half = om.write(tmp_path / "half", 1, om.half_plus_two())
    regress: Any = pb.PredictionLog()
    example_request(regress, "regress_log", {"x": [3.0]})
    write_warmup(half, [regress.SerializeToString(), b""])  # an empty PredictionLog runs nothing, as TF
    assert warm(half).calls == 1


@pytest.mark.parametrize(
    ("records", "error", "message"),
    [
        ([predict_record({"nope": X})], InvalidArgument, "input size does not match signature"),
        ([predict_record({"x": X}, "other")], FailedPrecondition, 'Serving signature key "other" not found.'),
        (
            [predict_record({"x": X.astype(np.int32)})],
            InvalidArgument,
            "Expects arg[0] to be float but int32",
        ),
        ([predict_record({"x": X}, output_filter=["z"])], InvalidArgument, "output tensor alias not found"),
        ([b"\xff\xff garbage"], InvalidArgument, "Failed to parse warmup record: "),
    ],
)
def test_a_failing_record_fails_warm_up(
    tmp_path: Path, records: list[bytes], error: type[ServingError], message: str
) -> None:
    folder = om.write(tmp_path, 1, om.half_plus_two())
    write_warmup(folder, records)
    with pytest.raises(error) as raised:
        warm(folder)
    assert message in str(raised.value)


def test_unsupported_log_types(tmp_path: Path) -> None:
    folder = om.write(tmp_path, 1, om.half_plus_two())
    entry: Any = pb.PredictionLog()
    entry.session_run_log.request.feed.add()
    write_warmup(folder, [entry.SerializeToString()])
    with pytest.raises(Unimplemented, match=r"^Unsupported log_type for warmup: 5$"):
        warm(folder)


def test_more_than_1000_records(tmp_path: Path) -> None:
    folder = om.write(tmp_path, 1, om.half_plus_two())
    path = write_warmup(folder, [predict_record({"x": X})] * 1001)
    with pytest.raises(InvalidArgument, match=f"^Number of warmup records exceeds the maximum \\(1000\\) at {path}$"):
        warm(folder)


def test_not_a_tfrecord_file(tmp_path: Path) -> None:
    folder = om.write(tmp_path, 1, om.half_plus_two())
    path = folder / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir()
    path.write_bytes(b'{"instances": [1.0]}' * 3)
    with pytest.raises(DataLoss, match=r"Please verify your warmup data is in TFRecord format\.$"):
        warm(folder)


# ---- through the server ---------------------------------------------------------------------


def stage(base: Path, version: int, blob: bytes, records: Sequence[bytes] = ()) -> Path:
    """Write a version aside, then rename it in: a scan never sees half a folder."""
    staging = om.write(base / ".staging", version, blob)
    if records:
        write_warmup(staging, records)
    target = base / str(version)
    os.rename(staging, target)
    return target


def statuses(server: Any, name: str) -> dict[int, tuple[str, str]]:
    return {s.version: (s.state.name, s.error_message) for s in server.server.manager.status(name)}


def test_server_serves_a_version_only_after_its_warm_up(tmp_path: Path) -> None:
    stage(tmp_path, 1, om.version_marker(1), [predict_record({"x": X})])
    with running_server(f"--model_base_path={tmp_path}", "--model_name=m", "--max_num_load_retries=0") as server:
        manager = server.server.manager
        stage(tmp_path, 2, om.version_marker(2), [predict_record({"x": X.astype(np.float64)})])
        manager.poll()
        manager.wait_until_settled(["m"])
        server.settle()  # a change the poll made: every front-end process has it
        state, error = statuses(server, "m")[2]
        assert state == "END" and "Expects arg[0] to be float but double is provided" in error
        [status] = server.server.manager.status("m", 2)
        assert status.error_code == Code.INVALID_ARGUMENT
        body = urllib.request.urlopen(
            urllib.request.Request(f"{server.rest_url}/v1/models/m:predict", data=b'{"instances": [0.0]}'),
            timeout=10,
        ).read()
        assert body.replace(b" ", b"").replace(b"\n", b"") == b'{"predictions":[1.0]}'  # version 1 still serves


def test_enable_model_warmup_false_skips_the_file(tmp_path: Path) -> None:
    stage(tmp_path, 1, om.version_marker(1), [b"not a prediction log"])
    with running_server(f"--model_base_path={tmp_path}", "--model_name=m", "--enable_model_warmup=false") as server:
        assert statuses(server, "m") == {1: ("AVAILABLE", "")}
