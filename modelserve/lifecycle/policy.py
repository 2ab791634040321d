"""Version policy: pure functions from what is on disk and loaded to what to do next.

``aspired_versions`` turns a model's ServableVersionPolicy and the versions
found on disk into the set that should be served. ``next_action`` is TF
Serving's availability-preserving policy: a new version loads while the old
one keeps serving, and the old one unloads only once a wanted version is
ready (so a version that fails to load never costs availability).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal


class State(enum.IntEnum):
    """ModelVersionStatus.State, with TF Serving's numbering."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionPolicy:
    """``latest { num_versions }``, ``all {}`` or ``specific { versions }``."""

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()


def aspired_versions(policy: VersionPolicy, on_disk: Collection[int]) -> frozenset[int]:
    """The versions ``policy`` wants served, out of those found on disk."""
    if policy.kind == "all":
        return frozenset(on_disk)
    if policy.kind == "specific":
        return frozenset(v for v in policy.versions if v in on_disk)
    keep = max(policy.num_versions, 1)  # TF Serving treats 0 as 1
    return frozenset(sorted(on_disk, reverse=True)[:keep])


def missing_specific_versions(policy: VersionPolicy, on_disk: Collection[int]) -> list[int]:
    """Versions a ``specific`` policy names that are not on disk (TF Serving logs each)."""
    if policy.kind != "specific":
        return []
    return [v for v in policy.versions if v not in on_disk]


@dataclass(frozen=True)
class VersionView:
    """What the policy needs to know of one version of a model."""

    version: int
    state: State
    aspired: bool
    failed: bool = False


@dataclass(frozen=True)
class Action:
    kind: Literal["load", "unload"]
    version: int


def next_action(versions: Sequence[VersionView]) -> Action | None:
    """Availability-preserving: one step for one model, or None when settled.

    Unload the lowest un-aspired AVAILABLE version when nothing is aspired,
    when an aspired version is AVAILABLE, or when more than one un-aspired
    version is AVAILABLE. Otherwise load the highest aspired version that has
    not started loading yet.
    """
    unaspired_ready = sorted(v.version for v in versions if not v.aspired and v.state == State.AVAILABLE)
    any_aspired = any(v.aspired for v in versions)
    aspired_ready = any(v.aspired and v.state == State.AVAILABLE for v in versions)
    if unaspired_ready and (not any_aspired or aspired_ready or len(unaspired_ready) > 1):
        return Action("unload", unaspired_ready[0])
    new = [v.version for v in versions if v.aspired and v.state == State.START]
    if new:
        return Action("load", max(new))
    return None


def label_refusal(
    model: str, version: int, available: bool, current: int | None, allow_unavailable: bool
) -> str | None:
    """TF Serving's rule for one ``version_labels`` entry; the refusal text, or None when allowed.

    A label may point at an AVAILABLE version. With
    ``--allow_version_labels_for_unavailable_models`` it may also point at one
    that is not available yet when the label is new (``current`` is None) or
    already points there; moving an existing label to an unavailable version
    is still refused.
    """
    if available or (allow_unavailable and current in (None, version)):
        return None
    return (
        f"Request to assign label to version {version} of model {model}, which is not currently available for inference"
    )
