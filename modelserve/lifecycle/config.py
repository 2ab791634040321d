"""Model configuration: TF Serving's ModelServerConfig as plain dataclasses.

A config names the models to serve; each has a base path of numeric version
folders, a platform, a version policy and version labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import InvalidArgument
from ..execution.placement import DEFAULT as DEFAULT_PLACEMENT
from ..execution.placement import Placement
from .policy import VersionPolicy


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: str
    platform: str = "tensorflow"
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: Mapping[str, int] = field(default_factory=dict)
    placement: Placement = DEFAULT_PLACEMENT  # modelserve's extension: devices, instances, memory cap


def validate(models: Sequence[ModelConfig]) -> None:
    """TF Serving's checks on a model list, with its messages."""
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise InvalidArgument(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
        if not _absolute_or_uri(model.base_path):
            raise InvalidArgument(
                f"Expected model {model.name} to have an absolute path or URI; got base_path()={model.base_path}"
            )


def _absolute_or_uri(path: str) -> bool:
    return path.startswith("/") or "://" in path
