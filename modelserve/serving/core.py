"""The protocol-neutral core every front end calls: lookup, validation, inference.

Front ends decode their wire format into a request (``serving.request``), call
one method here and encode its answer, mapping ``ServingError`` codes to their
own status codes; everything else a request needs lives here, once: the
version or label is resolved, a lease held while the request runs, the request
validated against that version's signatures and handed to its runner.

There is one execution path, awaited. On the event loop (REST, and gRPC on
``grpc.aio`` with batching) the runner hands the model call to a worker thread
or a batch queue; a caller on a thread of its own with no loop running there
(the threaded gRPC server's handlers, warm-up on a loader thread) drives the
same coroutines with ``execution.runner.run_inline``, and the runner then runs
the model, or waits for its batch, in place (docs/grpc.md "Server model").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

import numpy as np

from ..budget import UNMETERED, Account, MemoryBudget, arrays_bytes
from ..dtypes import DType, from_numpy, tf_name
from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..execution.request_options import DEFAULT, RequestOptions
from ..execution.runner import Runner
from ..lifecycle.config import ModelConfig
from ..lifecycle.manager import Lease, ModelManager, VersionReport
from ..lifecycle.policy import State
from ..observe.trace import UNTRACED, RequestTrace
from ..platforms.servable import Named
from ..signatures import DEFAULT_SIGNATURE, Signature, TensorSpec
from . import example_tasks
from .contract import Models
from .request import (
    ExamplesRequest,
    ExamplesResponse,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ModelSpec,
    RepositoryEntry,
    RepositoryState,
)


class ServingCore:
    """Shared by all front ends. Thread-safe; its coroutines are awaited on the event loop or run
    inline on a thread with no loop (``run_inline``).

    ``budget``: the memory budget front ends open each request's account on (unlimited: none).
    The core charges what the model returns and what example tasks hold; decoding charges the
    inputs as it goes.
    """

    def __init__(self, manager: ModelManager, budget: MemoryBudget | None = None) -> None:
        self.manager = manager
        self.budget = budget or MemoryBudget.unlimited()
        # Set once a drain starts (``drain``): every readiness answer is False from then on, while
        # requests are still served, so load balancers stop sending before connections close.
        self.draining = False

    def drain(self) -> None:
        """The server is shutting down: report not ready from now on (requests are still served)."""
        self.draining = True

    def status(self, name: str, version: int | None = None, trace: RequestTrace = UNTRACED) -> list[VersionReport]:
        rows = self.manager.status(name, version)
        trace.model = name  # it has versions: a configured model (a bounded label)
        return rows

    def metadata(self, model: ModelSpec, trace: RequestTrace = UNTRACED) -> ModelMetadata:
        with self._lease(model, trace) as lease:
            servable = lease.servable
            platform = servable.platform if isinstance(servable, Named) else ""
            versions = self.manager.available_versions(model.name)
            return ModelMetadata(model.name, lease.version, servable.signatures, platform, versions)

    def ready(self, name: str | None = None, version: int | None = None) -> bool:
        """No name: every configured model has an AVAILABLE version (the V2 server's readiness), a
        model unloaded through the repository API (``unload_model``) aside: it was asked for, and
        Triton stays ready then. A name: that model has one (or ``version`` is AVAILABLE); False for a
        model not configured, or unloaded. Always False once draining."""
        manager = self.manager
        if self.draining:
            return False
        if name is None:
            return all(manager.available_versions(n) for n in manager.model_names() if not manager.unloaded(n))
        versions = self.manager.available_versions(name)
        return bool(versions) if version is None else version in versions

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        """Decode (when the inputs wait for the version's signatures), validate with gRPC's rules and
        texts, run; the answer names the version that ran."""
        trace = request.trace
        with self._lease(request.model, trace) as lease:
            signatures = lease.servable.signatures
            given = request.inputs
            if callable(given):
                decoded = given(signatures)
                inputs = await decoded if isinstance(decoded, asyncio.Future) else decoded
            else:
                inputs = given
            trace.decoded = time.monotonic()
            trace.rows = _rows(inputs)
            name = request.signature_name or DEFAULT_SIGNATURE
            outputs = await run_checked(
                signatures, lease.runner, name, inputs, request.output_filter, request.deadline, request.options, trace
            )
            # A model may amplify: its outputs count against the request before anything encodes them.
            request.account.charge(arrays_bytes(outputs.values()), f"hold the outputs of model '{request.model.name}'")
            return InferenceResponse(request.model.name, lease.version, name, outputs)

    async def classify(self, request: ExamplesRequest) -> ExamplesResponse:
        return await self._examples(request, "classify")

    async def regress(self, request: ExamplesRequest) -> ExamplesResponse:
        return await self._examples(request, "regress")

    async def multi_inference(self, request: ExamplesRequest) -> ExamplesResponse:
        """TF's MultiInference: its task checks come before the model is looked up."""
        example_tasks.check_multi_inference(request.tasks)
        return await self._examples(request, None)

    async def _examples(self, request: ExamplesRequest, kind: example_tasks.Kind | None) -> ExamplesResponse:
        """Plan (``serving.example_tasks``) against the leased version's signatures, run, read the outputs."""
        trace = request.trace
        with self._lease(request.model, trace) as lease:
            signatures = lease.servable.signatures
            trace.decoded = time.monotonic()
            trace.rows = len(request.examples)
            if kind is None:
                tasks = [(signature, method) for _, signature, method in request.tasks]
                plans = example_tasks.multi_plans(signatures, tasks, request.examples)
            else:
                plans = [example_tasks.plan(kind, signatures, request.signature_name, request.examples)]
            results = await run_plans(lease.runner, plans, request.deadline, request.options, request.account, trace)
            return ExamplesResponse(request.model.name, lease.version, results)

    def _lease(self, model: ModelSpec, trace: RequestTrace = UNTRACED) -> Lease:
        if not model.name:
            raise InvalidArgument("ModelSpec has no name specified.")
        lease = self.manager.lease(model.name, model.version, model.label)
        trace.model, trace.version = model.name, lease.version  # names that exist: bounded labels
        return lease

    def reload_and_wait(self, models: Sequence[ModelConfig], timeout: float | None = None) -> None:
        """TF Serving's ReloadConfig (gRPC HandleReloadConfigRequest, --model_config_file polls).

        The whole config is replaced; waits until newly added models are
        AVAILABLE or failed; raises ServingError with TF's texts. Blocking:
        call it from a thread. Semantics in ``ModelManager.reload``.
        """
        self.manager.reload(models, timeout)

    async def reload_config(self, models: Sequence[ModelConfig]) -> None:
        """``reload_and_wait`` for a coroutine: the loads take seconds, so never on the event loop."""
        if asyncio._get_running_loop() is None:  # run inline: this thread is already off the loop
            self.reload_and_wait(models)
            return
        await asyncio.to_thread(self.reload_and_wait, models)

    # ---- the model repository (KServe V2's extension, as Triton has it) --------------------------

    def repository_index(self, ready_only: bool = False) -> list[RepositoryEntry]:
        """Every configured model's versions (every version seen, highest first, as ``status``), or one
        row for a model that has none; ``ready_only``: only READY rows."""
        return repository_entries(self.manager, ready_only)

    async def load_model(self, name: str) -> None:
        """Aspire ``name``'s configured versions again and wait until they loaded (``ModelManager.load_model``):
        NotFound for a name not in the config. The loads take seconds, so never on the event loop."""
        await _blocking(self.manager.load_model, name)

    async def unload_model(self, name: str) -> None:
        """Drain and unload every version of ``name``, other models undisturbed, until ``load_model``
        (``ModelManager.unload_model``); NotFound for a name not in the config."""
        await _blocking(self.manager.unload_model, name)


# A repository row's state and reason by version state (Triton's names; LOADING keeps a retry's error).
_REPOSITORY_STATES: dict[State, tuple[RepositoryState, str]] = {
    State.UNKNOWN: ("UNAVAILABLE", "unknown"),
    State.START: ("LOADING", ""),
    State.LOADING: ("LOADING", ""),
    State.AVAILABLE: ("READY", ""),
    State.UNLOADING: ("UNAVAILABLE", "unloading"),
    State.END: ("UNAVAILABLE", "unloaded"),
}


def repository_entries(manager: Models, ready_only: bool = False) -> list[RepositoryEntry]:
    """``repository_index`` from the lifecycle's read side (the manager, or a front end's view of it)."""
    entries = []
    for name in manager.model_names():
        try:
            rows = manager.status(name)
        except NotFound:  # no version seen yet, or none on disk
            rows = []
        if rows:
            entries += [_repository_entry(name, row) for row in rows]
        elif manager.unloaded(name):
            entries.append(RepositoryEntry(name, None, "UNAVAILABLE", "unloaded"))
        elif manager.settled(name):
            entries.append(RepositoryEntry(name, None, "UNAVAILABLE", "no version found under its base path"))
        else:
            entries.append(RepositoryEntry(name, None, "LOADING"))
    return [e for e in entries if e.state == "READY"] if ready_only else entries


def _repository_entry(name: str, row: VersionReport) -> RepositoryEntry:
    state, reason = _REPOSITORY_STATES[row.state]
    return RepositoryEntry(name, row.version, state, row.error_message or reason)


async def _blocking(fn: Callable[[str], None], name: str) -> None:
    """Blocking lifecycle work: inline on a thread with no loop (``run_inline``), else on a thread."""
    if asyncio._get_running_loop() is None:
        fn(name)
        return
    await asyncio.to_thread(fn, name)


def run_checked(
    signatures: Mapping[str, Signature],
    runner: Runner,
    signature_name: str,
    inputs: Mapping[str, np.ndarray],
    output_filter: Sequence[str] = (),
    deadline: float | None = None,
    options: RequestOptions = DEFAULT,
    trace: RequestTrace = UNTRACED,
) -> Awaitable[dict[str, np.ndarray]]:
    """A Predict request's every check (a bad one raises here), then the runner's awaitable outputs.

    Also how warm-up runs its Predict records, so they are checked and run as requests are.
    """
    check_predict(signatures, signature_name, inputs, output_filter)
    trace.signature = signature_name  # it exists: a bounded label
    trace.queued = time.monotonic()
    return runner.predict(signature_name, inputs, output_filter, deadline, options, trace)


async def run_plans(
    runner: Runner,
    plans: Sequence[example_tasks.Plan],
    deadline: float | None = None,
    options: RequestOptions = DEFAULT,
    account: Account = UNMETERED,
    trace: RequestTrace = UNTRACED,
) -> list[example_tasks.Result]:
    """Run classify/regress plans one after the other and read their outputs (charged to ``account``)."""
    results = []
    for plan in plans:
        trace.signature = plan.signature_name  # planned against the version's signatures: it exists
        trace.queued = time.monotonic()
        outputs = await runner.predict(plan.signature_name, plan.inputs, plan.output_filter, deadline, options, trace)
        account.charge(arrays_bytes(outputs.values()), f"hold the outputs of signature '{plan.signature_name}'")
        results.append(plan.interpret(outputs))
    return results


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    """A request's rows: its first input's leading dimension (1 for a scalar, 0 for no input)."""
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 0


def check_predict(
    signatures: Mapping[str, Signature],
    signature_name: str,
    inputs: Mapping[str, np.ndarray],
    output_filter: Collection[str],
) -> None:
    """Every check a Predict request passes before it runs, in TF Serving's order."""
    signature = find_signature(signatures, signature_name)
    check_inputs(signature, inputs)
    check_output_filter(signature, output_filter)


def find_signature(signatures: Mapping[str, Signature], signature_name: str) -> Signature:
    signature = signatures.get(signature_name)
    if signature is None:
        raise FailedPrecondition(f'Serving signature key "{signature_name}" not found.')
    return signature


def check_inputs(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    """TF Serving's input-set checks, then dtype checks against the signature.

    Shapes are not checked against the signature's declared dims: TF Serving
    feeds its session whatever shape it was sent and the graph's ops decide
    (a signature declaring x as [-1,1] still takes [3]); what the runtime
    refuses comes back from the platform as InvalidArgument in its own words.
    """
    if inputs.keys() != signature.inputs.keys():
        _check_input_names(signature, inputs)
    for index, (alias, array) in enumerate(sorted(inputs.items())):
        check_dtype(index, signature.inputs[alias], array)


def _check_input_names(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    expected = set(signature.inputs)
    sent = set(inputs)
    if not (sent < expected and expected - sent <= set(signature.defaults)):
        extra = sorted(sent - expected)
        missing = sorted(expected - sent)
        raise InvalidArgument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{_join(sorted(sent))}}}) != len({{{_join(sorted(expected))}}}). "
            f"Sent extra: {{{_join(extra)}}}. Missing but required: {{{_join(missing)}}}."
        )


def check_dtype(index: int, spec: TensorSpec, array: np.ndarray) -> None:
    got = from_numpy(array.dtype)
    if got != spec.dtype:
        raise InvalidArgument(f"Expects arg[{index}] to be {tf_name(spec.dtype)} but {tf_name(got)} is provided")


def check_output_filter(signature: Signature, output_filter: Collection[str]) -> None:
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{_join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise InvalidArgument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)


def input_dtypes(signature: Signature) -> dict[str, DType]:
    return {alias: spec.dtype for alias, spec in signature.inputs.items()}


def _join(names: Collection[str]) -> str:
    return ",".join(names)
