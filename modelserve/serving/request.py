"""What a front end hands the core, and what it gets back: protocol-neutral, decoded from the wire.

A front end decodes its wire format into one of these requests, calls the
matching ``ServingCore`` method and encodes the answer; the core resolves the
version or label, holds the lease, validates and runs. Immutable, so one may
be handed between threads; slotted, as one is made per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..budget import UNMETERED, Account
from ..execution.request_options import DEFAULT, RequestOptions
from ..observe.trace import UNTRACED, RequestTrace
from ..signatures import Signature
from .example_tasks import Result

Inputs = Mapping[str, np.ndarray]
# Inputs that can be decoded only once the version is known: TF Serving's REST API reads a JSON
# body by the input dtypes of the signature it names. The core calls the decoder under the
# request's lease with that version's signatures, so the version cannot change between the
# lookup and the run. It may return a future instead: a big body decoded off the event loop.
InputDecoder = Callable[[Mapping[str, Signature]], "Inputs | asyncio.Future[Inputs]"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Which model a request names, and which of its versions: a number, a label, or neither (the latest)."""

    name: str
    version: int | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """A Predict request. ``signature_name`` "" is the default signature (``serving_default``);
    an empty ``output_filter`` asks for every output; ``deadline`` is on the ``time.monotonic()``
    clock (None: none); ``options`` say how the request is queued (``--enable_batching``); ``account``
    is the request's share of the memory budget, opened and closed by the front end (``budget``)."""

    model: ModelSpec
    inputs: Inputs | InputDecoder
    signature_name: str = ""
    output_filter: Sequence[str] = ()
    deadline: float | None = None
    options: RequestOptions = DEFAULT
    account: Account = UNMETERED
    trace: RequestTrace = UNTRACED  # its record: the core fills model, version, signature, rows, times


@dataclass(frozen=True, slots=True)
class InferenceResponse:
    """A Predict answer: the model as named, the version that ran, the signature (default filled in)."""

    model: str
    version: int
    signature_name: str
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class ExamplesRequest:
    """A Classify, Regress or MultiInference request on serialized ``tf.Example``s (a context already
    merged into each, ``example_tasks.serialized_examples``).

    Classify and Regress run ``signature_name``; MultiInference runs ``tasks``, TF Serving's
    (model name, signature name, method name) triples, checked as TF checks them. ``account`` as
    in ``InferenceRequest``.
    """

    model: ModelSpec
    examples: Sequence[bytes]
    signature_name: str = ""
    tasks: Sequence[tuple[str, str, str]] = ()
    deadline: float | None = None
    options: RequestOptions = DEFAULT
    account: Account = UNMETERED
    trace: RequestTrace = UNTRACED


@dataclass(frozen=True, slots=True)
class ExamplesResponse:
    """The results of an ``ExamplesRequest``, one per task (one for Classify and Regress)."""

    model: str
    version: int
    results: Sequence[Result]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """The version a metadata request resolved to, and its signatures; ``platform``: how it is
    served, by the Open Inference Protocol's name (``onnxruntime_onnx`` ...; "" when its servable
    does not say); ``versions``: the model's AVAILABLE versions, lowest first."""

    model: str
    version: int
    signatures: Mapping[str, Signature]
    platform: str = ""
    versions: tuple[int, ...] = ()


RepositoryState = Literal["READY", "UNAVAILABLE", "LOADING"]


@dataclass(frozen=True, slots=True)
class RepositoryEntry:
    """One row of the model repository index (KServe V2's repository extension, as Triton has it): a
    version of a configured model, or the model alone (``version`` None) while it has none."""

    name: str
    version: int | None
    state: RepositoryState
    reason: str = ""
