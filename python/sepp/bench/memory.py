"""Peak memory of a deployment, each contender alone in a fresh process of its own at the comparison's batch size:
``sepp-bench --optimize`` (the C++ executable, the optimized model; with ``--cpu-sepp-bench`` also one built against
the CPU-only torch wheel), and ONNX Runtime and OpenVINO loading the exported ONNX file without torch
(``_alone.py``). The parent process, which holds every contender at once, is never measured."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Optional, Set, Tuple

import torch

from .._cli import sepp_bench_executable
from .common import Skip, error_line


@dataclasses.dataclass
class Memory:
    """One process's peak resident set (ru_maxrss) after its timed calls, and its median ms there."""

    name: str
    dtype: str
    status: str  # ok | skipped | failed
    reason: str = ""
    command: str = ""
    peak_rss_mib: Optional[float] = None
    median_ms: Optional[float] = None
    torch_version: str = ""  # the torch a sepp-bench was built against


_SEPP = "sepp-bench --optimize (C++)"


def _sepp_cpu_only(version: str = "") -> str:
    """The row name of the sepp-bench built against the CPU-only torch, with that torch's version once known."""
    return f"sepp-bench --optimize (C++, CPU-only torch{' ' + version if version else ''})"


def _run_json(cmd: List[str], what: str) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"{what} exited with {proc.returncode}: {lines[-1] if lines else 'no output'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sepp_bench(
    args: argparse.Namespace, dtype: str, workdir: Path, exe: Optional[str] = None
) -> Tuple[List[str], dict]:
    """Runs ``sepp-bench --optimize`` (the installed one, or ``exe``) alone; returns its command and its peak RSS,
    median ms and torch version."""
    exe = exe or sepp_bench_executable()
    if exe is None:
        raise Skip("the sepp-bench executable is not installed with this sepp")
    js = workdir / f"memory-{Path(exe).parent.name}-sepp-bench-{dtype}.json"
    cmd = [
        str(exe), "--model", args.model, "--device", "cpu", "--dtype", dtype, "--optimize", "--channels-last",
        "--threads", str(torch.get_num_threads()), "--batch-size", str(args.batch_size),
        "--image-size", str(args.image_size), "--warmup", "1", "--iters", str(args.memory_iters), "--json", str(js),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sepp-bench exited with {proc.returncode}: {proc.stderr.strip()}")
    report = json.loads(js.read_text())
    r = report["results"][0]
    return cmd, {"peak_rss_mib": r["peak_mib"], "median_ms": r["p50_ms"], "torch_version": report["torch_version"]}


def _runtime(runtime: str, args: argparse.Namespace, dtype: str, onnx: Path) -> Tuple[List[str], dict]:
    """Runs ``_alone.py`` on ``onnx`` in ONNX Runtime or OpenVINO; returns its command and its report."""
    import importlib.util

    if importlib.util.find_spec(runtime) is None:
        raise Skip(f"{runtime} is not installed")
    if runtime == "onnxruntime" and dtype != "float32":
        raise Skip(f"the CPU execution provider has no {dtype} convolutions")
    script = Path(__file__).with_name("_alone.py")
    cmd = [sys.executable, str(script), runtime, str(onnx), "--threads", str(torch.get_num_threads())]
    cmd += ["--iters", str(args.memory_iters), "--dtype", dtype, "--batch-size", str(args.batch_size)]
    return cmd, _run_json(cmd, f"{runtime} alone")


def measure_memory(
    args: argparse.Namespace, dtypes: List[str], kinds: Set[str], onnx: Callable[[], Path], workdir: Path
) -> List[Memory]:
    """Peak RSS of sepp-bench --optimize, ONNX Runtime and OpenVINO (those of ``kinds``, the contender kinds of the
    comparison), each alone in its own process, per dtype. ``onnx`` exports (once) and returns the ONNX file the
    runtimes load. CPU only."""
    cpu_exe = getattr(args, "cpu_sepp_bench", None)
    contenders = []
    if "sepp-cpp" in kinds:
        contenders.append((_SEPP, lambda d: _sepp_bench(args, d, workdir)))
        if cpu_exe:
            contenders.append((_sepp_cpu_only(), lambda d: _sepp_bench(args, d, workdir, cpu_exe)))
    if "onnxruntime" in kinds:
        contenders.append(("ONNX Runtime (alone, no torch)", lambda d: _runtime("onnxruntime", args, d, onnx())))
    if "openvino" in kinds:
        contenders.append(("OpenVINO (alone, no torch)", lambda d: _runtime("openvino", args, d, onnx())))
    out = []
    for dtype in dtypes:
        for name, fn in contenders:
            if args.device != "cpu":
                out.append(Memory(name, dtype, "skipped", "measured on the CPU only"))
                continue
            try:
                cmd, r = fn(dtype)
                version = r.get("torch_version", "")
                if name == _sepp_cpu_only():
                    name = _sepp_cpu_only(version)
                m = Memory(name, dtype, "ok", "", " ".join(cmd), r["peak_rss_mib"], r["median_ms"], version)
                out.append(m)
            except Skip as e:
                out.append(Memory(name, dtype, "skipped", str(e)))
            except Exception as e:  # one runtime failing must not take the comparison down
                out.append(Memory(name, dtype, "failed", error_line(e)))
    return out


def memory_lines(memory: List[dict]) -> List[str]:
    """One line per dtype: each process's peak RSS, and sepp-bench's (each build's) as a multiple of OpenVINO's."""
    lines = []
    for dtype in dict.fromkeys(m["dtype"] for m in memory):
        rows = [m for m in memory if m["dtype"] == dtype]
        parts = [
            f"{m['name']} {m['peak_rss_mib']:.0f} MiB" if m["status"] == "ok" else f"{m['name']} {m['status']}"
            for m in rows
        ]
        ok = [m for m in rows if m["status"] == "ok"]
        openvino = [m["peak_rss_mib"] for m in ok if m["name"].startswith("OpenVINO")]
        ratios = []
        for m in ok:
            if not openvino or not m["name"].startswith("sepp-bench --optimize"):
                continue
            # "(C++)" is the installed build; "(C++, CPU-only torch X)" is named by what follows "C++, ".
            build = m["name"][m["name"].index("(") + 1 : -1].removeprefix("C++").removeprefix(", ")
            ratios.append((f"with {build} " if build else "") + f"{m['peak_rss_mib'] / openvino[0]:.2f}×")
        ratio = "; sepp-bench ÷ OpenVINO = " + ", ".join(ratios) if ratios else ""
        lines.append(f"Peak memory, each alone in its own process ({dtype}): " + ", ".join(parts) + ratio)
    return lines
