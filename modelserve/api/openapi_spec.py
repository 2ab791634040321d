"""The REST port described in OpenAPI 3.1: built here as data, served as ``/openapi.json`` (``api.openapi``).

What it covers is what ``api.tfs_rest``, ``api.v2_rest`` and the monitoring routes answer, with the
status codes each can give and the body of each; nothing is generated from the handlers, so a route
added there is added here too (tests/test_openapi.py fuzzes the live server against this description
and sends every example in it).

Examples use ``half_plus_two`` (y = 0.5 x + 2 on float32 of any shape, as ``modelserve demo`` serves
it: version 2) and a version label ``stable`` pointing at version 2. An example's name appears on the
parameters and body of its request and on the answer it gets: the answer's status is the response that
holds the example (200 when none does: an empty body).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .. import __version__
from ..codecs.v2.metadata import EXTENSIONS, SERVER_NAME

JSON = "application/json"
MODEL = "half_plus_two"
LABEL = "stable"
VERSION = 2

_TFS, _V2, _MONITORING, _DOCS = "TensorFlow Serving", "KServe V2", "Monitoring", "Documentation"
_ANY: dict[str, Any] = {}  # any JSON value


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _object(required: Iterable[str] = (), **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


def _array(items: Any) -> dict[str, Any]:
    return {"type": "array", "items": items}


_STRING: dict[str, Any] = {"type": "string"}
_INT64 = {"type": "string", "pattern": "^[0-9]+$", "description": "an int64, written as a string"}

_SCHEMAS: dict[str, Any] = {
    "Error": _object(["error"], error=_STRING),
    # TF Serving: GetModelStatusResponse, GetModelMetadataResponse as its REST layer writes them.
    "ModelStatus": _object(
        ["model_version_status"],
        model_version_status=_array(
            _object(
                ["version", "state", "status"],
                version=_INT64,
                state={"enum": ["START", "LOADING", "AVAILABLE", "UNLOADING", "END"]},
                status=_object(["error_code", "error_message"], error_code=_STRING, error_message=_STRING),
            )
        ),
    ),
    "ModelMetadata": _object(
        ["model_spec", "metadata"],
        model_spec=_object(["name", "version"], name=_STRING, signature_name=_STRING, version=_INT64),
        metadata=_object(["signature_def"], signature_def={"type": "object"}),
    ),
    "ModelInstances": _object(
        ["model_version_instances"],
        model_version_instances=_array(
            _object(
                ["version", "state", "instances"], version=_INT64, state=_STRING, instances=_array({"type": "object"})
            )
        ),
    ),
    "PredictRequest": {
        **_object(signature_name=_STRING, instances=_ANY, inputs=_ANY),
        "description": "Row format (`instances`: a list, one entry per example) or columnar format "
        "(`inputs`: a tensor, or an object of named tensors); exactly one of the two.",
    },
    "PredictResponse": {
        **_object(predictions=_ANY, outputs=_ANY),
        "description": "`predictions` for a row-format request, `outputs` for a columnar one.",
    },
    "ExamplesRequest": _object(
        ["examples"], signature_name=_STRING, context={"type": "object"}, examples=_array({"type": "object"})
    ),
    "ClassifyResponse": _object(
        ["results"],
        results=_array(
            _array({"type": "array", "items": {"type": ["string", "number"]}, "minItems": 2, "maxItems": 2})
        ),
    ),
    "RegressResponse": _object(["results"], results=_array({"type": "number"})),
    # KServe V2 (Triton's JSON).
    "ServerMetadata": _object(
        ["name", "version", "extensions"], name=_STRING, version=_STRING, extensions=_array(_STRING)
    ),
    "TensorMetadata": _object(
        ["name", "datatype", "shape"], name=_STRING, datatype=_STRING, shape=_array({"type": "integer"})
    ),
    "V2ModelMetadata": _object(
        ["name", "versions", "platform", "inputs", "outputs"],
        name=_STRING,
        versions=_array(_STRING),
        platform=_STRING,
        inputs=_array(_ref("schemas", "TensorMetadata")),
        outputs=_array(_ref("schemas", "TensorMetadata")),
    ),
    "InferRequest": _object(
        ["inputs"],
        id=_STRING,
        parameters={
            "type": "object",
            "description": "binary_data_output (bool), version_label, signature_name (string), priority, "
            "timeout (µs); others are ignored, `triton_*` ones refused",
        },
        inputs=_array(
            _object(
                ["name", "datatype", "shape"],
                name=_STRING,
                datatype=_STRING,
                shape=_array({"type": "integer", "minimum": 0}),
                parameters={"type": "object", "description": "binary_data_size: its bytes follow the JSON"},
                data=_ANY,
            )
        ),
        outputs=_array(_object(["name"], name=_STRING, parameters={"type": "object"})),
    ),
    "InferResponse": _object(
        ["model_name", "outputs"],
        id=_STRING,
        model_name=_STRING,
        model_version=_STRING,
        outputs=_array(
            _object(
                ["name", "datatype", "shape"],
                name=_STRING,
                datatype=_STRING,
                shape=_array({"type": "integer"}),
                parameters={"type": "object"},
                data=_ANY,
            )
        ),
    ),
    "RepositoryIndex": _array(
        _object(["name", "state", "reason"], name=_STRING, version=_STRING, state=_STRING, reason=_STRING)
    ),
}

# Answers shared by many routes: {"error": "..."} with the status TF Serving (or Triton) gives.
_ERRORS = {
    400: "The request is malformed or invalid for the model (TF Serving's INVALID_ARGUMENT, FAILED_PRECONDITION)",
    401: "No token or an unknown one (only with --auth_token_file); `WWW-Authenticate: Bearer`",
    403: "The token lacks the scope this route needs (only with --auth_token_file)",
    404: "No such model, version or label",
    405: "The route exists, the method does not",
    413: "The body (or what it costs in memory) is over its limit (--rest_api_max_body_bytes, the memory budget)",
    429: "The server's memory budget or a batch queue is full: try again later",
    500: "A fault in the server or the model's runtime (its text is in the log)",
    501: "Not supported by this server (e.g. model management switched off: --enable_management_api=false)",
    503: "The model's version is unloading or the server is stopping",
    504: "The request's deadline passed (--rest_api_timeout_in_ms)",
}
_RESPONSES: dict[str, dict[str, Any]] = {
    str(code): {"description": text, "content": {JSON: {"schema": _ref("schemas", "Error")}}}
    for code, text in _ERRORS.items()
}

# The error answers of each kind of route (401 / 403 are added to the routes that need a token).
_READ_ERRORS = (400, 404)
_INFER_ERRORS = (400, 404, 413, 429, 500, 503, 504)
_V2_READ_ERRORS = (400, 404, 405)
_ADMIN_ERRORS = (400, 404, 405, 413, 500, 501)

_PARAMETERS: dict[str, Any] = {
    "model_name": {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}},
    "version": {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    },
    "label": {"name": "label", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}},
}


@dataclass(frozen=True)
class Example:
    """A request that a server serving ``half_plus_two`` answers with ``status`` (and ``answer``)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    body: Any = None
    status: int = 200
    answer: Any = None


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    answer: dict[str, Any]  # the 200 response
    errors: tuple[int, ...] = ()
    body: dict[str, Any] | None = None  # the request body's schema (JSON)
    examples: tuple[Example, ...] = ()
    scope: str | None = "infer"  # the token scope it needs; None: open
    extra: dict[str, Any] = field(default_factory=dict)  # merged into the operation
    binary: bool = False  # the body may be V2's binary tensor data too


