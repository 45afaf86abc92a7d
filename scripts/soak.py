"""Soak test of sepp's inference paths: many calls at batch 1 from several threads at once, every output compared bit
for bit with the first call's, and the process's resident memory (RSS) checked for growth after the warm-up.

    .venv/bin/python scripts/soak.py                  # se_resnet50, 64x64, 10,000 calls per path, 4 threads
    .venv/bin/python scripts/soak.py --model se_resnet18 --calls 2000 --json soak.json

The paths, all on the same weights (random BN statistics) and one fixed input [1, 3, S, S]:

- ``eager``: ``sepp.create_model(name).eval()`` called through its nn.Module face, under ``torch.inference_mode()``;
- ``optimized``: ``sepp.optimize_for_inference(model)``;
- ``cpp``: the C++ module's forward called directly (``model._cpp.forward``, i.e. ``sepp::ResNetImpl::forward``): the
  call the ``sepp-bench`` executable makes, past the Python face;
- ``executable``: ``sepp-bench`` itself, when it is installed: one calling thread, ``--iters`` calls/20 and then calls,
  the growth being the second run's peak RSS over the first's (its wall time: the second run's, the process's start
  included). Its outputs are not compared: sepp-bench has repeat
  counts but one calling thread (its ``--threads`` sets torch's intra-op threads) and writes only the first call's
  output. The concurrent calls of its C++ model are the ``cpp`` path, through the binding, which releases the GIL.

Threads: ``--threads`` Python threads call at once (each in its own inference mode: the mode is per thread). Torch's
intra-op pool is set to ``--intra-op-threads`` for the run (default 1: each caller runs its ops serially, so the
callers use ``--threads`` cores between them) and restored after.

Memory: VmRSS from /proc/self/status (Linux), read after the warm-up (the first ``--warmup-fraction`` of the calls,
default 5%), at the end, and every calls/50 calls (the peak). Exit status: 0 when every output of every path equals
its first one, no call raised and no path's RSS grew by more than ``--max-growth-mib`` (default 32) or
``--max-growth-pct`` (default 5) of its warm-up RSS, whichever is larger; 1 otherwise; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

PATHS = ["eager", "optimized", "cpp", "executable"]


def rss_mib() -> float:
    """This process's resident set size in MiB (nan where /proc/self/status has none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return math.nan


def _differs(y: Any, want: torch.Tensor) -> Optional[str]:
    """None when ``y`` is bit for bit ``want``, else how it differs."""
    if not isinstance(y, torch.Tensor):
        return f"got a {type(y).__name__}, not a tensor"
    if y.shape != want.shape or y.dtype != want.dtype:
        return f"got {tuple(y.shape)} {y.dtype}, first call {tuple(want.shape)} {want.dtype}"
    if torch.equal(y, want):
        return None
    return f"max |difference| {float((y.double() - want.double()).abs().max()):.3g}"


def growth(warm: float, end: float) -> Dict[str, float]:
    return {"growth_mib": end - warm, "growth_pct": 100.0 * (end - warm) / warm if warm > 0 else math.nan}


