"""Local paths and fsspec URIs: what every layer that reads a file needs, and nothing more.

A path is a local folder or file, ``file://...``, or an fsspec URI (``s3://``,
``gs://``, ``memory://`` ...; the matching fsspec implementation, e.g. s3fs or
gcsfs, must be installed). TF Serving reads every file through TF's file
systems, so its config files may live on any of them; so may ours.

Every remote access goes through ``filesystem``, which enforces the storage
policy of the process (``configure``; ``--storage_protocols`` and
``--storage_timeout_seconds``): fsspec resolves any protocol it knows, so
without an allow-list a base path such as ``ftp://`` or ``webhdfs://`` would
make the server open outbound connections wherever a config (or a reload
RPC) points it. A refused protocol is INVALID_ARGUMENT. Where a protocol's
implementation takes timeouts, they are passed (docs/security.md lists which).

Credentials and endpoints come from each implementation's standard chain,
read from the environment as the cloud's own tools do: ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``/``AWS_PROFILE``/instance roles for s3fs;
``STORAGE_EMULATOR_HOST``, ``GOOGLE_APPLICATION_CREDENTIALS`` or the
metadata server for gcsfs; ``AZURE_STORAGE_CONNECTION_STRING`` (or
``AZURE_STORAGE_ACCOUNT_NAME`` with a key, SAS token or service principal)
for adlfs (docs/deploy.md, "Models in object stores").

``hide_paths`` is how texts shown to callers drop local paths.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidArgument, Unavailable

# Local files, the three clouds, the Hugging Face Hub, and fsspec's in-memory file system.
DEFAULT_PROTOCOLS = ("file", "local", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "hf", "memory")


@dataclass(frozen=True)
class StoragePolicy:
    """Which fsspec protocols base paths and config files may use, and the timeout of a remote call."""

    protocols: frozenset[str] = frozenset(DEFAULT_PROTOCOLS)
    timeout_seconds: float = 30.0


# Process-wide, like the file systems fsspec caches: set once at start-up (``configure``).
_policy = StoragePolicy()


def configure(protocols: Iterable[str], timeout_seconds: float) -> StoragePolicy:
    """Set the process's storage policy (``--storage_protocols``, ``--storage_timeout_seconds``)."""
    global _policy
    _policy = StoragePolicy(frozenset(p.strip().lower() for p in protocols if p.strip()), timeout_seconds)
    return _policy


def policy() -> StoragePolicy:
    return _policy


def is_remote(path: str) -> bool:
    """A URI that fsspec resolves (``file://`` counts as local)."""
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def protocols_of(uri: str) -> list[str]:
    """Every protocol of a URI, outermost first; fsspec chains them with ``::`` (``simplecache::s3://b/k``)."""
    found = []
    for part in uri.split("::"):
        scheme, sep, _ = part.partition("://")
        if sep:
            found.append(scheme.lower())
        elif re.fullmatch(r"[A-Za-z][A-Za-z0-9+._-]*", part):
            found.append(part.lower())  # a bare protocol inside a chain
        else:
            found.append("file")  # a local path at the end of a chain
    return found


def check_uri(uri: str) -> None:
    """INVALID_ARGUMENT unless every protocol of ``uri`` is allowed (a plain local path always is)."""
    if "://" not in uri and "::" not in uri:
        return
    allowed = _policy.protocols
    refused = [p for p in protocols_of(uri) if p not in allowed]
    if refused:
        raise InvalidArgument(
            f"Storage protocol {refused[0]}:// is not allowed in {uri}; "
            f"allowed: {', '.join(sorted(allowed))} (--storage_protocols)"
        )


def read_bytes(path: str) -> bytes:
    """A whole file, local or remote (config files may live on any file system, as in TF Serving)."""
    check_uri(path)
    if not is_remote(path):
        return Path(local_path(path)).read_bytes()
    fs, root = filesystem(path)
    data: bytes = fs.cat_file(root)
    return data


def filesystem(uri: str) -> tuple[Any, str]:
    """fsspec's file system for ``uri`` with the policy's timeouts; INVALID_ARGUMENT for a refused protocol."""
    check_uri(uri)
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        # gcsfs (>= 2025.x) turns on its zonal/HNS code unless told not to, before it is imported, and that
        # code hangs against a GCS emulator; an explicit setting of the variable wins.
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import fsspec  # only remote base paths need it

    try:
        seconds = _policy.timeout_seconds
        options = {p: timeouts for p in protocols_of(uri) if (timeouts := timeout_options(p, seconds))}
        return fsspec.core.url_to_fs(uri, **options)  # type: ignore[no-any-return]
    except (ImportError, ValueError) as exc:
        raise Unavailable(f"Cannot open {uri}: {exc}") from None