_BINARY = (
    "JSON (InferRequest), or Triton's binary tensor data extension: the JSON header, then each binary input's "
    "bytes in order, `Inference-Header-Content-Length` saying where the JSON ends (0: the whole body is the "
    "model's one input, the raw form). docs/v2.md."
)
_HEADER_LENGTH = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "description": "With a binary body: the length of its JSON header (binary tensor data extension)",
    "schema": {"type": "integer", "minimum": 0},
}


def _answer(description: str, schema: str | dict[str, Any], media: str = JSON) -> dict[str, Any]:
    """A 200 response; ``schema`` names one of ``_SCHEMAS`` or is one."""
    return {
        "description": description,
        "content": {media: {"schema": _ref("schemas", schema) if isinstance(schema, str) else schema}},
    }


def _empty(description: str) -> dict[str, Any]:
    return {"description": description}


def _ex(name: str, body: Any = None, status: int = 200, answer: Any = None, model: str = MODEL) -> Example:
    return Example(name, {"model_name": model}, body, status, answer)


# A model's version in a path: (where {spec} is, what the summary adds, the parameter it needs).
_FORMS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("", "", {}),
    ("/versions/{version}", " (a version)", {"version": VERSION}),
    ("/labels/{label}", " (a version label)", {"label": LABEL}),
)


