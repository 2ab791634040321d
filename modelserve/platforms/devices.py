"""Which devices this process may use, found without importing torch or TensorFlow.

Device names are ``cpu`` and ``cuda:N``, N counted among the GPUs that
``CUDA_VISIBLE_DEVICES`` leaves visible (the numbering torch and onnxruntime
use). The GPUs the driver has are counted from ``/proc/driver/nvidia/gpus``,
else from ``nvidia-smi -L``; none of them: no CUDA. Docker's
``NVIDIA_VISIBLE_DEVICES`` is honoured when it is the only one of the two set
(``visibility_from_nvidia``). Device memory comes from NVML (the driver's
``libnvidia-ml.so.1`` through ctypes), so no CUDA runtime starts to read it.
docs/gpu.md is the user's page.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import FailedPrecondition, InvalidArgument, ResourceExhausted

log = logging.getLogger(__name__)

CPU = "cpu"
PROC_GPUS = Path("/proc/driver/nvidia/gpus")
_DEVICE = re.compile(r"(?i)\s*(cpu|cuda|gpu)(?::(\d+))?\s*")
# NVIDIA_VISIBLE_DEVICES values that mean "no GPU" (nvidia-container-runtime's).
_NO_GPU = {"", "none", "void"}


def parse_device(text: str) -> str:
    """``cpu``, ``cuda``/``gpu`` (GPU 0), ``cuda:N``/``gpu:N`` → ``cpu`` or ``cuda:N``."""
    match = _DEVICE.fullmatch(text)
    if match is None:
        raise InvalidArgument(f"Unknown device {text!r}: expected cpu, cuda:N or gpu:N")
    kind, index = match.group(1).lower(), match.group(2)
    if kind == "cpu":
        if index is not None:
            raise InvalidArgument(f"Unknown device {text!r}: the CPU is just 'cpu'")
        return CPU
    return f"cuda:{int(index or 0)}"


def parse_devices(entries: Iterable[str]) -> tuple[str, ...]:
    """Devices of a config's ``devices`` entries, each of which may list several, comma-separated."""
    found: list[str] = []
    for entry in entries:
        for part in entry.split(","):
            device = parse_device(part)
            if device in found:
                raise InvalidArgument(f"Device {device} is listed twice")
            found.append(device)
    return tuple(found)


def cuda_index(device: str) -> int:
    return int(device.partition(":")[2] or 0)


# ---- the driver's GPUs ------------------------------------------------------------------------


def driver_gpu_count(proc: Path = PROC_GPUS, smi: Callable[[], str | None] | None = None) -> int:
    """GPUs the NVIDIA driver shows this process (0 when there is no driver)."""
    if proc.is_dir():
        return sum(1 for _ in proc.iterdir())
    output = (smi or _nvidia_smi_list)()
    if output is None:
        return 0
    return sum(1 for line in output.splitlines() if line.startswith("GPU "))


