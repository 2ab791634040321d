"""TF Serving's text-format config files (ModelServerConfig, BatchingParameters, SSLConfig ...).

Errors are INVALID_ARGUMENT naming the file, line and column, as TF Serving's;
the parser's own complaint is also logged in protobuf's words ("Error parsing
text-format <message>: line:column: ..."), as TF Serving's C++ protobuf prints
it on stderr, since scripts and tests watching a server's stderr look for it.
Files may be local paths or fsspec URIs (``modelserve.storage``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from google.protobuf import text_format
from google.protobuf.message import Message

from ..errors import InvalidArgument, ServingError
from ..storage import read_bytes
from ._pool import POOL

log = logging.getLogger(__name__)


def parse_text(text: str, message: Message, path: str, said: Callable[[str], None] | None = None) -> Message:
    """Parse ``text`` into ``message``; errors name the file, line and column. The parser's own line goes
    to ``said`` when given (a poller that says a repeated error once), else to the log."""
    try:
        text_format.Parse(text, message, descriptor_pool=POOL)
    except text_format.ParseError as exc:
        where = f"line {exc.GetLine()} column {exc.GetColumn()}: " if exc.GetLine() else ""
        detail = str(exc).split(" : ", 1)[-1]
        at = f"{exc.GetLine()}:{exc.GetColumn()}: " if exc.GetLine() else ""
        line = f"Error parsing text-format {message.DESCRIPTOR.full_name}: {at}{detail}"
        if said is None:
            log.error("%s", line)
        else:
            said(line)
        raise InvalidArgument(f"Invalid protobuf file: '{path}': {where}{detail}") from None
    return message


def read_text_proto(path: str, message: Message, said: Callable[[str], None] | None = None) -> Message:
    try:
        text = read_bytes(path).decode("utf-8")
    except OSError as exc:
        raise InvalidArgument(f"Invalid protobuf file: '{path}': {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ServingError) as exc:
        raise InvalidArgument(f"Invalid protobuf file: '{path}': {exc}") from None
    return parse_text(text, message, path, said)
