"""What every part of the comparison shares: the report's schema, the dtypes and contender kinds, the tolerance of
the output check, and the exception a contender raises when it cannot run here."""

from __future__ import annotations

import torch

SCHEMA = "sepp-compare/1"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CONTENDER_KINDS = (
    "sepp",
    "sepp-optimized",
    "sepp-cpp",
    "sepp-compiled",
    "sepp-unhooked",
    "se-overhead",
    "reference",
    "timm",
    "compile",
    "onnxruntime",
    "openvino",
)
TRAIN_KINDS = ("train-sepp", "train-timm")  # run only with --train
ALL_KINDS = CONTENDER_KINDS + TRAIN_KINDS
TRAIN_LR = 1e-3  # SGD, momentum 0.9: small, so that steps on the same batch stay finite
KERNEL_OPS = ("se_squeeze", "se_excite", "se_scale")
# Relative tolerance of the output check: max|y - y_sepp_fp32| / max|y_sepp_fp32|.
TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 2e-2}


class Skip(Exception):
    """A contender that cannot run here (not installed, not supported on this device or dtype)."""


def is_train(kind: str) -> bool:
    return kind in TRAIN_KINDS


def sync(device: str) -> None:
    """Waits for the device's queued work (a no-op on the CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


def error_line(e: BaseException) -> str:
    """``Type: first line of the message``: the reason of a contender or operator that failed."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"
