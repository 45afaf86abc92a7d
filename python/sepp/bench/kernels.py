"""The kernel micro-benchmarks (``--kernels``): sepp's SE operators at the shapes of the model's SE blocks, each
checked against plain torch, timed next to a large ``copy_`` that measures the device's memory bandwidth."""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .common import DTYPES, KERNEL_OPS, TOLERANCE, error_line, sync
from .costs import SEShape, forward_cost, kernel_costs, se_blocks
from .timing import split_iters, time_runner

COPY_MIB = {"cuda": 256, "cpu": 64}  # size of the tensor whose copy measures the memory bandwidth


@dataclasses.dataclass
class KernelResult:
    """One row of the ``kernels`` section: one operator at one shape and dtype, its cost, status and timing."""

    op: str
    shape: List[int]
    rd: int
    dtype: str
    layout: str
    blocks: List[str]  # the SE blocks of the model that have this shape (the op runs once for each)
    bytes: int
    flops: int
    status: str  # ok | skipped | mismatch | failed
    reason: str = ""
    reps: int = 1  # calls per timed sample; times_ms are per call
    times_ms: List[float] = dataclasses.field(default_factory=list)
    median_ms: Optional[float] = None
    gb_per_s: Optional[float] = None
    fraction_of_copy: Optional[float] = None  # gb_per_s / the measured copy bandwidth
    floor_ms: Optional[float] = None  # bytes / the measured copy bandwidth
    rel_diff: Optional[float] = None  # max|y - y_ref| / max|y_ref| against plain torch in float32


def sepp_op(name: str) -> Optional[Callable[..., Any]]:
    """``torch.ops.sepp.<name>``, or None where this build of the extension does not register it. The benchmarks
    look operators up through this module's ``sepp_op`` (tests replace it here)."""
    import sepp  # noqa: F401  (loads the extension, which registers the operators)

    try:
        return getattr(torch.ops.sepp, name)
    except (AttributeError, RuntimeError):
        return None


