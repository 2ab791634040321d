"""A model's placement: on which devices its instances run, how many, and its device-memory cap.

``Placement`` is the ``placement { ... }`` block of a models.config entry
(modelserve's extension of TF Serving's ModelConfig, field 1000); a model
without one gets the default: one instance, sharing its runtime between
concurrent calls, on cuda:0 when a GPU is visible, else on the CPU.
``plan`` turns it into one ``Slot`` per instance once the visible devices are
known. ``InstanceStatus`` is what a loaded version reports about each of its
instances (the model status extension and the metrics read it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument
from ..platforms.devices import Inventory, parse_devices


@dataclass(frozen=True)
class Placement:
    """``devices`` empty: the default device. ``instances`` 0: one instance, shared by concurrent calls."""

    devices: tuple[str, ...] = ()
    instances: int = 0
    memory_limit_bytes: int = 0

    @property
    def exclusive(self) -> bool:
        """Each instance runs one call at a time (``instances`` given, or several devices)."""
        return self.instances > 0 or len(self.devices) > 1


DEFAULT = Placement()


def from_proto(model: str, message: Any) -> Placement:
    """A ModelConfig's ``placement`` field (a ModelPlacement message), checked."""
    try:
        devices = parse_devices(message.devices)
    except InvalidArgument as exc:
        raise InvalidArgument(f"Model {model}: placement: {exc}") from None
    for field in ("instances", "memory_limit_bytes"):
        value = getattr(message, field)
        if value < 0:
            raise InvalidArgument(f"Model {model}: placement: {field} must be 0 or more; was {value}")
    return Placement(devices, message.instances, message.memory_limit_bytes)


@dataclass(frozen=True)
class Slot:
    """Where one instance goes: its device and its share of the model's memory cap there."""

    index: int
    device: str
    memory_limit_bytes: int


def plan(model: str, placement: Placement, inventory: Inventory) -> list[Slot]:
    """One slot per instance: ``instances`` (at least one) on each resolved device, device by device."""
    devices = inventory.resolve(model, placement.devices)
    per_device = max(1, placement.instances)
    share = placement.memory_limit_bytes // per_device
    slots: list[Slot] = []
    for device in devices:
        for _ in range(per_device):
            slots.append(Slot(len(slots), device, share))
    return slots


def describe(slots: Sequence[Slot]) -> str:
    """``2 x cuda:0, 2 x cuda:1`` for log lines."""
    counts: dict[str, int] = {}
    for slot in slots:
        counts[slot.device] = counts.get(slot.device, 0) + 1
    return ", ".join(f"{n} x {device}" for device, n in counts.items())
