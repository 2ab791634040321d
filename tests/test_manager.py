"""The manager with an in-memory servable: versions come and go, leases hold unloads back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelserve.errors import Code, FailedPrecondition, InvalidArgument, NotFound, ServingError
from modelserve.lifecycle.config import ModelConfig
from modelserve.lifecycle.manager import ManagerOptions, ModelManager, Warmup, no_warmup
from modelserve.lifecycle.policy import State, VersionPolicy
from modelserve.testing import EchoServable


class Runner:
    def __init__(self, servable: EchoServable) -> None:
        self.servable = servable

    async def predict(self, *args: object, **kwargs: object) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        pass


def make_manager(
    fail: set[int] = frozenset(), warmup: Warmup = no_warmup, **options: Any
) -> tuple[ModelManager, dict[int, EchoServable]]:
    loaded: dict[int, EchoServable] = {}

    def loader(config: ModelConfig, path: Path) -> EchoServable:
        version = int(path.name)
        if version in fail:
            raise FailedPrecondition(f"cannot load {path}")
        loaded[version] = EchoServable(version)
        return loaded[version]

    settings = ManagerOptions(**{"file_system_poll_wait_seconds": 0, "max_num_load_retries": 0, **options})
    manager = ModelManager(settings, loader, lambda model, version, folder, servable: Runner(servable), warmup)
    return manager, loaded


def versions(base: Path, *numbers: int) -> None:
    for n in numbers:
        (base / str(n)).mkdir(parents=True, exist_ok=True)


def states(manager: ModelManager, name: str = "m") -> dict[int, str]:
    return {s.version: s.state.name for s in manager.status(name)}


def test_latest_version_serves_and_older_one_unloads(tmp_path: Path) -> None:
    manager, loaded = make_manager()
    versions(tmp_path, 1)
    manager.apply_config([ModelConfig("m", str(tmp_path))])
    manager.wait_until_settled(["m"])
    with manager.lease("m") as lease:
        assert lease.version == 1
    versions(tmp_path, 2)
    manager.poll()
    assert manager.wait_for(lambda: states(manager) == {2: "AVAILABLE", 1: "END"}, 10)
    with manager.lease("m") as lease:
        assert lease.version == 2
    assert loaded[1].closed and not loaded[2].closed
    assert [s.version for s in manager.status("m")] == [2, 1]  # highest first
    manager.close()
    assert loaded[2].closed


def test_unload_waits_for_a_held_lease(tmp_path: Path) -> None:
    manager, loaded = make_manager()
    versions(tmp_path, 1)
    manager.apply_config([ModelConfig("m", str(tmp_path))])
    manager.wait_until_settled(["m"])
    lease = manager.lease("m")
    versions(tmp_path, 2)
    manager.poll()

    assert manager.wait_for(lambda: states(manager)[1] == "UNLOADING", 10)
    assert not loaded[1].closed  # still leased: not unloaded yet
    with manager.lease("m") as newer:  # new requests already go to v2
        assert newer.version == 2
    lease.release()
    assert manager.wait_for(lambda: states(manager)[1] == "END", 10)
    assert loaded[1].closed
    manager.close()


def test_failed_new_version_keeps_old_one_serving(tmp_path: Path) -> None:
    manager, _ = make_manager(fail={2})
    versions(tmp_path, 1)
    manager.apply_config([ModelConfig("m", str(tmp_path))])
    manager.wait_until_settled(["m"])
    versions(tmp_path, 2)
    manager.poll()
    manager.wait_until_settled(["m"])
    status = {s.version: s for s in manager.status("m")}
    assert status[2].state == State.END and status[2].error_code.name == "FAILED_PRECONDITION"
    assert "cannot load" in status[2].error_message
    assert status[1].state == State.AVAILABLE
    with manager.lease("m") as lease:
        assert lease.version == 1
    manager.close()


def test_lookup_errors_use_tf_serving_texts(tmp_path: Path) -> None:
    manager, _ = make_manager(allow_version_labels_for_unavailable_models=True)
    versions(tmp_path, 3, 4)
    manager.apply_config(
        [ModelConfig("m", str(tmp_path), policy=VersionPolicy("all"), labels={"stable": 3, "gone": 9})]
    )
    manager.wait_until_settled(["m"])
    with manager.lease("m", label="stable") as stable, manager.lease("m", version=4) as four:
        assert (stable.version, four.version) == (3, 4)
    with pytest.raises(NotFound, match=r"^Servable not found for request: Latest\(nope\)$"):
        manager.lease("nope")
    with pytest.raises(NotFound, match=r"^Servable not found for request: Specific\(m, 7\)$"):
        manager.lease("m", version=7)
    with pytest.raises(NotFound, match=r"^Servable not found for request: Specific\(m, 9\)$"):
        manager.lease("m", label="gone")
    with pytest.raises(InvalidArgument, match=r"^Unrecognized servable version label: canary$"):
        manager.lease("m", label="canary")
    with pytest.raises(NotFound, match=r"^Could not find any versions of model nope$"):
        manager.status("nope")
    with pytest.raises(NotFound, match=r"^Could not find version 8 of model m$"):
        manager.status("m", 8)
    manager.close()


def test_removed_model_unloads_but_keeps_history(tmp_path: Path) -> None:
    manager, _ = make_manager()
    versions(tmp_path / "a", 1)
    versions(tmp_path / "b", 1)
    manager.apply_config([ModelConfig("a", str(tmp_path / "a")), ModelConfig("b", str(tmp_path / "b"))])
    manager.wait_until_settled(["a", "b"])
    manager.apply_config([ModelConfig("b", str(tmp_path / "b"))])
    assert manager.wait_for(lambda: states(manager, "a") == {1: "END"}, 10)
    with pytest.raises(NotFound):
        manager.lease("a")
    with manager.lease("b") as lease:
        assert lease.version == 1
    manager.close()


# ---- retries, warm-up, remote base paths ------------------------------------------------------


def test_failed_load_is_retried_while_aspired(tmp_path: Path) -> None:
    attempts: list[int] = []

    def flaky(config: ModelConfig, path: Path) -> EchoServable:
        attempts.append(int(path.name))
        if len(attempts) < 3:
            raise OSError("disk hiccup")
        return EchoServable()

    options = ManagerOptions(file_system_poll_wait_seconds=0, max_num_load_retries=2, load_retry_interval_seconds=0)
    manager = ModelManager(options, flaky, lambda model, version, folder, servable: Runner(servable))
    versions(tmp_path, 1)
    manager.reload([ModelConfig("m", str(tmp_path))])
    assert attempts == [1, 1, 1] and states(manager) == {1: "AVAILABLE"}
    manager.close()


def test_retries_give_up_with_tf_serving_status(tmp_path: Path) -> None:
    manager, _ = make_manager(fail={1}, max_num_load_retries=1, load_retry_interval_seconds=0)
    versions(tmp_path, 1)
    with pytest.raises(ServingError) as raised:
        manager.reload([ModelConfig("m", str(tmp_path))])
    assert raised.value.code == Code.UNKNOWN
    assert str(raised.value).startswith("1 servable(s) did not become available: {{name: m version: 1} due to error:")
    [status] = manager.status("m")
    assert (status.state, status.error_code) == (State.END, Code.FAILED_PRECONDITION)
    manager.close()


def test_close_interrupts_a_retry_wait(tmp_path: Path) -> None:
    # A minute between retries: close() must not sit it out (the test would time out).
    manager, _ = make_manager(fail={2}, max_num_load_retries=5, load_retry_interval_seconds=60)
    versions(tmp_path, 1)
    manager.apply_config([ModelConfig("m", str(tmp_path))])
    manager.wait_until_settled(["m"])
    versions(tmp_path, 2)
    manager.poll()
    assert states(manager)[2] == "LOADING"
    manager.close()
    assert states(manager) == {2: "END", 1: "END"}


def test_warm_up_runs_before_a_version_serves_and_can_fail_it(tmp_path: Path) -> None:
    seen: list[tuple[str, bool]] = []

    def warmup(folder: Path, servable: Any, runner: Any) -> None:
        seen.append((folder.name, servable.closed))
        if folder.name == "2":
            raise FailedPrecondition("warm-up request failed")

    manager, loaded = make_manager(warmup=warmup)
    versions(tmp_path, 1)
    manager.reload([ModelConfig("m", str(tmp_path))])
    versions(tmp_path, 2)
    manager.poll()
    manager.wait_until_settled(["m"])
    assert seen == [("1", False), ("2", False)]
    status = {s.version: s for s in manager.status("m")}
    assert status[2].state == State.END and status[2].error_message == "warm-up request failed"
    assert loaded[2].closed  # a version whose warm-up failed is freed
    with manager.lease("m") as lease:
        assert lease.version == 1
    manager.close()


def test_memory_uri_base_path_is_copied_locally_and_dropped_on_unload() -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    fs.pipe("/remote_m/1/model.bin", b"one")
    folders: dict[int, Path] = {}

    def loader(config: ModelConfig, path: Path) -> EchoServable:
        content = (path / "model.bin").read_bytes()
        if content == b"broken":
            raise FailedPrecondition("broken model")
        folders[{b"one": 1, b"two": 2}[content]] = path
        return EchoServable()

    options = ManagerOptions(file_system_poll_wait_seconds=0, max_num_load_retries=0)
    manager = ModelManager(options, loader, lambda model, version, folder, servable: Runner(servable))
    try:
        manager.reload([ModelConfig("m", "memory://remote_m")])
        assert states(manager) == {1: "AVAILABLE"}
        fs.pipe("/remote_m/2/model.bin", b"broken")
        manager.poll()  # a new remote version loads once its listing is the same at two polls
        assert states(manager) == {1: "AVAILABLE"}
        manager.poll()
        assert manager.wait_for(lambda: states(manager) == {2: "END", 1: "AVAILABLE"}, 10)
        # Fixed by removing the version and uploading it again: the failed copy was not kept.
        fs.rm("/remote_m/2", recursive=True)
        manager.poll()
        fs.pipe("/remote_m/2/model.bin", b"two")
        manager.poll()
        manager.poll()
        assert manager.wait_for(lambda: states(manager) == {2: "AVAILABLE", 1: "END"}, 10)
        assert not folders[1].exists() and folders[2].is_dir()
    finally:
        manager.close()
        fs.rm("/remote_m", recursive=True)
    assert not folders[2].exists()


# ---- labels and reloads -----------------------------------------------------------------------


def test_labels_of_the_initial_config_apply_once_loaded(tmp_path: Path) -> None:
    manager, _ = make_manager()
    versions(tmp_path, 1, 2)
    manager.reload([ModelConfig("m", str(tmp_path), policy=VersionPolicy("all"), labels={"stable": 1, "canary": 2})])
    assert manager.labels("m") == {"stable": 1, "canary": 2}
    with manager.lease("m", label="stable") as lease:
        assert lease.version == 1
    manager.close()


def test_initial_label_on_a_version_that_did_not_load_fails_with_tf_text(tmp_path: Path) -> None:
    manager, _ = make_manager()
    versions(tmp_path, 1, 2)
    with pytest.raises(
        FailedPrecondition,
        match=r"^Request to assign label to version 1 of model m, which is not "
        r"currently available for inference$",
    ):
        manager.reload([ModelConfig("m", str(tmp_path), labels={"stable": 1})])  # latest: only 2 loads
    assert manager.labels("m") == {}
    manager.close()


def test_label_rules_on_reload(tmp_path: Path) -> None:
    manager, _ = make_manager()
    versions(tmp_path, 1, 2)
    all_versions = VersionPolicy("all")
    manager.reload([ModelConfig("m", str(tmp_path), policy=all_versions, labels={"stable": 1})])
    # Move the label to another AVAILABLE version: fine.
    manager.reload([ModelConfig("m", str(tmp_path), policy=all_versions, labels={"stable": 2})])
    assert manager.labels("m") == {"stable": 2}
    # Point it at a version that is not loaded: refused whole, nothing changes.
    with pytest.raises(FailedPrecondition, match="assign label to version 3 of model m"):
        manager.reload([ModelConfig("m", str(tmp_path), policy=VersionPolicy("latest"), labels={"stable": 3})])
    assert manager.labels("m") == {"stable": 2} and states(manager) == {1: "AVAILABLE", 2: "AVAILABLE"}
    manager.close()


def test_allow_unavailable_labels_permits_new_labels_only(tmp_path: Path) -> None:
    manager, _ = make_manager(allow_version_labels_for_unavailable_models=True)
    versions(tmp_path, 1)
    manager.reload([ModelConfig("m", str(tmp_path), labels={"stable": 1})])
    manager.reload([ModelConfig("m", str(tmp_path), labels={"stable": 1, "canary": 2})])  # new label
    assert manager.labels("m") == {"stable": 1, "canary": 2}
    with pytest.raises(FailedPrecondition, match="assign label to version 2 of model m"):
        manager.reload([ModelConfig("m", str(tmp_path), labels={"stable": 2, "canary": 2})])  # moves one
    manager.close()


def test_reload_errors_use_tf_texts_and_change_nothing(tmp_path: Path) -> None:
    manager, _ = make_manager(fail={5})
    versions(tmp_path / "a", 1)
    versions(tmp_path / "bad", 5)
    (tmp_path / "empty").mkdir()
    a = ModelConfig("a", str(tmp_path / "a"), platform="onnx")
    manager.reload([a])
    with pytest.raises(
        InvalidArgument,
        match=r"^Illegal to change a model's platform. For model a platform was "
        r"onnx and new platform requested is pytorch$",
    ):
        manager.reload([ModelConfig("a", str(tmp_path / "a"), platform="pytorch")])
    with pytest.raises(InvalidArgument, match=r"^Illegal to list model a multiple times in config list$"):
        manager.reload([a, a])
    with pytest.raises(FailedPrecondition, match=f"^No versions of servable e found under base path {tmp_path}"):
        manager.reload([a, ModelConfig("e", str(tmp_path / "empty"))])
    assert manager.model_names() == ["a"]
    with pytest.raises(ServingError) as raised:
        manager.reload([a, ModelConfig("bad", str(tmp_path / "bad"))])
    # TF: "{" + ("{" + ServableId "{name: .. version: ..}" + " due to error: " + status + "}, ")... + "}"
    assert str(raised.value) == (
        "1 model(s) did not become available: {{{name: bad version: 5} due to error: FAILED_PRECONDITION: "
        f"cannot load {tmp_path / 'bad' / '5'}" + "}, }"
    )
    assert raised.value.code == Code.UNKNOWN and manager.model_names() == ["a", "bad"]  # applied, as TF
    manager.close()


def test_reload_adds_removes_and_repolicies_models(tmp_path: Path) -> None:
    manager, _ = make_manager()
    versions(tmp_path / "a", 1, 2)
    versions(tmp_path / "b", 1)
    manager.reload([ModelConfig("a", str(tmp_path / "a"))])
    held = manager.lease("a")  # a request in flight on a:2
    manager.reload(
        [
            ModelConfig("a", str(tmp_path / "a"), policy=VersionPolicy("all")),
            ModelConfig("b", str(tmp_path / "b")),
        ]
    )
    manager.wait_until_settled(["a"])  # reload waits for added models only
    assert states(manager, "a") == {2: "AVAILABLE", 1: "AVAILABLE"} and states(manager, "b") == {1: "AVAILABLE"}
    manager.reload([ModelConfig("b", str(tmp_path / "b"))])
    with pytest.raises(NotFound):
        manager.lease("a")  # removed: no new requests...
    assert states(manager, "a")[2] == "UNLOADING"  # ...but the one in flight finishes first
    assert manager.wait_for(lambda: states(manager, "a")[1] == "END", 10)
    held.release()
    assert manager.wait_for(lambda: states(manager, "a") == {2: "END", 1: "END"}, 10)
    manager.close()


def test_identical_config_is_a_no_op(tmp_path: Path) -> None:
    manager, loaded = make_manager()
    versions(tmp_path, 1)
    config = [ModelConfig("m", str(tmp_path), labels={"stable": 1})]
    manager.reload(config)
    first = loaded[1]
    versions(tmp_path, 2)  # only a scan would find it: an identical config does not rescan
    manager.reload(list(config))
    assert loaded[1] is first and manager.labels("m") == {"stable": 1}
    assert states(manager) == {1: "AVAILABLE"}
    manager.close()


def test_unload_model_holds_until_load_model_through_scans_and_reloads(tmp_path: Path) -> None:
    """The V2 repository's unload: every version goes (the last one too), a scan or a reload of the
    same config does not bring it back, other models stay; load aspires it again and retries failures."""
    manager, _ = make_manager(fail={3})
    versions(tmp_path / "m", 1, 2)
    versions(tmp_path / "other", 1)
    configs = [
        ModelConfig("m", str(tmp_path / "m"), policy=VersionPolicy("all")),
        ModelConfig("other", str(tmp_path / "other")),
    ]
    manager.reload(configs)
    with manager.lease("other") as held:  # a request on another model in flight throughout
        manager.unload_model("m")
        assert states(manager) == {2: "END", 1: "END"}
        assert manager.unloaded("m")
        manager.poll()
        manager.reload([*configs[:1], ModelConfig("other", str(tmp_path / "other"))])
        assert states(manager) == {2: "END", 1: "END"}
        with pytest.raises(NotFound):
            manager.lease("m")
        assert held.version == 1
        versions(tmp_path / "m", 3)
        with pytest.raises(ServingError, match="did not become available"):
            manager.load_model("m")  # version 3 fails; 1 and 2 load again
        assert states(manager) == {3: "END", 2: "AVAILABLE", 1: "AVAILABLE"}
        assert not manager.unloaded("m")
    assert states(manager, "other") == {1: "AVAILABLE"}
    with pytest.raises(NotFound):
        manager.unload_model("nope")
    with pytest.raises(NotFound):
        manager.load_model("nope")
    manager.close()
