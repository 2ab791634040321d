"""Config changes and labels (TF Serving's ServerCore): ``reload`` and the config-file watcher.

``reload`` is TF's ReloadConfig: the whole model list is validated first
(names, paths, platforms, labels) and refused whole, or applied whole; then it
waits for the models it adds to settle. Labels of a model that is already
served are checked at once; those of a model the config adds are checked once
its first load has settled (TF Serving refuses them, since nothing is available
yet: its issue #1608); see docs/lifecycle.md.

Locking: ``_serial`` makes config changes one at a time and is held through a
reload's wait; ``_lock`` guards the labels still to decide and the label
errors, and is held while a decision reads and changes versions. Order:
``_serial`` → ``_lock`` → the reconciler's lock → the versions' lock; labels are
decided on the thread of the event that settled the model (a listener of
``AspiredVersions``, called with no lock held).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .. import platforms
from ..errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, ServingError, Unavailable, Unknown
from ..observe.logs import Repeats
from ..protos import pb
from ..protos.text import read_text_proto
from . import sources
from .aspired import AspiredVersions
from .config import ModelConfig, model_configs, validate
from .policy import label_refusal
from .versions import VersionReport, Versions

log = logging.getLogger(__name__)


class Reloader:
    """Applies model configs and decides labels. Thread-safe; reloads are serialized."""

    def __init__(self, aspired: AspiredVersions, versions: Versions, allow_unavailable_labels: bool = False) -> None:
        self._aspired = aspired
        self._versions = versions
        self._allow_unavailable_labels = allow_unavailable_labels
        self._serial = threading.Lock()  # one config change at a time
        self._lock = threading.Lock()
        self._pending: dict[str, dict[str, int]] = {}  # a new model's labels, decided once it settles
        self._label_errors: dict[str, ServingError] = {}
        self._configured = False  # a first config was applied (start-up has its own error text)
        self._closed = False
        aspired.listen(self._decide_labels)

    def reload(self, models: Sequence[ModelConfig], timeout: float | None = None) -> None:
        """TF Serving's ReloadConfig: serve exactly ``models`` from now on. Blocking.

        Refused whole, with nothing changed, when the list is invalid (TF's
        messages), a label breaks TF Serving's rules, or a model it adds has no
        version on disk (TF Serving would wait for one forever). Otherwise
        applied whole: models left out drain and unload in the background;
        then this waits until every model it adds has settled and raises
        Unknown naming the versions that failed to load (the config stays
        applied, as in TF Serving), or FailedPrecondition when the labels of an
        added model point at a version that did not become available.
        """
        with self._serial:
            validate(models)  # before any base path is listed: a refused protocol opens no connection
            first = not self._configured
            known = set(self._aspired.model_names())
            for model in models:
                if model.name not in known and not sources.scan(model.name, model.base_path).versions:
                    raise no_versions_error(model.name, model.base_path)
            # A polled config file hands the same config every round: say so only when it changed.
            said = logging.INFO if self._aspired.configs() != {m.name: m for m in models} else logging.DEBUG
            log.log(said, "Adding/updating models.")
            added = self._apply(models)
            self._configured = True
            failed = self.wait_until_settled(added, timeout)
            log.log(said, "Finished adding/updating models")
            errors = [(name, s) for name, rows in failed.items() for s in rows]
            if errors:
                raise not_available(errors, first)
            loading = [name for name in added if not self._settled(name)]
            if loading:
                raise DeadlineExceeded(f"Config applied; still loading after {timeout} s: {', '.join(loading)}")
            with self._lock:
                label_error = next((self._label_errors[n] for n in added if n in self._label_errors), None)
            if label_error is not None:
                raise label_error

    def apply_config(self, models: Sequence[ModelConfig]) -> list[str]:
        """Validate and apply ``models`` without waiting for loads; returns the models it adds.

        An identical config changes nothing (it is not validated again).
        """
        with self._serial:
            return self._apply(models)

    def _apply(self, models: Sequence[ModelConfig]) -> list[str]:
        validate(models)
        for model in models:
            platforms.check_platform_name(model.name, model.platform)
        with self._lock:
            if self._closed:
                raise Unavailable("The server is shutting down; the config was not applied")
        current = self._aspired.configs()
        if current == {m.name: m for m in models}:
            return []
        _check_platforms(current, models)
        in_force = {m.name: self._checked_labels(m.name in current, m) for m in models}
        added = [m.name for m in models if m.name not in current]
        for model in models:
            log.info(" (Re-)adding model: %s", model.name)
        self._aspired.configure(models)
        with self._lock:
            self._pending = {m.name: dict(m.labels) for m in models if in_force[m.name] is None and m.labels}
            self._label_errors = {}
            self._versions.set_labels({name: labels or {} for name, labels in in_force.items()})
        self._aspired.poll([m.name for m in models])
        return added

    def _checked_labels(self, known: bool, config: ModelConfig) -> dict[str, int] | None:
        """The labels to put in force now; None to decide them once the model's first load settles."""
        allow = self._allow_unavailable_labels
        if not known and not allow:
            return None
        current = self._versions.labels(config.name) if known else {}
        for label, version in config.labels.items():
            available = known and self._versions.available(config.name, version)
            refusal = label_refusal(config.name, version, available, current.get(label), allow)
            if refusal is not None:
                raise FailedPrecondition(refusal)
        return dict(config.labels)

    def _decide_labels(self, name: str) -> None:
        """Put a new model's labels in force once it has settled, or record why not."""
        with self._lock:
            pending = self._pending.get(name)
            if pending is None or not self._aspired.settled(name):
                return
            del self._pending[name]
            unavailable = [v for v in pending.values() if not self._versions.available(name, v)]
            if unavailable:
                refusal = label_refusal(name, unavailable[0], False, None, False) or ""
                self._label_errors[name] = FailedPrecondition(refusal)
                log.error("Version labels of model %s not applied: %s", name, refusal)
            else:
                self._versions.set_labels({name: pending})
        self._versions.changes.bump()

    def wait_until_settled(self, names: Iterable[str], timeout: float | None = None) -> dict[str, list[VersionReport]]:
        """Block until each named model has no version loading and its labels are decided;
        returns the versions that failed."""
        wanted = list(names)
        self._versions.changes.wait_for(lambda: all(self._settled(n) for n in wanted), timeout)
        return self._versions.failures(wanted)

    def settled(self, name: str) -> bool:
        """Scanned since it was (re)added, nothing aspired still loading, its labels decided."""
        return self._settled(name)

    def _settled(self, name: str) -> bool:
        with self._lock:
            return name not in self._pending and self._aspired.settled(name)

    def close(self) -> None:
        """Refuse config changes from now on; a reload waiting for loads stops waiting for labels."""
        with self._lock:
            self._closed = True
            self._pending = {}
        self._versions.changes.bump()


