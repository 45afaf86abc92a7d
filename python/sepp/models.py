"""SE block, residual blocks and (SE-)ResNet / ResNeXt: Python faces of the C++ modules in libsepp.

Every class here is a :class:`torch.nn.Module` whose forward runs in C++ (see :mod:`sepp._module`). Constructor
arguments are the C++ options; they are readable as attributes (``m.num_classes``, ``m.layers``, ``se.reduction``).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch

from . import _C
from ._module import TypedCppModule

__all__ = ["SEBlock", "BasicBlock", "Bottleneck", "ResNet", "model_names", "create_model"]


def _se_stages(se: Union[bool, Sequence[bool]]) -> List[bool]:
    if isinstance(se, bool):
        return [se] * 4
    stages = list(se)
    if len(stages) != 4 or not all(isinstance(s, bool) for s in stages):
        raise ValueError(f"se: expected a bool or 4 bools (one per stage), got {se!r}")
    return stages


class SEBlock(TypedCppModule):
    """Squeeze-and-Excitation block: ``y = x * gate(fc2(relu(fc1(squeeze(x)))))`` per sample and channel.

    Args:
        channels: channels C of the input (and output).
        reduction: reduction ratio r (1 <= r <= C); the bottleneck has ``C // r`` channels.
        rd_channels: explicit bottleneck width (overrides ``reduction``).
        rd_divisor: round ``C / r`` to a multiple of this, as timm does (8 reproduces timm's widths).
        squeeze: ``"avg"`` (global average pool, the paper), ``"max"`` or ``"avgmax"``.
        gate: ``"sigmoid"`` (the paper), ``"hard_sigmoid"`` or ``"tanh"``.
        bias: biases on the two FC layers (stored as 1x1 convolutions ``fc1``, ``fc2`` as in timm).
    """

    _cpp_type = _C.SEBlock

    def __init__(self, channels: int, reduction: int = 16, rd_channels: Optional[int] = None,
                 rd_divisor: Optional[int] = None, squeeze: str = "avg", gate: str = "sigmoid",
                 bias: bool = True) -> None:
        super().__init__(_C.SEBlock(channels, reduction, rd_channels, rd_divisor, squeeze, gate, bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] -> x scaled per channel by its excitation, same shape."""
        return self._cpp.forward(x)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The excitation s [N, C, 1, 1] of x [N, C, H, W]."""
        return self._cpp.gate(x)


class _Block(TypedCppModule):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64,
                 stride_in_1x1: bool = False, se: bool = False, reduction: int = 16,
                 rd_channels: Optional[int] = None, rd_divisor: Optional[int] = None, squeeze: str = "avg",
                 gate: str = "sigmoid", se_bias: bool = True, se_strategy: str = "standard",
                 relu_before_se: bool = False) -> None:
        super().__init__(self._cpp_type(inplanes, planes, stride, groups, base_width, stride_in_1x1, se, reduction,
                                        rd_channels, rd_divisor, squeeze, gate, se_bias, se_strategy, relu_before_se))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._cpp.forward(x)


class BasicBlock(_Block):
    """ResNet basic block (two 3x3 convolutions), with an optional SE block placed by ``se_strategy``:
    ``"standard"`` (after the last BN, before the sum), ``"pre"``, ``"post"`` or ``"identity"``."""

    _cpp_type = _C.BasicBlock
    expansion = 1


class Bottleneck(_Block):
    """ResNet bottleneck (1x1, 3x3 grouped, 1x1; output ``planes * 4`` channels), with an optional SE block placed by
    ``se_strategy`` (see :class:`BasicBlock`). ``groups``/``base_width`` give ResNeXt; ``stride_in_1x1`` puts the
    stride on the first 1x1 as the original Caffe SENet weights do."""

    _cpp_type = _C.Bottleneck
    expansion = 4


class ResNet(TypedCppModule):
    """ResNet / ResNeXt with optional SE blocks: one class, variants are options (see :func:`create_model`).

    Parameter names and shapes are timm's (and torchvision's for the plain ResNets), so their state dicts load as
    they are.

    Args:
        block: ``"basic"`` or ``"bottleneck"``.
        layers: blocks in each of the four stages.
        num_classes: classifier outputs; 0 = no classifier (``forward`` returns pooled features).
        in_chans: input channels.
        groups, width_per_group: ResNeXt cardinality and width per group.
        stride_in_1x1: downsampling stride on the bottleneck's first 1x1 (Caffe SENet) instead of its 3x3.
        se: SE blocks in every stage (bool) or per stage (4 bools).
        reduction, rd_channels, rd_divisor, squeeze, gate, se_bias: the SE blocks' options (see :class:`SEBlock`).
        se_strategy: where the SE block sits in a residual block (see :class:`BasicBlock`).
        relu_before_se: a ReLU on each residual branch before its SE block (timm's legacy SE-ResNet-18/34).
        zero_init_last: start the last BN of each residual branch at zero (as timm).
        stem_pool_ceil_mode: the stem's max pool without padding and rounding up (original Caffe SENet, Cadene).
        drop_rate: dropout before the classifier, in training.
    """

    _cpp_type = _C.ResNet

    def __init__(self, block: str = "bottleneck", layers: Sequence[int] = (3, 4, 6, 3), num_classes: int = 1000,
                 in_chans: int = 3, groups: int = 1, width_per_group: int = 64, stride_in_1x1: bool = False,
                 se: Union[bool, Sequence[bool]] = False, reduction: int = 16, rd_channels: Optional[int] = None,
                 rd_divisor: Optional[int] = None, squeeze: str = "avg", gate: str = "sigmoid", se_bias: bool = True,
                 se_strategy: str = "standard", relu_before_se: bool = False, zero_init_last: bool = True,
                 stem_pool_ceil_mode: bool = False,
                 drop_rate: float = 0.0) -> None:
        super().__init__(_C.ResNet(block, list(layers), num_classes, in_chans, groups, width_per_group,
                                   stride_in_1x1, _se_stages(se), reduction, rd_channels, rd_divisor, squeeze, gate,
                                   se_bias, se_strategy, relu_before_se, zero_init_last, stem_pool_ceil_mode,
                                   drop_rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, in_chans, H, W] -> logits [N, num_classes]."""
        return self._cpp.forward(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the four stages: [N, in_chans, H, W] -> [N, num_features, H/32, W/32]."""
        return self._cpp.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, dropout, classifier; ``pre_logits`` stops before the classifier."""
        return self._cpp.forward_head(x, pre_logits)

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The four stage outputs (strides 4, 8, 16, 32), for detection and segmentation backbones."""
        return self._cpp.forward_stages(x)

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier with ``num_classes`` outputs (0 = none), on the model's device."""
        self._cpp.reset_classifier(num_classes)
        self._sepp_sync()

    @property
    def num_features(self) -> int:
        """Channels of the pooled features."""
        return self._cpp.num_features

    @property
    def stage_channels(self) -> Tuple[int, ...]:
        """Channels of each stage's output."""
        return tuple(self._cpp.stage_channels)


def model_names() -> List[str]:
    """Names accepted by :func:`create_model` (each also a function of this package)."""
    return list(_C.model_names())


def create_model(name: str, **overrides: Any) -> ResNet:
    """A freshly initialised model from the factory table, with keyword overrides of its :class:`ResNet` options
    (e.g. ``num_classes=10``, ``rd_divisor=8``, ``drop_rate=0.2``)."""
    config = dict(_C.model_config(name))
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise TypeError(f"create_model({name!r}): unknown option(s) {unknown}; expected some of {sorted(config)}")
    config.update(overrides)
    return ResNet(**config)
