"""The PyTorch platform: ``model.pt2`` (torch.export) and ``model.pt`` (TorchScript).

A version folder holds one of them, and optionally ``signature.json`` (see
docs/platforms.md) naming the inputs and outputs. An ExportedProgram knows
its input names, dtypes and shapes (a dimension exported as dynamic is -1)
and names dict outputs; the file may rename them and must agree with it. A
TorchScript program knows only its argument names, so it needs the file.

One signature, ``serving_default``: inputs are passed positionally in the
signature's order; outputs are a tensor, a tuple/list of tensors (named
``output_0``, ``output_1``... unless the file names them) or a dict of tensors
(named by its keys). Strings do not exist in torch: a DT_STRING anywhere fails
the load. ``device`` is ``cpu`` or ``cuda:N``: the program loads on the CPU,
its weights are checked against the memory limit and the device's free memory,
and only then move to the device. On a GPU each servable runs on a CUDA stream
of its own; a batch's inputs move there once and its outputs come back once.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import threading
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import torch

from ..errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from ..signatures import DEFAULT_SIGNATURE, Signature
from . import LoadOptions, threads
from .devices import check_fits, format_bytes
from .torch_signature import (
    SIGNATURE_FILE,
    Specs,
    check_no_strings,
    exported_signature,
    merge,
    read_signature_file,
)

log = logging.getLogger(__name__)

MODEL_FILES = ("model.pt2", "model.pt")

Module = Callable[..., Any]


# ---- tensors in and out --------------------------------------------------------------------


def to_torch(array: np.ndarray, device: torch.device) -> torch.Tensor:
    if array.dtype == object:
        raise InvalidArgument("PyTorch models cannot take string tensors")
    if not array.flags.writeable:  # torch warns about (and may write to) read-only buffers
        array = array.copy()
    if array.dtype == ml_dtypes.bfloat16:  # torch cannot read ml_dtypes' bfloat16 directly
        return torch.from_numpy(np.ascontiguousarray(array).view(np.int16)).view(torch.bfloat16).to(device)
    return torch.from_numpy(array).to(device)


def to_numpy(value: Any) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise FailedPrecondition(f"The model returned {type(value).__name__} where a tensor was expected")
    tensor = value.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def flatten_outputs(result: Any, names: Sequence[str]) -> list[Any]:
    """The model's outputs in ``names`` order, whether it returned a dict, a sequence or one tensor."""
    if isinstance(result, Mapping):
        missing = [n for n in names if n not in result]
        if missing and len(result) == len(names):
            return list(result.values())
        if missing:
            raise FailedPrecondition(f"The model's output dict has no {missing}; it has {list(result)}")
        return [result[n] for n in names]
    values = list(result) if isinstance(result, (tuple, list)) else [result]
    if len(values) != len(names):
        raise FailedPrecondition(f"The model returned {len(values)} outputs; its signature has {len(names)}")
    return values


class TorchServable:
    """One torch program on one device. Calls from several threads are safe in inference mode."""

    def __init__(
        self, module: Module, signature: Signature, device: torch.device, weights_bytes: int | None = None
    ) -> None:
        self._module = module
        self._signatures = {DEFAULT_SIGNATURE: signature}
        self.device = device
        self.weights_bytes = weights_bytes

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    def predict(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str] = (),
    ) -> dict[str, np.ndarray]:
        sig = self._signatures[signature]
        aliases = list(output_filter) or list(sig.outputs)
        with self._running():
            try:
                args = [to_torch(inputs[alias], self.device) for alias in sig.inputs]
                result = self._call(args)
                values = dict(zip(sig.outputs, flatten_outputs(result, list(sig.outputs)), strict=True))
                host = self._to_host([values[alias] for alias in aliases])
            except torch.cuda.OutOfMemoryError as exc:  # this batch only: the next one may fit
                raise ResourceExhausted(f"Out of memory on {self.device}: {exc}") from None
        return {alias: to_numpy(value) for alias, value in zip(aliases, host, strict=True)}

    def _call(self, args: Sequence[torch.Tensor]) -> Any:
        try:
            return self._module(*args)
        except torch.cuda.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
            raise InvalidArgument(f"{type(exc).__name__}: {exc}") from None

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        with torch.inference_mode():
            yield

    def _to_host(self, values: Sequence[Any]) -> list[Any]:
        return list(values)

    def close(self) -> None:
        del self._module


