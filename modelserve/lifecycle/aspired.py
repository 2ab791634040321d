"""Reconciliation: which versions each model should serve, one step at a time (TF's AspiredVersionsManager).

A scan of a model's base path (``sources.scan``), less the remote versions
still being uploaded (``sources.Uploads``), goes through its version
policy (``policy.aspired_versions``) and the whole aspired set is handed to
``versions.Versions``; then the availability-preserving policy
(``policy.next_action``, a pure function of a snapshot) picks the model's next
step until it has none. Reconciliation is driven by events: a scan, a config
change, and every load or unload that ends (``Versions.listen``).

Locking: one lock guards the configured models and which of them have been
scanned, and is held from reading a snapshot to starting the step decided on
it (TF's read-modify-write mutex), so two events never start the same step.
It is taken after the reloader's locks and before the versions' lock; scans
run without it, and listeners are called with no lock held.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..errors import NotFound, ServingError
from ..observe.logs import Repeats
from . import sources
from .config import ModelConfig
from .policy import aspired_versions, missing_specific_versions, next_action
from .versions import Versions

log = logging.getLogger(__name__)


class AspiredVersions:
    """Every configured model's aspired versions. Thread-safe; the constructor starts no thread."""

    def __init__(self, versions: Versions, poll_wait_seconds: float = 1.0) -> None:
        self._versions = versions
        self._poll_wait = poll_wait_seconds
        self._uploads = sources.Uploads()  # remote versions are held back until completely uploaded
        self._lock = threading.Lock()
        self._configs: dict[str, ModelConfig] = {}
        self._scanned: set[str] = set()  # base path scanned since the model was (re)added
        # Unloaded through the model repository API: aspire nothing until loaded again (or re-added).
        self._held: set[str] = set()
        self._listeners: list[Callable[[str], None]] = []
        self._stop = threading.Event()  # set by close(): ends polling, starts no more steps
        self._thread: threading.Thread | None = None
        # A poll every second finds the same missing folder again: say it once, until it changes.
        self._repeats = Repeats(log)
        versions.listen(self.reconcile)

    def configs(self) -> dict[str, ModelConfig]:
        with self._lock:
            return dict(self._configs)

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._configs)

    def settled(self, name: str) -> bool:
        """Not configured, or scanned since it was added with no aspired version still to load."""
        with self._lock:
            if name not in self._configs:
                return True
            if name not in self._scanned:
                return False
            return not self._versions.loading(name)

    def listen(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(model name)`` after each reconciliation of that model, with no lock held."""
        self._listeners.append(listener)

    def configure(self, models: Sequence[ModelConfig]) -> None:
        """Serve exactly ``models``: the others unload (once their requests end); new ones await a scan."""
        wanted = {m.name: m for m in models}
        with self._lock:
            removed = [name for name in self._configs if name not in wanted]
            for name in removed:
                log.info("Removing model %s: its versions unload once their requests finish", name)
                self._uploads.forget(name)
                self._versions.retire(name)
                self._held.discard(name)
            for name, config in wanted.items():
                if name not in self._configs:
                    self._scanned.discard(name)
                    self._held.discard(name)
                self._versions.configure(config)
            self._configs = wanted
        for name in removed:
            self.reconcile(name)

    def poll(self, names: Iterable[str] | None = None) -> dict[str, ServingError]:
        """Scan base paths now (the named models, or all) and reconcile; returns the models whose scan failed."""
        chosen = set(names or ())
        with self._lock:
            targets = [c for n, c in self._configs.items() if not chosen or n in chosen]
        failures: dict[str, ServingError] = {}
        for config in targets:
            lines: list[tuple[int, str]] = []
            try:
                scanned = sources.scan(config.name, config.base_path)
                with self._lock:
                    first_scan = config.name not in self._scanned
                found: Mapping[int, str] | None
                found, waiting = self._uploads.complete(config.name, scanned.versions, first_scan)
                lines += [(logging.WARNING, text) for text in (*scanned.warnings, *waiting)]
            except ServingError as exc:  # this model only: the others keep being polled
                lines.append((logging.ERROR, str(exc)))
                failures[config.name] = exc
                found = None
            locations = None
            if found is not None:
                aspired, warnings = _aspired(config, found)
                lines += [(logging.WARNING, text) for text in warnings]
                locations = {v: found[v] for v in aspired}
            self._repeats.report(config.name, lines)
            self._set_on_disk(config, locations)
            self.reconcile(config.name)
        return failures

    def _set_on_disk(self, config: ModelConfig, locations: dict[int, str] | None) -> None:
        """Hand versions the aspired versions a scan found (None: the scan failed; the last set stays)."""
        with self._lock:
            if self._configs.get(config.name) is not config:
                return  # reconfigured while scanning: the next scan decides
            if config.name in self._held:
                locations = {}
            if locations is not None:
                self._versions.set_aspired(config.name, locations)
            self._scanned.add(config.name)
        self._versions.changes.bump()

    def held(self, name: str) -> bool:
        """Unloaded through the model repository API (``hold``) and not loaded again since."""
        with self._lock:
            return name in self._held

    def hold(self, name: str) -> None:
        """Aspire no version of ``name`` until ``release``: each unloads once its requests end, the
        last available one too (nothing is aspired). Scans keep it so; other models are untouched."""
        with self._lock:
            self._check_configured(name)
            self._held.add(name)
            self._versions.set_aspired(name, {})
        self.reconcile(name)

    def release(self, name: str) -> ServingError | None:
        """Aspire ``name``'s versions again, as a fresh scan of its base path finds them (a held model,
        or one already served: a rescan, and its failed versions are tried again); the scan's error."""
        with self._lock:
            self._check_configured(name)
            self._held.discard(name)
            self._scanned.discard(name)  # settled again only after this scan
            self._versions.restart_failed(name)
        return self.poll([name]).get(name)

    def _check_configured(self, name: str) -> None:
        if name not in self._configs:
            raise NotFound(f"Model {name} is not in the model config")

    def reconcile(self, name: str) -> None:
        """Take every step the policy allows ``name`` now; called on every event."""
        with self._lock:
            while not self._stop.is_set() and (action := next_action(self._versions.views(name))) is not None:
                if not self._versions.start(name, action):
                    break
        for listener in self._listeners:
            listener(name)

    def start_polling(self) -> None:
        """Re-scan base paths every ``poll_wait_seconds`` on a thread of its own.

        0 or less: no periodic scan (base paths are scanned when a config is
        applied). TF Serving never scans at all for a negative value, so its
        server waits forever at start-up; that is not reproduced.
        """
        if self._poll_wait <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll_forever, name="modelserve-manager", daemon=True)
        self._thread.start()

    def _poll_forever(self) -> None:
        while not self._stop.wait(self._poll_wait):
            try:
                self.poll()
            except Exception:  # a poll must never kill the polling thread
                log.exception("Polling model base paths failed")

    def close(self) -> None:
        """Stop polling and starting steps; every model counts as removed from now on (waiters wake)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._configs, self._scanned, self._held = {}, set(), set()
        self._versions.changes.bump()


def _aspired(config: ModelConfig, found: Mapping[int, str]) -> tuple[frozenset[int], list[str]]:
    """The versions the policy aspires to among ``found``, and TF Serving's warnings about the policy."""
    policy = config.policy
    warnings = [
        f"Version {missing} of servable {config.name}, which was requested to be served as a 'specific' version "
        "in the servable's version policy, was not found in the file system"
        for missing in missing_specific_versions(policy, found)
    ]
    if policy.kind == "specific" and not policy.versions:
        warnings.append(f"No specific versions requested for servable {config.name}.")
    return aspired_versions(policy, found), warnings
