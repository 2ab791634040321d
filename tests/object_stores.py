"""Real object-store emulators on 127.0.0.1 for the tests: moto_server (S3), gcp-storage-emulator (GCS)
and Azurite (Azure Blob), each started on a free port, stopped by its own process id, and its request
log kept so that a test can count the list calls the server made.

scripts/test.sh installs them (moto[server] and gcp-storage-emulator from PyPI into the venv, Azurite
from npm into .tools/azurite); where one is missing its tests skip, saying what to install.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Azurite's well-known development account (documented by Microsoft; it is not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BUCKET = "models"

# gcsfs reads this when it is imported: its experimental zonal/HNS code hangs against the emulator.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


@dataclass
class Emulator:
    """One running emulator: its URI scheme, the environment a client needs, and its request log."""

    scheme: str  # s3, gs or az
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes]
    fs: Any = field(default=None)  # an fsspec file system on it, for the test's own uploads
    syncs: int = 0  # marker reads so far (list_calls)

    def uri(self, path: str) -> str:
        return f"{self.scheme}://{BUCKET}/{path}"

    def list_calls(self) -> int:
        """List requests the emulator has served so far (every kind of list: '/' delimited or not).

        Azurite writes its log asynchronously: a read of a marker object, found in the log, shows that
        every request before it is logged; only what comes before the marker is counted."""
        self.syncs += 1
        marker = f"sync-marker-{self.syncs}"
        with contextlib.suppress(FileNotFoundError):
            self.fs.cat_file(f"{BUCKET}/{marker}")
        deadline = time.monotonic() + 30
        while marker not in (text := self.log.read_text(errors="replace")) and time.monotonic() < deadline:
            time.sleep(0.05)
        # The marker's own requests (s3fs lists a missing key's "folder" too) are not the server's.
        text = "\n".join(line for line in text[: text.index(marker)].splitlines() if "sync-marker-" not in line)
        if self.scheme == "s3":  # werkzeug's access log: GET /bucket?list-type=2&prefix=...
            return len(re.findall(r'"GET /[^/? ]+\?[^" ]*list-type=2', text))
        if self.scheme == "gs":  # GET /storage/v1/b/<bucket>/o?delimiter=...&prefix=...
            return len(re.findall(r'"GET /storage/v1/b/[^/ ]+/o\?', text))
        # Azurite's debug log: one context line per request; List Blobs is ?...comp=list
        return len(re.findall(r"RequestMethod=GET RequestURL=\S*comp=list", text))

    def put(self, files: dict[str, bytes]) -> None:
        """Upload ``{path below the bucket: bytes}``, one object at a time (as an upload tool does)."""
        for path, data in files.items():
            self.fs.pipe_file(f"{BUCKET}/{path}", data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"emulator exited ({proc.returncode}):\n{log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"emulator did not listen on {port}:\n{log.read_text(errors='replace')[-2000:]}")


def azurite_binary() -> str | None:
    local = REPO / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    return str(local) if local.exists() else shutil.which("azurite-blob")


def _command(scheme: str, port: int, log: Path) -> list[str]:
    if scheme == "s3":
        return [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    if scheme == "gs":
        return [str(BIN / "gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    azurite = azurite_binary()
    assert azurite is not None
    return [
        azurite,
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--inMemoryPersistence",
        "--debug",
        str(log),
    ]


def client_env(scheme: str, port: int) -> dict[str, str]:
    """The environment variables the standard credential chains read, aimed at the emulator."""
    if scheme == "s3":
        return {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "my-key-id",
            "AWS_SECRET_ACCESS_KEY": "my-secret",
            "AWS_REGION": "us-east-1",
        }
    if scheme == "gs":
        return {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"}
    return {
        "AZURE_STORAGE_CONNECTION_STRING": (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
        )
    }


def _client(scheme: str, env: dict[str, str]) -> Any:
    """The test's own fsspec client, configured explicitly (not from this process's environment)."""
    if scheme == "s3":
        import s3fs

        return s3fs.S3FileSystem(
            endpoint_url=env["AWS_ENDPOINT_URL"],
            key=env["AWS_ACCESS_KEY_ID"],
            secret=env["AWS_SECRET_ACCESS_KEY"],
            skip_instance_cache=True,
        )
    if scheme == "gs":
        import gcsfs

        return gcsfs.GCSFileSystem(endpoint_url=env["STORAGE_EMULATOR_HOST"], token="anon", skip_instance_cache=True)
    import adlfs

    return adlfs.AzureBlobFileSystem(connection_string=env["AZURE_STORAGE_CONNECTION_STRING"], skip_instance_cache=True)


MISSING = {
    "s3": ("s3fs", "moto_server", "pip install s3fs 'moto[server]'"),
    "gs": ("gcsfs", "gcp-storage-emulator", "pip install gcsfs gcp-storage-emulator"),
    "az": ("adlfs", "azurite-blob", "pip install adlfs; npm install --prefix .tools/azurite azurite"),
}


@contextlib.contextmanager
def emulator(scheme: str, folder: Path) -> Iterator[Emulator]:
    """A started emulator with the bucket (container) ``models``; stopped, by its pid, on exit."""
    module, binary, install = MISSING[scheme]
    found = azurite_binary() if scheme == "az" else (str(BIN / binary) if (BIN / binary).exists() else None)
    if found is None:
        pytest.skip(f"{binary} is not installed ({install}; scripts/test.sh does)")
    pytest.importorskip(module, reason=f"{module} is not installed ({install})")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{scheme}-requests.log"  # Azurite writes it (--debug); the others log to stdout
    out = (folder / f"{scheme}-out.log" if scheme == "az" else log).open("wb")
    proc = subprocess.Popen(_command(scheme, port, log), cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc, Path(out.name))
        env = client_env(scheme, port)
        store = Emulator(scheme, port, env, log, proc, _client(scheme, env))
        store.fs.mkdir(BUCKET)
        yield store
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
