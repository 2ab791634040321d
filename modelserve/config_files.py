"""Read TF Serving's text-format config files into the plain dataclasses of ``config``.

Parsing uses protobuf's text_format against modelserve's own copy of TF
Serving's protos, so every file TF Serving reads parses here unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from google.protobuf.message import Message

from .config import ModelConfig
from .errors import InvalidArgument
from .policy import VersionPolicy
from .protos import pb
from .protos._pool import POOL

log = logging.getLogger(__name__)

_MODEL_TYPES = {1: "tensorflow"}


def parse_text(text: str, message: Message, path: str) -> Message:
    """Parse ``text`` into ``message``; errors name the file, line and column."""
    try:
        text_format.Parse(text, message, descriptor_pool=POOL)
    except text_format.ParseError as exc:
        where = f"line {exc.GetLine()} column {exc.GetColumn()}: " if exc.GetLine() else ""
        detail = str(exc).split(" : ", 1)[-1]
        raise InvalidArgument(f"Invalid protobuf file: '{path}': {where}{detail}") from None
    return message


def read_text_proto(path: str, message: Message) -> Message:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidArgument(f"Invalid protobuf file: '{path}': {exc.strerror}") from None
    return parse_text(text, message, path)


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
