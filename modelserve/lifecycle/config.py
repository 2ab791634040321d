"""Model configuration: TF Serving's ModelServerConfig as plain dataclasses, and its text files.

A config names the models to serve; each has a base path of numeric version
folders, a platform, a version policy and version labels.

Files are parsed with protobuf's text_format against modelserve's own copy of
TF Serving's protos, so every file TF Serving reads parses here unchanged.
Files may be local paths or fsspec URIs, as TF Serving reads any TF file
system.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgument
from ..execution import placement
from ..execution.placement import DEFAULT as DEFAULT_PLACEMENT
from ..execution.placement import Placement
from ..protos import pb
from ..protos.text import read_text_proto
from ..storage import check_uri
from .policy import VersionPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: str
    platform: str = "tensorflow"
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: Mapping[str, int] = field(default_factory=dict)
    placement: Placement = DEFAULT_PLACEMENT  # modelserve's extension: devices, instances, memory cap


def validate(models: Sequence[ModelConfig]) -> None:
    """TF Serving's checks on a model list, with its messages; and each base path's storage protocol is
    one ``--storage_protocols`` allows (from a file and from a reload RPC alike)."""
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise InvalidArgument(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
        if not _absolute_or_uri(model.base_path):
            raise InvalidArgument(
                f"Expected model {model.name} to have an absolute path or URI; got base_path()={model.base_path}"
            )
        check_uri(model.base_path)


def _absolute_or_uri(path: str) -> bool:
    return path.startswith("/") or "://" in path


# ---- text files -------------------------------------------------------------------------------

_MODEL_TYPES = {1: "tensorflow"}


def read_model_config_file(path: str) -> list[ModelConfig]:
    return model_configs(read_text_proto(path, pb.ModelServerConfig()))


def model_configs(server_config: Any) -> list[ModelConfig]:
    """ModelServerConfig message → model list (only ``model_config_list`` is supported, as TF Serving)."""
    which = server_config.WhichOneof("config")
    if which is None:
        return []
    if which != "model_config_list":
        raise InvalidArgument(
            "ServerModelConfig type not supported by HandleReloadConfigRequest. "
            "Only ModelConfigList is currently supported"
        )
    return [model_config(c) for c in server_config.model_config_list.config]


def model_config(config: Any) -> ModelConfig:
    name = config.name
    if config.model_type and config.model_platform:
        raise InvalidArgument(
            f"Illegal setting both ModelServerConfig::model_type (deprecated) and "
            f"ModelServerConfig::model_platform, model name is {name}"
        )
    platform = config.model_platform or _MODEL_TYPES.get(config.model_type, "")
    if not platform:
        raise InvalidArgument(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {name}"
        )
    if config.HasField("logging_config"):
        log.warning("Model %s: logging_config is not supported and is ignored", name)
    return ModelConfig(
        name=name,
        base_path=config.base_path,
        platform=platform,
        policy=version_policy(config),
        labels=dict(config.version_labels),
        placement=placement.from_proto(name, config.placement),
    )


def version_policy(config: Any) -> VersionPolicy:
    if not config.HasField("model_version_policy"):
        return VersionPolicy()
    policy = config.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy("all")
    if which == "specific":
        return VersionPolicy("specific", versions=tuple(policy.specific.versions))
    if which == "latest":
        return VersionPolicy("latest", num_versions=policy.latest.num_versions or 1)
    return VersionPolicy()
