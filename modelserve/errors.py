"""The core's exception tree. Front ends map it to their protocol once.

    ServingError                (carries a canonical status Code)
    ├── InvalidArgument         the request is wrong
    ├── NotFound                no such model / version / label target
    ├── FailedPrecondition      the request cannot run in the current state
    │   └── MissingExtra        an optional package is not installed (no retry helps)
    ├── ResourceExhausted       a size or memory limit was hit (the server's memory budget is full: HTTP 429)
    │   └── TooLarge            one request over its own cap (the per-request memory budget); HTTP 413
    ├── Unavailable             try again later (queue full, shutting down)
    ├── DeadlineExceeded        the request's deadline passed
    ├── Unimplemented           the server cannot do this (e.g. a dtype in JSON)
    ├── Cancelled               the client went away
    ├── Unauthenticated         no valid credentials (a missing or unknown token)
    ├── PermissionDenied        valid credentials without the scope the call needs
    ├── DataLoss                unreadable data (e.g. a corrupt warm-up file)
    └── Internal                a bug or a model that breaks its own contract

The numbering of Code is the canonical one shared by absl, gRPC and
``tensorflow.error.Code``, so it travels unchanged into status protos.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class Code(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ServingError(Exception):
    """A failure a client can cause or observe; ``str(e)`` is the message."""

    code: ClassVar[Code] = Code.UNKNOWN
    # Why the server refused the request, when it did (``modelserve_rejected_requests_total{reason}``):
    # budget, too_large, queue_full, timeout, deadline, cancelled, auth; "" for any other failure.
    reason: ClassVar[str] = ""

    @property
    def message(self) -> str:
        return str(self)


class InvalidArgument(ServingError):
    code = Code.INVALID_ARGUMENT


class NotFound(ServingError):
    code = Code.NOT_FOUND


class FailedPrecondition(ServingError):
    code = Code.FAILED_PRECONDITION


class MissingExtra(FailedPrecondition):
    """A model needs an optional package that is not installed; the message names the pip extra.

    Permanent: a load that fails with it is not retried.
    """


class ResourceExhausted(ServingError):
    code = Code.RESOURCE_EXHAUSTED


class TooLarge(ResourceExhausted):
    """One request over its own cap (``--request_memory_budget_bytes``): no retry helps; HTTP 413."""

    reason = "too_large"


class BudgetFull(ResourceExhausted):
    """The server's memory budget is full (``--memory_budget_bytes``): try again later; HTTP 429."""

    reason = "budget"


class QueueTimeout(ResourceExhausted):
    """A request waited in its batch queue past its queue timeout (TF Serving's RESOURCE_EXHAUSTED)."""

    reason = "timeout"


class Unavailable(ServingError):
    code = Code.UNAVAILABLE


class QueueFull(Unavailable):
    """A batch queue had no room for the request (TF Serving's UNAVAILABLE)."""

    reason = "queue_full"


class DeadlineExceeded(ServingError):
    code = Code.DEADLINE_EXCEEDED
    reason = "deadline"


class Unimplemented(ServingError):
    code = Code.UNIMPLEMENTED


class Cancelled(ServingError):
    code = Code.CANCELLED
    reason = "cancelled"


class DataLoss(ServingError):
    code = Code.DATA_LOSS


class Internal(ServingError):
    code = Code.INTERNAL


class Unauthenticated(ServingError):
    code = Code.UNAUTHENTICATED
    reason = "auth"


class PermissionDenied(ServingError):
    code = Code.PERMISSION_DENIED
    reason = "auth"


class Unknown(ServingError):
    code = Code.UNKNOWN


_BY_CODE: dict[Code, type[ServingError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Unimplemented,
        Cancelled,
        DataLoss,
        Internal,
        Unauthenticated,
        PermissionDenied,
        Unknown,
    )
}


def error_for(code: Code, message: str) -> ServingError:
    """The exception for a status code (codes without a class of their own become Unknown)."""
    return _BY_CODE.get(code, Unknown)(message)


def as_serving_error(exc: BaseException) -> ServingError:
    """Translate a foreign exception at the core's boundary; ServingErrors pass through."""
    if isinstance(exc, ServingError):
        return exc
    return Unknown(f"{type(exc).__name__}: {exc}")
