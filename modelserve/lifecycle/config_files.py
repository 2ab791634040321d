"""Read TF Serving's text-format config files into the plain dataclasses of ``config``.

Parsing uses protobuf's text_format against modelserve's own copy of TF
Serving's protos, so every file TF Serving reads parses here unchanged.
Files may be local paths or fsspec URIs, as TF Serving reads any TF file
system. ``ConfigFileWatcher`` re-reads ``--model_config_file`` every
``--model_config_file_poll_wait_seconds``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InvalidArgument, ServingError
from ..execution import placement
from ..protos import pb
from ..protos.text import read_text_proto
from .config import ModelConfig
from .policy import VersionPolicy

log = logging.getLogger(__name__)

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


class ConfigFileWatcher:
    """Re-reads a model config file every ``interval`` seconds and hands each parse to ``apply``.

    TF Serving's ``--model_config_file_poll_wait_seconds``: a file that cannot
    be read or parsed, or a config that ``apply`` refuses, is logged with TF
    Serving's lines and the running config stays. ``apply`` is called from the
    watcher's thread; an unchanged file still calls it (an identical config is
    a no-op for the manager, and a file that kept failing may now apply).
    """

    def __init__(self, path: str, interval: float, apply: Callable[[Sequence[ModelConfig]], None]) -> None:
        self._path = path
        self._interval = interval
        self._apply = apply
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="modelserve-config-poll", daemon=True)
        self._thread.start()

    def check_now(self) -> bool:
        """Read and apply the file once; False when it was refused (and logged)."""
        try:
            message: Any = read_text_proto(self._path, pb.ModelServerConfig())
            if message.WhichOneof("config") is None:
                # TF Serving's ReloadConfig takes no action for an empty config, so a file caught
                # mid-write (truncated to nothing) never unloads every model.
                log.info("Taking no action for empty config.")
                return True
            models = model_configs(message)
        except ServingError as exc:
            log.error("Failed to read ModelServerConfig file: %s", exc)
            return False
        try:
            self._apply(models)
        except ServingError as exc:
            log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s: %s", exc.code.name, exc)
            return False
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check_now()
            except Exception:  # the watcher must outlive a bug in one round
                log.exception("Reloading %s failed", self._path)

    def close(self) -> None:
        """Stop watching. Does not wait: a reload in progress ends when the manager closes."""
        self._stop.set()
