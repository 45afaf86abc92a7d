#!/usr/bin/env bash
# A CPU deployment of sepp's C++ side: libsepp and sepp-bench built against the CPU-only torch wheel, which maps far
# less memory than the CUDA build that .venv holds. The comparison (scripts/bench.sh) reports this sepp-bench's peak
# memory beside the CUDA build's. Makes .venv-cpu (torch and nlohmann-json only) and build-cpu/; idempotent.
# Prints the executable's path as its last line.
#
# SEPP_CPU_TORCH=...   the pip requirement for torch (default: .venv's torch version with +cpu, else 2.13.0+cpu, the
#                      oldest torch sepp is tested against), looked up on download.pytorch.org/whl/cpu as well
# SEPP_PYTHON=...      the interpreter for the venv (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-cpu
if [[ ! -x $venv/bin/python ]]; then
  echo "== creating $venv" >&2
  "${SEPP_PYTHON:-python3}" -m venv "$venv"
fi
if ! "$venv/bin/python" -W ignore -c "import torch, nlohmann_json" 2>/dev/null; then
  if [[ -n "${SEPP_CPU_TORCH:-}" ]]; then
    specs=("$SEPP_CPU_TORCH")
  else
    main=$(.venv/bin/python -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null || true)
    specs=()
    [[ -n "$main" ]] && specs+=("torch==$main+cpu")
    specs+=("torch==2.13.0+cpu")
  fi
  installed=0
  for spec in "${specs[@]}"; do
    echo "== installing $spec into $venv" >&2
    if "$venv/bin/python" -m pip install --quiet --retries 1 --extra-index-url https://download.pytorch.org/whl/cpu \
      "$spec" nlohmann-json >&2; then
      installed=1
      break
    fi
  done
  if ((!installed)); then
    echo "sepp cpu_deploy: could not install any of: ${specs[*]}" >&2
    exit 1
  fi
fi
"$venv/bin/python" -W ignore -c "import torch; assert not torch.version.cuda, 'not a CPU-only torch: ' + torch.__version__"

# cmake and ninja from .venv (scripts/setup.sh), else from PATH.
cmake=cmake
ninja=ninja
[[ -x .venv/bin/cmake ]] && cmake=$PWD/.venv/bin/cmake
[[ -x .venv/bin/ninja ]] && ninja=$PWD/.venv/bin/ninja
echo "== building sepp-bench against $("$venv/bin/python" -W ignore -c 'import torch; print("torch", torch.__version__)')" >&2
"$cmake" -S . -B build-cpu -G Ninja -DCMAKE_MAKE_PROGRAM="$ninja" -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$PWD/$venv/bin/python" -DSEPP_BUILD_BENCH=ON -DSEPP_BUILD_PYTHON=OFF >/dev/null
"$cmake" --build build-cpu --target sepp-bench --parallel "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" >&2
echo "$PWD/build-cpu/sepp-bench"
