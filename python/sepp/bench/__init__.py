"""Side-by-side latency comparison of sepp with what a user would run instead: ``python -m sepp.bench`` (see
:mod:`sepp.bench.cli` for what it runs and the flags).

One job per module:

- ``cli``: the command line (:func:`parse_args`), the comparison (:func:`run`) and its printout (:func:`main`);
- ``common``: the report's schema, the dtypes, the contender kinds, the tolerance of the output check, :class:`Skip`;
- ``contenders``: the rows of the comparison (:class:`Contender`) and the functions that set each one up;
- ``runners``: the contenders outside torch: ONNX Runtime, OpenVINO and the C++ ``sepp-bench`` as a child process;
- ``timing``: the output check, the timing in rounds and the statistics of a row (:class:`Result`);
- ``costs``: the cost model: SE blocks, the bytes and FLOPs of each SE operator, the multiply-adds of a forward;
- ``kernels``: the SE operators timed at the model's SE-block shapes against the copy bandwidth (``--kernels``);
- ``report``: the machine and versions, the markdown tables and the PNG chart.
"""

from __future__ import annotations

from .cli import main, parse_args, run
from .common import (
    ALL_KINDS,
    CONTENDER_KINDS,
    DTYPES,
    KERNEL_OPS,
    SCHEMA,
    TOLERANCE,
    TRAIN_KINDS,
    TRAIN_LR,
    Skip,
    is_train,
)
from .contenders import TIMM_NAMES, Contender, Setups, build_contenders, train_labels, train_step_runner
from .costs import ForwardCost, KernelCost, SEShape, forward_cost, kernel_costs, se_blocks, se_kernel_costs
from .kernels import COPY_MIB, KernelResult, measure_kernels, sepp_op
from .report import kernel_table, machine_info, machine_slug, markdown_table, se_overhead, versions, write_chart
from .runners import onnxruntime_setup, openvino_setup, run_sepp_bench, sepp_bench_executable
from .timing import Result, add_ratios, measure_rounds, prepare, time_runner

__all__ = [
    "main",
    "parse_args",
    "run",
    "ALL_KINDS",
    "CONTENDER_KINDS",
    "DTYPES",
    "KERNEL_OPS",
    "SCHEMA",
    "TOLERANCE",
    "TRAIN_KINDS",
    "TRAIN_LR",
    "Skip",
    "is_train",
    "TIMM_NAMES",
    "Contender",
    "Setups",
    "build_contenders",
    "train_labels",
    "train_step_runner",
    "ForwardCost",
    "KernelCost",
    "SEShape",
    "forward_cost",
    "kernel_costs",
    "se_blocks",
    "se_kernel_costs",
    "COPY_MIB",
    "KernelResult",
    "measure_kernels",
    "sepp_op",
    "kernel_table",
    "machine_info",
    "machine_slug",
    "markdown_table",
    "se_overhead",
    "versions",
    "write_chart",
    "onnxruntime_setup",
    "openvino_setup",
    "run_sepp_bench",
    "sepp_bench_executable",
    "Result",
    "add_ratios",
    "measure_rounds",
    "prepare",
    "time_runner",
]
