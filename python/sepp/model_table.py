"""The README's table of models: parameters, multiply-adds at the default resolution, where the weights come from.

``python -m sepp.model_table`` prints it (markdown). Counts come from :mod:`sepp.reference` built on the meta
device (no memory, no compute): parameters, and the multiply-adds of every convolution and linear layer in one
forward pass of one image (timm's "GMACs"; FLOPs are about twice that). A model's default resolution is that of
its first published checkpoint in timm's pretrained config (timm needed), 32 for the CIFAR models, else 224.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional

import torch
from torch import nn

from . import reference
from .hub import PUBLISHED

__all__ = ["Row", "rows", "markdown", "default_resolution", "macs"]


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    params: int
    resolution: int
    gmacs: float
    weights: str


def default_resolution(name: str) -> int:
    """The input size of the model's first published checkpoint in timm's config, 32 for the CIFAR models (stem
    type "cifar"), else 224."""
    tags = PUBLISHED.get(name)
    if not tags:
        return 32 if reference.CONFIGS[name].get("stem_type") == "cifar" else 224
    import timm

    cfg = timm.models.get_pretrained_cfg(tags[0].split("/", 1)[1])
    return int(cfg.input_size[-1]) if cfg is not None else 224


def macs(model: nn.Module, size: int) -> int:
    """Multiply-adds of the convolutions and linear layers in one forward of a 1 x C x size x size image."""
    total = [0]

    def count(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total[0] += out.numel() * m.in_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        in_chans = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
        with torch.no_grad():
            model(torch.empty(1, in_chans, size, size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total[0]


def _weights(name: str) -> str:
    tags = PUBLISHED.get(name)
    if not tags:
        return "none published (random init)"
    return ", ".join(f"`{t.split('/', 1)[1]}`" for t in tags)


def rows(resolution: Optional[Callable[[str], int]] = None) -> List[Row]:
    """One row per model of the reference's table, in its order."""
    resolution = resolution or default_resolution
    out = []
    for name in reference.model_names():
        with torch.device("meta"):
            model = reference.create_model(name).eval()
        size = resolution(name)
        params = sum(p.numel() for p in model.parameters())
        out.append(Row(name, params, size, macs(model, size) / 1e9, _weights(name)))
    return out


def markdown(table: List[Row]) -> str:
    lines = [
        "| model | parameters | resolution | GMACs | checkpoints (`timm/<tag>` on the Hugging Face Hub) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for r in table:
        lines.append(f"| `{r.name}` | {r.params:,} | {r.resolution} | {r.gmacs:.2f} | {r.weights} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(rows()))
