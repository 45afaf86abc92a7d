"""Where the optimized CPU model's time goes: oneDNN's own execution time of its primitives (from oneDNN's verbose
log) against the wall time of the same forwards, and what one call through ATen's fused convolution costs beside the
kernel it runs.

    .venv/bin/python scripts/onednn_share.py                         # se_resnet50, float32, batch 1, 224x224
    .venv/bin/python scripts/onednn_share.py --dtype bfloat16 --batch-size 16

The gap between the two totals is everything outside oneDNN's kernels: sepp's SE kernels, the pool and head, and the
per-call cost of reaching oneDNN through ATen (descriptors, attributes, allocations, the primitive cache). The last
lines time a convolution too small to cost anything itself (16 channels, 4x4 pixels), so its time per call is that
per-call cost.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import sys
import tempfile
import time

import torch

import sepp


def _verbose_exec_ms(path: str) -> collections.Counter:
    """Execution time (ms) per primitive kind from oneDNN's verbose lines ('onednn_verbose,...,exec,...,<ms>')."""
    per_kind: collections.Counter = collections.Counter()
    with open(path) as f:
        for line in f:
            fields = line.strip().split(",")
            if line.startswith("onednn_verbose") and "exec" in fields[:5]:
                per_kind[fields[5]] += float(fields[-1])
    return per_kind


@contextlib.contextmanager
def _stdout_to(path: str):
    """oneDNN writes its verbose lines to the process's stdout (fd 1): send fd 1 to `path` meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(fd)
        os.close(saved)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="se_resnet50")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    shape = [a.batch_size, 3, a.image_size, a.image_size]
    o = sepp.optimize_for_inference(sepp.create_model(a.model).eval(), dtype=dtype, input_size=shape)
    x = torch.randn(shape).to(dtype)
    with torch.inference_mode(), tempfile.TemporaryDirectory() as tmp:
        for _ in range(5):
            o(x)
        log = os.path.join(tmp, "verbose.txt")
        with _stdout_to(log), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            start = time.perf_counter()
            for _ in range(a.iters):
                o(x)
            wall = (time.perf_counter() - start) / a.iters * 1e3
        per_kind = _verbose_exec_ms(log)
    inside = sum(per_kind.values()) / a.iters
    out = io.StringIO()
    print(f"{a.model} {a.dtype} batch {a.batch_size}, {a.image_size}x{a.image_size}, {a.threads} threads:", file=out)
    print(f"  wall {wall:.2f} ms a forward (verbose on); inside oneDNN's primitives {inside:.2f} ms", file=out)
    for kind, ms in per_kind.most_common():
        print(f"    {kind:14} {ms / a.iters:8.2f} ms", file=out)
    print(f"  outside them: {wall - inside:.2f} ms ({(wall - inside) / wall:.0%})", file=out)

    c = 16
    xs = torch.randn(1, c, 4, 4).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, c, 1, 1)
    packed = torch._C._nn.mkldnn_reorder_conv2d_weight(w.to_mkldnn(), [0, 0], [1, 1], [1, 1], 1, list(xs.shape))
    conv = torch.ops.mkldnn._convolution_pointwise
    with torch.inference_mode():
        call = lambda: conv(xs, packed, torch.zeros(c), [0, 0], [1, 1], [1, 1], 1, "relu", [], None)  # noqa: E731
        for _ in range(500):
            call()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(2000):
                call()
            best = min(best, (time.perf_counter() - start) / 2000 * 1e6)
    print(f"  one call of mkldnn::_convolution_pointwise on [1, {c}, 4, 4]: {best:.1f} us (from Python)", file=out)
    print(out.getvalue(), end="")


if __name__ == "__main__":
    main()
