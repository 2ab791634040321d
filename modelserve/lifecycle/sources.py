"""Version discovery: the numeric children of a model's base path, local or remote.

A scan states the whole set of versions present; the manager reconciles.
A scan keeps no memory, so it can run at any time.

A base path is a local folder or an fsspec URI (``s3://``, ``gs://``,
``az://`` ...; the matching fsspec implementation, e.g. s3fs, gcsfs or adlfs,
must be installed). A scan of a remote base path is ONE listing of its
immediate children (for S3, GCS and Azure: one list call with a '/'
delimiter, paginated past 1000 children), never a walk of the versions.

An object store has no atomic folder: a version is uploaded file by file,
so a scan may see half of one. ``Uploads`` holds a remote version back until
it is complete: its own listing (one recursive list call of the version's
prefix, taken only while the version is new) must be non-empty and the same
at two polls in a row. A remote version folder is then copied into a local
cache (``cache.VersionCache``) before it loads, because every platform loads
from local files.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from .. import storage
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
    return storage.children(base_path)


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


def listing(location: str) -> dict[str, int]:
    """Every file under the remote folder ``location``: path relative to it -> size. One recursive
    listing (for S3, GCS and Azure: one list call of the version's prefix, paginated)."""
    fs, root = filesystem(location)
    root = root.rstrip("/")
    fs.invalidate_cache(root)
    found: dict[str, int] = {}
    for name, info in fs.find(root, detail=True).items():
        if info.get("type") == "directory" or not name.startswith(root + "/"):
            continue
        found[_relative(name[len(root) + 1 :], location)] = int(info.get("size") or 0)
    return found


def _relative(name: str, location: str) -> str:
    """A key below a version as a safe relative path: no '..', no absolute part (a key is any string)."""
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise Unavailable(f"Refusing object {name!r} under {location}: not a plain relative path")
    return "/".join(parts)


class Uploads:
    """Which remote versions are completely uploaded: the memory a stateless scan cannot have.

    A remote version is complete once its listing (file names and sizes) is
    non-empty and equal at two consecutive ``complete`` calls, that is two
    polls ``--file_system_poll_wait_seconds`` apart; from then on it costs no
    listing. Where there is no previous poll to compare with (a model's first
    scan: start-up, a config reload, polling off) the version is listed again
    ``settle_seconds`` later within the same call. Local versions always count
    as complete (a local folder can be moved into place atomically).
    Thread-safe.
    """

    def __init__(self, settle_seconds: float = 1.0) -> None:
        self._settle = settle_seconds
        self._lock = threading.Lock()
        self._complete: dict[str, set[str]] = {}  # model -> its version URIs found complete
        self._seen: dict[str, dict[str, dict[str, int]]] = {}  # model -> version URI -> listing at the last poll

    def complete(self, model: str, found: Mapping[int, str], first_scan: bool) -> tuple[dict[int, str], list[str]]:
        """The complete versions among ``found`` (a scan of ``model``'s base path), and a line for each
        one held back."""
        with self._lock:
            present = set(found.values())
            complete = self._complete.setdefault(model, set())
            complete &= present  # a version deleted and uploaded again is checked again
            seen = self._seen[model] = {k: v for k, v in self._seen.get(model, {}).items() if k in present}
            pending = {v: loc for v, loc in found.items() if is_remote(loc) and loc not in complete}
        waiting: list[str] = []
        for version, location in sorted(pending.items()):
            now = _listing_or_none(location)  # listings and the settling pause run without the lock
            with self._lock:
                before = seen.get(location)
            if before is None and first_scan and now:
                time.sleep(self._settle)
                before, now = now, _listing_or_none(location)
            with self._lock:
                if now and now == before:
                    complete.add(location)
                    seen.pop(location, None)
                    continue
                seen[location] = now or {}
            waiting.append(
                f"Version {version} at {location} is still being uploaded "
                f"({len(now or {})} files so far); it loads once its listing is the same at two polls"
            )
        with self._lock:
            done = {v: loc for v, loc in found.items() if not is_remote(loc) or loc in complete}
        return done, waiting

    def forget(self, model: str) -> None:
        """Drop what is known of a model removed from the config."""
        with self._lock:
            self._complete.pop(model, None)
            self._seen.pop(model, None)


def _listing_or_none(location: str) -> dict[str, int] | None:
    try:
        return listing(location)
    except (OSError, Unavailable):
        return None
