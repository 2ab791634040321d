#!/usr/bin/env bash
# Here (a machine with pip and the internet): download the wheels the GPU machine lacks into ./.whl/
# (ignored by git), for CPython 3.12 on x86-64 Linux. scripts/gpu_check.sh installs them there.
# See docs/gpu.md. Usage: scripts/gpu_wheels.sh [EXTRA_SPEC ...]   e.g. 'protobuf==6.33.1'
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python

# What modelserve imports at start-up and the GPU machine's image lacks (its list: docs/gpu.md).
# grpcio-reflection and grpcio-health-checking
# are left out on purpose: they are imported only when present / asked for, and their generated code
# must match the machine's protobuf.
WHEELS=(
  "httptools==0.9.0"
  "orjson==3.13.0"
  "google-crc32c==1.9.0"
)

mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64 manylinux_2_24_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 \
         manylinux_2_35_x86_64; do
  platforms+=(--platform "$p")
done
for spec in "${WHEELS[@]}" "$@"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$spec"
done
ls -l .whl
du -sh .whl
