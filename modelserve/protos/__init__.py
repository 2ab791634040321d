"""TF Serving, TensorFlow and KServe V2 protos, in a private descriptor pool.

Wire-compatible with ``tensorflow-serving-api`` and ``tritonclient``: same
packages, message, service and method names, field numbers. The sources are
``modelserve/protos/src/**.proto``; ``scripts/gen_protos.py`` compiles them
into ``descriptors.binpb``, loaded here at import into ``POOL``, a
``DescriptorPool`` of our own (never protobuf's default pool, where
TensorFlow registers its own files of the same names).

Messages, enums and services by short name::

    from modelserve.protos import pb

    request = pb.PredictRequest()
    request.model_spec.name = "mnist"
    pb.DataType.DT_FLOAT                      # 1
    pb.ModelVersionStatus.AVAILABLE           # 30
    pb.PredictionService                      # ServiceDescriptor

By full name: ``message_class("tensorflow.serving.PredictRequest")``.

Things that look protobuf's defaults up and so need ``POOL`` passed to them:
``text_format.Parse(..., descriptor_pool=POOL)`` for ``[type.googleapis.com/...]``
Any expansions (or use ``parse_text``), ``json_format`` on messages holding an
Any, and gRPC server reflection
(``reflection.enable_server_reflection(names, server, pool=POOL)``).
``Any.Pack``/``Unpack`` work on our messages directly; the Any to use is
``pb.Any`` (protobuf's ``any_pb2.Any`` is a different class).

gRPC without generated stubs: ``add_servicer`` / ``generic_handler`` on the
server side, ``Stub`` on the client side (see ``modelserve.protos.rpc``).
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import text_format
from google.protobuf.message import Message

from . import pb
from ._pool import POOL, enum_type, message_class, service_descriptor
from .rpc import Stub, add_servicer, generic_handler, method_handlers, method_path

M = TypeVar("M", bound=Message)

# Full names of the services modelserve serves.
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
INFERENCE_SERVICE = "inference.GRPCInferenceService"


def parse_text(text: str, message: M) -> M:
    """Merge protobuf text format into ``message`` and return it; Any types resolve in ``POOL``.

    Raises ``google.protobuf.text_format.ParseError`` with line and column.
    """
    parsed: M = text_format.Parse(text, message, descriptor_pool=POOL)
    return parsed


__all__ = [
    "INFERENCE_SERVICE",
    "MODEL_SERVICE",
    "POOL",
    "PREDICTION_SERVICE",
    "Stub",
    "add_servicer",
    "enum_type",
    "generic_handler",
    "message_class",
    "method_handlers",
    "method_path",
    "parse_text",
    "pb",
    "service_descriptor",
]
