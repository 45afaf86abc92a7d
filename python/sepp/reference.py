"""Pure-PyTorch SE-ResNet: the readable specification of sepp, and the model to export to ONNX.

Same classes, options, factories and state_dict keys as the C++-backed :mod:`sepp` models, written with nothing but
``torch.nn``, following the paper (Hu et al., "Squeeze-and-Excitation Networks", arXiv 1709.01507) and timm's layout.
The tests hold sepp to this module in float64.

:data:`CONFIGS` names sepp's models and every timm SE-ResNet under its timm name: resnet.py's ``seresnet*``,
``seresnext*`` and ``senet154`` (their deep stems, average-pool downsamples and anti-aliasing are options), and
senet.py's ``legacy_*`` ports of the Caffe SENets (in the names :mod:`sepp.convert` gives their checkpoints). It
also names the paper's CIFAR-10 networks, ``resnet{20,32,56,110,164}_cifar`` and their ``se_`` versions: the
pre-activation ResNets of He et al. ("Identity Mappings in Deep Residual Networks", 2016; ``preact=True``) on three
stages of 16, 32 and 64 planes behind a single 3x3 stem (``stem_type="cifar"``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SEBlock", "BasicBlock", "Bottleneck", "ResNet", "create_model", "model_names", "CONFIGS"]

_SQUEEZES = ("avg", "max", "avgmax")
_GATES = ("sigmoid", "hard_sigmoid", "tanh")
_STRATEGIES = ("standard", "pre", "post", "identity")
_STEMS = ("", "deep", "deep_tiered", "cifar")
_AA_LAYERS = ("", "avgpool")


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

    @staticmethod
    def _check_options(
        who: str,
        stride: int,
        stride_in_1x1: bool,
        reduce_first: int,
        aa_layer: str,
        avg_down: bool,
        down_kernel_size: int,
    ) -> bool:
        """Validates the block options shared by both blocks; returns whether the block anti-aliases (use_aa)."""
        if reduce_first < 1:
            raise ValueError(f"{who}: expected reduce_first >= 1, got {reduce_first}")
        if aa_layer not in _AA_LAYERS:
            raise ValueError(f"{who}: expected aa_layer to be one of {_AA_LAYERS}, got {aa_layer!r}")
        if down_kernel_size not in (1, 3):
            raise ValueError(f"{who}: expected down_kernel_size 1 or 3, got {down_kernel_size}")
        if avg_down and down_kernel_size != 1:
            raise ValueError(
                f"{who}: avg_down's downsample convolution is 1x1, got down_kernel_size {down_kernel_size}"
            )
        # timm anti-aliases only a stride-2 block: its strided 3x3 runs at stride 1, then a 2x2/2 average pool
        use_aa = aa_layer == "avgpool" and stride == 2
        if use_aa and stride_in_1x1:
            raise ValueError(f"{who}: aa_layer follows the strided 3x3, so it cannot be combined with stride_in_1x1")
        return use_aa

    @staticmethod
    def _check_preact(who: str, se_strategy: str, relu_before_se: bool, aa_layer: str) -> None:
        """A pre-activation block has the SE block on its residual branch only, no ReLU after its last convolution and
        no anti-aliasing pool: the options that would change that are refused."""
        if se_strategy != "standard":
            raise ValueError(f"{who}: preact supports only se_strategy 'standard', got {se_strategy!r}")
        if relu_before_se:
            raise ValueError(f"{who}: preact does not support relu_before_se (its branch ends in a convolution)")
        if aa_layer:
            raise ValueError(f"{who}: preact does not support aa_layer, got {aa_layer!r}")

    def _finish_init(
        self,
        inplanes: int,
        outplanes: int,
        stride: int,
        se: bool,
        se_strategy: str,
        se_kwargs: Dict[str, Any],
        avg_down: bool,
        down_kernel_size: int,
        preact: bool,
    ) -> None:
        if se_strategy not in _STRATEGIES:
            raise ValueError(f"expected se_strategy to be one of {_STRATEGIES}, got {se_strategy!r}")
        self.se_strategy, self.preact = se_strategy, preact
        # A pre-activation block's shortcut convolution has no BN of its own: it reads the block's BN-ReLU'd input.
        norm = [] if preact else [nn.BatchNorm2d(outplanes)]
        self.se = SEBlock(inplanes if se_strategy == "pre" else outplanes, **se_kwargs) if se else None
        self.downsample = None
        if stride != 1 or inplanes != outplanes:
            if avg_down:
                # ResNet-D: average-pool first (ceil mode, padding not counted), then a 1x1 convolution of stride 1,
                # so the shortcut sees every input pixel instead of one in four.
                pool = (
                    nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride != 1 else nn.Identity()
                )
                self.downsample = nn.Sequential(pool, nn.Conv2d(inplanes, outplanes, 1, bias=False), *norm)
            else:
                # A stride-1 downsample (a width change only) stays 1x1 whatever down_kernel_size says, as in timm
                # (SENet-154's layer1); a 3x3 one is padded by 1.
                k = 1 if stride == 1 else down_kernel_size
                pad = ((stride - 1) + (k - 1)) // 2
                self.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, outplanes, k, stride=stride, padding=pad, bias=False), *norm
                )

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def last_bn(self) -> nn.BatchNorm2d:
        """The residual branch's last BN (a post-activation block's)."""
        raise NotImplementedError

    def last_conv(self) -> nn.Conv2d:
        """The residual branch's last convolution."""
        raise NotImplementedError

    def zero_init_last_(self) -> None:
        """zero_init_last: the residual branch starts as zero, so the block starts as its shortcut. Its last BN's
        scale is zeroed; a pre-activation branch ends in a convolution, whose weight is zeroed instead (as timm's
        resnetv2 does)."""
        nn.init.zeros_(self.last_conv().weight if self.preact else self.last_bn().weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            # He et al. 2016: BN-ReLU first; a projection shortcut reads that pre-activated input, the identity the
            # input itself; the SE block scales the branch before the sum, and nothing follows the sum.
            a = self.act1(self.bn1(x))
            out = self.branch(a)
            if self.se is not None:
                out = self.se(out)
            return out + (self.downsample(a) if self.downsample is not None else x)
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
        reduce_first: int = 1,
        aa_layer: str = "",
        avg_down: bool = False,
        down_kernel_size: int = 1,
        preact: bool = False,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError(f"BasicBlock: expected groups = 1 and base_width = 64, got {groups}, {base_width}")
        use_aa = self._check_options(
            "BasicBlock", stride, stride_in_1x1, reduce_first, aa_layer, avg_down, down_kernel_size
        )
        if preact:
            self._check_preact("BasicBlock", se_strategy, relu_before_se, aa_layer)
        first = planes // reduce_first
        if first < 1:
            raise ValueError(f"BasicBlock: planes / reduce_first leaves no channels ({planes} // {reduce_first})")
        if preact:
            # BN-ReLU -> 3x3 (strided) -> BN-ReLU -> 3x3
            self.bn1 = nn.BatchNorm2d(inplanes)
            self.act1 = nn.ReLU()
            self.conv1 = nn.Conv2d(inplanes, first, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(first)
            self.act2 = nn.ReLU()
            self.conv2 = nn.Conv2d(first, planes, 3, padding=1, bias=False)
        else:
            # The first 3x3 strides, unless the aa pool after its ReLU does.
            self.conv1 = nn.Conv2d(inplanes, first, 3, stride=1 if use_aa else stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(first)
            self.aa = nn.AvgPool2d(2) if use_aa else nn.Identity()
            self.conv2 = nn.Conv2d(first, planes, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
        self._finish_init(
            inplanes,
            planes,
            stride,
            se,
            se_strategy,
            _se_kwargs(reduction, rd_channels, rd_divisor, squeeze, gate, se_bias),
            avg_down,
            down_kernel_size,
            preact,
        )
        self.relu_before_se = relu_before_se

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:  # x is already bn1-ReLU'd
            return self.conv2(self.act2(self.bn2(self.conv1(x))))
        return self.bn2(self.conv2(self.aa(F.relu(self.bn1(self.conv1(x))))))

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def last_conv(self) -> nn.Conv2d:
        return self.conv2


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
        reduce_first: int = 1,
        aa_layer: str = "",
        avg_down: bool = False,
        down_kernel_size: int = 1,
        preact: bool = False,
    ) -> None:
        super().__init__()
        use_aa = self._check_options(
            "Bottleneck", stride, stride_in_1x1, reduce_first, aa_layer, avg_down, down_kernel_size
        )
        if preact:
            self._check_preact("Bottleneck", se_strategy, relu_before_se, aa_layer)
        width = int(planes * (base_width / 64.0)) * groups
        first = width // reduce_first  # SENet-154's first 1x1 halves the width (reduce_first = 2)
        if first < 1:
            raise ValueError(f"Bottleneck: the width / reduce_first leaves no channels ({width} // {reduce_first})")
        outplanes = planes * self.expansion
        # The stride is on the first 1x1 (Caffe), on the 3x3 (torchvision, timm), or on the aa pool after the 3x3.
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, 1 if use_aa else stride)
        if preact:
            # BN-ReLU -> 1x1 -> BN-ReLU -> 3x3 (grouped) -> BN-ReLU -> 1x1
            self.bn1 = nn.BatchNorm2d(inplanes)
            self.act1 = nn.ReLU()
            self.conv1 = nn.Conv2d(inplanes, first, 1, stride=s1, bias=False)
            self.bn2 = nn.BatchNorm2d(first)
            self.act2 = nn.ReLU()
            self.conv2 = nn.Conv2d(first, width, 3, stride=s3, padding=1, groups=groups, bias=False)
            self.bn3 = nn.BatchNorm2d(width)
            self.act3 = nn.ReLU()
            self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(inplanes, first, 1, stride=s1, bias=False)
            self.bn1 = nn.BatchNorm2d(first)
            self.conv2 = nn.Conv2d(first, width, 3, stride=s3, padding=1, groups=groups, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.aa = nn.AvgPool2d(2) if use_aa else nn.Identity()
            self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(outplanes)
        self._finish_init(
            inplanes,
            outplanes,
            stride,
            se,
            se_strategy,
            _se_kwargs(reduction, rd_channels, rd_divisor, squeeze, gate, se_bias),
            avg_down,
            down_kernel_size,
            preact,
        )
        self.relu_before_se = relu_before_se

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:  # x is already bn1-ReLU'd
            out = self.act2(self.bn2(self.conv1(x)))
            return self.conv3(self.act3(self.bn3(self.conv2(out))))
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.aa(F.relu(self.bn2(self.conv2(out))))
        return self.bn3(self.conv3(out))

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def last_conv(self) -> nn.Conv2d:
        return self.conv3


class ResNet(nn.Module):
    """ResNet / ResNeXt with optional SE blocks; the options of :class:`sepp.ResNet`.

    Modules, in order: the stem (``conv1``, ``bn1`` unless ``preact``, ``maxpool``), the stages ``layer1`` ..
    ``layerN`` (one per entry of ``stage_planes``, the first of stride 1, each later one halving the resolution in its
    first block), with ``preact`` the final ``norm`` (BN) and ``act`` (ReLU), then ``global_pool`` and ``fc``.

    Stems (``stem_type``): ``""`` a 7x7/2 convolution to 64 channels; ``"deep"`` / ``"deep_tiered"`` three 3x3
    convolutions to ``2 * stem_width``; ``"cifar"`` one 3x3/1 convolution to ``stem_width`` and no pool. Each but the
    CIFAR one is followed by a 3x3/2 max pool (a 2x2/2 average pool with ``aa_layer``).

    ``preact``: the pre-activation ResNet of He et al. 2016 ("Identity Mappings in Deep Residual Networks"): blocks
    BN-ReLU-conv throughout, nothing after the residual sum, no BN or ReLU in the stem, and one BN-ReLU after the last
    stage instead.
    """

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
        stem_type: str = "",
        stem_width: int = 64,
        avg_down: bool = False,
        down_kernel_size: int = 1,
        block_reduce_first: int = 1,
        aa_layer: str = "",
        stage_planes: Sequence[int] = (64, 128, 256, 512),
        preact: bool = False,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"ResNet: expected block to be 'basic' or 'bottleneck', got {block!r}")
        stage_planes = tuple(stage_planes)
        num_stages = len(stage_planes)
        if len(layers) != num_stages:
            raise ValueError(
                f"ResNet: expected as many stage depths in layers as stage_planes ({num_stages}), got {len(layers)}"
            )
        if not 1 <= num_stages <= 4:
            raise ValueError(f"ResNet: expected 1 to 4 stages in stage_planes, got {num_stages}")
        if any(planes < 1 for planes in stage_planes):
            raise ValueError(f"ResNet: expected every stage_planes entry >= 1, got {stage_planes}")
        if stem_type not in _STEMS:
            raise ValueError(f"ResNet: expected stem_type to be one of {_STEMS}, got {stem_type!r}")
        if stem_width < (4 if stem_type == "deep_tiered" else 1):
            raise ValueError(f"ResNet: stem_width {stem_width} is too small for stem_type {stem_type!r}")
        if aa_layer not in _AA_LAYERS:
            raise ValueError(f"ResNet: expected aa_layer to be one of {_AA_LAYERS}, got {aa_layer!r}")
        if aa_layer and stem_pool_ceil_mode:
            raise ValueError(
                "ResNet: aa_layer replaces the stem's max pool, so stem_pool_ceil_mode cannot be set with it"
            )
        if stem_type == "cifar" and (aa_layer or stem_pool_ceil_mode):
            raise ValueError(
                "ResNet: the CIFAR stem has no pool, so stem_pool_ceil_mode and aa_layer's stem pool cannot be set "
                "with it"
            )
        if aa_layer and stride_in_1x1:
            raise ValueError("ResNet: aa_layer follows the strided 3x3, so it cannot be combined with stride_in_1x1")
        if preact:
            if se_strategy != "standard":
                raise ValueError(f"ResNet: preact supports only se_strategy 'standard', got {se_strategy!r}")
            if relu_before_se:
                raise ValueError("ResNet: preact does not support relu_before_se (its blocks end in a convolution)")
            if aa_layer:
                raise ValueError(f"ResNet: preact does not support aa_layer, got {aa_layer!r}")
            if stem_pool_ceil_mode:
                raise ValueError("ResNet: preact does not support stem_pool_ceil_mode")
        stages = [se] * num_stages if isinstance(se, bool) else list(se)
        if len(set(stages)) <= 1:  # equal bools (or none) as a bool: the same in every stage, whatever their number
            stages = (stages[:1] or [False]) * num_stages
        if len(stages) != num_stages:
            raise ValueError(
                f"ResNet: expected se to be one bool, or one per stage ({num_stages}), got {len(stages)} values"
            )
        block_cls = BasicBlock if block == "basic" else Bottleneck
        self.num_classes, self.drop_rate, self.preact, self.num_stages = num_classes, drop_rate, preact, num_stages
        # The stem. '': one 7x7/2 convolution to 64 channels. 'deep' (ResNet-C/D, SENet-154) and 'deep_tiered'
        # (timm's "t"): three 3x3 convolutions, the first of stride 2, to 2 * stem_width channels, as one Sequential
        # conv1 (its ReLUs are children 2 and 5; the third convolution's BN and ReLU are bn1 and the stem's ReLU).
        # 'cifar': one 3x3/1 convolution to stem_width channels, and no pool. Each is followed by bn1 and a ReLU,
        # except with preact: its first block's BN-ReLU reads the stem's convolution directly.
        if stem_type == "cifar":
            inplanes = stem_width
            self.conv1 = nn.Conv2d(in_chans, inplanes, 3, padding=1, bias=False)
        elif stem_type:
            first = 3 * (stem_width // 4) if stem_type == "deep_tiered" else stem_width
            inplanes = 2 * stem_width
            self.conv1 = nn.Sequential(
                nn.Conv2d(in_chans, first, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(first),
                nn.ReLU(),
                nn.Conv2d(first, stem_width, 3, padding=1, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(),
                nn.Conv2d(stem_width, inplanes, 3, padding=1, bias=False),
            )
        else:
            inplanes = 64
            self.conv1 = nn.Conv2d(in_chans, inplanes, 7, stride=2, padding=3, bias=False)
        if not preact:
            self.bn1 = nn.BatchNorm2d(inplanes)
        # The stem's pool, named maxpool whatever it is: 3x3/2 max pool (padded by 1, or unpadded in ceil mode as in
        # Caffe), with aa_layer a 2x2/2 average pool, and none (an Identity) in the CIFAR stem.
        if stem_type == "cifar":
            self.maxpool: nn.Module = nn.Identity()
        elif aa_layer:
            self.maxpool = nn.AvgPool2d(2)
        elif stem_pool_ceil_mode:
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)
        else:
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for i, (planes, depth) in enumerate(zip(stage_planes, layers)):
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
                        reduce_first=block_reduce_first,
                        aa_layer=aa_layer,
                        avg_down=avg_down,
                        down_kernel_size=down_kernel_size,
                        preact=preact,
                    )
                )
                inplanes = planes * block_cls.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = inplanes
        if preact:
            # The last block's sum is not normalised by any block: one BN-ReLU before the pool.
            self.norm = nn.BatchNorm2d(inplanes)
            self.act = nn.ReLU()
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
                    m.zero_init_last_()

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            return self.maxpool(self.conv1(x))
        return self.maxpool(F.relu(self.bn1(self.conv1(x))))

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """One output per stage; with preact the last one after the final norm and act (the features)."""
        x = self.forward_stem(x)
        out = []
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
            out.append(x)
        if self.preact:
            out[-1] = self.act(self.norm(out[-1]))
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


def _resnext(layers: Sequence[int], groups: int, width_per_group: int, **kw: Any) -> Dict[str, Any]:
    return _resnet("bottleneck", layers, groups=groups, width_per_group=width_per_group, **kw)


# The variants are options over a base model: the helpers below add them, so each table row reads as timm's name.


def _timm_se(config: Dict[str, Any]) -> Dict[str, Any]:
    """timm's resnet.py SE models: SE in every block, C / 16 rounded to a multiple of 8 (at least 8)."""
    return {**config, "se": True, "rd_divisor": 8}


def _d(config: Dict[str, Any], stem_width: int = 32) -> Dict[str, Any]:
    """timm's "d": the deep 3x3 stem (stem_width, stem_width, 2 * stem_width) and average-pool downsampling."""
    return {**config, "stem_type": "deep", "stem_width": stem_width, "avg_down": True}


def _t(config: Dict[str, Any]) -> Dict[str, Any]:
    """timm's "t": "d" with the tiered stem (24, 32, 64 channels)."""
    return {**config, "stem_type": "deep_tiered", "stem_width": 32, "avg_down": True}


def _aa(config: Dict[str, Any]) -> Dict[str, Any]:
    """timm's "aa": anti-aliased downsampling, a 2x2/2 average pool after each strided 3x3 and in the stem."""
    return {**config, "aa_layer": "avgpool"}


def _senet154() -> Dict[str, Any]:
    """SENet-154: 64x4d bottlenecks whose first 1x1 halves the width, the deep stem of 64, 64, 128 channels and 3x3
    downsample convolutions."""
    return _resnext((3, 8, 36, 3), 64, 4, stem_type="deep", stem_width=64, down_kernel_size=3, block_reduce_first=2)


def _cifar(block: str, n: int, se: bool) -> Dict[str, Any]:
    """A CIFAR-10 pre-activation ResNet: three stages of n blocks on 16, 32 and 64 planes behind the 3x3 stem of 16
    channels, with He's initialisation (no zero-initialised branches)."""
    return _resnet(
        block,
        (n, n, n),
        se=se,
        stage_planes=(16, 32, 64),
        stem_type="cifar",
        stem_width=16,
        preact=True,
        num_classes=10,
        zero_init_last=False,
    )


def _legacy(config: Dict[str, Any]) -> Dict[str, Any]:
    """timm's senet.py (the original Caffe SENet, in sepp.convert's "timm_legacy" names): SE widths C // 16, the stem's
    max pool in ceil mode, dropout 0.2 before the classifier; the basic block has a ReLU before its SE block, the
    SE-ResNet bottleneck strides on its first 1x1 (SE-ResNeXt's and SENet-154's on the 3x3)."""
    out = {**config, "se": True, "stem_pool_ceil_mode": True, "drop_rate": 0.2}
    if out["block"] == "basic":
        out["relu_before_se"] = True
    elif out.get("groups", 1) == 1:
        out["stride_in_1x1"] = True
    return out


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
    # timm's names (resnet.py), with timm's SE widths.
    "seresnet18": _timm_se(_resnet("basic", (2, 2, 2, 2))),
    "seresnet34": _timm_se(_resnet("basic", (3, 4, 6, 3))),
    "seresnet50": _timm_se(_resnet("bottleneck", (3, 4, 6, 3))),
    "seresnet50t": _t(_timm_se(_resnet("bottleneck", (3, 4, 6, 3)))),
    "seresnet101": _timm_se(_resnet("bottleneck", (3, 4, 23, 3))),
    "seresnet152": _timm_se(_resnet("bottleneck", (3, 8, 36, 3))),
    "seresnet152d": _d(_timm_se(_resnet("bottleneck", (3, 8, 36, 3)))),
    "seresnet200d": _d(_timm_se(_resnet("bottleneck", (3, 24, 36, 3)))),
    "seresnet269d": _d(_timm_se(_resnet("bottleneck", (3, 30, 48, 8)))),
    "seresnetaa50d": _aa(_d(_timm_se(_resnet("bottleneck", (3, 4, 6, 3))))),
    "seresnext26d_32x4d": _d(_timm_se(_resnext((2, 2, 2, 2), 32, 4))),
    "seresnext26t_32x4d": _t(_timm_se(_resnext((2, 2, 2, 2), 32, 4))),
    "seresnext50_32x4d": _timm_se(_resnext((3, 4, 6, 3), 32, 4)),
    "seresnext101_32x4d": _timm_se(_resnext((3, 4, 23, 3), 32, 4)),
    "seresnext101_32x8d": _timm_se(_resnext((3, 4, 23, 3), 32, 8)),
    "seresnext101_64x4d": _timm_se(_resnext((3, 4, 23, 3), 64, 4)),
    "seresnext101d_32x8d": _d(_timm_se(_resnext((3, 4, 23, 3), 32, 8))),
    "seresnextaa101d_32x8d": _aa(_d(_timm_se(_resnext((3, 4, 23, 3), 32, 8)))),
    "seresnextaa201d_32x8d": _aa(_d(_timm_se(_resnext((3, 24, 36, 4), 32, 8)), stem_width=64)),
    "senet154": _timm_se(_senet154()),
    # timm's legacy names (senet.py).
    "legacy_seresnet18": _legacy(_resnet("basic", (2, 2, 2, 2))),
    "legacy_seresnet34": _legacy(_resnet("basic", (3, 4, 6, 3))),
    "legacy_seresnet50": _legacy(_resnet("bottleneck", (3, 4, 6, 3))),
    "legacy_seresnet101": _legacy(_resnet("bottleneck", (3, 4, 23, 3))),
    "legacy_seresnet152": _legacy(_resnet("bottleneck", (3, 8, 36, 3))),
    "legacy_senet154": _legacy(_senet154()),
    "legacy_seresnext26_32x4d": _legacy(_resnext((2, 2, 2, 2), 32, 4)),
    "legacy_seresnext50_32x4d": _legacy(_resnext((3, 4, 6, 3), 32, 4)),
    "legacy_seresnext101_32x4d": _legacy(_resnext((3, 4, 23, 3), 32, 4)),
    # The paper's CIFAR-10 networks: the pre-activation ResNets of He et al. 2016 ("Identity Mappings in Deep Residual
    # Networks"; its CIFAR-10 baselines: 6.37% error for ResNet-110, 5.46% for ResNet-164), 6n+2 layers with basic
    # blocks (n = 3, 5, 9, 18) and 9n+2 with bottlenecks (n = 18). Shortcuts: the identity, or a projection (a 1x1
    # convolution of the pre-activated input, He's "option B") where the width or the stride changes. SE placement:
    # on the residual branch, after its last convolution, before the sum; r = 16 (C // 16, no rounding).
    "resnet20_cifar": _cifar("basic", 3, se=False),
    "resnet32_cifar": _cifar("basic", 5, se=False),
    "resnet56_cifar": _cifar("basic", 9, se=False),
    "resnet110_cifar": _cifar("basic", 18, se=False),
    "resnet164_cifar": _cifar("bottleneck", 18, se=False),
    "se_resnet20_cifar": _cifar("basic", 3, se=True),
    "se_resnet32_cifar": _cifar("basic", 5, se=True),
    "se_resnet56_cifar": _cifar("basic", 9, se=True),
    "se_resnet110_cifar": _cifar("basic", 18, se=True),
    "se_resnet164_cifar": _cifar("bottleneck", 18, se=True),
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
    factory.__module__ = __name__
    factory.__doc__ = f"Reference {name} (pure PyTorch)."
    return factory


# One factory function per name (resnet18, ..., seresnet50, ..., legacy_senet154, ..., se_resnet164_cifar).
globals().update({name: _factory(name) for name in CONFIGS})
__all__ += list(CONFIGS)
