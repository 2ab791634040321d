"""The model manager: the three lifecycle parts composed behind the one object the server uses.

``versions.Versions`` (TF's BasicManager) loads (through
``loading.VersionLoader``, TF's LoaderHarness), unloads, routes and leases;
``aspired.AspiredVersions`` (TF's AspiredVersionsManager) scans base paths and
reconciles one availability-preserving step at a time; ``reload.Reloader``
(TF's ServerCore) applies configs and decides labels. Each part states its own
locking; their locks nest in that order upward: reload, then aspired, then
versions (see each module's docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from ..errors import DeadlineExceeded, ServingError
from ..execution.runner import RunnerFactory
from ..storage import hide_paths
from .aspired import AspiredVersions
from .config import ModelConfig
from .events import NO_EVENTS, LifecycleEvents
from .leases import Lease, LoadedVersion
from .loading import ServableLoader, VersionLoader, Warmup, no_warmup
from .reload import Reloader, no_versions_error, not_available
from .versions import VersionReport, Versions

__all__ = [
    "Lease",  # defined in .leases; requests take them through ModelManager.lease
    "LoadedVersion",
    "ManagerOptions",
    "ModelManager",
    "RunnerFactory",
    "ServableLoader",
    "VersionReport",
    "Warmup",
    "no_versions_error",
    "no_warmup",
]


@dataclass(frozen=True)
class ManagerOptions:
    file_system_poll_wait_seconds: float = 1.0
    max_num_load_retries: int = 5
    load_retry_interval_seconds: float = 60.0
    num_load_threads: int = 4
    num_unload_threads: int = 1
    allow_version_labels_for_unavailable_models: bool = False
    cache_dir: str | None = None  # where remote versions are copied (None: a temporary folder)
    cache_bytes: int = 0  # the most those copies may hold (0: half the free space there, logged)
    # False: status texts name the base path "<base_path>" and other local paths "<path>" (the log keeps them).
    expose_paths_in_errors: bool = False


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
        events: LifecycleEvents = NO_EVENTS,
    ) -> None:
        loading = VersionLoader(
            loader,
            runner_factory,
            warmup,
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval_seconds=options.load_retry_interval_seconds,
            cache_dir=options.cache_dir,
            cache_bytes=options.cache_bytes,
        )
        self.versions = Versions(loading, options.num_load_threads, options.num_unload_threads, events)
        self.aspired = AspiredVersions(self.versions, options.file_system_poll_wait_seconds)
        self.reloader = Reloader(self.aspired, self.versions, options.allow_version_labels_for_unavailable_models)
        self._expose_paths = options.expose_paths_in_errors

    # ---- requests: versions -----------------------------------------------------------------

    def lease(self, name: str, version: int | None = None, label: str | None = None) -> Lease:
        """A lease on the version a request asks for (latest available when it names none)."""
        return self.versions.lease(name, version, label)

    def status(self, name: str, version: int | None = None) -> list[VersionReport]:
        """Every version ever seen of ``name``, highest first (TF Serving never forgets), as callers see it:
        error texts without local paths unless ``expose_paths_in_errors``."""
        rows = self.versions.status(name, version)
        if self._expose_paths or not any(row.error_message for row in rows):
            return rows
        config = self.aspired.configs().get(name)
        base = config.base_path if config is not None else ""
        return [replace(row, error_message=hide_paths(row.error_message, base)) for row in rows]

    def labels(self, name: str) -> dict[str, int]:
        """The labels in force for ``name`` (empty for an unknown model)."""
        return self.versions.labels(name)

    def available_versions(self, name: str) -> tuple[int, ...]:
        """The versions of ``name`` requests may use now (AVAILABLE), lowest first; empty for an unknown model."""
        return self.versions.available_versions(name)

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` holds, checked after every lifecycle change (no lock held); False on timeout."""
        return self.versions.changes.wait_for(predicate, timeout)

    # ---- base paths: reconciliation ---------------------------------------------------------

    def model_names(self) -> list[str]:
        return self.aspired.model_names()

    def configs(self) -> dict[str, ModelConfig]:
        """The configured models by name."""
        return self.aspired.configs()

    def poll(self, names: Iterable[str] | None = None) -> dict[str, ServingError]:
        """Scan base paths now and reconcile; returns the models whose scan failed."""
        return self.aspired.poll(names)

    def start_polling(self) -> None:
        """Re-scan base paths every ``file_system_poll_wait_seconds`` (0 or less: never)."""
        self.aspired.start_polling()

    # ---- the model repository API (V2): unload and load one configured model -------------------

    def unload_model(self, name: str, timeout: float | None = None) -> None:
        """Unload every version of ``name`` (each once its requests end) and keep it unloaded until
        ``load_model``; NotFound for a model not in the config. Blocks until all are unloaded (or
        ``timeout``: DeadlineExceeded). Other models are untouched."""
        self.aspired.hold(name)
        if not self.versions.changes.wait_for(lambda: self.versions.drained(name), timeout):
            raise DeadlineExceeded(f"Model {name} is still unloading after {timeout} s")

    def load_model(self, name: str, timeout: float | None = None) -> None:
        """Aspire the versions ``name``'s config and base path name again (after ``unload_model``, or
        a rescan of a served model that also retries its failed versions), and wait until they have
        loaded. NotFound for a model not in the config; Unknown naming the versions that failed."""
        scan_error = self.aspired.release(name)
        if scan_error is not None:
            raise scan_error
        failed = self.reloader.wait_until_settled([name], timeout)
        if not self.reloader.settled(name):
            raise DeadlineExceeded(f"Model {name} is still loading after {timeout} s")
        errors = [(name, row) for row in failed.get(name, [])]
        if errors:
            raise not_available(errors, first=False)

    def unloaded(self, name: str) -> bool:
        """Unloaded through ``unload_model`` and not loaded again since."""
        return self.aspired.held(name)

    def settled(self, name: str) -> bool:
        """No aspired version of ``name`` still to load."""
        return self.reloader.settled(name)

    # ---- configuration: reload --------------------------------------------------------------

    def reload(self, models: Sequence[ModelConfig], timeout: float | None = None) -> None:
        """TF Serving's ReloadConfig; see ``Reloader.reload``."""
        self.reloader.reload(models, timeout)

    def apply_config(self, models: Sequence[ModelConfig]) -> list[str]:
        """Validate and apply ``models`` without waiting for loads; returns the models it adds."""
        return self.reloader.apply_config(models)

    def wait_until_settled(self, names: Iterable[str], timeout: float | None = None) -> dict[str, list[VersionReport]]:
        """Block until each named model has no version loading; returns versions that failed."""
        return self.reloader.wait_until_settled(names, timeout)

    def close(self) -> None:
        """Refuse configs, stop polling and retrying, unload everything (waiting for leases), stop loader threads."""
        self.reloader.close()
        self.aspired.close()
        self.versions.close()
