"""Version discovery: the numeric children of a model's base path.

A scan states the whole set of versions present; the manager reconciles.
A scan keeps no memory, so it can run at any time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .errors import NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanResult:
    """Versions found under a base path: version number -> folder path."""

    versions: dict[int, str]


def parse_version(name: str) -> int | None:
    """absl SimpleAtoi's rule: an optionally signed decimal integer (leading zeros fine)."""
    text = name.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isdigit() or not digits.isascii():
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


def scan(model: str, base_path: str) -> ScanResult:
    """List ``base_path``; NotFound (with TF Serving's log line) when it does not exist."""
    try:
        names = os.listdir(base_path)
    except OSError as exc:
        message = (
            "FileSystemStoragePathSource encountered a filesystem access error: "
            f"Could not find base path {base_path} for servable {model} with error {exc}"
        )
        raise NotFound(message) from None
    found: dict[int, str] = {}
    for name in sorted(names):
        path = os.path.join(base_path, name)
        version = parse_version(name)
        if version is None or not os.path.isdir(path):
            continue
        if version in found:
            log.warning(
                "Duplicate version directories detected. Version %d will be loaded from %s, %s will be ignored.",
                version, found[version], path,
            )
            continue
        found[version] = path
    if not found:
        log.warning(
            "No versions of servable %s found under base path %s. "
            "Did you forget to name your leaf directory as a number (eg. '/1/')?",
            model, base_path,
        )
    return ScanResult(found)
