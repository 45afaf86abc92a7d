#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtual environment (.venv) with torch and the build tools, then build and
# install sepp into it (C++ library, CUDA kernels when torch has CUDA and nvcc is found, Python extension, sepp-bench).
# Idempotent: a second run only rebuilds what changed.
#
# SEPP_PYTHON=python3.11   the interpreter for the venv (default: python3)
# SEPP_USE_SYSTEM_PYTHON=1 skip the venv and installs; build with the current python's torch (e.g. a GPU machine with
#                          torch preinstalled and no network)
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages (Debian), for the tests only: GoogleTest for the C++ tests, clang with its libFuzzer/sanitizer
# runtime for fuzzing the weight-file reader. The build itself needs only PyPI packages and a C++ compiler.
need=()
[[ -f /usr/include/gtest/gtest.h ]] || need+=(libgtest-dev)
if ! compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null \
   || ! command -v clang++-14 >/dev/null && ! command -v clang++ >/dev/null; then
  need+=(clang-14 libclang-rt-14-dev)
fi
if ((${#need[@]})); then
  if ! command -v apt-get >/dev/null; then
    echo "sepp setup: please install ${need[*]} (or their equivalents) with your system's package manager" >&2
    exit 1
  fi
  sudo=""
  if [[ $(id -u) != 0 ]]; then sudo="sudo"; fi
  echo "== installing ${need[*]} (apt)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [[ "${SEPP_USE_SYSTEM_PYTHON:-0}" == "1" ]]; then
  PY=${SEPP_PYTHON:-python3}
else
  if [[ ! -x .venv/bin/python ]]; then
    echo "== creating .venv"
    "${SEPP_PYTHON:-python3}" -m venv .venv
  fi
  PY=.venv/bin/python
  stamp=.venv/.sepp-requirements
  if ! cmp -s requirements-dev.txt "$stamp"; then
    echo "== installing requirements-dev.txt into .venv"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -r requirements-dev.txt
    cp requirements-dev.txt "$stamp"
  fi
  export PATH="$PWD/.venv/bin:$PATH"
fi

echo "== building and installing sepp ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
# --no-build-isolation: the extension must link the torch that will run it.
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
"$PY" -m pip install --quiet --no-build-isolation --no-deps .
"$PY" -c "import sepp; print('== sepp', sepp.__version__, sepp.build_info())"
