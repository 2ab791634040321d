"""Bare gRPC servers the gRPC benchmark compares modelserve with (same process shape, one pinned core).

    python benchmarks/baseline_grpc.py aio|sync PORT MODEL.onnx    # TF Serving Predict, model inline
    python benchmarks/baseline_grpc.py echo PORT                   # raw grpc.aio echo of the request bytes
    python benchmarks/baseline_grpc.py echo-threads PORT           # the same on grpc.server, 8 threads
    python benchmarks/baseline_grpc.py v2-aio|v2-sync PORT MODEL.onnx  # V2 ModelInfer, model inline

``aio`` and ``sync`` do the least a Predict server can: parse the request,
``np.frombuffer`` its tensor_content, run onnxruntime (1 thread), answer with
typed float_val, no validation, no model lookup, no error handling. ``echo``
moves bytes only (no protobuf at all): the ceiling for large tensors.
``v2-aio`` and ``v2-sync`` do the same for KServe V2 ``ModelInfer``: parse the
request, ``np.frombuffer`` its first ``raw_input_contents``, run onnxruntime,
answer the output in ``raw_output_contents`` (as tritonclient asks and MLServer
answers): the most a grpcio-based Python V2 server can do.
"""

from __future__ import annotations

import asyncio
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modelserve.protos import add_servicer, pb

OPTIONS = [("grpc.max_receive_message_length", 2**31 - 1), ("grpc.max_send_message_length", 2**31 - 1)]
PREDICT = "/tensorflow.serving.PredictionService/Predict"


def onnx_session(model: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def predictor(model: str) -> Any:
    session = onnx_session(model)

    def predict(request: Any) -> Any:
        tensor = request.inputs["input"]
        x = np.frombuffer(tensor.tensor_content, np.float32).reshape([d.size for d in tensor.tensor_shape.dim])
        (y,) = session.run(None, {"input": x})
        response = pb.PredictResponse()
        out = response.outputs["output"]
        out.dtype = 1
        out.tensor_shape.dim.extend(pb.TensorShapeProto.Dim(size=s) for s in y.shape)
        out.float_val.extend(y.reshape(-1).tolist())
        return response

    return predict


def v2_inferer(model: str) -> Any:
    session = onnx_session(model)

    def infer(request: Any) -> Any:
        x = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(request.inputs[0].shape)
        (y,) = session.run(None, {"input": x})
        response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
        response.outputs.add(name="output", datatype="FP32", shape=y.shape)
        response.raw_output_contents.append(y.tobytes())
        return response

    return infer


class SyncServicer:
    def __init__(self, model: str) -> None:
        self.predict = predictor(model)

    def Predict(self, request: Any, context: Any) -> Any:
        return self.predict(request)


class AioServicer(SyncServicer):
    async def Predict(self, request: Any, context: Any) -> Any:
        return self.predict(request)


class V2SyncServicer:
    def __init__(self, model: str) -> None:
        self.infer = v2_inferer(model)

    def ModelInfer(self, request: Any, context: Any) -> Any:
        return self.infer(request)


class V2AioServicer(V2SyncServicer):
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return self.infer(request)


async def serve_aio(port: int, servicer: Any = None, echo: bool = False) -> None:
    server = grpc.aio.server(options=OPTIONS)
    if echo:

        async def handler(request: bytes, context: Any) -> bytes:
            return request

        rpc = grpc.unary_unary_rpc_method_handler(handler)  # no (de)serializer: raw bytes
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {"Predict": rpc}),)
        )
    else:
        service = pb.GRPCInferenceService if isinstance(servicer, V2SyncServicer) else pb.PredictionService
        add_servicer(server, service, servicer)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def serve_sync(port: int, model: str | None, v2: bool = False) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(8), options=OPTIONS)
    if v2:
        assert model is not None
        add_servicer(server, pb.GRPCInferenceService, V2SyncServicer(model))
    elif model is None:  # echo of the request bytes
        rpc = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {"Predict": rpc}),)
        )
    else:
        add_servicer(server, pb.PredictionService, SyncServicer(model))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "sync":
        serve_sync(port, sys.argv[3])
    elif kind == "echo-threads":
        serve_sync(port, None)
    elif kind == "v2-sync":
        serve_sync(port, sys.argv[3], v2=True)
    elif kind == "v2-aio":
        asyncio.run(serve_aio(port, V2AioServicer(sys.argv[3])))
    elif kind == "aio":
        asyncio.run(serve_aio(port, AioServicer(sys.argv[3])))
    else:
        asyncio.run(serve_aio(port, echo=True))


if __name__ == "__main__":
    main()
