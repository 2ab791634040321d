"""What crosses between a front-end process and the engine: calls, answers, and the engine's state.

Control data only (pickled by ``execution.handoff.wire``; what every request sends is named tuples
of plain values, which pickle fast); tensors cross as
``TensorRef``s into the arenas. Messages are tuples ``(kind, request id, payload)``:

front end → engine: ``predict`` PredictCall, ``examples`` ExamplesCall, ``call`` (method, args),
``cancel``, ``rel`` [Block] (output blocks it no longer views), ``seg``/``drop`` (its input
arena's segments, the fd attached), ``figures`` Scrape (its own metrics figures: every second, and
as the answer to the engine's ``figures``), ``scrape`` Scrape (a metrics page asks for the whole
server's, with its own figures).

engine → front end: ``ok`` Answer, ``exok`` ExamplesAnswer, ``done`` (a call's result), ``err``
Failure, ``retry`` Retry, ``state`` EngineState, ``rel`` [Block] (input blocks), ``seg``/``drop``
(its output arena's segments), ``figures`` (send yours now), ``scraped`` Scrape (the whole server's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..dtypes import DType
from ..errors import InvalidArgument, NotFound, ServingError
from ..execution.batching.params import BatchingParameters
from ..execution.handoff.arena import Block, TensorRef
from ..execution.request_options import RequestOptions
from ..lifecycle.config import ModelConfig
from ..lifecycle.versions import VersionReport
from ..observe.trace import Front
from ..signatures import Signature
from .example_tasks import Result
from .request import ModelSpec

# A request's (or an answer's) tensors up to this size in all travel in its control message.
INLINE_BYTES = 4096
# A scrape: how long the engine waits for a front end's figures (then it takes the last ones sent), and
# how long a front end waits for the engine's answer (then its metrics page says 503, never half the counts).
SCRAPE_SECONDS = 2.0
SCRAPE_ANSWER_SECONDS = 10.0


class PredictCall(NamedTuple):
    """A Predict request. ``dtypes``: the input dtypes a TF REST body was decoded by (None: inputs of their
    own dtypes); ``probe``: the front end had no signatures to decode by, answer RETRY with them."""

    model: tuple[str, int | None, str | None]  # ModelSpec's fields
    block: Block | None
    refs: Mapping[str, TensorRef]
    signature_name: str = ""
    output_filter: tuple[str, ...] = ()
    remaining: float | None = None  # seconds to the deadline, when it was sent
    options: RequestOptions | None = None  # None: DEFAULT
    dtypes: Mapping[str, DType] | None = None
    probe: bool = False
    protocol: Front = ""
    inline: bytes | None = None  # the tensors themselves, when small (``Arena.write``)


class ExamplesCall(NamedTuple):
    """Classify / Regress / MultiInference; the serialized examples cross as one string tensor."""

    kind: str  # classify | regress | multi_inference
    model: tuple[str, int | None, str | None]
    block: Block | None
    examples: TensorRef
    signature_name: str = ""
    tasks: tuple[tuple[str, str, str], ...] = ()
    remaining: float | None = None
    options: RequestOptions | None = None
    inline: bytes | None = None


class Times(NamedTuple):
    """What the engine filled of the request's trace (``observe.trace.RequestTrace``): monotonic seconds,
    one clock for every process of the machine."""

    model: str = ""
    version: int | None = None
    signature: str = ""
    rows: int = 0
    decoded: float | None = None
    queued: float | None = None
    run_start: float | None = None
    run_end: float | None = None
    batch_rows: int = 0


class Answer(NamedTuple):
    version: int
    signature_name: str
    block: Block | None
    refs: Mapping[str, TensorRef]
    inline: bytes | None
    times: Times


class ExamplesAnswer(NamedTuple):
    version: int
    results: list[Result]
    times: Times


class Failure(NamedTuple):
    """A ``ServingError``: its class name (raised as the same class), code and message."""

    kind: str
    code: int
    message: str
    times: Times = Times()


class Retry(NamedTuple):
    """The engine resolved a version whose inputs differ from those the body was decoded by: decode by
    its ``signatures`` and send again. ``times``: what the engine filled of the trace (the model and version
    resolved: a body that then fails to decode is counted under them, as in one process)."""

    signatures: Mapping[str, Signature]
    times: Times = Times()


@dataclass(frozen=True, slots=True)
class ModelState:
    config: ModelConfig | None  # None: no longer configured (its status history is still reported)
    rows: tuple[VersionReport, ...]  # every version seen, highest first; empty: none yet
    available: tuple[int, ...]
    labels: Mapping[str, int]
    unloaded: bool
    settled: bool
    signatures: Mapping[int, Mapping[str, Signature]]  # per AVAILABLE version
    platforms: Mapping[int, str]


@dataclass(frozen=True, slots=True)
class EngineState:
    """The lifecycle as the engine sees it, pushed to every front end whenever it changes."""

    models: Mapping[str, ModelState] = field(default_factory=dict)
    draining: bool = False
    batching: BatchingParameters | None = None  # --enable_batching's parameters (the dashboard shows them)


class StateView:
    """A front end's view of the engine's state: the manager calls the api/ front ends make (health, the
    dashboard; ``serving.contract.Models``) and the version a request resolves to, answered from the
    last state pushed, with ``ModelManager``'s texts."""

    def __init__(self) -> None:
        self.state = EngineState()

    def _model(self, name: str) -> ModelState | None:
        return self.state.models.get(name)

    def model_names(self) -> list[str]:
        """The configured models (a model no longer configured is in the state for its status alone)."""
        return sorted(name for name, model in self.state.models.items() if model.config is not None)

    def configs(self) -> dict[str, ModelConfig]:
        return {name: m.config for name, m in self.state.models.items() if m.config is not None}

    def available_versions(self, name: str) -> tuple[int, ...]:
        model = self._model(name)
        return model.available if model else ()

    def labels(self, name: str) -> dict[str, int]:
        model = self._model(name)
        return dict(model.labels) if model else {}

    def unloaded(self, name: str) -> bool:
        model = self._model(name)
        return model.unloaded if model else False

    def settled(self, name: str) -> bool:
        model = self._model(name)
        return model.settled if model else True

    def status(self, name: str, version: int | None = None) -> list[VersionReport]:
        """As ``ModelManager.status``, with its texts."""
        model = self._model(name)
        if model is None or not model.rows:
            raise NotFound(f"Could not find any versions of model {name}")
        rows = [row for row in model.rows if version is None or row.version == version]
        if not rows:
            raise NotFound(f"Could not find version {version} of model {name}")
        return rows

    def resolve(self, spec: ModelSpec) -> int:
        """The version a request for ``spec`` gets now, as ``ModelManager.lease`` resolves it, with its texts."""
        model = self._model(spec.name)
        version = spec.version
        if spec.label is not None:
            if model is None or spec.label not in model.labels:
                raise InvalidArgument(f"Unrecognized servable version label: {spec.label}")
            version = model.labels[spec.label]
        if version is None:
            if model is None or not model.available:
                raise NotFound(f"Servable not found for request: Latest({spec.name})")
            return model.available[-1]
        if model is None or version not in model.available:
            raise NotFound(f"Servable not found for request: Specific({spec.name}, {version})")
        return version

    def signatures(self, spec: ModelSpec) -> Mapping[str, Signature] | None:
        """The signatures of the version ``spec`` resolves to here, None when not known."""
        try:
            version = self.resolve(spec)
        except ServingError:
            return None
        model = self._model(spec.name)
        return model.signatures.get(version) if model else None


# On the wire a request's messages are plain tuples (pickle writes those about ten times faster than named
# tuples): ``to_wire`` flattens a message and its ``times``, ``from_wire`` builds it again by its kind.
_MESSAGES: dict[str, Any] = {
    "predict": PredictCall,
    "examples": ExamplesCall,
    "ok": Answer,
    "exok": ExamplesAnswer,
    "err": Failure,
    "retry": Retry,
}


def to_wire(payload: object) -> object:
    if isinstance(payload, (PredictCall, ExamplesCall)):
        return tuple(payload)
    if isinstance(payload, (Answer, ExamplesAnswer, Failure, Retry)):
        return (*payload[:-1], tuple(payload[-1]))
    return payload


def from_wire(kind: str, payload: Any) -> Any:
    cls = _MESSAGES.get(kind)
    if cls is None:
        return payload
    if cls in (Answer, ExamplesAnswer, Failure, Retry):
        return cls(*payload[:-1], Times(*payload[-1]))
    return cls(*payload)
