#!/usr/bin/env bash
# On the GPU machine (an H100 with python3 3.12, torch and onnxruntime, no package index): install the
# wheels carried in ./.whl/ (scripts/gpu_wheels.sh), run the GPU tests and the GPU benchmark, and put
# everything under $OUT. See docs/gpu.md. GPU_BENCH_ARGS adds arguments to benchmarks/gpu.py.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/.gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # the checkout itself, not installed

{
  nvidia-smi -L
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
  "$PY" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "onnxruntime", "numpy", "grpc", "google.protobuf", "orjson", "httptools",
             "google_crc32c", "ml_dtypes", "fsspec", "uvloop", "onnx", "pytest"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as exc:
        print(name, "MISSING:", type(exc).__name__, exc)
import onnxruntime, torch
print("onnxruntime providers", onnxruntime.get_available_providers())
print("torch cuda", torch.cuda.is_available(), torch.cuda.device_count(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
  "$PY" -c "import modelserve.server; from modelserve import devices; print('modelserve imports; GPUs:', devices.detect())"
} 2>&1 | tee "$OUT/env.txt"

status=0
# The GPU tests, then this feature's CPU-side tests on the same machine (fallbacks, instances).
"$PY" -m pytest -m gpu -rs -v -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/pytest_gpu.txt" || status=1
"$PY" -m pytest -q -rs -p no:cacheprovider tests/test_instances.py tests/test_placement.py 2>&1 \
  | tee "$OUT/pytest_cpu_side.txt" || status=1

# shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of arguments
"$PY" benchmarks/gpu.py --out "$OUT/gpu_bench.json" ${GPU_BENCH_ARGS:-} 2>&1 | tee "$OUT/gpu_bench.txt" || status=1
exit $status
