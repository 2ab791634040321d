"""The server's log lines: their level and format, the access log, and repeats said once.

``configure`` sets the process's log (``--log_level``, ``--log_format``): TF
Serving-like text lines by default, or one JSON object per line (``time``,
``level``, ``logger``, ``message`` and any ``extra`` fields) for log shippers.
``AccessLog`` is an ``Observer`` of finished requests writing one line each
(``--access_log``, sampled by ``--access_log_sample_rate``; errors always);
its file or stderr is written by a thread of its own, so a slow disk never
holds the event loop. ``Repeats`` says a recurring line (a poll that finds the
same problem every second) once, until it changes.
"""

from __future__ import annotations

import datetime
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import IO, Any

import orjson

from ..errors import Code, InvalidArgument
from .offload import Offload
from .trace import RequestTrace

LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
LOG_FORMATS = ("text", "json")
# TF Serving's (glog's) shape: time, severity letter, where, message.
TEXT_FORMAT = "%(asctime)s %(levelname).1s %(name)s] %(message)s"
ACCESS_LOGGER = "modelserve.access"

# What every LogRecord has; anything else on a record came from ``extra=`` and goes into its JSON object.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC, ms), level, logger, message, extra fields,
    and the exception's traceback as ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``--log_format``; INVALID_ARGUMENT for another name."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise InvalidArgument(f"--log_format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")


def level(name: str) -> int:
    """The level of ``--log_level``; INVALID_ARGUMENT for another name."""
    found = LOG_LEVELS.get(name.lower())
    if found is None:
        raise InvalidArgument(f"--log_level must be one of {', '.join(LOG_LEVELS)}, got {name!r}")
    return found


def configure(log_level: str = "info", log_format: str = "text", stream: IO[str] | None = None) -> None:
    """The process's log: lines of ``log_level`` and above to ``stream`` (stderr) as ``log_format`` says.

    Replaces any handler the root logger had, so a second call (tests, the demo) does not double lines."""
    chosen = level(log_level)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=chosen, handlers=[handler], force=True)


def access_fields(trace: RequestTrace) -> dict[str, Any]:
    """An access log line's fields, in its order; durations in milliseconds (None: the step did not happen)."""
    queue_s, run_s = trace.queue_seconds, trace.run_seconds
    return {
        "peer": trace.peer,
        "protocol": trace.protocol,
        "api": trace.api,
        "model": trace.model,
        "version": trace.version,
        "signature": trace.signature,
        "status": trace.code.name,
        "reason": trace.reason,
        "bytes_in": trace.bytes_in,
        "bytes_out": trace.bytes_out,
        "queue_ms": None if queue_s is None else round(queue_s * 1e3, 3),
        "inference_ms": None if run_s is None else round(run_s * 1e3, 3),
        "total_ms": round(trace.seconds * 1e3, 3),
        "request_id": trace.request_id,
    }


def access_line(fields: dict[str, Any]) -> str:
    """The text form: ``key=value`` pairs, ``-`` for what is empty or unknown, so ``grep``/``awk`` read it."""
    return " ".join(f"{key}={'-' if value is None or value == '' else value}" for key, value in fields.items())


class AccessLog:
    """An ``Observer``: one line per finished request to ``target`` ("-": stderr, else a file appended to).

    A successful request is written with probability ``sample_rate``; one that failed always is. In the
    text format the line is ``key=value`` pairs after the usual time and level; in JSON the fields are the
    object's own. The caller only queues the finished record (a record is read-only once finished); a
    thread of its own formats the lines and writes them, a batch at a time, so the event loop neither
    formats nor waits for the disk.
    """

    def __init__(
        self,
        target: str,
        log_format: str = "text",
        sample_rate: float = 1.0,
        *,
        sample: Callable[[], float] = random.random,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise InvalidArgument(f"--access_log_sample_rate must be between 0 and 1, got {sample_rate}")
        self._json = log_format == "json"
        self._format = formatter(log_format)
        self._rate = sample_rate
        self._sample = sample
        try:
            self._stream: IO[str] = sys.stderr if target == "-" else open(target, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise InvalidArgument(f"--access_log {target}: {exc.strerror or exc}") from None
        self._owned = target != "-"
        self._writer = Offload[tuple[float, RequestTrace]]("modelserve-access-log", self._write)

    def finished(self, trace: RequestTrace) -> None:
        if trace.code is Code.OK and self._rate < 1.0 and self._sample() >= self._rate:
            return
        self._writer.put((time.time(), trace))

    def _write(self, batch: list[tuple[float, RequestTrace]]) -> None:
        self._stream.write("".join(self._line(when, trace) + "\n" for when, trace in batch))
        self._stream.flush()

    def _line(self, when: float, trace: RequestTrace) -> str:
        fields = access_fields(trace)
        if self._json:
            message = f"{trace.protocol} {trace.api} {fields['status']}"
        else:
            message = access_line(fields)
        record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, "", 0, message, None, None)
        record.created, record.msecs = when, (when - int(when)) * 1000
        if self._json:
            record.__dict__.update(fields)
        return self._format.format(record)

    def close(self) -> None:
        """Write what is queued and close the file (once)."""
        self._writer.close()
        if self._owned and not self._stream.closed:
            self._stream.close()


class Repeats:
    """Says each line of a recurring report once, until it changes.

    A poller reports what it found for ``key`` (a model, a file) each round: a line it reported last
    round for the same key is logged at DEBUG only; a new one at its own level; a line that stopped
    (the problem went away) is forgotten, so it is said again if it comes back. Thread-safe.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._lock = threading.Lock()
        self._said: dict[Hashable, tuple[tuple[int, str], ...]] = {}

    def report(self, key: Hashable, lines: Iterable[tuple[int, str]]) -> None:
        """This round's (level, text) lines for ``key`` (none: all is well)."""
        now = tuple(dict.fromkeys(lines))  # in the order given, once each
        with self._lock:
            before = self._said.get(key, ())
            if now:
                self._said[key] = now
            else:
                self._said.pop(key, None)
        for line_level, text in now:
            said = logging.DEBUG if (line_level, text) in before else line_level
            self._log.log(said, "%s", text, stacklevel=2)  # the record names the poller, not this line
