"""The REST baseline: a minimal Starlette + uvicorn JSON predict for one ONNX model.

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


app = Starlette(routes=[Route("/v1/models/{name}:predict", predict, methods=["POST"])])
