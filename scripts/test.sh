#!/usr/bin/env bash
# Run every test (after setting everything up): the Python suite (pytest). CUDA tests run where a GPU is present and
# skip elsewhere. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ "${SEPP_USE_SYSTEM_PYTHON:-0}" == "1" ]]; then PY=${SEPP_PYTHON:-python3}; else PY="$PWD/.venv/bin/python"; fi
# Run from tests/ so that `import sepp` is the installed package, not the source folder.
cd tests
exec "$PY" -m pytest -q -p no:cacheprovider "$@" .
