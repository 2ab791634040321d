"""Loading one version: its steps and its retries (TF Serving's LoaderHarness).

A load copies the version from remote storage (``cache.VersionCache``), loads
it with the platform, makes its runner and warms it up; a step that fails frees
what the steps before it made. A failed load is retried
``max_num_load_retries`` times, ``load_retry_interval_seconds`` apart, while
the version is still wanted, unless its error is permanent (``MissingExtra``:
a package to install); ``stop`` ends the waits between retries.

Thread-safe, and holds no lock of its own beyond the local copies' one: the
caller's ``wanted`` is the only callback, and is called between attempts.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import MissingExtra, ServingError, as_serving_error
from ..execution.runner import Runner, RunnerFactory
from ..platforms.servable import Servable
from .cache import VersionCache
from .config import ModelConfig
from .leases import LoadedVersion

log = logging.getLogger(__name__)

ServableLoader = Callable[[ModelConfig, Path], Servable]
# Runs on a loaded version (local folder, servable, runner) before it is published; raising fails the load.
Warmup = Callable[[Path, Servable, Runner], None]


def no_warmup(version_dir: Path, servable: Servable, runner: Runner) -> None:
    """Nothing to replay."""


class VersionLoader:
    """Loads and frees versions. The constructor does no I/O."""

    def __init__(
        self,
        loader: ServableLoader,
        runner_factory: RunnerFactory,
        warmup: Warmup = no_warmup,
        *,
        max_num_load_retries: int = 5,
        load_retry_interval_seconds: float = 60.0,
        cache_dir: str | None = None,  # where remote versions are copied (None: a temporary folder)
        cache_bytes: int = 0,  # the most the copies may hold (0: half the free space there, logged)
    ) -> None:
        self._loader = loader
        self._runner_factory = runner_factory
        self._warmup = warmup
        self._attempts = 1 + max(0, max_num_load_retries)
        self._retry_interval = max(0.0, load_retry_interval_seconds)
        self._copies = VersionCache(cache_dir, cache_bytes)
        self._stop = threading.Event()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def load(
        self,
        config: Callable[[], ModelConfig],
        version: int,
        location: str,
        wanted: Callable[[], bool],
        retrying: Callable[[ServingError], None] = lambda error: None,
    ) -> LoadedVersion:
        """Load ``version``; on failure retry while ``wanted()`` (TF: its state stays LOADING).

        ``config()`` is read at each attempt, so a retry uses the model's config
        of the moment; ``retrying(error)`` is told each failed attempt that will be
        retried, so the status can show it. Raises the last attempt's error as a ServingError.
        """
        for attempt in range(self._attempts):
            model = config()
            try:
                return self._load_once(model, version, location)
            except Exception as exc:
                error = as_serving_error(exc)
                if attempt + 1 == self._attempts or isinstance(error, MissingExtra) or not wanted():
                    raise error from exc
                log.warning(
                    "Loading servable: {name: %s version: %d} failed: %s; retrying in %.1f s",
                    model.name,
                    version,
                    error,
                    self._retry_interval,
                )
                retrying(error)
                if self._stop.wait(self._retry_interval):
                    raise error from exc
        raise AssertionError("unreachable")

    def _load_once(self, config: ModelConfig, version: int, location: str) -> LoadedVersion:
        step = _Steps(config.name, version)  # a load can take many seconds: say where it is
        with step("copy to a local folder"):
            folder = self._copies.fetch(location)
        with contextlib.ExitStack() as undo:  # a failed step frees what the steps before it made
            undo.callback(self._copies.drop, location)  # the next attempt copies afresh
            with step("platform load"):
                servable = self._loader(config, folder)
            undo.callback(servable.close)
            with step("runner"):
                runner = self._runner_factory(config.name, version, folder, servable)
            undo.callback(runner.close)
            with step("warm-up"):
                self._warmup(folder, servable, runner)
            undo.pop_all()
        return LoadedVersion(config.name, version, folder, servable, runner)

    def free(self, loaded: LoadedVersion, location: str) -> None:
        """Retire ``loaded`` (waiting for its leases) and drop its local copy."""
        try:
            loaded.retire()
        except Exception:  # a model that fails to close must not stop the others
            log.exception("Unloading servable version {name: %s version: %d} failed", loaded.model, loaded.version)
        self._copies.drop(location)

    def stop(self) -> None:
        """End the waits between retries; loads from now on are not retried."""
        self._stop.set()

    def close(self) -> None:
        """Remove the cache folder this made (call once every version is freed)."""
        self._copies.close()


class _Steps:
    """Logs each step of one load attempt with the seconds it took (nothing when it fails: the error is logged)."""

    def __init__(self, model: str, version: int) -> None:
        self._name = f"{{name: {model} version: {version}}}"

    @contextlib.contextmanager
    def __call__(self, what: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        log.info("Loading servable %s: %s took %.2f s", self._name, what, time.monotonic() - start)
