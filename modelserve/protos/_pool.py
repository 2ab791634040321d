"""modelserve's private descriptor pool, loaded once from descriptors.binpb.

Why a private pool: TensorFlow and tensorflow-serving-api register files with
the same names (``tensorflow/core/framework/tensor.proto`` ...) in protobuf's
default pool. Keeping ours apart lets both live in one process, and loading a
serialized descriptor set (instead of generated ``_pb2`` modules) avoids
protobuf's generated-code version check, so any protobuf >= 5.26 works.

The pool is filled at import and never changed afterwards; message classes
are built once per type and cached by protobuf. Both are safe to share
between threads.
"""

from __future__ import annotations

from importlib import resources

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import Message

DESCRIPTOR_SET = "descriptors.binpb"


def _load_pool() -> descriptor_pool.DescriptorPool:
    data = resources.files(__package__).joinpath(DESCRIPTOR_SET).read_bytes()
    pool = descriptor_pool.DescriptorPool()
    # protoc --include_imports lists every file after its dependencies.
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.Add(file)
    return pool


POOL: descriptor_pool.DescriptorPool = _load_pool()


def message_class(full_name: str) -> type[Message]:
    """The message class of ``full_name`` (e.g. ``tensorflow.serving.PredictRequest``).

    Raises KeyError if the pool has no such message.
    """
    descriptor = POOL.FindMessageTypeByName(full_name)
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    # upb hangs nested classes off their parent; protobuf's pure-Python
    # implementation (PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python) does not.
    for nested in descriptor.nested_types:
        if not hasattr(cls, nested.name):
            setattr(cls, nested.name, message_class(nested.full_name))
    return cls


def enum_type(full_name: str) -> EnumTypeWrapper:
    """The enum ``full_name`` (e.g. ``tensorflow.DataType``): ``Name``, ``Value``, values as attributes."""
    return EnumTypeWrapper(POOL.FindEnumTypeByName(full_name))


def service_descriptor(full_name: str) -> ServiceDescriptor:
    """The descriptor of service ``full_name`` (e.g. ``tensorflow.serving.PredictionService``)."""
    found: ServiceDescriptor = POOL.FindServiceByName(full_name)
    return found