def soak(
    fn: Callable[[torch.Tensor], Any], x: torch.Tensor, calls: int, threads: int, warmup_fraction: float = 0.05
) -> Dict[str, Any]:
    """Calls ``fn(x)`` once for the reference output, then ``calls`` times split over ``threads`` threads calling at
    once, each output compared with the reference (torch.equal). RSS is read once the first ``warmup_fraction`` of
    the calls (at least ``threads`` calls) are done, every calls/50 calls and at the end. Returns the counts, the RSS
    numbers in MiB and the wall time (of the ``calls`` calls, the pause at the warm-up included)."""
    with torch.inference_mode():
        want = fn(x)
    lock = threading.Lock()
    state: Dict[str, Any] = {"next": 0, "mismatches": 0, "errors": 0, "first_mismatch": None, "first_error": None}
    every = max(1, calls // 50)
    peak = [rss_mib()]

    def problem(i: int, what: str, count: str, first: str) -> None:
        with lock:
            state[count] += 1
            if state[first] is None:
                state[first] = f"call {i + 1}: {what}"

    def calls_until(stop: int) -> None:
        while True:
            with lock:
                i = state["next"]
                if i >= stop:
                    return
                state["next"] = i + 1
            try:
                what = _differs(fn(x), want)
            except Exception as e:  # noqa: BLE001 (reported, and counted as a failure)
                problem(i, f"{type(e).__name__}: {e}", "errors", "first_error")
                continue
            if what is not None:
                problem(i, what, "mismatches", "first_mismatch")
            if i % every == 0:
                r = rss_mib()
                with lock:
                    peak.append(r)

    # The same threads make the warm-up calls and the rest, so that what a thread allocates once for itself (a
    # malloc arena, oneDNN's scratchpad) is in the warm-up RSS. They wait at the barrier while it is read.
    warmup = min(calls, max(threads, math.ceil(calls * warmup_fraction)))
    barrier = threading.Barrier(threads + 1)

    crashed: List[BaseException] = []  # a failure of this function itself (fn's exceptions are counted above)

    def worker() -> None:
        try:
            with torch.inference_mode():
                calls_until(warmup)
                barrier.wait()
                barrier.wait()
                calls_until(calls)
        except threading.BrokenBarrierError:
            pass
        except BaseException as e:  # noqa: BLE001 (raised again by the calling thread)
            crashed.append(e)
            barrier.abort()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    warm = math.nan
    try:
        barrier.wait()
        gc.collect()
        warm = rss_mib()
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    for t in pool:
        t.join()
    if crashed:
        raise crashed[0]
    wall = time.perf_counter() - start
    gc.collect()
    end = rss_mib()
    return {
        "calls": calls,
        "threads": threads,
        "mismatches": state["mismatches"],
        "errors": state["errors"],
        "first_mismatch": state["first_mismatch"],
        "first_error": state["first_error"],
        "rss_warm_mib": warm,
        "rss_end_mib": end,
        "rss_peak_mib": max([warm, end, *peak]),
        **growth(warm, end),
        "wall_s": wall,
        "calls_per_s": calls / wall if wall > 0 else math.nan,
    }


def executable_soak(exe: Path, model: str, image_size: int, calls: int, intra_op_threads: int) -> Dict[str, Any]:
    """``sepp-bench`` at batch 1, one caller: the peak RSS of a calls/20-call run ("warm") and of a calls-call run."""
    peaks, wall = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for iters in (max(1, calls // 20), calls):
            js = Path(tmp) / f"r{iters}.json"
            cmd = [str(exe), "--model", model, "--image-size", str(image_size), "--batch-size", "1"]
            cmd += ["--threads", str(intra_op_threads), "--warmup", "0", "--iters", str(iters), "--json", str(js)]
            start = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if p.returncode != 0:
                what = f"{' '.join(cmd)} exited with {p.returncode}: {p.stderr.strip()}"
                return {"calls": calls, "threads": 1, "mismatches": None, "errors": 1, "first_error": what}
            peaks.append(json.loads(js.read_text())["results"][0]["peak_mib"])
    return {
        "calls": calls,
        "threads": 1,
        "mismatches": None,  # not compared (see the module's docstring)
        "errors": 0,
        "first_error": None,
        "rss_warm_mib": peaks[0],
        "rss_end_mib": peaks[1],
        "rss_peak_mib": peaks[1],
        **growth(peaks[0], peaks[1]),
        "wall_s": wall,
        "calls_per_s": calls / wall if wall > 0 else math.nan,
    }


def problems(name: str, r: Dict[str, Any], max_growth_pct: float, max_growth_mib: float) -> List[str]:
    """What is wrong with the result ``r`` of path ``name``: mismatched outputs, errors, RSS growth over the limit."""
    out = []
    if r.get("mismatches"):
        out.append(f"{name}: {r['mismatches']} of {r['calls']} outputs differ from the first ({r['first_mismatch']})")
    if r.get("errors"):
        out.append(f"{name}: {r['errors']} call(s) failed ({r['first_error']})")
    if "growth_mib" in r:
        limit = max(max_growth_mib, max_growth_pct / 100.0 * r["rss_warm_mib"])
        if not r["growth_mib"] <= limit:  # nan (no RSS) fails too
            out.append(f"{name}: RSS grew {r['growth_mib']:.1f} MiB after the warm-up (limit {limit:.1f} MiB)")
    return out


def python_paths(model: str, image_size: int, seed: int) -> tuple:
    """The input and, per Python path, a function making its callable (made one at a time, when its turn comes)."""
    import sepp
    from sepp.testing import randomize_norms_

    m = randomize_norms_(sepp.create_model(model), seed).eval()
    x = torch.randn(1, int(m.in_chans), image_size, image_size, generator=torch.Generator().manual_seed(seed))
    makers = {
        "eager": lambda: m,
        "optimized": lambda: sepp.optimize_for_inference(m, input_size=list(x.shape)),
        "cpp": lambda: m._cpp.forward,
    }
    return x, makers


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="se_resnet50", help="a sepp.model_names() name (default se_resnet50)")
    p.add_argument("--image-size", type=int, default=64, help="input side in pixels, >= 32 (default 64)")
    p.add_argument("--calls", type=int, default=10000, help="calls per path (default 10000)")
    p.add_argument("--threads", type=int, default=4, help="Python threads calling at once (default 4)")
    p.add_argument("--intra-op-threads", type=int, default=1, help="torch.set_num_threads during the run (default 1)")
    p.add_argument("--warmup-fraction", type=float, default=0.05, help="share of the calls before RSS is read")
    p.add_argument("--max-growth-pct", type=float, default=5.0, help="RSS growth allowed, %% of the warm-up RSS")
    p.add_argument("--max-growth-mib", type=float, default=32.0, help="RSS growth allowed, MiB (the larger counts)")
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {','.join(PATHS)} (default all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the BN statistics and the input (default 0)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    a = p.parse_args(argv)
    a.paths = [s for s in a.paths.split(",") if s]
    if not a.paths or set(a.paths) - set(PATHS):
        p.error(f"--paths: expected some of {','.join(PATHS)}, got {','.join(a.paths)!r}")
    if a.image_size < 32 or a.calls < 1 or a.threads < 1 or a.intra_op_threads < 1:
        p.error("--image-size must be >= 32 and --calls, --threads, --intra-op-threads >= 1")
    if not 0 < a.warmup_fraction < 1:
        p.error("--warmup-fraction must be in (0, 1)")
    return a


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the soak; prints a table and the problems; returns the exit status (0 or 1)."""
    a = parse_args(argv)
    import sepp
    from sepp._cli import sepp_bench_executable

    intra_before = torch.get_num_threads()
    torch.set_num_threads(a.intra_op_threads)
    results: Dict[str, Dict[str, Any]] = {}
    try:
        x, makers = python_paths(a.model, a.image_size, a.seed) if set(a.paths) - {"executable"} else (None, {})
        for name in [p for p in a.paths if p in makers]:
            fn = makers[name]()
            print(f"{name}: {a.calls} calls on {a.threads} threads ...", flush=True)
            results[name] = soak(fn, x, a.calls, a.threads, a.warmup_fraction)
            del fn
        if "executable" in a.paths:
            exe = sepp_bench_executable()
            if exe is None:
                results["executable"] = {"skipped": "sepp-bench is not installed with sepp (or set SEPP_BENCH_EXE)"}
            else:
                print(f"executable: {exe}, {a.calls // 20 or 1} then {a.calls} calls on 1 thread ...", flush=True)
                results["executable"] = executable_soak(exe, a.model, a.image_size, a.calls, a.intra_op_threads)
    finally:
        torch.set_num_threads(intra_before)

    cols = ["calls", "threads", "mismatches", "errors", "rss_warm_mib", "rss_end_mib", "rss_peak_mib", "growth_mib"]
    cols += ["growth_pct", "wall_s", "calls_per_s"]
    print(f"\nsoak: {a.model}, batch 1, {a.image_size}x{a.image_size}, intra-op threads {a.intra_op_threads}\n")
    print("| path | " + " | ".join(cols) + " |\n|---|" + "---:|" * len(cols))
    found: List[str] = []
    for name, r in results.items():
        if "skipped" in r:
            print(f"| {name} | skipped: {r['skipped']} |")
            continue
        print(f"| {name} | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
        found += problems(name, r, a.max_growth_pct, a.max_growth_mib)
    print("\n" + ("\n".join(f"FAIL {s}" for s in found) if found else "OK: every output equal to the first; RSS flat"))
    if a.json is not None:
        from sepp.files import write_text_atomic

        report = {
            "schema": "sepp-soak/1",
            "sepp_version": sepp.__version__,
            "torch_version": torch.__version__,
            "model": a.model,
            "image_size": a.image_size,
            "intra_op_threads": a.intra_op_threads,
            "warmup_fraction": a.warmup_fraction,
            "max_growth_pct": a.max_growth_pct,
            "max_growth_mib": a.max_growth_mib,
            "results": results,
            "problems": found,
        }
        write_text_atomic(a.json, json.dumps(report, indent=1) + "\n")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
