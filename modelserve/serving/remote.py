"""``RemoteCore``: the core as a front-end process sees it, over the hand-off to the engine.

It has ``ServingCore``'s methods (``serving.contract.Core``), so the api/ front ends run on
it unchanged. Requests go to the engine (``serving.engine``), which resolves the version,
holds the lease, validates, batches and runs, once for every front end; their tensors
cross in shared memory (``execution.handoff.arena``), never pickled.

What a front end must answer without waiting (status, metadata, readiness, the repository
index, the health and dashboard pages) it reads from the engine's state, pushed whenever it
changes (``serving.handoff.EngineState``), at most ``engine.STATE_SECONDS`` late.

TF Serving's REST API decodes a JSON body by the input dtypes of the version it resolves:
the front end decodes by the signatures of the version it resolves in that state and sends
those dtypes; if the engine resolves a version whose inputs differ (a swap in between), it
answers RETRY with that version's signatures and the body is decoded again, at most twice.

A request cancelled here (its client went away) is cancelled in the engine; its deadline
crosses as seconds remaining; errors cross as (class, code, message) and are raised as the
same ``ServingError`` classes; the engine's trace times come back with each answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from ..budget import MemoryBudget, arrays_bytes
from ..errors import Code, InvalidArgument, ServingError, Unavailable, error_for
from ..execution.handoff.arena import Arena, Block, Mapped, TensorRef
from ..execution.handoff.wire import Connection
from ..execution.request_options import DEFAULT
from ..lifecycle.config import ModelConfig
from ..lifecycle.versions import VersionReport
from ..observe.metrics import Scrape
from ..observe.trace import UNTRACED, RequestTrace
from ..signatures import DEFAULT_SIGNATURE, Signature
from .core import input_dtypes, repository_entries
from .handoff import (
    INLINE_BYTES,
    SCRAPE_ANSWER_SECONDS,
    Answer,
    ExamplesAnswer,
    ExamplesCall,
    Failure,
    PredictCall,
    Retry,
    StateView,
    Times,
    from_wire,
    to_wire,
)
from .request import (
    ExamplesRequest,
    ExamplesResponse,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ModelSpec,
    RepositoryEntry,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
RELEASE_SECONDS = 0.002  # how long an output block's release may wait for a request to carry it
DECODES = 3  # a TF REST body is decoded at most this often (the first, then after each RETRY)


def _error_classes() -> dict[str, type[ServingError]]:
    found: dict[str, type[ServingError]] = {}
    todo: list[type[ServingError]] = [ServingError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo += cls.__subclasses__()
    return found


def raise_failure(failure: Failure) -> ServingError:
    """The engine's error as the same class here (its own constructor is not called: only the text crosses)."""
    cls = _ERRORS.get(failure.kind)
    if cls is None:
        return error_for(Code(failure.code), failure.message)
    exc = cls.__new__(cls)
    Exception.__init__(exc, failure.message)
    return exc


class _RetryAnswer(Exception):
    def __init__(self, signatures: Mapping[str, Signature]) -> None:
        self.signatures = signatures


