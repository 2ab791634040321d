"""What a platform hands the core: a loaded model version, its signatures, and what it reports.

Platforms take a batch and return a batch: ``predict`` receives whole tensors
(dim 0 is the batch when the signature has one) and returns whole tensors.
Batching, request validation and wire formats all live above this line.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..signatures import Signature


@dataclass(frozen=True)
class InstanceStatus:
    """One loaded instance: where it runs, the memory it holds, how many calls it has run.

    ``device`` is where it really runs (``cpu`` after a logged fallback),
    ``requested_device`` what its placement asked for. ``weights_bytes``: the
    bytes of its weights, as its platform counts them (None: the platform does
    not say). ``device_memory_bytes``: the GPU memory that loading it took, read
    from the driver before and after (None on the CPU or without NVML).
    ``memory_limit_bytes``: its share of the model's cap (0: none).
    """

    index: int
    device: str
    requested_device: str
    weights_bytes: int | None
    device_memory_bytes: int | None
    memory_limit_bytes: int
    calls: int = 0


class Servable(Protocol):
    """One loaded model version. ``predict`` must be safe to call from several threads."""

    @property
    def signatures(self) -> Mapping[str, Signature]: ...

    def predict(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str] = (),
    ) -> dict[str, np.ndarray]:
        """Run ``signature`` on inputs keyed by alias; return outputs keyed by alias.

        The caller has checked that ``signature`` exists and that ``inputs``
        holds every input alias with the signature's dtype. An empty
        ``output_filter`` means every output.
        """
        ...

    def close(self) -> None:
        """Release the model's resources; no predict call is running or will run."""
        ...


@runtime_checkable
class Placed(Protocol):
    """A servable that says where it really runs and what its weights weigh (ONNX and PyTorch do;
    TensorFlow places its own ops). Read once per loaded instance, for its ``InstanceStatus``."""

    @property
    def device(self) -> object:
        """Where it runs (``cpu``, ``cuda:0``; a ``torch.device`` prints the same)."""
        ...

    @property
    def weights_bytes(self) -> int | None:
        """Bytes of its weights as the platform counts them; None when it cannot say."""
        ...


@runtime_checkable
class MultiInstance(Protocol):
    """A servable that runs its calls on several instances of the model (``execution.instances``'s
    ``InstanceGroup``); a batcher runs that many batches of it at once. Optional: a servable
    without it counts as one instance."""

    @property
    def instance_count(self) -> int: ...


@runtime_checkable
class Named(Protocol):
    """A servable that says how it is served: the Open Inference Protocol's platform name
    (``onnxruntime_onnx``, ``tensorflow_savedmodel``, ...; ``platforms.v2_platform``). Optional."""

    @property
    def platform(self) -> str: ...


@runtime_checkable
class Reporting(Protocol):
    """A servable that reports its instances: where each runs, its memory, its calls
    (``execution.instances``'s ``InstanceGroup``; read by the status pages)."""

    def instance_status(self) -> Sequence[InstanceStatus]: ...
