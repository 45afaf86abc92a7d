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

On the CPU the report also gives the floor of each dtype (the model's FLOPs at the rate of a large 1x1 convolution,
measured in the same run: ``floor.py``) and the peak memory of ``sepp-bench --optimize``, ONNX Runtime and OpenVINO,
each alone in its own process (``memory.py``); ``--no-floor`` and ``--no-memory`` leave them out.

Prints a markdown table (medians, the ratio of each to sepp at the same dtype), and writes the raw results as JSON and
a PNG chart under ``--output-dir`` (default ``bench/results``), named by machine, device and model.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..files import write_text_atomic
from ..testing import randomize_norms_
from .common import ALL_KINDS, DTYPES, SCHEMA, TOLERANCE, TRAIN_LR, error_line, is_train
from .contenders import Contender, Setups, build_contenders, train_labels
from .floor import floor_lines, measure_floor
from .kernels import measure_kernels
from .memory import measure_memory, memory_lines
from .report import (
    hook_cost,
    kernel_table,
    machine_info,
    machine_slug,
    markdown_table,
    se_overhead,
    versions,
    write_chart,
)
from .runners import onnx_file
from .timing import Result, add_ratios, measure_rounds, prepare


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    import sepp

    p = argparse.ArgumentParser(
        prog="python -m sepp.bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="se_resnet50", help="a sepp factory (default se_resnet50)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument(
        "--dtypes",
        default=None,
        help="comma list of float32, bfloat16, float16 (default: float32,bfloat16 on the CPU; "
        "float32,float16,bfloat16 on CUDA)",
    )
    p.add_argument(
        "--contenders",
        default=None,
        help=f"comma list of {', '.join(ALL_KINDS)} (default: all; the train kinds need --train)",
    )
    p.add_argument("--skip", default="", help="comma list of contenders to leave out (e.g. compile)")
    p.add_argument(
        "--train",
        action="store_true",
        help="also time training steps of sepp and timm (train-sepp, train-timm): forward, cross-entropy, "
        "backward and SGD, autocast for the reduced dtypes, channels_last",
    )
    p.add_argument(
        "--kernels",
        action="store_true",
        help="also time sepp's SE operators at the model's SE-block shapes against the copy bandwidth",
    )
    p.add_argument("--threads", type=int, default=0, help="intra-op threads for every contender (default: torch's)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=30, help="timed iterations per contender, over all rounds")
    p.add_argument(
        "--rounds", type=int, default=3, help="rounds over the contenders (each runs iters/rounds per round)"
    )
    p.add_argument(
        "--no-floor",
        action="store_true",
        help="leave out the floor (the model's FLOPs at the rate of a large 1x1 convolution, measured per dtype)",
    )
    p.add_argument(
        "--no-memory",
        action="store_true",
        help="leave out the peak memory of sepp-bench --optimize, ONNX Runtime and OpenVINO, each alone in a process",
    )
    p.add_argument(
        "--cpu-sepp-bench",
        metavar="PATH",
        help="a sepp-bench built against the CPU-only torch wheel (scripts/cpu_deploy.sh): its peak memory is "
        "reported beside the installed sepp-bench's",
    )
    p.add_argument("--memory-iters", type=int, default=10, help=argparse.SUPPRESS)
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
    for flag, v, lo in (
        ("--batch-size", args.batch_size, 1),
        ("--image-size", args.image_size, 32),
        ("--warmup", args.warmup, 0),
        ("--iters", args.iters, 1),
        ("--threads", args.threads, 0),
        ("--rounds", args.rounds, 1),
        ("--memory-iters", args.memory_iters, 1),
    ):
        if v < lo:
            fail(f"{flag}: expected an integer >= {lo}, got {v}")
    if args.cpu_sepp_bench is not None and not (
        os.path.isfile(args.cpu_sepp_bench) and os.access(args.cpu_sepp_bench, os.X_OK)
    ):
        fail(f"--cpu-sepp-bench: expected an executable file, got {args.cpu_sepp_bench!r}")
    args.notes = []
    if args.dtypes is None:
        if args.device == "cuda":
            args.dtypes = "float32,float16,bfloat16"
        elif torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            args.dtypes = "float32,bfloat16"
        else:
            args.dtypes = "float32"
            args.notes.append(
                "bfloat16 left out: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so every "
                "contender would emulate it; pass --dtypes float32,bfloat16 to time it anyway"
            )
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    explicit = args.contenders is not None
    args.contenders = [c for c in (args.contenders if explicit else ",".join(ALL_KINDS)).split(",") if c]
    args.skip = [c for c in args.skip.split(",") if c]
    for flag, values, allowed in (
        ("--dtypes", args.dtypes, DTYPES),
        ("--contenders", args.contenders, ALL_KINDS),
        ("--skip", args.skip, ALL_KINDS),
    ):
        bad = [v for v in values if v not in allowed]
        if bad or (flag != "--skip" and not values):
            fail(f"{flag}: expected a comma list of {', '.join(allowed)}, got {','.join(values) or 'nothing'}")
    train_kinds = [c for c in args.contenders if is_train(c)]
    if explicit and train_kinds and not args.train:
        fail(f"--contenders: {','.join(train_kinds)} run only with --train")
    return args


def run(
    args: argparse.Namespace, argv: Optional[Sequence[str]] = None, extra: Sequence[Contender] = ()
) -> Dict[str, Any]:
    """Runs the comparison described by ``args`` (from :func:`parse_args`); ``extra`` contenders are appended (tests
    use it). Returns the report that is also written as JSON."""
    import sepp

    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=gen)
    truth_model = randomize_norms_(sepp.create_model(args.model), args.seed).eval()
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
                args.notes.append(f"train steps: sepp's float32 loss failed ({error_line(e)})")
        del truth_model
        prepared = []
        for c in contenders:
            print(f"  {c.name} [{c.dtype}, {c.layout}]: set-up and output check", file=sys.stderr, flush=True)
            r, timed = prepare(c, args, truth, train_truth)
            prepared.append((c, r, timed))
            results.append(r)
        print(f"  timing: {args.rounds} rounds over the contenders", file=sys.stderr, flush=True)
        measure_rounds(prepared, args)
        del prepared
        floors = []
        if not args.no_floor and args.device == "cpu":
            print(f"  floor: a large 1x1 convolution, {args.rounds} rounds", file=sys.stderr, flush=True)
            floors = [dataclasses.asdict(f) for f in measure_floor(args, args.dtypes, args.rounds)]
        memory = []
        kinds = {c.kind for c in contenders}
        if not args.no_memory and args.device == "cpu" and kinds & {"sepp-cpp", "onnxruntime", "openvino"}:
            print("  peak memory: each deployment alone in its own process", file=sys.stderr, flush=True)

            def onnx() -> Path:
                return onnx_file(x, Path(tmp), lambda: Setups(args, state, x, Path(tmp)).reference_model())

            memory = [dataclasses.asdict(m) for m in measure_memory(args, args.dtypes, kinds, onnx, Path(tmp))]
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
        "settings": {
            "model": args.model,
            "device": args.device,
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "dtypes": args.dtypes,
            "threads": torch.get_num_threads(),
            "warmup": args.warmup,
            "iters": args.iters,
            "rounds": args.rounds,
            "seed": args.seed,
            "tolerance": TOLERANCE,
            "train": args.train,
            "kernels": args.kernels,
        },
        "results": [dataclasses.asdict(r) for r in results],
        "floor": floors,
        "memory": memory,
        "se_overhead": se_overhead(results),
        "hook_cost": hook_cost(results),
        "notes": args.notes,
    }
    if args.train:
        report["train"] = {
            "loss": "cross-entropy on fixed random labels",
            "optimizer": "SGD",
            "lr": TRAIN_LR,
            "momentum": 0.9,
            "layout": "channels_last",
            "sepp_float32_loss": train_truth,
        }
    if kernels is not None:
        report["kernels"] = kernels
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{machine_slug(info, args.device)}_{args.model}_b{args.batch_size}"
    json_path = out_dir / f"{stem}.json"
    write_text_atomic(json_path, json.dumps(report, indent=1) + "\n")
    report["json_path"] = str(json_path)
    title = (
        f"{args.model}, batch {args.batch_size}, {args.image_size}², {args.device} "
        f"({info.get('gpu') or info['cpu']}, {torch.get_num_threads()} threads)"
    )
    chart = None if args.no_chart else write_chart(results, out_dir / f"{stem}.png", title, floors)
    report["chart_path"] = str(chart) if chart else None
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    report = run(args, argv)
    s = report["settings"]
    m = report["machine"]
    print(
        f"\n{s['model']}, batch {s['batch_size']}, {s['image_size']}×{s['image_size']}, device {s['device']} "
        f"({m.get('gpu') or m['cpu']}, {m['cores']} cores, ISA {' '.join(m['isa']) or '-'}), "
        f"{s['threads']} threads, median of {s['iters']} runs in {s['rounds']} rounds "
        f"({s['warmup']} warm-up runs per round)\n"
    )
    print(markdown_table([Result(**r) for r in report["results"]]))
    lines = floor_lines(report["floor"], report["results"]) + memory_lines(report["memory"])
    for line in lines + report["se_overhead"] + report["hook_cost"] + report["notes"]:
        print("\n" + line)
    if "kernels" in report:
        print("\nSE kernels (channels_last; median time per call; floor: the bytes at the copy bandwidth)\n")
        print(kernel_table(report["kernels"]))
    chart = f"\nchart: {report['chart_path']}" if report["chart_path"] else ""
    print(f"\nraw results: {report['json_path']}{chart}")
    return 0