def _spelled(route: Route, latest_only: tuple[Example, ...] = (), labels: bool = True) -> list[Route]:
    """``route`` in each spelling of a model's version: the latest, ``/versions/{version}`` and (``labels``)
    ``/labels/{label}``, where ``{spec}`` is in its path; each example gains the form's parameter."""
    spelled = []
    for spec, form, params in _FORMS[: 3 if labels else 2]:
        examples = tuple(replace(e, params={**e.params, **params}) for e in route.examples)
        spelled.append(
            replace(
                route,
                path=route.path.replace("{spec}", spec),
                summary=route.summary + form,
                examples=examples + (latest_only if not spec else ()),
            )
        )
    return spelled


_STATUS = {
    "model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
}
_PREDICT = (
    _ex("row", {"instances": [1.0, 2.0, 5.0]}, 200, {"predictions": [2.5, 3.0, 4.5]}),
    _ex("columnar", {"inputs": {"x": [[1.0], [2.0]]}}, 200, {"outputs": [[2.5], [3.0]]}),
    _ex(
        "bad_signature",
        {"signature_name": "nope", "instances": [1.0]},
        400,
        {"error": 'Serving signature name: "nope" not found in signature def'},
    ),
)
_NOT_SERVED = _ex(
    "unknown_model",
    {"instances": [1.0]},
    404,
    {"error": "Servable not found for request: Latest(no_such_model)"},
    "no_such_model",
)


def _tfs_routes() -> list[Route]:
    """TF Serving's ``/v1`` (and modelserve's ``/instances``), each in its three spellings."""
    model = "/v1/models/{model_name}{spec}"
    examples = _ref("schemas", "ExamplesRequest")
    return [
        *_spelled(
            Route(
                "get",
                model,
                "Model status",
                _answer("Every version's state (TF Serving ignores a label here)", "ModelStatus"),
                _READ_ERRORS,
                examples=(_ex("status", answer=_STATUS),),
            )
        ),
        *_spelled(
            Route(
                "get",
                model + "/metadata",
                "Model metadata: its signatures",
                _answer("GetModelMetadataResponse", "ModelMetadata"),
                _READ_ERRORS,
                examples=(_ex("metadata"),),
            )
        ),
        *_spelled(
            Route(
                "get",
                model + "/instances",
                "modelserve's: where each version's instances run, their memory",
                _answer("Per version, its instances (docs/gpu.md)", "ModelInstances"),
                _READ_ERRORS,
                examples=(_ex("instances"),),
            )
        ),
        *_spelled(
            Route(
                "post",
                model + ":predict",
                "Predict",
                _answer("The outputs, in the request's format", "PredictResponse"),
                _INFER_ERRORS,
                _ref("schemas", "PredictRequest"),
                _PREDICT,
            ),
            (_NOT_SERVED,),
        ),
        *_spelled(
            Route(
                "post",
                model + ":classify",
                "Classify tf.Examples",
                _answer("Per example, its (label, score) pairs", "ClassifyResponse"),
                _INFER_ERRORS,
                examples,
                (
                    _ex(
                        "classify", {"examples": [{"x": 1.0}, {"x": 3.0}]}, 200, {"results": [[["", 2.5]], [["", 3.5]]]}
                    ),
                ),
            )
        ),
        *_spelled(
            Route(
                "post",
                model + ":regress",
                "Regress tf.Examples",
                _answer("Per example, its value", "RegressResponse"),
                _INFER_ERRORS,
                examples,
                (_ex("regress", {"examples": [{"x": 1.0}]}, 200, {"results": [2.5]}),),
            )
        ),
    ]


