"""What the lifecycle reports: each load (with its outcome) and unload of a version, with its duration.

The server passes one ``LifecycleEvents`` object to the manager at start-up
(its metrics); without one it is ``NO_EVENTS``, whose methods do nothing.
Calls come from the loader and unloader threads: an implementation must be
thread-safe and quick, and must not raise. Version states are not reported
here: whoever shows them reads them when asked (``ModelManager.status``).
"""

from __future__ import annotations

from typing import Protocol


class LifecycleEvents(Protocol):
    def loaded(self, model: str, version: int, path: str, ok: bool, seconds: float) -> None:
        """A version load ended (``ok``: it serves; else it failed after its retries) after ``seconds``;
        ``path`` is where it was loaded from."""
        ...

    def unloaded(self, model: str, version: int, seconds: float) -> None:
        """A version was unloaded; freeing it took ``seconds``."""
        ...


class NoEvents:
    def loaded(self, model: str, version: int, path: str, ok: bool, seconds: float) -> None:
        pass

    def unloaded(self, model: str, version: int, seconds: float) -> None:
        pass


NO_EVENTS = NoEvents()
