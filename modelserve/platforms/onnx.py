"""The ONNX platform: onnxruntime sessions with a synthesised ``serving_default``.

An ONNX graph has no SignatureDef, so one is built from the graph itself:
input and output names become aliases, ONNX element types map to DT_*, and
symbolic or missing dimensions become -1.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ..dtypes import DType
from ..errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unimplemented
from ..signatures import DEFAULT_SIGNATURE, Signature, TensorSpec
from . import LoadOptions, threads
from .devices import CPU, check_fits, cuda_index

log = logging.getLogger(__name__)

_ONNX_TYPES = {
    "tensor(float)": DType.DT_FLOAT,
    "tensor(double)": DType.DT_DOUBLE,
    "tensor(int32)": DType.DT_INT32,
    "tensor(uint8)": DType.DT_UINT8,
    "tensor(int16)": DType.DT_INT16,
    "tensor(int8)": DType.DT_INT8,
    "tensor(string)": DType.DT_STRING,
    "tensor(complex64)": DType.DT_COMPLEX64,
    "tensor(int64)": DType.DT_INT64,
    "tensor(bool)": DType.DT_BOOL,
    "tensor(bfloat16)": DType.DT_BFLOAT16,
    "tensor(uint16)": DType.DT_UINT16,
    "tensor(complex128)": DType.DT_COMPLEX128,
    "tensor(float16)": DType.DT_HALF,
    "tensor(uint32)": DType.DT_UINT32,
    "tensor(uint64)": DType.DT_UINT64,
    "tensor(float8e5m2)": DType.DT_FLOAT8_E5M2,
    "tensor(float8e4m3fn)": DType.DT_FLOAT8_E4M3FN,
    "tensor(float8e4m3fnuz)": DType.DT_FLOAT8_E4M3FNUZ,
    "tensor(float8e5m2fnuz)": DType.DT_FLOAT8_E5M2FNUZ,
    "tensor(int4)": DType.DT_INT4,
    "tensor(uint4)": DType.DT_UINT4,
}

# onnxruntime reports a bad feed with one of these; they are the client's fault.
_INPUT_ERRORS: tuple[type[BaseException], ...] = tuple(
    getattr(ort.capi.onnxruntime_pybind11_state, name)
    for name in ("InvalidArgument", "Fail", "RuntimeException", "InvalidGraph")
    if hasattr(ort.capi.onnxruntime_pybind11_state, name)
)


def find_model_file(version_dir: Path) -> Path:
    """``model.onnx``, or the only ``*.onnx`` file of the folder."""
    preferred = version_dir / "model.onnx"
    if preferred.is_file():
        return preferred
    found = sorted(version_dir.glob("*.onnx"))
    if len(found) != 1:
        raise FailedPrecondition(f"Expected model.onnx or exactly one *.onnx file in {version_dir}, found {len(found)}")
    return found[0]


def _spec(arg: Any) -> TensorSpec:
    dtype = _ONNX_TYPES.get(arg.type)
    if dtype is None:
        raise FailedPrecondition(f"ONNX value {arg.name!r} has type {arg.type}, which cannot be served")
    shape = None if arg.shape is None else tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(name=arg.name, dtype=dtype, shape=shape)


def signature_of(session: ort.InferenceSession, model_path: Path | None = None) -> Signature:
    inputs = {a.name: _spec(a) for a in session.get_inputs()}
    outputs = {a.name: _spec(a) for a in session.get_outputs()}
    ambiguous = [n for n, s in (inputs | outputs).items() if s.shape == ()]
    if ambiguous and model_path is not None:
        # onnxruntime reports both "scalar" and "no shape at all" as []; only the graph knows.
        unranked = _unranked_values(model_path)
        inputs = {n: _unrank(s) if n in unranked else s for n, s in inputs.items()}
        outputs = {n: _unrank(s) if n in unranked else s for n, s in outputs.items()}
    return Signature(inputs=inputs, outputs=outputs)


def _unranked_values(model_path: Path) -> set[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return {
        v.name
        for v in [*graph.input, *graph.output]
        if v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape")
    }


def _unrank(spec: TensorSpec) -> TensorSpec:
    return TensorSpec(spec.name, spec.dtype, None)


def session_options(options: LoadOptions) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads(options.intra_op_threads)
    if options.inter_op_threads > 0:
        so.inter_op_num_threads = options.inter_op_threads
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    so.log_severity_level = 3
    return so


def providers(options: LoadOptions) -> list[Any]:
    """Execution providers for ``options.device``; CUDA falls back to CPU with a log line.

    A memory limit caps the CUDA provider's arena (``gpu_mem_limit``), which
    then grows by what each allocation needs rather than by doubling, so that
    the cap is reached only when the model really needs it.
    """
    if not options.device.startswith("cuda"):
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        log.warning(
            "device %s requested but onnxruntime has no CUDA provider (install modelserve[gpu]); running on CPU",
            options.device,
        )
        return ["CPUExecutionProvider"]
    cuda: dict[str, Any] = {"device_id": cuda_index(options.device)}
    if options.memory_limit_bytes:
        cuda["gpu_mem_limit"] = options.memory_limit_bytes
        cuda["arena_extend_strategy"] = "kSameAsRequested"
    return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]


def weights_bytes(version_dir: Path) -> int:
    """The model file and its external data: every file directly in the version folder."""
    return sum(p.stat().st_size for p in version_dir.iterdir() if p.is_file())


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc)
    return "Failed to allocate memory" in text or "Available memory of" in text or "out of memory" in text


class OnnxServable:
    """One onnxruntime session; ``InferenceSession.run`` is thread-safe.

    ``device`` is where it runs: ``cuda:N`` when its CUDA provider is active, else ``cpu``.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        model_path: Path | None = None,
        device: str = CPU,
        weights_bytes: int | None = None,
    ) -> None:
        self._session = session
        self._signatures = {DEFAULT_SIGNATURE: signature_of(session, model_path)}
        self.device = device
        self.weights_bytes = weights_bytes

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def predict(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Collection[str] = (),
    ) -> dict[str, np.ndarray]:
        sig = self._signatures[signature]
        feed = {sig.inputs[alias].name: _to_onnx(value) for alias, value in inputs.items()}
        aliases = list(output_filter) or list(sig.outputs)
        try:
            results = self._session.run([sig.outputs[a].name for a in aliases], feed)
        except _INPUT_ERRORS as exc:
            if _out_of_memory(exc):
                raise ResourceExhausted(f"Out of memory on {self.device}: {exc}") from None
            raise InvalidArgument(str(exc)) from None
        return {alias: _from_onnx(value) for alias, value in zip(aliases, results, strict=True)}

    def close(self) -> None:
        del self._session


