"""sepp's operators (registered by libsepp with TORCH_LIBRARY under the ``sepp`` namespace)."""

from __future__ import annotations

from typing import Optional

import torch

from . import _C  # noqa: F401  (loading the extension loads libsepp, which registers the operators)

__all__ = ["se_scale"]


def se_scale(x: torch.Tensor, scale: torch.Tensor, identity: Optional[torch.Tensor] = None,
             relu: bool = False) -> torch.Tensor:
    """``relu?(x * scale[n, c] + identity?)`` in one pass (CPU and CUDA kernels, differentiable).

    ``x`` is [N, C, H, W] (contiguous or channels_last, kept in the output), ``scale`` [N, C] or [N, C, 1, 1],
    ``identity`` like ``x``.
    """
    return torch.ops.sepp.se_scale(x, scale, identity, relu)
