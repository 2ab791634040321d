"""The TensorFlow platform: SavedModels of both generations.

Signatures always come from the SavedModel's own SignatureDefs (read from
``saved_model.pb``/``.pbtxt``), so aliases, graph tensor names (``x:0``),
dtypes, shapes and method names are the real ones whichever way the model runs:

* ``function`` — ``tf.saved_model.load`` and the concrete functions in
  ``.signatures`` (TF2 SavedModels; TF1 ones are pruned into functions too).
* ``session`` — ``tf.compat.v1`` session loading and runs by tensor name,
  exactly as TF Serving runs a model (without Python's feed-shape check). Some SavedModels written by TF1's
  ``SavedModelBuilder`` only load this way (e.g. a placeholder inside an
  untaken v1 ``cond`` branch cannot be pruned into a function).

``auto`` (the default) tries ``function`` and falls back to ``session`` when the
SavedModel cannot be turned into functions. ``LoadOptions.extra["tensorflow_loader"]``
picks one explicitly. This module imports TensorFlow, so it is imported only
when a SavedModel loads.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TF's C++ INFO lines are noise in a server log

import tensorflow as tf
from google.protobuf import message, text_format
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, saved_model_pb2

from ..dtypes import DType
from ..errors import Code as _Code
from ..errors import FailedPrecondition, InvalidArgument, NotFound, ServingError, error_for
from ..signatures import Signature, TensorSpec
from . import LoadOptions, threads

log = logging.getLogger(__name__)

LOADER_KEY = "tensorflow_loader"
LOADERS = ("auto", "function", "session")


# ---- reading SignatureDefs ---------------------------------------------------------------


def read_saved_model(version_dir: Path) -> saved_model_pb2.SavedModel:
    """The SavedModel proto of ``version_dir`` (binary or text form)."""
    saved = saved_model_pb2.SavedModel()
    binary, text = version_dir / "saved_model.pb", version_dir / "saved_model.pbtxt"
    try:
        if binary.is_file():
            saved.ParseFromString(binary.read_bytes())
        elif text.is_file():
            text_format.Parse(text.read_text(), saved)
        else:
            raise NotFound(f"No saved_model.pb or saved_model.pbtxt in {version_dir}")
    except (text_format.ParseError, message.DecodeError, OSError) as exc:
        raise FailedPrecondition(f"Cannot read the SavedModel in {version_dir}: {exc}") from exc
    return saved


def find_meta_graph(saved: saved_model_pb2.SavedModel, tags: Collection[str]) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraph whose tag set is exactly ``tags`` (TF's rule), with TF's message."""
    for meta_graph in saved.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return meta_graph
    available = "; ".join("{ " + " ".join(m.meta_info_def.tags) + " }" for m in saved.meta_graphs)
    raise NotFound(
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(tags)} }}. "
        f"Tag sets in the SavedModel: {available or 'none'}. "
        "To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`"
    )


def _spec(info: meta_graph_pb2.TensorInfo) -> TensorSpec | None:
    """A dense TensorInfo as a TensorSpec; None for what cannot be fed or fetched here."""
    if info.WhichOneof("encoding") != "name" or info.dtype in (DType.DT_INVALID, DType.DT_RESOURCE):
        return None
    shape = None if info.tensor_shape.unknown_rank else tuple(int(d.size) for d in info.tensor_shape.dim)
    return TensorSpec(name=info.name, dtype=DType(info.dtype), shape=shape)


def signature_of(definition: meta_graph_pb2.SignatureDef) -> Signature | None:
    """The servable form of a SignatureDef, or None when it cannot be called.

    TF2's ``__saved_model_init_op`` (an op, not a tensor) and signatures with
    sparse or composite tensors are left out.
    """
    inputs = {alias: _spec(info) for alias, info in definition.inputs.items()}
    outputs = {alias: _spec(info) for alias, info in definition.outputs.items()}
    if not outputs or None in inputs.values() or None in outputs.values():
        return None
    return Signature(
        inputs={a: s for a, s in sorted(inputs.items()) if s is not None},
        outputs={a: s for a, s in sorted(outputs.items()) if s is not None},
        method_name=definition.method_name,
    )


