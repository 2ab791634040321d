"""The model manager: which versions are loaded, and leases on them for requests.

One reconciliation, per model, of the versions a scan of the base path makes
aspired (through the model's version policy) with the versions loaded, one
availability-preserving step at a time (``policy.next_action``). Loads
(copy from remote storage, load, runner, warm-up) and unloads run on loader
threads, with retries per ``--max_num_load_retries``. Requests never see
that work: they read an immutable routing table that is replaced whole on
every change, and hold a lease on the version they use, so an unload waits
for them.

Config changes go through ``reload`` (TF Serving's ``ReloadConfig``): the
whole list is validated first (names, paths, platforms, labels) and refused
whole, or applied whole. Labels of a model the config adds are checked once
that model's first load has settled instead of before it (TF Serving refuses
them, since nothing is available yet: its issue #1608); see docs/lifecycle.md.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .. import platforms
from ..errors import (
    Code,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServingError,
    Unavailable,
    Unknown,
    as_serving_error,
)
from ..execution.runner import Runner, RunnerFactory
from ..platforms.servable import InstanceStatus, Servable
from . import sources
from .config import ModelConfig, validate
from .leases import Lease, LoadedVersion, Routes
from .policy import (
    Action,
    State,
    VersionView,
    aspired_versions,
    label_refusal,
    missing_specific_versions,
    next_action,
)

__all__ = [
    "Lease",  # defined in .leases; requests take them through ModelManager.lease
    "LoadedVersion",
    "ManagerOptions",
    "ModelManager",
    "RunnerFactory",
    "ServableLoader",
    "VersionStatus",
    "Warmup",
    "no_versions_error",
    "no_warmup",
]

log = logging.getLogger(__name__)

ServableLoader = Callable[[ModelConfig, Path], Servable]
# Runs on a loaded version (local folder, servable, runner) before it is published; raising fails the load.
Warmup = Callable[[Path, Servable, Runner], None]


def no_warmup(version_dir: Path, servable: Servable, runner: Runner) -> None:
    """Nothing to replay."""


@dataclass(frozen=True)
class ManagerOptions:
    file_system_poll_wait_seconds: float = 1.0
    max_num_load_retries: int = 5
    load_retry_interval_seconds: float = 60.0
    num_load_threads: int = 4
    num_unload_threads: int = 1
    allow_version_labels_for_unavailable_models: bool = False
    cache_dir: str | None = None  # where remote versions are copied (None: a temporary folder)


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: State
    error_code: Code = Code.OK
    error_message: str = ""
    instances: tuple[InstanceStatus, ...] = ()  # of a loaded version: devices, memory, calls


@dataclass
class _Version:
    version: int
    location: str  # folder path or URI
    state: State = State.START
    aspired: bool = True
    error: ServingError | None = None
    loaded: LoadedVersion | None = None


@dataclass
class _Model:
    config: ModelConfig
    versions: dict[int, _Version] = field(default_factory=dict)
    removed: bool = False
    scanned: bool = False  # its base path has been scanned since it was (re)configured
    labels: dict[str, int] = field(default_factory=dict)  # in force: requests resolve these
    pending_labels: dict[str, int] | None = None  # a new model's labels, checked once it has loaded
    label_error: ServingError | None = None

    @property
    def loading(self) -> bool:
        """An aspired version has not finished loading yet."""
        return any(e.aspired and e.state in (State.START, State.LOADING) for e in self.versions.values())

    @property
    def settled(self) -> bool:
        """Scanned, nothing aspired is still to load, and its labels are decided."""
        return self.scanned and not self.loading and self.pending_labels is None

    def available(self, version: int) -> bool:
        entry = self.versions.get(version)
        return entry is not None and entry.state == State.AVAILABLE


def default_loader(config: ModelConfig, path: Path) -> Servable:
    return platforms.load(config.name, config.platform, path, platforms.LoadOptions())


class ModelManager:
    """Owns every model's versions. Thread-safe; requests call ``lease``.

    The constructor does no I/O and starts no thread; ``reload`` (or
    ``apply_config``) configures models, ``start_polling`` watches base paths,
    ``close`` unloads everything.
    """

    def __init__(
        self,
        options: ManagerOptions,
        loader: ServableLoader,
        runner_factory: RunnerFactory,
        warmup: Warmup = no_warmup,
    ) -> None:
        self._options = options
        self._loader = loader
        self._runner_factory = runner_factory
        self._warmup = warmup
        self._copies = sources.LocalCopies(options.cache_dir)
        self._lock = threading.Condition(threading.RLock())
        self._reload_lock = threading.Lock()  # one config change at a time
        self._configured = False
        self._models: dict[str, _Model] = {}
        self._routes: Mapping[str, Routes] = MappingProxyType({})
        self._stop = threading.Event()  # set by close(): ends polling and retry waits
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
        with self._lock:
            return sorted(name for name, m in self._models.items() if not m.removed)

    def labels(self, name: str) -> dict[str, int]:
        """The labels in force for ``name`` (empty for an unknown model)."""
        routes = self._routes.get(name)
        return dict(routes.labels) if routes else {}

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

    def reload(self, models: Sequence[ModelConfig], timeout: float | None = None) -> None:
        """TF Serving's ReloadConfig: serve exactly ``models`` from now on. Blocking.

        Refused whole, with nothing changed, when the list is invalid (TF's
        messages), a label breaks the rules of §5.5, or a model it adds has no
        version on disk (TF Serving would wait for one forever). Otherwise
        applied whole: models left out drain and unload in the background;
        then this waits until every model it adds has settled and raises
        Unknown naming the versions that failed to load (the config stays
        applied, as in TF Serving), or FailedPrecondition when the labels of an
        added model point at a version that did not become available.
        """
        with self._reload_lock:
            first = not self._configured
            known = set(self.model_names())
            for model in models:
                if model.name not in known and not sources.scan(model.name, model.base_path).versions:
                    raise no_versions_error(model.name, model.base_path)
            log.info("Adding/updating models.")
            added = self.apply_config(models)
            self._configured = True
            failed = self.wait_until_settled(added, timeout)
            log.info("Finished adding/updating models")
            errors = [(name, s) for name, rows in failed.items() for s in rows]
            if errors:
                raise _not_available(errors, first)
            with self._lock:
                loading = [name for name in added if not self._settled(name)]
                if loading:
                    raise DeadlineExceeded(f"Config applied; still loading after {timeout} s: {', '.join(loading)}")
                for name in added:
                    label_error = self._models[name].label_error
                    if label_error is not None:
                        raise label_error

    def apply_config(self, models: Sequence[ModelConfig]) -> list[str]:
        """Validate and apply ``models`` without waiting for loads; returns the models it adds.

        An identical config changes nothing (it is not validated again).
        """
        validate(models)
        for model in models:
            platforms.check_platform_name(model.name, model.platform)
        with self._lock:
            if self._stop.is_set():
                raise Unavailable("The server is shutting down; the config was not applied")
            current = {name: m for name, m in self._models.items() if not m.removed}
            if {name: m.config for name, m in current.items()} == {m.name: m for m in models}:
                return []
            _check_platforms(current, models)
            labels = {m.name: self._checked_labels(current.get(m.name), m) for m in models}
            added = [m.name for m in models if m.name not in current]
            for model in models:
                log.info(" (Re-)adding model: %s", model.name)
            self._replace_config(models, labels)
            self._publish_routes()
        self.poll([m.name for m in models])
        return added

    def _checked_labels(self, model: _Model | None, config: ModelConfig) -> dict[str, int] | None:
        """The labels to put in force now; None to decide them after the model's first load."""
        allow = self._options.allow_version_labels_for_unavailable_models
        if model is None and not allow:
            return None
        for label, version in config.labels.items():
            available = model is not None and model.available(version)
            current = model.labels.get(label) if model is not None else None
            refusal = label_refusal(config.name, version, available, current, allow)
            if refusal is not None:
                raise FailedPrecondition(refusal)
        return dict(config.labels)

    def _replace_config(self, models: Sequence[ModelConfig], labels: Mapping[str, dict[str, int] | None]) -> None:
        wanted = {m.name: m for m in models}
        for name, model in self._models.items():
            if name not in wanted and not model.removed:
                log.info("Removing model %s: its versions unload once their requests finish", name)
                model.removed = True
                for v in model.versions.values():
                    v.aspired = False
        for name, config in wanted.items():
            model = self._models.setdefault(name, _Model(config))
            if model.removed:
                model.removed, model.scanned = False, False
            model.config = config
            in_force = labels[name]
            model.labels = in_force or {}
            model.pending_labels = dict(config.labels) if in_force is None and config.labels else None
            model.label_error = None

    def poll(self, names: Iterable[str] | None = None) -> dict[str, ServingError]:
        """Scan base paths now and reconcile; returns the models whose scan failed."""
        failures: dict[str, ServingError] = {}
        with self._lock:
            targets = [self._models[n] for n in (names or list(self._models)) if n in self._models]
            targets = [m for m in targets if not m.removed]
        for model in targets:
            config = model.config
            try:
                found = sources.scan(config.name, config.base_path).versions
            except ServingError as exc:  # this model only: the others keep being polled
                log.error("%s", exc)
                failures[config.name] = exc
                with self._lock:
                    model.scanned = True
                continue
            self._set_on_disk(model, config, found)
        self._reconcile()
        return failures

    def _set_on_disk(self, model: _Model, config: ModelConfig, found: Mapping[int, str]) -> None:
        policy = config.policy
        for missing in missing_specific_versions(policy, found):
            log.warning(
                "Version %d of servable %s, which was requested to be served as a 'specific' version "
                "in the servable's version policy, was not found in the file system",
                missing,
                config.name,
            )
        if policy.kind == "specific" and not policy.versions:
            log.warning("No specific versions requested for servable %s.", config.name)
        aspired = aspired_versions(policy, found)
        with self._lock:
            if model.removed or model.config is not config:
                return  # reconfigured while scanning: the next scan decides
            for number in aspired:
                entry = model.versions.get(number)
                if entry is None:
                    model.versions[number] = _Version(number, found[number])
                elif entry.state == State.END and not entry.aspired:
                    # Gone and back (or re-aspired by a new policy): load it afresh.
                    entry.state, entry.error, entry.location = State.START, None, found[number]
                elif entry.state == State.START:
                    entry.location = found[number]
            for entry in model.versions.values():
                entry.aspired = entry.version in aspired
            model.scanned = True

    # ---- reconciliation -------------------------------------------------------------------

    def _reconcile(self) -> None:
        with self._lock:
            for model in self._models.values():
                while (action := self._next(model)) is not None:
                    self._start(model, action)
                if model.pending_labels is not None and model.scanned and not model.loading:
                    self._decide_labels(model, model.pending_labels)
            self._lock.notify_all()

    def _decide_labels(self, model: _Model, pending: Mapping[str, int]) -> None:
        """Put a new model's labels in force (called once no aspired version is still loading)."""
        model.pending_labels = None
        for version in pending.values():
            if not model.available(version):
                refusal = label_refusal(model.config.name, version, False, None, False)
                model.label_error = FailedPrecondition(refusal or "")
                log.error("Version labels of model %s not applied: %s", model.config.name, refusal)
                return
        model.labels = dict(pending)
        self._publish_routes()

    def _next(self, model: _Model) -> Action | None:
        for entry in model.versions.values():
            if entry.state == State.START and not entry.aspired:
                entry.state = State.END  # dropped before it started loading
        views = [
            VersionView(e.version, e.state, e.aspired, failed=e.error is not None) for e in model.versions.values()
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
            if self._wanted(model, entry):
                entry.state, entry.loaded = State.AVAILABLE, loaded
                log.info("Successfully loaded servable version {name: %s version: %d}", name, entry.version)
                self._publish_routes()
                self._finished()
                return
            entry.state = State.UNLOADING
        self._free(loaded, entry)  # no longer wanted while it loaded; never routed
        with self._lock:
            entry.state = State.END
            self._finished()

    def _wanted(self, model: _Model, entry: _Version) -> bool:
        return entry.aspired and not model.removed and not self._stop.is_set()

    def _load_with_retries(self, model: _Model, entry: _Version) -> LoadedVersion:
        """Load; on failure retry while the version is still wanted (TF: state stays LOADING)."""
        attempts = 1 + max(0, self._options.max_num_load_retries)
        interval = max(0.0, self._options.load_retry_interval_seconds)
        for attempt in range(attempts):
            try:
                return self._load_once(model.config, entry)
            except Exception as exc:
                error = as_serving_error(exc)
                with self._lock:
                    wanted = self._wanted(model, entry)
                if attempt + 1 == attempts or not wanted:
                    raise error from exc
                log.warning(
                    "Loading servable: {name: %s version: %d} failed: %s; retrying in %.1f s",
                    model.config.name,
                    entry.version,
                    error,
                    interval,
                )
                if self._stop.wait(interval):
                    raise error from exc
        raise AssertionError("unreachable")

    def _load_once(self, config: ModelConfig, entry: _Version) -> LoadedVersion:
        folder = self._copies.fetch(entry.location)
        with contextlib.ExitStack() as undo:  # a failed step frees what the steps before it made
            undo.callback(self._copies.drop, entry.location)  # the next attempt copies afresh
            servable = self._loader(config, folder)
            undo.callback(servable.close)
            runner = self._runner_factory(config.name, entry.version, folder, servable)
            undo.callback(runner.close)
            self._warmup(folder, servable, runner)
            undo.pop_all()
        return LoadedVersion(config.name, entry.version, folder, servable, runner)

    def _unload(self, model: _Model, entry: _Version) -> None:
        loaded = entry.loaded
        if loaded is not None:
            self._free(loaded, entry)
        with self._lock:
            entry.state, entry.loaded = State.END, None
            log.info("Successfully unloaded servable version {name: %s version: %d}", model.config.name, entry.version)
            self._finished()

    def _free(self, loaded: LoadedVersion, entry: _Version) -> None:
        try:
            loaded.retire()
        except Exception:  # a model that fails to close must not stop the manager
            log.exception("Unloading servable version {name: %s version: %d} failed", loaded.model, loaded.version)
        self._copies.drop(entry.location)

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
            table[name] = Routes(MappingProxyType(available), MappingProxyType(dict(model.labels)))
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
                n: [_status_of(e) for e in self._models[n].versions.values() if e.error and e.aspired]
                for n in wanted
                if n in self._models
            }

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` (evaluated under the manager's lock) holds; False on timeout."""
        with self._lock:
            return self._lock.wait_for(predicate, timeout)

    def _settled(self, name: str) -> bool:
        model = self._models.get(name)
        return model is None or model.removed or model.settled

    def start_polling(self) -> None:
        """Re-scan base paths every ``file_system_poll_wait_seconds`` on a manager thread.

        0 or less: no periodic scan (base paths are scanned when a config is
        applied). TF Serving never scans at all for a negative value, so its
        server waits forever at start-up; that is not reproduced.
        """
        if self._options.file_system_poll_wait_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll_forever, name="modelserve-manager", daemon=True)
        self._thread.start()

    def _poll_forever(self) -> None:
        while not self._stop.wait(self._options.file_system_poll_wait_seconds):
            try:
                self.poll()
            except Exception:  # a poll must never kill the manager thread
                log.exception("Polling model base paths failed")

    def close(self) -> None:
        """Stop polling and retrying, unload everything (waiting for leases), stop the loader threads."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for model in self._models.values():
                model.removed = True
                for entry in model.versions.values():
                    entry.aspired = False
            self._publish_routes()
            self._reconcile()
            while self._busy:
                self._lock.wait()
        self._load_pool.shutdown(wait=True)
        self._unload_pool.shutdown(wait=True)
        self._copies.close()


def _check_platforms(current: Mapping[str, _Model], models: Sequence[ModelConfig]) -> None:
    for model in models:
        old = current.get(model.name)
        if old is not None and old.config.platform != model.platform:
            raise InvalidArgument(
                f"Illegal to change a model's platform. For model {model.name} platform was "
                f"{old.config.platform} and new platform requested is {model.platform}"
            )


def _not_available(errors: Sequence[tuple[str, VersionStatus]], first: bool) -> Unknown:
    """TF Serving's texts: start-up's fast initial load, or ReloadConfig's wait for new models."""
    if first:
        detail = ", ".join(
            f"{{name: {name} version: {s.version}}} due to error: {s.error_message}" for name, s in errors
        )
        return Unknown(f"{len(errors)} servable(s) did not become available: {{{detail}}}")
    detail = "".join(
        f"{{{{name: {name} version: {s.version}}} due to error: {s.error_code.name}: {s.error_message}}}, "
        for name, s in errors
    )
    return Unknown(f"{len(errors)} model(s) did not become available: {{{detail}}}")


def _status_of(entry: _Version) -> VersionStatus:
    if entry.error is None:
        instances = entry.loaded.instances() if entry.loaded is not None else ()
        return VersionStatus(entry.version, entry.state, instances=instances)
    return VersionStatus(entry.version, entry.state, entry.error.code, entry.error.message)


def no_versions_error(name: str, base_path: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"No versions of servable {name} found under base path {base_path}. "
        "Did you forget to name your leaf directory as a number (eg. '/1/')?"
    )
