"""Model warm-up: replay ``assets.extra/tf_serving_warmup_requests`` before a version serves.

TF Serving's ``saved_model_warmup`` for every platform: the file is a TFRecord
of ``PredictionLog`` messages; each record's request runs against the version
being loaded (its ``model_spec`` is ignored), ``num_request_iterations`` times,
through the same runner and with the same validation as a real request: the
core's own coroutines, run inline on the loader thread (``run_inline``). Any
failure fails the load (which is then retried like any failed load), so a
version is AVAILABLE only after its warm-up succeeded. Errors and log lines
are TF Serving's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError, Message

from ..codecs.tensor_proto import to_ndarrays
from ..codecs.tfrecord import read_records
from ..errors import DataLoss, InvalidArgument, Unimplemented
from ..execution.runner import Runner, run_inline
from ..platforms.servable import Servable
from ..protos import pb
from ..signatures import DEFAULT_SIGNATURE
from . import example_tasks
from .core import run_checked, run_plans

log = logging.getLogger(__name__)

REQUESTS_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000


class ReplayWarmup:
    """Replays the warm-up file of each version; ``iterations`` times per record (0 means once).

    A ``manager.Warmup``; ``manager.no_warmup`` is ``--enable_model_warmup=false``.
    """

    def __init__(self, iterations: int = 0) -> None:
        self._iterations = max(1, iterations)
        self._options = f"num_request_iterations {{ value: {iterations} }}" if iterations > 0 else ""

    def __call__(self, version_dir: Path, servable: Servable, runner: Runner) -> None:
        path = version_dir / REQUESTS_FILE
        if not path.is_file():
            log.info("No warmup data file found at %s", path)
            return
        log.info("Starting to read warmup data for model at %s with model-warmup-options %s", path, self._options)
        start = time.monotonic()
        count = self._replay(path, servable, runner)
        micros = int((time.monotonic() - start) * 1e6)
        log.info(
            "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
            "Elapsed time (microseconds): %d.",
            path,
            count,
            micros,
        )

    def _replay(self, path: Path, servable: Servable, runner: Runner) -> int:
        count = 0
        try:
            with path.open("rb") as stream:
                for record in read_records(stream):
                    entry = _parse(record, path)
                    for _ in range(self._iterations):
                        run_record(entry, servable, runner)
                    count += 1
                    if count > MAX_RECORDS:
                        raise InvalidArgument(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
        except DataLoss as exc:
            raise DataLoss(f"{exc.message}. Please verify your warmup data is in TFRecord format.") from None
        return count


def _parse(record: bytes, path: Path) -> Message:
    entry = pb.PredictionLog()
    try:
        entry.ParseFromString(record)
    except DecodeError:
        raise InvalidArgument(f"Failed to parse warmup record: {record!r} from {path}") from None
    return entry


def run_record(entry: Any, servable: Servable, runner: Runner) -> None:
    """Run one PredictionLog's request; a record with no request kind set is skipped, as TF."""
    kind = entry.WhichOneof("log_type")
    if kind is None:
        return
    handler = _HANDLERS.get(kind)
    if handler is None:
        number = pb.PredictionLog.DESCRIPTOR.fields_by_name[kind].number
        raise Unimplemented(f"Unsupported log_type for warmup: {number}")
    handler(getattr(entry, kind).request, servable, runner)


def _predict(request: Any, servable: Servable, runner: Runner) -> None:
    name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    inputs = to_ndarrays(request.inputs)
    run_inline(run_checked(servable.signatures, runner, name, inputs, list(request.output_filter)))


def _run_plans(plans: list[example_tasks.Plan], runner: Runner) -> None:
    run_inline(run_plans(runner, plans))


def _classify(request: Any, servable: Servable, runner: Runner) -> None:
    _one_task("classify", request, servable, runner)


def _regress(request: Any, servable: Servable, runner: Runner) -> None:
    _one_task("regress", request, servable, runner)


def _one_task(kind: example_tasks.Kind, request: Any, servable: Servable, runner: Runner) -> None:
    found = example_tasks.from_input(request.input)
    _run_plans([example_tasks.plan(kind, servable.signatures, request.model_spec.signature_name, found)], runner)


def _multi_inference(request: Any, servable: Servable, runner: Runner) -> None:
    tasks = list(request.tasks)
    # TF runs the request as it is: its task checks apply, model names included.
    example_tasks.check_multi_inference(
        [(t.model_spec.name, t.model_spec.signature_name, t.method_name) for t in tasks]
    )
    plans = example_tasks.multi_plans(
        servable.signatures,
        [(t.model_spec.signature_name, t.method_name) for t in tasks],
        example_tasks.from_input(request.input),
    )
    _run_plans(plans, runner)


_HANDLERS: dict[str, Callable[[Any, Servable, Runner], None]] = {
    "predict_log": _predict,
    "classify_log": _classify,
    "regress_log": _regress,
    "multi_inference_log": _multi_inference,
}
