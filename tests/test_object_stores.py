"""Models in object stores, against real emulators on 127.0.0.1 (tests/object_stores.py): moto_server
for S3, gcp-storage-emulator for GCS, Azurite for Azure Blob.

For each store:
- docs/deploy.md's "Models in object stores" run as printed (its launch block in bash, the server as a subprocess
  configured only through the environment variables of the standard credential chains), then a new
  version uploaded while one client thread keeps predicting: every request succeeds, and the
  answers move from version 1 to version 2 once; the cache then holds version 2 only.
- polls driven one by one (polling off, in-process server): a steady poll makes ONE list call; a
  half-uploaded version is not loaded (nor even LOADING) until its listing is the same at two polls;
  a version larger than --model_cache_bytes fails with RESOURCE_EXHAUSTED while the old one serves,
  and the cache never holds more than the bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelserve.errors import Unavailable
from modelserve.lifecycle.cache import VersionCache
from modelserve.lifecycle.sources import Uploads
from modelserve.testing import running_server, server_process

from . import onnx_models as om
from .docs import fenced, section
from .object_stores import Emulator, emulator

PAGE, PART = "deploy.md", "Models in object stores"
SECTIONS = {"s3": "Amazon S3", "gs": "Google Cloud Storage", "az": "Azure Blob Storage"}
DOC_PORTS = {"s3": "9000", "gs": "9023", "az": "10000"}  # the endpoints' ports as the doc prints them
HALF_PLUS_TWO = [2.5, 3.0, 4.5]  # y = 0.5 x + 2 on [1, 2, 5]: version 1
MARKER_2 = [2.0, 2.0, 2.0]  # om.version_marker(2): version 2


def eventually(predicate: Callable[[], bool], seconds: float = 60.0) -> bool:
    """``predicate`` (a client's view: with front-end processes it may trail the engine's lifecycle by a
    state push) holds within ``seconds``."""
    end = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module", params=["s3", "gs", "az"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with emulator(request.param, tmp_path_factory.mktemp(f"emulator-{request.param}")) as running:
        yield running


def predict(url: str) -> tuple[int, list[float] | None]:
    body = json.dumps({"instances": [1.0, 2.0, 5.0]}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body), timeout=30) as response:
            return response.status, json.loads(response.read())["predictions"]
    except urllib.error.HTTPError as exc:
        return exc.code, None


def states(server_url: str, model: str) -> dict[int, str]:
    with urllib.request.urlopen(f"{server_url}/v1/models/{model}", timeout=30) as response:
        rows = json.loads(response.read())["model_version_status"]
    return {int(row["version"]): row["state"] for row in rows}


def cache_folders(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def cache_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())


# ---- docs/deploy.md's "Models in object stores" as printed, and a version uploaded under load ------


def test_every_block_of_the_doc_is_run() -> None:
    """The three store sections hold every fenced block of that part, two each (launch, curl),
    and test_doc_section_... runs them."""
    whole = fenced(section(PAGE, PART))
    assert whole == fenced(section(PAGE, *SECTIONS.values(), level=3, under=PART)) and len(whole) == 2 * len(SECTIONS)


def launch(block: str, store: Emulator, cwd: Path) -> tuple[list[str], dict[str, str]]:
    """The block's `python -m modelserve` flags, and the environment its other lines (run in bash in
    ``cwd``, the endpoint's port changed to the emulator's) leave."""
    text = block.replace(f"127.0.0.1:{DOC_PORTS[store.scheme]}", f"127.0.0.1:{store.port}")
    command_at = text.index("python -m modelserve")
    setup, command = text[:command_at], text[command_at:].replace("\\\n", " ")
    done = subprocess.run(
        ["bash", "-euc", setup + "\nenv -0"], cwd=cwd, capture_output=True, check=True, env={"PATH": os.environ["PATH"]}
    )
    env = dict(line.split("=", 1) for line in done.stdout.decode().split("\0") if "=" in line)
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "modelserve"]
    return words[3:], {k: v for k, v in env.items() if k not in ("PWD", "SHLVL", "_", "OLDPWD")}


def test_doc_section_serves_from_the_store_and_a_new_version_loads_under_load(store: Emulator, tmp_path: Path) -> None:
    launch_block, curl_block = fenced(section(PAGE, SECTIONS[store.scheme], level=3, under=PART))
    store.put({"half_plus_two/1/model.onnx": om.half_plus_two()})
    flags, env = launch(launch_block, store, tmp_path)
    with server_process(*flags, cwd=tmp_path, env=env) as server:
        out = subprocess.run(shlex.split(server.on(curl_block)), capture_output=True, check=True, text=True)
        assert json.loads(out.stdout)["predictions"] == HALF_PLUS_TWO

        url = f"http://127.0.0.1:{server.rest_port}/v1/models/half_plus_two:predict"
        answers: list[tuple[int, list[float] | None]] = []
        stop = threading.Event()

        def client() -> None:  # one request at a time, so the answers are in the order served
            while not stop.is_set():
                answers.append(predict(url))

        thread = threading.Thread(target=client)
        thread.start()
        try:
            store.put({"half_plus_two/2/model.onnx": om.version_marker(2)})
            with contextlib.suppress(AssertionError):
                for _ in range(600):  # until version 2 answers (at most 60 s)
                    if answers and answers[-1][1] == MARKER_2:
                        break
                    stop.wait(0.1)
        finally:
            stop.set()
            thread.join()
        assert answers and answers[-1] == (200, MARKER_2), server.text()[-3000:]
        assert [status for status, _ in answers] == [200] * len(answers)  # not one failed request
        switch = [prediction for _, prediction in answers].index(MARKER_2)
        assert all(p == HALF_PLUS_TWO for _, p in answers[:switch]) and all(p == MARKER_2 for _, p in answers[switch:])

        # Version 1 unloads once version 2 serves, and its cached copy goes with it.
        base = f"http://127.0.0.1:{server.rest_port}"
        for _ in range(600):
            if states(base, "half_plus_two") == {2: "AVAILABLE", 1: "END"}:
                break
            stop.wait(0.1)
        assert states(base, "half_plus_two") == {2: "AVAILABLE", 1: "END"}
        folders = cache_folders(tmp_path / "cache")
        assert len(folders) == 1 and re.search(r"half_plus_two_2-[0-9a-f]{16}$", folders[0]), folders
    assert "--model_cache_bytes" in server.text()  # the cache's bound is logged
    store.fs.rm("models/half_plus_two", recursive=True)


# ---- polls one by one: list calls, half uploads, the cache's bound ----------------------------------


def test_polls_list_once_and_half_uploads_and_oversized_versions_never_load(
    store: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in store.env.items():
        monkeypatch.setenv(key, value)
    v1, v2 = om.version_marker(1), om.version_marker(2)
    bound = 2 * len(v2) + 100  # room for two versions, as the availability-preserving policy needs
    store.put({"poll_m/1/model.onnx": v1})
    cache = tmp_path / "cache"
    flags = [
        "--model_name=poll_m",
        f"--model_base_path={store.uri('poll_m')}",
        f"--model_cache_dir={cache}",
        f"--model_cache_bytes={bound}",
        "--max_num_load_retries=0",
    ]
    with running_server(*flags) as server:
        manager = server.server.manager
        url = server.rest_url

        def poll() -> int:
            """One poll; the list calls it made."""
            before = store.list_calls()
            assert manager.poll() == {}
            server.settle()  # what the poll changed: every front-end process has it
            return store.list_calls() - before

        assert states(url, "poll_m") == {1: "AVAILABLE"}
        assert poll() == 1  # nothing new: one listing of the base path's children

        # Half an upload: a file of version 2, but not its model yet.
        store.put({"poll_m/2/README": b"version 2, uploading"})
        assert poll() == 2  # the base path, and the new version's own listing
        assert states(url, "poll_m") == {1: "AVAILABLE"}  # not even LOADING
        store.put({"poll_m/2/model.onnx": v2})
        assert poll() == 2
        assert states(url, "poll_m") == {1: "AVAILABLE"}  # its listing changed since the last poll
        poll()  # the same listing twice: complete (the download then lists it once more)
        assert eventually(lambda: states(url, "poll_m") == {2: "AVAILABLE", 1: "END"})
        assert poll() == 1  # a complete version costs no more listings
        folders = cache_folders(cache)
        assert len(folders) == 1 and "poll_m_2-" in folders[0], folders  # version 1's copy went with it

        # A version bigger than the cache's bound fails to load; version 2 keeps serving.
        store.put({"poll_m/3/model.onnx": om.version_marker(3), "poll_m/3/padding.bin": b"\0" * bound})
        poll()
        poll()
        assert eventually(lambda: states(url, "poll_m").get(3) == "END")
        (row,) = [s for s in manager.status("poll_m", 3)]
        assert "no room" in row.error_message and "--model_cache_bytes" in row.error_message
        assert row.error_code.name == "RESOURCE_EXHAUSTED"
        assert predict(f"{url}/v1/models/poll_m:predict") == (200, MARKER_2)
        assert cache_bytes(cache) <= bound
    store.fs.rm("models/poll_m", recursive=True)


# ---- the cache on its own (fsspec's in-memory store): resumed downloads, refused keys ----------------


def test_an_interrupted_download_is_never_loadable_and_a_restart_resumes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    memory.pipe({"/st_cache/1/a.bin": b"a" * 100, "/st_cache/1/sub/b.bin": b"b" * 50})
    cache = VersionCache(str(tmp_path / "cache"), max_bytes=1000)
    real_get_file = type(memory).get_file
    fetched: list[str] = []

    def get_file(self: object, remote: str, local: str, **kwargs: object) -> None:
        fetched.append(remote.rsplit("/", 1)[-1])
        if remote.endswith("b.bin") and fetched.count("b.bin") == 1:
            raise ConnectionResetError("the network failed half way")  # as a dropped connection would
        real_get_file(self, remote, local, **kwargs)

    monkeypatch.setattr(type(memory), "get_file", get_file)
    try:
        with pytest.raises(Unavailable):
            cache.fetch("memory://st_cache/1")
        (left,) = (tmp_path / "cache").iterdir()
        assert left.name.startswith(".partial-")  # the whole file stays for the retry; nothing loadable
        assert cache.used_bytes() == 0
        cache = VersionCache(str(tmp_path / "cache"), max_bytes=1000)  # a restarted server, the same folder
        folder = cache.fetch("memory://st_cache/1")
        assert fetched == ["a.bin", "b.bin", "b.bin"]  # a.bin was whole: not fetched again
        assert (folder / "a.bin").read_bytes() == b"a" * 100 and (folder / "sub" / "b.bin").read_bytes() == b"b" * 50
        assert cache.used_bytes() == 150 and cache.fetch("memory://st_cache/1") == folder  # downloaded once
        assert fetched == ["a.bin", "b.bin", "b.bin"]
        (tmp_path / "cache" / "notes.txt").write_text("not the cache's")  # left alone: not a name it makes
        memory.pipe("/st_cache/2/a.bin", b"2")
        cache.fetch("memory://st_cache/2")
        cache.drop("memory://st_cache/1")
        cache.drop("memory://st_cache/2")
        assert [p.name for p in (tmp_path / "cache").iterdir()] == ["notes.txt"] and cache.used_bytes() == 0
    finally:
        memory.rm("/st_cache", recursive=True)


def test_object_keys_that_climb_out_of_the_version_folder_are_refused(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    memory.pipe({"/st_keys/1/model.onnx": b"x", "/st_keys/1/../../escape": b"y"})
    try:
        if not any(".." in name for name in memory.find("/st_keys")):
            pytest.skip("fsspec's memory store normalises '..' in keys")
        with pytest.raises(Unavailable, match="not a plain relative path"):
            VersionCache(str(tmp_path / "cache"), max_bytes=1000).fetch("memory://st_keys/1")
    finally:
        memory.rm("/st_keys", recursive=True)


def test_each_model_keeps_its_own_complete_versions() -> None:
    """Polls of one model do not make another's complete versions new again (one memory per model)."""
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    memory.pipe({"/st_up/a/1/model.onnx": b"a", "/st_up/b/1/model.onnx": b"b"})
    uploads = Uploads(settle_seconds=0)
    a, b = {1: "memory:///st_up/a/1"}, {1: "memory:///st_up/b/1"}
    try:
        assert uploads.complete("a", a, first_scan=True)[0] == a
        assert uploads.complete("b", b, first_scan=True)[0] == b
        assert uploads.complete("a", a, first_scan=False)[0] == a
        assert uploads.complete("b", b, first_scan=False) == (b, [])
        memory.pipe({"/st_up/a/2/model.onnx": b"half"})
        found = {**a, 2: "memory:///st_up/a/2"}
        done, waiting = uploads.complete("a", found, first_scan=False)
        assert done == a and len(waiting) == 1 and "Version 2" in waiting[0]
        assert uploads.complete("a", found, first_scan=False) == (found, [])
    finally:
        memory.rm("/st_up", recursive=True)
