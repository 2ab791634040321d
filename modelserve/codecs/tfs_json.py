"""TF Serving's REST JSON <-> numpy: predict, classify/regress, status and metadata bodies.

Pure functions, no I/O. Every accepted input, shape rule, error text and
float rendering follows TF Serving's ``util/json_tensor.cc`` (rapidjson
v1.1.0, absl base64) as inventoried in the reference (tfserving.md §2.6-2.12):
clients match on these strings and compare these numbers.

Two speeds, one behaviour. Requests are parsed by orjson and converted with
``np.array``; whenever that fast path cannot prove a value valid (NaN tokens,
trailing bytes, deep nesting, strings, ragged lists, a JSON ``true`` anywhere
in the body...) an exact slow path reproduces rapidjson and json_tensor.cc
step by step, including the first error TF would report. Float outputs are
rendered with TF's ``%g``-then-``%.9g``/``%.17g`` rule, vectorised with numpy
for large tensors.

Deliberate differences from TF Serving (see the module's tests):

* numbers are parsed correctly rounded (rapidjson without full precision can
  be one ULP off for literals with more than ~16 significant digits);
* a repeated object key keeps its last value (orjson), not its first;
* ``NaN``/``Infinity`` followed by ``.5`` or ``e5`` is a syntax error (rapidjson
  silently re-reads it as ``0.5``/``0``);
* DT_HALF and DT_BFLOAT16 inputs are accepted like DT_FLOAT (TF issue #1639);
* a tensor deeper than numpy's 64 dimensions is refused with a clear
  INVALID_ARGUMENT;
* a row request whose first instance is a ``{"b64": ...}`` object for a
  multi-input signature fails here with the plain-list error (TF feeds one
  input and fails later);
* invalid UTF-8 inside error messages is replaced by U+FFFD, and string
  outputs are decoded with ``errors="replace"``;
* doubles inside error messages use Python's shortest digits (rapidjson's
  Grisu2 agrees but for rare one-digit-longer cases);
* responses are compact JSON (TF pretty-prints them; clients parse either).
"""

from __future__ import annotations

import array as pyarray
import base64
import binascii
import enum
import math
import re
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from ..dtypes import DType, from_numpy, tf_name, to_numpy
from ..errors import InvalidArgument, ServingError, Unimplemented
from ..servable import Signature, TensorSpec

__all__ = [
    "Feature",
    "Format",
    "decode_examples",
    "decode_predict",
    "encode_classify",
    "encode_error",
    "encode_metadata",
    "encode_predict",
    "encode_regress",
    "encode_status",
    "format_double",
    "format_float32",
    "loads",
    "signature_name",
]

Array = npt.NDArray[Any]


class Format(enum.Enum):
    """Which request layout a predict call used; the response mirrors it."""

    ROW = "instances"
    COLUMNAR = "inputs"


FeatureKind = Literal["bytes", "float", "int64"]


@dataclass(frozen=True)
class Feature:
    """One ``tf.train.Feature`` of a classify/regress example.

    ``values`` holds bytes, float32-rounded Python floats or ints according
    to ``kind``. ``kind`` is None for an empty JSON list: TF then stores a
    Feature with no kind set.
    """

    kind: FeatureKind | None
    values: tuple[Any, ...]


# =========================================================================================
# Parsing: orjson first, an exact rapidjson (v1.1.0, iterative, NaN/Inf, stop-when-done)
# replica when orjson refuses.
# =========================================================================================


def loads(body: bytes) -> dict[str, Any]:
    """Parse a request body as TF Serving does; the top level must be an object."""
    if not body:
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _parse_exact(bytes(body))
    if type(doc) is not dict:
        raise InvalidArgument(f"JSON Value: {_debug_json(doc)} Is not object")
    return doc


class _ParseError(Exception):
    def __init__(self, text: str, offset: int) -> None:
        super().__init__(text)
        self.text = text
        self.offset = offset


# rapidjson's GetParseError_En texts.
_EMPTY = "The document is empty."
_INVALID = "Invalid value."
_MISS_NAME = "Missing a name for object member."
_MISS_COLON = "Missing a colon after a name of object member."
_MISS_COMMA_CURLY = "Missing a comma or '}' after an object member."
_MISS_COMMA_BRACKET = "Missing a comma or ']' after an array element."
_BAD_HEX = "Incorrect hex digit after \\u escape in string."
_BAD_SURROGATE = "The surrogate pair in string is invalid."
_BAD_ESCAPE = "Invalid escape character in string."
_MISS_QUOTE = "Missing a closing quotation mark in string."
_TOO_BIG = "Number too big to be stored in double."
_MISS_FRACTION = "Miss fraction part in number."
_MISS_EXPONENT = "Miss exponent in number."

