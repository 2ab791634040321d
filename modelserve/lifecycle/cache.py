"""The local cache of remote versions: each version downloaded once, within a byte bound, atomically.

Every platform loads from local files, so a version on an object store
(``s3://``, ``gs://``, ``az://`` ...) is copied into a folder of its own
under the cache root before it loads, and that folder is removed when the
version unloads (``drop``). The cache holds what the loaded versions need,
plus the version being downloaded.

- **Bounded**: a download first reserves its version's size (the sum of
  its listing); where the reservations would pass ``max_bytes``, leftovers
  nobody is using (interrupted downloads, folders of an earlier process)
  are removed first, and if that is not enough the load fails with
  RESOURCE_EXHAUSTED (retried like any failed load, e.g. once the old
  version has unloaded). ``max_bytes`` 0: half the free space of the cache
  folder's file system when the cache is first used, logged.
- **Atomic**: files land in ``.partial-<key>``, each written as
  ``<name>.part`` and renamed once whole; the folder is renamed to its
  final name only when every file has the listed size. Only final folders
  are loaded, so a half download is never loadable.
- **Resumable**: the staging folder's name depends only on the version's
  URI, so a retried load (or a restarted server with the same
  ``--model_cache_dir``) keeps the files already whole and fetches the rest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

from ..errors import ResourceExhausted, Unavailable
from ..storage import filesystem, is_remote, local_path
from .sources import listing

log = logging.getLogger(__name__)

_STAGING = ".partial-"
_OURS = re.compile(r"(?:\.partial-)?[\w.-]*-[0-9a-f]{16}")  # the names ``_names`` makes


class VersionCache:
    """Local folders for version locations: local paths as they are, remote ones downloaded here.

    Thread-safe; the constructor does no I/O. ``root`` None: a temporary
    folder, removed by ``close``; a given root is kept (and reused).
    """

    def __init__(self, root: str | None = None, max_bytes: int = 0) -> None:
        self._root = Path(root) if root else None
        self._owned = False  # a folder this object made, and removes on close
        self._max_bytes = max_bytes
        self._bound_logged = False  # the bound is derived (0) and logged at the first download
        self._reserved: dict[str, int] = {}  # location -> bytes, for versions cached or downloading
        self._lock = threading.Lock()

    def fetch(self, location: str) -> Path:
        """The local folder of ``location``, downloaded first if remote (once: a cached copy is reused)."""
        if not is_remote(location):
            return Path(local_path(location))
        files = listing(location)
        if not files:
            raise Unavailable(f"No files under {location}")
        target, staging = self._folders(location)
        self._reserve(location, sum(files.values()))
        try:
            if not _complete(target, files):
                shutil.rmtree(target, ignore_errors=True)  # a stale copy of a changed version
                self._download(location, files, staging)
                staging.rename(target)
        except BaseException:
            self._release(location)  # its whole files stay for a retry, until another reservation
            raise
        return target

    def drop(self, location: str) -> None:
        """Remove a version's local copy and its partial download (nothing to do for a local path)."""
        if not is_remote(location):
            return
        target, staging = self._folders(location)
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        self._release(location)

    def used_bytes(self) -> int:
        """Bytes reserved by cached and downloading versions."""
        with self._lock:
            return sum(self._reserved.values())

    def close(self) -> None:
        if self._root is not None and self._owned:
            shutil.rmtree(self._root, ignore_errors=True)

    # ---- internals ------------------------------------------------------------------------------

    def _folders(self, location: str) -> tuple[Path, Path]:
        """The final and the staging folder of ``location``."""
        root = self._ensure_root()
        final, staging = _names(location)
        return root / final, root / staging

    def _ensure_root(self) -> Path:
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="modelserve-cache-"))
                self._owned = True
            self._root.mkdir(parents=True, exist_ok=True)
            if self._bound_logged:
                return self._root
            derived = self._max_bytes <= 0
            if derived:
                self._max_bytes = shutil.disk_usage(self._root).free // 2
            log.info(
                "Model cache %s: at most %d bytes%s (--model_cache_bytes)",
                self._root,
                self._max_bytes,
                " (half the free space there)" if derived else "",
            )
            self._bound_logged = True
            return self._root

    def _reserve(self, location: str, size: int) -> None:
        """Count ``size`` bytes for ``location``; RESOURCE_EXHAUSTED if the versions cached or
        downloading leave too little room. Folders no reservation covers (an interrupted download,
        an earlier process's copies) are removed first, so the disk holds no more than the bound."""
        with self._lock:
            self._reserved.pop(location, None)
            used = sum(self._reserved.values())
            if used + size > self._max_bytes:
                raise ResourceExhausted(
                    f"The model cache has no room for {location} ({size} bytes): {used} of "
                    f"{self._max_bytes} bytes are held by other versions (--model_cache_bytes)"
                )
            self._reserved[location] = size
            self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Remove the folders of versions neither cached nor downloading (lock held)."""
        assert self._root is not None
        in_use = {name for loc in self._reserved for name in _names(loc)}
        for entry in self._root.iterdir():
            # Only folders named as this cache names them: a --model_cache_dir may hold other things.
            if entry.name not in in_use and _OURS.fullmatch(entry.name):
                log.info("Model cache: removing %s, which no loaded version uses", entry.name)
                shutil.rmtree(entry, ignore_errors=True)

    def _release(self, location: str) -> None:
        with self._lock:
            self._reserved.pop(location, None)

    def _download(self, location: str, files: dict[str, int], staging: Path) -> None:
        """Fetch every file not already whole in ``staging`` (a resumed download keeps those)."""
        fs, root = filesystem(location)
        root = root.rstrip("/")
        for relative, size in sorted(files.items()):
            dest = staging / relative
            if dest.is_file() and dest.stat().st_size == size:
                continue  # whole from an earlier attempt
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_name(dest.name + ".part")
            try:
                fs.get_file(f"{root}/{relative}", str(part))
            except OSError as exc:
                raise Unavailable(f"Could not download {location}/{relative}: {exc}") from None
            got = part.stat().st_size
            if got != size:  # replaced while we listed and read it: the next attempt lists afresh
                part.unlink(missing_ok=True)
                raise Unavailable(f"{location}/{relative} changed while downloading ({got} bytes, listed {size})")
            os.replace(part, dest)
        _remove_unlisted(staging, files)


def _complete(folder: Path, files: dict[str, int]) -> bool:
    """``folder`` holds exactly ``files``, each of its listed size."""
    if not folder.is_dir():
        return False
    present = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    return present == files


def _remove_unlisted(staging: Path, files: dict[str, int]) -> None:
    """Drop files a previous attempt left that the version no longer lists (``.part`` ones included)."""
    for path in staging.rglob("*"):
        if path.is_file() and path.relative_to(staging).as_posix() not in files:
            path.unlink()


def _names(location: str) -> tuple[str, str]:
    """The final and staging folder names of a version URI: readable, and unique thanks to the digest."""
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in location)[-80:]
    key = f"{readable}-{hashlib.sha256(location.encode()).hexdigest()[:16]}"
    return key, f"{_STAGING}{key}"
