"""The model manager: which versions are loaded, and leases on them for requests.

One manager thread reconciles, per model, the versions a scan of the base
path makes aspired (through the model's version policy) with the versions
loaded, one availability-preserving step at a time (``policy.next_action``).
Loads and unloads run on loader threads. Requests never see that work: they
read an immutable routing table that is replaced whole on every change, and
hold a lease on the version they use, so an unload waits for them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from . import platforms, sources
from .config import ModelConfig, validate
from .errors import Code, FailedPrecondition, InvalidArgument, NotFound, ServingError, Unknown
from .policy import Action, State, VersionView, aspired_versions, missing_specific_versions, next_action
from .runner import Runner
from .servable import Servable

log = logging.getLogger(__name__)

ServableLoader = Callable[[ModelConfig, Path], Servable]
RunnerFactory = Callable[[ModelConfig, int, Servable], Runner]


@dataclass(frozen=True)
class ManagerOptions:
    file_system_poll_wait_seconds: float = 1.0
    max_num_load_retries: int = 5
    load_retry_interval_seconds: float = 60.0
    num_load_threads: int = 4
    num_unload_threads: int = 1


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: State
    error_code: Code = Code.OK
    error_message: str = ""


class LoadedVersion:
    """A loaded, routable model version. Requests hold leases on it."""

    def __init__(self, model: str, version: int, path: Path, servable: Servable, runner: Runner) -> None:
        self.model = model
        self.version = version
        self.path = path
        self.servable = servable
        self.runner = runner
        self._leases = 0
        self._retiring = False
        self._cv = threading.Condition(threading.Lock())

    def acquire(self) -> bool:
        """Take a lease; False once the version is retiring (look it up again)."""
        with self._cv:
            if self._retiring:
                return False
            self._leases += 1
            return True

    def release(self) -> None:
        with self._cv:
            self._leases -= 1
            if self._leases == 0:
                self._cv.notify_all()

    def retire(self) -> None:
        """Refuse new leases, wait for held ones to end, then free the model."""
        with self._cv:
            self._retiring = True
            while self._leases:
                self._cv.wait()
        self.runner.close()
        self.servable.close()


class Lease:
    """A request's hold on one loaded version; release it exactly once (``with`` does)."""

    def __init__(self, loaded: LoadedVersion) -> None:
        self.loaded = loaded
        self._released = False

    @property
    def version(self) -> int:
        return self.loaded.version

    @property
    def servable(self) -> Servable:
        return self.loaded.servable

    @property
    def runner(self) -> Runner:
        return self.loaded.runner

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.loaded.release()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class Routes:
    """What requests for one model may use right now. Never mutated."""

    available: Mapping[int, LoadedVersion]
    labels: Mapping[str, int]

    @property
    def latest(self) -> LoadedVersion | None:
        return self.available[max(self.available)] if self.available else None


@dataclass
class _Version:
    version: int
    path: Path
    state: State = State.START
    aspired: bool = True
    error: ServingError | None = None
    loaded: LoadedVersion | None = None


@dataclass
class _Model:
    config: ModelConfig
    versions: dict[int, _Version] = field(default_factory=dict)
    removed: bool = False


def default_loader(config: ModelConfig, path: Path) -> Servable:
    return platforms.load(config.name, config.platform, path, platforms.LoadOptions())


