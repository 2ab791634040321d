"""Version discovery: the numeric children of a model's base path, local or remote.

A scan states the whole set of versions present; the manager reconciles.
A scan keeps no memory, so it can run at any time.

A base path is a local folder or an fsspec URI (``s3://``, ``gs://``,
``memory://`` ...; the matching fsspec implementation, e.g. s3fs or gcsfs,
must be installed). A remote version folder is copied whole into a local
cache (``LocalCopies``) before it loads, because every platform loads from
local files; the copy is removed when the version unloads.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import NotFound, Unavailable
from ..storage import filesystem, is_remote, local_path


@dataclass(frozen=True)
class ScanResult:
    """Versions found under a base path: version number -> folder path or URI, and what the scan
    would warn about (TF Serving's texts; the poller logs them, once while they stay the same)."""

    versions: dict[int, str]
    warnings: tuple[str, ...] = ()


def _children(base_path: str) -> list[tuple[str, str, bool]]:
    """(name, location, is a folder) of each child; OSError when the base path cannot be listed."""
    if not is_remote(base_path):
        folder = local_path(base_path)
        paths = [(n, os.path.join(folder, n)) for n in os.listdir(folder)]
        return [(n, path, os.path.isdir(path)) for n, path in paths]
    fs, root = filesystem(base_path)
    fs.invalidate_cache(root)  # s3fs, gcsfs ... cache listings: a poll must see new versions
    if not fs.isdir(root):
        raise FileNotFoundError(root)
    entries = fs.ls(root, detail=True)
    children = []
    for entry in entries:
        name = entry["name"].rstrip("/")
        children.append((name.rsplit("/", 1)[-1], fs.unstrip_protocol(name), entry["type"] == "directory"))
    return children


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
    warnings: list[str] = []
    try:
        children = _children(base_path)
    except (OSError, Unavailable) as exc:
        message = (
            "FileSystemStoragePathSource encountered a filesystem access error: "
            f"Could not find base path {base_path} for servable {model} with error {exc}"
        )
        raise NotFound(message) from None
    found: dict[int, str] = {}
    for name, path, is_dir in sorted(children):
        version = parse_version(name)
        if version is None or not is_dir:
            continue
        if version in found:
            warnings.append(
                f"Duplicate version directories detected. Version {version} will be loaded from "
                f"{found[version]}, {path} will be ignored."
            )
            continue
        found[version] = path
    if not found:
        warnings.append(
            f"No versions of servable {model} found under base path {base_path}. "
            "Did you forget to name your leaf directory as a number (eg. '/1/')?"
        )
    return ScanResult(found, tuple(warnings))


class LocalCopies:
    """Local folders for version locations: local paths as they are, remote ones copied into a cache.

    Thread-safe; each remote version gets its own folder under ``root`` (a
    temporary folder by default), filled atomically (copied aside, then
    renamed) so that a failed copy never leaves a half version behind.
    """

    def __init__(self, root: str | None = None) -> None:
        self._root = root
        self._owned = False  # a cache folder this object made, and removes on close
        self._lock = threading.Lock()

    def fetch(self, location: str) -> Path:
        if not is_remote(location):
            return Path(local_path(location))
        target = self._folder(location)
        if target.is_dir():
            return target
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
        fs, root = filesystem(location)
        try:
            fs.get(root.rstrip("/") + "/", str(staging) + "/", recursive=True)
            staging.rename(target)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise Unavailable(f"Could not copy {location} to {target}: {exc}") from None
        return target

    def drop(self, location: str) -> None:
        """Forget a version's local copy (nothing to do for a local path)."""
        if is_remote(location):
            shutil.rmtree(self._folder(location), ignore_errors=True)

    def close(self) -> None:
        if self._root is not None and self._owned:
            shutil.rmtree(self._root, ignore_errors=True)

    def _folder(self, location: str) -> Path:
        with self._lock:
            if self._root is None:
                self._root = tempfile.mkdtemp(prefix="modelserve-cache-")
                self._owned = True
        # One folder per version URI: readable, and unique thanks to the digest.
        readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in location)[-80:]
        digest = hashlib.sha256(location.encode()).hexdigest()[:16]
        folder = Path(self._root) / f"{readable}-{digest}"
        folder.parent.mkdir(parents=True, exist_ok=True)
        return folder
