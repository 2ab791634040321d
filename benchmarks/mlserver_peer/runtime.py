"""The 20-line MLServer runtime the gRPC and batching benchmarks serve the same ONNX file with.

Runs inside MLServer's own virtual environment (its pins fight modelserve's: docs/benchmarking.md).
"""

import os

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        # One thread for the per-request benchmarks; batching.py asks for the limit's two.
        options.intra_op_num_threads = int(os.environ.get("PEER_INTRA_OP_THREADS", "1"))
        path = await get_model_uri(self._settings)
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        (y,) = self._session.run(None, {"input": x})
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("output", y)])
