"""TF Serving's gRPC API: ``PredictionService`` and ``ModelService``, wire-compatible with the official stubs.

Thin by design: decode protos to numpy, call the core, encode the answer, and
map core errors to gRPC status codes once (``GRPC_STATUS``).

Each RPC is written once, as a coroutine, for both server models
(``api.grpc_server``): one execution path, two drivers. On grpcio's threaded
server (without ``--enable_batching``) the handler thread runs it inline
(``inline_rpc``, ``execution.runner.run_inline``), the model on that thread
itself, with no hand-off; under ``grpc.aio`` (with batching) it is awaited on
the event loop (``async_rpc``), so a call waiting in a batch queue holds no
thread. Both live in the same process as the REST server and share the core,
the models and their leases with it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from ..budget import Account
from ..codecs.tensor_proto import from_ndarray, shape_to_proto, to_ndarrays
from ..codecs.tensor_wire import tensor_entry
from ..dtypes import DType, itemsize
from ..errors import Code, InvalidArgument, Unimplemented
from ..lifecycle.config import model_configs
from ..observe.faults import FaultLog
from ..observe.requests import Watch
from ..observe.trace import RequestTrace
from ..protos import MODEL_SERVICE, PREDICTION_SERVICE, message_class, pb, service_descriptor
from ..serving import example_tasks
from ..serving.contract import Core
from ..serving.request import ExamplesRequest, ExamplesResponse, InferenceRequest, InferenceResponse, ModelSpec
from ..signatures import DEFAULT_SIGNATURE, Signature, TensorSpec
from .grpc_calls import (
    OFFLOAD_BYTES,
    Answer,
    Context,
    add_handlers,
    async_rpc,
    check_active,
    deadline_of,
    inline_rpc,
    lenient_parser,
    off_loop,
    request_options_of,
    serialize,
)

log = logging.getLogger(__name__)

_STRING_WIDTH = 8  # a reference per element, before the bytes themselves
_OUTPUTS_FIELD = pb.PredictResponse.DESCRIPTOR.fields_by_name["outputs"].number
# Outputs at least this big skip protobuf's copies (codecs.tensor_wire); below, protobuf is faster.
_WIRE_BYTES = 16 * 1024


def model_spec(message: Message) -> ModelSpec:
    """The core's ModelSpec from a request's ``model_spec`` (INVALID_ARGUMENT when it is missing)."""
    if not message.HasField("model_spec"):
        raise InvalidArgument("Missing ModelSpec")
    return spec_of(message.model_spec)


def spec_of(spec: Message) -> ModelSpec:
    choice = spec.WhichOneof("version_choice")
    return ModelSpec(
        name=spec.name,
        version=spec.version.value if choice == "version" else None,
        label=spec.version_label if choice == "version_label" else None,
    )


def _answer_spec(out: Message, model: str, version: int, signature_name: str) -> None:
    """TF's MakeModelSpec: the requested name, the version used, the signature (default filled in)."""
    out.name = model
    out.version.value = version
    out.signature_name = signature_name or DEFAULT_SIGNATURE


# --- PredictionService ----------------------------------------------------------------------


