"""The TF Lite platform: ``model.tflite`` run by LiteRT interpreters.

Signatures come from the model (``tflite_signature``). An interpreter runs one
call at a time, so each loaded model keeps a small pool of them, made on
demand up to ``LoadOptions.tflite_interpreters`` (TF Serving's
``--num_tflite_pools``; 0 = one per CPU). Each interpreter gets
``intra_op_threads`` threads, 1 when unset: TF Serving's choice too, the pool
being what runs requests side by side. All interpreters share the model's
bytes, read once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from ..errors import FailedPrecondition, InvalidArgument
from ..signatures import Signature
from . import LoadOptions, tflite_signature
from .devices import CPU, check_fits
from .tflite_signature import Binding

log = logging.getLogger(__name__)

MODEL_FILE = "model.tflite"

# LiteRT's error reporter never empties its buffer: each error an interpreter raises carries the
# text of every earlier one. Past this many characters the interpreter is replaced.
_MAX_ERROR_TEXT = 64 * 1024


class _Worker:
    """One interpreter and its signature runners. Not thread-safe: the pool hands it to one caller at a time."""

    def __init__(self, interpreter: Any, runner_keys: Collection[str]) -> None:
        self.interpreter = interpreter
        self.runners = {key: self.interpreter.get_signature_runner(key) for key in runner_keys}
        self.spent = False
        self._reported = ""  # what the error reporter's buffer held after the last error

    def run(self, binding: Binding, inputs: Mapping[str, np.ndarray], aliases: list[str]) -> dict[str, np.ndarray]:
        try:
            if binding.runner is not None:
                results = self.runners[binding.runner](**inputs)
                return {alias: results[alias] for alias in aliases}
            return self._run_tensors(binding, inputs, aliases)
        except ValueError as exc:  # the wrapper's own checks (dtype, shape); not the reporter's
            raise InvalidArgument(str(exc)) from None
        except RuntimeError as exc:  # prepare or invoke failed: the error reporter's text
            raise InvalidArgument(self._new_text(str(exc))) from None

    def _run_tensors(
        self, binding: Binding, inputs: Mapping[str, np.ndarray], aliases: list[str]
    ) -> dict[str, np.ndarray]:
        interpreter = self.interpreter
        # Each input takes the request's shape, as under TF Serving: a batch, or any shape the ops accept
        # (a few microseconds when nothing changed, as the signature runner spends on every call too).
        for alias, value in inputs.items():
            interpreter.resize_tensor_input(binding.inputs[alias], value.shape, strict=False)
        interpreter.allocate_tensors()
        for alias, value in inputs.items():
            interpreter.set_tensor(binding.inputs[alias], value)
        interpreter.invoke()
        return {alias: interpreter.get_tensor(binding.outputs[alias]) for alias in aliases}

    def _new_text(self, text: str) -> str:
        new = text[len(self._reported) :] if text.startswith(self._reported) else text
        self._reported = text
        self.spent = len(text) > _MAX_ERROR_TEXT
        return new or text


class _Pool:
    """Up to ``size`` workers, made when every existing one is busy; ``take`` lends one exclusively."""

    def __init__(self, make: Callable[[], _Worker], size: int, first: _Worker) -> None:
        self._make = make
        self._size = max(1, size)
        self._idle = [first]
        self._count = 1
        self._ready = threading.Condition()

    @contextlib.contextmanager
    def take(self) -> Iterator[_Worker]:
        worker = self._acquire()
        try:
            yield worker
        finally:
            with self._ready:
                if worker.spent:
                    self._count -= 1
                else:
                    self._idle.append(worker)
                self._ready.notify()

    def _acquire(self) -> _Worker:
        with self._ready:
            while not self._idle and self._count >= self._size:
                self._ready.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            return self._make()  # outside the lock: building an interpreter takes a while
        except BaseException:
            with self._ready:
                self._count -= 1
                self._ready.notify()
            raise

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        with self._ready:
            self._idle.clear()


class TfLiteServable:
    """A ``.tflite`` model: its signatures and a pool of interpreters; ``predict`` is thread-safe."""

    def __init__(
        self,
        signatures: Mapping[str, Signature],
        bindings: Mapping[str, Binding],
        pool: _Pool,
        weights_bytes: int,
    ) -> None:
        self._signatures = dict(signatures)
        self._bindings = dict(bindings)
        self._pool = pool
        self.device = CPU
        self.weights_bytes = weights_bytes

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    @property
    def interpreters(self) -> int:
        """The most interpreters it runs at once."""
        return self._pool.size

    def predict(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str] = (),
    ) -> dict[str, np.ndarray]:
        aliases = list(output_filter) or list(self._signatures[signature].outputs)
        with self._pool.take() as worker:
            return worker.run(self._bindings[signature], inputs, aliases)

    def close(self) -> None:
        self._pool.close()


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load(version_dir: Path, options: LoadOptions) -> TfLiteServable:
    path = version_dir / MODEL_FILE
    if not path.is_file():
        raise FailedPrecondition(f"No {MODEL_FILE} in {version_dir}")
    model = path.read_bytes()
    check_fits(len(model), options.memory_limit_bytes)
    if options.device != CPU:
        log.warning("device %s requested but TF Lite models run on the CPU here; running on CPU", options.device)
    threads = options.intra_op_threads or 1

    def interpreter() -> Any:
        return Interpreter(model_content=model, num_threads=threads)

    try:
        first = interpreter()
        first.allocate_tensors()  # as TF Serving does: an op LiteRT cannot run (Flex) fails here, not later
        signatures, bindings = tflite_signature.read(first, model)
    except (ValueError, RuntimeError) as exc:
        raise FailedPrecondition(f"Failed to load TF Lite model {path}: {exc}") from exc
    runners = sorted({b.runner for b in bindings.values() if b.runner is not None})
    pool = _Pool(
        lambda: _Worker(interpreter(), runners), options.tflite_interpreters or _cpus(), _Worker(first, runners)
    )
    log.info("TF Lite model %s: signatures %s, up to %d interpreter(s)", path, sorted(signatures), pool.size)
    return TfLiteServable(signatures, bindings, pool, len(model))
