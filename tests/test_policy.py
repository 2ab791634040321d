"""The version policy as tables: aspired versions, then availability-preserving steps."""

from __future__ import annotations

import pytest

from modelserve.lifecycle.policy import (
    Action,
    State,
    VersionPolicy,
    VersionView,
    aspired_versions,
    label_refusal,
    missing_specific_versions,
    next_action,
)

A, S, L, U, E = State.AVAILABLE, State.START, State.LOADING, State.UNLOADING, State.END


@pytest.mark.parametrize(
    ("policy", "on_disk", "expected"),
    [
        (VersionPolicy(), [1, 2, 3], {3}),
        (VersionPolicy("latest", num_versions=2), [1, 2, 3], {2, 3}),
        (VersionPolicy("latest", num_versions=0), [1, 5, 3], {5}),  # 0 means 1
        (VersionPolicy("latest", num_versions=9), [1, 2], {1, 2}),
        (VersionPolicy("all"), [4, 1, 7], {1, 4, 7}),
        (VersionPolicy("specific", versions=(1, 3)), [1, 2, 3], {1, 3}),
        (VersionPolicy("specific", versions=(4,)), [1, 2], set()),
        (VersionPolicy("specific"), [1, 2], set()),
        (VersionPolicy(), [], set()),
        (VersionPolicy(), [10, 9, 100], {100}),  # numeric, not lexical
    ],
)
def test_aspired_versions(policy: VersionPolicy, on_disk: list[int], expected: set[int]) -> None:
    assert aspired_versions(policy, on_disk) == expected


def test_missing_specific_versions_are_reported() -> None:
    assert missing_specific_versions(VersionPolicy("specific", versions=(1, 4)), [1, 2]) == [4]
    assert missing_specific_versions(VersionPolicy(), [1]) == []


def v(version: int, state: State, aspired: bool) -> VersionView:
    return VersionView(version, state, aspired)


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        # first load
        ([v(1, S, True)], Action("load", 1)),
        # new version: load it while the old one serves
        ([v(1, A, False), v(2, S, True)], Action("load", 2)),
        # new version still loading: keep the old one
        ([v(1, A, False), v(2, L, True)], None),
        # new version ready: unload the old one
        ([v(1, A, False), v(2, A, True)], Action("unload", 1)),
        # new version failed: the old one keeps serving
        ([v(1, A, False), v(2, E, True)], None),
        # nothing aspired any more: unload
        ([v(1, A, False)], Action("unload", 1)),
        # two un-aspired ready versions: unload the lowest first
        ([v(1, A, False), v(2, A, False), v(3, L, True)], Action("unload", 1)),
        # several new aspired versions: highest first
        ([v(1, S, True), v(3, S, True), v(2, S, True)], Action("load", 3)),
        # unloads win over loads when an aspired version serves
        ([v(1, A, False), v(2, A, True), v(3, S, True)], Action("unload", 1)),
        # settled
        ([v(1, A, True), v(2, A, True)], None),
        ([v(1, E, False)], None),
        ([], None),
        # rollback: the newest folder was deleted, the older one is aspired again
        ([v(1, S, True), v(2, A, False)], Action("load", 1)),
        # a failed version, then a newer one: load it, the old one still serves meanwhile
        ([v(1, A, False), v(2, E, False), v(3, S, True)], Action("load", 3)),
        ([v(1, A, False), v(2, E, False), v(3, L, True)], None),
        # every folder deleted: nothing aspired, unload (requests then get NOT_FOUND)
        ([v(1, A, False), v(2, A, False)], Action("unload", 1)),
        # unloading in progress is left alone
        ([v(1, U, False), v(2, A, True)], None),
        # latest 2 of 3: load both new ones before the old goes
        ([v(1, A, False), v(2, S, True), v(3, S, True)], Action("load", 3)),
    ],
)
def test_next_action(versions: list[VersionView], expected: Action | None) -> None:
    assert next_action(versions) == expected


REFUSED = "Request to assign label to version 2 of model m, which is not currently available for inference"


@pytest.mark.parametrize(
    ("available", "current", "allow", "refused"),
    [
        # (is version 2 AVAILABLE, where the label points now, --allow_version_labels_for_unavailable_models)
        (True, None, False, False),  # new label on an available version
        (True, 1, False, False),  # moved to an available version
        (True, 1, True, False),
        (False, None, False, True),  # default: only AVAILABLE versions
        (False, 2, False, True),  # even unchanged
        (False, None, True, False),  # the flag: a new label may wait for its version...
        (False, 2, True, False),  # ...and so may an unchanged one...
        (False, 1, True, True),  # ...but an existing label never moves to an unavailable version
    ],
)
def test_label_rules(available: bool, current: int | None, allow: bool, refused: bool) -> None:
    assert label_refusal("m", 2, available, current, allow) == (REFUSED if refused else None)