class PredictionServicer:
    """``tensorflow.serving.PredictionService``; its methods are RPC bodies (``inline_rpc``, ``async_rpc``)."""

    def __init__(self, core: Core, *, tensor_content: bool = False) -> None:
        self._core = core
        self._tensor_content = tensor_content

    async def Predict(self, request: Any, context: Context, trace: RequestTrace) -> Answer:
        spec = model_spec(request)
        # The request's share of the memory budget, held until its answer is built (grpcio
        # serializes it after the body returns: the parts are the outputs already charged).
        with self._core.budget.account() as account:
            response = await self._core.predict(
                InferenceRequest(
                    spec,
                    functools.partial(_decoded_inputs, request.inputs, account),  # once the model is found, as TF
                    request.model_spec.signature_name,
                    list(request.output_filter),
                    deadline_of(context),
                    request_options_of(context),
                    account,
                    trace,
                )
            )
            check_active(context)  # a client gone while the model ran: its answer is not encoded
            return predict_answer(response, self._tensor_content)

    async def GetModelMetadata(self, request: Any, context: Context, trace: RequestTrace) -> Message:
        spec = model_spec(request)
        if not request.metadata_field:
            raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise InvalidArgument(f"Metadata field {field} is not supported")
        metadata = self._core.metadata(spec, trace)
        response = pb.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = metadata.version
        response.metadata["signature_def"].Pack(signature_def_map(metadata.signatures))
        return response

    async def Classify(self, request: Any, context: Context, trace: RequestTrace) -> Message:
        return await self._one_task("classify", request, context, pb.ClassificationResponse(), trace)

    async def Regress(self, request: Any, context: Context, trace: RequestTrace) -> Message:
        return await self._one_task("regress", request, context, pb.RegressionResponse(), trace)

    async def _one_task(
        self, kind: example_tasks.Kind, request: Any, context: Context, response: Message, trace: RequestTrace
    ) -> Message:
        """Classify or Regress: one task's result and the model spec written into ``response``."""
        run = self._core.classify if kind == "classify" else self._core.regress
        with self._core.budget.account() as account:
            answer = await run(self._examples(request, context, account, trace))
        _write_result(kind, response.result, answer.results[0])
        _answer_spec(response.model_spec, answer.model, answer.version, request.model_spec.signature_name)
        return response

    def _examples(self, request: Any, context: Context, account: Account, trace: RequestTrace) -> ExamplesRequest:
        spec = model_spec(request)
        examples = example_tasks.from_input(request.input, account)
        signature_name = request.model_spec.signature_name
        return ExamplesRequest(
            spec, examples, signature_name, (), deadline_of(context), request_options_of(context), account, trace
        )

    async def MultiInference(self, request: Any, context: Context, trace: RequestTrace) -> Message:
        tasks = list(request.tasks)
        with self._core.budget.account() as account:
            answer = await self._core.multi_inference(
                ExamplesRequest(
                    spec_of(tasks[0].model_spec) if tasks else ModelSpec(""),
                    example_tasks.from_input(request.input, account),
                    tasks=[(t.model_spec.name, t.model_spec.signature_name, t.method_name) for t in tasks],
                    deadline=deadline_of(context),
                    options=request_options_of(context),
                    account=account,
                    trace=trace,
                )
            )
        return _multi_response(tasks, answer)


def _multi_response(tasks: list[Any], answer: ExamplesResponse) -> Message:
    response = pb.MultiInferenceResponse()
    for task, result in zip(tasks, answer.results, strict=True):
        out = response.results.add()
        out.model_spec.CopyFrom(task.model_spec)
        out.model_spec.version.value = answer.version
        kind = example_tasks.METHODS[task.method_name]
        field = "classification_result" if kind == "classify" else "regression_result"
        _write_result(kind, getattr(out, field), result)
    return response


def _decoded_inputs(
    tensors: Mapping[str, Message], account: Account, signatures: object
) -> Mapping[str, np.ndarray] | asyncio.Future[Mapping[str, np.ndarray]]:
    """A Predict request's arrays. On the event loop (grpc.aio), tensors that decode to
    ``OFFLOAD_BYTES`` or more (a fill rule expands a few bytes into many) are decoded off it."""
    if asyncio._get_running_loop() is not None and _decodes_big(tensors):
        return off_loop(to_ndarrays, tensors, account)
    return to_ndarrays(tensors, account)


def _decodes_big(tensors: Mapping[str, Message]) -> bool:
    """Whether ``to_ndarrays`` allocates ``OFFLOAD_BYTES`` or more: elements (by the shape) times their
    width. Sizes are capped as they are multiplied, so a hostile shape stays cheap to measure."""
    total = 0
    for tensor in tensors.values():
        size = _WIDTHS.get(tensor.dtype, _STRING_WIDTH)
        for dim in tensor.tensor_shape.dim:
            size = min(size * max(0, dim.size), OFFLOAD_BYTES)
        total += size + len(tensor.tensor_content)
        if total >= OFFLOAD_BYTES:
            return True
    return False


def _width(dtype: DType) -> int:
    try:
        return itemsize(dtype)
    except Unimplemented:
        return _STRING_WIDTH


# Bytes per element by TensorProto dtype; strings, and dtypes numpy cannot hold, count a reference.
_WIDTHS = {int(d): _width(d) for d in DType if d != DType.DT_STRING}


