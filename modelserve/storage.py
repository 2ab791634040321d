"""Local paths and fsspec URIs: what every layer that reads a file needs, and nothing more.

A path is a local folder or file, ``file://...``, or an fsspec URI (``s3://``,
``gs://``, ``memory://`` ...; the matching fsspec implementation, e.g. s3fs or
gcsfs, must be installed). TF Serving reads every file through TF's file
systems, so its config files may live on any of them; so may ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import Unavailable


def is_remote(path: str) -> bool:
    """A URI that fsspec resolves (``file://`` counts as local)."""
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def read_bytes(path: str) -> bytes:
    """A whole file, local or remote (config files may live on any file system, as in TF Serving)."""
    if not is_remote(path):
        return Path(local_path(path)).read_bytes()
    fs, root = filesystem(path)
    data: bytes = fs.cat_file(root)
    return data


def filesystem(uri: str) -> tuple[Any, str]:
    import fsspec  # only remote base paths need it

    try:
        return fsspec.core.url_to_fs(uri)  # type: ignore[no-any-return]
    except (ImportError, ValueError) as exc:
        raise Unavailable(f"Cannot open {uri}: {exc}") from None
