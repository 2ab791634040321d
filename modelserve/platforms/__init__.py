"""Model platforms: which files a version folder holds decides how it loads.

Each platform module offers ``load(version_dir, options) -> Servable`` and is
imported only when a model of that platform loads, so TensorFlow and torch
stay optional.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import FailedPrecondition, InvalidArgument, MissingExtra, NotFound
from . import cpus
from .servable import Servable

log = logging.getLogger(__name__)

# platform name -> "module:function"
LOADERS = {
    "onnx": "modelserve.platforms.onnx:load",
    "tensorflow": "modelserve.platforms.tensorflow:load",
    "pytorch": "modelserve.platforms.pytorch:load",
    "tflite": "modelserve.platforms.tflite:load",
}

# Names a models.config may use for each platform. TF Serving's configs all say
# "tensorflow", so that name never stops another platform's files from loading.
ALIASES = {
    "tensorflow": None,  # detect from the files
    "": None,
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxruntime_onnx": "onnx",
    "pytorch": "pytorch",
    "torch": "pytorch",
    "pytorch_libtorch": "pytorch",
    "tflite": "tflite",
    "litert": "tflite",
}


@dataclass(frozen=True)
class LoadOptions:
    """Platform-neutral knobs; each platform reads what applies to it.

    ``intra_op_threads``/``inter_op_threads`` of 0: as many as the CPUs this process may use
    (``threads``), not the runtime's own default, which counts the host's cores.
    ``device`` is ``cpu`` or ``cuda:N``; ``memory_limit_bytes`` of 0 means no cap.
    ``prefer_tflite_model``: a folder holding both a SavedModel and ``model.tflite``
    serves the latter (TF Serving's ``--prefer_tflite_model``). ``tflite_interpreters``:
    how many interpreters a TF Lite model runs at once (``--num_tflite_pools``; 0 = one per CPU).
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    saved_model_tags: tuple[str, ...] = ("serve",)
    device: str = "cpu"
    memory_limit_bytes: int = 0
    gpu_memory_fraction: float = 0.0
    prefer_tflite_model: bool = False
    tflite_interpreters: int = 0
    extra: dict[str, str] = field(default_factory=dict)


class Loader(Protocol):
    def __call__(self, version_dir: Path, options: LoadOptions) -> Servable: ...


def threads(value: int) -> int:
    """A thread count from LoadOptions, with 0 meaning the CPUs this process may really use
    (affinity and cgroup quota, ``cpus.available``)."""
    return value if value > 0 else cpus.available()


def check_platform_name(model: str, platform: str) -> None:
    """TF Serving's error for a platform name nobody implements."""
    if platform not in ALIASES:
        raise InvalidArgument(f"Model {model} requests unsupported platform {platform}")


def detect(version_dir: Path, prefer_tflite_model: bool = False) -> str:
    """The platform whose files ``version_dir`` holds.

    TF Serving's two formats first: a SavedModel, unless ``model.tflite`` sits
    beside it and ``prefer_tflite_model`` is set; then ``model.tflite`` alone.
    """
    if not version_dir.is_dir():
        raise NotFound(f"Could not find version directory {version_dir}")
    names = {p.name for p in version_dir.iterdir()}
    tflite = "model.tflite" in names
    if "saved_model.pb" in names or "saved_model.pbtxt" in names:
        return "tflite" if tflite and prefer_tflite_model else "tensorflow"
    if tflite:
        return "tflite"
    if any(n.endswith(".onnx") for n in names):
        return "onnx"
    if "model.pt2" in names or "model.pt" in names:
        return "pytorch"
    raise FailedPrecondition(
        f"No model found in {version_dir}: expected model.onnx (or one *.onnx), saved_model.pb, "
        "model.tflite, model.pt2 or model.pt"
    )


def resolve(model: str, configured: str, version_dir: Path, prefer_tflite_model: bool = False) -> str:
    """The platform to load ``version_dir`` with, given the config's ``model_platform``."""
    check_platform_name(model, configured)
    return ALIASES[configured] or detect(version_dir, prefer_tflite_model)


def before_tensorflow() -> None:
    """Call before importing TensorFlow: loads triton first when it is installed.

    triton (a dependency of PyPI's CUDA builds of torch) crashes the process when its native
    library loads after TensorFlow's (TF 2.21 with triton 3.8: a segmentation fault in
    ``import triton``, which ``torch.export.load`` does); loaded first, both work, so one server
    can hold TensorFlow and PyTorch models. Costs ~0.1 s, once, where triton exists.
    """
    if "tensorflow" in sys.modules or "triton" in sys.modules:
        return
    with contextlib.suppress(Exception):  # not installed, or broken: TensorFlow alone still works
        import triton  # noqa: F401


def loader(platform: str) -> Loader:
    module_name, func = LOADERS[platform].split(":")
    if platform == "tensorflow":
        before_tensorflow()
    first = module_name not in sys.modules
    start = time.monotonic()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = {"tensorflow": "tensorflow", "pytorch": "torch"}.get(platform, platform)
        raise MissingExtra(
            f"The {platform} platform needs an extra: pip install 'modelserve[{extra}]' ({exc})"
        ) from exc
    if first:  # importing torch or TensorFlow alone can take many seconds
        log.info("Imported the %s platform in %.2f s", platform, time.monotonic() - start)
    found: Loader = getattr(module, func)
    return found


def v2_platform(platform: str, version_dir: Path) -> str:
    """The Open Inference Protocol's name for how a version is served (model metadata's ``platform``):
    Triton's names where Triton has one; a PyTorch folder says which of its two files loads."""
    if platform == "pytorch":
        exported = (version_dir / "model.pt2").is_file()  # pytorch.MODEL_FILES: model.pt2 wins
        return "pytorch_exportedprogram" if exported else "pytorch_torchscript"
    return V2_PLATFORMS.get(platform, platform)


# platform -> V2 name (PyTorch's depends on its file: ``v2_platform``)
V2_PLATFORMS = {"onnx": "onnxruntime_onnx", "tensorflow": "tensorflow_savedmodel", "tflite": "tflite"}


def load(model: str, configured: str, version_dir: Path, options: LoadOptions) -> Servable:
    return loader(resolve(model, configured, version_dir, options.prefer_tflite_model))(version_dir, options)