class ModelManager:
    """Owns every model's versions. Thread-safe; requests call ``lease``."""

    def __init__(
        self,
        options: ManagerOptions,
        loader: ServableLoader,
        runner_factory: RunnerFactory,
    ) -> None:
        self._options = options
        self._loader = loader
        self._runner_factory = runner_factory
        self._lock = threading.Condition(threading.RLock())
        self._models: dict[str, _Model] = {}
        self._routes: Mapping[str, Routes] = MappingProxyType({})
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._load_pool = ThreadPoolExecutor(max(1, options.num_load_threads), "modelserve-load")
        self._unload_pool = ThreadPoolExecutor(max(1, options.num_unload_threads), "modelserve-unload")
        self._busy = 0  # loads and unloads in flight

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

    def model_names(self) -> list[str]:
        return sorted(name for name, m in self._models.items() if not m.removed)

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
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
            return [_status_of(e) for e in entries]

    # ---- configuration --------------------------------------------------------------------

    def apply_config(self, models: Sequence[ModelConfig]) -> None:
        """Serve exactly ``models`` from now on; models left out are unloaded."""
        validate(models)
        for model in models:
            platforms.check_platform_name(model.name, model.platform)
        with self._lock:
            wanted = {m.name: m for m in models}
            for name, model in self._models.items():
                if name not in wanted and not model.removed:
                    model.removed = True
                    for v in model.versions.values():
                        v.aspired = False
            for name, config in wanted.items():
                existing = self._models.get(name)
                if existing is None:
                    self._models[name] = _Model(config)
                else:
                    existing.config = config
                    existing.removed = False
            self._publish_routes()
        self.poll(list(wanted))

    def poll(self, names: Iterable[str] | None = None) -> dict[str, ServingError]:
        """Scan base paths now and reconcile; returns the models whose scan failed."""
        failures: dict[str, ServingError] = {}
        with self._lock:
            targets = [self._models[n] for n in (names or list(self._models)) if n in self._models]
            targets = [m for m in targets if not m.removed]
        for model in targets:
            try:
                found = sources.scan(model.config.name, model.config.base_path).versions
            except ServingError as exc:
                log.error("%s", exc)
                failures[model.config.name] = exc
                continue
            self._set_on_disk(model, found)
        self._reconcile()
        return failures

    def _set_on_disk(self, model: _Model, found: Mapping[int, str]) -> None:
        policy = model.config.policy
        for missing in missing_specific_versions(policy, found):
            log.warning(
                "Version %d of servable %s, which was requested to be served as a 'specific' version "
                "in the servable's version policy, was not found in the file system",
                missing, model.config.name,
            )
        aspired = aspired_versions(policy, found)
        with self._lock:
            for number, path in found.items():
                if number in aspired and number not in model.versions:
                    model.versions[number] = _Version(number, Path(path))
            for entry in model.versions.values():
                now = entry.version in aspired
                if now and not entry.aspired and entry.state == State.END:
                    entry.state, entry.error = State.START, None  # came back: load it afresh
                    entry.path = Path(found[entry.version])
                entry.aspired = now

    # ---- reconciliation -------------------------------------------------------------------

    def _reconcile(self) -> None:
        with self._lock:
            for model in self._models.values():
                while (action := self._next(model)) is not None:
                    self._start(model, action)
            self._lock.notify_all()

    def _next(self, model: _Model) -> Action | None:
        for entry in model.versions.values():
            if entry.state == State.START and not entry.aspired:
                entry.state = State.END  # dropped before it started loading
        views = [
            VersionView(e.version, e.state, e.aspired, failed=e.error is not None)
            for e in model.versions.values()
        ]
        return next_action(views)

    def _start(self, model: _Model, action: Action) -> None:
        entry = model.versions[action.version]
        self._busy += 1
        if action.kind == "load":
            entry.state = State.LOADING
            self._load_pool.submit(self._load, model, entry)
        else:
            entry.state = State.UNLOADING
            self._publish_routes()
            self._unload_pool.submit(self._unload, model, entry)

    def _load(self, model: _Model, entry: _Version) -> None:
        name = model.config.name
        try:
            loaded = self._load_with_retries(model, entry)
        except ServingError as exc:
            log.error("Loading servable: {name: %s version: %d} failed: %s", name, entry.version, exc)
            with self._lock:
                entry.state, entry.error = State.END, exc
                self._finished()
            return
        with self._lock:
            if entry.aspired and not model.removed:
                entry.state, entry.loaded = State.AVAILABLE, loaded
                log.info("Successfully loaded servable version {name: %s version: %d}", name, entry.version)
                self._publish_routes()
                self._finished()
                return
            entry.state = State.UNLOADING
        loaded.retire()  # no longer wanted while it loaded; never routed
        with self._lock:
            entry.state = State.END
            self._finished()

    def _load_with_retries(self, model: _Model, entry: _Version) -> LoadedVersion:
        attempts = 1 + max(0, self._options.max_num_load_retries)
        for attempt in range(attempts):
            try:
                servable = self._loader(model.config, entry.path)
                runner = self._runner_factory(model.config, entry.version, servable)
                return LoadedVersion(model.config.name, entry.version, entry.path, servable, runner)
            except Exception as exc:
                error = exc if isinstance(exc, ServingError) else Unknown(f"{type(exc).__name__}: {exc}")
                if attempt + 1 == attempts or not entry.aspired or self._stopping:
                    raise error from exc
                log.warning(
                    "Loading servable: {name: %s version: %d} failed: %s; retrying in %.1f s",
                    model.config.name, entry.version, error, self._options.load_retry_interval_seconds,
                )
                time.sleep(max(0.0, self._options.load_retry_interval_seconds))
        raise AssertionError("unreachable")

    def _unload(self, model: _Model, entry: _Version) -> None:
        loaded = entry.loaded
        if loaded is not None:
            loaded.retire()
        with self._lock:
            entry.state, entry.loaded = State.END, None
            log.info("Successfully unloaded servable version {name: %s version: %d}", model.config.name, entry.version)
            self._finished()

    def _finished(self) -> None:
        # Called with the lock held after a load or unload ends: take the next steps.
        self._busy -= 1
        self._reconcile()

    def _publish_routes(self) -> None:
        table: dict[str, Routes] = {}
        for name, model in self._models.items():
            if model.removed:
                continue
            available = {
                e.version: e.loaded
                for e in model.versions.values()
                if e.state == State.AVAILABLE and e.loaded is not None
            }
            table[name] = Routes(MappingProxyType(available), MappingProxyType(dict(model.config.labels)))
        self._routes = MappingProxyType(table)

    # ---- lifecycle ------------------------------------------------------------------------

    def wait_until_settled(self, names: Iterable[str], timeout: float | None = None) -> dict[str, list[VersionStatus]]:
        """Block until each named model has no version loading; returns versions that failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        wanted = list(names)
        with self._lock:
            while not all(self._settled(n) for n in wanted):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._lock.wait(remaining)
            return {
                n: [_status_of(e) for e in self._models[n].versions.values() if e.error is not None and e.aspired]
                for n in wanted
                if n in self._models
            }

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` (evaluated under the manager's lock) holds; False on timeout."""
        with self._lock:
            return self._lock.wait_for(predicate, timeout)

    def _settled(self, name: str) -> bool:
        model = self._models.get(name)
        if model is None:
            return True
        return all(e.state in (State.AVAILABLE, State.END) or not e.aspired for e in model.versions.values())

    def start_polling(self) -> None:
        """Re-scan base paths every ``file_system_poll_wait_seconds`` (> 0) on a manager thread."""
        if self._options.file_system_poll_wait_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll_forever, name="modelserve-manager", daemon=True)
        self._thread.start()

    def _poll_forever(self) -> None:
        while not self._wake.wait(self._options.file_system_poll_wait_seconds):
            try:
                self.poll()
            except Exception:  # a poll must never kill the manager thread
                log.exception("Polling model base paths failed")

    def close(self) -> None:
        """Stop polling, unload everything (waiting for leases), and stop the loader threads."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for model in self._models.values():
                model.removed = True
                for entry in model.versions.values():
                    entry.aspired = False
            self._reconcile()
            while self._busy:
                self._lock.wait()
        self._load_pool.shutdown(wait=True)
        self._unload_pool.shutdown(wait=True)


def _status_of(entry: _Version) -> VersionStatus:
    if entry.error is None:
        return VersionStatus(entry.version, entry.state)
    return VersionStatus(entry.version, entry.state, entry.error.code, entry.error.message)


def no_versions_error(name: str, base_path: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"No versions of servable {name} found under base path {base_path}. "
        "Did you forget to name your leaf directory as a number (eg. '/1/')?"
    )
