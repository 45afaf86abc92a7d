#!/usr/bin/env bash
# Run every test (after setting everything up):
#   1. the C++ tests (GoogleTest, under ctest) and the example app examples/cpp, both built out of tree against the
#      installed sepp CMake package (find_package(sepp) + sepp::sepp), as a user's application would be;
#   2. the Python suite (pytest), which also checks the example app's logits against Python's.
# CUDA tests run where a GPU is present and skip elsewhere. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ "${SEPP_USE_SYSTEM_PYTHON:-0}" == "1" ]]; then PY=${SEPP_PYTHON:-python3}; else PY="$PWD/.venv/bin/python"; export PATH="$PWD/.venv/bin:$PATH"; fi
sepp_dir=$(cd /tmp && "$PY" -c 'import os, sepp; print(os.path.dirname(sepp.__file__))')
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)

echo "== C++ tests and the example app, against the installed package in $sepp_dir"
for project in tests/cpp:build/cpp-tests examples/cpp:build/example; do
  src=${project%%:*}; bin=${project##*:}
  cmake -S "$src" -B "$bin" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$sepp_dir" >"$bin.log" 2>&1 \
    || { cat "$bin.log"; exit 1; }
  cmake --build "$bin" >>"$bin.log" 2>&1 || { cat "$bin.log"; exit 1; }
done
ctest --test-dir build/cpp-tests --output-on-failure

echo "== Python tests"
export SEPP_EXAMPLE_CLASSIFY="$PWD/build/example/classify"
# Run from tests/ so that `import sepp` is the installed package, not the source folder.
cd tests
exec "$PY" -m pytest -q -p no:cacheprovider "$@" .