def _v2_routes() -> list[Route]:
    """KServe V2's ``/v2`` as Triton answers it (docs/v2.md)."""
    model = "/v2/models/{model_name}{spec}"
    metadata = {
        "name": MODEL,
        "versions": [str(VERSION)],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
    }
    infer = {"id": "1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1.0, 2.0, 5.0]}]}
    output = {"name": "y", "datatype": "FP32", "shape": [3], "data": [2.5, 3.0, 4.5]}
    inferred = {"id": "1", "model_name": MODEL, "model_version": str(VERSION), "outputs": [output]}
    infer_answer = {
        "description": "The outputs; with binary outputs the body is their JSON header then their bytes "
        "(`application/octet-stream`, `Inference-Header-Content-Length` says where the JSON ends)",
        "content": {JSON: {"schema": _ref("schemas", "InferResponse")}, "application/octet-stream": {}},
    }
    server = {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}
    index = [{"name": MODEL, "version": str(VERSION), "state": "READY", "reason": ""}]
    unknown = {"error": "Model no_such_model is not in the model config"}
    return [
        Route(
            "get",
            "/v2",
            "Server metadata",
            _answer("Name, version, extensions", "ServerMetadata"),
            (405,),
            examples=(Example("server", answer=server),),
        ),
        Route(
            "get",
            "/v2/health/live",
            "Liveness: 200 while the process serves",
            _empty("Live (empty body)"),
            (405,),
            scope=None,
        ),
        Route(
            "get",
            "/v2/health/ready",
            "Readiness: every configured model has an AVAILABLE version",
            _empty("Ready (empty body)"),
            (405,),
            scope=None,
            extra={"responses": {"400": _empty("Not ready (Triton's code; empty body)")}},
        ),
        *_spelled(
            Route(
                "get",
                model,
                "Model metadata",
                _answer("Its serving signature as V2 tensors", "V2ModelMetadata"),
                _V2_READ_ERRORS,
                examples=(_ex("metadata", answer=metadata),),
            ),
            labels=False,
        ),
        *_spelled(
            Route(
                "get",
                model + "/ready",
                "Model readiness",
                _empty("Ready (empty body)"),
                _V2_READ_ERRORS,
                examples=(_ex("ready"),),
            ),
            (_ex("unknown_model", None, 400, {"error": "Model version not ready"}, "no_such_model"),),
            labels=False,
        ),
        *_spelled(
            Route(
                "post",
                model + "/infer",
                "Infer",
                infer_answer,
                (*_INFER_ERRORS, 405, 501),
                _ref("schemas", "InferRequest"),
                (_ex("infer", infer, 200, inferred),),
                extra={"parameters": [_HEADER_LENGTH]},
                binary=True,
            )
        ),
        Route(
            "post",
            "/v2/repository/index",
            "The models and their states",
            _answer("One row per model version", "RepositoryIndex"),
            _ADMIN_ERRORS,
            _object(ready={"type": "boolean"}),
            (Example("index", {}, {"ready": True}, 200, index),),
            scope="admin",
        ),
        Route(
            "post",
            "/v2/repository/models/{model_name}/load",
            "Load a model of the model config (again)",
            _empty("Loaded (empty body)"),
            _ADMIN_ERRORS,
            _object(parameters={"type": "object", "maxProperties": 0}),
            (_ex("load", {}),),
            scope="admin",
        ),
        Route(
            "post",
            "/v2/repository/models/{model_name}/unload",
            "Unload a model",
            _empty("Unloaded (empty body)"),
            _ADMIN_ERRORS,
            _object(parameters=_object(unload_dependents={"type": "boolean"})),
            (_ex("unknown_model", {}, 404, unknown, "no_such_model"),),
            scope="admin",
        ),
    ]


def _monitoring_routes() -> list[Route]:
    """This issue's routes (each part's owner serves its own; open without a token) and the description's own."""
    text = {"type": "string"}
    not_ready = _empty("Not ready: a configured model has no AVAILABLE version, or draining")
    return [
        Route(
            "get",
            "/metrics",
            "modelserve's metrics, Prometheus text format (--enable_metrics, --metrics_port)",
            _answer("The metrics (prometheus-client's exposition, with HELP lines)", text, "text/plain"),
            scope=None,
        ),
        Route(
            "get",
            "/monitoring/prometheus/metrics",
            "TF Serving's metrics (--monitoring_config_file: prometheus_config's path)",
            _answer("TF Serving's exposition", text, "text/plain"),
            scope=None,
        ),
        Route("get", "/healthz", "Liveness probe", _empty("The process serves"), scope=None),
        Route(
            "get",
            "/readyz",
            "Readiness probe (false from the start of a drain)",
            _empty("Ready"),
            scope=None,
            extra={"responses": {"503": not_ready}},
        ),
        Route(
            "get",
            "/dashboard",
            "The live dashboard (--enable_dashboard)",
            _answer("The page", text, "text/html"),
            scope=None,
        ),
        Route("get", "/openapi.json", "This description", _answer("OpenAPI 3.1", {"type": "object"}), scope=None),
        Route(
            "get",
            "/docs",
            "This description, rendered (Swagger UI, served from the package)",
            _answer("The page", text, "text/html"),
            scope=None,
        ),
    ]


def routes() -> list[Route]:
    """Every route on the REST port, in the order the description lists them."""
    return [*_tfs_routes(), *_v2_routes(), *_monitoring_routes()]


def _tag(path: str) -> str:
    if path.startswith("/v1/"):
        return _TFS
    if path.startswith("/v2"):
        return _V2
    return _DOCS if path in ("/openapi.json", "/docs") else _MONITORING


def _operation(route: Route) -> dict[str, Any]:
    extra = dict(route.extra)
    op: dict[str, Any] = {
        "tags": [_tag(route.path)],
        "summary": route.summary,
        "operationId": "".join(c if c.isalnum() else "_" for c in f"{route.method}{route.path}").strip("_"),
        "parameters": [_parameter(name, route.examples) for name in _path_names(route.path)]
        + extra.pop("parameters", []),
        "responses": _responses(route),
        "security": [] if route.scope is None else [{"bearer": []}],
    }
    if route.scope is not None:
        op["description"] = f"Needs a token with the `{route.scope}` scope when the server has --auth_token_file."
    if route.body is not None:
        content: dict[str, Any] = {JSON: {"schema": route.body}}
        examples = {e.name: {"value": e.body} for e in route.examples if e.body is not None}
        if examples:
            content[JSON]["examples"] = examples
        body = {"required": route.path.startswith("/v1/"), "content": content}
        if route.binary:
            content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
            body["description"] = _BINARY
        op["requestBody"] = body
    if not op["parameters"]:
        del op["parameters"]
    op["responses"].update(extra.pop("responses", {}))
    return {**op, **extra}


def _path_names(path: str) -> list[str]:
    return [part.split("}")[0] for part in path.split("{")[1:]]


def _parameter(name: str, examples: Iterable[Example]) -> dict[str, Any]:
    found = {e.name: {"value": e.params[name]} for e in examples if name in e.params}
    return {**_PARAMETERS[name], "examples": found} if found else dict(_PARAMETERS[name])


def _responses(route: Route) -> dict[str, Any]:
    codes = (*route.errors, *((401, 403) if route.scope is not None else ()))
    responses: dict[str, Any] = {"200": route.answer, **{str(c): _ref("responses", str(c)) for c in sorted(codes)}}
    for example in route.examples:
        if example.answer is None:
            continue
        key = str(example.status)
        response: dict[str, Any] = _RESPONSES[key] if "$ref" in responses[key] else responses[key]
        media = dict(response["content"][JSON])
        media["examples"] = {**media.get("examples", {}), example.name: {"value": example.answer}}
        responses[key] = {**response, "content": {**response["content"], JSON: media}}
    return responses


def build() -> dict[str, Any]:
    """The description, without ``servers`` (``api.openapi`` adds the one a request came to)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes():
        paths.setdefault(route.path, {})[route.method] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modelserve REST API",
            "version": __version__,
            "description": "TensorFlow Serving's REST API (`/v1`), KServe V2's (`/v2`), and modelserve's monitoring "
            "routes, all on `--rest_api_port`. Every request may carry `x-request-id` (returned on the answer). "
            "Examples use `half_plus_two` as `modelserve demo` serves it, with a version label `stable` -> 2.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [{"name": t} for t in (_TFS, _V2, _MONITORING, _DOCS)],
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "responses": _RESPONSES,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token of --auth_token_file (scopes `infer` and `admin`; docs/security.md). "
                    "Without that flag no token is needed; routes marked open never need one.",
                }
            },
        },
    }