def _nvidia_smi_list() -> str | None:
    """``nvidia-smi -L``, or None when there is no nvidia-smi or it fails (no driver)."""
    command = shutil.which("nvidia-smi")
    if command is None:
        return None
    try:
        done = subprocess.run([command, "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


# ---- visibility ---------------------------------------------------------------------------


def visibility_from_nvidia(environ: Mapping[str, str], driver_gpus: int) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` that Docker's ``NVIDIA_VISIBLE_DEVICES`` asks for, or None.

    Only when ``NVIDIA_VISIBLE_DEVICES`` is set and ``CUDA_VISIBLE_DEVICES`` is
    not: ``all`` leaves every GPU visible (None); ``none``, ``void`` or empty
    hides them all (""); a list (indices or UUIDs) becomes the visible list,
    unless the driver already shows exactly that many GPUs: then a container
    runtime has applied it and the GPUs are already renumbered 0..n-1 (None).
    """
    if "CUDA_VISIBLE_DEVICES" in environ or "NVIDIA_VISIBLE_DEVICES" not in environ:
        return None
    value = environ["NVIDIA_VISIBLE_DEVICES"].strip()
    if value.lower() == "all":
        return None
    if value.lower() in _NO_GPU:
        return ""
    entries = [e.strip() for e in value.split(",") if e.strip()]
    if len(entries) == driver_gpus:
        return None
    return ",".join(entries)


def apply_nvidia_visibility(environ: MutableMapping[str, str], driver_gpus: int) -> None:
    """Set ``CUDA_VISIBLE_DEVICES`` from ``NVIDIA_VISIBLE_DEVICES`` (see ``visibility_from_nvidia``).

    Call it before any CUDA runtime starts in the process (torch, onnxruntime's
    CUDA provider, TensorFlow read the variable once, when they start).
    """
    mapped = visibility_from_nvidia(environ, driver_gpus)
    if mapped is not None:
        environ["CUDA_VISIBLE_DEVICES"] = mapped
        log.info("NVIDIA_VISIBLE_DEVICES=%s: CUDA_VISIBLE_DEVICES set to %r", environ["NVIDIA_VISIBLE_DEVICES"], mapped)


def visible_gpus(environ: Mapping[str, str], driver_gpus: int) -> tuple[str, ...]:
    """The driver's GPUs that CUDA will number 0, 1, ...: their indices or UUIDs, in CUDA's order.

    CUDA's rules for ``CUDA_VISIBLE_DEVICES``: the list is read up to its
    first invalid entry (an index the driver does not have, or anything that
    is neither an index nor a ``GPU-``/``MIG-`` UUID); a repeated entry ends
    it too; empty, or ``-1``, hides every GPU.
    """
    if driver_gpus <= 0:
        return ()
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return tuple(str(i) for i in range(driver_gpus))
    visible: list[str] = []
    for entry in (e.strip() for e in value.split(",")):
        if entry.isdigit() and int(entry) < driver_gpus:
            entry = str(int(entry))
        elif not entry.upper().startswith(("GPU-", "MIG-")):
            break
        if entry in visible:
            break
        visible.append(entry)
    return tuple(visible[:driver_gpus])


@dataclass(frozen=True)
class Inventory:
    """The GPUs this process may use, as CUDA will number them; ``gpus`` holds the driver's ids."""

    gpus: tuple[str, ...] = ()

    @property
    def cuda(self) -> bool:
        return bool(self.gpus)

    @property
    def default_device(self) -> str:
        """cuda:0 when a GPU is visible, else cpu."""
        return "cuda:0" if self.gpus else CPU

    def resolve(self, model: str, devices: tuple[str, ...]) -> tuple[str, ...]:
        """The devices a model runs on: its own (checked), or the default when it names none.

        A GPU the machine has not got fails the load, except on a machine
        without any GPU, where the model runs on the CPU (logged), so that
        one config serves on a laptop and on a GPU server.
        """
        if not devices:
            return (self.default_device,)
        resolved: list[str] = []
        for device in devices:
            if device != CPU and not self.gpus:
                log.warning("Model %s asks for %s but no GPU is visible; it runs on the CPU", model, device)
                device = CPU
            elif device != CPU and cuda_index(device) >= len(self.gpus):
                raise FailedPrecondition(
                    f"Model {model} asks for {device} but only {len(self.gpus)} GPU(s) are visible "
                    f"(cuda:0..cuda:{len(self.gpus) - 1}; CUDA_VISIBLE_DEVICES="
                    f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})"
                )
            if device not in resolved:
                resolved.append(device)
        return tuple(resolved)

    def nvml_id(self, device: str) -> str | None:
        """The driver's index or UUID of ``cuda:N`` (NVML ignores CUDA_VISIBLE_DEVICES)."""
        if device == CPU or cuda_index(device) >= len(self.gpus):
            return None
        return self.gpus[cuda_index(device)]


def detect(environ: Mapping[str, str] | None = None, driver_gpus: int | None = None) -> Inventory:
    """The visible GPUs, from the driver and ``CUDA_VISIBLE_DEVICES``."""
    env = os.environ if environ is None else environ
    count = driver_gpu_count() if driver_gpus is None else driver_gpus
    return Inventory(visible_gpus(env, count))


def prepare(environ: MutableMapping[str, str]) -> Inventory:
    """At start-up, before any model loads: apply ``NVIDIA_VISIBLE_DEVICES``, then find the visible GPUs."""
    count = driver_gpu_count()
    apply_nvidia_visibility(environ, count)
    inventory = detect(environ, count)
    log.info(
        "GPUs: %d of the driver's %d visible%s",
        len(inventory.gpus),
        count,
        f" (CUDA_VISIBLE_DEVICES={environ['CUDA_VISIBLE_DEVICES']})" if "CUDA_VISIBLE_DEVICES" in environ else "",
    )
    return inventory


# ---- device memory (NVML) ----------------------------------------------------------------------


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class Nvml:
    """Device memory from the driver's NVML library; every method answers None without a driver."""

    def __init__(self) -> None:
        self._lib: ctypes.CDLL | None = None
        self._tried = False

    def _library(self) -> ctypes.CDLL | None:
        if not self._tried:
            self._tried = True
            try:
                lib = ctypes.CDLL("libnvidia-ml.so.1")
                if lib.nvmlInit_v2() == 0:
                    self._lib = lib
            except (OSError, AttributeError):
                self._lib = None
        return self._lib

    def memory(self, nvml_id: str | None) -> tuple[int, int] | None:
        """(free, total) bytes of a GPU given by driver index or UUID."""
        if nvml_id is None or (lib := self._library()) is None:
            return None
        handle = ctypes.c_void_p()
        if nvml_id.isdigit():
            status = lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(int(nvml_id)), ctypes.byref(handle))
        else:
            status = lib.nvmlDeviceGetHandleByUUID(nvml_id.encode(), ctypes.byref(handle))
        info = _NvmlMemory()
        if status != 0 or lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(info)) != 0:
            return None
        return int(info.free), int(info.total)


# ---- fitting a model --------------------------------------------------------------------------


def format_bytes(count: int) -> str:
    """``1.50 GiB (1610612736 bytes)``: readable, and exact for whoever compares numbers."""
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{count} bytes" if unit == "bytes" else f"{size:.2f} {unit} ({count} bytes)"
        size /= 1024
    raise AssertionError("unreachable")


def check_fits(weights: int, limit: int, free: int | None = None, total: int | None = None) -> None:
    """Refuse (RESOURCE_EXHAUSTED) weights over the instance's cap or over the device's free memory."""
    if limit and weights > limit:
        raise ResourceExhausted(
            f"its weights ({format_bytes(weights)}) exceed its memory limit there ({format_bytes(limit)})"
        )
    if free is not None and weights > free:
        of = f" of {format_bytes(total)}" if total is not None else ""
        raise ResourceExhausted(
            f"its weights ({format_bytes(weights)}) do not fit in the device's free memory ({format_bytes(free)}{of})"
        )
