"""Runs one ONNX file in ONNX Runtime or OpenVINO in a process of its own, without torch, and prints one JSON line:
the median ms of the timed calls and the process's peak RSS. The comparison runs this file as a script (never as
part of the sepp package, whose import loads torch) to measure what each runtime costs in memory when it is deployed
alone.

    python _alone.py {onnxruntime,openvino} MODEL.onnx --threads 2 --iters 10 [--dtype bfloat16] [--batch-size 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time


def _onnxruntime(path: str, threads: int, dtype: str):
    import onnxruntime as ort

    if dtype != "float32":
        raise SystemExit(f"ONNX Runtime's CPU execution provider runs float32 only, got --dtype {dtype}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    return inp.shape, lambda x: session.run(None, {inp.name: x})[0]


def _openvino(path: str, threads: int, dtype: str):
    import openvino as ov

    core = ov.Core()
    hint = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}[dtype]
    compiled = core.compile_model(
        core.read_model(path),
        "CPU",
        {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads},
    )
    request = compiled.create_infer_request()

    def run(x):
        request.infer({0: x})
        return request.get_output_tensor(0).data

    dims = compiled.input(0).get_partial_shape()
    return [d.get_length() if d.is_static else str(d) for d in dims], run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="_alone.py", description=__doc__.split("\n\n")[0])
    p.add_argument("runtime", choices=["onnxruntime", "openvino"])
    p.add_argument("onnx")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=1, help="the batch, where the file's is symbolic")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    a = p.parse_args(argv)
    import numpy as np

    shape, run = {"onnxruntime": _onnxruntime, "openvino": _openvino}[a.runtime](a.onnx, a.threads, a.dtype)
    shape = list(shape)
    if shape and not isinstance(shape[0], int):
        shape[0] = a.batch_size
    if not all(isinstance(d, int) and d > 0 for d in shape):
        raise SystemExit(f"{a.onnx}: expected an input of fixed shape, got {shape}")
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    run(x)
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    report = {"runtime": a.runtime, "median_ms": statistics.median(times), "peak_rss_mib": peak_rss_mib()}
    report["torch_loaded"] = "torch" in sys.modules  # the point of running alone: it must stay False
    print(json.dumps(report))
    return 0


def peak_rss_mib() -> float:
    """The peak resident set of this process's own address space (VmHWM). Not ru_maxrss, which Linux carries over
    from the parent through fork and exec: it would report the comparison's peak, not this runtime's."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


if __name__ == "__main__":
    sys.exit(main())
