#!/usr/bin/env bash
# The main job: set everything up, then compare se_resnet50's inference latency side by side, in one process, on the
# default device (CUDA when a GPU is present, else the CPU): sepp (Python and the C++ sepp-bench executable) against
# the eager reference, timm, torch.compile, ONNX Runtime and OpenVINO. Prints a markdown table; writes JSON and a PNG
# chart under bench/results/. Extra arguments go to `python -m sepp.bench` (e.g. --batch-size 16 --iters 50).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ "${SEPP_USE_SYSTEM_PYTHON:-0}" == "1" ]]; then PY=${SEPP_PYTHON:-python3}; else PY="$PWD/.venv/bin/python"; fi
exec "$PY" -m sepp.bench --model se_resnet50 "$@"