def _kernel_case(
    fn: Callable[..., Any], op: str, block: SEShape, dtype: str, device: str, seed: int
) -> Tuple[Callable[[], Any], torch.Tensor]:
    """Inputs for one operator at one SE block's shape (activations channels_last), and its expected output from
    plain torch in float32 on the same (rounded) inputs. Returns ``(run, expected)``."""
    g = torch.Generator().manual_seed(seed)
    n, c = block.shape[:2]
    rd = block.rd

    def t(*size: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*size, generator=g) * scale).to(device, DTYPES[dtype])

    def act() -> torch.Tensor:
        return t(*block.shape).contiguous(memory_format=torch.channels_last)

    def f32(v: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return v.float() if v is not None else None

    if op == "se_squeeze":
        x = act()

        def squeeze() -> Any:
            return fn(x, None)

        return squeeze, x.float().mean((2, 3))
    if op == "se_excite":
        z, w1, w2 = t(n, c), t(rd, c, scale=c**-0.5), t(c, rd, scale=rd**-0.5)
        b1, b2 = (t(rd, scale=0.1), t(c, scale=0.1)) if block.bias else (None, None)
        expected = torch.sigmoid(F.linear(F.relu(F.linear(z.float(), w1.float(), f32(b1))), w2.float(), f32(b2)))

        def excite() -> Any:
            return fn(z, w1, b1, w2, b2, "sigmoid")

        return excite, expected
    x, identity, s = act(), act(), torch.sigmoid(t(n, c))
    expected = F.relu(x.float() * s.float()[:, :, None, None] + identity.float())

    def scale() -> Any:
        return fn(x, s, identity, True)

    return scale, expected


def _calls_per_sample(run: Callable[[], Any], device: str, min_ms: float = 1.0, most: int = 1000) -> int:
    """How many back-to-back calls make one timed sample of at least ``min_ms`` (short kernels are timed in a loop,
    so that the timer's resolution and overhead do not dominate)."""
    run()
    sync(device)
    t0 = time.perf_counter()
    run()
    sync(device)
    ms = (time.perf_counter() - t0) * 1e3
    return max(1, min(most, math.ceil(min_ms / max(ms, 1e-6))))


def _repeated(run: Callable[[], Any], reps: int) -> Callable[[], None]:
    def loop() -> None:
        for _ in range(reps):
            run()

    return loop


def _prepare_kernel(r: KernelResult, block: SEShape, args: argparse.Namespace) -> Optional[Callable[[], Any]]:
    """Sets one operator case up and checks its output; sets ``r``'s status and returns what to time (None when it
    is not to be timed)."""
    fn = sepp_op(r.op)
    if fn is None:
        r.status, r.reason = "skipped", f"torch.ops.sepp has no {r.op} (not in this build of the extension)"
        return None
    try:
        run, expected = _kernel_case(fn, r.op, block, r.dtype, args.device, args.seed)
        y = run()
        sync(args.device)
    except Exception as e:  # an operator that breaks must not take the others down with it
        r.status, r.reason = "failed", error_line(e)
        return None
    if not isinstance(y, torch.Tensor) or y.shape != expected.shape:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        r.status, r.reason = "mismatch", f"output shape {got}, expected {tuple(expected.shape)}"
        return None
    r.rel_diff = (y.float() - expected).abs().max().item() / max(expected.abs().max().item(), 1e-30)
    if not r.rel_diff <= TOLERANCE[r.dtype]:
        r.status = "mismatch"
        r.reason = f"output differs from plain torch by {r.rel_diff:.3g} relative (tolerance {TOLERANCE[r.dtype]})"
        return None
    return run


def _se_per_forward(results: List[KernelResult], dtypes: Sequence[str]) -> List[Dict[str, Any]]:
    """Per dtype: the time of each timed operator summed over every SE block of one forward, and its floor."""
    out = []
    for dtype in dtypes:
        ok = [r for r in results if r.dtype == dtype and r.median_ms is not None]
        if ok:
            out.append(
                {
                    "dtype": dtype,
                    "ops": sorted({r.op for r in ok}, key=KERNEL_OPS.index),
                    "measured_ms": sum(len(r.blocks) * r.median_ms for r in ok),
                    "floor_ms": sum(len(r.blocks) * r.floor_ms for r in ok),
                }
            )
    return out


def measure_kernels(args: argparse.Namespace) -> Dict[str, Any]:
    """Times sepp's SE operators at the distinct shapes of the model's SE blocks, in each dtype, next to a large
    ``copy_`` (the device's memory bandwidth, measured in the same rounds). Each operator's output is first checked
    against plain torch; one that the extension lacks is skipped. Returns the report's ``kernels`` section."""
    dev = args.device
    forward = forward_cost(args.model, args.image_size)
    shapes: Dict[Tuple[Any, ...], List[SEShape]] = {}
    for b in se_blocks(args.model, args.image_size, args.batch_size):
        shapes.setdefault((tuple(b.shape), b.rd, b.bias), []).append(b)
    cases: List[Tuple[KernelResult, Optional[Callable[[], Any]]]] = []
    for dtype in args.dtypes:
        for members in shapes.values():
            for cost in kernel_costs(members[0], dtype):
                r = KernelResult(
                    cost.op,
                    cost.shape,
                    cost.rd,
                    dtype,
                    "channels_last",
                    [m.block for m in members],
                    cost.bytes,
                    cost.flops,
                    "ok",
                )
                cases.append((r, _prepare_kernel(r, members[0], args)))
    nbytes = COPY_MIB[dev] * 2**20
    src = torch.empty(nbytes // 4, device=dev).fill_(1.0)
    dst = torch.empty_like(src)

    def copy_src() -> Any:
        return dst.copy_(src)

    copy_times: List[float] = []
    timed = [(copy_times, copy_src)] + [(r.times_ms, run) for r, run in cases if run is not None]
    loops = []
    for samples, run in timed:
        reps = _calls_per_sample(run, dev)
        loops.append((samples, _repeated(run, reps), reps))
    for n in split_iters(args.iters, args.rounds):
        for samples, loop, reps in loops:
            if n:
                samples.extend(round(t / reps, 5) for t in time_runner(loop, dev, args.warmup, n))
    copy_ms = statistics.median(copy_times)
    copy_gbps = 2 * nbytes / copy_ms / 1e6
    for (r, run), (_, _, reps) in zip([c for c in cases if c[1] is not None], loops[1:]):
        r.reps = reps
        r.median_ms = statistics.median(r.times_ms)
        r.gb_per_s = r.bytes / r.median_ms / 1e6
        r.fraction_of_copy = r.gb_per_s / copy_gbps
        r.floor_ms = r.bytes / copy_gbps / 1e6
    results = [r for r, _ in cases]
    return {
        "bandwidth": {
            "op": "copy_",
            "bytes": nbytes,
            "moved_bytes": 2 * nbytes,
            "reps": loops[0][2],
            "times_ms": copy_times,
            "median_ms": copy_ms,
            "gb_per_s": copy_gbps,
        },
        "forward": dataclasses.asdict(forward),
        "results": [dataclasses.asdict(r) for r in results],
        "per_forward": _se_per_forward(results, args.dtypes),
    }
