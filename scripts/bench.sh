#!/usr/bin/env bash
# The main job: set everything up, then measure se_resnet50's inference latency with sepp-bench on the default device
# (CUDA when a GPU is present, else the CPU). Extra arguments go to sepp-bench (e.g. --batch-size 1,8 --iters 50).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ "${SEPP_USE_SYSTEM_PYTHON:-0}" == "1" ]]; then PY=${SEPP_PYTHON:-python3}; else PY="$PWD/.venv/bin/python"; fi
device=$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
bench="$(dirname "$PY")/sepp-bench"
[[ -x "$bench" ]] || bench="$PY -m sepp._cli"
exec $bench --model se_resnet50 --device "$device" --batch-size 1,8 "$@"
