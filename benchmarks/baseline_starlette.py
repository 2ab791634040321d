"""The REST baseline: a minimal Starlette + uvicorn JSON predict for one ONNX model, inference inline.

Run: MODEL=path/to/model.onnx uvicorn benchmarks.baseline_starlette:app --loop uvloop --http httptools
"""

import os

import numpy as np
import onnxruntime as ort
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(os.environ["MODEL"], options, providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name


async def predict(request: Request) -> Response:
    doc = orjson.loads(await request.body())
    x = np.asarray(doc["instances"], dtype=np.float32)
    (y,) = session.run(None, {input_name: x})
    return Response(orjson.dumps({"predictions": y.tolist()}), media_type="application/json")


app = Starlette(routes=[Route("/v1/models/{name}:predict", predict, methods=["POST"])])
