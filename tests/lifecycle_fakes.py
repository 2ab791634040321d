"""Fakes for the lifecycle parts: a platform loader whose loads can be held, failed and counted; the parts."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from modelserve.errors import FailedPrecondition, NotFound
from modelserve.lifecycle.aspired import AspiredVersions
from modelserve.lifecycle.config import ModelConfig
from modelserve.lifecycle.loading import VersionLoader, Warmup, no_warmup
from modelserve.lifecycle.reload import Reloader
from modelserve.lifecycle.versions import Versions
from modelserve.testing import EchoServable


class FakeRunner:
    def __init__(self, servable: EchoServable) -> None:
        self.servable = servable
        self.closed = False

    async def predict(self, *args: object, **kwargs: object) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True


class FakeLoader:
    """A ``ServableLoader`` over version folders: ``hold`` a version's load, ``fail`` it, read ``calls``."""

    def __init__(self, fail: Iterable[int] = ()) -> None:
        self.fail = set(fail)
        self.calls: list[tuple[str, int]] = []
        self.servables: dict[tuple[str, int], EchoServable] = {}
        self.on_close: dict[tuple[str, int], Any] = {}  # called as a servable closes
        self.before_load: Any = None  # called with (name, version) as each load begins
        self._gates: dict[int, threading.Event] = {}

    def hold(self, version: int) -> threading.Event:
        """Loads of ``version`` wait until the returned event is set."""
        self._gates[version] = threading.Event()
        return self._gates[version]

    def __call__(self, config: ModelConfig, path: Path) -> EchoServable:
        version = int(path.name)
        self.calls.append((config.name, version))
        if self.before_load is not None:
            self.before_load(config.name, version)
        gate = self._gates.get(version)
        if gate is not None and not gate.wait(30):
            raise AssertionError(f"version {version} was held for 30 s")
        if version in self.fail:
            raise FailedPrecondition(f"cannot load {path}")
        key = (config.name, version)
        servable = _Servable(version, lambda: self.on_close.get(key))
        self.servables[key] = servable
        return servable

    def loading(self, warmup: Warmup = no_warmup, **options: Any) -> VersionLoader:
        """A ``VersionLoader`` over this fake (no retries unless asked)."""
        settings = {"max_num_load_retries": 0, "load_retry_interval_seconds": 0, **options}
        return VersionLoader(self, lambda model, version, folder, servable: FakeRunner(servable), warmup, **settings)


class _Servable(EchoServable):
    def __init__(self, version: int, hook: Any) -> None:
        super().__init__(version)
        self._hook = hook  # looked up as it closes, so a test may set it after the load

    def close(self) -> None:
        on_close = self._hook()
        if on_close is not None:
            on_close()
        super().close()


def folders(base: Path, *numbers: int) -> None:
    for n in numbers:
        (base / str(n)).mkdir(parents=True, exist_ok=True)


class Parts:
    """The three lifecycle parts over one ``FakeLoader``, composed as ``ModelManager`` composes them."""

    def __init__(self, loader: FakeLoader, poll_wait_seconds: float = 0, allow_labels: bool = False, **options: Any):
        self.loader = loader
        self.versions = Versions(loader.loading(**options))
        self.aspired = AspiredVersions(self.versions, poll_wait_seconds)
        self.reloader = Reloader(self.aspired, self.versions, allow_labels)

    def states(self, name: str = "m") -> dict[int, str]:
        """Version -> state; empty before a scan found any."""
        try:
            return {s.version: s.state.name for s in self.versions.status(name)}
        except NotFound:
            return {}

    def wait(self, predicate: Callable[[], bool]) -> None:
        assert self.versions.changes.wait_for(predicate, 10), "condition not reached"

    def close(self) -> None:
        self.reloader.close()
        self.aspired.close()
        self.versions.close()
