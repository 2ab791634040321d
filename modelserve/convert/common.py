"""What every convert command shares: steps with progress, version folders, sample inputs, the check."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..dtypes import DType, to_numpy
from ..signatures import DEFAULT_SIGNATURE, Signature

Outputs = Mapping[str, np.ndarray]


class ConvertError(Exception):
    """A step failed; the message names the step and the reason."""


# The pip extra that brings a missing top-level package; the rest of what convert imports is in [convert].
EXTRAS = {"torch": "torch", "tensorflow": "tensorflow", "keras": "tensorflow"}


def missing_extra(exc: ModuleNotFoundError) -> str:
    """What to install for a package a conversion imports and this environment lacks."""
    package = (exc.name or "").partition(".")[0]
    return f"{exc}: pip install 'modelserve[{EXTRAS.get(package, 'convert')}]'"


class Progress:
    """Numbered steps on stderr, each with its time, so a long conversion shows where it is."""

    def __init__(self, title: str, stream: Any = None) -> None:
        self.title = title
        self.stream = stream or sys.stderr
        self.count = 0

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        self.count += 1
        print(f"[{self.count}] {what} ...", file=self.stream, flush=True)
        start = time.monotonic()
        try:
            yield
        except ConvertError:
            raise
        except ModuleNotFoundError as exc:
            raise ConvertError(f'step "{what}" failed: {missing_extra(exc)}') from exc
        except Exception as exc:  # a library's own error, told with the step it broke
            raise ConvertError(f'step "{what}" failed: {type(exc).__name__}: {exc}') from exc
        print(f"    done in {time.monotonic() - start:.1f} s", file=self.stream, flush=True)

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def next_version(base_path: Path) -> int:
    """One more than the highest numeric folder under ``base_path`` (1 for a new model)."""
    numbers = (
        [int(p.name) for p in base_path.iterdir() if p.is_dir() and p.name.isdigit()] if base_path.is_dir() else []
    )
    return max(numbers, default=0) + 1


@contextlib.contextmanager
def staged_version(base_path: Path, progress: Progress) -> Iterator[Path]:
    """A hidden folder to write into; renamed to the next version when the block succeeds, else removed."""
    base_path.mkdir(parents=True, exist_ok=True)
    staging = base_path / f".convert-{os.getpid()}-{time.monotonic_ns()}"
    staging.mkdir()
    try:
        yield staging
        version = next_version(base_path)
        final = base_path / str(version)
        os.rename(staging, final)  # atomic: a polling server sees the whole version or nothing
        progress.say(f"wrote version {version}: {final}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def sample(dtype: DType, shape: tuple[int, ...] | None, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Random check inputs: unknown dims become ``batch`` (dim 0) or 1."""
    dims = tuple(batch if i == 0 and d < 0 else (d if d >= 0 else 1) for i, d in enumerate(shape or (-1,)))
    numpy_dtype = to_numpy(dtype)
    if dtype == DType.DT_BOOL:
        return rng.integers(0, 2, dims).astype(bool)
    if numpy_dtype.kind in "iu":
        return rng.integers(0, 10, dims).astype(numpy_dtype)
    if numpy_dtype.kind == "f":
        return rng.standard_normal(dims).astype(numpy_dtype)
    raise ConvertError(f"cannot make sample inputs of type {dtype.name}; convert a model with numeric inputs")


def samples_for(signature: Signature, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {alias: sample(spec.dtype, spec.shape, batch, rng) for alias, spec in signature.inputs.items()}


@dataclass(frozen=True)
class Check:
    """How to compare: ``source`` computes the expected outputs from the served signature's inputs."""

    source: Callable[[dict[str, np.ndarray]], Outputs]
    platform: str
    batch: int
    seed: int
    atol: float
    signature: str = DEFAULT_SIGNATURE


def max_abs_diff(expected: np.ndarray, got: np.ndarray) -> float:
    expected, got = np.asarray(expected), np.asarray(got)
    if expected.size != got.size:
        raise ConvertError(f"the converted model answers shape {got.shape}, the source {expected.shape}")
    if expected.size == 0:
        return 0.0
    return float(np.max(np.abs(expected.astype(np.float64).ravel() - got.astype(np.float64).ravel())))


def check_version(folder: Path, check: Check, progress: Progress) -> dict[str, float]:
    """Serve ``folder`` as the server would and compare it with the source: max abs diff per output."""
    from .. import platforms

    with progress.step(f"loading the result as the {check.platform} platform serves it"):
        servable = platforms.load("convert", check.platform, folder, platforms.LoadOptions())
    try:
        with progress.step(f"comparing with the source on {check.batch} random examples"):
            signature = servable.signatures[check.signature]
            inputs = samples_for(signature, check.batch, check.seed)
            expected = check.source(inputs)
            got = servable.predict(check.signature, inputs)
            missing = sorted(set(expected) - set(got))
            if missing:
                raise ConvertError(f"the converted model has no outputs {missing}; it has {sorted(got)}")
            diffs = {alias: max_abs_diff(expected[alias], got[alias]) for alias in expected}
    finally:
        servable.close()
    for alias, diff in diffs.items():
        progress.say(f"    max abs difference {alias}: {diff:.3g}")
    worst = max(diffs.values(), default=0.0)
    if not worst <= check.atol:
        raise ConvertError(f"the converted model differs from the source by {worst:.3g} (> --atol {check.atol:g})")
    return diffs


def convert_and_check(base_path: str, check: Check, progress: Progress, write: Callable[[Path], None]) -> None:
    """Write a version with ``write`` into a staging folder, check it, then make it the next version."""
    with staged_version(Path(base_path), progress) as staging:
        write(staging)
        check_version(staging, check, progress)


def split_alias(text: str) -> tuple[str, str]:
    """``alias=name`` or ``name`` (alias = name without a ``:0`` suffix)."""
    alias, eq, name = text.partition("=")
    if not eq:
        name, alias = text, text.split(":")[0]
    return alias, name
