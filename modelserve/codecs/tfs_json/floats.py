"""Float formatting (§2.9), value by value (float_matrix.py vectorises it for large tensors).

%g, re-formatted with max_digits10 unless it round-trips, ".0" appended to whole
numbers, bare NaN/Infinity/-Infinity.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction

_F32 = struct.Struct("<f")
_FLOAT32_MIN_NORMAL = 2.0**-126


def round_f32(x: float) -> float:
    """static_cast<float>(x) as a Python float (overflow gives +-inf)."""
    try:
        return float(_F32.unpack(_F32.pack(x))[0])
    except OverflowError:
        return math.copysign(math.inf, x)


def nonfinite(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    return "-Infinity" if x < 0 else "Infinity"


def format_float32(x: float) -> str:
    """A DT_FLOAT value as TF Serving writes it (``x`` is first rounded to float32)."""
    x = round_f32(float(x))
    if not math.isfinite(x):
        return nonfinite(x)
    return format_f32(x)


def format_f32(x: float) -> str:
    # x is a finite float32 value held in a Python float. This is the REST hot path:
    # %-formatting is ~1.5x faster than format(), and the usual 6-digit miss is caught
    # inline: half a float32 ULP never exceeds 2**-24 of a normal value, so a text
    # farther away than that cannot read back as x.
    text = "%g" % x  # noqa: UP031
    parsed = float(text)
    if parsed != x:
        magnitude = abs(x)
        if (magnitude >= _FLOAT32_MIN_NORMAL and abs(parsed - x) > magnitude * 6.0e-8) or not (
            _f32_round_trips(text, parsed, x)
        ):
            text = "%.9g" % x  # noqa: UP031
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _f32_round_trips(text: str, parsed: float, x: float) -> bool:
    """Whether parsing ``text`` as a float32 (absl::SimpleAtof) gives back ``x``."""
    rounded = round_f32(parsed)
    # Going through a double can only mislead when that double is exactly halfway between
    # two floats, which a 6-digit decimal can only come close to below 1e-3.
    if abs(x) < 1e-3 and _is_f32_midpoint(parsed):
        rounded = _f32_from_decimal(text, parsed, rounded)
    return rounded == x


def _is_f32_midpoint(d: float) -> bool:
    _, exponent = math.frexp(d)
    scaled = math.ldexp(d, 25 - exponent if exponent >= -125 else 150)
    return scaled.is_integer() and int(scaled) % 2 == 1


def _f32_from_decimal(text: str, parsed: float, rounded: float) -> float:
    other = 2 * parsed - rounded  # the float on the other side of the midpoint
    exact, midpoint = Fraction(text), Fraction(parsed)
    if exact == midpoint:
        return rounded  # a true tie: round half to even, as the double cast did
    return max(rounded, other) if exact > midpoint else min(rounded, other)


def format_double(x: float) -> str:
    """A DT_DOUBLE value as TF Serving writes it."""
    x = float(x)
    if not math.isfinite(x):
        return nonfinite(x)
    return format_f64(x)


def format_f64(x: float) -> str:
    text = "%g" % x  # noqa: UP031
    if float(text) != x:
        text = "%.17g" % x  # noqa: UP031
    if "." not in text and "e" not in text:
        text += ".0"
    return text
