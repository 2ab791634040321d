"""The engine's side of the hand-off: every front-end process's requests, run on the real core.

With ``--frontend_processes`` of 2 or more the parent process is the engine: it holds the
models, the lifecycle and the batch queues, and serves each front end's socket here
(``Engine.attach``) with one task per request on its event loop, calling ``ServingCore``
exactly as an in-process front end does. So version resolution, leases, labels,
validation and batching happen once, here, for all front ends at once.

Inputs are read in place from the front end's arena (``execution.handoff.arena.Mapped``);
outputs are written to the output arena this engine keeps for that front end. A front
end that goes away (its socket closes: a crash, a SIGKILL) has its requests cancelled
and its arenas' descriptors closed at once (their memory goes with the last view of it).

The engine also pushes its state (``serving.handoff.EngineState``) to every front end
whenever it changes. ``publish`` pushes at once and waits until every front end has the state: a
drain, and a front end's management call, answered only then (whatever front end its client asks
next agrees).

A metrics scrape on any front end asks the engine (``scrape``), which asks every other front end for
its figures of that moment and adds them to its own (``observe.metrics.Scrape``): the page counts
every request any client saw answered. A front end that does not answer within ``SCRAPE_SECONDS``
counts with the last figures it sent (each also pushes them every second); one that went away
counts with its last figures for good, so no count ever goes backwards.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import numpy as np

from ..budget import UNMETERED
from ..errors import Internal, NotFound, ServingError
from ..execution.batching.params import BatchingParameters
from ..execution.handoff.arena import Arena, Block, Mapped
from ..execution.handoff.wire import Connection
from ..execution.request_options import DEFAULT
from ..observe.faults import FaultLog
from ..observe.metrics import Scrape, Snapshot
from ..observe.trace import RequestTrace
from ..platforms.servable import Named
from ..signatures import DEFAULT_SIGNATURE, Signature
from .core import ServingCore, input_dtypes
from .handoff import (
    INLINE_BYTES,
    SCRAPE_SECONDS,
    Answer,
    EngineState,
    ExamplesAnswer,
    ExamplesCall,
    Failure,
    ModelState,
    PredictCall,
    Retry,
    Times,
    from_wire,
    to_wire,
)
from .request import ExamplesRequest, InferenceRequest, ModelSpec

log = logging.getLogger(__name__)

STATE_SECONDS = 0.05  # how often the engine looks for a lifecycle change to push
# What a front end may ask of the core besides requests (model management; reload answers when done).
PUBLISH_SECONDS = 10.0  # how long a management call's answer waits for every front end to have its state
CALLS = frozenset({"load_model", "unload_model", "reload_config", "reload_file"})


class _Retry(Exception):
    def __init__(self, signatures: Mapping[str, Signature]) -> None:
        self.signatures = signatures


def times(trace: RequestTrace) -> Times:
    return Times(
        trace.model,
        trace.version,
        trace.signature,
        trace.rows,
        trace.decoded,
        trace.queued,
        trace.run_start,
        trace.run_end,
        trace.batch_rows,
    )


def failure(exc: ServingError, trace: RequestTrace) -> Failure:
    return Failure(type(exc).__name__, int(exc.code), str(exc), times(trace))


class Engine:
    """Serves front-end sockets on the running loop. ``output_limit``: each front end's output arena's bound;
    ``figures``: the engine's own metrics figures (batches, loads, batch queues, the budget), added to the
    front ends' at a scrape; ``batching``: the batching parameters the dashboards show; ``reload_file``: the
    dashboard's reload of --model_config_file."""

    def __init__(
        self,
        core: ServingCore,
        output_limit: int,
        figures: Callable[[], Scrape] = Scrape,
        batching: BatchingParameters | None = None,
        reload_file: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.core = core
        self.batching = batching
        self.reload_file = reload_file
        self.output_limit = output_limit
        self._figures = figures
        self._departed = Snapshot()  # the last figures of the front ends that went away
        self.links: set[Link] = set()
        self._state = EngineState()
        self._signatures: dict[tuple[str, int], tuple[Mapping[str, Signature], str]] = {}
        self._pusher: asyncio.Task[None] | None = None
        self._pushes = 0  # the number of the last state push whose receipt is awaited
        self._seen = asyncio.Event()  # set when a front end says "seen" or goes away
        # A bug's traceback, at most PER_MINUTE a minute per protocol (as each front end's), so that a
        # client that triggers one cannot flood the log.
        self.faults = FaultLog(log)
        self.cancelled = 0  # requests a front end cancelled while they ran here (their clients went away)

    def attach(self, sock: socket.socket) -> Link:
        """Serve one front end's end of the socket pair (on the loop)."""
        if self._pusher is None:
            self._state = self.state()
            self._pusher = asyncio.get_running_loop().create_task(self._push())
        link = Link(self, sock)
        self.links.add(link)
        link.send("state", 0, self._state)
        return link

    def inflight(self) -> int:
        """Requests running for all front ends."""
        return sum(len(link.tasks) for link in self.links)

    async def scrape(self, asker: Link | None = None) -> Scrape:
        """The whole server's figures now: every front end's (but ``asker``'s, which came with its question)
        asked for now, the engine's own, and the last ones of front ends gone."""
        asks = [asyncio.ensure_future(link.fresh_figures()) for link in list(self.links) if link is not asker]
        if asks:
            _, late = await asyncio.wait(asks, timeout=SCRAPE_SECONDS)
            for ask in late:  # that front end counts with the figures it sent last
                ask.cancel()
        whole = self._figures()
        whole.snapshot.merge(self._departed)
        for link in self.links:
            if link.figures is not None:
                whole.add(link.figures)
        return whole

    def departed(self, link: Link) -> None:
        """``link``'s front end went away: its counts stay in the totals (its last figures)."""
        if link.figures is not None:
            self._departed.merge(link.figures.snapshot)
        self.links.discard(link)

    def push_state(self, receipt: int = 0) -> None:
        """Send the state to every front end if it changed (``receipt``: always, each to answer "seen")."""
        state = self.state()
        if state != self._state or receipt:
            self._state = state
            for link in list(self.links):
                link.send("state", receipt, state)

    async def publish(self, timeout: float, what: str) -> bool:
        """Push the state now and wait (at most ``timeout`` seconds) until every front end has it; False
        (and a warning naming ``what`` changed) if one did not say so in time."""
        self._pushes += 1
        receipt = self._pushes
        self.push_state(receipt)

        async def seen_by_all() -> None:
            while not all(link.seen >= receipt for link in list(self.links)):
                self._seen.clear()
                await self._seen.wait()

        try:
            await asyncio.wait_for(seen_by_all(), timeout)
        except asyncio.TimeoutError:
            log.warning("A front-end process did not take the state of %s within %g s", what, timeout)
            return False
        return True

    def acknowledged(self) -> None:
        """A front end said "seen" or went away: a ``publish`` looks again."""
        self._seen.set()

    async def _push(self) -> None:
        while True:
            await asyncio.sleep(STATE_SECONDS)
            self.push_state()

    def state(self) -> EngineState:
        """The lifecycle now, with each AVAILABLE version's signatures (a loaded version's never change)."""
        manager = self.core.manager
        configs = manager.aspired.configs()
        models: dict[str, ModelState] = {}
        # A model the config no longer names keeps its status history (TF Serving never forgets): it was in
        # the last state pushed, and stays, with no config, while it has versions to report.
        for name in sorted({*manager.model_names(), *self._state.models}):
            try:
                rows = tuple(manager.status(name))
            except NotFound:
                rows = ()
            if name not in configs and not rows:
                continue
            available = manager.available_versions(name)
            signatures: dict[int, Mapping[str, Signature]] = {}
            platforms: dict[int, str] = {}
            for version in available:
                found = self._version_signatures(name, version)
                if found is not None:
                    signatures[version], platforms[version] = found
            models[name] = ModelState(
                configs.get(name),
                rows,
                available,
                manager.labels(name),
                manager.unloaded(name),
                manager.settled(name),
                signatures,
                platforms,
            )
        return EngineState(models, self.core.draining, self.batching)

    def _version_signatures(self, name: str, version: int) -> tuple[Mapping[str, Signature], str] | None:
        found = self._signatures.get((name, version))
        if found is None:
            try:
                with self.core.manager.lease(name, version) as lease:
                    servable = lease.servable
                    found = (servable.signatures, servable.platform if isinstance(servable, Named) else "")
            except ServingError:  # unloading already
                return None
            self._signatures[(name, version)] = found
        return found

    def close(self) -> None:
        if self._pusher is not None:
            self._pusher.cancel()
        for link in list(self.links):
            link.close()


class Link:
    """One front end: its socket, its input arena (mapped), its output arena, its requests."""

    def __init__(self, engine: Engine, sock: socket.socket) -> None:
        self._engine = engine
        self._core = engine.core
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self.inputs = Mapped()
        self.outputs = Arena("out", engine.output_limit)
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.figures: Scrape | None = None  # this front end's metrics figures, as it sent them last
        self._asks: dict[int, asyncio.Future[None]] = {}  # the engine's questions for fresh figures
        self._ask_ids = 0
        self.seen = 0  # the last state push this front end said it has
        self._released: list[Block] = []
        self._lock = threading.Lock()
        self.conn = Connection(sock, self._message, self._closed)

    # ---- sending: every frame carries the input blocks released since the last one ----------------

    def send(self, kind: str, rid: int, payload: object, fds: tuple[int, ...] = ()) -> None:
        with self._lock:
            released, self._released = self._released, []
        self.conn.send((kind, rid, to_wire(payload), released), fds)

    def _release(self, block: Block) -> None:
        """An input block's last view is gone (any thread): tell the front end, with the next frame."""
        with self._lock:
            first = not self._released
            self._released.append(block)
        if first and not self.conn.closed:
            if threading.get_ident() == self._thread:
                self._loop.call_soon(self._flush_released)
            else:
                self._loop.call_soon_threadsafe(self._flush_released)

    def _flush_released(self) -> None:
        if self._released:
            self.send("rel", 0, None)

    def _announce(self) -> None:
        for index, fd, size in self.outputs.take_new():
            self.send("seg", index, size, (fd,))

    # ---- receiving -------------------------------------------------------------------------------

    def _message(self, message: Any, fds: list[int]) -> None:
        kind, rid, payload, released = message
        payload = from_wire(kind, payload)
        for block in released:
            self._free(block)
        if kind == "predict":
            self._spawn(rid, self._predict(rid, payload))
        elif kind == "examples":
            self._spawn(rid, self._examples(rid, payload))
        elif kind == "cancel":
            task = self.tasks.pop(rid, None)
            if task is not None:
                task.cancel()
                self._engine.cancelled += 1
        elif kind == "seg":
            self.inputs.add(rid, fds[0], payload)
        elif kind == "drop":
            self.inputs.drop(rid)
        elif kind == "call":
            self._spawn(rid, self._call(rid, *payload))
        elif kind == "figures":  # pushed (rid 0) or the answer to ``fresh_figures``
            self.figures = payload
            asked = self._asks.pop(rid, None)
            if asked is not None and not asked.done():
                asked.set_result(None)
        elif kind == "scrape":
            self.figures = payload  # the asker's own, of this moment
            self._spawn(rid, self._scrape(rid))
        elif kind == "seen":
            self.seen = rid
            self._engine.acknowledged()

    async def fresh_figures(self) -> None:
        """Ask this front end for its figures of this moment; returns once they are in (``figures``)."""
        self._ask_ids += 1
        rid = self._ask_ids
        asked = self._asks[rid] = self._loop.create_future()
        self.send("figures", rid, None)
        try:
            await asked
        finally:
            self._asks.pop(rid, None)

    async def _scrape(self, rid: int) -> None:
        self._answer("scraped", rid, await self._engine.scrape(self))

    def _free(self, block: Block) -> None:
        dropped = self.outputs.free(block)
        if dropped is not None:
            self.send("drop", dropped, None)

    def _spawn(self, rid: int, work: Coroutine[Any, Any, None]) -> None:
        # A task leaves ``tasks`` as it sends its answer (``_answer``), not through a done callback: that
        # would be one more loop callback per request. One that ends without an answer was cancelled (the
        # "cancel" message pops it) or its front end is gone (every task goes with the link).
        self.tasks[rid] = self._loop.create_task(work)

    def _answer(self, kind: str, rid: int, payload: object) -> None:
        self.tasks.pop(rid, None)
        self.send(kind, rid, payload)

    async def _predict(self, rid: int, call: PredictCall) -> None:
        trace = RequestTrace(call.protocol, "predict")
        try:
            inputs = self.inputs.read(call.block, call.refs, self._release, call.inline)
            given: Any = inputs if call.dtypes is None and not call.probe else functools.partial(_checked, call, inputs)
            del inputs
            deadline = None if call.remaining is None else time.monotonic() + call.remaining
            request = InferenceRequest(
                ModelSpec(*call.model),
                given,
                call.signature_name,
                call.output_filter,
                deadline,
                call.options or DEFAULT,
                UNMETERED,
                trace,
            )
            del given
            response = await self._core.predict(request)
            del request  # the inputs' views go: their block is released with this answer
            if self.conn.closed:
                return
            block, refs, inline = self.outputs.write(response.outputs, INLINE_BYTES)
        except _Retry as retry:
            self._answer("retry", rid, Retry(retry.signatures, times(trace)))
            return
        except ServingError as exc:
            self._answer("err", rid, failure(exc, trace))
            return
        except Exception as exc:  # a bug: logged (rate-limited); the client reads no Python text
            error = self._engine.faults.answer(call.protocol or "hand-off", exc, "hand-off: predict failed")
            self._answer("err", rid, failure(error, trace))
            return
        self._announce()
        self._answer("ok", rid, Answer(response.version, response.signature_name, block, refs, inline, times(trace)))

    async def _examples(self, rid: int, call: ExamplesCall) -> None:
        trace = RequestTrace("", call.kind)
        try:
            examples = self.inputs.read(call.block, {"examples": call.examples}, self._release, call.inline)["examples"]
            request = ExamplesRequest(
                ModelSpec(*call.model),
                list(examples.flat),
                call.signature_name,
                call.tasks,
                None if call.remaining is None else time.monotonic() + call.remaining,
                call.options or DEFAULT,
                UNMETERED,
                trace,
            )
            del examples
            run = getattr(self._core, call.kind)
            response = await run(request)
        except ServingError as exc:
            self._answer("err", rid, failure(exc, trace))
            return
        except Exception as exc:
            error = self._engine.faults.answer(call.kind, exc, "hand-off: %s failed", call.kind)
            self._answer("err", rid, failure(error, trace))
            return
        self._answer("exok", rid, ExamplesAnswer(response.version, list(response.results), times(trace)))

    async def _call(self, rid: int, method: str, *args: Any) -> None:
        try:
            if method not in CALLS:
                raise Internal(f"no such engine call: {method}")
            if method == "reload_file":
                if self._engine.reload_file is None:
                    raise Internal("the engine has no --model_config_file to reload")
                await self._engine.reload_file()
            else:
                await getattr(self._core, method)(*args)
        except ServingError as exc:
            self._answer("err", rid, failure(exc, RequestTrace("")))
            return
        except Exception as exc:  # a bug: answered all the same, or the front end's caller would wait forever
            error = self._engine.faults.answer("hand-off", exc, "hand-off: %s failed", method)
            self._answer("err", rid, failure(error, RequestTrace("")))
            return
        # Before "done": the caller answers its client with the new state, and whatever front end that client
        # (or another it tells) asks next has it too.
        await self._engine.publish(PUBLISH_SECONDS, f"a {method}")
        self._answer("done", rid, None)

    def _closed(self) -> None:
        """The front end went away: cancel its requests, close its arenas' descriptors."""
        for task in list(self.tasks.values()):
            task.cancel()
        for asked in self._asks.values():  # a scrape waits for it no more
            if not asked.done():
                asked.set_result(None)
        self.inputs.close()
        self.outputs.close()
        self._engine.departed(self)
        self._engine.acknowledged()  # a publish waits for it no more

    def close(self) -> None:
        self.conn.close()


def _checked(call: PredictCall, inputs: dict[str, np.ndarray], signatures: Mapping[str, Signature]) -> Any:
    """The TF REST decode check, under the request's lease: the inputs were decoded by the dtypes of the
    version the engine resolved, else RETRY with its signatures."""
    signature = signatures.get(call.signature_name or DEFAULT_SIGNATURE)
    if call.probe or (signature is not None and input_dtypes(signature) != call.dtypes):
        raise _Retry(signatures)
    return inputs


__all__ = ["Engine", "Link"]
