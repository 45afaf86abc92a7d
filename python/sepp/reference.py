"""Pure-PyTorch SE-ResNet: the readable specification of sepp, and the model to export to ONNX.

Same classes, options, factories and state_dict keys as the C++-backed :mod:`sepp` models, written with nothing but
``torch.nn``, following the paper (Hu et al., "Squeeze-and-Excitation Networks", arXiv 1709.01507) and timm's layout.
The tests hold sepp to this module in float64.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SEBlock",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "create_model",
    "model_names",
    "CONFIGS",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "se_resnet18",
    "se_resnet34",
    "se_resnet50",
    "se_resnet101",
    "se_resnet152",
    "se_resnext50_32x4d",
    "se_resnext101_32x4d",
]

_SQUEEZES = ("avg", "max", "avgmax")
_GATES = ("sigmoid", "hard_sigmoid", "tanh")
_STRATEGIES = ("standard", "pre", "post", "identity")


def reduced_channels(
    channels: int, reduction: int = 16, rd_channels: Optional[int] = None, rd_divisor: Optional[int] = None
) -> int:
    """The SE bottleneck width: ``rd_channels``, else ``C // r``, rounded as timm's make_divisible when
    ``rd_divisor`` is given (nearest multiple of the divisor, at least the divisor)."""
    if channels < 1:
        raise ValueError(f"SEBlock: expected channels >= 1, got {channels}")
    if rd_channels:
        if rd_channels < 1:
            raise ValueError(f"SEBlock: expected rd_channels >= 1, got {rd_channels}")
        return rd_channels
    if not 1 <= reduction <= channels:
        raise ValueError(f"SEBlock: expected 1 <= reduction <= channels ({channels}), got reduction = {reduction}")
    if not rd_divisor:
        return channels // reduction
    v = channels / reduction
    return max(rd_divisor, int(v + rd_divisor / 2) // rd_divisor * rd_divisor)


class SEBlock(nn.Module):
    """Squeeze (global pooling) -> excitation (FC -> ReLU -> FC -> gate) -> scale each channel of the input."""

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        rd_channels: Optional[int] = None,
        rd_divisor: Optional[int] = None,
        squeeze: str = "avg",
        gate: str = "sigmoid",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if squeeze not in _SQUEEZES:
            raise ValueError(f"SEBlock: expected squeeze to be one of {_SQUEEZES}, got {squeeze!r}")
        if gate not in _GATES:
            raise ValueError(f"SEBlock: expected gate to be one of {_GATES}, got {gate!r}")
        rd = reduced_channels(channels, reduction, rd_channels, rd_divisor)
        self.channels, self.squeeze, self.gate_name = channels, squeeze, gate
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=bias)
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=bias)

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        if self.squeeze == "avg":
            z = x.mean((2, 3), keepdim=True)
        elif self.squeeze == "max":
            z = x.amax((2, 3), keepdim=True)
        else:
            z = 0.5 * (x.mean((2, 3), keepdim=True) + x.amax((2, 3), keepdim=True))
        s = self.fc2(F.relu(self.fc1(z)))
        if self.gate_name == "sigmoid":
            return torch.sigmoid(s)
        if self.gate_name == "hard_sigmoid":
            # The definition, not F.hardsigmoid: torch's hardsigmoid backward multiplies by 1.0f / 6.0f, a float32
            # constant, so its float64 gradients are off by 3e-8 relative.
            return F.relu6(s + 3.0) / 6.0
        return torch.tanh(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excitation(x)


class _Block(nn.Module):
    expansion = 1

    def _finish_init(
        self, inplanes: int, outplanes: int, stride: int, se: bool, se_strategy: str, se_kwargs: Dict[str, Any]
    ) -> None:
        if se_strategy not in _STRATEGIES:
            raise ValueError(f"expected se_strategy to be one of {_STRATEGIES}, got {se_strategy!r}")
        self.se_strategy = se_strategy
        self.se = SEBlock(inplanes if se_strategy == "pre" else outplanes, **se_kwargs) if se else None
        self.downsample = None
        if stride != 1 or inplanes != outplanes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False), nn.BatchNorm2d(outplanes)
            )

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x) if self.downsample is not None else x
        if self.se is not None and self.se_strategy == "pre":
            x = self.se(x)
        out = self.branch(x)
        if self.se is not None and self.relu_before_se:
            out = F.relu(out)
        if self.se is None or self.se_strategy == "pre":
            return F.relu(out + shortcut)
        if self.se_strategy == "standard":  # the paper's SE-ResNet module: after the last BN, before the sum
            return F.relu(self.se(out) + shortcut)
        if self.se_strategy == "post":
            return self.se(F.relu(out + shortcut))
        return F.relu(out + self.se(shortcut))  # "identity"


def _se_kwargs(
    reduction: int, rd_channels: Optional[int], rd_divisor: Optional[int], squeeze: str, gate: str, se_bias: bool
) -> Dict[str, Any]:
    return dict(
        reduction=reduction, rd_channels=rd_channels, rd_divisor=rd_divisor, squeeze=squeeze, gate=gate, bias=se_bias
    )


class BasicBlock(_Block):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        groups: int = 1,
        base_width: int = 64,
        stride_in_1x1: bool = False,
        se: bool = False,
        reduction: int = 16,
        rd_channels: Optional[int] = None,
        rd_divisor: Optional[int] = None,
        squeeze: str = "avg",
        gate: str = "sigmoid",
        se_bias: bool = True,
        se_strategy: str = "standard",
        relu_before_se: bool = False,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError(f"BasicBlock: expected groups = 1 and base_width = 64, got {groups}, {base_width}")
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self._finish_init(
            inplanes,
            planes,
            stride,
            se,
            se_strategy,
            _se_kwargs(reduction, rd_channels, rd_divisor, squeeze, gate, se_bias),
        )
        self.relu_before_se = relu_before_se

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(_Block):
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        groups: int = 1,
        base_width: int = 64,
        stride_in_1x1: bool = False,
        se: bool = False,
        reduction: int = 16,
        rd_channels: Optional[int] = None,
        rd_divisor: Optional[int] = None,
        squeeze: str = "avg",
        gate: str = "sigmoid",
        se_bias: bool = True,
        se_strategy: str = "standard",
        relu_before_se: bool = False,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        outplanes = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, width, 1, stride=s1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=s3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self._finish_init(
            inplanes,
            outplanes,
            stride,
            se,
            se_strategy,
            _se_kwargs(reduction, rd_channels, rd_divisor, squeeze, gate, se_bias),
        )
        self.relu_before_se = relu_before_se

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


class ResNet(nn.Module):
    """ResNet / ResNeXt with optional SE blocks; the options of :class:`sepp.ResNet`."""

    def __init__(
        self,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        num_classes: int = 1000,
        in_chans: int = 3,
        groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = False,
        se: Union[bool, Sequence[bool]] = False,
        reduction: int = 16,
        rd_channels: Optional[int] = None,
        rd_divisor: Optional[int] = None,
        squeeze: str = "avg",
        gate: str = "sigmoid",
        se_bias: bool = True,
        se_strategy: str = "standard",
        relu_before_se: bool = False,
        zero_init_last: bool = True,
        stem_pool_ceil_mode: bool = False,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"ResNet: expected block to be 'basic' or 'bottleneck', got {block!r}")
        if len(layers) != 4:
            raise ValueError(f"ResNet: expected 4 stage depths in layers, got {len(layers)}")
        stages = [se] * 4 if isinstance(se, bool) else list(se)
        block_cls = BasicBlock if block == "basic" else Bottleneck
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = (
            nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)
            if stem_pool_ceil_mode
            else nn.MaxPool2d(3, stride=2, padding=1)
        )
        inplanes = 64
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(depth):
                blocks.append(
                    block_cls(
                        inplanes,
                        planes,
                        stride=(1 if i == 0 or j > 0 else 2),
                        groups=groups,
                        base_width=width_per_group,
                        stride_in_1x1=stride_in_1x1,
                        se=stages[i],
                        reduction=reduction,
                        rd_channels=rd_channels,
                        rd_divisor=rd_divisor,
                        squeeze=squeeze,
                        gate=gate,
                        se_bias=se_bias,
                        se_strategy=se_strategy,
                        relu_before_se=relu_before_se,
                    )
                )
                inplanes = planes * block_cls.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = inplanes
        # timm's (and sepp's) global_pool.pool / global_pool.flatten: the head's modules carry the same names
        self.global_pool = nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1)))
        self.fc = nn.Linear(inplanes, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, _Block):
                    nn.init.zeros_(m.last_bn().weight)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(F.relu(self.bn1(self.conv1(x))))

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.forward_stem(x)
        out = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            out.append(x)
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _resnet(block: str, layers: Sequence[int], **kw: Any) -> Dict[str, Any]:
    return dict(block=block, layers=tuple(layers), **kw)


CONFIGS: Dict[str, Dict[str, Any]] = {
    "resnet18": _resnet("basic", (2, 2, 2, 2)),
    "resnet34": _resnet("basic", (3, 4, 6, 3)),
    "resnet50": _resnet("bottleneck", (3, 4, 6, 3)),
    "resnet101": _resnet("bottleneck", (3, 4, 23, 3)),
    "resnet152": _resnet("bottleneck", (3, 8, 36, 3)),
    "se_resnet18": _resnet("basic", (2, 2, 2, 2), se=True),
    "se_resnet34": _resnet("basic", (3, 4, 6, 3), se=True),
    "se_resnet50": _resnet("bottleneck", (3, 4, 6, 3), se=True),
    "se_resnet101": _resnet("bottleneck", (3, 4, 23, 3), se=True),
    "se_resnet152": _resnet("bottleneck", (3, 8, 36, 3), se=True),
    "se_resnext50_32x4d": _resnet("bottleneck", (3, 4, 6, 3), se=True, groups=32, width_per_group=4),
    "se_resnext101_32x4d": _resnet("bottleneck", (3, 4, 23, 3), se=True, groups=32, width_per_group=4),
}


def model_names() -> List[str]:
    return list(CONFIGS)


def create_model(name: str, **overrides: Any) -> ResNet:
    if name not in CONFIGS:
        raise ValueError(f"unknown model {name!r}; expected one of: {', '.join(CONFIGS)}")
    return ResNet(**{**CONFIGS[name], **overrides})


def _factory(name: str) -> Callable[..., ResNet]:
    def factory(**overrides: Any) -> ResNet:
        return create_model(name, **overrides)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"Reference {name} (pure PyTorch)."
    return factory


resnet18, resnet34, resnet50, resnet101, resnet152 = (
    _factory(n) for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
)
se_resnet18, se_resnet34, se_resnet50, se_resnet101, se_resnet152 = (
    _factory(n) for n in ("se_resnet18", "se_resnet34", "se_resnet50", "se_resnet101", "se_resnet152")
)
se_resnext50_32x4d, se_resnext101_32x4d = (_factory(n) for n in ("se_resnext50_32x4d", "se_resnext101_32x4d"))
