"""TF Serving's float32 texts for large tensors, computed with numpy as a uint8 matrix, and their JSON.

For large tensors the same %g / %.9g digits are computed with numpy: the decimal
exponent from log10 (fixed by exact comparisons), the rounded digits from a scaled
double. Every element whose rounding or round trip falls within a few ULPs of a tie
is re-done by the scalar code (floats.py), so the output is the same byte for byte.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .floats import format_float32

Array = npt.NDArray[Any]

_POW10 = np.array([float(f"1e{k}") for k in range(0, 64)])


def _scale(values: Array, power: Array) -> Array:
    """values * 10**power, one correctly rounded step for |power| <= 22."""
    up: Array = _POW10[np.maximum(power, 0)]
    down: Array = _POW10[np.maximum(-power, 0)]
    scaled: Array = values * up / down
    return scaled


_TEN_TO = _scale(np.ones(127), np.arange(-63, 64))  # 10**e at index e + 63, as _scale makes it


def _decimal_exponent(ax: Array) -> Array:
    # 10**e as doubles never straddle a float32 value, so comparing with them is exact.
    e10 = np.floor(np.log10(ax)).astype(np.int64)
    e10 -= ax < _TEN_TO[e10 + 63]
    e10 += ax >= _TEN_TO[e10 + 64]
    return e10


def _round_digits(ax: Array, e10: Array, precision: int) -> tuple[Array, Array, Array]:
    """Digits of ax rounded to `precision` significant digits: (digits, exponent, unsure).

    The scaled double is within a few ULPs (< 1e-6 at 1e9) of the exact value, so only
    a fraction within 1e-5 of one half may round the wrong way: those are `unsure`.
    """
    scaled = _scale(ax, precision - 1 - e10)
    floor = np.floor(scaled)
    frac = scaled - floor
    unsure = np.abs(frac - 0.5) < 1e-5
    digits = floor.astype(np.int64) + (frac > 0.5)
    carry = digits == 10**precision
    digits[carry] = 10 ** (precision - 1)
    return digits, e10 + carry, unsure


def f32_texts(values: Array) -> Array:
    """A uint8 matrix holding the text of each float32 value in a row, NULs in between."""
    # Signalling NaNs raise the invalid flag when widened (they print as NaN all the same),
    # and the float above FLT_MAX is infinity.
    with np.errstate(invalid="ignore", over="ignore"):
        return _f32_text_matrix(values)


def _f32_text_matrix(values: Array) -> Array:
    x = values.astype(np.float64)
    negative = np.signbit(x)
    special = ~np.isfinite(x) | (x == 0)
    digits, exponent, precision, unsure = _g_digits(np.where(special, 1.0, np.abs(x)))
    matrix = _g_matrix(negative, digits, exponent, precision)
    width = matrix.shape[1]
    for mask, text in (
        ((x == 0) & ~negative, "0.0"),
        ((x == 0) & negative, "-0.0"),
        (np.isnan(x), "NaN"),
        (x == np.inf, "Infinity"),
        (x == -np.inf, "-Infinity"),
    ):
        if mask.any():
            matrix[mask] = _text_row(text, width)
    for i in np.flatnonzero(unsure & ~special):
        matrix[i] = _text_row(format_float32(float(values[i])), width)
    return matrix


def _g_digits(ax: Array) -> tuple[Array, Array, Array, Array]:
    """%g's digits for positive finite float32 values `ax` (held as doubles).

    Returns 9-digit significands, decimal exponents, the precision used (6 when those
    digits read back as the same float32, else 9) and the values to redo in Python.
    """
    ax32 = ax.astype(np.float32)
    e10 = _decimal_exponent(ax)
    d6, x6, unsure6 = _round_digits(ax, e10, 6)
    d9, x9, unsure9 = _round_digits(ax, e10, 9)
    # Does the 6-digit decimal read back as ax32? Unsure when it is near a float32 midpoint.
    decimal = _scale(d6.astype(np.float64), x6 - 5)
    up = np.nextafter(ax32, np.float32(np.inf)).astype(np.float64)
    down = np.nextafter(ax32, np.float32(0)).astype(np.float64)
    tolerance = decimal * 1e-14
    near = (np.abs(decimal - (ax + up) / 2) <= tolerance) | (np.abs(decimal - (ax + down) / 2) <= tolerance)
    short = decimal.astype(np.float32) == ax32
    return (
        np.where(short, d6 * 1000, d9),
        np.where(short, x6, x9),
        np.where(short, 6, 9),
        unsure6 | near | (unsure9 & ~short),
    )


def _text_row(text: str, width: int) -> Array:
    row = np.zeros(width, dtype=np.uint8)
    row[: len(text)] = np.frombuffer(text.encode(), dtype=np.uint8)
    return row


def _g_matrix(negative: Array, digits: Array, exponent: Array, precision: Array) -> Array:
    """Lay out %g texts (plus TF's ".0") from 9-digit significands, one row per value.

    Columns: sign | "0.000" of small fixed numbers | ten slots for the digits and the
    point | the "0" after a bare point | "e+NN". Unused cells stay NUL. Built column by
    column (each a contiguous vector), transposed once at the end.
    """
    digit = _digit_rows(digits)  # digit[j]: the j-th of 9 digits of every value
    zeros = np.zeros(len(digits), dtype=np.int64)  # trailing zeros, which %g drops
    run = np.ones(len(digits), dtype=bool)
    for j in range(8, 0, -1):
        run &= digit[j] == 0
        zeros += run
    count = 9 - zeros
    sci = (exponent < -4) | (exponent >= precision)
    small = ~sci & (exponent < 0)
    fixed = ~sci & (exponent >= 0)
    shown = np.where(fixed, np.maximum(count, exponent + 1), count)
    point = np.where(fixed, exponent + 1, np.where(sci & (count > 1), 1, 99))  # 99: none
    chars = [(digit[j] + np.uint8(48)) * (j < shown) for j in range(9)]
    slots = [chars[0]]
    slots += [np.where(p < point, chars[p], np.where(p == point, np.uint8(46), chars[p - 1])) for p in range(1, 9)]
    slots.append(np.where(point == 9, np.uint8(46), chars[8]) * (point <= 9))
    magnitude = np.abs(exponent)  # at most 45 for float32: two digits
    columns = [
        _chars(negative, "-"),
        _chars(small, "0"),
        _chars(small, "."),
        *(_chars(small & (z < -exponent - 1), "0") for z in range(3)),
        *slots,
        _chars(fixed & (count <= exponent + 1), "0"),
        _chars(sci, "e"),
        _chars(sci & (exponent < 0), "-") + _chars(sci & (exponent >= 0), "+"),
        ((magnitude // 10 + 48) * sci).astype(np.uint8),
        ((magnitude % 10 + 48) * sci).astype(np.uint8),
    ]
    return np.ascontiguousarray(np.stack(columns).T)


def _chars(mask: Array, char: str) -> Array:
    """One text column: `char` where `mask`, NUL elsewhere."""
    column: Array = mask.astype(np.uint8) * np.uint8(ord(char))
    return column


def _digit_rows(digits: Array) -> Array:
    # int32 division by a constant is vectorised by numpy; int64 division is not.
    out = np.empty((9, len(digits)), dtype=np.uint8)
    rest = digits.astype(np.int32)
    for j in range(8, -1, -1):
        quotient = rest // 10
        out[j] = rest - quotient * 10
        rest = quotient
    return out


def join_matrix(texts: Array, shape: tuple[int, ...], parts: int) -> list[bytes]:
    """JSON of `parts` equal consecutive pieces of a tensor, each piece of `shape`.

    Brackets and commas become extra columns around the text matrix; dropping every
    NUL then yields all the JSON at once, cut into pieces with per-row lengths.
    """
    n = len(texts)
    rank = len(shape)
    grid = (parts, *shape)
    opens = np.zeros(grid, dtype=np.uint8)  # '[' before an element: lists it starts
    closes = np.zeros(grid, dtype=np.uint8)  # ']' after it: lists it ends
    for depth in range(1, rank + 1):
        first: tuple[Any, ...] = (Ellipsis,) + (0,) * depth
        last: tuple[Any, ...] = (Ellipsis,) + (-1,) * depth
        opens[first] += 1
        closes[last] += 1
    opens, closes = opens.reshape(n), closes.reshape(n)
    comma = np.ones(grid, dtype=bool)
    comma.reshape(parts, -1)[:, -1] = False
    columns = [
        *(_chars(opens > level, "[") for level in range(rank)),
        texts,
        *(_chars(closes > level, "]") for level in range(rank)),
        _chars(comma.reshape(n), ","),
    ]
    matrix = np.concatenate([c.reshape(n, -1) for c in columns], axis=1)
    flat = matrix.ravel()
    data = flat[flat != 0].tobytes()
    if parts == 1:
        return [data]
    lengths = np.count_nonzero(matrix, axis=1).reshape(parts, -1).sum(axis=1)
    ends = np.cumsum(lengths).tolist()
    return [data[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