def children(uri: str) -> list[tuple[str, str, bool]]:
    """(name, URI, is a folder) of each immediate child of the remote folder ``uri``, in ONE list call
    of the store (paginated past its page size); FileNotFoundError when it has none, as for a
    missing local folder (an object store has no empty folders), NotADirectoryError for an object."""
    fs, root = filesystem(uri)
    root = root.rstrip("/")
    fs.invalidate_cache(root)  # s3fs, gcsfs ... cache listings: a poll must see new versions
    if protocols_of(uri)[-1] in ("az", "abfs", "abfss"):
        # adlfs's ls() makes two calls (the name as a prefix, then the folder): list the folder only.
        entries = _azure_children(fs, root)
    else:  # s3fs and gcsfs: one '/'-delimited list call; no isdir() first, which is a list call too
        entries = [(e["name"].rstrip("/"), e["type"] == "directory") for e in fs.ls(root, detail=True)]
    found = [(name.rsplit("/", 1)[-1], fs.unstrip_protocol(name), is_dir) for name, is_dir in entries if name != root]
    if not found:
        if any(name == root and not is_dir for name, is_dir in entries):
            raise NotADirectoryError(root)
        raise FileNotFoundError(root)
    return found


def _azure_children(fs: Any, root: str) -> list[tuple[str, bool]]:
    """One List Blobs call ('/' delimited) under ``root`` ("container/path") through adlfs's client."""
    from azure.storage.blob.aio import BlobPrefix
    from fsspec.asyn import sync

    container, _, path = root.partition("/")

    async def walk() -> list[tuple[str, bool]]:
        async with fs.service_client.get_container_client(container) as client:
            prefix = f"{path}/" if path else ""
            return [
                (f"{container}/{item.name}".rstrip("/"), isinstance(item, BlobPrefix))
                async for item in client.walk_blobs(name_starts_with=prefix, delimiter="/")
            ]

    try:
        return sync(fs.loop, walk)  # type: ignore[no-any-return]
    except Exception as exc:
        if type(exc).__name__ == "ResourceNotFoundError":  # no such container
            raise FileNotFoundError(root) from None
        raise


def timeout_options(protocol: str, seconds: float) -> dict[str, Any]:
    """The storage options that bound one remote call of ``protocol``'s fsspec implementation to ``seconds``
    (connecting, and each read); empty where the implementation takes none (docs/security.md)."""
    if seconds <= 0:
        return {}
    if protocol in ("s3", "s3a"):  # s3fs: botocore's Config
        return {"config_kwargs": {"connect_timeout": seconds, "read_timeout": seconds}}
    if protocol in ("az", "abfs", "abfss"):  # adlfs >= 2023.10
        return {"connection_timeout": seconds, "read_timeout": seconds}
    if protocol in ("gs", "gcs", "http", "https"):  # gcsfs and fsspec's HTTP: aiohttp sessions
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)
        if protocol in ("gs", "gcs"):
            return {"requests_timeout": timeout}
        return {"client_kwargs": {"timeout": timeout}}
    return {}


# An absolute local path of two or more parts (or a file:// URI): what hide_paths removes from texts
# shown to callers. Not after a word character, '/', ':' or '<' ("s3://b/k", "a/b", "<base_path>/3").
_ABSOLUTE_PATH = re.compile(r"(?:file://|(?<![\w.~:/<>-]))/[^\s/'\"`:;,()\[\]{}<>]+(?:/[^\s/'\"`:;,()\[\]{}<>]*)+")


def hide_paths(text: str, base_path: str = "") -> str:
    """``text`` without local paths: ``base_path`` becomes ``<base_path>`` (so "<base_path>/3/model.onnx"
    still says which version and file), any other absolute path ``<path>``."""
    if not text:
        return text
    base = base_path.rstrip("/")
    if base:
        for form in dict.fromkeys((base, local_path(base))):
            text = re.sub(re.escape(form) + r"(?=$|[/\s'\"`:;,()\[\]{}])", "<base_path>", text)
    return _ABSOLUTE_PATH.sub("<path>", text)