class RemoteCore:
    """The ``Core`` of a front-end process. Its coroutines run on the loop ``connect`` ran on; called from
    a thread with no loop (the threaded gRPC server), they are handed to that loop and waited for."""

    def __init__(self, budget: MemoryBudget, input_limit: int) -> None:
        self.manager = StateView()
        self.budget = budget
        # This process's own metrics figures now (``frontends.FrontEnds.figures``), which the engine asks for.
        self.figures: Callable[[], Scrape] = Scrape
        self._inputs = Arena("in", input_limit)
        self._outputs = Mapped()
        self._pending: dict[int, asyncio.Future[tuple[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._released: list[Block] = []
        self._lock = threading.Lock()
        self._draining = False
        self._conn: Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._state_seen = asyncio.Event()
        # What this process does once it knows the engine drains (its gRPC health turns NOT_SERVING),
        # before it tells the engine it has the state.
        self.on_drain: Callable[[], Awaitable[None]] | None = None
        self._acks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()

    async def connect(self, sock: socket.socket) -> None:
        """Serve the engine's socket on the running loop; returns once the engine's first state is in."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._conn = Connection(sock, self._message, self._lost)
        await self._state_seen.wait()

    # ---- what the front ends read: the pushed state -----------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining or self.manager.state.draining

    def drain(self) -> None:
        """This front end is shutting down: not ready from now on (the engine's drain is seen by all)."""
        self._draining = True

    def status(self, name: str, version: int | None = None, trace: RequestTrace = UNTRACED) -> list[VersionReport]:
        rows = self.manager.status(name, version)
        trace.model = name
        return rows

    def metadata(self, model: ModelSpec, trace: RequestTrace = UNTRACED) -> ModelMetadata:
        if not model.name:
            raise InvalidArgument("ModelSpec has no name specified.")
        version = self.manager.resolve(model)
        state = self.manager.state.models[model.name]
        trace.model, trace.version = model.name, version
        signatures = state.signatures.get(version, {})
        return ModelMetadata(model.name, version, signatures, state.platforms.get(version, ""), state.available)

    def ready(self, name: str | None = None, version: int | None = None) -> bool:
        """As ``ServingCore.ready``."""
        manager = self.manager
        if self.draining:
            return False
        if name is None:
            return all(manager.available_versions(n) for n in manager.model_names() if not manager.unloaded(n))
        versions = manager.available_versions(name)
        return bool(versions) if version is None else version in versions

    def repository_index(self, ready_only: bool = False) -> list[RepositoryEntry]:
        """As ``ServingCore.repository_index``."""
        return repository_entries(self.manager, ready_only)

    async def scrape(self, own: Scrape) -> Scrape:
        """The whole server's metrics figures of this moment, from the engine (``own``: this process's);
        Unavailable if the engine does not answer in time."""
        try:
            _, whole = await asyncio.wait_for(self._ask("scrape", own, UNTRACED), SCRAPE_ANSWER_SECONDS)
        except asyncio.TimeoutError:
            raise Unavailable(
                f"The engine did not answer a metrics scrape within {SCRAPE_ANSWER_SECONDS:g} s"
            ) from None
        assert isinstance(whole, Scrape)
        return whole

    # ---- requests ------------------------------------------------------------------------------

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        if asyncio._get_running_loop() is None:
            return self._from_thread(self.predict(request))
        trace = request.trace
        given = request.inputs
        name = request.signature_name or DEFAULT_SIGNATURE
        if not callable(given):
            answer = await self._predict(request, given, None, False)
        else:
            signatures = self.manager.signatures(request.model)
            for attempt in range(DECODES):
                signature = None if signatures is None else signatures.get(name)
                # Nothing to decode by here: ask the engine. Its signatures (after a RETRY) are decoded by
                # even without this one, so that the decoder says what TF Serving says.
                if signatures is None or (signature is None and attempt == 0):
                    inputs: Mapping[str, np.ndarray] = {}
                    probe = True
                else:
                    decoded = given(signatures)
                    inputs = await decoded if isinstance(decoded, asyncio.Future) else decoded
                    trace.decoded = time.monotonic()
                    probe = False
                try:
                    answer = await self._predict(
                        request, inputs, None if signature is None else input_dtypes(signature), probe
                    )
                    break
                except _RetryAnswer as retry:
                    if attempt == DECODES - 1:
                        raise Unavailable(
                            "The model's versions changed while the request was decoded; retry it"
                        ) from None
                    signatures = retry.signatures
        outputs = self._outputs.read(answer.block, answer.refs, self._release, answer.inline)
        request.account.charge(arrays_bytes(outputs.values()), f"hold the outputs of model '{request.model.name}'")
        return InferenceResponse(request.model.name, answer.version, answer.signature_name, outputs)

    async def _predict(
        self, request: InferenceRequest, inputs: Mapping[str, np.ndarray], dtypes: Any, probe: bool
    ) -> Answer:
        block, refs, inline = self._write(inputs)
        call = PredictCall(
            _spec(request.model),
            block,
            refs,
            request.signature_name,
            tuple(request.output_filter),
            _remaining(request.deadline),
            None if request.options is DEFAULT else request.options,
            dtypes,
            probe,
            request.trace.protocol,
            inline,
        )
        kind, payload = await self._ask("predict", call, request.trace)
        if kind == "retry":
            assert isinstance(payload, Retry)
            raise _RetryAnswer(payload.signatures)
        assert isinstance(payload, Answer)
        return payload

    async def classify(self, request: ExamplesRequest) -> ExamplesResponse:
        return await self._examples(request, "classify")

    async def regress(self, request: ExamplesRequest) -> ExamplesResponse:
        return await self._examples(request, "regress")

    async def multi_inference(self, request: ExamplesRequest) -> ExamplesResponse:
        return await self._examples(request, "multi_inference")

    async def _examples(self, request: ExamplesRequest, kind: str) -> ExamplesResponse:
        if asyncio._get_running_loop() is None:
            return self._from_thread(self._examples(request, kind))
        examples = np.empty(len(request.examples), dtype=object)
        examples[:] = list(request.examples)
        block, refs, inline = self._write({"examples": examples})
        call = ExamplesCall(
            kind,
            _spec(request.model),
            block,
            refs["examples"],
            request.signature_name,
            tuple(request.tasks),
            _remaining(request.deadline),
            None if request.options is DEFAULT else request.options,
            inline,
        )
        _, answer = await self._ask("examples", call, request.trace)
        assert isinstance(answer, ExamplesAnswer)
        return ExamplesResponse(request.model.name, answer.version, answer.results)

    # ---- model management: done by the engine, for every front end ------------------------------

    async def load_model(self, name: str) -> None:
        await self._call("load_model", name)

    async def unload_model(self, name: str) -> None:
        await self._call("unload_model", name)

    async def reload_config(self, models: Sequence[ModelConfig]) -> None:
        await self._call("reload_config", list(models))

    async def reload_config_file(self) -> None:
        """The dashboard's reload button: the engine reads --model_config_file again and applies it."""
        await self._call("reload_file")

    def reload_and_wait(self, models: Sequence[ModelConfig], timeout: float | None = None) -> None:
        """A thread's ``reload_config`` (with no loop of its own)."""
        self._from_thread(self.reload_config(models))

    async def _call(self, method: str, *args: Any) -> None:
        if asyncio._get_running_loop() is None:
            self._from_thread(self._call(method, *args))
            return
        await self._ask("call", (method, *args), UNTRACED)

    # ---- the socket --------------------------------------------------------------------------------

    def _from_thread(self, work: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(work, self._loop)
        return future.result()

    def _write(self, arrays: Mapping[str, np.ndarray]) -> tuple[Block | None, dict[str, TensorRef], bytes | None]:
        written = self._inputs.write(arrays, INLINE_BYTES)
        for index, fd, size in self._inputs.take_new():
            self._send("seg", index, size, (fd,))
        return written

    def _send(self, kind: str, rid: int, payload: object, fds: tuple[int, ...] = ()) -> None:
        if self._conn is None or self._conn.closed:
            raise Unavailable("The server is shutting down (its engine is gone)")
        with self._lock:
            released, self._released = self._released, []
        self._conn.send((kind, rid, to_wire(payload), released), fds)

    async def _ask(self, kind: str, payload: object, trace: RequestTrace) -> tuple[str, Any]:
        assert self._loop is not None
        rid = next(self._ids)
        future: asyncio.Future[tuple[str, Any]] = self._loop.create_future()
        self._send(kind, rid, payload)
        self._pending[rid] = future
        try:
            answer_kind, answer = await future
        except asyncio.CancelledError:  # the client went away: so does the engine's work for it
            if self._pending.pop(rid, None) is not None:
                self._send("cancel", rid, None)
            raise
        times = getattr(answer, "times", None)
        if isinstance(times, Times):
            _fill(trace, times)
        if answer_kind == "err":
            raise raise_failure(answer)
        return answer_kind, answer

    def _message(self, message: Any, fds: list[int]) -> None:
        kind, rid, payload, released = message
        payload = from_wire(kind, payload)
        for block in released:
            dropped = self._inputs.free(block)
            if dropped is not None:
                self._send("drop", dropped, None)
        if kind in ("ok", "exok", "err", "retry", "done", "scraped"):
            future = self._pending.pop(rid, None)
            if future is not None and not future.done():
                future.set_result((kind, payload))
            elif kind == "ok":  # cancelled meanwhile: its outputs are not wanted
                self._outputs.read(payload.block, payload.refs, self._release, payload.inline)
        elif kind == "state":
            self.manager.state = payload
            self._state_seen.set()
            if rid:  # the engine waits until every front end has this state (a drain)
                task = asyncio.get_running_loop().create_task(self._seen(rid))
                self._acks.add(task)  # held until done (the loop keeps only a weak reference)
                task.add_done_callback(self._acks.discard)
        elif kind == "figures":  # the engine adds them to the others' for a scrape on another front end
            self._send("figures", rid, self.figures())
        elif kind == "seg":
            self._outputs.add(rid, fds[0], payload)
        elif kind == "drop":
            self._outputs.drop(rid)

    async def _seen(self, receipt: int) -> None:
        if self.manager.state.draining and self.on_drain is not None:
            await self.on_drain()
        self._send("seen", receipt, None)

    def _release(self, block: Block) -> None:
        """An output block's last view is gone (any thread): tell the engine, with the next frame."""
        with self._lock:
            first = not self._released
            self._released.append(block)
        if first and self._loop is not None and self._conn is not None and not self._conn.closed:
            # Under load the next request carries the release; a frame of its own only after a pause.
            if threading.get_ident() == self._thread:
                self._loop.call_later(RELEASE_SECONDS, self._flush_released)
            else:
                self._loop.call_soon_threadsafe(self._loop.call_later, RELEASE_SECONDS, self._flush_released)

    def _flush_released(self) -> None:
        if self._released and self._conn is not None and not self._conn.closed:
            self._send("rel", 0, None)

    def push_figures(self) -> None:
        """Send this process's metrics figures to the engine (the front-end process does, every second: a
        front end that dies counts with them)."""
        if self._conn is not None and not self._conn.closed:
            self._send("figures", 0, self.figures())

    def _lost(self) -> None:
        """The engine went away: every request waiting fails, and nothing more is sent."""
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_result(
                    ("err", Failure("Unavailable", int(Code.UNAVAILABLE), "The server's engine went away"))
                )
        self._inputs.close()
        self._outputs.close()
        self._state_seen.set()
        self.closed.set()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _spec(spec: ModelSpec) -> tuple[str, int | None, str | None]:
    return (spec.name, spec.version, spec.label)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _fill(trace: RequestTrace, times: Times) -> None:
    if trace is UNTRACED:
        return
    trace.model, trace.version, trace.signature, trace.rows = times.model, times.version, times.signature, times.rows
    trace.decoded = trace.decoded or times.decoded
    trace.queued, trace.run_start, trace.run_end, trace.batch_rows = (
        times.queued,
        times.run_start,
        times.run_end,
        times.batch_rows,
    )


_ERRORS = _error_classes()
__all__ = ["RemoteCore"]
