"""TF Serving's REST JSON <-> numpy: predict, classify/regress, status and metadata bodies.

Pure functions, no I/O. Every accepted input, shape rule, error text and
float rendering follows TF Serving's ``util/json_tensor.cc`` (rapidjson
v1.1.0, absl base64):
clients match on these strings and compare these numbers.

Two speeds, one behaviour. Requests are parsed by orjson and converted with
``np.array``; whenever that fast path cannot prove a value valid (NaN tokens,
trailing bytes, deep nesting, strings, ragged lists, a JSON ``true`` anywhere
in the body...) an exact slow path reproduces rapidjson and json_tensor.cc
step by step, including the first error TF would report. Float outputs are
rendered with TF's ``%g``-then-``%.9g``/``%.17g`` rule, vectorised with numpy
for large tensors.

Deliberate differences from TF Serving (see the module's tests):

* numbers are parsed correctly rounded (rapidjson without full precision can
  be one ULP off for literals with more than ~16 significant digits);
* a repeated object key keeps its last value (orjson), not its first;
* ``NaN``/``Infinity`` followed by ``.5`` or ``e5`` is a syntax error (rapidjson
  silently re-reads it as ``0.5``/``0``);
* DT_HALF and DT_BFLOAT16 inputs are accepted like DT_FLOAT (TF issue #1639);
* a tensor deeper than numpy's 64 dimensions is refused with a clear
  INVALID_ARGUMENT;
* a row request whose first instance is a ``{"b64": ...}`` object for a
  multi-input signature fails here with the plain-list error (TF feeds one
  input and fails later);
* invalid UTF-8 inside error messages is replaced by U+FFFD, and string
  outputs are decoded with ``errors="replace"``;
* doubles inside error messages use Python's shortest digits (rapidjson's
  Grisu2 agrees but for rare one-digit-longer cases);
* responses are compact JSON (TF pretty-prints them; clients parse either).
"""

from .examples import Feature, decode_examples, encode_classify, encode_regress
from .floats import format_double, format_float32
from .parser import loads, parse_bytes
from .predict import Format, decode_predict, encode_bytes, encode_predict, signature_name
from .status import encode_error, encode_instances, encode_metadata, encode_status

__all__ = [
    "Feature",
    "Format",
    "decode_examples",
    "decode_predict",
    "encode_bytes",
    "encode_classify",
    "encode_error",
    "encode_instances",
    "encode_metadata",
    "encode_predict",
    "encode_regress",
    "encode_status",
    "format_double",
    "format_float32",
    "loads",
    "parse_bytes",
    "signature_name",
]