def signatures_of(meta_graph: meta_graph_pb2.MetaGraphDef) -> dict[str, Signature]:
    found: dict[str, Signature] = {}
    for key, definition in sorted(meta_graph.signature_def.items()):
        signature = signature_of(definition)
        if signature is None:
            if not key.startswith("__"):
                log.warning("Signature %r has sparse, composite or non-tensor values; not served", key)
            continue
        found[key] = signature
    return found


# ---- the runtime's process-wide settings -----------------------------------------------------

_runtime_lock = threading.Lock()


def configure_runtime(options: LoadOptions) -> None:
    """Apply thread counts and the GPU memory fraction to TF's eager runtime.

    They are process-wide in TF2 and fixed once the runtime starts, so the
    first SavedModel to load sets them; a later model asking for other values
    is told so in the log (sessions, in contrast, get their own ConfigProto).
    """
    with _runtime_lock:
        threading_api = tf.config.threading
        wanted = (
            (
                threads(options.intra_op_threads),
                threading_api.get_intra_op_parallelism_threads,
                threading_api.set_intra_op_parallelism_threads,
            ),
            (
                threads(options.inter_op_threads),
                threading_api.get_inter_op_parallelism_threads,
                threading_api.set_inter_op_parallelism_threads,
            ),
        )
        for value, get, put in wanted:
            if value > 0 and get() != value:
                try:
                    put(value)
                except RuntimeError:  # the process ran TensorFlow before its first model loaded
                    log.warning("TensorFlow's runtime had already started; %d threads not applied", value)
        if options.gpu_memory_fraction > 0:
            _set_gpu_memory_fraction(options.gpu_memory_fraction)


def _set_gpu_memory_fraction(fraction: float) -> None:
    # TF2 has no public setter for GPUOptions.per_process_gpu_memory_fraction;
    # the eager context reads its base ConfigProto when it starts, so the
    # fraction goes there (TF Serving sets the same field on its sessions).
    from tensorflow.python.eager import context

    ctx = context.context()
    if getattr(ctx, "_context_handle", None) is not None:
        log.warning("TensorFlow's runtime already started; --per_process_gpu_memory_fraction ignored for it")
        return
    config = tf.compat.v1.ConfigProto()
    if getattr(ctx, "_config", None) is not None:
        config.CopyFrom(ctx._config)
    config.gpu_options.per_process_gpu_memory_fraction = fraction
    ctx._config = config


def session_config(options: LoadOptions) -> tf.compat.v1.ConfigProto:
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    config.intra_op_parallelism_threads = threads(options.intra_op_threads)
    config.inter_op_parallelism_threads = threads(options.inter_op_threads)
    config.gpu_options.per_process_gpu_memory_fraction = options.gpu_memory_fraction
    return config


# ---- running requests ----------------------------------------------------------------------


@contextmanager
def _tf_errors() -> Iterator[None]:
    """TF's own status codes become ours; argument binding errors are the caller's."""
    try:
        yield
    except ServingError:
        raise
    except tf.errors.OpError as exc:
        raise error_for(_Code(exc.error_code), exc.message) from None
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(str(exc)) from None


def _to_numpy(value: Any, dtype: DType) -> np.ndarray:
    if dtype == DType.DT_STRING:  # a scalar string comes back as bare bytes
        return np.array(value, dtype=object)
    return np.asarray(value)


class FunctionServable:
    """Signatures served by the concrete functions of ``tf.saved_model.load``.

    Concrete functions may be called from several threads at once.
    """

    loader = "function"

    def __init__(self, loaded: Any, signatures: Mapping[str, Signature]) -> None:
        self._loaded = loaded
        self._signatures = dict(signatures)
        self._functions: dict[str, Callable[..., Mapping[str, Any]]] = {
            key: loaded.signatures[key] for key in signatures
        }

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    def predict(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str] = (),
    ) -> dict[str, np.ndarray]:
        sig = self._signatures[signature]
        with _tf_errors():
            feed = {alias: tf.constant(value) for alias, value in inputs.items()}
            results = self._functions[signature](**feed)
            aliases = list(output_filter) or list(sig.outputs)
            return {a: _to_numpy(results[a].numpy(), sig.outputs[a].dtype) for a in aliases}

    def close(self) -> None:
        self._functions.clear()
        del self._loaded


