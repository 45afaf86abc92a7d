"""sepp's operators (registered by libsepp with TORCH_LIBRARY under the ``sepp`` namespace)."""

from __future__ import annotations

from typing import Dict, List, Optional

import torch

from . import _C  # noqa: F401  (loading the extension loads libsepp, which registers the operators)

__all__ = ["check_kernels", "kernel_checks", "se_excite", "se_scale", "se_squeeze"]


def se_scale(
    x: torch.Tensor, scale: torch.Tensor, identity: Optional[torch.Tensor] = None, relu: bool = False
) -> torch.Tensor:
    """``relu?(x * scale[n, c] + identity?)`` in one pass (CPU and CUDA kernels, differentiable).

    ``x`` is [N, C, H, W] (contiguous or channels_last, kept in the output), ``scale`` [N, C] or [N, C, 1, 1],
    ``identity`` like ``x``.
    """
    return torch.ops.sepp.se_scale(x, scale, identity, relu)


def se_squeeze(x: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Channel means ``[N, C]`` of ``x`` ``[N, C, H, W]`` (contiguous or channels_last), accumulated in float32 or
    wider; in ``dtype`` when given, else in ``x``'s dtype. CPU and CUDA kernels, differentiable."""
    return torch.ops.sepp.se_squeeze(x, dtype)


def se_excite(
    z: torch.Tensor,
    w1: torch.Tensor,
    b1: Optional[torch.Tensor],
    w2: torch.Tensor,
    b2: Optional[torch.Tensor],
    gate: str = "sigmoid",
) -> torch.Tensor:
    """``gate(relu(z @ w1.T + b1) @ w2.T + b2)`` for ``z`` [N, C], ``w1`` [R, C], ``w2`` [C, R] (biases optional),
    gate ``"sigmoid"``, ``"hard_sigmoid"`` or ``"tanh"``; one CUDA launch for all N. Differentiable."""
    return torch.ops.sepp.se_excite(z, w1, b1, w2, b2, gate)


def kernel_checks() -> List[Dict[str, str]]:
    """The self-checks of sepp's own kernels that this process has run, in order: one dict per (operator, device,
    dtype) with ``op``, ``device``, ``dtype``, ``state`` (``"ok"`` or ``"failed"``) and ``error``.

    The first time a kernel runs on a CUDA device in a dtype, it is first run on small inputs against the same
    computation in float64 on the CPU; a kernel that fails is replaced by ATen's operators on that device and dtype
    for the rest of the process, with one warning. ``optimize_for_inference`` runs the checks when it builds the
    model. The CPU kernels are covered by the test suite and not checked at run time.
    """
    return _C.kernel_checks()


def check_kernels(device: torch.device | str, dtype: torch.dtype = torch.float32) -> List[Dict[str, str]]:
    """Runs the self-checks of the kernels on ``device`` in ``dtype`` (and float32) now, where they have not run;
    returns :func:`kernel_checks`."""
    _C.check_kernels(torch.device(device), dtype)
    return kernel_checks()
