"""Request bodies: orjson first, rapidjson's parser replicated when orjson refuses.

The replica is rapidjson v1.1.0's iterative parser (NaN/Inf, stop-when-done), with
the same errors at the same offsets.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from ...budget import UNMETERED, Account
from ...errors import InvalidArgument
from .json_text import value_error

# What parsing costs, per token of the body, so that it is charged before orjson allocates it.
# Measured (RSS high-water mark over a fresh process, orjson 3.13, CPython 3.11, bodies of 5M
# elements, docs/security.md "Memory budget"): orjson first builds its reader's tree (~16-20 bytes
# per JSON value plus a copy of the strings), then the Python objects, kept:
#   [0,0,...]        2 bytes/element: peak  26, kept   8 (small ints are shared)
#   [0.5,...]        4 bytes/element: peak  60, kept  40 (a float object and its list slot)
#   [123456,...]     7 bytes/element: peak  63, kept  40
#   ["abcdefghij"]  13 bytes/element: peak 101, kept  72
#   [[],[],...]      3 bytes/element: peak  91, kept  72 (a list object: 30x the body)
#   [{"a":0},...]    8 bytes/element: peak 257, kept 201 (a dict: 32x the body)
# Each estimate below is at least the measured peak: a value (every comma, opening bracket or
# brace) costs the reader's 24 and a 40-byte Python scalar with its slot; a list 72 more, a dict 80
# and 120 per member; a string 64 (its object, counted per quote) plus its bytes twice (the
# reader's copy and the str), bounded by twice the body.
_PER_VALUE = 24 + 40
_PER_LIST = 72
_PER_DICT = 80
_PER_MEMBER = 120
_PER_QUOTE = 32


def parse_bytes(body: bytes) -> int:
    """An upper estimate of what parsing ``body`` allocates, from counts of its structural bytes."""
    lists, dicts, commas, colons, quotes = _structural_counts(body)
    values = commas + lists + dicts + 1
    return (
        2 * len(body)
        + values * _PER_VALUE
        + lists * _PER_LIST
        + dicts * _PER_DICT
        + colons * _PER_MEMBER
        + quotes * _PER_QUOTE
    )


_STRUCTURAL = b'[{,:"'
# Every byte but those: deleting them (bytes.translate, one C pass) leaves a short string to count,
# about 3x faster than counting each structural byte over the whole body. In chunks, so that the
# temporary copy stays small whatever the body holds (it exists before the estimate is charged).
_OTHERS = bytes(range(256)).translate(None, _STRUCTURAL)
_CHUNK = 1 << 15


def _structural_counts(body: bytes) -> list[int]:
    """How many of each byte of ``_STRUCTURAL`` ``body`` holds, in that order."""
    counts = [0] * len(_STRUCTURAL)
    for start in range(0, len(body), _CHUNK):
        kept = body[start : start + _CHUNK].translate(None, _OTHERS)
        for i, code in enumerate(_STRUCTURAL):
            counts[i] += kept.count(code)
    return counts


def loads(body: bytes, account: Account = UNMETERED) -> dict[str, Any]:
    """Parse a request body as TF Serving does; the top level must be an object. What the parse
    allocates (``parse_bytes``) is charged to ``account`` first."""
    if not body:
        raise InvalidArgument("JSON Parse error: The document is empty")
    account.charge(parse_bytes(body), f"parse a JSON body of {len(body)} bytes")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _parse_exact(bytes(body))
    if type(doc) is not dict:
        raise value_error(doc, "Is not object")
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
    _START: _EMPTY,
    _OBJ_INIT: _MISS_NAME,
    _OBJ_COMMA: _MISS_NAME,
    _KEY: _MISS_COLON,
    _MEMBER: _MISS_COMMA_CURLY,
    _COLON: _INVALID,
    _ARR_INIT: _INVALID,
    _ARR_COMMA: _INVALID,
    _ELEMENT: _MISS_COMMA_BRACKET,
}
_WS = re.compile(rb"[ \t\n\r]*")
_PLAIN_STRING = re.compile(rb'"([^"\\\x00-\x1f]*)"')
_STRING_CHUNK = re.compile(rb'[^"\\\x00-\x1f]*')
_DIGITS = re.compile(rb"[0-9]*")
_HEX4 = re.compile(rb"[0-9a-fA-F]{4}")
_ESCAPES = {
    ord('"'): b'"',
    ord("\\"): b"\\",
    ord("/"): b"/",
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
}
INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
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
            if self.data[i : i + 2] != b"\\u":
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
            if INT64_MIN <= value <= UINT64_MAX:
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
_PLAIN_NUMBER = (
    rb"(?:-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]+)?(?:[eE][-+]?[0-9]{1,2})?(?![0-9.eE])"
    rb"|NaN|-?Infinity|-?Inf(?!i))"
)
_NUMBER_RUN = re.compile(_PLAIN_NUMBER + rb"(?:[ \t\n\r]*,[ \t\n\r]*" + _PLAIN_NUMBER + rb")*")
_SEPARATOR = re.compile(rb"[ \t\n\r]*,[ \t\n\r]*")
_FLOAT_MARKS = re.compile(rb"[.eEIN]")


def _run_values(run: bytes) -> list[Any]:
    return [float(token) if _FLOAT_MARKS.search(token) else int(token) for token in _SEPARATOR.split(run)]


def _bounded_int(digits: bytes) -> int:
    """An exponent's value, saturated: Python refuses int() of more than 4300 digits."""
    digits = digits.lstrip(b"0")
    return int(digits) if len(digits) <= 9 else 10**9