def predict_answer(answer: InferenceResponse, tensor_content: bool) -> Answer:
    """The Predict answer: raw-buffer tensors as wire parts, the rest (strings, varints) via protobuf."""
    response = pb.PredictResponse()
    parts: list[bytes | memoryview] = []
    for alias, array in answer.outputs.items():
        entry = None
        if array.nbytes >= _WIRE_BYTES:
            entry = tensor_entry(_OUTPUTS_FIELD, alias, array, tensor_content=tensor_content)
        if entry is None:
            from_ndarray(array, tensor_content=tensor_content, out=response.outputs[alias])
        else:
            parts += entry
    _answer_spec(response.model_spec, answer.model, answer.version, answer.signature_name)
    return Answer(response, tuple(parts))


def _write_result(kind: example_tasks.Kind, out: Message, result: example_tasks.Result) -> None:
    """A plan's result as a ClassificationResult or a RegressionResult (``out``)."""
    if kind == "classify":
        for classes in result:
            add = out.classifications.add().classes.add
            for label, score in classes:  # type: ignore[union-attr]
                add(label=label, score=score)
    else:
        add = out.regressions.add
        for value in result:
            add(value=value)


def signature_def_map(signatures: Mapping[str, Signature]) -> Message:
    """The servable's signatures as TF Serving's ``SignatureDefMap``."""
    out = pb.SignatureDefMap()
    for key, signature in signatures.items():
        definition = out.signature_def[key]
        definition.method_name = signature.method_name
        for alias, spec in signature.inputs.items():
            _tensor_info(definition.inputs[alias], spec)
        for alias, spec in signature.outputs.items():
            _tensor_info(definition.outputs[alias], spec)
    return out


def _tensor_info(out: Message, spec: TensorSpec) -> None:
    out.name = spec.name
    out.dtype = int(spec.dtype)
    out.tensor_shape.CopyFrom(shape_to_proto(spec.shape))


# --- ModelService ---------------------------------------------------------------------------


class ModelServicer:
    """``tensorflow.serving.ModelService``: version status and config reloads."""

    def __init__(self, core: Core) -> None:
        self._core = core

    async def GetModelStatus(self, request: Any, context: Context, trace: RequestTrace) -> Message:
        spec = model_spec(request)  # a label is ignored, as in TF Serving
        response = pb.GetModelStatusResponse()
        for row in self._core.status(spec.name, spec.version, trace):
            entry = response.model_version_status.add(version=row.version, state=int(row.state))
            entry.status.error_code = int(row.error_code)
            entry.status.error_message = row.error_message
        return response

    async def HandleReloadConfigRequest(self, request: Any, context: Context, trace: RequestTrace) -> Message:
        response = pb.ReloadConfigResponse()
        if request.config.WhichOneof("config") is None:
            log.info("Taking no action for empty config.")  # as TF Serving: a later config may follow
        else:
            await self._core.reload_config(model_configs(request.config))
        response.status.error_code = int(Code.OK)
        return response


# --- registration ---------------------------------------------------------------------------


def add_services(
    server: grpc.Server | grpc.aio.Server, core: Core, *, tensor_content: bool = False, watch: Watch
) -> list[str]:
    """Register PredictionService and ModelService on ``server`` (threaded or ``grpc.aio``); returns
    their full names. ``watch`` opens and closes each call's trace."""
    faults = FaultLog(log)  # one rate limit for the whole gRPC front end
    _register(server, PREDICTION_SERVICE, PredictionServicer(core, tensor_content=tensor_content), faults, watch)
    _register(server, MODEL_SERVICE, ModelServicer(core), faults, watch)
    return [PREDICTION_SERVICE, MODEL_SERVICE]


def _register(
    server: grpc.Server | grpc.aio.Server, service: str, servicer: object, faults: FaultLog, watch: Watch
) -> None:
    descriptor: ServiceDescriptor = service_descriptor(service)
    on_loop = isinstance(server, grpc.aio.Server)
    wrap = async_rpc if on_loop else inline_rpc
    handlers = {}
    for method in descriptor.methods:
        body = getattr(servicer, method.name, None)
        if body is None:
            continue  # clients get UNIMPLEMENTED
        request = message_class(method.input_type.full_name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            wrap(body, faults, watch, "tfs_grpc"),
            request_deserializer=lenient_parser(request, on_loop),
            response_serializer=serialize,
        )
    add_handlers(server, descriptor.full_name, handlers)
