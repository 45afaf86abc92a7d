"""Helpers for checking a model against another one: random weights that leave nothing at its initial value.

A fresh model starts every residual branch at zero (``zero_init_last``) with BN at the identity, so two
implementations can agree on it while differing in a branch; these functions put random values everywhere first.
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["randomize_", "randomize_norms_", "rel_err"]


def randomize_norms_(model: torch.nn.Module, seed: Optional[int] = None) -> torch.nn.Module:
    """Random affine parameters and running statistics in every BatchNorm (scales in [0.5, 1), variances in
    [0.75, 1.25)), the other weights untouched: realistic activations for an output check. Deterministic for
    ``seed``; from torch's global generator when it is None."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
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


def randomize_(model: torch.nn.Module, seed: Optional[int] = None) -> torch.nn.Module:
    """Random values in every parameter and buffer (BN scales around 1, BN variances positive), each weight scaled by
    1/sqrt(fan_in) so activations stay O(1) through deep networks. Deterministic for ``seed``; from torch's global
    generator when it is None."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None

    def randn(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)

    with torch.no_grad():
        for name, p in model.named_parameters():
            one = 1.0 if (p.dim() == 1 and name.endswith("weight")) else 0.0  # BN scales around 1
            p.copy_(randn(p) * (0.5 if p.dim() > 1 else 0.2) + one)
            if p.dim() == 4:
                p.mul_(1.0 / (p[0].numel() ** 0.5))
            elif p.dim() == 2:
                p.mul_(1.0 / (p.shape[1] ** 0.5))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(randn(b) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype).to(b.device) + 0.5)
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(|b|, tiny): one number for 'agree to 1e-10 relative'."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300)) if b.numel() else 0.0
