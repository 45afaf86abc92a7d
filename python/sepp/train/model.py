"""What wraps the model in training: activation checkpointing over its stages, and an EMA of its weights."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["CheckpointedStages", "ModelEma"]


class CheckpointedStages(nn.Module):
    """A sepp ResNet whose stages are recomputed in backward (``torch.utils.checkpoint``, non-reentrant): only
    the stage boundaries are kept for backward. The gradients are those of the plain model; BN running statistics are
    updated twice per step (once more in the recomputation)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        h = m.forward_stem(x)
        for i in range(len(m.stage_channels)):
            h = checkpoint(getattr(m, f"layer{i + 1}"), h, use_reentrant=False)
        if m.options["preact"]:  # the final norm and ReLU of a pre-activation model
            h = m.act(m.norm(h))
        return m.forward_head(h)


class ModelEma:
    """An exponential moving average of a model's parameters and buffers, in a deep copy of it (a C++ clone for sepp
    models): ``ema = decay * ema + (1 - decay) * model`` after each step; integer buffers are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model, self.decay = model, decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        pairs = list(zip(self.module.state_dict().values(), self.model.state_dict().values()))
        floats = [(e, m) for e, m in pairs if e.is_floating_point()]
        torch._foreach_lerp_([e for e, _ in floats], [m for _, m in floats], 1.0 - self.decay)
        for e, m in pairs:
            if not e.is_floating_point():
                e.copy_(m)
