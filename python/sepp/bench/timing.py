"""Setting a contender up, checking its output against sepp's, timing it in rounds, and the statistics of a row."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch

from .common import TOLERANCE, Skip, error_line, is_train, sync
from .contenders import Contender


@dataclasses.dataclass
class Result:
    """One row of the report: a contender's status, its samples and their statistics, and its output check."""

    name: str
    kind: str
    model: str
    dtype: str
    layout: str
    status: str  # ok | skipped | mismatch | failed
    reason: str = ""
    note: str = ""
    setup_s: Optional[float] = None
    times_ms: List[float] = dataclasses.field(default_factory=list)
    median_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    images_per_s: Optional[float] = None
    ratio_to_sepp: Optional[float] = None
    max_abs_diff: Optional[float] = None
    rel_diff: Optional[float] = None
    baseline: bool = False
    compare_to: str = ""


def time_runner(run: Callable[[], Any], device: str, warmup: int, iters: int) -> List[float]:
    """``warmup`` untimed calls of ``run``, then the milliseconds of each of ``iters`` calls (CUDA events on the GPU,
    the wall clock on the CPU)."""
    for _ in range(warmup):
        run()
    sync(device)
    times = []
    for _ in range(iters):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def split_iters(iters: int, rounds: int) -> List[int]:
    """The iterations of each round: ``iters`` spread over ``rounds`` as evenly as they go."""
    return [iters // rounds + (1 if i < iters % rounds else 0) for i in range(rounds)]


def percentile(v: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``v``, interpolated linearly between the two nearest samples."""
    s = sorted(v)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _as_tensor(y: Any) -> torch.Tensor:
    if isinstance(y, torch.Tensor):
        return y.detach().to("cpu", torch.float64)
    import numpy as np

    return torch.from_numpy(np.asarray(y, dtype=np.float64))


def _rerun_external(c: Contender) -> List[float]:
    """A later round of an external contender: runs its program again and returns the new samples."""
    return c.setup()[0]


def prepare(
    c: Contender, args: argparse.Namespace, truth: torch.Tensor, train_truth: Optional[float] = None
) -> Tuple[Result, Any]:
    """Sets a contender up and checks its output against sepp's float32 output (a train contender: its loss of one
    step against sepp's float32 loss, ``train_truth``). Returns its result (status ok, skipped, mismatch or failed)
    and, when ok, what to time: a runner, or for an external contender a callable that runs it once more and returns
    its samples."""
    r = Result(
        c.name, c.kind, c.model, c.dtype, c.layout, "ok", note=c.note, baseline=c.baseline, compare_to=c.compare_to
    )
    t0 = time.perf_counter()
    try:
        made = c.setup()
        if is_train(c.kind):
            made, loss = made
            loss = float(loss)
        elif c.external:
            samples, y = made
            r.times_ms.extend(samples)
            made = functools.partial(_rerun_external, c)
        else:
            y = made()
            sync(args.device)
    except Skip as e:
        r.status, r.reason = "skipped", str(e)
        return r, None
    except Exception as e:  # a contender that breaks must not take the comparison down with it
        r.status, r.reason = "failed", error_line(e)
        return r, None
    r.setup_s = round(time.perf_counter() - t0, 3)
    if is_train(c.kind):
        if train_truth is None:
            r.status, r.reason = "failed", "no float32 loss of sepp to check the loss against"
            return r, None
        diff = abs(loss - train_truth)
        r.max_abs_diff, r.rel_diff = diff, diff / max(abs(train_truth), 1e-30)
        r.note = (r.note + "; " if r.note else "") + f"loss {loss:.6g} (sepp float32: {train_truth:.6g})"
        if not r.rel_diff <= TOLERANCE[c.dtype]:
            r.status = "mismatch"
            r.reason = (
                f"loss of one step {loss:.6g} differs from sepp float32's {train_truth:.6g} by "
                f"{r.rel_diff:.3g} relative (tolerance {TOLERANCE[c.dtype]})"
            )
            return r, None
    elif c.model == args.model:
        y = _as_tensor(y)
        if y.shape != truth.shape:
            r.status, r.reason = "mismatch", f"output shape {tuple(y.shape)}, expected {tuple(truth.shape)}"
            return r, None
        diff = (y - truth).abs().max().item()
        r.max_abs_diff, r.rel_diff = diff, diff / max(truth.abs().max().item(), 1e-30)
        if not r.rel_diff <= TOLERANCE[c.dtype]:
            r.status = "mismatch"
            r.reason = f"output differs from sepp float32 by {r.rel_diff:.3g} relative (tolerance {TOLERANCE[c.dtype]})"
            return r, None
    return r, made


def measure_rounds(prepared: List[Tuple[Contender, Result, Any]], args: argparse.Namespace) -> None:
    """Times every ready contender in ``args.rounds`` rounds, each round running every contender in turn (warm-up,
    then its share of the iterations), so that drift on a shared machine falls on all of them alike."""
    ready = [(c, r, run) for c, r, run in prepared if run is not None]
    for i, n in enumerate(split_iters(args.iters, args.rounds)):
        for c, r, run in ready:
            if c.external:
                if i > 0:  # its first round ran while it was set up
                    r.times_ms.extend(run())
            elif n:
                r.times_ms.extend(round(t, 4) for t in time_runner(run, args.device, args.warmup, n))
    for c, r, run in ready:
        r.median_ms = statistics.median(r.times_ms)
        r.p90_ms = percentile(r.times_ms, 0.9)
        r.images_per_s = args.batch_size * 1e3 / r.median_ms


def add_ratios(results: List[Result]) -> None:
    """ratio_to_sepp = median / the fastest sepp (Python API) median at the same dtype; > 1 means sepp is faster. A
    train step's ratio is to sepp's train step at the same dtype."""
    for r in results:
        base = [
            b.median_ms
            for b in results
            if b.baseline and b.dtype == r.dtype and b.median_ms and is_train(b.kind) == is_train(r.kind)
        ]
        if r.median_ms and base:
            r.ratio_to_sepp = r.median_ms / min(base)
