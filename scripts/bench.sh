#!/usr/bin/env bash
# The main job: set everything up, then compare se_resnet50's inference latency side by side, in one process, on the
# default device (CUDA when a GPU is present, else the CPU): sepp (Python and the C++ sepp-bench executable) against
# the eager reference, timm, torch.compile, ONNX Runtime and OpenVINO. Prints a markdown table; writes JSON and a PNG
# chart under bench/results/. Extra arguments go to `python -m sepp.bench` (e.g. --batch-size 16 --iters 50).
#
# Without a GPU it also builds sepp-bench against the CPU-only torch wheel (scripts/cpu_deploy.sh), so that the
# report gives a CPU deployment's peak memory too. SEPP_CPU_DEPLOY=0 leaves that out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ "${SEPP_USE_SYSTEM_PYTHON:-0}" == "1" ]]; then PY=${SEPP_PYTHON:-python3}; else PY="$PWD/.venv/bin/python"; fi
extra=()
if [[ "${SEPP_CPU_DEPLOY:-1}" != "0" ]] && [[ $("$PY" -c "import torch; print(torch.cuda.is_available())") == False ]]; then
  if exe=$(bash scripts/cpu_deploy.sh | tail -n 1) && [[ -x "$exe" ]]; then
    extra=(--cpu-sepp-bench "$exe")
  else
    echo "== the CPU-only build of sepp-bench failed; its peak memory is left out" >&2
  fi
fi
exec "$PY" -m sepp.bench --model se_resnet50 "${extra[@]}" "$@"
