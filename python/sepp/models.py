"""SE block, residual blocks and (SE-)ResNet / ResNeXt: Python faces of the C++ modules in libsepp.

Every class here is a :class:`torch.nn.Module` whose forward runs in C++ (see :mod:`sepp._module`). Constructor
arguments are the C++ options, bound by name from the C++ options structs (their ``visit`` tables); they are
readable as attributes (``m.num_classes``, ``m.layers``, ``se.reduction``).
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from . import _C
from ._module import TypedCppModule

__all__ = ["SEBlock", "BasicBlock", "Bottleneck", "ResNet", "model_names", "create_model"]


def _bind_options(cls: type) -> type:
    """Gives a class over a C++ module the signature and the "Args" of its C++ options (``options_spec()``): the
    options are declared once, in C++, and reach Python by name."""
    spec = cls._cpp_type.options_spec()
    params = [
        inspect.Parameter(
            name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=inspect.Parameter.empty if default is Ellipsis else default,
        )
        for name, default, _ in spec
    ]
    cls.__signature__ = inspect.Signature(params)
    lines = [f"        {name}: {doc}." for name, _, doc in spec]
    cls.__doc__ = f"{cls.__doc__.rstrip()}\n\n    Args:\n" + "\n".join(lines) + "\n"
    return cls


class _OptionsModule(TypedCppModule):
    """A C++ module built from its options, given by position (in the C++ order) or by name."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(self._cpp_type(*args, **options))

    @property
    def options(self) -> Dict[str, Any]:
        """The module's options by name: ``type(m)(**m.options)`` builds a model of the same shape."""
        return dict(self._cpp.options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._sepp_forward(self._cpp.forward, x)


@_bind_options
class SEBlock(_OptionsModule):
    """Squeeze-and-Excitation block: ``y = x * gate(fc2(act(bn(fc1(squeeze(x))))))`` per sample and channel.

    Its children are timm's SEModule's: ``fc1``, ``bn`` (an identity), ``act`` (ReLU), ``fc2``, ``gate``."""

    _cpp_type = _C.SEBlock

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] -> x scaled per channel by its excitation, same shape."""
        return self._sepp_forward(self._cpp.forward, x)

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        """The excitation s [N, C, 1, 1] of x [N, C, H, W]."""
        return self._sepp_run(self._cpp.gate, x)


@_bind_options
class BasicBlock(_OptionsModule):
    """ResNet basic block (two 3x3 convolutions), with an optional SE block placed by ``se_strategy``."""

    _cpp_type = _C.BasicBlock
    expansion = 1


@_bind_options
class Bottleneck(_OptionsModule):
    """ResNet bottleneck (1x1, 3x3 grouped, 1x1; output ``planes * 4`` channels), with an optional SE block placed
    by ``se_strategy``; ``groups``/``base_width`` give ResNeXt."""

    _cpp_type = _C.Bottleneck
    expansion = 4


@_bind_options
class ResNet(_OptionsModule):
    """ResNet / ResNeXt with optional SE blocks: one class, variants are options (see :func:`create_model`).

    Parameter names and shapes are timm's (and torchvision's for the plain ResNets), so their state dicts load as
    they are."""

    _cpp_type = _C.ResNet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, in_chans, H, W] -> logits [N, num_classes]."""
        from . import _twin  # under a tracer (torch.compile, torch.export, jit / ONNX), the reference computes

        if _twin.tracing():
            return _twin.forward(self, x)
        return self._sepp_forward(self._cpp.forward, x)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem (conv1, bn1, ReLU, pool; conv1 alone when pre-activated): [N, in_chans, H, W] -> [N, 64
        (2 * stem_width when deep), H/4, W/4] (the CIFAR stem: [N, stem_width, H, W])."""
        from . import _twin

        if _twin.tracing():
            return _twin.forward(self, x, "forward_stem")
        return self._sepp_run(self._cpp.forward_stem, x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the stages (and, pre-activated, the final norm and ReLU): [N, in_chans, H, W] -> [N, num_features,
        H/32, W/32] (H/4 for the CIFAR models)."""
        from . import _twin

        if _twin.tracing():
            return _twin.forward(self, x, "forward_features")
        return self._sepp_run(self._cpp.forward_features, x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, dropout, classifier; ``pre_logits`` stops before the classifier."""
        from . import _twin

        if _twin.tracing():
            return _twin.forward(self, x, "forward_head", pre_logits=pre_logits)
        return self._sepp_run(self._cpp.forward_head, x, pre_logits)

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The stage outputs (strides 4, 8, 16, 32), for detection and segmentation backbones."""
        return self._sepp_run(self._cpp.forward_stages, x)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Sequence[int]] = None) -> List[torch.Tensor]:
        """timm's feature maps by index (0 = the stem's ``act1``, stride 2; 1..4 = ``layer1``..``layer4``; all of
        them by default; see :mod:`sepp.features` for pre-activation and CIFAR models), in the order asked for; the
        forward stops after the deepest one."""
        if indices is None:
            indices = range(len(self.stage_channels) + 1)
        return self._sepp_run(self._cpp.forward_intermediates, x, _indices(indices))

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


def _indices(indices: Sequence[int]) -> List[int]:
    if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
        raise TypeError(f"expected a sequence of feature indices (ints in 0..4), got {type(indices).__name__}")
    out = list(indices)
    for i in out:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"expected feature indices as ints in 0..4, got {i!r} ({type(i).__name__})")
    return out


def model_names() -> List[str]:
    """Names accepted by :func:`create_model` (each also a function of this package)."""
    return list(_C.model_names())


def create_model(
    name: str, features_only: bool = False, out_indices: Optional[Sequence[int]] = None, **overrides: Any
) -> ResNet:
    """A freshly initialised model from the factory table, with keyword overrides of its :class:`ResNet` options
    (e.g. ``num_classes=10``, ``rd_divisor=8``, ``drop_rate=0.2``).

    ``features_only=True`` gives the backbone (:class:`sepp.features.ResNetFeatures`): its forward returns the
    feature maps ``out_indices`` (timm's: 0 = ``act1``, 1..4 = ``layer1``..``layer4``; all five by default), described
    by ``model.feature_info``."""
    config = dict(_C.model_config(name))
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise TypeError(f"create_model({name!r}): unknown option(s) {unknown}; expected some of {sorted(config)}")
    config.update(overrides)
    if not isinstance(features_only, bool):
        raise TypeError(f"create_model({name!r}): expected features_only to be a bool, got {features_only!r}")
    if features_only:
        from .features import DEFAULT_OUT_INDICES, ResNetFeatures

        config["num_classes"] = overrides.get("num_classes", 0)
        return ResNetFeatures(**config, out_indices=DEFAULT_OUT_INDICES if out_indices is None else out_indices)
    if out_indices is not None:
        raise TypeError(f"create_model({name!r}): out_indices needs features_only=True")
    return ResNet(**config)
