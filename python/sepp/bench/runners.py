"""Contenders that run outside torch: ONNX Runtime and OpenVINO on the reference exported to ONNX, and the C++
``sepp-bench`` executable as a child process, fed the shared weights and input through safetensors files."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch

from .._cli import sepp_bench_executable
from .common import Skip

__all__ = [
    "onnx_file",
    "onnxruntime_setup",
    "openvino_setup",
    "run_sepp_bench",
    "sepp_bench_executable",
    "wait_until_idle",
]


def onnx_file(x: torch.Tensor, workdir: Path, reference_model: Callable[[], torch.nn.Module]) -> Path:
    """The reference exported to ONNX at the input's shape, once per ``workdir``."""
    path = workdir / "reference.onnx"
    if not path.exists():
        if importlib.util.find_spec("onnx") is None:
            raise Skip("onnx is not installed (needed to export the reference)")
        import warnings

        from ..export import export_onnx

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(reference_model(), path, x, dynamo=False, opset=17, dynamic_batch=False)
    return path


def onnxruntime_setup(
    args: argparse.Namespace, x: torch.Tensor, dtype: str, workdir: Path, reference_model: Callable[[], torch.nn.Module]
) -> Callable[[], Any]:
    """An ONNX Runtime session (CPU execution provider, every graph optimization) on the exported reference; returns
    its runner."""
    if args.device != "cpu":
        raise Skip("compared on the CPU only")
    if dtype != "float32":
        raise Skip(f"the CPU execution provider has no {dtype} convolutions")
    if importlib.util.find_spec("onnxruntime") is None:
        raise Skip("onnxruntime is not installed")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(
        str(onnx_file(x, workdir, reference_model)), opts, providers=["CPUExecutionProvider"]
    )
    feed = {"input": x.numpy()}

    def run() -> Any:
        return session.run(None, feed)[0]

    return run


def openvino_setup(
    args: argparse.Namespace, x: torch.Tensor, dtype: str, workdir: Path, reference_model: Callable[[], torch.nn.Module]
) -> Callable[[], Any]:
    """The exported reference compiled by OpenVINO for the CPU (latency hint, ``dtype`` as the inference precision);
    returns its runner."""
    if args.device != "cpu":
        raise Skip("compared on the CPU only")
    if importlib.util.find_spec("openvino") is None:
        raise Skip("openvino is not installed")
    import openvino as ov

    core = ov.Core()
    hint = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}[dtype]
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if dtype != "float32" and hint.upper() not in [str(c).upper() for c in caps]:
        raise Skip(f"this CPU does not run {dtype} in OpenVINO (its capabilities: {', '.join(map(str, caps))})")
    model = core.read_model(str(onnx_file(x, workdir, reference_model)))
    compiled = core.compile_model(
        model,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        },
    )
    request = compiled.create_infer_request()
    feed = x.numpy()

    def run() -> Any:
        request.infer({0: feed})
        return request.get_output_tensor(0).data

    return run


def wait_until_idle(window_s: float = 0.05, busy: float = 0.1, limit_s: float = 3.0) -> float:
    """Sleeps until this process's threads (torch's OpenMP pool, ONNX Runtime's and OpenVINO's workers, which spin
    for a while after each call) use less than ``busy`` of one core over a ``window_s`` window, or ``limit_s`` has
    passed; returns the seconds waited. A child process timed right after another contender would otherwise share
    the cores with the parent's spinning threads."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        cpu0, t0 = time.process_time(), time.perf_counter()
        time.sleep(window_s)
        if time.process_time() - cpu0 < busy * (time.perf_counter() - t0):
            break
    return time.perf_counter() - start


def run_sepp_bench(
    args: argparse.Namespace,
    state: Dict[str, torch.Tensor],
    x: torch.Tensor,
    dtype: str,
    workdir: Path,
    optimize: bool = False,
) -> Tuple[List[float], torch.Tensor]:
    """Runs ``sepp-bench`` once on the shared weights and input (channels_last, one round's share of the
    iterations), with this process idle; returns its samples in ms and its logits."""
    from safetensors.torch import load_file, save_file

    exe = sepp_bench_executable()
    if exe is None:
        raise Skip("the sepp-bench executable is not installed with this sepp (set SEPP_BENCH_EXE)")
    weights, inp = workdir / "weights.safetensors", workdir / "input.safetensors"
    tag = f"{dtype}{'-optimized' if optimize else ''}"
    out, js = workdir / f"output-{tag}.safetensors", workdir / f"sepp-bench-{tag}.json"
    if not weights.exists():
        save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
        save_file({"input": x.contiguous()}, str(inp))
    cmd = [
        str(exe),
        "--model",
        args.model,
        "--device",
        args.device,
        "--dtype",
        dtype,
        "--channels-last",
        "--threads",
        str(torch.get_num_threads()),
        "--warmup",
        str(args.warmup),
        "--iters",
        str(max(1, args.iters // args.rounds)),
        "--weights",
        str(weights),
        "--input",
        str(inp),
        "--output",
        str(out),
        "--json",
        str(js),
        *(["--optimize"] if optimize else []),
    ]
    wait_until_idle()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited with {proc.returncode}: {proc.stderr.strip()}")
    report = json.loads(js.read_text())
    return report["results"][0]["samples_ms"], load_file(str(out))["output"]