class SessionServable:
    """Signatures served by the session's C++ callables on tensor names, as TF Serving runs them.

    ``Session.run`` (and ``make_callable`` with a feed list, which calls it)
    refuses a feed whose shape differs from the placeholder's static shape
    before the graph sees it; TF Serving's C++ ``Session::Run`` has no such
    check, so a signature declaring x as [-1,1] takes [3] there and the ops
    decide. A callable made from ``CallableOptions`` runs without it; one is
    made per feed and fetch set and kept, and the C++ callable is thread-safe.
    """

    loader = "session"

    def __init__(self, session: tf.compat.v1.Session, signatures: Mapping[str, Signature]) -> None:
        self._session = session
        self._signatures = dict(signatures)
        self._callables: dict[tuple[tuple[str, ...], tuple[str, ...]], Any] = {}
        self._lock = threading.Lock()

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    def predict(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str] = (),
    ) -> dict[str, np.ndarray]:
        sig = self._signatures[signature]
        aliases = list(output_filter) or list(sig.outputs)
        feed = {sig.inputs[alias].name: value for alias, value in sorted(inputs.items())}
        # A tensor both fed and fetched is refused by the C++ callable; like
        # Session.run, answer it with the value fed.
        fetches = tuple(sorted({sig.outputs[a].name for a in aliases} - feed.keys()))
        with _tf_errors():
            run = self._callable(tuple(feed), fetches)
            values = dict(zip(fetches, run(*feed.values()), strict=True)) if fetches else {}
        values.update(feed)
        return {a: _to_numpy(values[sig.outputs[a].name], sig.outputs[a].dtype) for a in aliases}

    def _callable(self, feeds: tuple[str, ...], fetches: tuple[str, ...]) -> Any:
        key = (feeds, fetches)
        found = self._callables.get(key)
        if found is None:
            options = config_pb2.CallableOptions(feed=feeds, fetch=fetches)
            with self._lock:  # one callable per key, even when two requests race to make it
                found = self._callables.get(key)
                if found is None:
                    found = self._callables[key] = self._session._make_callable_from_options(options)
        return found

    def close(self) -> None:
        self._callables.clear()  # each releases its C++ handle while the session is still open
        self._session.close()


# ---- loading -------------------------------------------------------------------------------


def load_functions(
    version_dir: Path, tags: Collection[str], signatures: Mapping[str, Signature], options: LoadOptions
) -> FunctionServable:
    configure_runtime(options)
    loaded = tf.saved_model.load(str(version_dir), tags=list(tags))
    missing = sorted(set(signatures) - set(loaded.signatures))
    if missing:  # a half-usable model must not pass as a whole one
        raise LookupError(f"tf.saved_model.load gave no function for signatures {missing}")
    return FunctionServable(loaded, signatures)


def load_session(
    version_dir: Path, tags: Collection[str], signatures: Mapping[str, Signature], options: LoadOptions
) -> SessionServable:
    session = tf.compat.v1.Session(graph=tf.Graph(), config=session_config(options))
    try:
        tf.compat.v1.saved_model.loader.load(session, list(tags), str(version_dir))
    except BaseException:
        session.close()
        raise
    return SessionServable(session, signatures)


def load(version_dir: Path, options: LoadOptions) -> FunctionServable | SessionServable:
    choice = options.extra.get(LOADER_KEY, "auto")
    if choice not in LOADERS:
        raise InvalidArgument(f"{LOADER_KEY} must be one of {', '.join(LOADERS)}, not {choice!r}")
    tags = options.saved_model_tags
    signatures = signatures_of(find_meta_graph(read_saved_model(version_dir), tags))
    attempts: list[Callable[..., FunctionServable | SessionServable]] = [load_functions, load_session]
    if choice != "auto":
        attempts = [load_functions if choice == "function" else load_session]
    failures: list[str] = []
    for attempt in attempts:
        try:
            return attempt(version_dir, tags, signatures, options)
        except ServingError:
            raise
        except Exception as exc:  # TF raises many types for models it cannot take
            failures.append(f"{attempt.__name__}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            log.info("SavedModel %s: %s", version_dir, failures[-1])
    raise FailedPrecondition(f"Failed to load SavedModel {version_dir}: {'; '.join(failures)}")
