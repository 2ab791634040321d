"""The memory budget: what requests may hold, per request and for the whole server.

Every decode path charges what it is about to allocate to the request's
``Account`` *before* it allocates (``Account.charge``); the model's outputs
and their encoding are charged once the model has run. A request over its
own cap (``--request_memory_budget_bytes``) gets ``TooLarge`` (HTTP 413);
a request that would take the server past ``--memory_budget_bytes`` gets
``ResourceExhausted`` (HTTP 429), while everything else goes on. Closing the
account (the front end does, once the answer is encoded) gives the bytes back.

Charges are estimates of real memory, measured (docs/security.md "Memory
budget"): a decode that shares objects (TF's fill rule repeats one string)
is still charged per element, because the platforms copy each element.

Thread-safe: one lock per budget; an account may be charged from the event
loop and from a decode thread. A feature that is off is a no-op object:
``UNMETERED`` is the account of a request nobody meters (warm-up, tests).
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from .errors import BudgetFull, Cancelled, TooLarge

# --- what things cost (CPython 3.11, 64-bit; measured with tracemalloc and RSS) -------------------

POINTER = 8  # one slot of a numpy object array or a list
# A numpy object array of `bytes`: a slot plus the object, sys.getsizeof(b"") == 33 + its length,
# which pymalloc rounds up to a multiple of 16: 8 + 48 + len is never less than the real cost.
STRING_ELEMENT = POINTER + 48
# Platforms copy each string on the way in and out, and the platform has no account of its own, so
# these copies are charged with the decode: ONNX makes a `str` per element (getsizeof("") == 49,
# rounded to 64) in a new object array, onnxruntime its own std::string (32 bytes), and the same
# two again for the outputs before they become bytes (charged as outputs once the model is done).
# Measured (RSS, 1M strings through an ONNX Identity): 242 bytes per element of 10 bytes, 739 per
# element of 100 bytes: 264 + 5 * length covers both.
STRING_PLATFORM_COPY = 2 * (POINTER + 64 + 32)
# A string's payload lives in the bytes object, both str objects and both std::strings.
STRING_PAYLOAD_COPIES = 5


def string_tensor_bytes(count: int, payload: int) -> int:
    """A DT_STRING tensor of ``count`` elements holding ``payload`` bytes in all, with its platform copy."""
    return count * (STRING_ELEMENT + STRING_PLATFORM_COPY) + STRING_PAYLOAD_COPIES * payload


def array_bytes(array: np.ndarray, *, platform_copy: bool = False) -> int:
    """What an array holds: its buffer, and for an object array the bytes/str objects it points at
    (``platform_copy``: an input, which the platform copies string by string, ``string_tensor_bytes``)."""
    if array.dtype != object:
        return int(array.nbytes)
    try:
        payload = sum(map(len, array.flat))
    except TypeError:  # not strings: each object counted as an empty one
        payload = 0
    if platform_copy:
        return string_tensor_bytes(array.size, payload)
    return array.size * STRING_ELEMENT + payload


def arrays_bytes(arrays: Iterable[np.ndarray], *, platform_copy: bool = False) -> int:
    return sum(array_bytes(a, platform_copy=platform_copy) for a in arrays)


# --- budgets and accounts ----------------------------------------------------------------------


class MemoryBudget:
    """``total`` bytes shared by every request in flight, at most ``per_request`` of them each.

    ``per_request`` above ``total`` is taken as ``total``.
    """

    def __init__(self, total: int, per_request: int) -> None:
        if total <= 0 or per_request <= 0:
            raise ValueError(f"memory budgets must be positive; got {total} and {per_request}")
        self.total = total
        self.per_request = min(per_request, total)
        self._lock = threading.Lock()
        self._used = 0

    @classmethod
    def unlimited(cls) -> MemoryBudget:
        return cls(sys.maxsize, sys.maxsize)

    @property
    def used(self) -> int:
        """Bytes charged by accounts still open."""
        return self._used

    def account(self, cap: int | None = None) -> Account:
        """A request's account, capped at ``per_request`` (``cap``: another cap, e.g. the server's
        own work such as a merged batch, capped only by ``total``)."""
        return Account(self, self.per_request if cap is None else min(cap, self.total))

    def _reserve(self, account: Account, nbytes: int, what: str) -> None:
        with self._lock:
            if account.closed:
                raise Cancelled(f"The request ended before it could {what}")
            held = account.charged + nbytes
            if held > account.cap and account.cap < self.total:  # the server's own work has no cap but the total
                raise TooLarge(
                    f"Request needs {held} bytes to {what}; the per-request memory budget is "
                    f"{account.cap} bytes (--request_memory_budget_bytes)"
                )
            if self._used + nbytes > self.total:
                raise BudgetFull(
                    f"Server memory budget is full: {what} needs {nbytes} bytes, {self._used} of "
                    f"{self.total} bytes (--memory_budget_bytes) are held by requests in flight; try again later"
                )
            self._used += nbytes
            account.charged = held

    def _release(self, account: Account) -> None:
        with self._lock:
            if not account.closed:
                self._used -= account.charged
                account.closed = True


class Account:
    """What one request holds of a ``MemoryBudget``; ``close`` (idempotent) gives it all back."""

    __slots__ = ("_budget", "cap", "charged", "closed")

    def __init__(self, budget: MemoryBudget | None, cap: int) -> None:
        self._budget = budget
        self.cap = cap
        self.charged = 0  # guarded by the budget's lock
        self.closed = False

    def charge(self, nbytes: int, what: str) -> None:
        """Reserve ``nbytes`` the request is about to allocate; ``what`` completes "Request needs N
        bytes to ...". Raises TooLarge (over the request's cap), ResourceExhausted (the server's
        budget is full) or Cancelled (the account was closed: the request has ended)."""
        if self._budget is not None and nbytes > 0:
            self._budget._reserve(self, nbytes, what)

    def close(self) -> None:
        if self._budget is not None:
            self._budget._release(self)

    def __enter__(self) -> Account:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


UNMETERED = Account(None, sys.maxsize)  # charges nothing, holds nothing: shared safely


# --- defaults from the machine -------------------------------------------------------------------

MAX_REQUEST_DEFAULT = 2 * 2**30
ROOT = Path("/")


@dataclass(frozen=True)
class Memory:
    """The memory this process may use and the limit it came from."""

    limit: int
    source: str


def available_memory(root: Path = ROOT) -> Memory:
    """The least of the cgroup's memory limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``; own
    cgroup and parents), ``RLIMIT_AS`` and physical RAM."""
    pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else -1
    least = Memory(pages * os.sysconf("SC_PAGE_SIZE"), "physical memory") if pages > 0 else Memory(sys.maxsize, "")
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if 0 < limit < least.limit and limit != resource.RLIM_INFINITY:
        least = Memory(limit, "RLIMIT_AS")
    for path in _cgroup_limit_files(root):
        value = _read_limit(path)
        if value is not None and value < least.limit:
            least = Memory(value, str(Path("/") / path.relative_to(root)))
    return least


def default_total(memory: Memory) -> int:
    """What all requests in flight may hold by default: half of what the process may use."""
    return max(memory.limit // 2, 1)


def default_per_request(total: int) -> int:
    """What one request may hold by default: a quarter of the total, at most 2 GiB."""
    return max(min(total // 4, MAX_REQUEST_DEFAULT), 1)


def _cgroup_limit_files(root: Path) -> list[Path]:
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    files: list[Path] = []
    for line in lines:
        _, controllers, group = line.split(":", 2)
        parts = [p for p in group.split("/") if p]
        if controllers == "" and (root / "sys/fs/cgroup/cgroup.controllers").exists():
            mount, name = root / "sys/fs/cgroup", "memory.max"
        elif "memory" in controllers.split(",") and (root / "sys/fs/cgroup/memory").is_dir():
            mount, name = root / "sys/fs/cgroup/memory", "memory.limit_in_bytes"
        else:
            continue
        # The cgroup's folder and its parents; inside a container often only the mount itself exists.
        files += [mount.joinpath(*parts[:n], name) for n in range(len(parts), -1, -1)]
    return files


def _read_limit(path: Path) -> int | None:
    """A limit file's bytes; ``max`` (v2) or v1's page-rounded 2**63 mean none."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or int(text) >= 2**62:
        return None
    return int(text)
