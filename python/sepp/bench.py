"""Side-by-side latency comparison of sepp with what a user would run instead, in one process.

    python -m sepp.bench --model se_resnet50                # CUDA if present, else CPU
    python -m sepp.bench --device cpu --batch-size 16 --dtypes float32 --skip compile
    python -m sepp.bench --train --contenders train-sepp,train-timm --batch-size 256   # training steps
    python -m sepp.bench --kernels --contenders sepp --batch-size 256                  # SE kernels vs bandwidth

Every contender that is installed runs on the same weights and the same input: sepp (Python API), sepp from C++ (the
``sepp-bench`` executable, fed the same weights and input through safetensors files), ``sepp.reference`` eager, timm
eager, ``torch.compile`` of the reference (CPU: inductor with freezing; CUDA: max-autotune), ONNX Runtime and
OpenVINO (CPU, exported from the reference), in float32 and in the reduced precision the device supports; plus the SE
overhead (the same sepp model without SE). Before a contender is timed its output is checked against sepp's float32
output; one that disagrees is reported as a mismatch and not timed.

``--train`` adds training steps (forward, cross-entropy, backward, SGD with momentum; autocast for the reduced dtypes;
channels_last) of sepp and of timm, each checked by the loss of one step on a fresh copy. ``--kernels`` times sepp's
SE operators (``torch.ops.sepp.se_squeeze``, ``se_excite``, ``se_scale``) at the shapes of the model's SE blocks,
next to the device's copy bandwidth, with the bytes and FLOPs each must move and do.

Prints a markdown table (medians, the ratio of each to sepp at the same dtype), and writes the raw results as JSON and
a PNG chart under ``--output-dir`` (default ``bench/results``), named by machine, device and model.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

SCHEMA = "sepp-compare/1"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CONTENDER_KINDS = ("sepp", "sepp-optimized", "sepp-cpp", "se-overhead", "reference", "timm", "compile", "onnxruntime",
                   "openvino")
TRAIN_KINDS = ("train-sepp", "train-timm")  # run only with --train
ALL_KINDS = CONTENDER_KINDS + TRAIN_KINDS
TRAIN_LR = 1e-3  # SGD, momentum 0.9: small, so that steps on the same batch stay finite
KERNEL_OPS = ("se_squeeze", "se_excite", "se_scale")
COPY_MIB = {"cuda": 256, "cpu": 64}  # size of the tensor whose copy measures the memory bandwidth
# Relative tolerance of the output check: max|y - y_sepp_fp32| / max|y_sepp_fp32|.
TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 2e-2}
TIMM_NAMES = {"se_resnet50": "seresnet50", "se_resnet101": "seresnet101", "se_resnet152": "seresnet152",
              "se_resnet18": "seresnet18", "se_resnet34": "seresnet34", "se_resnext50_32x4d": "seresnext50_32x4d",
              "se_resnext101_32x4d": "seresnext101_32x4d", "resnet18": "resnet18", "resnet34": "resnet34",
              "resnet50": "resnet50", "resnet101": "resnet101", "resnet152": "resnet152"}


class Skip(Exception):
    """A contender that cannot run here (not installed, not supported on this device or dtype)."""


@dataclasses.dataclass
class Contender:
    """One row of the comparison. ``setup`` returns a zero-argument callable that runs one forward pass on the
    shared input and returns the logits (any array-like); ``external`` contenders time themselves and return
    ``(times_ms, logits)`` from ``setup`` instead; train contenders (kinds in ``TRAIN_KINDS``) return ``(step, loss)``:
    a callable that runs one training step, and the loss of one step from the shared weights, computed on a fresh
    copy of the model (so the timed model is unaffected)."""

    name: str
    kind: str
    dtype: str
    layout: str
    setup: Callable[[], Any]
    model: str
    baseline: bool = False
    external: bool = False
    note: str = ""
    compare_to: str = ""  # se-overhead rows: the name of the SE model's row they pair with


@dataclasses.dataclass
class Result:
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


# ------------------------------------------------------------------------------------------------ machine and set-up

def machine_info(device: str) -> Dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    flags: List[str] = []
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        cpu = m.group(1).strip() if m else cpu
        m = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        flags = m.group(1).split() if m else []
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile") if f in flags]
    info: Dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "isa": isa, "hostname": platform.node(),
                            "os": platform.platform()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def machine_slug(info: Dict[str, Any], device: str) -> str:
    what = info["gpu"] if device == "cuda" else f"{info['cpu']} {info['cores']}c"
    return re.sub(r"[^a-z0-9]+", "-", what.lower()).strip("-") + f"_{device}"


def versions() -> Dict[str, str]:
    import sepp

    out = {"python": platform.python_version(), "torch": torch.__version__, "sepp": sepp.__version__}
    for mod in ("timm", "onnxruntime", "openvino", "onnx", "numpy"):
        if importlib.util.find_spec(mod) is not None:
            with contextlib.suppress(Exception):
                out[mod] = __import__(mod).__version__
    return out


def realistic_weights_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fresh models start every residual branch at zero (zero_init_last), which makes an output check meaningless;
    give every BN random affine parameters and running statistics instead (deterministic for ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    norms = [k[: -len("running_var")] for k in state if k.endswith("running_var")]
    with torch.no_grad():
        for prefix in norms:
            n = state[prefix + "running_var"].numel()
            state[prefix + "running_var"].copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            state[prefix + "running_mean"].copy_(torch.randn(n, generator=g) * 0.1)
            state[prefix + "weight"].copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            state[prefix + "bias"].copy_(torch.randn(n, generator=g) * 0.1)
    return model


def sepp_bench_executable() -> Optional[Path]:
    env = os.environ.get("SEPP_BENCH_EXE")
    if env:
        return Path(env)
    import sepp

    path = Path(sepp.__file__).resolve().parent / "bin" / "sepp-bench"
    return path if path.is_file() else None


# ------------------------------------------------------------------------------------------------------- contenders

def _channels_last(x: torch.Tensor, layout: str) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def build_contenders(args: argparse.Namespace, state: Dict[str, torch.Tensor], x: torch.Tensor,
                     workdir: Path) -> List[Contender]:
    import sepp
    import sepp.reference as reference

    dev = torch.device(args.device)
    model_name = args.model
    labels = train_labels(args, state["fc.weight"].shape[0]) if "fc.weight" in state else None
    rows: List[Contender] = []

    def torch_runner(module: torch.nn.Module, dtype: str, layout: str, autocast: bool = False) -> Callable[[], Any]:
        xin = _channels_last(x.to(dev, torch.float32 if autocast else DTYPES[dtype]), layout)
        ctx = (lambda: torch.autocast(dev.type, dtype=DTYPES[dtype])) if autocast else contextlib.nullcontext

        def run() -> Any:
            with torch.inference_mode(), ctx():
                return module(xin)
        return run

    def sepp_model(name: str, dtype: str, layout: str) -> torch.nn.Module:
        m = sepp.create_model(name)
        if name == model_name:
            m.load_state_dict(state)
        else:
            realistic_weights_(m, args.seed)
        m = m.eval().to(dev, DTYPES[dtype])
        return m.to(memory_format=torch.channels_last) if layout == "channels_last" else m

    def reference_model(dtype: str = "float32") -> torch.nn.Module:
        m = reference.create_model(model_name)
        m.load_state_dict(state)
        return m.eval().to(dev, DTYPES[dtype])

    def optimized(name: str, dtype: str) -> Callable[[], Any]:
        m = sepp_model(name, "float32", "nchw")
        n, _, h, w = x.shape
        return torch_runner(sepp.optimize_for_inference(m, dtype=DTYPES[dtype], input_size=[n, 3, h, w]), dtype,
                            "channels_last")

    def timm_model() -> torch.nn.Module:
        """timm's counterpart of the model, with the shared weights, on the device (float32)."""
        if importlib.util.find_spec("timm") is None:
            raise Skip("timm is not installed")
        import timm

        if model_name not in TIMM_NAMES:
            raise Skip(f"timm has no counterpart of {model_name}")
        m = timm.create_model(TIMM_NAMES[model_name], pretrained=False)
        try:
            m.load_state_dict(state)
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln] or [str(e).splitlines()[0]]
            raise Skip(f"timm {TIMM_NAMES[model_name]} does not take sepp's weights ({lines[0]} — timm rounds "
                       f"SE widths to multiples of 8)") from None
        return m.to(dev)

    def train_setup(make: Callable[[], torch.nn.Module], dtype: str) -> Tuple[Callable[[], Any], float]:
        if labels is None:
            raise Skip(f"{model_name} has no classifier to train against labels")
        model = make().to(memory_format=torch.channels_last)
        xin = _channels_last(x.to(dev), "channels_last")
        y = labels.to(dev)
        check = train_step_runner(copy.deepcopy(model), xin, y, dtype)
        loss = float(check())
        del check
        return train_step_runner(model, xin, y, dtype), loss

    plain = model_name[3:] if model_name.startswith("se_") and model_name[3:] in sepp.model_names() else None
    for dtype in args.dtypes:
        low = dtype != "float32"
        for layout in ("nchw", "channels_last"):
            rows.append(Contender("sepp", "sepp", dtype, layout, model=model_name, baseline=True,
                                  setup=lambda d=dtype, l=layout: torch_runner(sepp_model(model_name, d, l), d, l)))
        rows.append(Contender("sepp optimized", "sepp-optimized", dtype, "channels_last", model=model_name,
                              baseline=True, setup=lambda d=dtype: optimized(model_name, d)))
        for opt in (False, True):
            rows.append(Contender("sepp-bench --optimize (C++)" if opt else "sepp-bench (C++)", "sepp-cpp", dtype,
                                  "channels_last", model=model_name, external=True,
                                  setup=lambda d=dtype, o=opt: run_sepp_bench(args, state, x, d, workdir, o)))
        if plain:
            rows.append(Contender(f"sepp {plain} (SE overhead)", "se-overhead", dtype, "channels_last", model=plain,
                                  note="no output check: a different network", compare_to="sepp",
                                  setup=lambda d=dtype: torch_runner(sepp_model(plain, d, "channels_last"), d,
                                                                     "channels_last")))
            rows.append(Contender(f"sepp optimized {plain} (SE overhead)", "se-overhead", dtype, "channels_last",
                                  model=plain, note="no output check: a different network",
                                  compare_to="sepp optimized", setup=lambda d=dtype: optimized(plain, d)))
        rows.append(Contender("sepp.reference eager", "reference", dtype, "nchw", model=model_name,
                              setup=lambda d=dtype: torch_runner(reference_model(d), d, "nchw")))

        def timm_setup(d: str = dtype, layout: str = "nchw") -> Callable[[], Any]:
            m = timm_model().eval()
            if layout == "channels_last":
                m = m.to(memory_format=torch.channels_last)
            return torch_runner(m, d, layout, autocast=d != "float32")

        timm_name = f"timm {TIMM_NAMES.get(model_name, model_name)} eager"
        if not low:
            rows.append(Contender(timm_name, "timm", dtype, "nchw", model=model_name, setup=timm_setup))
        rows.append(Contender(timm_name + (" (autocast)" if low else ""), "timm", dtype, "channels_last",
                              model=model_name, setup=lambda d=dtype: timm_setup(d, "channels_last")))

        def compile_setup(d: str = dtype) -> Callable[[], Any]:
            import torch._inductor.config as inductor_config

            m = reference_model()
            if dev.type == "cpu":
                inductor_config.freezing = True
                compiled = torch.compile(m)
            else:
                compiled = torch.compile(m, mode="max-autotune")
            return torch_runner(compiled, d, "nchw", autocast=d != "float32")

        how = "inductor, freezing" if dev.type == "cpu" else "max-autotune"
        rows.append(Contender(f"torch.compile reference ({how}{', autocast' if low else ''})", "compile", dtype,
                              "nchw", model=model_name, setup=compile_setup))
        rows.append(Contender("ONNX Runtime", "onnxruntime", dtype, "nchw", model=model_name,
                              setup=lambda d=dtype: onnxruntime_setup(args, x, d, workdir, reference_model)))
        rows.append(Contender("OpenVINO", "openvino", dtype, "nchw", model=model_name,
                              setup=lambda d=dtype: openvino_setup(args, x, d, workdir, reference_model)))
        if args.train:
            amp = " (autocast)" if low else ""
            rows.append(Contender(f"train step sepp{amp}", "train-sepp", dtype, "channels_last", model=model_name,
                                  baseline=True, note="images/s of training steps; ratio to the sepp train step",
                                  setup=lambda d=dtype: train_setup(lambda: sepp_model(model_name, "float32",
                                                                                       "channels_last"), d)))
            rows.append(Contender(f"train step timm {TIMM_NAMES.get(model_name, model_name)}{amp}", "train-timm",
                                  dtype, "channels_last", model=model_name,
                                  note="images/s of training steps; ratio to the sepp train step",
                                  setup=lambda d=dtype: train_setup(timm_model, d)))
    keep = set(args.contenders) - set(args.skip)
    return [c for c in rows if c.kind in keep]


