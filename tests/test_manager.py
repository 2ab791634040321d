"""The manager with an in-memory servable: versions come and go, leases hold unloads back."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.config import ModelConfig
from modelserve.errors import FailedPrecondition, InvalidArgument, NotFound
from modelserve.manager import ManagerOptions, ModelManager
from modelserve.policy import State, VersionPolicy
from modelserve.testing import EchoServable


class Runner:
    def __init__(self, servable: EchoServable) -> None:
        self.servable = servable

    async def predict(self, *args: object, **kwargs: object) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        pass


def make_manager(fail: set[int] = frozenset()) -> tuple[ModelManager, dict[int, EchoServable]]:
    loaded: dict[int, EchoServable] = {}

    def loader(config: ModelConfig, path: Path) -> EchoServable:
        version = int(path.name)
        if version in fail:
            raise FailedPrecondition(f"cannot load {path}")
        loaded[version] = EchoServable(version)
        return loaded[version]

    options = ManagerOptions(file_system_poll_wait_seconds=0, max_num_load_retries=0)
    manager = ModelManager(options, loader, lambda config, version, servable: Runner(servable))
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
    manager, _ = make_manager()
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
    with pytest.raises(NotFound, match="^Could not find any versions of model nope$"):
        manager.status("nope")
    with pytest.raises(NotFound, match="^Could not find version 8 of model m$"):
        manager.status("m", 8)
    manager.close()


def test_removed_model_unloads_but_keeps_history(tmp_path: Path) -> None:
    manager, loaded = make_manager()
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
