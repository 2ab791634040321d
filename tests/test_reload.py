"""Config reloads and labels (TF's ServerCore) over the real parts: refused whole or applied whole."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from modelserve.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, Unavailable
from modelserve.lifecycle.config import ModelConfig
from modelserve.lifecycle.policy import VersionPolicy
from modelserve.lifecycle.reload import ConfigFileWatcher

from .lifecycle_fakes import FakeLoader, Parts, folders


def test_labels_of_an_added_model_wait_for_its_first_load(tmp_path: Path) -> None:
    loader = FakeLoader()
    gate = loader.hold(1)
    parts = Parts(loader)
    folders(tmp_path, 1)
    reloading = threading.Thread(
        target=parts.reloader.reload, args=([ModelConfig("m", str(tmp_path), labels={"stable": 1})],)
    )
    reloading.start()
    parts.wait(lambda: parts.states() == {1: "LOADING"})
    assert parts.versions.labels("m") == {}  # not checked yet: nothing is available
    with pytest.raises(InvalidArgument, match="Unrecognized servable version label: stable"):
        parts.versions.lease("m", label="stable")
    gate.set()
    reloading.join(10)
    assert not reloading.is_alive() and parts.versions.labels("m") == {"stable": 1}
    with parts.versions.lease("m", label="stable") as lease:
        assert lease.version == 1
    parts.close()


def test_a_label_whose_version_did_not_load_fails_the_reload_and_the_model_serves_without_it(tmp_path: Path) -> None:
    parts = Parts(FakeLoader())
    folders(tmp_path, 1, 2)
    with pytest.raises(FailedPrecondition, match=r"^Request to assign label to version 1 of model m, which is not"):
        parts.reloader.reload([ModelConfig("m", str(tmp_path), labels={"stable": 1, "canary": 2})])
    assert parts.versions.labels("m") == {}  # all or nothing
    with parts.versions.lease("m") as lease:
        assert lease.version == 2
    parts.close()


def test_a_readded_model_has_its_labels_checked_after_its_load_again(tmp_path: Path) -> None:
    parts = Parts(FakeLoader())
    folders(tmp_path, 1)
    labelled = ModelConfig("m", str(tmp_path), labels={"stable": 1})
    parts.reloader.reload([labelled])
    parts.reloader.reload([])
    parts.wait(lambda: parts.states() == {1: "END"})
    parts.reloader.reload([labelled])  # version 1 is END now: checked at once, this would be refused
    assert parts.versions.labels("m") == {"stable": 1} and parts.states() == {1: "AVAILABLE"}
    parts.close()


def test_a_refused_config_changes_nothing(tmp_path: Path) -> None:
    loader = FakeLoader()
    parts = Parts(loader)
    folders(tmp_path / "a", 1)
    folders(tmp_path / "c", 1)
    a = ModelConfig("a", str(tmp_path / "a"), labels={"stable": 1})
    parts.reloader.reload([a])
    moved = ModelConfig("a", str(tmp_path / "a"), policy=VersionPolicy("all"), labels={"stable": 2})
    with pytest.raises(FailedPrecondition, match="assign label to version 2 of model a"):
        parts.reloader.reload([moved, ModelConfig("c", str(tmp_path / "c"))])
    assert parts.aspired.configs() == {"a": a} and parts.versions.labels("a") == {"stable": 1}
    assert loader.calls == [("a", 1)]  # c was never scanned nor loaded
    parts.close()


def test_reload_waits_for_added_models_only(tmp_path: Path) -> None:
    loader = FakeLoader()
    parts = Parts(loader)
    folders(tmp_path / "a", 1)
    folders(tmp_path / "b", 1)
    a = ModelConfig("a", str(tmp_path / "a"))
    parts.reloader.reload([a])
    gate = loader.hold(2)
    folders(tmp_path / "a", 2)
    parts.aspired.poll(["a"])
    parts.reloader.reload([a, ModelConfig("b", str(tmp_path / "b"), labels={"stable": 1})])
    assert parts.states("a") == {2: "LOADING", 1: "AVAILABLE"}  # still loading: not waited for
    assert parts.states("b") == {1: "AVAILABLE"} and parts.versions.labels("b") == {"stable": 1}
    gate.set()
    parts.close()


def test_a_reload_that_outlasts_its_timeout_stays_applied(tmp_path: Path) -> None:
    loader = FakeLoader()
    gate = loader.hold(1)
    parts = Parts(loader)
    folders(tmp_path, 1)
    with pytest.raises(DeadlineExceeded, match=r"^Config applied; still loading after 0\.01 s: m$"):
        parts.reloader.reload([ModelConfig("m", str(tmp_path))], timeout=0.01)
    assert parts.aspired.model_names() == ["m"] and parts.states() == {1: "LOADING"}
    gate.set()
    assert parts.reloader.wait_until_settled(["m"], 10) == {"m": []}
    parts.close()


def test_close_ends_a_waiting_reload_and_refuses_further_configs(tmp_path: Path) -> None:
    loader = FakeLoader()
    gate = loader.hold(1)
    parts = Parts(loader)
    folders(tmp_path, 1)
    config = [ModelConfig("m", str(tmp_path), labels={"stable": 1})]
    reloading = threading.Thread(target=parts.reloader.reload, args=(config,))
    reloading.start()
    parts.wait(lambda: parts.states() == {1: "LOADING"})
    parts.reloader.close()
    parts.aspired.close()
    reloading.join(10)
    assert not reloading.is_alive()  # it does not wait for a load nobody wants any more
    with pytest.raises(Unavailable, match="shutting down"):
        parts.reloader.apply_config(config)
    gate.set()
    parts.versions.close()
    assert parts.states() == {1: "END"} and loader.servables["m", 1].closed


def test_watcher_applies_refuses_and_ignores_an_empty_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "models.config"
    applied: list[list[str]] = []

    def apply(models: object) -> None:
        names = [m.name for m in models]  # type: ignore[attr-defined]
        if "refused" in names:
            raise FailedPrecondition("no thanks")
        applied.append(names)

    watcher = ConfigFileWatcher(str(path), 60, apply)
    caplog.set_level(logging.INFO, "modelserve.lifecycle.reload")
    path.write_text("model_config_list { config { name: 'a' base_path: '/a' model_platform: 'onnx' } }")
    assert watcher.check_now() and applied == [["a"]]
    path.write_text("")  # an editor caught mid-write: TF Serving takes no action either
    assert watcher.check_now() and applied == [["a"]]
    assert "Taking no action for empty config." in caplog.text
    path.write_text("model_config_list { config { name: 'a' ")
    assert not watcher.check_now()
    assert f"Failed to read ModelServerConfig file: Invalid protobuf file: '{path}'" in caplog.text
    path.write_text("model_config_list { config { name: 'refused' base_path: '/r' model_platform: 'onnx' } }")
    assert not watcher.check_now()
    assert "PollFilesystemAndReloadConfig failed to ReloadConfig: FAILED_PRECONDITION: no thanks" in caplog.text
    path.write_text("model_config_list { }")  # an empty list is a config: it removes every model
    assert watcher.check_now() and applied == [["a"], []]
