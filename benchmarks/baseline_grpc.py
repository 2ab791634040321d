"""Bare gRPC servers the gRPC benchmark compares modelserve with (same process shape, one pinned core).

    python benchmarks/baseline_grpc.py aio|sync PORT MODEL.onnx    # TF Serving Predict, model inline
    python benchmarks/baseline_grpc.py echo PORT                   # raw grpc.aio echo of the request bytes
    python benchmarks/baseline_grpc.py echo-threads PORT           # the same on grpc.server, 8 threads

``aio`` and ``sync`` do the least a Predict server can: parse the request,
``np.frombuffer`` its tensor_content, run onnxruntime (1 thread), answer with
typed float_val, no validation, no model lookup, no error handling. ``echo``
moves bytes only (no protobuf at all): the ceiling for large tensors.
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


def predictor(model: str) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

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


class SyncServicer:
    def __init__(self, model: str) -> None:
        self.predict = predictor(model)

    def Predict(self, request: Any, context: Any) -> Any:
        return self.predict(request)


class AioServicer(SyncServicer):
    async def Predict(self, request: Any, context: Any) -> Any:
        return self.predict(request)


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
        add_servicer(server, pb.PredictionService, servicer)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def serve_sync(port: int, model: str | None) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(8), options=OPTIONS)
    if model is None:  # echo of the request bytes
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
    elif kind == "aio":
        asyncio.run(serve_aio(port, AioServicer(sys.argv[3])))
    else:
        asyncio.run(serve_aio(port, echo=True))


if __name__ == "__main__":
    main()
