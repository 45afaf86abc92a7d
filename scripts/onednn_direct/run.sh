#!/usr/bin/env bash
# Per-convolution cost of sepp's way into oneDNN (ATen's fused convolution, from torch's bundled oneDNN) against a
# system oneDNN called directly (Debian's libdnnl-dev), on se_resnet50's convolution shapes. Needs libdnnl-dev
# (apt-get install libdnnl-dev) and .venv (scripts/setup.sh). Arguments: threads (default 2), calls (default 300).
#
# Both libraries name libgomp.so.1, so they run on one OpenMP runtime. This is a measurement for the decision on a
# direct oneDNN path, not part of the build.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ -f /usr/include/oneapi/dnnl/dnnl.hpp ]] || { echo "onednn_direct: needs libdnnl-dev (apt-get install libdnnl-dev)" >&2; exit 1; }
torch_dir=$(.venv/bin/python -c "import torch, os; print(os.path.dirname(torch.__file__))")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
src=scripts/onednn_direct
g++ -O2 -std=c++17 -c "$src/direct.cpp" -o "$out/direct.o"
g++ -O2 -std=c++20 -c "$src/aten.cpp" -o "$out/aten.o" -I"$torch_dir/include" -I"$torch_dir/include/torch/csrc/api/include" -Icsrc \
  -D_GLIBCXX_USE_CXX11_ABI=1
g++ "$out/aten.o" "$out/direct.o" -o "$out/onednn_direct" -L"$torch_dir/lib" -Wl,-rpath,"$torch_dir/lib" \
  -Wl,--no-as-needed -ltorch_cpu -lc10 -Wl,--as-needed -ldnnl
"$out/onednn_direct" "$@"