def _check_platforms(current: Mapping[str, ModelConfig], models: Sequence[ModelConfig]) -> None:
    for model in models:
        old = current.get(model.name)
        if old is not None and old.platform != model.platform:
            raise InvalidArgument(
                f"Illegal to change a model's platform. For model {model.name} platform was "
                f"{old.platform} and new platform requested is {model.platform}"
            )


def not_available(errors: Sequence[tuple[str, VersionReport]], first: bool) -> Unknown:
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


def no_versions_error(name: str, base_path: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"No versions of servable {name} found under base path {base_path}. "
        "Did you forget to name your leaf directory as a number (eg. '/1/')?"
    )


class ConfigFileWatcher:
    """Re-reads a model config file every ``interval`` seconds and hands each parse to ``apply``.

    TF Serving's ``--model_config_file_poll_wait_seconds``: a file that cannot
    be read or parsed, or a config that ``apply`` refuses, is logged with TF
    Serving's lines and the running config stays. ``apply`` is called from the
    watcher's thread; an unchanged file still calls it (an identical config is
    a no-op for ``Reloader``, and a file that kept failing may now apply).
    """

    def __init__(self, path: str, interval: float, apply: Callable[[Sequence[ModelConfig]], None]) -> None:
        self._path = path
        self._interval = interval
        self._apply = apply
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._repeats = Repeats(log)  # a file that stays broken is said once, not every round

    def start(self) -> None:
        if self._interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="modelserve-config-poll", daemon=True)
        self._thread.start()

    def check_now(self) -> bool:
        """Read and apply the file once; False when it was refused (and logged)."""
        parser: list[tuple[int, str]] = []  # the parser's own line, said with the error (once)
        try:
            message: Any = read_text_proto(
                self._path, pb.ModelServerConfig(), lambda line: parser.append((logging.ERROR, line))
            )
            if message.WhichOneof("config") is None:
                # TF Serving's ReloadConfig takes no action for an empty config, so a file caught
                # mid-write (truncated to nothing) never unloads every model.
                self._repeats.report(self._path, [(logging.INFO, "Taking no action for empty config.")])
                return True
            models = model_configs(message)
        except ServingError as exc:
            self._repeats.report(
                self._path, [*parser, (logging.ERROR, f"Failed to read ModelServerConfig file: {exc}")]
            )
            return False
        try:
            self._apply(models)
        except ServingError as exc:
            text = f"PollFilesystemAndReloadConfig failed to ReloadConfig: {exc.code.name}: {exc}"
            self._repeats.report(self._path, [(logging.ERROR, text)])
            return False
        self._repeats.report(self._path, [])
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check_now()
            except Exception:  # the watcher must outlive a bug in one round
                log.exception("Reloading %s failed", self._path)

    def close(self) -> None:
        """Stop watching. Does not wait: a reload in progress ends when the manager closes."""
        self._stop.set()
