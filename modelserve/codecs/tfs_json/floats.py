"""Float formatting of one value or a list of values (float_matrix.py: large tensors).

%g, re-formatted with max_digits10 unless it round-trips, ".0" appended to whole
numbers, bare NaN/Infinity/-Infinity.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Callable
from fractions import Fraction
from operator import eq
from typing import Any

import orjson

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
    return format_f32(x) if math.isfinite(x) else nonfinite(x)


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
    return _point(text)


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
    return format_f64(x) if math.isfinite(x) else nonfinite(x)


def format_f64(x: float) -> str:
    text = "%g" % x  # noqa: UP031
    if float(text) != x:
        text = "%.17g" % x  # noqa: UP031
    return _point(text)


def _point(text: str) -> str:
    """TF's ".0" after a whole number that %g wrote without a point or an exponent."""
    return text if "." in text or "e" in text else text + ".0"


# ---- lists of values ----------------------------------------------------------------------
#
# Small outputs are formatted here (the REST hot path). One %-format over a whole list and
# one orjson parse of its %g texts cost a fraction of a Python-level call per value.

_BULK_MIN = 5  # below this many values, value by value is faster


def join_float32(values: list[Any]) -> str:
    """format_float32 of each float32 value (Python floats, ``array.tolist()``), comma-joined."""
    return _join_values(values, format_f32, "%.9g", _as_float32)


def join_double(values: list[Any]) -> str:
    """format_double of each Python float, comma-joined."""
    return _join_values(values, format_f64, "%.17g", list)


def _join_values(
    values: list[Any], one: Callable[[float], str], long: str, read: Callable[[list[Any]], list[Any]]
) -> str:
    # A finite sum proves every value finite (a float32 sum cannot overflow; a double sum
    # that does takes the value-by-value path). `v - v == 0` is a fast isfinite().
    if len(values) < _BULK_MIN or not math.isfinite(sum(values)):
        return ",".join([one(v) if v - v == 0 else nonfinite(v) for v in values])
    args = tuple(values)
    short = _join("%g", args)
    return _with_point(_shortest(short, args, read(orjson.loads("[" + short + "]")), long), values)


def _as_float32(parsed: list[Any]) -> list[Any]:
    # Rounding the doubles gives the float32 SimpleAtof reads from each %g text: no 6-digit
    # decimal parses to a double on a float32 midpoint unless it is that midpoint (all of
    # them are checked by tests/test_tfs_json.py), so rounding twice never misleads here.
    return array("f", parsed).tolist()


def _join(spec: str, args: tuple[Any, ...]) -> str:
    """Every value written with the one %-spec, comma-joined: a single format call."""
    text: str = ",".join([spec] * len(args)) % args
    return text


def _shortest(short: str, args: tuple[Any, ...], read_back: list[Any], long: str) -> str:
    """Each value's %g text (``short``) where it reads back as the value, else its ``long`` text."""
    if read_back == list(args):
        return short
    if not any(map(eq, read_back, args)):
        return _join(long, args)
    specs = ",".join(["%g" if r == v else long for r, v in zip(read_back, args, strict=True)])
    text: str = specs % args
    return text


def _with_point(texts: str, values: list[Any]) -> str:
    # Only a whole value can have a text without a point or an exponent: the text reads
    # back as the value, and a float that equals an integer is whole.
    if not any(map(float.is_integer, values)):
        return texts
    return ",".join(map(_point, texts.split(",")))
