"""Reconciliation (TF's AspiredVersionsManager) over real Versions: scans, policies, one step at a time."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from modelserve.errors import NotFound
from modelserve.lifecycle.config import ModelConfig
from modelserve.lifecycle.policy import VersionPolicy

from .lifecycle_fakes import FakeLoader, Parts, folders


def test_a_new_version_loads_while_the_old_one_serves_and_the_old_one_goes_after(tmp_path: Path) -> None:
    loader = FakeLoader()
    parts = Parts(loader)
    aspired = parts.aspired
    folders(tmp_path, 1)
    aspired.configure([ModelConfig("m", str(tmp_path))])
    aspired.poll()
    parts.wait(lambda: parts.states() == {1: "AVAILABLE"})
    gate = loader.hold(2)
    folders(tmp_path, 2)
    unloaded_with_2_available: list[bool] = []
    loader.on_close["m", 1] = lambda: unloaded_with_2_available.append(parts.versions.available("m", 2))
    aspired.poll()
    assert parts.states() == {2: "LOADING", 1: "AVAILABLE"}
    with parts.versions.lease("m") as lease:
        assert lease.version == 1  # requests keep being served meanwhile
    gate.set()
    parts.wait(lambda: parts.states() == {2: "AVAILABLE", 1: "END"})
    assert unloaded_with_2_available == [True]
    parts.close()


def test_a_failed_version_keeps_the_old_one_and_is_retried_only_after_it_comes_back(tmp_path: Path) -> None:
    loader = FakeLoader(fail={2})
    parts = Parts(loader)
    aspired = parts.aspired
    folders(tmp_path, 1, 2)
    aspired.configure([ModelConfig("m", str(tmp_path))])
    aspired.poll()
    parts.wait(lambda: aspired.settled("m"))
    assert parts.states() == {2: "END"}  # latest only: v1 is not aspired while v2 is on disk
    (tmp_path / "2").rmdir()
    aspired.poll()
    parts.wait(lambda: parts.states() == {2: "END", 1: "AVAILABLE"})
    loader.fail.clear()
    folders(tmp_path, 2)
    aspired.poll()
    aspired.poll()  # a rescan while nothing changed starts nothing twice
    parts.wait(lambda: parts.states() == {2: "AVAILABLE", 1: "END"})
    assert loader.calls == [("m", 2), ("m", 1), ("m", 2)]
    parts.close()


def test_a_base_path_that_cannot_be_listed_skips_only_its_model(tmp_path: Path) -> None:
    loader = FakeLoader()
    parts = Parts(loader)
    aspired = parts.aspired
    folders(tmp_path / "b", 1)
    aspired.configure([ModelConfig("a", str(tmp_path / "missing")), ModelConfig("b", str(tmp_path / "b"))])
    failures = aspired.poll()
    assert list(failures) == ["a"] and isinstance(failures["a"], NotFound)
    assert "Could not find base path" in str(failures["a"])
    parts.wait(lambda: parts.states("b") == {1: "AVAILABLE"})
    assert aspired.settled("a")  # scanned (and failed): nothing to wait for
    parts.close()


def test_settled_means_scanned_and_nothing_aspired_still_loading(tmp_path: Path) -> None:
    loader = FakeLoader()
    gate = loader.hold(1)
    parts = Parts(loader)
    aspired = parts.aspired
    folders(tmp_path, 1)
    assert aspired.settled("unknown")
    aspired.configure([ModelConfig("m", str(tmp_path))])
    assert not aspired.settled("m")  # not scanned yet
    aspired.poll(["other"])
    assert not aspired.settled("m")
    aspired.poll(["m"])
    assert not aspired.settled("m")  # loading
    gate.set()
    parts.wait(lambda: aspired.settled("m"))
    parts.close()


def test_a_removed_model_leaves_the_routes_at_once_and_unloads(tmp_path: Path) -> None:
    loader = FakeLoader()
    parts = Parts(loader)
    aspired = parts.aspired
    folders(tmp_path / "a", 1)
    folders(tmp_path / "b", 1)
    aspired.configure([ModelConfig("a", str(tmp_path / "a")), ModelConfig("b", str(tmp_path / "b"))])
    aspired.poll()
    parts.wait(lambda: aspired.settled("a") and aspired.settled("b"))
    held = parts.versions.lease("a")
    aspired.configure([ModelConfig("b", str(tmp_path / "b"))])
    assert aspired.model_names() == ["b"]
    with pytest.raises(NotFound):
        parts.versions.lease("a")
    assert parts.states("a") == {1: "UNLOADING"}  # the request in flight finishes first
    held.release()
    parts.wait(lambda: parts.states("a") == {1: "END"})
    with parts.versions.lease("b") as lease:
        assert lease.version == 1
    parts.close()


def test_a_policy_change_reconciles_on_the_next_scan(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    loader = FakeLoader()
    parts = Parts(loader)
    aspired = parts.aspired
    folders(tmp_path, 1, 2, 3)
    aspired.configure([ModelConfig("m", str(tmp_path), policy=VersionPolicy("all"))])
    aspired.poll()
    parts.wait(lambda: set(parts.states().values()) == {"AVAILABLE"})
    specific = VersionPolicy("specific", versions=(1, 9))
    aspired.configure([ModelConfig("m", str(tmp_path), policy=specific)])
    caplog.set_level(logging.WARNING, "modelserve.lifecycle.aspired")
    aspired.poll()
    parts.wait(lambda: parts.states() == {3: "END", 2: "END", 1: "AVAILABLE"})
    assert "Version 9 of servable m, which was requested to be served as a 'specific' version" in caplog.text
    assert loader.calls.count(("m", 1)) == 1  # kept, not reloaded
    parts.close()


def test_concurrent_events_start_each_step_once(tmp_path: Path) -> None:
    loader = FakeLoader()
    parts = Parts(loader)
    aspired = parts.aspired
    folders(tmp_path, *range(1, 9))
    aspired.configure([ModelConfig("m", str(tmp_path), policy=VersionPolicy("all"))])
    threads = [threading.Thread(target=aspired.poll) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    parts.wait(lambda: aspired.settled("m"))
    assert sorted(loader.calls) == [("m", n) for n in range(1, 9)]
    parts.close()


def test_the_polling_thread_finds_new_versions_and_close_stops_it(tmp_path: Path) -> None:
    loader = FakeLoader()
    parts = Parts(loader, poll_wait_seconds=0.01)
    aspired = parts.aspired
    folders(tmp_path, 1)
    aspired.configure([ModelConfig("m", str(tmp_path))])
    aspired.start_polling()
    parts.wait(lambda: parts.states() == {1: "AVAILABLE"})
    folders(tmp_path, 2)
    parts.wait(lambda: parts.states() == {2: "AVAILABLE", 1: "END"})
    aspired.close()
    assert not any(t.name == "modelserve-manager" for t in threading.enumerate())
    assert aspired.model_names() == [] and aspired.settled("m")  # closing counts every model removed
    folders(tmp_path, 3)
    assert aspired.poll() == {} and parts.states() == {2: "AVAILABLE", 1: "END"}
    parts.versions.close()
    assert parts.states() == {2: "END", 1: "END"}


def test_a_version_that_comes_back_while_it_unloads_is_loaded_again(tmp_path: Path) -> None:
    """Roll back by restoring a folder while its version still drains: it must serve again, not stay END."""
    loader = FakeLoader()
    parts = Parts(loader)
    aspired = parts.aspired
    folders(tmp_path, 1)
    aspired.configure([ModelConfig("m", str(tmp_path))])
    aspired.poll()
    parts.wait(lambda: parts.states() == {1: "AVAILABLE"})
    folders(tmp_path, 2)
    aspired.poll()
    parts.wait(lambda: parts.states() == {2: "AVAILABLE", 1: "END"})
    held = parts.versions.lease("m")  # a request still running on version 2
    (tmp_path / "2").rmdir()  # version 2 is withdrawn: 1 is aspired again, 2 unloads once its request ends
    aspired.poll()
    parts.wait(lambda: parts.states() == {2: "UNLOADING", 1: "AVAILABLE"})
    folders(tmp_path, 2)  # ...and restored before its request has ended
    aspired.poll()
    held.release()
    parts.wait(lambda: parts.states() == {2: "AVAILABLE", 1: "END"})
    with parts.versions.lease("m") as lease:
        assert lease.version == 2
    assert loader.calls == [("m", 1), ("m", 2), ("m", 1), ("m", 2)]
    parts.close()
