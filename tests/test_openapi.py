"""``/openapi.json`` and ``/docs`` on a live server: the description is valid OpenAPI, every example in it is
answered as it says, a bounded fuzz (schemathesis) finds only documented answers, and both pages are open.

Routes another part of the server adds (``/metrics``, ``/healthz``, ``/dashboard``, ...) are described
already; where this build does not serve one yet (an HTML 404 from the router), its checks are skipped
with a note, and run once it is served.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import hypothesis
import pytest
import schemathesis
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from modelserve.api import openapi_spec
from modelserve.testing import ServerThread, running_server

from . import onnx_models as om

_FUZZ_SECONDS = 60.0  # the whole fuzz's cap: cases after it are not sent
_EXAMPLES_PER_OPERATION = 12
_TOKEN = "openapi-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``half_plus_two`` as ``modelserve demo`` serves it (version 2 of 1 and 2) plus the label ``stable``."""
    root = tmp_path_factory.mktemp("models")
    om.write(root / "half_plus_two", 1, om.half_plus_two())
    om.write(root / "half_plus_two", 2, om.half_plus_two())
    path = root / "models.config"
    path.write_text(
        f'model_config_list {{ config {{ name: "half_plus_two" base_path: "{root / "half_plus_two"}" '
        'model_platform: "onnx" version_labels { key: "stable" value: 2 } } }\n'
    )
    return path


@pytest.fixture(scope="module")
def server(config: Path) -> Iterator[ServerThread]:
    with running_server(f"--model_config_file={config}") as s:
        yield s


