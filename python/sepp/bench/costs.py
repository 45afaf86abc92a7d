"""The cost model, from shapes alone (nothing is computed): the SE blocks of a model, the bytes and FLOPs each SE
operator must move and do for one block, and the multiply-adds of one forward pass."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Tuple

import torch

from .common import DTYPES


@dataclasses.dataclass
class SEShape:
    """One SE block of a model: its name, the shape [N, C, H, W] of what it squeezes and scales, its bottleneck
    width and whether its two FC layers have biases."""

    block: str
    shape: List[int]
    rd: int
    bias: bool


@dataclasses.dataclass
class KernelCost:
    """What one SE operator must move and compute for one SE block: ``bytes`` read and written (each input and the
    output once), ``flops`` (multiply and add counted apart)."""

    op: str
    block: str
    shape: List[int]
    rd: int
    dtype: str
    bytes: int
    flops: int


@dataclasses.dataclass
class ForwardCost:
    """The work of one forward pass per image: multiply-adds of every convolution and linear layer (the SE FCs
    included; BN, ReLU, pooling and the SE's pointwise work left out), and ``flops = 2 * macs``."""

    model: str
    image_size: int
    macs: int
    flops: int
    se_blocks: int


def _trace(model: str, image_size: int, overrides: Dict[str, Any]) -> Tuple[List[SEShape], int]:
    """The SE blocks of ``model`` (a sepp model name, with :func:`sepp.create_model` overrides) at batch 1, and the
    multiply-adds of its convolutions and linear layers per image. Runs the reference model built from sepp's config
    on the meta device: shapes only, nothing is computed."""
    import sepp
    import sepp.reference as reference
    from sepp import _C

    if model not in sepp.model_names():
        raise ValueError(f"unknown model {model!r}; expected one of: {', '.join(sepp.model_names())}")
    config = {**dict(_C.model_config(model)), **overrides}
    with torch.device("meta"):
        net = reference.ResNet(**config).eval()
    blocks: List[SEShape] = []
    macs = [0]

    def hook(name: str) -> Callable[..., None]:
        def record(mod: torch.nn.Module, inputs: Tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if isinstance(mod, reference.SEBlock):
                blocks.append(SEShape(name, list(inputs[0].shape), mod.fc1.out_channels, mod.fc1.bias is not None))
            elif isinstance(mod, torch.nn.Conv2d):
                macs[0] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
            elif isinstance(mod, torch.nn.Linear):
                macs[0] += out.numel() * mod.in_features

        return record

    for name, mod in net.named_modules():
        if isinstance(mod, (reference.SEBlock, torch.nn.Conv2d, torch.nn.Linear)):
            mod.register_forward_hook(hook(name))
    with torch.no_grad():
        net(torch.empty(1, config["in_chans"], image_size, image_size, device="meta"))
    return blocks, macs[0]


def se_blocks(model: str, image_size: int = 224, batch_size: int = 1, **overrides: Any) -> List[SEShape]:
    """The SE blocks of a sepp model (name and :func:`sepp.create_model` overrides) in forward order, with the shape
    each sees at ``batch_size`` and ``image_size``."""
    blocks, _ = _trace(model, image_size, overrides)
    return [dataclasses.replace(b, shape=[batch_size, *b.shape[1:]]) for b in blocks]


def kernel_costs(block: SEShape, dtype: str) -> List[KernelCost]:
    """Bytes and FLOPs of ``se_squeeze``, ``se_excite`` and ``se_scale`` (with identity and ReLU, as the standard
    SE-ResNet block runs it) for one SE block, all tensors in ``dtype``."""
    e = DTYPES[dtype].itemsize
    n, c, h, w = block.shape
    rd, chw = block.rd, c * h * w
    weights = 2 * rd * c + (rd + c if block.bias else 0)
    per_op = {
        "se_squeeze": (e * (n * chw + n * c), n * chw),
        "se_excite": (e * (n * c + weights + n * c), 4 * n * c * rd),
        "se_scale": (e * (3 * n * chw + n * c), 3 * n * chw),
    }
    return [KernelCost(op, block.block, list(block.shape), rd, dtype, b, f) for op, (b, f) in per_op.items()]


def se_kernel_costs(
    model: str, batch_size: int, dtype: str, image_size: int = 224, **overrides: Any
) -> List[KernelCost]:
    """Bytes and FLOPs of the three SE operators for every SE block of ``model`` at ``batch_size`` and ``dtype``,
    computed from shapes alone (nothing runs): the numbers the floor of each kernel follows from."""
    return [k for b in se_blocks(model, image_size, batch_size, **overrides) for k in kernel_costs(b, dtype)]


def forward_cost(model: str, image_size: int = 224, **overrides: Any) -> ForwardCost:
    """Multiply-adds and FLOPs per image of one forward pass of ``model`` (see :class:`ForwardCost`)."""
    blocks, macs = _trace(model, image_size, overrides)
    return ForwardCost(model, image_size, macs, 2 * macs, len(blocks))
