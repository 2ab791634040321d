"""The versions of each model: loads, unloads, the routing table, leases (TF Serving's BasicManager).

Versions carries out steps and never decides them: whoever reconciles
(``aspired.AspiredVersions``) hands it a model's whole aspired set
(``set_aspired``), reads a snapshot (``views``) and starts one step at a time
(``start``). Loads (``loading.VersionLoader``: copy, load, runner, warm-up,
retries) and unloads run on loader threads. Requests read an immutable routing
table (``leases.Routes``), replaced whole on every change, and hold a lease on
the version they use, so an unload waits for them.

Locking: one lock guards every version record and the routing table. It is
held for bookkeeping only, never across I/O, a load or a callback, and it is
the innermost lock of the lifecycle (reload → aspired → versions): under it
only ``Changes``' leaf lock is taken. When a load or unload ends, the
listeners run on the loader thread with no lock held; ``close`` waits for them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType

from ..errors import Code, InvalidArgument, NotFound, ServingError
from ..platforms.servable import InstanceStatus
from .config import ModelConfig
from .events import NO_EVENTS, LifecycleEvents
from .leases import Lease, LoadedVersion, Routes
from .loading import VersionLoader
from .policy import Action, State, VersionView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionReport:
    """One version's state as the server reports it (the client's ``VersionStatus`` is what it reads)."""

    version: int
    state: State
    error_code: Code = Code.OK
    error_message: str = ""
    instances: tuple[InstanceStatus, ...] = ()  # of a loaded version: devices, memory, calls


class Changes:
    """A count of lifecycle changes that waiters watch: ``bump`` after a change, ``wait_for`` a predicate.

    The predicate runs with no lock held, so it may read any part through that
    part's own lock. The counter's lock is a leaf: nothing is taken under it.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._count = 0

    def bump(self) -> None:
        with self._cv:
            self._count += 1
            self._cv.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` holds, re-checking after every change; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cv:
                seen = self._count
            if predicate():
                return True
            with self._cv:
                while self._count == seen:  # a change since ``seen`` means: check again
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cv.wait(remaining)


@dataclass
class _Version:
    version: int
    location: str  # folder path or URI
    state: State = State.START
    aspired: bool = True
    error: ServingError | None = None
    retry_error: ServingError | None = None  # the last failed attempt of a load still being retried
    loaded: LoadedVersion | None = None
    # Aspired again while it unloaded (its folder came back, a rollback): load it afresh once freed.
    reload: bool = False

    def report(self) -> VersionReport:
        error = self.error or (self.retry_error if self.state == State.LOADING else None)
        if error is not None:  # TF Serving's status { error_code error_message }, LOADING ones too
            return VersionReport(self.version, self.state, error.code, error.message)
        instances = self.loaded.instances() if self.loaded is not None else ()
        return VersionReport(self.version, self.state, instances=instances)


@dataclass
class _Model:
    config: ModelConfig
    versions: dict[int, _Version] = field(default_factory=dict)
    retired: bool = False  # out of the routing table; its versions unload, its history stays
    labels: dict[str, int] = field(default_factory=dict)  # in force: requests resolve these


class Versions:
    """Every model's versions. Thread-safe; requests call ``lease``. The constructor starts no thread."""

    def __init__(
        self,
        loader: VersionLoader,
        num_load_threads: int = 4,
        num_unload_threads: int = 1,
        events: LifecycleEvents = NO_EVENTS,
    ) -> None:
        self._loader = loader
        self._events = events
        self._lock = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._routes: Mapping[str, Routes] = MappingProxyType({})
        self._listeners: list[Callable[[str], None]] = []
        self._busy = 0  # loads and unloads in flight, listeners included
        self._load_pool = ThreadPoolExecutor(max(1, num_load_threads), "modelserve-load")
        self._unload_pool = ThreadPoolExecutor(max(1, num_unload_threads), "modelserve-unload")
        self.changes = Changes()

    # ---- requests -------------------------------------------------------------------------

    def lease(self, name: str, version: int | None = None, label: str | None = None) -> Lease:
        """A lease on the version a request asks for (latest available when it names none)."""
        while True:
            routes = self._routes.get(name)
            if label is not None:
                if routes is None or label not in routes.labels:
                    raise InvalidArgument(f"Unrecognized servable version label: {label}")
                version = routes.labels[label]
            if version is None:
                loaded = routes.latest if routes else None
                if loaded is None:
                    raise NotFound(f"Servable not found for request: Latest({name})")
            else:
                loaded = routes.available.get(version) if routes else None
                if loaded is None:
                    raise NotFound(f"Servable not found for request: Specific({name}, {version})")
            if loaded.acquire():
                return Lease(loaded)
            # It began to unload between lookup and acquire; the table has moved on.

    def labels(self, name: str) -> dict[str, int]:
        """The labels in force for ``name`` (empty for an unknown model)."""
        routes = self._routes.get(name)
        return dict(routes.labels) if routes else {}

    def available_versions(self, name: str) -> tuple[int, ...]:
        """The versions of ``name`` requests may use now, lowest first (empty for an unknown model)."""
        routes = self._routes.get(name)
        return tuple(sorted(routes.available)) if routes else ()

    def status(self, name: str, version: int | None = None) -> list[VersionReport]:
        """Every version ever seen of ``name``, highest first (TF Serving never forgets)."""
        with self._lock:
            model = self._models.get(name)
            if model is None or not model.versions:
                raise NotFound(f"Could not find any versions of model {name}")
            entries = sorted(model.versions.values(), key=lambda v: v.version, reverse=True)
            if version is not None:
                entries = [e for e in entries if e.version == version]
                if not entries:
                    raise NotFound(f"Could not find version {version} of model {name}")
            return [e.report() for e in entries]

    # ---- what reconciliation and reload read ------------------------------------------------

    def views(self, name: str) -> list[VersionView]:
        """A snapshot of ``name``'s versions for the policy (empty for an unknown model)."""
        with self._lock:
            model = self._models.get(name)
            entries = model.versions.values() if model else ()
            return [VersionView(e.version, e.state, e.aspired, failed=e.error is not None) for e in entries]

    def available(self, name: str, version: int) -> bool:
        with self._lock:
            model = self._models.get(name)
            entry = model.versions.get(version) if model else None
            return entry is not None and entry.state == State.AVAILABLE

    def loading(self, name: str) -> bool:
        """An aspired version of ``name`` has not finished loading yet."""
        with self._lock:
            model = self._models.get(name)
            entries = model.versions.values() if model else ()
            return any(e.aspired and e.state in (State.START, State.LOADING) for e in entries)

    def drained(self, name: str) -> bool:
        """No version of ``name`` is loading, available or unloading (an unknown model: True)."""
        with self._lock:
            model = self._models.get(name)
            entries = model.versions.values() if model else ()
            return all(e.state == State.END for e in entries)

    def failures(self, names: Iterable[str]) -> dict[str, list[VersionReport]]:
        """The aspired versions that failed to load, per named model this has seen."""
        with self._lock:
            found = {n: self._models[n] for n in names if n in self._models}
            return {n: [e.report() for e in m.versions.values() if e.error and e.aspired] for n, m in found.items()}

    # ---- what they change -------------------------------------------------------------------

    def configure(self, config: ModelConfig) -> None:
        """Serve ``config.name`` (again) with ``config``; loads from now on use it."""
        with self._lock:
            model = self._models.setdefault(config.name, _Model(config))
            model.config, model.retired = config, False
            self._publish()
        self.changes.bump()

    def retire(self, name: str) -> None:
        """Take ``name`` out of the routing table and un-aspire its versions; its history stays."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                return
            model.retired, model.labels = True, {}
            self._aspire(model, {})
            self._publish()
        self.changes.bump()

    def set_aspired(self, name: str, locations: Mapping[int, str]) -> None:
        """The whole aspired set of ``name`` (version → folder or URI): versions left out are un-aspired."""
        with self._lock:
            model = self._models.get(name)
            if model is not None and not model.retired:
                self._aspire(model, locations)
        self.changes.bump()

    def restart_failed(self, name: str) -> None:
        """Give ``name``'s aspired versions that failed to load a fresh start (the next step loads them)."""
        with self._lock:
            model = self._models.get(name)
            for entry in model.versions.values() if model else ():
                if entry.aspired and entry.state == State.END and entry.error is not None:
                    entry.state, entry.error = State.START, None
        self.changes.bump()

    def set_labels(self, labels: Mapping[str, Mapping[str, int]]) -> None:
        """Put these labels in force, per model, in one routing table."""
        with self._lock:
            for name, in_force in labels.items():
                if name in self._models:
                    self._models[name].labels = dict(in_force)
            self._publish()
        self.changes.bump()

    def start(self, name: str, action: Action) -> bool:
        """Begin ``action`` on a loader thread; False, with nothing done, when its version's state
        no longer allows it or ``close`` has begun."""
        with self._lock:
            model = self._models.get(name)
            entry = model.versions.get(action.version) if model else None
            if model is None or entry is None or self._loader.stopped:
                return False
            if action.kind == "load" and entry.state == State.START and entry.aspired:
                entry.state, entry.retry_error = State.LOADING, None
                self._submit(self._load_pool, self._load, model, entry)
            elif action.kind == "unload" and entry.state == State.AVAILABLE:
                self._begin_unload(model, entry)
            else:
                return False
        self.changes.bump()
        return True

    def listen(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(model name)`` after each load or unload ends (on its loader thread, no lock held)."""
        self._listeners.append(listener)

    def close(self) -> None:
        """Stop retrying, unload every version (each waits for its leases), stop the loader threads."""
        self._loader.stop()
        with self._lock:
            for model in self._models.values():
                model.retired = True
                self._aspire(model, {})
                for entry in model.versions.values():
                    if entry.state == State.AVAILABLE:
                        self._begin_unload(model, entry)
            self._publish()
        self.changes.bump()
        self.changes.wait_for(self._idle)
        self._load_pool.shutdown(wait=True)
        self._unload_pool.shutdown(wait=True)
        self._loader.close()

    # ---- under the lock ---------------------------------------------------------------------

    def _aspire(self, model: _Model, locations: Mapping[int, str]) -> None:
        for number, location in locations.items():
            entry = model.versions.get(number)
            if entry is None:
                model.versions[number] = _Version(number, location)
            elif entry.state == State.END and not entry.aspired:
                # Gone and back (or re-aspired by a new policy): load it afresh.
                entry.state, entry.error, entry.location = State.START, None, location
            elif entry.state == State.START:
                entry.location = location
            elif entry.state == State.UNLOADING and not entry.aspired:
                entry.reload, entry.location = True, location
        for entry in model.versions.values():
            entry.aspired = entry.version in locations
            if entry.state == State.START and not entry.aspired:
                entry.state = State.END  # dropped before it started loading

    def _begin_unload(self, model: _Model, entry: _Version) -> None:
        entry.state = State.UNLOADING
        self._publish()  # new requests stop reaching it before it waits for the ones in flight
        self._submit(self._unload_pool, self._unload, model, entry)

    def _submit(
        self, pool: ThreadPoolExecutor, step: Callable[[_Model, _Version], None], model: _Model, entry: _Version
    ) -> None:
        self._busy += 1
        pool.submit(step, model, entry)

    def _publish(self) -> None:
        table: dict[str, Routes] = {}
        for name, model in self._models.items():
            if model.retired:
                continue
            available = {
                e.version: e.loaded
                for e in model.versions.values()
                if e.state == State.AVAILABLE and e.loaded is not None
            }
            table[name] = Routes(MappingProxyType(available), MappingProxyType(dict(model.labels)))
        self._routes = MappingProxyType(table)

    def _idle(self) -> bool:
        with self._lock:
            return self._busy == 0

    # ---- on loader threads ------------------------------------------------------------------

    def _load(self, model: _Model, entry: _Version) -> None:
        name = model.config.name
        start = time.monotonic()
        try:
            loaded = self._loader.load(
                lambda: self._config(model),
                entry.version,
                entry.location,
                lambda: self._wanted(entry),
                lambda error: self._retrying(entry, error),
            )
        except ServingError as exc:
            log.error("Loading servable: {name: %s version: %d} failed: %s", name, entry.version, exc)
            self._events.loaded(name, entry.version, entry.location, False, time.monotonic() - start)
            with self._lock:
                entry.state, entry.error = State.END, exc
            self._finished(name)
            return
        self._events.loaded(name, entry.version, entry.location, True, time.monotonic() - start)
        with self._lock:
            wanted = entry.aspired and not self._loader.stopped
            entry.state = State.AVAILABLE if wanted else State.UNLOADING
            if wanted:
                entry.loaded = loaded
                self._publish()
        if wanted:
            log.info("Successfully loaded servable version {name: %s version: %d}", name, entry.version)
        else:
            self._loader.free(loaded, entry.location)  # no longer wanted while it loaded; never routed
            with self._lock:
                entry.state = State.END
        self._finished(name)

    def _config(self, model: _Model) -> ModelConfig:
        with self._lock:
            return model.config

    def _retrying(self, entry: _Version, error: ServingError) -> None:
        with self._lock:
            entry.retry_error = error
        self.changes.bump()

    def _wanted(self, entry: _Version) -> bool:
        with self._lock:
            return entry.aspired and not self._loader.stopped

    def _unload(self, model: _Model, entry: _Version) -> None:
        with self._lock:
            loaded = entry.loaded
        start = time.monotonic()
        if loaded is not None:
            self._loader.free(loaded, entry.location)
        self._events.unloaded(model.config.name, entry.version, time.monotonic() - start)
        with self._lock:
            entry.state, entry.loaded = State.END, None
            if entry.reload and entry.aspired and not model.retired:
                entry.state, entry.error = State.START, None
            entry.reload = False
        log.info("Successfully unloaded servable version {name: %s version: %d}", model.config.name, entry.version)
        self._finished(model.config.name)

    def _finished(self, name: str) -> None:
        """A step ended: wake waiters, let the listeners take the next steps, then count it done.

        Counting it done last keeps ``close`` from stopping the pools while a
        listener may still start a step.
        """
        self.changes.bump()
        try:
            for listener in self._listeners:
                listener(name)
        except Exception:  # a loader thread has no caller to report to
            log.exception("Reacting to a finished load or unload of %s failed", name)
        finally:
            with self._lock:
                self._busy -= 1
            self.changes.bump()
