#!/usr/bin/env bash
# The GPU checks, for a machine with a CUDA GPU, torch preinstalled and no network (the `device` tool's machines):
# builds sepp from source against that machine's torch, runs the CUDA tests and compute-sanitizer memcheck on the CUDA
# op tests, then the side-by-side comparison (bf16 and float32, channels_last) with the SE kernels and training steps.
# Logs and reports go to $OUT (default build/gpu).
#
#   bash scripts/gpu_check.sh prepare        # here, with network: fetches the nlohmann-json wheel into .deps/ (ignored)
#   bash scripts/gpu_check.sh build          # there: TORCH_CUDA_ARCH_LIST defaults to the GPU's own architecture
#   bash scripts/gpu_check.sh test           # there: pytest -m cuda, then memcheck on the SE op tests -m cuda
#   bash scripts/gpu_check.sh bench BATCH    # there: python -m sepp.bench at that batch (1: latency, 256: throughput)
#   bash scripts/gpu_check.sh all            # there: build, test, bench 1, bench 256 (more than 10 minutes)
#
# With the device tool, carry .deps and run one stage per call, e.g.
#   run(command="bash scripts/gpu_check.sh build && bash scripts/gpu_check.sh test", carry=[".deps"])
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/build/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${SEPP_PYTHON:-python3}
stage=${1:-all}

prepare() {
  # nlohmann-json (header-only) is the one build requirement the GPU machine may lack: its PyPI wheel, carried over.
  rm -rf .deps && mkdir -p .deps
  "$PY" -m pip download --quiet --no-deps --dest .deps nlohmann-json
  du -sh .deps
}

build() {
  local arch
  arch=$("$PY" -c 'import torch; p = torch.cuda.get_device_capability(); print(f"{p[0]}.{p[1]}")') || return 1
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$arch}
  export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
  if ! "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("nlohmann_json") is None)'; then
    "$PY" -m pip install --quiet --no-deps --no-index .deps/nlohmann_json-*.whl || return 1
  fi
  echo "== building sepp for sm_${TORCH_CUDA_ARCH_LIST} with $("$PY" -c 'import torch; print(torch.__version__)')"
  local t0=$SECONDS
  "$PY" -m pip install -v --no-build-isolation --no-deps . >"$OUT/build.log" 2>&1 \
    || { tail -80 "$OUT/build.log"; return 1; }
  echo "   built in $((SECONDS - t0)) s"
  (cd /tmp && "$PY" -c 'import sepp; print("== sepp", sepp.__version__, sepp.build_info())') | tee "$OUT/build_info.txt"
}

run_tests() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
  echo "== pytest -m cuda"
  (cd tests && "$PY" -m pytest -q -p no:cacheprovider -m cuda . 2>&1) | tee "$OUT/pytest_cuda.log" | tail -25
  local rc=${PIPESTATUS[0]}
  echo "== compute-sanitizer memcheck on the CUDA op tests (caching allocator off)"
  (cd tests && PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 3 \
     "$PY" -m pytest -q -p no:cacheprovider -m cuda -x test_se_scale.py test_se_squeeze.py test_se_excite.py 2>&1) >"$OUT/memcheck.log"
  local mc=$?
  grep -E "ERROR SUMMARY|passed|failed" "$OUT/memcheck.log" | tail -5
  return $((rc != 0 || mc != 0))
}

bench() {
  local batch=${1:-1}
  local extra=()
  [[ $batch -ge 64 ]] && extra=(--train)
  echo "== comparison at batch $batch"
  "$PY" -m sepp.bench --device cuda --batch-size "$batch" --dtypes bfloat16,float32 --kernels "${extra[@]}" \
    --output-dir "$OUT/results" 2>&1 | tee "$OUT/bench_b$batch.log"
  return "${PIPESTATUS[0]}"
}

case "$stage" in
  prepare) prepare ;;
  build) build ;;
  test) run_tests ;;
  bench) bench "${2:-1}" ;;
  all) build && run_tests; bench 1; bench 256 ;;
  *) echo "usage: gpu_check.sh prepare|build|test|bench BATCH|all" >&2; exit 2 ;;
esac
