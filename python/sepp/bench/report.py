"""The reports: the machine and versions a comparison ran on, the markdown tables, and the PNG chart."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import platform
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..files import write_atomic
from .timing import Result


def machine_info(device: str) -> Dict[str, Any]:
    """The CPU (model, cores, the ISA extensions that matter for the kernels), host and OS; the GPU on CUDA."""
    cpu = platform.processor() or platform.machine()
    flags: List[str] = []
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        cpu = m.group(1).strip() if m else cpu
        m = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        flags = m.group(1).split() if m else []
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile") if f in flags]
    info: Dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "isa": isa,
        "hostname": platform.node(),
        "os": platform.platform(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def machine_slug(info: Dict[str, Any], device: str) -> str:
    """The machine part of the report's file names, e.g. ``amd-epyc-2c_cpu``."""
    what = info["gpu"] if device == "cuda" else f"{info['cpu']} {info['cores']}c"
    return re.sub(r"[^a-z0-9]+", "-", what.lower()).strip("-") + f"_{device}"


def versions() -> Dict[str, str]:
    """The versions of Python, torch, sepp and of the contenders' packages that are installed."""
    import sepp

    out = {"python": platform.python_version(), "torch": torch.__version__, "sepp": sepp.__version__}
    for mod in ("timm", "onnxruntime", "openvino", "onnx", "numpy"):
        if importlib.util.find_spec(mod) is not None:
            with contextlib.suppress(Exception):
                out[mod] = __import__(mod).__version__
    return out


def _num(v: Optional[float], fmt: str) -> str:
    return fmt.format(v) if v is not None else "—"


def markdown_table(results: List[Result]) -> str:
    """The comparison as markdown, one row per result."""
    lines = [
        "| contender | dtype | layout | median ms | p90 ms | img/s | ratio to sepp | max abs diff | status |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        status = r.status if r.status == "ok" else f"{r.status}: {r.reason}"
        lines.append(
            f"| {r.name} | {r.dtype} | {r.layout} | {_num(r.median_ms, '{:.2f}')} | "
            f"{_num(r.p90_ms, '{:.2f}')} | {_num(r.images_per_s, '{:.1f}')} | "
            f"{_num(r.ratio_to_sepp, '{:.2f}')} | {_num(r.max_abs_diff, '{:.2e}')} | {status} |"
        )
    return "\n".join(lines)


def kernel_table(kernels: Dict[str, Any]) -> str:
    """The ``kernels`` section as markdown: the copy bandwidth, the forward's FLOPs, and one row per operator, shape
    and dtype (sizes in MB = 1e6 bytes, times per call in µs)."""
    bw, fw = kernels["bandwidth"], kernels["forward"]
    lines = [
        f"copy_ of {bw['bytes'] / 2**20:.0f} MiB: {bw['median_ms']:.3f} ms, {bw['gb_per_s']:.1f} GB/s (read + write)",
        f"{fw['model']} forward at {fw['image_size']}×{fw['image_size']}: {fw['macs'] / 1e9:.3f} GMAC = "
        f"{fw['flops'] / 1e9:.3f} GFLOP per image (convolutions and linear layers), {fw['se_blocks']} SE blocks",
        "",
        "| op | shape | dtype | blocks | MB | MFLOP | median µs | GB/s | of copy | floor µs | status |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def us(ms: Optional[float]) -> Optional[float]:
        return ms * 1e3 if ms is not None else None

    for r in kernels["results"]:
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
        lines.append(
            f"| {r['op']} | {'×'.join(map(str, r['shape']))} | {r['dtype']} | {len(r['blocks'])} | "
            f"{r['bytes'] / 1e6:.3f} | {r['flops'] / 1e6:.3f} | {_num(us(r['median_ms']), '{:.1f}')} | "
            f"{_num(r['gb_per_s'], '{:.1f}')} | {_num(r['fraction_of_copy'], '{:.0%}')} | "
            f"{_num(us(r['floor_ms']), '{:.1f}')} | {status} |"
        )
    for f in kernels["per_forward"]:
        lines.append(
            f"\nSE kernels in one forward ({f['dtype']}, {' + '.join(f['ops'])}, every SE block): "
            f"{f['measured_ms']:.3f} ms measured, {f['floor_ms']:.3f} ms at the copy bandwidth"
        )
    return "\n".join(lines)


def _pairs(results: List[Result], kind: str) -> List[Tuple[Result, Result]]:
    """(row, the timed row it names in compare_to, of the same dtype and layout) for each timed row of ``kind``."""
    out = []
    for o in results:
        if o.kind == kind and o.median_ms:
            match = [
                r
                for r in results
                if r.name == o.compare_to and r.dtype == o.dtype and r.layout == o.layout and r.median_ms
            ]
            if match:
                out.append((o, match[0]))
    return out


def se_overhead(results: List[Result]) -> List[str]:
    """One line per timed se-overhead row: the SE model's median against the same network's without SE."""
    return [
        f"SE overhead ({o.compare_to}, {o.dtype}): {se.model} {se.median_ms:.2f} ms vs "
        f"{o.model} {o.median_ms:.2f} ms = {100 * (se.median_ms / o.median_ms - 1):+.1f}%"
        for o, se in _pairs(results, "se-overhead")
    ]


def hook_cost(results: List[Result]) -> List[str]:
    """One line per timed sepp-unhooked row: the sepp model's median (the Python face, which checks for hooks at
    each call) against its C++ forward called directly, in the same dtype and layout."""
    return [
        f"Hook support with no hooks ({o.dtype}, {o.layout}): sepp {face.median_ms:.2f} ms vs its C++ "
        f"forward {o.median_ms:.2f} ms = {100 * (face.median_ms / o.median_ms - 1):+.1f}%"
        for o, face in _pairs(results, "sepp-unhooked")
    ]


def write_chart(results: List[Result], path: Path, title: str, floors: Sequence[Dict[str, Any]] = ()) -> Optional[Path]:
    """A horizontal bar chart of the timed rows' medians (sepp red, SE overhead orange, the others blue) as a PNG
    at ``path``, with each measured floor (see :mod:`.floor`) drawn as a dashed line across its dtype's rows; None
    when matplotlib is not installed or nothing was timed."""
    if importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r.median_ms]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.38 * len(rows) + 1.4))
    labels = [f"{r.name} [{r.dtype}, {r.layout}]" for r in rows]
    colors = [
        "tab:red"
        if r.kind in ("sepp", "sepp-optimized", "sepp-cpp", "sepp-compiled", "sepp-unhooked", "train-sepp")
        else "tab:orange"
        if r.kind == "se-overhead"
        else "tab:blue"
        for r in rows
    ]
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [r.median_ms for r in rows], color=colors)
    for yi, r in zip(y, rows):
        ratio = f"  ×{r.ratio_to_sepp:.2f}" if r.ratio_to_sepp else ""
        ax.text(r.median_ms, yi, f" {r.median_ms:.1f} ms{ratio}", va="center", fontsize=8)
    for f in floors:
        ys = [yi for yi, r in zip(y, rows) if r.dtype == f["dtype"]]
        if f.get("floor_ms") and ys:
            ax.vlines(f["floor_ms"], min(ys) - 0.45, max(ys) + 0.45, colors="k", linestyles="dashed", linewidth=1)
            ax.text(f["floor_ms"], max(ys) + 0.5, f" floor {f['dtype']} {f['floor_ms']:.1f} ms", fontsize=7)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("median ms (lower is better); ×: ratio to sepp at the same dtype", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, max(r.median_ms for r in rows) * 1.3)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, png.getvalue())
    return path
