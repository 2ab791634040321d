"""The Open Inference Protocol's JSON (KServe V2 REST): an infer request's header, tensors <-> numpy.

A request is ``{"id", "parameters", "inputs": [...], "outputs": [...]}``; each
input names its ``datatype`` and ``shape`` and carries its elements either in
``data`` (row-major, flat or nested as the shape) or, with the binary tensor
data extension, after the JSON (``parameters.binary_data_size``, see
``binary.py``). ``parse_request`` checks the header's structure with Triton's
texts; ``decode_data`` turns one input's ``data`` into an array, charging the
request's account before it allocates; ``encode_response`` writes the answer.
FP16 and BF16 travel only as binary data (Triton refuses them in JSON, both ways).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson

from ...budget import POINTER, UNMETERED, Account, string_tensor_bytes
from ...errors import InvalidArgument, Unimplemented
from ..tfs_json.parser import parse_bytes
from .datatypes import ITEM_SIZE, dtype_of, numpy_of

_NUMPY_OPTS = orjson.OPT_SERIALIZE_NUMPY
_BINARY_ONLY = ("FP16", "BF16")
# What writing one element as JSON may take, text and the list slot it is built in (floats: the
# longest repr, 24 characters, and a comma).
_JSON_PER_ELEMENT = 32


@dataclass(frozen=True, slots=True)
class Input:
    """One entry of ``inputs``: ``data`` is the JSON value (None when the elements are binary),
    ``binary_size`` the bytes they take after the JSON (None when they are in ``data``)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any = None
    binary_size: int | None = None


@dataclass(frozen=True, slots=True)
class Output:
    """One entry of ``outputs``; ``binary`` None: as the request's ``binary_data_output`` says."""

    name: str
    binary: bool | None = None


@dataclass(frozen=True, slots=True)
class InferHeader:
    """An infer request's JSON, checked: ``parameters`` as sent (``binary_data_output`` read out)."""

    id: str | None
    parameters: dict[str, Any]
    inputs: tuple[Input, ...]
    outputs: tuple[Output, ...]
    binary_output: bool = False


def loads(text: bytes | memoryview, account: Account = UNMETERED) -> Any:
    """Parse JSON, charging what the parse allocates (``tfs_json``'s estimate) first."""
    raw = bytes(text) if isinstance(text, memoryview) else text
    if not raw:
        raise InvalidArgument("failed to parse the request JSON buffer: The document is empty.")
    account.charge(parse_bytes(raw), f"parse a JSON body of {len(raw)} bytes")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"failed to parse the request JSON buffer: {exc}") from None


def parse_request(doc: Any) -> InferHeader:
    """The header of an infer request (Triton's ParseJsonTritonIO checks and texts)."""
    if type(doc) is not dict:
        raise InvalidArgument("failed to parse the request JSON buffer: the request is not a JSON object")
    request_id = doc.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InvalidArgument("Unable to parse 'id'")
    parameters = _parameters(doc, "parameters")
    binary_output = parameters.get("binary_data_output", False)
    if type(binary_output) is not bool:
        raise InvalidArgument("Unable to parse 'binary_data_output'")
    for key in parameters:
        if key.startswith("triton_"):
            raise InvalidArgument(
                "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified."
            )
    inputs = doc.get("inputs")
    if type(inputs) is not list:
        raise InvalidArgument("Unable to parse 'inputs'")
    seen: set[str] = set()
    parsed = []
    for entry in inputs:
        tensor = _input(entry)
        if tensor.name in seen:
            raise InvalidArgument(f"input '{tensor.name}' already exists in request")
        seen.add(tensor.name)
        parsed.append(tensor)
    outputs = doc.get("outputs", [])
    if type(outputs) is not list:
        raise InvalidArgument("Unable to parse 'outputs'")
    return InferHeader(request_id, parameters, tuple(parsed), tuple(_output(o) for o in outputs), binary_output)


