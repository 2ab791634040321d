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
# torch first, pinned, so that a CPU build wins where pip can see one (2.13.0+cpu satisfies ==2.13.0:
# a find-links folder, or PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu); elsewhere pip takes
# PyPI's CUDA build of the same release (gigabytes, and it runs on a CPU too). The suite also passes on
# torch 2.14 (checked by hand; see docs/platforms.md).
pip install -q "torch==2.13.0"
pip install -q -e ".[dev,test,bench,tensorflow,torch,tflite,convert,otel]"

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
