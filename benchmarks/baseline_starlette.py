"""The REST baseline: a minimal Starlette + uvicorn JSON predict (TF Serving's /v1 and V2's infer) for one ONNX model.

Run: MODEL=path/to/model.onnx uvicorn benchmarks.baseline_starlette:app --loop uvloop --http httptools
Inference runs inline on the event loop, or in Starlette's thread pool with THREADPOOL=1 (the shape
modelserve must have: inference never runs on the event loop).
"""

import os

import numpy as np
import onnxruntime as ort
import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(os.environ["MODEL"], options, providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
threadpool = os.environ.get("THREADPOOL") == "1"


async def predict(request: Request) -> Response:
    doc = orjson.loads(await request.body())
    x = np.asarray(doc["instances"], dtype=np.float32)
    if threadpool:
        (y,) = await run_in_threadpool(session.run, None, {input_name: x})
    else:
        (y,) = session.run(None, {input_name: x})
    return Response(orjson.dumps({"predictions": y.tolist()}), media_type="application/json")


async def v2_infer(request: Request) -> Response:
    """The Open Inference Protocol's infer for one FP32 input, JSON or with Triton's binary tensor data
    (then answered binary too): the least a V2 REST server does."""
    body = await request.body()
    binary = request.headers.get("inference-header-content-length")
    doc = orjson.loads(body[: int(binary)] if binary else body)
    (tensor,) = doc["inputs"]
    if binary:
        x = np.frombuffer(body, dtype="<f4", offset=int(binary)).reshape(tensor["shape"])
    else:
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    if threadpool:
        (y,) = await run_in_threadpool(session.run, None, {input_name: x})
    else:
        (y,) = session.run(None, {input_name: x})
    output = {"name": session.get_outputs()[0].name, "datatype": "FP32", "shape": list(y.shape)}
    answer = {"model_name": request.path_params["name"], "outputs": [output]}
    if not binary:
        output["data"] = y.ravel().tolist()
        return Response(orjson.dumps(answer), media_type="application/json")
    data = y.astype("<f4").tobytes()
    output["parameters"] = {"binary_data_size": len(data)}
    header = orjson.dumps(answer)
    return Response(
        header + data,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


app = Starlette(
    routes=[
        Route("/v1/models/{name}:predict", predict, methods=["POST"]),
        Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/{name}/ready", lambda request: Response(b""), methods=["GET"]),
    ]
)
