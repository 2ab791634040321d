"""``/openapi.json`` and ``/docs`` on a live server: the description is valid OpenAPI, every example in it is
answered as it says, a bounded fuzz (schemathesis) finds only documented answers, and both pages are open.

Routes another part of the server adds (``/metrics``, ``/healthz``, ``/dashboard``, ...) are described
already; where this build does not serve one yet (an HTML 404 from the router), its checks are skipped
with a note, and run once it is served.
"""

from __future__ import annotations

import http.client
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from openapi_spec_validator import validate

from modelserve.api import openapi_spec
from modelserve.api.auth import is_open_path
from modelserve.testing import ServerThread, running_server

from . import onnx_models as om
from .docs import fenced, section

_FUZZ_SECONDS = 300  # the fuzz's cap (it takes about 15 s): a hang fails the test instead of holding it
DOC = section("observability.md", "The REST API described")
# Every described operation (the fuzz must test each one the server serves).
OPERATIONS = [(method.upper(), path) for path, item in openapi_spec.build()["paths"].items() for method in item]
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


# ---- the doc's commands: the description checked, and the fuzz ------------------------------------


def doc_blocks() -> list[str]:
    """The fenced blocks of docs/observability.md ("The REST API described"), in order."""
    return fenced(DOC)


def doc_command(line: str, server: ServerThread) -> list[str]:
    """A doc line as run here: on the server's port, with this interpreter and its schemathesis."""
    words = shlex.split(line.replace("localhost:8501", f"127.0.0.1:{server.server.rest_port}"))
    if words[0] == "python":
        words[0] = sys.executable
    elif words[0] == "schemathesis":
        words[:1] = [sys.executable, "-m", "schemathesis.cli"]
    return words


def test_the_doc_fetches_the_description_and_validates_it(server: ServerThread, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (scripts/test.sh installs it)")
    outputs = [
        subprocess.run(doc_command(line, server), cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
        for line in doc_blocks()[0].splitlines()
    ]
    assert outputs[-1].stdout.strip() == "openapi.json: OK"
    assert json.loads((tmp_path / "openapi.json").read_text())["paths"] == openapi_spec.build()["paths"]


def test_fuzz(server: ServerThread, missing: set[str], tmp_path: Path) -> None:
    """The doc's schemathesis run, bounded (``--max-examples`` per operation, a fixed seed, deterministic
    generation, and a cap on the whole): every request, valid or not, gets a documented status, content
    type and body, and no 5xx. Routes this build does not serve yet are left out (and named)."""
    (block,) = [b for b in doc_blocks() if b.startswith("schemathesis run")]
    command = doc_command(block.strip(), server) + [f"--exclude-path={path}" for path in sorted(missing)]
    if missing:
        print(f"not fuzzed, not served by this build yet: {', '.join(sorted(missing))}")
    fuzz = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=_FUZZ_SECONDS)
    assert fuzz.returncode == 0, fuzz.stdout[-8000:] + fuzz.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", fuzz.stdout)
    # Every operation served but the one schemathesis read the description from (it leaves that out).
    assert tested is not None and int(tested.group(1)) == len(OPERATIONS) - len(missing) - 1, fuzz.stdout[-3000:]


def test_every_doc_block_is_run() -> None:
    blocks = doc_blocks()
    assert len(blocks) == 2 and blocks[0].startswith("curl") and blocks[1].startswith("schemathesis run")


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


def test_docs_draws_every_operation_in_a_browser(server: ServerThread, tmp_path: Path) -> None:
    """Headless Chromium (scripts/test.sh installs it) loads /docs with no network but the server's."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (scripts/test.sh installs Debian's chromium)")
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}"]
    # Every host but the server's resolves to nothing: the page draws from the package alone (no CDN).
    command += ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=10000"]
    command += ["--dump-dom", f"{server.rest_url}/docs"]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    drawn = re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom)
    assert sorted(drawn) == sorted(path for _, path in OPERATIONS)


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


def test_only_the_open_paths_are_open() -> None:
    assert is_open_path("/openapi.json") and is_open_path("/docs") and is_open_path("/docs/swagger-ui.css")
    assert is_open_path("/v2/health/ready")
    for path in ("/openapi.jsonx", "/docsx", "/v2/health/ready/x", "/v2/health/live/../../models/m/infer", "/v1/"):
        assert not is_open_path(path), path