class CudaTorchServable(TorchServable):
    """A ``TorchServable`` on a GPU, with a CUDA stream of its own (so instances overlap)."""

    def __init__(
        self, module: Module, signature: Signature, device: torch.device, weights_bytes: int, cap_key: object
    ) -> None:
        super().__init__(module, signature, device, weights_bytes)
        self._stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        self._cap_key = cap_key  # its entry in ALLOCATOR_CAPS

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        with torch.inference_mode(), torch.cuda.stream(self._stream):
            yield

    def _to_host(self, values: Sequence[Any]) -> list[Any]:
        # Copies queued behind the model on this stream (into pinned memory), then one wait for all.
        host = [v.to("cpu", non_blocking=True) if isinstance(v, torch.Tensor) else v for v in values]
        self._stream.synchronize()
        return host

    def close(self) -> None:
        super().close()
        ALLOCATOR_CAPS.remove(self._cap_key)
        release_cached_memory()


def release_cached_memory() -> None:
    """Hand memory torch caches but no tensor uses back to the device (after an unload or a failed load)."""
    gc.collect()
    torch.cuda.empty_cache()


class AllocatorCaps:
    """The torch models' memory caps, as torch can enforce them: one cap per GPU for the process.

    torch's caching allocator has no per-model limit; it has a per-process
    fraction of each GPU (``torch.cuda.set_per_process_memory_fraction``).
    That fraction is kept at the sum of the caps of the torch instances on the
    GPU, so together they never take more than they were given and memory left
    to other models (onnxruntime's, capped by their own arenas) stays theirs.
    While an uncapped torch instance is on the GPU there is no fraction (1.0).
    Thread-safe; one per process, because the allocator is.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._caps: dict[object, tuple[int, int]] = {}  # instance's key -> (GPU index, cap bytes; 0: none)

    def add(self, key: object, device: torch.device, cap: int) -> None:
        with self._lock:
            self._caps[key] = (device.index or 0, cap)
            self._apply(device.index or 0)

    def remove(self, key: object) -> None:
        with self._lock:
            entry = self._caps.pop(key, None)
            if entry is not None:
                self._apply(entry[0])

    def fraction(self, index: int, total: int) -> float:
        return cap_fraction([cap for gpu, cap in self._caps.values() if gpu == index], total)

    def _apply(self, index: int) -> None:
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(self.fraction(index, total), index)


ALLOCATOR_CAPS = AllocatorCaps()


def cap_fraction(caps: Sequence[int], total: int) -> float:
    """The allocator's fraction of a GPU for torch instances with these caps (0: uncapped)."""
    if not caps or 0 in caps:
        return 1.0
    return min(1.0, sum(caps) / total)