def train_labels(args: argparse.Namespace, num_classes: int) -> torch.Tensor:
    """The fixed random labels of the training steps (deterministic for the seed)."""
    return torch.randint(num_classes, (args.batch_size,), generator=torch.Generator().manual_seed(args.seed + 1))


def train_step_runner(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor,
                      dtype: str) -> Callable[[], torch.Tensor]:
    """One training step per call on the fixed batch: forward (autocast for a reduced dtype, with a gradient scaler
    for float16), cross-entropy, backward, SGD with momentum. Returns the step's loss (detached, not synced)."""
    device = x.device.type
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=TRAIN_LR, momentum=0.9)
    scaler = torch.amp.GradScaler(device) if dtype == "float16" else None
    ctx = (lambda: torch.autocast(device, dtype=DTYPES[dtype])) if dtype != "float32" else contextlib.nullcontext

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with ctx():
            loss = F.cross_entropy(model(x), labels)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return loss.detach()
    return step


def _onnx_file(x: torch.Tensor, workdir: Path, reference_model: Callable[[], torch.nn.Module]) -> Path:
    path = workdir / "reference.onnx"
    if not path.exists():
        if importlib.util.find_spec("onnx") is None:
            raise Skip("onnx is not installed (needed to export the reference)")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(reference_model(), (x,), str(path), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"])
    return path


def onnxruntime_setup(args: argparse.Namespace, x: torch.Tensor, dtype: str, workdir: Path,
                      reference_model: Callable[[], torch.nn.Module]) -> Callable[[], Any]:
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
    session = ort.InferenceSession(str(_onnx_file(x, workdir, reference_model)), opts,
                                   providers=["CPUExecutionProvider"])
    feed = {"input": x.numpy()}
    return lambda: session.run(None, feed)[0]


def openvino_setup(args: argparse.Namespace, x: torch.Tensor, dtype: str, workdir: Path,
                   reference_model: Callable[[], torch.nn.Module]) -> Any:
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
    model = core.read_model(str(_onnx_file(x, workdir, reference_model)))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    request = compiled.create_infer_request()
    feed = x.numpy()

    def run() -> Any:
        request.infer({0: feed})
        return request.get_output_tensor(0).data
    return run


def run_sepp_bench(args: argparse.Namespace, state: Dict[str, torch.Tensor], x: torch.Tensor, dtype: str,
                   workdir: Path, optimize: bool = False) -> Any:
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
    cmd = [str(exe), "--model", args.model, "--device", args.device, "--dtype", dtype, "--channels-last",
           "--threads", str(torch.get_num_threads()), "--warmup", str(args.warmup),
           "--iters", str(max(1, args.iters // args.rounds)),
           "--weights", str(weights), "--input", str(inp), "--output", str(out), "--json", str(js),
           *(["--optimize"] if optimize else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited with {proc.returncode}: {proc.stderr.strip()}")
    report = json.loads(js.read_text())
    return report["results"][0]["samples_ms"], load_file(str(out))["output"]


# ------------------------------------------------------------------------------------------------------------ timing

def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_runner(run: Callable[[], Any], device: str, warmup: int, iters: int) -> List[float]:
    for _ in range(warmup):
        run()
    _sync(device)
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


def _as_tensor(y: Any) -> torch.Tensor:
    if isinstance(y, torch.Tensor):
        return y.detach().to("cpu", torch.float64)
    import numpy as np

    return torch.from_numpy(np.asarray(y, dtype=np.float64))


def is_train(kind: str) -> bool:
    return kind in TRAIN_KINDS


def prepare(c: Contender, args: argparse.Namespace, truth: torch.Tensor,
            train_truth: Optional[float] = None) -> Tuple[Result, Any]:
    """Sets a contender up and checks its output against sepp's float32 output (a train contender: its loss of one
    step against sepp's float32 loss, ``train_truth``). Returns its result (status ok, skipped, mismatch or failed)
    and, when ok, what to time: a runner, or for an external contender a callable that runs it once more and returns
    its samples."""
    r = Result(c.name, c.kind, c.model, c.dtype, c.layout, "ok", note=c.note, baseline=c.baseline,
               compare_to=c.compare_to)
    t0 = time.perf_counter()
    try:
        made = c.setup()
        if is_train(c.kind):
            made, loss = made
            loss = float(loss)
        elif c.external:
            samples, y = made
            r.times_ms.extend(samples)
            made = lambda: c.setup()[0]  # noqa: E731 (a later round runs the executable again)
        else:
            y = made()
            _sync(args.device)
    except Skip as e:
        r.status, r.reason = "skipped", str(e)
        return r, None
    except Exception as e:  # a contender that breaks must not take the comparison down with it
        r.status, r.reason = "failed", f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
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
            r.reason = (f"loss of one step {loss:.6g} differs from sepp float32's {train_truth:.6g} by "
                        f"{r.rel_diff:.3g} relative (tolerance {TOLERANCE[c.dtype]})")
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
    for i, n in enumerate(_split(args.iters, args.rounds)):
        for c, r, run in ready:
            if c.external:
                if i > 0:  # its first round ran while it was set up
                    r.times_ms.extend(run())
            elif n:
                r.times_ms.extend(round(t, 4) for t in time_runner(run, args.device, args.warmup, n))
    for c, r, run in ready:
        r.median_ms = statistics.median(r.times_ms)
        r.p90_ms = _percentile(r.times_ms, 0.9)
        r.images_per_s = args.batch_size * 1e3 / r.median_ms


def _split(iters: int, rounds: int) -> List[int]:
    """The iterations of each round: ``iters`` spread over ``rounds`` as evenly as they go."""
    return [iters // rounds + (1 if i < iters % rounds else 0) for i in range(rounds)]


def _percentile(v: Sequence[float], q: float) -> float:
    s = sorted(v)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def add_ratios(results: List[Result]) -> None:
    """ratio_to_sepp = median / the fastest sepp (Python API) median at the same dtype; > 1 means sepp is faster. A
    train step's ratio is to sepp's train step at the same dtype."""
    for r in results:
        base = [b.median_ms for b in results if b.baseline and b.dtype == r.dtype and b.median_ms
                and is_train(b.kind) == is_train(r.kind)]
        if r.median_ms and base:
            r.ratio_to_sepp = r.median_ms / min(base)


# -------------------------------------------------------------------------------------------------------- SE kernels

@dataclasses.dataclass
class SEShape:
    """One SE block of a model: its name, the shape [N, C, H, W] of what it squeezes and scales, its bottleneck
    width and whether its two FC layers have biases."""

    block: str
    shape: List[int]
    rd: int
    bias: bool


@dataclasses.dataclass
class KernelCost:
    """What one SE operator must move and compute for one SE block: ``bytes`` read and written (each input and the
    output once), ``flops`` (multiply and add counted apart)."""

    op: str
    block: str
    shape: List[int]
    rd: int
    dtype: str
    bytes: int
    flops: int


@dataclasses.dataclass
class ForwardCost:
    """The work of one forward pass per image: multiply-adds of every convolution and linear layer (the SE FCs
    included; BN, ReLU, pooling and the SE's pointwise work left out), and ``flops = 2 * macs``."""

    model: str
    image_size: int
    macs: int
    flops: int
    se_blocks: int


@dataclasses.dataclass
class KernelResult:
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


def _trace(model: str, image_size: int, overrides: Dict[str, Any]) -> Tuple[List[SEShape], int]:
    """The SE blocks of ``model`` (a sepp model name, with :func:`sepp.create_model` overrides) at batch 1, and the
    multiply-adds of its convolutions and linear layers per image. Runs the reference model built from sepp's config
    on the meta device: shapes only, nothing is computed."""
    import sepp
    import sepp.reference as reference
    from sepp import _C

    if model not in sepp.model_names():
        raise ValueError(f"unknown model {model!r}; expected one of: {', '.join(sepp.model_names())}")
    config = {**dict(_C.model_config(model)), **overrides}
    with torch.device("meta"):
        net = reference.ResNet(**config).eval()
    blocks: List[SEShape] = []
    macs = [0]

    def hook(name: str) -> Callable[..., None]:
        def record(mod: torch.nn.Module, inputs: Tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if isinstance(mod, reference.SEBlock):
                blocks.append(SEShape(name, list(inputs[0].shape), mod.fc1.out_channels, mod.fc1.bias is not None))
            elif isinstance(mod, torch.nn.Conv2d):
                macs[0] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
            elif isinstance(mod, torch.nn.Linear):
                macs[0] += out.numel() * mod.in_features
        return record

    for name, mod in net.named_modules():
        if isinstance(mod, (reference.SEBlock, torch.nn.Conv2d, torch.nn.Linear)):
            mod.register_forward_hook(hook(name))
    with torch.no_grad():
        net(torch.empty(1, config["in_chans"], image_size, image_size, device="meta"))
    return blocks, macs[0]


def se_blocks(model: str, image_size: int = 224, batch_size: int = 1, **overrides: Any) -> List[SEShape]:
    """The SE blocks of a sepp model (name and :func:`sepp.create_model` overrides) in forward order, with the shape
    each sees at ``batch_size`` and ``image_size``."""
    blocks, _ = _trace(model, image_size, overrides)
    return [dataclasses.replace(b, shape=[batch_size, *b.shape[1:]]) for b in blocks]


def kernel_costs(block: SEShape, dtype: str) -> List[KernelCost]:
    """Bytes and FLOPs of ``se_squeeze``, ``se_excite`` and ``se_scale`` (with identity and ReLU, as the standard
    SE-ResNet block runs it) for one SE block, all tensors in ``dtype``."""
    e = DTYPES[dtype].itemsize
    n, c, h, w = block.shape
    rd, chw = block.rd, c * h * w
    weights = 2 * rd * c + (rd + c if block.bias else 0)
    per_op = {"se_squeeze": (e * (n * chw + n * c), n * chw),
              "se_excite": (e * (n * c + weights + n * c), 4 * n * c * rd),
              "se_scale": (e * (3 * n * chw + n * c), 3 * n * chw)}
    return [KernelCost(op, block.block, list(block.shape), rd, dtype, b, f) for op, (b, f) in per_op.items()]


def se_kernel_costs(model: str, batch_size: int, dtype: str, image_size: int = 224,
                    **overrides: Any) -> List[KernelCost]:
    """Bytes and FLOPs of the three SE operators for every SE block of ``model`` at ``batch_size`` and ``dtype``,
    computed from shapes alone (nothing runs): the numbers the floor of each kernel follows from."""
    return [k for b in se_blocks(model, image_size, batch_size, **overrides) for k in kernel_costs(b, dtype)]


def forward_cost(model: str, image_size: int = 224, **overrides: Any) -> ForwardCost:
    """Multiply-adds and FLOPs per image of one forward pass of ``model`` (see :class:`ForwardCost`)."""
    blocks, macs = _trace(model, image_size, overrides)
    return ForwardCost(model, image_size, macs, 2 * macs, len(blocks))


def sepp_op(name: str) -> Optional[Callable[..., Any]]:
    """``torch.ops.sepp.<name>``, or None where this build of the extension does not register it."""
    import sepp  # noqa: F401  (loads the extension, which registers the operators)

    try:
        return getattr(torch.ops.sepp, name)
    except (AttributeError, RuntimeError):
        return None


def _kernel_case(fn: Callable[..., Any], op: str, block: SEShape, dtype: str, device: str,
                 seed: int) -> Tuple[Callable[[], Any], torch.Tensor]:
    """Inputs for one operator at one SE block's shape (activations channels_last), and its expected output from
    plain torch in float32 on the same (rounded) inputs. Returns ``(run, expected)``."""
    g = torch.Generator().manual_seed(seed)
    n, c = block.shape[:2]
    rd = block.rd

    def t(*size: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*size, generator=g) * scale).to(device, DTYPES[dtype])

    def act() -> torch.Tensor:
        return t(*block.shape).contiguous(memory_format=torch.channels_last)

    if op == "se_squeeze":
        x = act()
        return (lambda: fn(x, None)), x.float().mean((2, 3))
    if op == "se_excite":
        z, w1, w2 = t(n, c), t(rd, c, scale=c ** -0.5), t(c, rd, scale=rd ** -0.5)
        b1, b2 = (t(rd, scale=0.1), t(c, scale=0.1)) if block.bias else (None, None)
        f32 = (lambda v: v.float() if v is not None else None)
        expected = torch.sigmoid(F.linear(F.relu(F.linear(z.float(), w1.float(), f32(b1))), w2.float(), f32(b2)))
        return (lambda: fn(z, w1, b1, w2, b2, "sigmoid")), expected
    x, identity, s = act(), act(), torch.sigmoid(t(n, c))
    expected = F.relu(x.float() * s.float()[:, :, None, None] + identity.float())
    return (lambda: fn(x, s, identity, True)), expected


def _calls_per_sample(run: Callable[[], Any], device: str, min_ms: float = 1.0, most: int = 1000) -> int:
    """How many back-to-back calls make one timed sample of at least ``min_ms`` (short kernels are timed in a loop,
    so that the timer's resolution and overhead do not dominate)."""
    run()
    _sync(device)
    t0 = time.perf_counter()
    run()
    _sync(device)
    ms = (time.perf_counter() - t0) * 1e3
    return max(1, min(most, math.ceil(min_ms / max(ms, 1e-6))))


def _repeated(run: Callable[[], Any], reps: int) -> Callable[[], None]:
    def loop() -> None:
        for _ in range(reps):
            run()
    return loop


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
                r = KernelResult(cost.op, cost.shape, cost.rd, dtype, "channels_last", [m.block for m in members],
                                 cost.bytes, cost.flops, "ok")
                cases.append((r, _prepare_kernel(r, members[0], args)))
    nbytes = COPY_MIB[dev] * 2**20
    src = torch.empty(nbytes // 4, device=dev).fill_(1.0)
    dst = torch.empty_like(src)
    copy_times: List[float] = []
    timed = [(copy_times, lambda: dst.copy_(src))] + [(r.times_ms, run) for r, run in cases if run is not None]
    loops = []
    for samples, run in timed:
        reps = _calls_per_sample(run, dev)
        loops.append((samples, _repeated(run, reps), reps))
    for n in _split(args.iters, args.rounds):
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
        "bandwidth": {"op": "copy_", "bytes": nbytes, "moved_bytes": 2 * nbytes, "reps": loops[0][2],
                      "times_ms": copy_times, "median_ms": copy_ms, "gb_per_s": copy_gbps},
        "forward": dataclasses.asdict(forward),
        "results": [dataclasses.asdict(r) for r in results],
        "per_forward": _se_per_forward(results, args.dtypes),
    }


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
        _sync(args.device)
    except Exception as e:  # an operator that breaks must not take the others down with it
        r.status, r.reason = "failed", f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
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
            out.append({"dtype": dtype, "ops": sorted({r.op for r in ok}, key=KERNEL_OPS.index),
                        "measured_ms": sum(len(r.blocks) * r.median_ms for r in ok),
                        "floor_ms": sum(len(r.blocks) * r.floor_ms for r in ok)})
    return out


# ----------------------------------------------------------------------------------------------------------- reports

def markdown_table(results: List[Result]) -> str:
    lines = ["| contender | dtype | layout | median ms | p90 ms | img/s | ratio to sepp | max abs diff | status |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        num = (lambda v, f: f.format(v) if v is not None else "—")
        status = r.status if r.status == "ok" else f"{r.status}: {r.reason}"
        lines.append(f"| {r.name} | {r.dtype} | {r.layout} | {num(r.median_ms, '{:.2f}')} | "
                     f"{num(r.p90_ms, '{:.2f}')} | {num(r.images_per_s, '{:.1f}')} | "
                     f"{num(r.ratio_to_sepp, '{:.2f}')} | {num(r.max_abs_diff, '{:.2e}')} | {status} |")
    return "\n".join(lines)


def kernel_table(kernels: Dict[str, Any]) -> str:
    """The ``kernels`` section as markdown: the copy bandwidth, the forward's FLOPs, and one row per operator, shape
    and dtype (sizes in MB = 1e6 bytes, times per call in µs)."""
    bw, fw = kernels["bandwidth"], kernels["forward"]
    num = (lambda v, f: f.format(v) if v is not None else "—")
    lines = [f"copy_ of {bw['bytes'] / 2**20:.0f} MiB: {bw['median_ms']:.3f} ms, {bw['gb_per_s']:.1f} GB/s "
             f"(read + write)",
             f"{fw['model']} forward at {fw['image_size']}×{fw['image_size']}: {fw['macs'] / 1e9:.3f} GMAC = "
             f"{fw['flops'] / 1e9:.3f} GFLOP per image (convolutions and linear layers), {fw['se_blocks']} SE blocks",
             "",
             "| op | shape | dtype | blocks | MB | MFLOP | median µs | GB/s | of copy | floor µs | status |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in kernels["results"]:
        ms = (lambda v: v * 1e3 if v is not None else None)
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
        lines.append(f"| {r['op']} | {'×'.join(map(str, r['shape']))} | {r['dtype']} | {len(r['blocks'])} | "
                     f"{r['bytes'] / 1e6:.3f} | {r['flops'] / 1e6:.3f} | {num(ms(r['median_ms']), '{:.1f}')} | "
                     f"{num(r['gb_per_s'], '{:.1f}')} | {num(r['fraction_of_copy'], '{:.0%}')} | "
                     f"{num(ms(r['floor_ms']), '{:.1f}')} | {status} |")
    for f in kernels["per_forward"]:
        lines.append(f"\nSE kernels in one forward ({f['dtype']}, {' + '.join(f['ops'])}, every SE block): "
                     f"{f['measured_ms']:.3f} ms measured, {f['floor_ms']:.3f} ms at the copy bandwidth")
    return "\n".join(lines)


def se_overhead(results: List[Result]) -> List[str]:
    out = []
    for o in results:
        if o.kind == "se-overhead" and o.median_ms:
            se = [r for r in results if r.name == o.compare_to and r.dtype == o.dtype and r.layout == o.layout
                  and r.median_ms]
            if se:
                out.append(f"SE overhead ({o.compare_to}, {o.dtype}): {se[0].model} {se[0].median_ms:.2f} ms vs "
                           f"{o.model} {o.median_ms:.2f} ms = {100 * (se[0].median_ms / o.median_ms - 1):+.1f}%")
    return out


def write_chart(results: List[Result], path: Path, title: str) -> Optional[Path]:
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
    colors = ["tab:red" if r.kind in ("sepp", "sepp-optimized", "sepp-cpp", "train-sepp") else
              "tab:orange" if r.kind == "se-overhead" else
              "tab:blue" for r in rows]
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [r.median_ms for r in rows], color=colors)
    for yi, r in zip(y, rows):
        ratio = f"  ×{r.ratio_to_sepp:.2f}" if r.ratio_to_sepp else ""
        ax.text(r.median_ms, yi, f" {r.median_ms:.1f} ms{ratio}", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("median ms (lower is better); ×: ratio to sepp at the same dtype", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, max(r.median_ms for r in rows) * 1.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------------------------------- main

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    import sepp

    p = argparse.ArgumentParser(prog="python -m sepp.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="se_resnet50", help="a sepp factory (default se_resnet50)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--dtypes", default=None,
                   help="comma list of float32, bfloat16, float16 (default: float32,bfloat16 on the CPU; "
                        "float32,float16,bfloat16 on CUDA)")
    p.add_argument("--contenders", default=None,
                   help=f"comma list of {', '.join(ALL_KINDS)} (default: all; the train kinds need --train)")
    p.add_argument("--skip", default="", help="comma list of contenders to leave out (e.g. compile)")
    p.add_argument("--train", action="store_true",
                   help="also time training steps of sepp and timm (train-sepp, train-timm): forward, cross-entropy, "
                        "backward and SGD, autocast for the reduced dtypes, channels_last")
    p.add_argument("--kernels", action="store_true",
                   help="also time sepp's SE operators at the model's SE-block shapes against the copy bandwidth")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads for every contender (default: torch's)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=30, help="timed iterations per contender, over all rounds")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds over the contenders (each runs iters/rounds per round)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="bench/results", help="where the JSON and the PNG go")
    p.add_argument("--no-chart", action="store_true")
    args = p.parse_args(argv)

    def fail(msg: str) -> None:
        p.error(msg)  # exits with status 2 and a one-line message

    if args.model not in sepp.model_names():
        fail(f"--model: unknown model {args.model!r}; expected one of: {', '.join(sepp.model_names())}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is available")
    for flag, v, lo in (("--batch-size", args.batch_size, 1), ("--image-size", args.image_size, 32),
                        ("--warmup", args.warmup, 0), ("--iters", args.iters, 1), ("--threads", args.threads, 0),
                        ("--rounds", args.rounds, 1)):
        if v < lo:
            fail(f"{flag}: expected an integer >= {lo}, got {v}")
    args.notes = []
    if args.dtypes is None:
        if args.device == "cuda":
            args.dtypes = "float32,float16,bfloat16"
        elif torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            args.dtypes = "float32,bfloat16"
        else:
            args.dtypes = "float32"
            args.notes.append("bfloat16 left out: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so every "
                              "contender would emulate it; pass --dtypes float32,bfloat16 to time it anyway")
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    explicit = args.contenders is not None
    args.contenders = [c for c in (args.contenders if explicit else ",".join(ALL_KINDS)).split(",") if c]
    args.skip = [c for c in args.skip.split(",") if c]
    for flag, values, allowed in (("--dtypes", args.dtypes, DTYPES), ("--contenders", args.contenders, ALL_KINDS),
                                  ("--skip", args.skip, ALL_KINDS)):
        bad = [v for v in values if v not in allowed]
        if bad or (flag != "--skip" and not values):
            fail(f"{flag}: expected a comma list of {', '.join(allowed)}, got {','.join(values) or 'nothing'}")
    train_kinds = [c for c in args.contenders if is_train(c)]
    if explicit and train_kinds and not args.train:
        fail(f"--contenders: {','.join(train_kinds)} run only with --train")
    return args


def run(args: argparse.Namespace, argv: Optional[Sequence[str]] = None,
        extra: Sequence[Contender] = ()) -> Dict[str, Any]:
    """Runs the comparison described by ``args`` (from :func:`parse_args`); ``extra`` contenders are appended (tests
    use it). Returns the report that is also written as JSON."""
    import sepp

    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=gen)
    truth_model = realistic_weights_(sepp.create_model(args.model), args.seed).eval()
    state = {k: v.detach().clone() for k, v in truth_model.state_dict().items()}
    with torch.inference_mode():
        truth = truth_model.to(args.device)(x.to(args.device)).to("cpu", torch.float64)

    info = machine_info(args.device)
    results: List[Result] = []
    with tempfile.TemporaryDirectory(prefix="sepp-bench-") as tmp:
        contenders = build_contenders(args, state, x, Path(tmp)) + list(extra)
        train_truth = None
        if any(is_train(c.kind) for c in contenders):  # sepp's float32 loss on the batch, in train mode
            try:
                with torch.no_grad():
                    logits = truth_model.train()(x.to(args.device))
                train_truth = F.cross_entropy(logits, train_labels(args, logits.shape[1]).to(args.device)).item()
            except Exception as e:  # e.g. train-mode BN on a 1×1 map of one image: the steps will say so too
                args.notes.append(f"train steps: sepp's float32 loss failed ({type(e).__name__}: "
                                  f"{str(e).strip().splitlines()[0] if str(e) else ''})")
        del truth_model
        prepared = []
        for c in contenders:
            print(f"  {c.name} [{c.dtype}, {c.layout}]: set-up and output check", file=sys.stderr, flush=True)
            r, run = prepare(c, args, truth, train_truth)
            prepared.append((c, r, run))
            results.append(r)
        print(f"  timing: {args.rounds} rounds over the contenders", file=sys.stderr, flush=True)
        measure_rounds(prepared, args)
        del prepared
    add_ratios(results)
    kernels = None
    if args.kernels:
        print(f"  SE kernels: {args.rounds} rounds over the operators and the copy", file=sys.stderr, flush=True)
        kernels = measure_kernels(args)

    report = {
        "schema": SCHEMA,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m sepp.bench " + shlex.join(list(argv) if argv is not None else sys.argv[1:]),
        "machine": info,
        "versions": versions(),
        "settings": {"model": args.model, "device": args.device, "batch_size": args.batch_size,
                     "image_size": args.image_size, "dtypes": args.dtypes, "threads": torch.get_num_threads(),
                     "warmup": args.warmup, "iters": args.iters, "rounds": args.rounds, "seed": args.seed,
                     "tolerance": TOLERANCE, "train": args.train, "kernels": args.kernels},
        "results": [dataclasses.asdict(r) for r in results],
        "se_overhead": se_overhead(results),
        "notes": args.notes,
    }
    if args.train:
        report["train"] = {"loss": "cross-entropy on fixed random labels", "optimizer": "SGD", "lr": TRAIN_LR,
                           "momentum": 0.9, "layout": "channels_last", "sepp_float32_loss": train_truth}
    if kernels is not None:
        report["kernels"] = kernels
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{machine_slug(info, args.device)}_{args.model}_b{args.batch_size}"
    json_path = out_dir / f"{stem}.json"
    _atomic_write_text(json_path, json.dumps(report, indent=1) + "\n")
    report["json_path"] = str(json_path)
    title = (f"{args.model}, batch {args.batch_size}, {args.image_size}², {args.device} "
             f"({info.get('gpu') or info['cpu']}, {torch.get_num_threads()} threads)")
    chart = None if args.no_chart else write_chart(results, out_dir / f"{stem}.png", title)
    report["chart_path"] = str(chart) if chart else None
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    report = run(args, argv)
    s = report["settings"]
    m = report["machine"]
    print(f"\n{s['model']}, batch {s['batch_size']}, {s['image_size']}×{s['image_size']}, device {s['device']} "
          f"({m.get('gpu') or m['cpu']}, {m['cores']} cores, ISA {' '.join(m['isa']) or '-'}), "
          f"{s['threads']} threads, median of {s['iters']} runs in {s['rounds']} rounds "
          f"({s['warmup']} warm-up runs per round)\n")
    print(markdown_table([Result(**r) for r in report["results"]]))
    for line in report["se_overhead"] + report["notes"]:
        print("\n" + line)
    if "kernels" in report:
        print("\nSE kernels (channels_last; median time per call; floor: the bytes at the copy bandwidth)\n")
        print(kernel_table(report["kernels"]))
    print(f"\nraw results: {report['json_path']}" + (f"\nchart: {report['chart_path']}" if report["chart_path"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