def parameters(doc: dict[str, Any]) -> dict[str, Any]:
    """A request's ``parameters`` object (empty when it has none); INVALID_ARGUMENT when not an object."""
    return _parameters(doc, "parameters")


def _parameters(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if type(value) is not dict:
        raise InvalidArgument(f"Unable to parse '{key}'")
    return value


def _input(entry: Any) -> Input:
    if type(entry) is not dict:
        raise InvalidArgument("Unable to parse 'inputs'")
    name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
    if type(name) is not str:
        raise InvalidArgument("Unable to parse 'name'")
    if type(datatype) is not str:
        raise InvalidArgument("Unable to parse 'datatype'")
    dtype_of(datatype)  # a name the protocol does not have is refused here
    if type(shape) is not list or any(type(d) is not int or d < 0 for d in shape):
        raise InvalidArgument("Unable to parse 'shape'")
    parameters = _parameters(entry, "parameters")
    has_data, has_binary = "data" in entry, "binary_data_size" in parameters
    has_shm = "shared_memory_region" in parameters
    if has_data + has_binary + has_shm != 1:
        sent = [f" '{k}'" for k, v in (("data", has_data), ("binary_data_size", has_binary)) if v]
        sent += [" 'shared_memory_region'"] if has_shm else []
        raise InvalidArgument(
            "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', "
            "'shared_memory_region' in 'parameters'. But" + (" set" + "".join(sent) if sent else " no field is set")
        )
    if has_shm:
        raise Unimplemented(f"input '{name}': shared memory regions are not supported; send the data in the request")
    if has_binary:
        size = parameters["binary_data_size"]
        if type(size) is not int or size < 0:
            raise InvalidArgument("Unable to parse 'binary_data_size'")
        return Input(name, datatype, tuple(shape), binary_size=size)
    return Input(name, datatype, tuple(shape), data=entry["data"])


def _output(entry: Any) -> Output:
    if type(entry) is not dict:
        raise InvalidArgument("Unable to parse 'outputs'")
    name = entry.get("name")
    if type(name) is not str:
        raise InvalidArgument("Unable to parse 'name'")
    parameters = _parameters(entry, "parameters")
    if "classification" in parameters:
        raise Unimplemented(f"output '{name}': the classification extension is not supported")
    if "shared_memory_region" in parameters:
        raise Unimplemented(f"output '{name}': shared memory regions are not supported")
    binary = parameters.get("binary_data")
    if binary is not None and type(binary) is not bool:
        raise InvalidArgument("Unable to parse 'binary_data'")
    return Output(name, binary)


def element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def decode_data(tensor: Input, account: Account = UNMETERED) -> np.ndarray:
    """One input's ``data`` (flat row-major, or nested as its shape) as an array of its datatype.

    Booleans must be JSON booleans, integers integers in the datatype's range, floats numbers,
    BYTES strings (held UTF-8 encoded); the count must match the shape.
    """
    name, datatype = tensor.name, tensor.datatype
    if datatype in _BINARY_ONLY:
        raise InvalidArgument(
            f"receiving {datatype} data via JSON is not supported. Please use the binary data format for input {name}"
        )
    count = element_count(tensor.shape)
    flat, kinds = _flatten(tensor.data, name)
    if len(flat) != count:
        raise InvalidArgument(
            f"Unable to parse 'data': input '{name}' has {len(flat)} elements in 'data' but its shape "
            f"{list(tensor.shape)} has {count}"
        )
    if datatype == "BYTES":
        return _strings(flat, kinds, tensor.shape, name, account)
    dtype = numpy_of(datatype)
    account.charge(count * (ITEM_SIZE[datatype] + 2 * POINTER), f"decode input '{name}'")
    # The set of the elements' types stands for a check of each: JSON booleans only for BOOL,
    # integers only (no fractions, no booleans) for integer types, numbers for floats.
    if datatype == "BOOL":
        ok = kinds <= {bool}
    elif dtype.kind in "iu":  # in the datatype's range too: numpy raises OverflowError otherwise
        ok = kinds <= {int}
    else:
        ok = kinds <= {int, float}
    if ok:
        try:
            # A number beyond FP16/FP32's range becomes infinity, as Triton's cast from double does.
            with np.errstate(over="ignore"):
                return np.array(flat, dtype=dtype).reshape(tensor.shape)
        except OverflowError:
            pass
    raise InvalidArgument(
        f"Unable to parse 'data': input '{name}' of datatype {datatype} holds values it cannot hold "
        f"(expected {_EXPECTED.get(dtype.kind, 'numbers')})"
    )


_EXPECTED = {"b": "true or false", "i": "integers in its range", "u": "integers in its range"}


def _flatten(data: Any, name: str) -> tuple[list[Any], set[type]]:
    """``data`` as one flat list, row-major (any nesting is taken: only the count is checked),
    and the set of its elements' types."""
    if type(data) is not list:
        raise InvalidArgument(f"Unable to parse 'data': input '{name}' has no array in 'data'")
    # map and set run in C: the common shapes (flat, or lists of lists down to the numbers) are
    # flattened a level at a time by chain; a level that mixes lists and values is walked.
    level = data
    while True:
        kinds = set(map(type, level))
        if list not in kinds:
            return level, kinds
        if len(kinds) != 1:
            flat = _flatten_walk(data)
            return flat, set(map(type, flat))
        level = list(chain.from_iterable(level))


def _flatten_walk(data: list[Any]) -> list[Any]:
    """``data`` as one flat list: nested lists are walked row-major, without recursion."""
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _strings(flat: list[Any], kinds: set[type], shape: tuple[int, ...], name: str, account: Account) -> np.ndarray:
    if not kinds <= {str}:
        raise InvalidArgument(
            f"Unable to parse 'data': input '{name}' of datatype BYTES holds values that are not strings"
        )
    encoded = [item.encode() for item in flat]
    account.charge(string_tensor_bytes(len(encoded), sum(map(len, encoded))), f"decode input '{name}'")
    array = np.empty(len(encoded), dtype=object)
    array[:] = encoded
    return array.reshape(shape)


def json_bytes(array: np.ndarray) -> int:
    """An upper estimate of what writing ``array`` as JSON ``data`` allocates."""
    if array.dtype.kind == "O":
        return array.size * (_JSON_PER_ELEMENT + 64) + 6 * sum(len(item) for item in array.flat)
    return array.size * _JSON_PER_ELEMENT


def output_data(name: str, datatype: str, array: np.ndarray) -> Any:
    """An output's ``data`` value, flat row-major (orjson writes numeric arrays itself)."""
    if datatype in _BINARY_ONLY:
        raise InvalidArgument(
            f"sending {datatype} data via JSON is not supported. Please use the binary data format for output {name}"
        )
    if datatype == "BYTES":
        try:
            return [item.decode() if isinstance(item, bytes) else str(item) for item in array.flat]
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"output '{name}' holds bytes that are not UTF-8, which JSON cannot carry: ask for it as binary data"
            ) from None
    return np.ascontiguousarray(array).reshape(-1)


def output_entry(name: str, datatype: str, shape: Sequence[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": list(shape)}


def dumps(doc: dict[str, Any] | list[Any]) -> bytes:
    """The answer's JSON; numpy arrays inside are written by orjson directly (NaN and infinities as null)."""
    return orjson.dumps(doc, option=_NUMPY_OPTS)


def response_doc(model: str, version: int, request_id: str | None, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"id", "model_name", "model_version", "outputs"}`` (no ``id`` when the request had none)."""
    doc: dict[str, Any] = {} if request_id is None else {"id": request_id}
    doc.update(model_name=model, model_version=str(version), outputs=outputs)
    return doc


def error(message: str) -> bytes:
    return orjson.dumps({"error": message})
