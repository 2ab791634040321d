"""JSON values inside error messages, as TF's JsonValueToDebugString prints them.

rapidjson's PrettyWriter (4-space indent, arrays on one line), stopped once 256
bytes are written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from ...errors import InvalidArgument

_DEBUG_LIMIT = 256
_JSON_ESCAPES = {i: b"\\u%04X" % i for i in range(0x20)}
_JSON_ESCAPES.update(
    {0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0C: b"\\f", 0x0D: b"\\r", 0x22: b'\\"', 0x5C: b"\\\\"}
)
_NEEDS_ESCAPE = re.compile(rb'[\x00-\x1f"\\]')
_END = object()


def json_type(value: Any) -> str:
    """rapidjson's type name of a parsed value (JsonTypeString)."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    kind = type(value)
    if kind is dict:
        return "Object"
    if kind is list:
        return "Array"
    if kind is str:
        return "String"
    return "Number"


def debug_json(value: Any) -> str:
    """The value as TF prints it in messages, truncated after 256 bytes (never recursive)."""
    out = bytearray()
    levels: list[list[Any]] = []  # [is_array, value_count, iterator over children]
    pending: Any = value
    while True:
        if len(out) >= _DEBUG_LIMIT:
            break
        if pending is not _END:
            if not _write_prefix_and_value(out, levels, pending):
                break
            pending = _END
            continue
        if not levels:
            break
        level = levels[-1]
        child = next(level[2], _END)
        if child is _END:
            levels.pop()
            _write_close(out, level, len(levels))
        else:
            pending = child
    return out.decode("utf-8", "replace")


def _write_prefix_and_value(out: bytearray, levels: list[list[Any]], value: Any) -> bool:
    if levels:
        level = levels[-1]
        count = level[1]
        if level[0]:
            if count:
                out += b", "
        else:
            out += b": " if count % 2 else (b",\n" if count else b"\n")
            if count % 2 == 0:
                out += b"    " * len(levels)
        level[1] = count + 1
    kind = type(value)
    if kind is dict:
        out += b"{"
        levels.append([False, 0, _object_tokens(value)])
    elif kind is list:
        out += b"["
        levels.append([True, 0, iter(value)])
    elif kind is _Key:
        out += _json_string(value.name)
    else:
        return _write_scalar(out, value)
    return True


class _Key:
    """An object key in the debug-writer's token stream."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _object_tokens(obj: dict[str, Any]) -> Iterator[Any]:
    for key, item in obj.items():
        yield _Key(key)
        yield item


def _write_close(out: bytearray, level: list[Any], depth: int) -> None:
    if level[0]:
        out += b"]"
    else:
        if level[1]:
            out += b"\n" + b"    " * depth
        out += b"}"


def _write_scalar(out: bytearray, value: Any) -> bool:
    if value is None:
        out += b"null"
    elif value is True:
        out += b"true"
    elif value is False:
        out += b"false"
    elif type(value) is str:
        out += _json_string(value)
    elif type(value) is float:
        if not math.isfinite(value):
            return False  # rapidjson's Writer refuses NaN/Inf and the output stops here
        out += _rapidjson_double(value).encode()
    else:
        out += str(value).encode()
    return True


def _json_string(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    escaped = _NEEDS_ESCAPE.sub(lambda m: _JSON_ESCAPES[m.group()[0]], raw)
    return b'"' + escaped + b'"'


def _rapidjson_double(x: float) -> str:
    """rapidjson's dtoa: shortest digits, then its Prettify layout (``1e30``, ``0.001``, ``1.0``)."""
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp_text = repr(abs(x)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    k = int(exp_text or 0) - len(fraction)
    stripped = digits.rstrip("0")
    k += len(digits) - len(stripped)
    return sign + _prettify(stripped, k)


def _prettify(digits: str, k: int) -> str:
    length = len(digits)
    kk = length + k  # 10^(kk-1) <= v < 10^kk
    if k >= 0 and kk <= 21:
        return digits + "0" * k + ".0"
    if 0 < kk <= 21:
        return digits[:kk] + "." + digits[kk:]
    if -6 < kk <= 0:
        return "0." + "0" * -kk + digits
    if kk < -324:
        return "0.0"
    head = digits[0] + ("." + digits[1:] if length > 1 else "")
    return f"{head}e{kk - 1}"


def value_error(value: Any, text: str) -> InvalidArgument:
    """TF's usual complaint about a JSON value: ``JSON Value: <value> <text>``."""
    return InvalidArgument(f"JSON Value: {debug_json(value)} {text}")
