"""The floor of a forward pass on this machine, measured in the comparison's own run: the model's FLOPs (its
convolutions and linear layers) at the rate that one large 1x1 convolution reaches through torch's oneDNN, in each
dtype. No real network runs faster than all its convolutions at that rate, so the ratio of a contender's median to
the floor says how much of the machine it uses."""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from .common import DTYPES, error_line

# The convolution whose rate defines the floor: [16, 1024, 14, 14] -> 1024 channels, 1x1, channels_last (6.6 GFLOP,
# the shape of a ResNet-50 stage-3 bottleneck at batch 16, large enough for oneDNN's best blocking).
FLOOR_CONV = (16, 1024, 1024, 14)


@dataclasses.dataclass
class Floor:
    """One dtype's floor: the probe's shape, its median rate, the model's GFLOP per image and the floor in ms at the
    comparison's batch size (or why it could not be measured)."""

    dtype: str
    status: str  # ok | skipped | failed
    reason: str = ""
    probe: str = ""
    gflop_per_image: Optional[float] = None
    gflops: Optional[float] = None  # the probe's rate, GFLOP/s
    floor_ms: Optional[float] = None
    samples_gflops: List[float] = dataclasses.field(default_factory=list)


def conv_rate(dtype: torch.dtype, shape: Sequence[int] = FLOOR_CONV, reps: int = 5) -> List[float]:
    """GFLOP/s of each of ``reps`` timed calls of a 1x1 convolution of ``shape`` (N, C_in, C_out, H = W) in
    ``dtype``, channels_last, on the CPU (after two untimed calls, which create and cache the oneDNN primitive)."""
    n, c, k, hw = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, hw, hw, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(k, c, 1, 1, generator=gen) / c**0.5).to(dtype).contiguous(memory_format=torch.channels_last)
    flop = 2.0 * n * hw * hw * c * k
    rates = []
    with torch.inference_mode():
        for _ in range(2):
            F.conv2d(x, w)
        for _ in range(reps):
            t0 = time.perf_counter()
            F.conv2d(x, w)
            rates.append(flop / (time.perf_counter() - t0) / 1e9)
    return rates


def measure_floor(args: argparse.Namespace, dtypes: Sequence[str], rounds: int = 3) -> List[Floor]:
    """The floor of ``args.model`` at ``args.batch_size`` and ``args.image_size`` for each of ``dtypes``, the probe's
    rate taken as the median over ``rounds`` rounds (every dtype once a round). CPU only: on CUDA the rate of a
    convolution depends on cuDNN's algorithm choice, and the comparison reports no floor there."""
    from .costs import forward_cost

    out = [Floor(d, "ok") for d in dtypes]
    if args.device != "cpu":
        for f in out:
            f.status, f.reason = "skipped", "measured on the CPU only"
        return out
    gflop = forward_cost(args.model, args.image_size).flops / 1e9
    n, c, k, hw = FLOOR_CONV
    for _ in range(rounds):
        for f in out:
            if f.status != "ok":
                continue
            try:
                f.samples_gflops.extend(round(r, 2) for r in conv_rate(DTYPES[f.dtype]))
            except Exception as e:  # e.g. a dtype this CPU's oneDNN has no convolution for
                f.status, f.reason = "failed", error_line(e)
    for f in out:
        f.probe = f"1x1 convolution [{n}, {c}, {hw}, {hw}] -> {k} channels, channels_last, oneDNN through torch"
        f.gflop_per_image = gflop
        if f.status == "ok":
            f.gflops = statistics.median(f.samples_gflops)
            f.floor_ms = gflop * args.batch_size / f.gflops * 1e3
    return out


def floor_lines(floors: Sequence[Dict[str, Any]], results: Sequence[Dict[str, Any]]) -> List[str]:
    """One line per dtype: the floor and how it was found, then each timed contender's median as a multiple of it."""
    lines = []
    for f in floors:
        if f["status"] != "ok":
            lines.append(f"Floor ({f['dtype']}): not measured ({f['reason'] or f['status']})")
            continue
        rows = sorted(
            (r for r in results if r["dtype"] == f["dtype"] and r["median_ms"] and r["kind"] != "se-overhead"),
            key=lambda r: r["median_ms"],
        )
        of = ", ".join(f"{r['name']} {r['median_ms'] / f['floor_ms']:.2f}×" for r in rows)
        lines.append(
            f"Floor ({f['dtype']}): {f['gflop_per_image']:.2f} GFLOP per image at {f['gflops']:.0f} GFLOP/s "
            f"(a {f['probe']}) = {f['floor_ms']:.2f} ms" + (f"; of the floor: {of}" if of else "")
        )
    return lines
