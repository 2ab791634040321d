"""Pure tensor work of batching: rows of a request, merging requests, splitting outputs.

No I/O and no threads; every function takes numpy arrays and returns numpy
arrays. Rules and error texts are TF Serving's ``BatchingSession``
(``batching_session.cc``, ``batching_util.cc``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ...errors import FailedPrecondition, InvalidArgument

Tensors = Mapping[str, np.ndarray]
# A piece of a request in a batch: its inputs and the rows [start, stop) of them.
Piece = tuple[Tensors, int, int]


def task_rows(inputs: Tensors) -> int:
    """Dim 0 shared by every input of one request (TF's ``ComputeInputSize``)."""
    if not inputs:
        raise InvalidArgument("Batching session Run() must have at least one input tensor")
    rows = -1
    for array in inputs.values():
        if array.ndim == 0:
            raise InvalidArgument("Batching session Run() input tensors must have at least one dimension")
        if rows >= 0 and array.shape[0] != rows:
            raise InvalidArgument("Batching session Run() input tensors must have equal 0th-dimension size")
        rows = array.shape[0]
    return rows


def shape_key(inputs: Tensors, pad_variable_length: bool) -> tuple[tuple[int, ...], ...]:
    """What requests must share to be merged: every non-batch dimension (only the ranks when padding)."""
    if pad_variable_length:
        return tuple((a.ndim,) for a in inputs.values())
    return tuple(a.shape[1:] for a in inputs.values())


def merged_bytes(pieces: Sequence[Piece], padded_rows: int, pad_variable_length: bool) -> int:
    """What ``merge`` allocates: nothing for one piece that needs no padding (its own arrays are
    used), else every tensor at ``padded_rows`` rows of the largest row shape (object arrays: the
    pointers; the objects are shared)."""
    rows = sum(stop - start for _, start, stop in pieces)
    total = 0
    for name in pieces[0][0]:
        arrays = [inputs[name] for inputs, _, _ in pieces]
        if len(pieces) == 1 and padded_rows <= rows and not pad_variable_length:
            continue
        row_shape = [max(sizes) for sizes in zip(*(a.shape[1:] for a in arrays), strict=True)]
        total += padded_rows * math.prod(row_shape) * arrays[0].itemsize
    return total


def merge(pieces: Sequence[Piece], padded_rows: int, pad_variable_length: bool) -> dict[str, np.ndarray]:
    """Concatenate the pieces along dim 0, then repeat the last piece's first row up to ``padded_rows``.

    With ``pad_variable_length`` every tensor is first padded in its
    non-batch dimensions to the largest of the batch, with its own first
    element as the pad value (TF's ``AddPadding``).
    """
    names = list(pieces[0][0])
    rows = sum(stop - start for _, start, stop in pieces)
    merged: dict[str, np.ndarray] = {}
    for name in names:
        parts = [inputs[name][start:stop] for inputs, start, stop in pieces]
        if pad_variable_length:
            parts = _pad_to_largest(parts)
        if padded_rows > rows:
            parts.append(np.repeat(parts[-1][:1], padded_rows - rows, axis=0))
        merged[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return merged


def _pad_to_largest(parts: list[np.ndarray]) -> list[np.ndarray]:
    shape = tuple(max(sizes) for sizes in zip(*(p.shape for p in parts), strict=True))
    if all(p.shape[1:] == shape[1:] for p in parts):
        return parts
    if not 1 <= parts[0].ndim <= 6:
        raise InvalidArgument("Only tensors with rank from 1 to 6 can be padded.")
    return [_pad(p, shape) for p in parts]


def _pad(part: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if part.shape[1:] == shape[1:]:
        return part
    if part.size == 0:
        raise InvalidArgument("Got empty tensor in batch of non-empty tensors.")
    padded = np.full((part.shape[0], *shape[1:]), part.flat[0], dtype=part.dtype)
    padded[tuple(slice(0, n) for n in part.shape)] = part
    return padded


def check_outputs(outputs: Tensors, padded_rows: int) -> None:
    """Outputs must be batch-major to be split back (TF's texts; issues #276, #2043)."""
    for array in outputs.values():
        if array.ndim == 0:
            raise FailedPrecondition("Batched output tensor has 0 dimensions")
        if array.shape[0] != padded_rows:
            raise FailedPrecondition(
                "Batched output tensor's 0th dimension does not equal the sum of the "
                "0th dimension sizes of the input tensors"
            )


def split(outputs: Tensors, sizes: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Per piece, its rows of every output (views, no copies); padding rows are dropped."""
    result: list[dict[str, np.ndarray]] = []
    start = 0
    for size in sizes:
        stop = start + size
        result.append({name: array[start:stop] for name, array in outputs.items()})
        start = stop
    return result


def join(parts: Sequence[Tensors]) -> dict[str, np.ndarray]:
    """A split request's outputs, put back together in row order."""
    if len(parts) == 1:
        return dict(parts[0])
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}