def _to_onnx(array: np.ndarray) -> np.ndarray:
    if array.dtype.name == "bfloat16":  # ml_dtypes' type: onnxruntime's binding fails it with an internal error
        raise Unimplemented(
            "bfloat16 inputs are not supported on ONNX models: onnxruntime's Python binding takes no bfloat16 arrays"
        )
    # onnxruntime takes strings as ``str`` objects (it would str() a bytes
    # object, giving "b'...'") and only valid UTF-8 crosses into it. This copy,
    # one str per element, and onnxruntime's own are charged with the decode
    # (budget.STRING_PLATFORM_COPY), before any of it is made.
    if array.dtype != object:
        return array
    try:
        decoded: np.ndarray = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(array)
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"ONNX string tensors must hold UTF-8 text: {exc}") from None
    return decoded


def _from_onnx(value: Any) -> np.ndarray:
    array: np.ndarray = np.asarray(value)
    if array.dtype == object or array.dtype.kind == "U":
        encoded: np.ndarray = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(array)
        return encoded
    return array


def load(version_dir: Path, options: LoadOptions) -> OnnxServable:
    path = find_model_file(version_dir)
    weights = weights_bytes(version_dir)
    check_fits(weights, options.memory_limit_bytes)  # before anything is allocated
    wanted = providers(options)
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(options), providers=wanted)
    except Exception as exc:  # onnxruntime raises its own types for corrupt files
        if _out_of_memory(exc):
            raise ResourceExhausted(f"out of device memory creating its session: {exc}") from exc
        raise FailedPrecondition(f"Failed to load ONNX model {path}: {exc}") from exc
    return OnnxServable(session, path, _running_on(session, options.device, wanted), weights)


def _running_on(session: ort.InferenceSession, device: str, wanted: list[Any]) -> str:
    """Where the session runs. onnxruntime drops a CUDA provider it cannot start (no CUDA or
    cuDNN libraries) with a line at a log level we silence: say so here instead."""
    if not device.startswith("cuda") or wanted == ["CPUExecutionProvider"]:
        return CPU
    if "CUDAExecutionProvider" in session.get_providers():
        return device
    log.warning(
        "device %s requested but onnxruntime could not start its CUDA provider (CUDA or cuDNN "
        "libraries missing or mismatched); running on CPU",
        device,
    )
    return CPU