def call(
    server: ServerThread, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def spec(server: ServerThread) -> dict[str, Any]:
    status, content_type, body = call(server, "GET", "/openapi.json")
    assert (status, content_type) == (200, "application/json")
    doc: dict[str, Any] = json.loads(body)
    return doc


def not_served(server: ServerThread, spec: dict[str, Any], headers: dict[str, str] | None = None) -> set[str]:
    """The described paths without parameters this build does not serve yet (the router's HTML 404)."""
    missing = set()
    for path in spec["paths"]:
        if "{" not in path:
            status, content_type, _ = call(server, "GET", path, None, headers)
            if status == 404 and content_type.startswith("text/html"):
                missing.add(path)
    return missing


@pytest.fixture(scope="module")
def missing(server: ServerThread, spec: dict[str, Any]) -> set[str]:
    return not_served(server, spec)


def skip_unserved(path: str, missing: set[str]) -> None:
    if path in missing:
        pytest.skip(f"{path} is described but not served by this build yet (its part of issue 19 is not merged)")


# ---- the description -------------------------------------------------------------------------


def test_the_description_is_valid_openapi(server: ServerThread, spec: dict[str, Any]) -> None:
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    assert spec["servers"] == [{"url": f"http://127.0.0.1:{server.server.rest_port}"}]  # from the Host header
    assert spec == {**openapi_spec.build(), "servers": spec["servers"]}


def test_every_route_of_the_front_ends_is_described(spec: dict[str, Any]) -> None:
    described = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    for form in ("", "/versions/{version}", "/labels/{label}"):
        base = "/v1/models/{model_name}" + form
        assert {("GET", base), ("GET", base + "/metadata"), ("GET", base + "/instances")} <= described
        assert {("POST", f"{base}:{verb}") for verb in ("predict", "classify", "regress")} <= described
        assert ("POST", f"/v2/models/{{model_name}}{form}/infer") in described
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{model_name}/versions/{version}/ready"):
        assert ("GET", path) in described
    for path in ("/index", "/models/{model_name}/load", "/models/{model_name}/unload"):
        assert ("POST", "/v2/repository" + path) in described
    for path in ("/metrics", "/monitoring/prometheus/metrics", "/healthz", "/readyz", "/dashboard", "/docs"):
        assert ("GET", path) in described


# ---- the examples ---------------------------------------------------------------------------


class Example(NamedTuple):
    name: str
    method: str
    template: str  # the described path
    path: str  # ... with the example's parameters
    body: Any
    status: int
    answer: Any  # None: not compared (an empty body, or none given)


def examples(spec: dict[str, Any]) -> Iterator[Example]:
    """Each example of the description, by its name (``api.openapi_spec``): the parameters and body that
    carry the name make the request; the response that carries it is the answer (none: 200)."""
    for template, item in spec["paths"].items():
        for method, op in item.items():
            parameters = op.get("parameters", [])
            bodies = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("examples", {})
            answers = {
                name: (int(code), example["value"])
                for code, response in op["responses"].items()
                for name, example in response.get("content", {}).get("application/json", {}).get("examples", {}).items()
            }
            names = {n for p in parameters for n in p.get("examples", {})} | set(bodies) | set(answers)
            if not names and "{" not in template:
                names = {""}  # nothing to fill in: the route as it is
            for name in sorted(names):
                path = template
                for p in parameters:
                    if p["in"] == "path":
                        path = path.replace("{" + p["name"] + "}", str(p["examples"][name]["value"]))
                status, answer = answers.get(name, (200, None))
                yield Example(name, method.upper(), template, path, bodies.get(name, {}).get("value"), status, answer)


def test_every_example_is_answered_as_described(server: ServerThread, spec: dict[str, Any], missing: set[str]) -> None:
    sent = 0
    for e in examples(spec):
        if e.template in missing:
            continue
        got, content_type, text = call(
            server, e.method, e.path, None if e.body is None else json.dumps(e.body).encode()
        )
        assert got == e.status, (e, text)
        if e.answer is not None:
            assert content_type == "application/json" and json.loads(text) == e.answer, (e, text)
        sent += 1
    assert sent >= 40  # every route of /v1 and /v2 has one; the count guards the reconstruction above


# ---- the fuzz -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(server: ServerThread, spec: dict[str, Any]) -> Any:
    schema = schemathesis.openapi.from_dict(spec)
    schema.config.update(base_url=server.rest_url)
    return schema


@pytest.fixture(scope="module")
def fuzz_clock() -> list[float]:
    return [time.monotonic()]


# Every described operation, from the package's description (the fuzz reads the live server's).
OPERATIONS = [(method.upper(), path) for path, item in openapi_spec.build()["paths"].items() for method in item]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz(method: str, path: str, api: Any, missing: set[str], fuzz_clock: list[float]) -> None:
    """Generated requests, valid and invalid, get only documented answers: status, content type and body
    as described, and never 500. Bounded: a few derandomized cases per operation, the whole under a cap."""
    skip_unserved(path, missing)
    operation = api[path][method]
    cases = hypothesis.strategies.one_of(
        operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
    )

    @hypothesis.given(cases)
    @hypothesis.settings(
        max_examples=_EXAMPLES_PER_OPERATION,
        derandomize=True,  # the same cases every run
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def fuzz(case: schemathesis.Case) -> None:
        if time.monotonic() - fuzz_clock[0] > _FUZZ_SECONDS:
            return  # the cap is spent: this case is not sent
        response = case.call()
        assert response.status_code != 500, (case.operation.label, response.text[:500])
        case.validate_response(
            response, checks=[status_code_conformance, content_type_conformance, response_schema_conformance]
        )

    fuzz()


# ---- /docs and tokens -----------------------------------------------------------------------


def test_docs_renders_the_description_from_the_package(server: ServerThread) -> None:
    status, content_type, page = call(server, "GET", "/docs")
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    assert b"http://" not in page and b"https://" not in page  # no CDN
    types = {"/docs/swagger-ui-bundle.js": "text/javascript", "/docs/swagger-ui.css": "text/css"}
    types["/docs/init.js"] = "text/javascript"
    for path, media in types.items():
        assert path.encode() in page
        status, content_type, body = call(server, "GET", path)
        assert (status, content_type.split(";")[0]) == (200, media) and len(body) > 0, path
    _, _, init = call(server, "GET", "/docs/init.js")
    assert b'url: "/openapi.json"' in init and b"validatorUrl: null" in init
    assert call(server, "GET", "/docs/")[2] == page
    assert call(server, "GET", "/docs/nothing.js")[0] == 404
    assert call(server, "GET", "/openapi.jsonx")[0] == 404
    assert call(server, "POST", "/openapi.json", b"{}")[0] == 405


def test_the_open_routes_need_no_token_and_the_others_do(config: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{_TOKEN} admin\n")
    with running_server(f"--model_config_file={config}", f"--auth_token_file={tokens}") as server:
        bearer = {"Authorization": f"Bearer {_TOKEN}"}
        status, _, body = call(server, "GET", "/openapi.json")
        assert status == 200
        spec = json.loads(body)
        missing = not_served(server, spec, bearer)
        for e in examples(spec):
            if e.template in missing:
                continue
            got = call(server, e.method, e.path, None if e.body is None else json.dumps(e.body).encode())[0]
            if spec["paths"][e.template][e.method.lower()]["security"] == []:  # described as open
                assert got != 401, e
            elif e.method == "GET":  # (a POST with the token would run: the repository's unload)
                assert got == 401, e
                assert call(server, e.method, e.path, None, bearer)[0] != 401, e
        assert call(server, "GET", "/docs/swagger-ui.css")[0] == 200