# The iterative parser's states. An unexpected token or the end of input gets the error
# rapidjson's HandleError gives for the state the parser was in.
_START, _FINISH, _OBJ_INIT, _KEY, _COLON, _MEMBER, _OBJ_COMMA, _ARR_INIT, _ELEMENT, _ARR_COMMA = range(10)
_EOF_ERRORS = {
    _START: _EMPTY, _OBJ_INIT: _MISS_NAME, _OBJ_COMMA: _MISS_NAME, _KEY: _MISS_COLON,
    _MEMBER: _MISS_COMMA_CURLY, _COLON: _INVALID, _ARR_INIT: _INVALID, _ARR_COMMA: _INVALID,
    _ELEMENT: _MISS_COMMA_BRACKET,
}
_WS = re.compile(rb"[ \t\n\r]*")
_PLAIN_STRING = re.compile(rb'"([^"\\\x00-\x1f]*)"')
_STRING_CHUNK = re.compile(rb'[^"\\\x00-\x1f]*')
_DIGITS = re.compile(rb"[0-9]*")
_HEX4 = re.compile(rb"[0-9a-fA-F]{4}")
_ESCAPES = {ord('"'): b'"', ord("\\"): b"\\", ord("/"): b"/", ord("b"): b"\b",
            ord("f"): b"\f", ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t"}
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
_DBL_MAX_TENTH = int(1.7976931348623157e307)


def _parse_exact(data: bytes) -> Any:
    try:
        return _ExactParser(data).parse()
    except _ParseError as exc:
        raise InvalidArgument(f"JSON Parse error: {exc.text} at offset: {exc.offset}") from None


class _ExactParser:
    """rapidjson's iterative parser: no recursion, same errors at the same offsets.

    A NUL byte ends the input, as rapidjson's Peek() returns '\\0' at the end.
    Strings keep invalid UTF-8 as surrogate escapes so that their bytes survive.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.end = len(data)

    def parse(self) -> Any:
        pos = self._skip_bom()
        state, root, key = _START, None, ""
        stack: list[Any] = []  # the open containers, innermost last
        while True:
            pos = _WS.match(self.data, pos).end()  # type: ignore[union-attr]
            if pos >= self.end or self.data[pos] == 0:
                raise _ParseError(_EOF_ERRORS[state], pos)
            c = self.data[pos]
            if c == 0x5B or c == 0x7B:  # '[' or '{'
                if state not in (_START, _COLON, _ARR_INIT, _ARR_COMMA):
                    raise _ParseError(_EOF_ERRORS[state], pos)
                child: Any = [] if c == 0x5B else {}
                if stack:
                    self._attach(stack[-1], key, child)
                else:
                    root = child
                stack.append(child)
                state, pos = (_ARR_INIT if c == 0x5B else _OBJ_INIT), pos + 1
            elif c == 0x5D or c == 0x7D:  # ']' or '}'
                if state not in ((_ARR_INIT, _ELEMENT) if c == 0x5D else (_OBJ_INIT, _MEMBER)):
                    raise _ParseError(_EOF_ERRORS[state], pos)
                stack.pop()
                if not stack:
                    return root  # kParseStopWhenDoneFlag: trailing bytes are never read
                state, pos = (_ELEMENT if type(stack[-1]) is list else _MEMBER), pos + 1
            elif c == 0x2C:  # ','
                if state not in (_MEMBER, _ELEMENT):
                    raise _ParseError(_EOF_ERRORS[state], pos)
                state, pos = (_OBJ_COMMA if state == _MEMBER else _ARR_COMMA), pos + 1
            elif c == 0x3A:  # ':'
                if state != _KEY:
                    raise _ParseError(_EOF_ERRORS[state], pos)
                state, pos = _COLON, pos + 1
            elif state in (_OBJ_INIT, _OBJ_COMMA):
                if c != 0x22:
                    raise _ParseError(_MISS_NAME, pos)
                key, pos = self._string(pos)
                state = _KEY
            elif state in (_START, _COLON, _ARR_INIT, _ARR_COMMA):
                run = _NUMBER_RUN.match(self.data, pos) if state in (_ARR_INIT, _ARR_COMMA) else None
                if run is not None:  # a stretch of plain numbers in an array: parsed in bulk
                    stack[-1].extend(_run_values(run.group()))
                    state, pos = _ELEMENT, run.end()
                    continue
                value, pos = self._scalar(pos)
                if not stack:
                    return value
                self._attach(stack[-1], key, value)
                state = _MEMBER if state == _COLON else _ELEMENT
            else:
                raise _ParseError(_EOF_ERRORS[state], pos)

    @staticmethod
    def _attach(container: Any, key: str, value: Any) -> None:
        if type(container) is list:
            container.append(value)
        else:
            container[key] = value

    def _skip_bom(self) -> int:
        # EncodedInputStream<UTF8, MemoryStream> skips EF, BB, BF one by one.
        pos = 0
        for byte in (0xEF, 0xBB, 0xBF):
            if pos < self.end and self.data[pos] == byte:
                pos += 1
        return pos

    def _peek(self, pos: int) -> int:
        return self.data[pos] if pos < self.end else 0

    def _scalar(self, pos: int) -> tuple[Any, int]:
        c = self.data[pos]
        if c == 0x22:
            return self._string(pos)
        for word, value in ((b"null", None), (b"true", True), (b"false", False)):
            if c == word[0]:
                return value, self._literal(pos, word)
        return self._number(pos)

    def _literal(self, pos: int, word: bytes) -> int:
        i = 1
        while i < len(word) and self._peek(pos + i) == word[i]:
            i += 1
        if i < len(word):
            raise _ParseError(_INVALID, pos + i)
        return pos + i

    def _string(self, pos: int) -> tuple[str, int]:
        plain = _PLAIN_STRING.match(self.data, pos)
        if plain is not None:
            return plain.group(1).decode("utf-8", "surrogateescape"), plain.end()
        out = bytearray()
        i = pos + 1
        while True:
            chunk_end = _STRING_CHUNK.match(self.data, i).end()  # type: ignore[union-attr]
            out += self.data[i:chunk_end]
            i = chunk_end
            c = self._peek(i)
            if c == 0x22:
                return bytes(out).decode("utf-8", "surrogateescape"), i + 1
            if c == 0x5C:
                i = self._escape(i, out)
            elif c == 0:
                raise _ParseError(_MISS_QUOTE, i)
            else:  # a raw control character; v1.1.0 calls it an invalid escape
                raise _ParseError(_BAD_ESCAPE, i)

    def _escape(self, start: int, out: bytearray) -> int:
        e = self._peek(start + 1)
        simple = _ESCAPES.get(e)
        if simple is not None:
            out += simple
            return start + 2
        if e != 0x75:  # 'u'
            raise _ParseError(_BAD_ESCAPE, start)
        code = self._hex4(start + 2, start)
        i = start + 6
        if 0xD800 <= code <= 0xDBFF:
            if self.data[i:i + 2] != b"\\u":
                raise _ParseError(_BAD_SURROGATE, start)
            low = self._hex4(i + 2, start)
            if not 0xDC00 <= low <= 0xDFFF:
                raise _ParseError(_BAD_SURROGATE, start)
            code = (((code - 0xD800) << 10) | (low - 0xDC00)) + 0x10000
            i += 6
        # A lone low surrogate is encoded as is (rapidjson does not check it).
        out += chr(code).encode("utf-8", "surrogatepass")
        return i

    def _hex4(self, pos: int, escape_offset: int) -> int:
        match = _HEX4.match(self.data, pos)
        if match is None:
            raise _ParseError(_BAD_HEX, escape_offset)
        return int(match.group(), 16)

    def _number(self, start: int) -> tuple[Any, int]:
        minus = self._peek(start) == 0x2D
        i = start + minus
        c = self._peek(i)
        if c == 0x30:
            int_end = i + 1
        elif 0x31 <= c <= 0x39:
            int_end = _DIGITS.match(self.data, i).end()  # type: ignore[union-attr]
        elif c == 0x4E or c == 0x49:  # 'N' or 'I'
            return self._nan_or_inf(i, minus)
        else:
            raise _ParseError(_INVALID, i)
        j, frac_digits = int_end, 0
        exponent: int | None = None
        if self._peek(j) == 0x2E:
            frac_end = _DIGITS.match(self.data, j + 1).end()  # type: ignore[union-attr]
            if frac_end == j + 1:
                raise _ParseError(_MISS_FRACTION, j + 1)
            frac_digits, j = frac_end - j - 1, frac_end
        if self._peek(j) in (0x65, 0x45):  # 'e' or 'E'
            j += 1
            sign = self._peek(j)
            j += sign in (0x2B, 0x2D)
            exp_end = _DIGITS.match(self.data, j).end()  # type: ignore[union-attr]
            if exp_end == j:
                raise _ParseError(_MISS_EXPONENT, j)
            exponent = _bounded_int(self.data[j:exp_end]) * (-1 if sign == 0x2D else 1)
            j = exp_end
        self._check_magnitude(start, self.data[i:int_end], frac_digits, exponent)
        text = self.data[start:j]
        if frac_digits == 0 and exponent is None and int_end - i <= 20:
            value = int(text)
            if _INT64_MIN <= value <= _UINT64_MAX:
                return value, j
        return float(text), j  # v1.1.0 lets e.g. 2e308 become infinity

    @staticmethod
    def _check_magnitude(start: int, integer: bytes, frac_digits: int, exponent: int | None) -> None:
        # Past 64 bits rapidjson accumulates digits in a double and refuses to reach
        # DBL_MAX; a positive exponent may not pass 308 plus the fraction's digits.
        if len(integer) > 20 and (len(integer) > 310 or int(integer[:-1]) >= _DBL_MAX_TENTH):
            raise _ParseError(_TOO_BIG, start)
        if exponent is not None and exponent > 308 + frac_digits:
            raise _ParseError(_TOO_BIG, start)

    def _nan_or_inf(self, i: int, minus: bool) -> tuple[float, int]:
        # The same chain of Consume() calls as rapidjson, so errors stop where it stops.
        j = i

        def consume(ch: int) -> bool:
            nonlocal j
            if self._peek(j) == ch:
                j += 1
                return True
            return False

        if consume(0x4E) and consume(0x61) and consume(0x4E):
            return math.nan, j
        if consume(0x49) and consume(0x6E) and consume(0x66):
            if self._peek(j) == 0x69 and not all(consume(ch) for ch in b"inity"):
                raise _ParseError(_INVALID, j)
            return (-math.inf if minus else math.inf), j
        raise _ParseError(_INVALID, j)


# Array elements that need none of _number's checks: at most 18 integer digits, a 1-2
# digit exponent, or a NaN/Infinity token; each must end where rapidjson's number ends.
_PLAIN_NUMBER = (rb"(?:-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]+)?(?:[eE][-+]?[0-9]{1,2})?(?![0-9.eE])"
                 rb"|NaN|-?Infinity|-?Inf(?!i))")
_NUMBER_RUN = re.compile(_PLAIN_NUMBER + rb"(?:[ \t\n\r]*,[ \t\n\r]*" + _PLAIN_NUMBER + rb")*")
_SEPARATOR = re.compile(rb"[ \t\n\r]*,[ \t\n\r]*")
_FLOAT_MARKS = re.compile(rb"[.eEIN]")


def _run_values(run: bytes) -> list[Any]:
    return [float(token) if _FLOAT_MARKS.search(token) else int(token) for token in _SEPARATOR.split(run)]


def _bounded_int(digits: bytes) -> int:
    """An exponent's value, saturated: Python refuses int() of more than 4300 digits."""
    digits = digits.lstrip(b"0")
    return int(digits) if len(digits) <= 9 else 10**9


# =========================================================================================
# JSON values inside error messages: rapidjson's PrettyWriter (4-space indent, arrays on
# one line), stopped once 256 bytes are written, as JsonValueToDebugString does.
# =========================================================================================

_DEBUG_LIMIT = 256
_JSON_ESCAPES = {i: b"\\u%04X" % i for i in range(0x20)}
_JSON_ESCAPES.update({0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0C: b"\\f", 0x0D: b"\\r",
                      0x22: b'\\"', 0x5C: b"\\\\"})
_NEEDS_ESCAPE = re.compile(rb'[\x00-\x1f"\\]')
_END = object()


def _json_type(value: Any) -> str:
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


def _debug_json(value: Any) -> str:
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


# =========================================================================================
# Predict requests.
# =========================================================================================


def signature_name(doc: Mapping[str, Any]) -> str:
    """The request's ``signature_name``; "" when absent (the caller picks the default)."""
    if "signature_name" not in doc:
        return ""
    name = doc["signature_name"]
    if type(name) is not str:
        raise InvalidArgument(
            f"JSON Value: {_debug_json(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def decode_predict(
    doc: Mapping[str, Any], inputs: Mapping[str, DType], *, body: bytes = b""
) -> tuple[dict[str, Array], Format]:
    """Decode a predict request into one array per signature input.

    ``inputs`` maps the signature's input aliases to their dtypes. ``body`` is
    the raw request: with it the fast path can rule out JSON booleans cheaply;
    without it every non-bool numeric input takes the exact (slower) path.
    """
    if not inputs:
        name = signature_name(doc)
        raise InvalidArgument(f"Failed to get input map for signature: {name or 'DEFAULT'}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise _doc_error(doc, "Not formatted correctly expecting only one of 'inputs' or "
                              "'instances' keys to exist ")
    hints = _Hints(body)
    if has_instances:
        instances = doc["instances"]
        if type(instances) is not list:
            raise _doc_error(doc, "Expecting 'instances' to be an list/array")
        if not instances:
            raise _doc_error(doc, "No values in 'instances' array")
        return _decode_rows(instances, inputs, hints), Format.ROW
    if has_inputs:
        return _decode_columns(doc["inputs"], inputs, hints), Format.COLUMNAR
    raise InvalidArgument("Missing 'inputs' or 'instances' key")


def _doc_error(doc: Mapping[str, Any], text: str) -> InvalidArgument:
    return InvalidArgument(f"JSON Value: {_debug_json(doc)} {text}")


class _Hints:
    """What the raw body tells the fast path; computed lazily, once per request."""

    def __init__(self, body: bytes) -> None:
        self._body = body if type(body) is bytes else bytes(body)
        self._may_hold_bool: bool | None = None

    @property
    def may_hold_bool(self) -> bool:
        # np.array([True, 1.5]) silently gives floats, so any true/false in the body
        # (even inside a string) sends numeric inputs to the exact path.
        if self._may_hold_bool is None:
            body = self._body
            self._may_hold_bool = not body or _contains(body, b"true") or _contains(body, b"false")
        return self._may_hold_bool


def _contains(body: bytes, word: bytes) -> bool:
    # bytes.find with one byte is a memchr; a multi-byte search is ~20x slower here.
    first = word[:1]
    i = body.find(first)
    while i != -1:
        if body.startswith(word, i):
            return True
        i = body.find(first, i + 1)
    return False


def _is_b64(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def _is_named(value: Any) -> bool:
    return type(value) is dict and not _is_b64(value)


# ---- row format ("instances") --------------------------------------------------------------


def _decode_rows(instances: list[Any], inputs: Mapping[str, DType], hints: _Hints) -> dict[str, Array]:
    fast = _fast_rows(instances, inputs, hints)
    if fast is not None:
        return fast
    return _exact_rows(instances, inputs)


def _fast_rows(instances: list[Any], inputs: Mapping[str, DType], hints: _Hints) -> dict[str, Array] | None:
    names = inputs.keys()
    if not _is_named(instances[0]):
        if len(inputs) > 1:
            return None
        name = next(iter(inputs))
        array = _fast_array(instances, inputs[name], hints)
        return None if array is None else {name: array}
    if not all(type(item) is dict and item.keys() == names for item in instances):
        return None
    result = {}
    for name, dtype in inputs.items():
        array = _fast_array([item[name] for item in instances], dtype, hints)
        if array is None:
            return None
        result[name] = array
    return result


def _exact_rows(instances: list[Any], inputs: Mapping[str, DType]) -> dict[str, Array]:
    """FillTensorMapFromInstancesList: every element checked, TF's first error raised."""
    first = instances[0]
    objects = _is_named(first)
    if len(inputs) > 1 and not objects:
        # TF checks IsObject() here and lets a lone {"b64": ...} through to fail later.
        raise InvalidArgument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    batch = _RowBatch(inputs)
    for index, item in enumerate(instances):
        if objects:
            _add_object_row(batch, index, item, inputs)
        else:
            if _is_named(item):
                raise InvalidArgument(f"Expecting value/list but got object at item {index} of input list")
            name = next(iter(inputs))
            try:
                batch.add(name, item)
            except ServingError as exc:
                raise _wrap(exc, f"Failed to process element: {index} of 'instances' list. Error: ") from None
    return batch.arrays(len(instances))


def _add_object_row(batch: _RowBatch, index: int, item: Any, inputs: Mapping[str, DType]) -> None:
    if not _is_named(item):
        raise InvalidArgument(f"Expecting object but got list at item {index} of input list")
    for key, value in item.items():
        try:
            batch.add(key, value)
        except ServingError as exc:
            raise _wrap(exc, f"Failed to process element: {index} key: {key} of 'instances' list. "
                             "Error: ") from None
    if item.keys() != inputs.keys():
        raise InvalidArgument(
            f"Failed to process element: {index} of 'instances' list. JSON object: "
            f"{_debug_json(item)} keys must be equal to: {','.join(sorted(inputs))}"
        )


def _wrap(exc: ServingError, prefix: str) -> InvalidArgument:
    # TF re-raises every element error as INVALID_ARGUMENT (even UNIMPLEMENTED, so an
    # unsupported dtype is a 400 here and a 501 in the columnar format); absl's
    # Status::ToString() puts the inner code's name before its message.
    return InvalidArgument(f"{prefix}{exc.code.name}: {exc}")


class _RowBatch:
    """AddInstanceItem's bookkeeping: per input, the first element's size and shape rule."""

    def __init__(self, inputs: Mapping[str, DType]) -> None:
        self._inputs = inputs
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._values: dict[str, list[Any]] = {}

    def add(self, name: str, item: Any) -> None:
        if name not in self._inputs:
            raise InvalidArgument(f"JSON object: does not have named input: {name}")
        shape, values = _exact_tensor(item, self._inputs[name], _MAX_RANK - 1)
        if name not in self._shapes:
            self._shapes[name] = shape
            self._values[name] = values
            return
        expected = self._shapes[name]
        if math.prod(expected) != len(values):
            raise InvalidArgument(f"Expecting tensor size: {math.prod(expected)} but got: {len(values)}")
        if expected != shape:
            raise InvalidArgument(f"Expecting shape {_shape_text(expected)} but got: {_shape_text(shape)}")
        self._values[name].extend(values)

    def arrays(self, count: int) -> dict[str, Array]:
        return {
            name: _to_array((count, *self._shapes[name]), self._values[name], self._inputs[name])
            for name in self._shapes
        }


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


# ---- columnar format ("inputs") ----------------------------------------------------------


def _decode_columns(value: Any, inputs: Mapping[str, DType], hints: _Hints) -> dict[str, Array]:
    """FillTensorMapFromInputsMap: a bare value for one input, else an object of inputs."""
    if not _is_named(value):
        if len(inputs) > 1:
            raise InvalidArgument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        name = next(iter(inputs))
        return {name: _column(value, inputs[name], hints)}
    result = {}
    for name, dtype in inputs.items():
        if name not in value:
            raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        result[name] = _column(value[name], dtype, hints)
    return result


def _column(value: Any, dtype: DType, hints: _Hints) -> Array:
    array = _fast_array(value, dtype, hints)
    if array is not None:
        return array
    shape, values = _exact_tensor(value, dtype, _MAX_RANK)
    return _to_array(shape, values, dtype)


# ---- dtype rules (§2.8) -------------------------------------------------------------------

_FLOAT_TYPES = frozenset({DType.DT_FLOAT, DType.DT_DOUBLE, DType.DT_HALF, DType.DT_BFLOAT16})
# Inclusive ranges of the JSON integers each integer dtype accepts; the narrow types
# take any int32 and wrap, as TF stores them in int_val.
_INT_RANGES: dict[DType, tuple[int, int]] = {
    DType.DT_INT32: (-(2**31), 2**31 - 1), DType.DT_INT16: (-(2**31), 2**31 - 1),
    DType.DT_INT8: (-(2**31), 2**31 - 1), DType.DT_UINT8: (-(2**31), 2**31 - 1),
    DType.DT_INT64: (_INT64_MIN, _INT64_MAX), DType.DT_UINT32: (0, 2**32 - 1),
    DType.DT_UINT64: (0, _UINT64_MAX),
}
_MAX_RANK = 64  # numpy's limit on dimensions (TF's is 254)


def _fast_array(value: Any, dtype: DType, hints: _Hints) -> Array | None:
    """Vectorised conversion plus cheap checks; None whenever validity is not proven."""
    if dtype is DType.DT_BOOL:
        return _fast_bools(value)
    if dtype is DType.DT_STRING or hints.may_hold_bool:
        return None  # np.array([True, 1.5]) silently gives floats
    if dtype in _FLOAT_TYPES:
        return _fast_floats(value, dtype)
    if dtype in _INT_RANGES:
        return _fast_ints(value, dtype)
    return None


def _fast_bools(value: Any) -> Array | None:
    array = _inferred(value)
    if array is None or (array.dtype.kind != "b" and array.size):
        return None
    return array.astype(np.bool_, copy=False)


def _fast_floats(value: Any, dtype: DType) -> Array | None:
    # A vector or a batch of vectors (the common request) goes through array.array:
    # it refuses anything but real numbers and casts like C, overflow giving inf.
    buffer = _float_buffer(value, "f" if dtype is DType.DT_FLOAT else "d")
    if buffer is not None:
        return _cast_float(buffer, to_numpy(dtype))
    array = _inferred(value)
    if array is None:
        return None
    if array.dtype.kind in "iu" or (array.dtype.kind == "b" and not array.size):
        array = array.astype(np.float64)
    elif array.dtype.kind != "f":
        return None
    return _cast_float(array, to_numpy(dtype))


def _fast_ints(value: Any, dtype: DType) -> Array | None:
    array = _inferred(value)
    if array is None:
        return None
    kind = array.dtype.kind
    if not array.size and kind in "fb":
        return array.astype(to_numpy(dtype))
    if kind not in "iu":
        return None
    low, high = _INT_RANGES[dtype]
    if not (dtype is DType.DT_INT64 and kind == "i") and (array.min() < low or array.max() > high):
        return None
    return array.astype(to_numpy(dtype))


def _inferred(value: Any) -> Array | None:
    try:
        return np.array(value)
    except (ValueError, TypeError, OverflowError):
        return None  # ragged, too deep, or mixed: the exact walker says why


def _float_buffer(value: Any, typecode: str) -> Array | None:
    """A list of numbers, or of equal-length lists of numbers, read by array.array."""
    if type(value) is not list:
        return None
    try:
        if not value or type(value[0]) is not list:
            return np.frombuffer(pyarray.array(typecode, value), dtype=typecode)
        width = len(value[0])
        buffer = pyarray.array(typecode)
        for row in value:
            if type(row) is not list or len(row) != width:
                return None
            buffer.fromlist(row)
    except (TypeError, OverflowError):
        return None
    return np.frombuffer(buffer, dtype=typecode).reshape(len(value), width)


def _cast_float(array: Array, target: np.dtype[Any]) -> Array:
    # Values past the target's range become +-inf, as TF's static_cast does; numpy
    # warns about that overflow unless told not to.
    if array.dtype == target:
        return array
    with np.errstate(over="ignore", invalid="ignore"):
        return array.astype(target)


def _exact_tensor(value: Any, dtype: DType, max_rank: int) -> tuple[tuple[int, ...], list[Any]]:
    """GetDenseTensorShape + FillTensorProto, without recursion: (shape, flat values)."""
    shape = _dense_shape(value)
    rank = len(shape)
    if rank > max_rank:
        raise InvalidArgument(f"Tensor rank {rank} is over the limit of {max_rank} dimensions")
    values: list[Any] = []
    if type(value) is not list:
        _add_leaf(value, 0, rank, dtype, values)
        return shape, values
    stack: list[tuple[Iterator[Any], int]] = [(iter(value), 1)]
    while stack:
        children, level = stack[-1]
        child = next(children, _END)
        if child is _END:
            stack.pop()
        elif type(child) is list:
            if level >= rank:
                raise InvalidArgument(f"Encountered list at unexpected level: {level} expected < {rank}")
            if len(child) != shape[level]:
                raise InvalidArgument(
                    f"Encountered list at unexpected size: {len(child)} at level: {level} "
                    f"expected size: {shape[level]}"
                )
            stack.append((iter(child), level + 1))
        else:
            _add_leaf(child, level, rank, dtype, values)
    return shape, values


def _dense_shape(value: Any) -> tuple[int, ...]:
    # Sizes come from the first element at each level, like GetDenseTensorShape.
    dims = []
    while type(value) is list:
        dims.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(dims)


def _add_leaf(value: Any, level: int, rank: int, dtype: DType, values: list[Any]) -> None:
    if level != rank:
        raise InvalidArgument(
            f"JSON Value: {_debug_json(value)} found at incorrect level: {level + 1} in the JSON "
            f"DOM. Expected at level: {rank}"
        )
    if type(value) is dict:
        if dtype is not DType.DT_STRING:
            raise _type_error(value, dtype)
        values.append(_decode_b64_object(value))
    else:
        values.append(_json_scalar(value, dtype))


def _json_scalar(value: Any, dtype: DType) -> Any:
    """AddValueToTensor: the value to store, or TF's error for this dtype."""
    kind = type(value)
    if dtype in _FLOAT_TYPES:
        if kind is float or kind is int:
            return value
    elif dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if kind is int and low <= value <= high:
            return value
    elif dtype is DType.DT_BOOL:
        if kind is bool:
            return value
    elif dtype is DType.DT_STRING:
        if kind is str:
            return value.encode("utf-8", "surrogateescape")
    else:
        raise Unimplemented(f"Conversion of JSON Value: {_debug_json(value)} to type: {tf_name(dtype)}")
    raise _type_error(value, dtype)


def _type_error(value: Any, dtype: DType) -> InvalidArgument:
    return InvalidArgument(
        f"JSON Value: {_debug_json(value)} Type: {_json_type(value)} is not of expected type: "
        f"{tf_name(dtype)}"
    )


def _decode_b64_object(value: Any) -> bytes:
    if not _is_b64(value):
        raise InvalidArgument(f"JSON Value: {_debug_json(value)} not formatted correctly for base64 data")
    decoded = _b64decode(value["b64"])
    if decoded is None:
        raise InvalidArgument("Unable to base64 decode")
    return decoded


_B64_WHITESPACE = b" \t\n\v\f\r"
_B64_BODY = re.compile(rb"[A-Za-z0-9+/]*")
_B64_PADS = {0: 0, 2: 2, 3: 1}


def _b64decode(text: str) -> bytes | None:
    """absl::Base64Unescape: standard alphabet, whitespace ignored, padding absent or exact."""
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        return None
    data = data.translate(None, _B64_WHITESPACE)
    body = data.rstrip(b"=")
    pads = len(data) - len(body)
    if _B64_BODY.fullmatch(body) is None:
        return None
    expected = _B64_PADS.get(len(body) % 4)
    if expected is None or pads not in (0, expected):
        return None
    return binascii.a2b_base64(body + b"=" * expected)


def _to_array(shape: tuple[int, ...], values: list[Any], dtype: DType) -> Array:
    target = to_numpy(dtype)
    if dtype is DType.DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif dtype in _FLOAT_TYPES:
        array = _cast_float(np.array(values, dtype=np.float64), target)
    elif dtype in _INT_RANGES:
        # Through a type that holds every accepted value, then wrap like a C cast.
        wide = np.uint64 if dtype is DType.DT_UINT64 else np.int64
        array = np.array(values, dtype=wide).astype(target)
    else:
        array = np.array(values, dtype=target)
    return array.reshape(shape)


# =========================================================================================
# Classify / regress requests (MakeExampleFromJsonObject / AddValueToFeature).
# =========================================================================================


def decode_examples(
    doc: Mapping[str, Any],
) -> tuple[list[dict[str, Feature]], dict[str, Feature] | None]:
    """The ``examples`` of a classify/regress request and its optional ``context``."""
    context = _example(doc["context"]) if "context" in doc else None
    if "examples" not in doc:
        # TF says "classify" for both verbs.
        raise _doc_error(doc, "When method is classify, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if type(examples) is not list:
        raise _doc_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _doc_error(doc, "'examples' value is an empty array")
    return [_example(item) for item in examples], context


def _example(value: Any) -> dict[str, Feature]:
    if type(value) is not dict:
        raise InvalidArgument(f"Example must be JSON object but got JSON {_json_type(value)}")
    return {
        name: _feature(name, content if type(content) is list else [content])
        for name, content in value.items()
    }


def _feature(name: str, items: list[Any]) -> Feature:
    kind: FeatureKind | None = None
    values = []
    for item in items:
        item_kind, converted = _feature_value(name, item, kind)
        kind = item_kind
        values.append(converted)
    return Feature(kind, tuple(values))


def _feature_value(name: str, item: Any, kind: FeatureKind | None) -> tuple[FeatureKind, Any]:
    item_type = type(item)
    if item is None or item_type is list or (item_type is dict and not _is_b64(item)):
        raise InvalidArgument(f"Feature: {name} has element with unexpected JSON type: {_json_type(item)}")
    wanted: FeatureKind = (
        "int64" if item_type is bool or item_type is int
        else "float" if item_type is float
        else "bytes"
    )
    if kind is not None and kind != wanted:
        raise InvalidArgument(f"Unexpected element type in feature: {name} expecting type: {kind}")
    if item_type is bool:
        return wanted, int(item)
    if item_type is int:
        if item > _INT64_MAX:
            raise InvalidArgument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        return wanted, item
    if item_type is float:
        return wanted, _round_f32(item)
    if item_type is dict:
        return wanted, _decode_b64_object(item)
    return wanted, item.encode("utf-8", "surrogateescape")


# =========================================================================================
# Float formatting (§2.9): %g, re-formatted with max_digits10 unless it round-trips, ".0"
# appended to whole numbers, bare NaN/Infinity/-Infinity.
# =========================================================================================

_F32 = struct.Struct("<f")
_FLOAT32_MIN_NORMAL = 2.0**-126


def _round_f32(x: float) -> float:
    """static_cast<float>(x) as a Python float (overflow gives +-inf)."""
    try:
        return float(_F32.unpack(_F32.pack(x))[0])
    except OverflowError:
        return math.copysign(math.inf, x)


def _nonfinite(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    return "-Infinity" if x < 0 else "Infinity"


def format_float32(x: float) -> str:
    """A DT_FLOAT value as TF Serving writes it (``x`` is first rounded to float32)."""
    x = _round_f32(float(x))
    if not math.isfinite(x):
        return _nonfinite(x)
    return _format_f32(x)


def _format_f32(x: float) -> str:
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
    rounded = _round_f32(parsed)
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
        return _nonfinite(x)
    return _format_f64(x)


def _format_f64(x: float) -> str:
    text = "%g" % x  # noqa: UP031
    if float(text) != x:
        text = "%.17g" % x  # noqa: UP031
    if "." not in text and "e" not in text:
        text += ".0"
    return text


# ---- vectorised float32 formatting --------------------------------------------------------
#
# For large tensors the same %g / %.9g digits are computed with numpy: the decimal
# exponent from log10 (fixed by exact comparisons), the rounded digits from a scaled
# double. Every element whose rounding or round trip falls within a few ULPs of a tie
# is re-done by the scalar code above, so the output is the same byte for byte.

_VECTOR_MIN = 640  # the numpy path costs ~150 array operations: below this, loop in Python
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


def _f32_texts(values: Array) -> Array:
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
    slots += [np.where(p < point, chars[p], np.where(p == point, np.uint8(46), chars[p - 1]))
              for p in range(1, 9)]
    slots.append(np.where(point == 9, np.uint8(46), chars[8]) * (point <= 9))
    magnitude = np.abs(exponent)  # at most 45 for float32: two digits
    columns = [
        _chars(negative, "-"), _chars(small, "0"), _chars(small, "."),
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


def _join_matrix(texts: Array, shape: tuple[int, ...], parts: int) -> list[bytes]:
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


# =========================================================================================
# Predict responses.
# =========================================================================================

_NUMPY_OPTS = orjson.OPT_SERIALIZE_NUMPY


def encode_predict(outputs: Mapping[str, Array], fmt: Format) -> bytes:
    """``{"predictions": ...}`` for a row request, ``{"outputs": ...}`` for a columnar one.

    Outputs are written in the mapping's order (TF's is its proto map's order).
    """
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    arrays = {name: np.asarray(value) for name, value in outputs.items()}
    if fmt is Format.COLUMNAR:
        return _encode_columns(arrays)
    return _encode_rows(arrays)


def _encode_columns(arrays: dict[str, Array]) -> bytes:
    if len(arrays) == 1:
        ((name, array),) = arrays.items()
        return b'{"outputs":' + _render(name, array, split=False)[0] + b"}"
    fields = [orjson.dumps(name) + b":" + _render(name, array, split=False)[0]
              for name, array in arrays.items()]
    return b'{"outputs":{' + b",".join(fields) + b"}}"


def _encode_rows(arrays: dict[str, Array]) -> bytes:
    batch = -1
    for name, array in arrays.items():
        if array.ndim == 0:
            raise InvalidArgument(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise InvalidArgument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}"
            )
        batch = array.shape[0]
    if len(arrays) == 1:
        # The list of per-example values is the tensor itself in nested form.
        ((name, array),) = arrays.items()
        return b'{"predictions":' + _render(name, array, split=False)[0] + b"}"
    keys = [orjson.dumps(name) + b":" for name in arrays]
    columns = [_render(name, array, split=True) for name, array in arrays.items()]
    rows = [b"{" + b",".join(k + v for k, v in zip(keys, row, strict=True)) + b"}"
            for row in zip(*columns, strict=True)]
    return b'{"predictions":[' + b",".join(rows) + b"]}"


def _render(name: str, array: Array, *, split: bool) -> list[bytes]:
    """The tensor's JSON as one item, or (``split``) one item per entry along dim 0."""
    if array.size == 0:
        return _render_empty(array.shape, split)  # nothing is written, so no dtype error
    renderer = _RENDERERS.get(array.dtype)
    if renderer is not None:
        return renderer(array, split)
    if array.dtype.kind in "OSU":
        return _render_strings(array, split, as_bytes=name.endswith("_bytes"))
    if not array.dtype.isnative:
        return _render(name, array.astype(array.dtype.newbyteorder("=")), split=split)
    raise InvalidArgument(f"Failed to write JSON value for tensor type: {_type_label(array)}")


def _type_label(array: Array) -> str:
    try:
        return tf_name(from_numpy(array.dtype))
    except ServingError:
        return str(array.dtype)


def _render_empty(shape: tuple[int, ...], split: bool) -> list[bytes]:
    if not split:
        return [_empty_json(shape)]
    return [_empty_json(shape[1:])] * shape[0] if shape[0] else []


def _empty_json(shape: tuple[int, ...]) -> bytes:
    # Only called for shapes holding a 0, so the recursion ends there.
    if shape[0] == 0:
        return b"[]"
    return b"[" + b",".join([_empty_json(shape[1:])] * shape[0]) + b"]"


def _nest(texts: list[str], shape: tuple[int, ...], split: bool) -> list[bytes]:
    dims = shape[1:] if split else shape
    if not dims:
        return [text.encode() for text in texts]
    for dim in reversed(dims):
        if dim == len(texts):
            texts = ["[" + ",".join(texts) + "]"]
        else:
            texts = ["[" + ",".join(texts[i:i + dim]) + "]" for i in range(0, len(texts), dim)]
    return [text.encode() for text in texts]


def _render_as_float32(array: Array, split: bool) -> list[bytes]:
    # DT_HALF and DT_BFLOAT16 are written as their float32 value (a signalling NaN
    # raises the invalid flag when widened).
    with np.errstate(invalid="ignore"):
        return _render_float32(array.astype(np.float32), split)


def _render_float32(array: Array, split: bool) -> list[bytes]:
    if array.size < _VECTOR_MIN:
        # `v - v == 0` is a fast isfinite(): inf - inf and NaN - NaN are NaN.
        texts = [_format_f32(v) if v - v == 0 else _nonfinite(v) for v in array.ravel().tolist()]
        return _nest(texts, array.shape, split)
    if split:
        return _join_matrix(_f32_texts(array.ravel()), array.shape[1:], array.shape[0])
    return _join_matrix(_f32_texts(array.ravel()), array.shape, 1)


def _render_float64(array: Array, split: bool) -> list[bytes]:
    texts = [_format_f64(v) if v - v == 0 else _nonfinite(v) for v in array.ravel().tolist()]
    return _nest(texts, array.shape, split)


def _render_plain(array: Array, split: bool) -> list[bytes]:
    # orjson writes integer and bool arrays natively, when C-contiguous and not 0-d.
    if array.ndim == 0:
        return [orjson.dumps(array.item())]
    array = np.ascontiguousarray(array)
    if not split:
        return [orjson.dumps(array, option=_NUMPY_OPTS)]
    if array.ndim == 1:
        return orjson.dumps(array, option=_NUMPY_OPTS)[1:-1].split(b",")
    return [orjson.dumps(row, option=_NUMPY_OPTS) for row in array]


def _render_strings(array: Array, split: bool, *, as_bytes: bool) -> list[bytes]:
    convert = _b64_value if as_bytes else _text_value
    flat = np.empty(array.size, dtype=object)
    flat[:] = [convert(v) for v in array.ravel().tolist()]
    nested = flat.reshape(array.shape).tolist()
    if not split:
        return [orjson.dumps(nested)]
    return [orjson.dumps(row) for row in nested]


def _as_bytes(value: Any) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidArgument("Failed to write JSON value for tensor type: string")


def _text_value(value: Any) -> str:
    # TF writes the bytes unchecked; JSON text must be UTF-8, so invalid bytes become U+FFFD.
    return _as_bytes(value).decode("utf-8", "replace")


def _b64_value(value: Any) -> dict[str, str]:
    return {"b64": base64.b64encode(_as_bytes(value)).decode("ascii")}


_Renderer = Callable[[Array, bool], list[bytes]]
# The supported output dtypes but DT_STRING (any object, bytes or str array).
_RENDERERS: dict[np.dtype[Any], _Renderer] = {
    np.dtype(np.float32): _render_float32,
    np.dtype(np.float16): _render_as_float32,
    to_numpy(DType.DT_BFLOAT16): _render_as_float32,
    np.dtype(np.float64): _render_float64,
    **{np.dtype(t): _render_plain for t in (np.int8, np.int16, np.int32, np.int64, np.uint8,
                                             np.uint32, np.uint64, np.bool_)},
}


# =========================================================================================
# Other bodies.
# =========================================================================================


def encode_classify(results: Sequence[Sequence[tuple[str, float]]]) -> bytes:
    """``{"results": [[[label, score], ...] per example]}``, scores as DT_FLOAT."""
    if not results:
        raise InvalidArgument("Cannot convert empty ClassificationResults to JSON")
    examples = []
    for classes in results:
        pairs = [b"[" + orjson.dumps(_text_value(label)) + b"," + format_float32(score).encode() + b"]"
                 for label, score in classes]
        examples.append(b"[" + b",".join(pairs) + b"]")
    return b'{"results":[' + b",".join(examples) + b"]}"


def encode_regress(values: Sequence[float]) -> bytes:
    """``{"results": [value per example]}``, values as DT_FLOAT."""
    if not values:
        raise InvalidArgument("Cannot convert empty RegressionResults to JSON")
    return b'{"results":[' + ",".join(format_float32(v) for v in values).encode() + b"]}"


def encode_error(message: str) -> bytes:
    """``{"error": message}``; lone surrogates are replaced rather than failing."""
    try:
        return orjson.dumps({"error": message})
    except orjson.JSONEncodeError:
        clean = message.encode("utf-8", "replace").decode("utf-8")
        return orjson.dumps({"error": clean})


def encode_status(versions: Sequence[tuple[int, str, str, str]]) -> bytes:
    """GetModelStatusResponse as protobuf JSON; rows are (version, state, error_code, message)."""
    return orjson.dumps({
        "model_version_status": [
            {"version": str(version), "state": state,
             "status": {"error_code": code, "error_message": message}}
            for version, state, code, message in versions
        ]
    })


def encode_metadata(name: str, version: int, signatures: Mapping[str, Signature]) -> bytes:
    """GetModelMetadataResponse as TF Serving's REST layer prints it (int64s as strings)."""
    return orjson.dumps({
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": {
            key: _signature_json(signature) for key, signature in signatures.items()
        }}},
    })


def _signature_json(signature: Signature) -> dict[str, Any]:
    return {
        "inputs": {alias: _tensor_info_json(spec) for alias, spec in signature.inputs.items()},
        "outputs": {alias: _tensor_info_json(spec) for alias, spec in signature.outputs.items()},
        "method_name": signature.method_name,
        "defaults": {},  # TF Serving stopped returning defaults in 2.19
    }


def _tensor_info_json(spec: TensorSpec) -> dict[str, Any]:
    # Field order of the golden file: plain fields first, then the `encoding` oneof.
    if spec.shape is None:
        shape: dict[str, Any] = {"dim": [], "unknown_rank": True}
    else:
        shape = {"dim": [{"size": str(size), "name": ""} for size in spec.shape], "unknown_rank": False}
    return {"dtype": DType(spec.dtype).name, "tensor_shape": shape, "name": spec.name}
