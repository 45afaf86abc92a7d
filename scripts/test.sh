#!/usr/bin/env bash
# Run every test (after setting everything up):
#   1. the C++ tests (GoogleTest, under ctest) and the example app examples/cpp, both built out of tree against the
#      installed sepp CMake package (find_package(sepp) + sepp::sepp), as a user's application would be;
#   2. a bounded fuzzing run of the weight-file reader (SEPP_FUZZ_SECONDS, default 60) under ASan and UBSan;
#   3. libsepp and the C++ tests built again under ASan and UBSan (torch uninstrumented) and run (SEPP_SANITIZE=0 skips);
#   4. the Python suite (pytest), which also checks the example app's logits against Python's.
# CUDA tests run where a GPU is present and skip elsewhere. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ "${SEPP_USE_SYSTEM_PYTHON:-0}" == "1" ]]; then PY=${SEPP_PYTHON:-python3}; else PY="$PWD/.venv/bin/python"; export PATH="$PWD/.venv/bin:$PATH"; fi
sepp_dir=$(cd /tmp && "$PY" -c 'import os, sepp; print(os.path.dirname(sepp.__file__))')
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)

echo "== style: ruff (Python), clang-format (C++ and CUDA), as configured in pyproject.toml and .clang-format"
if "$PY" -m ruff --version >/dev/null 2>&1 && command -v clang-format >/dev/null; then
  "$PY" -m ruff check --quiet . && "$PY" -m ruff format --check --quiet . \
    || { echo "style: run \`ruff check --fix . && ruff format .\`" >&2; exit 1; }
  find csrc bench tests/cpp tests/fuzz examples -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \
    | xargs clang-format --dry-run --Werror --style=file \
    || { echo "style: run clang-format -i on the files above" >&2; exit 1; }
else
  echo "   skipped: ruff or clang-format is not installed (requirements-dev.txt has both)"
fi

echo "== C++ tests and the example app, against the installed package in $sepp_dir"
for project in tests/cpp:build/cpp-tests examples/cpp:build/example; do
  src=${project%%:*}; bin=${project##*:}
  cmake -S "$src" -B "$bin" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$sepp_dir" >"$bin.log" 2>&1 \
    || { cat "$bin.log"; exit 1; }
  cmake --build "$bin" >>"$bin.log" 2>&1 || { cat "$bin.log"; exit 1; }
done
ctest --test-dir build/cpp-tests --output-on-failure

echo "== fuzzing the safetensors reader for ${SEPP_FUZZ_SECONDS:=60} s (libFuzzer, AddressSanitizer, UBSan)"
clangxx=$(command -v clang++ || command -v clang++-14)
CXX="$clangxx" cmake -S tests/fuzz -B build/fuzz "${generator[@]}" -DSEPP_FUZZ_SECONDS="$SEPP_FUZZ_SECONDS" \
  -DPython_EXECUTABLE="$(command -v "$PY")" \
  >build/fuzz.log 2>&1 || { cat build/fuzz.log; exit 1; }
cmake --build build/fuzz >>build/fuzz.log 2>&1 || { cat build/fuzz.log; exit 1; }
rc=0
ctest --test-dir build/fuzz -V >build/fuzz-run.log 2>&1 || rc=$?
grep -aE "Done [0-9]+ runs|stat::number_of_executed_units|ERROR|SUMMARY|tests passed|tests failed" build/fuzz-run.log || true
if [[ $rc != 0 ]]; then
  tail -60 build/fuzz-run.log
  echo "fuzzing found a problem: the input that triggered it is in build/fuzz/crash-*" >&2
  exit 1
fi

if [[ "${SEPP_SANITIZE:-1}" != "0" ]]; then
  echo "== sanitizers: libsepp and the C++ tests under AddressSanitizer and UBSan (log: build/asan.log)"
  # Built to be quick on 2 cores (about 3 min instead of 12 with g++, -g and one file at a time): clang (as for the
  # fuzzer), -O1 and line tables only (-g1: stack traces keep their files and lines), and libsepp's unity build
  # (SEPP_UNITY_BUILD, on by default), so that each core parses torch's headers and instantiates their templates once.
  { CXX="$clangxx" cmake -S . -B build/asan "${generator[@]}" -DSEPP_SANITIZE=ON -DSEPP_BUILD_TESTS=ON \
      -DSEPP_BUILD_BENCH=OFF -DSEPP_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
      -DPython_EXECUTABLE="$(command -v "$PY")" \
    && cmake --build build/asan && ctest --test-dir build/asan --output-on-failure; } >build/asan.log 2>&1 \
    || { tail -150 build/asan.log; echo "sanitizers: a report or a failure, see build/asan.log" >&2; exit 1; }
  grep -aE "tests passed|tests failed|Total Test time" build/asan.log
fi

echo "== Python tests"
export SEPP_EXAMPLE_CLASSIFY="$PWD/build/example/classify"
# Run from tests/ so that `import sepp` is the installed package, not the source folder. One pytest-xdist worker per
# core (at most 4: the largest models take 2 GB each). --dist worksteal gives each worker a contiguous half of the
# tests (so module-scoped fixtures, e.g. test_family.py's timm model per name, are mostly built once) and lets an idle
# worker take tests from the other's queue: 584 s here on 2 cores, against 855 s with a file per worker (loadscope).
# SEPP_TEST_WORKERS=0 runs the tests in this process.
cores=$(nproc)
workers=${SEPP_TEST_WORKERS:-$((cores < 4 ? cores : 4))}
xdist=()
if [[ "$workers" != "0" && "$workers" != "1" ]]; then xdist=(-n "$workers" --dist worksteal); fi
cd tests
exec "$PY" -m pytest -q -p no:cacheprovider --durations=25 "${xdist[@]}" "$@" .
