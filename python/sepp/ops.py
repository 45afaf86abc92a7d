"""sepp's operators (registered by libsepp with TORCH_LIBRARY under the ``sepp`` namespace)."""

from __future__ import annotations

from typing import Optional

import torch

from . import _C  # noqa: F401  (loading the extension loads libsepp, which registers the operators)

__all__ = ["se_excite", "se_scale", "se_squeeze"]


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
