"""A model version's instances: loaded per its placement, and each call sent to an idle one.

``PlacedLoader`` is the manager's loader: it plans the version's instances
(``placement.plan``), loads each with its platform (``cpu`` or ``cuda:N``, its
share of the memory cap), and hands back an ``InstanceGroup``. A load that
fails part-way closes the instances already loaded, so a model that does not
fit leaves the device as it found it.

``InstanceGroup`` is itself a ``Servable``. With an exclusive placement
(``instances`` given, or several devices) every call waits for an idle
instance, takes it, and gives it back when done; idle instances are taken in
turn, so all of them work. The batcher and the direct runner both call
``predict`` from their threads, so both dispatch this way without knowing it;
the batcher reads ``instance_count`` to run that many batches of a version at
once. The default placement is one instance shared by concurrent calls, as
every runtime allows (TF Serving's behaviour).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import platforms
from ..errors import ResourceExhausted
from ..platforms.devices import CPU, Inventory, Nvml
from ..platforms.servable import InstanceStatus, Placed, Servable
from ..signatures import Signature
from .placement import Placement, Slot, describe, plan

log = logging.getLogger(__name__)


class PlacedModel(Protocol):
    """What loading a version needs to know of its model (``lifecycle.config.ModelConfig`` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def platform(self) -> str: ...

    @property
    def placement(self) -> Placement: ...


class InstanceGroup:
    """Instances of one model version; ``predict`` is thread-safe and picks an idle instance."""

    def __init__(
        self,
        instances: Sequence[Servable],
        statuses: Sequence[InstanceStatus],
        exclusive: bool,
        platform: str = "",
    ) -> None:
        if not instances or len(instances) != len(statuses):
            raise ValueError("an instance group needs one status per instance, and at least one instance")
        self.instances = list(instances)
        # Read on every request; every instance loaded the same folder, so they share one set.
        self.signatures: Mapping[str, Signature] = instances[0].signatures
        self._statuses = list(statuses)
        self.platform = platform  # the V2 name (servable.Named): V2 model metadata reports it
        self.exclusive = exclusive or len(instances) > 1
        self._idle = collections.deque(range(len(instances)))
        self._cv = threading.Condition(threading.Lock())
        self._calls = [0] * len(instances)

    @property
    def instance_count(self) -> int:
        """Calls that may run at once (1 for a shared instance: the batcher's idle rule counts batches)."""
        return len(self.instances) if self.exclusive else 1

    def predict(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str] = (),
    ) -> dict[str, np.ndarray]:
        if not self.exclusive:
            with self._cv:
                self._calls[0] += 1
            return self.instances[0].predict(signature, inputs, output_filter)
        index = self._take()
        try:
            return self.instances[index].predict(signature, inputs, output_filter)
        finally:
            self._give_back(index)

    def _take(self) -> int:
        with self._cv:
            while not self._idle:
                self._cv.wait()
            index = self._idle.popleft()
            self._calls[index] += 1
            return index

    def _give_back(self, index: int) -> None:
        with self._cv:
            self._idle.append(index)  # to the back: idle instances are taken in turn
            self._cv.notify()

    def instance_status(self) -> tuple[InstanceStatus, ...]:
        """Each instance's placement, memory and calls so far (a snapshot)."""
        with self._cv:
            calls = list(self._calls)
        return tuple(dataclasses.replace(s, calls=n) for s, n in zip(self._statuses, calls, strict=True))

    def close(self) -> None:
        for instance in self.instances:
            try:
                instance.close()
            except Exception:  # one instance failing to close must not keep the others' memory
                log.exception("Closing an instance failed")


class PlacedLoader:
    """The manager's loader: every version as an ``InstanceGroup`` placed per its model's config.

    ``inventory`` is the visible GPUs (``devices.detect``), set by the server
    before the first load. Loads of instances on one GPU are serialized so that
    the device memory each one takes can be read from the driver (NVML); CPU
    loads have nothing to measure and run in parallel.
    """

    def __init__(
        self, options: platforms.LoadOptions, inventory: Inventory | None = None, nvml: Nvml | None = None
    ) -> None:
        self.options = options
        self.inventory = inventory or Inventory()
        self._nvml = nvml or Nvml()
        self._locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self._locks_lock = threading.Lock()

    def __call__(self, config: PlacedModel, folder: Path) -> InstanceGroup:
        slots = plan(config.name, config.placement, self.inventory)
        platform = platforms.resolve(config.name, config.platform, folder, self.options.prefer_tflite_model)
        load = platforms.loader(platform)
        if platform == "tensorflow" and (config.placement.devices or config.placement.memory_limit_bytes):
            log.warning(
                "Model %s: TensorFlow places a SavedModel's ops itself; its placement's devices and "
                "memory_limit_bytes are not applied (--per_process_gpu_memory_fraction caps TensorFlow)",
                config.name,
            )
        log.info("Model %s: %s instance(s) on %s", config.name, len(slots), describe(slots))
        loaded: list[Servable] = []
        statuses: list[InstanceStatus] = []
        try:
            for slot in slots:
                servable, status = self._load_one(config, folder, slot, load)
                loaded.append(servable)
                statuses.append(status)
        except BaseException:
            for servable in loaded:
                servable.close()
            raise
        return InstanceGroup(loaded, statuses, config.placement.exclusive, platforms.v2_platform(platform, folder))

    def _load_one(
        self, config: PlacedModel, folder: Path, slot: Slot, load: platforms.Loader
    ) -> tuple[Servable, InstanceStatus]:
        options = dataclasses.replace(self.options, device=slot.device, memory_limit_bytes=slot.memory_limit_bytes)
        with self._device_lock(slot.device):
            before = self._free(slot.device)
            try:
                servable = load(folder, options)
            except ResourceExhausted as exc:
                raise ResourceExhausted(f"Model {config.name} does not fit on {slot.device}: {exc}") from exc
            after = self._free(slot.device)
        device, weights = slot.device, None
        if isinstance(servable, Placed):
            device, weights = str(servable.device), servable.weights_bytes
        measured = None
        if before is not None and after is not None and device != CPU:
            measured = max(0, before - after)
        status = InstanceStatus(slot.index, device, slot.device, weights, measured, slot.memory_limit_bytes)
        return servable, status

    def _device_lock(self, device: str) -> contextlib.AbstractContextManager[object]:
        if device == CPU:
            return contextlib.nullcontext()
        with self._locks_lock:
            return self._locks[device]

    def _free(self, device: str) -> int | None:
        if device == CPU:
            return None
        info = self._nvml.memory(self.inventory.nvml_id(device))
        return None if info is None else info[0]