def tensors_bytes(tensors: Iterable[Any]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def free_memory(device: torch.device) -> tuple[int, int]:
    """(free, total) bytes of a GPU, counting what torch has cached but no tensor uses as free."""
    free, total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return free + cached, total


# ---- loading -------------------------------------------------------------------------------

_threads_lock = threading.Lock()
# torch.export.load keeps its deserializer in a global: concurrent loads (several loader threads) collide.
_export_load_lock = threading.Lock()


def configure_threads(options: LoadOptions) -> None:
    """torch's thread pools are process-wide; the inter-op pool is fixed once work has run."""
    with _threads_lock:
        intra, inter = threads(options.intra_op_threads), options.inter_op_threads
        if torch.get_num_threads() != intra:
            torch.set_num_threads(intra)
        # Only when asked: torch fixes its inter-op pool once any work has run, and TorchScript's
        # fork() is the only user of it.
        if inter > 0 and torch.get_num_interop_threads() != inter:
            try:
                torch.set_num_interop_threads(inter)
            except RuntimeError:
                log.warning("torch's inter-op pool already has %d threads", torch.get_num_interop_threads())


def device_for(options: LoadOptions) -> torch.device:
    """``options.device``; CUDA falls back to the CPU with a log line when torch has none."""
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        log.warning("device %s requested but torch has no CUDA here; running on CPU", options.device)
        return torch.device("cpu")
    return device


def find_model_file(version_dir: Path) -> Path:
    for name in MODEL_FILES:
        if (version_dir / name).is_file():
            return version_dir / name
    raise FailedPrecondition(f"No {' or '.join(MODEL_FILES)} in {version_dir}")


def load_exported(path: Path) -> tuple[torch.export.ExportedProgram, int]:
    """The program (on the CPU) and the bytes of its weights."""
    with _export_load_lock:
        program = torch.export.load(str(path))
    return program, tensors_bytes(itertools.chain(program.state_dict.values(), program.constants.values()))


def exported_module(program: torch.export.ExportedProgram, device: torch.device) -> Module:
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    return program.module()


@contextlib.contextmanager
def torchscript_allowed() -> Iterator[None]:
    """TorchScript is deprecated in favour of torch.export (a DeprecationWarning, and since torch 2.14
    a FutureWarning on every ``torch.jit`` call), yet ``model.pt`` is what many users have: loading it
    must neither warn on every version nor fail where warnings are errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        yield


def load_torchscript(path: Path, file: Any) -> tuple[Any, tuple[Specs, Specs], int]:
    """The module (on the CPU), its signature from ``signature.json``, and the bytes of its weights."""
    with torchscript_allowed():
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    module.eval()
    arguments = [a.name for a in module.forward.schema.arguments[1:]]
    if file is None:
        raise FailedPrecondition(
            f"A TorchScript model needs {SIGNATURE_FILE} beside it giving the dtypes of its inputs "
            f"({', '.join(arguments)}) and the names and dtypes of its outputs; see docs/platforms.md"
        )
    if len(file[0]) != len(arguments):
        raise FailedPrecondition(
            f"{SIGNATURE_FILE} lists {len(file[0])} inputs but forward() takes {len(arguments)}: {', '.join(arguments)}"
        )
    return module, file, tensors_bytes(itertools.chain(module.parameters(), module.buffers()))


def read_program(path: Path, file: Any) -> tuple[Callable[[torch.device], Module], Signature, int]:
    """Load ``path`` on the CPU: a function placing it on a device, its signature, its weights' bytes."""
    try:
        if path.suffix == ".pt2":
            program, weights = load_exported(path)
            signature = merge(exported_signature(program), file)
            return (lambda device: exported_module(program, device)), signature, weights
        module, declared, weights = load_torchscript(path, file)
        return module.to, Signature(inputs=declared[0], outputs=declared[1]), weights
    except FailedPrecondition:
        raise
    except Exception as exc:  # torch raises many types for files it cannot read
        raise FailedPrecondition(f"Failed to load PyTorch model {path}: {type(exc).__name__}: {exc}") from exc


def load(version_dir: Path, options: LoadOptions) -> TorchServable:
    path = find_model_file(version_dir)
    device = device_for(options)
    configure_threads(options)
    file = read_signature_file(version_dir / SIGNATURE_FILE)
    if file is not None:
        check_no_strings(*file)
    place, signature, weights = read_program(path, file)
    check_no_strings(signature.inputs, signature.outputs)
    if device.type != "cuda":
        check_fits(weights, options.memory_limit_bytes)
        return TorchServable(place(device), signature, device, weights)
    return load_on_gpu(place, signature, weights, device, options.memory_limit_bytes)


def load_on_gpu(
    place: Callable[[torch.device], Module],
    signature: Signature,
    weights: int,
    device: torch.device,
    limit: int,
) -> CudaTorchServable:
    """Check the weights fit (cap, free memory), then move them; a failure leaves the GPU as it was."""
    check_fits(weights, limit, *free_memory(device))
    key = object()  # the cap counts before the weights move, so that they move under it
    ALLOCATOR_CAPS.add(key, device, limit)
    try:
        return CudaTorchServable(place(device), signature, device, weights, key)
    except BaseException as exc:
        ALLOCATOR_CAPS.remove(key)
        release_cached_memory()
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            raise ResourceExhausted(
                f"out of memory moving its weights ({format_bytes(weights)}) to {device}: {exc}"
            ) from None
        raise
