"""Versions (TF's BasicManager) on its own: steps it is told to take, routes, leases, retries, close."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import pytest

from modelserve import platforms
from modelserve.errors import Code, NotFound
from modelserve.lifecycle.config import ModelConfig
from modelserve.lifecycle.policy import Action, State
from modelserve.lifecycle.versions import Changes, Versions

from .lifecycle_fakes import FakeLoader

LOAD_1, UNLOAD_1 = Action("load", 1), Action("unload", 1)


def serving(tmp_path: Path, loader: FakeLoader, *numbers: int, **options: object) -> Versions:
    """Versions of model ``m`` with ``numbers`` aspired (folders under ``tmp_path``), nothing started."""
    versions = Versions(loader.loading(**options))
    versions.configure(ModelConfig("m", str(tmp_path)))
    versions.set_aspired("m", {n: str(tmp_path / str(n)) for n in numbers})
    return versions


def states(versions: Versions) -> dict[int, str]:
    return {s.version: s.state.name for s in versions.status("m")}


def test_a_step_starts_only_when_its_version_state_allows_it(tmp_path: Path) -> None:
    loader = FakeLoader()
    gate = loader.hold(1)
    versions = serving(tmp_path, loader, 1)
    assert states(versions) == {1: "START"}
    assert not versions.start("m", UNLOAD_1)  # not loaded: nothing to unload
    assert versions.start("m", LOAD_1)
    assert not versions.start("m", LOAD_1)  # already loading: never twice
    assert not versions.start("m", Action("load", 7)) and not versions.start("other", LOAD_1)
    assert states(versions) == {1: "LOADING"}
    gate.set()
    assert versions.changes.wait_for(lambda: states(versions) == {1: "AVAILABLE"}, 10)
    assert not versions.start("m", LOAD_1)
    assert versions.start("m", UNLOAD_1)  # Versions does what it is told: deciding is reconciliation's job
    assert versions.changes.wait_for(lambda: states(versions) == {1: "END"}, 10)
    assert loader.calls == [("m", 1)] and loader.servables["m", 1].closed
    versions.close()


def test_an_unloading_version_leaves_the_routes_before_it_waits_for_leases(tmp_path: Path) -> None:
    loader = FakeLoader()
    versions = serving(tmp_path, loader, 1)
    versions.start("m", LOAD_1)
    assert versions.changes.wait_for(lambda: versions.available("m", 1), 10)
    held = versions.lease("m")
    versions.start("m", UNLOAD_1)
    with pytest.raises(NotFound, match=r"Latest\(m\)"):
        versions.lease("m")  # the table was replaced before the unload began waiting
    assert states(versions) == {1: "UNLOADING"} and not loader.servables["m", 1].closed
    with held:
        assert held.servable is loader.servables["m", 1]  # the request in flight keeps its version
    assert versions.changes.wait_for(lambda: states(versions) == {1: "END"}, 10)
    assert loader.servables["m", 1].closed
    versions.close()


def test_a_version_unaspired_while_it_loads_is_freed_and_never_routed(tmp_path: Path) -> None:
    loader = FakeLoader()
    gate = loader.hold(1)
    versions = serving(tmp_path, loader, 1)
    versions.start("m", LOAD_1)
    versions.set_aspired("m", {})
    assert states(versions) == {1: "LOADING"}  # a load in flight is not cut short...
    routed: list[bool] = []
    loader.on_close["m", 1] = lambda: routed.append(versions.available("m", 1))
    gate.set()
    assert versions.changes.wait_for(lambda: states(versions) == {1: "END"}, 10)
    assert routed == [False] and loader.servables["m", 1].closed  # ...but what it made is freed unseen
    [report] = versions.status("m")
    assert report.error_code == Code.OK  # not a failure
    versions.close()


def test_a_version_dropped_before_its_load_started_ends_and_comes_back_when_aspired(tmp_path: Path) -> None:
    versions = serving(tmp_path, FakeLoader(), 1, 2)
    versions.set_aspired("m", {2: str(tmp_path / "2")})
    assert states(versions) == {2: "START", 1: "END"}
    versions.set_aspired("m", {1: str(tmp_path / "1")})
    assert states(versions) == {2: "END", 1: "START"}
    versions.close()


def test_failed_loads_are_retried_while_aspired_and_report_the_last_error(tmp_path: Path) -> None:
    loader = FakeLoader(fail={1})
    versions = serving(tmp_path, loader, 1, max_num_load_retries=2)
    versions.start("m", LOAD_1)
    assert versions.changes.wait_for(lambda: states(versions) == {1: "END"}, 10)
    assert loader.calls == [("m", 1)] * 3
    [failed] = versions.failures(["m", "unknown"])["m"]
    assert (failed.state, failed.error_code) == (State.END, Code.FAILED_PRECONDITION)
    assert failed.error_message == f"cannot load {tmp_path / '1'}"
    versions.close()


def test_each_load_step_is_logged_with_its_time(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    versions = serving(tmp_path, FakeLoader(), 1)
    with caplog.at_level(logging.INFO, logger="modelserve.lifecycle.loading"):
        versions.start("m", LOAD_1)
        assert versions.changes.wait_for(lambda: states(versions) == {1: "AVAILABLE"}, 10)
    steps = [r.getMessage() for r in caplog.records if r.name == "modelserve.lifecycle.loading"]
    for what in ("copy to a local folder", "platform load", "runner", "warm-up"):
        assert any(re.fullmatch(rf"Loading servable {{name: m version: 1}}: {what} took [0-9.]+ s", m) for m in steps)
    versions.close()


def test_a_load_being_retried_shows_its_last_error_while_loading(tmp_path: Path) -> None:
    loader = FakeLoader(fail={1})
    versions = serving(tmp_path, loader, 1, max_num_load_retries=5, load_retry_interval_seconds=600)
    versions.start("m", LOAD_1)
    assert versions.changes.wait_for(lambda: versions.status("m")[0].error_message != "", 10)
    [report] = versions.status("m")
    assert (report.state, report.error_code) == (State.LOADING, Code.FAILED_PRECONDITION)
    assert report.error_message == f"cannot load {tmp_path / '1'}"
    assert versions.views("m")[0].failed is False  # still being retried: the policy does not count it failed
    versions.close()  # ends the wait before the next attempt


def test_a_missing_extra_fails_the_load_at_once_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(platforms.LOADERS, "pytorch", "modelserve_no_such_platform_module:load")
    loader = FakeLoader()
    loader.before_load = lambda name, version: platforms.loader("pytorch")  # the import a real load does
    versions = serving(tmp_path, loader, 1, max_num_load_retries=5, load_retry_interval_seconds=600)
    versions.start("m", LOAD_1)
    assert versions.changes.wait_for(lambda: states(versions) == {1: "END"}, 10)
    assert loader.calls == [("m", 1)]  # no retry: installing a package is what helps
    [failed] = versions.failures(["m"])["m"]
    assert failed.error_code == Code.FAILED_PRECONDITION
    assert "pip install 'modelserve[torch]'" in failed.error_message
    versions.close()


def test_retries_stop_once_the_version_is_no_longer_aspired(tmp_path: Path) -> None:
    loader = FakeLoader(fail={1})
    versions = serving(tmp_path, loader, 1, max_num_load_retries=100)

    def second_attempt_unaspires(name: str, version: int) -> None:
        if len(loader.calls) == 2:
            versions.set_aspired("m", {})  # a scan no longer finds it

    loader.before_load = second_attempt_unaspires
    versions.start("m", LOAD_1)
    assert versions.changes.wait_for(lambda: states(versions) == {1: "END"}, 10)
    assert len(loader.calls) == 2
    versions.close()


def test_listeners_run_after_the_state_changed_and_without_the_lock(tmp_path: Path) -> None:
    versions = serving(tmp_path, FakeLoader(), 1)
    seen: list[tuple[str, dict[int, str]]] = []
    versions.listen(lambda name: seen.append((name, states(versions))))  # states() takes the lock
    versions.start("m", LOAD_1)
    assert versions.changes.wait_for(lambda: len(seen) == 1, 10)
    versions.start("m", UNLOAD_1)
    assert versions.changes.wait_for(lambda: len(seen) == 2, 10)
    assert seen == [("m", {1: "AVAILABLE"}), ("m", {1: "END"})]
    versions.close()


def test_close_ends_retry_waits_and_unloads_after_the_last_lease(tmp_path: Path) -> None:
    loader = FakeLoader(fail={2})
    # A minute between retries: close must not sit it out.
    versions = serving(tmp_path, loader, 1, 2, max_num_load_retries=5, load_retry_interval_seconds=60)
    versions.start("m", LOAD_1)
    assert versions.changes.wait_for(lambda: versions.available("m", 1), 10)
    tried = threading.Event()
    loader.before_load = lambda name, version: tried.set()
    versions.start("m", Action("load", 2))
    assert tried.wait(10)  # v2 fails, then waits a minute to retry
    held = versions.lease("m", 1)
    closing = threading.Thread(target=versions.close)
    closing.start()
    assert versions.changes.wait_for(lambda: states(versions) == {2: "END", 1: "UNLOADING"}, 10)
    assert closing.is_alive() and not loader.servables["m", 1].closed  # waits for the request in flight
    assert not versions.start("m", LOAD_1)  # nothing new starts once closing
    held.release()
    closing.join(10)
    assert not closing.is_alive() and loader.servables["m", 1].closed
    assert states(versions) == {2: "END", 1: "END"} and len(loader.calls) == 2


def test_changes_wait_rechecks_after_each_bump_and_times_out_without_one() -> None:
    changes = Changes()
    box = {"value": 0}
    assert not changes.wait_for(lambda: box["value"] == 1, 0.01)

    def later() -> None:
        box["value"] = 1
        changes.bump()

    threading.Timer(0.01, later).start()
    assert changes.wait_for(lambda: box["value"] == 1, 10)
