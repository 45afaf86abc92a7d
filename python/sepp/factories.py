"""Named models, one line each over the C++ factory table (``sepp::model_config``)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from .models import ResNet, create_model

__all__ = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "se_resnet18", "se_resnet34", "se_resnet50", "se_resnet101", "se_resnet152",
    "se_resnext50_32x4d", "se_resnext101_32x4d",
]


def _factory(name: str, what: str) -> Callable[..., ResNet]:
    def factory(pretrained: Optional[str] = None, **overrides: Any) -> ResNet:
        if pretrained:
            from .hub import load_pretrained

            return load_pretrained(name, pretrained, **overrides)
        return create_model(name, **overrides)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (f"{what}. Keyword arguments override its :class:`~sepp.ResNet` options (e.g. "
                       f"``num_classes=10``; ``rd_divisor=8`` gives timm's SE widths). ``pretrained`` names a hub "
                       f"repository such as ``'timm/seresnet50.a1_in1k'`` (see :mod:`sepp.hub`); without it the "
                       f"model is freshly initialised.")
    return factory


resnet18 = _factory("resnet18", "ResNet-18 (torchvision's layout)")
resnet34 = _factory("resnet34", "ResNet-34 (torchvision's layout)")
resnet50 = _factory("resnet50", "ResNet-50 (torchvision's layout, 25,557,032 parameters)")
resnet101 = _factory("resnet101", "ResNet-101 (torchvision's layout)")
resnet152 = _factory("resnet152", "ResNet-152 (torchvision's layout)")
se_resnet18 = _factory("se_resnet18", "SE-ResNet-18 (SE in every block, r = 16)")
se_resnet34 = _factory("se_resnet34", "SE-ResNet-34 (SE in every block, r = 16)")
se_resnet50 = _factory("se_resnet50", "SE-ResNet-50 (r = 16; 28,088,024 parameters, timm's seresnet50)")
se_resnet101 = _factory("se_resnet101", "SE-ResNet-101 (r = 16)")
se_resnet152 = _factory("se_resnet152", "SE-ResNet-152 (r = 16)")
se_resnext50_32x4d = _factory("se_resnext50_32x4d", "SE-ResNeXt-50 32x4d (r = 16)")
se_resnext101_32x4d = _factory("se_resnext101_32x4d", "SE-ResNeXt-101 32x4d (r = 16)")
