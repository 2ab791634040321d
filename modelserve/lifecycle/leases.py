"""Leases: how a request holds on to the version it uses while versions come and go.

The manager publishes an immutable ``Routes`` per model (replaced whole on
every change, never mutated); a request looks its version up there and takes
a ``Lease`` on the ``LoadedVersion``. Retiring a version refuses new leases
and waits for the held ones to end before the model is freed, so an unload
never cuts a request short (TF Serving's ``ServableHandle``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..execution.runner import Runner
from ..platforms.servable import InstanceStatus, Reporting, Servable


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
        # Every request takes and releases the lock itself (a C call); only retire() waits on it.
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)

    def instances(self) -> tuple[InstanceStatus, ...]:
        """Where its instances run, their memory and calls (empty for a servable that does not say)."""
        servable = self.servable
        return tuple(servable.instance_status()) if isinstance(servable, Reporting) else ()

    def acquire(self) -> bool:
        """Take a lease; False once the version is retiring (look it up again)."""
        with self._lock:
            if self._retiring:
                return False
            self._leases += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._leases -= 1
            if self._leases == 0 and self._retiring:
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

    @cached_property  # looked up by every request that names no version; the table never changes
    def latest(self) -> LoadedVersion | None:
        return self.available[max(self.available)] if self.available else None
