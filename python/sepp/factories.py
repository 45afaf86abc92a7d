"""Named models, one function each, made from the C++ factory table (``sepp::model_names``, ``model_description``)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from . import _C
from .models import ResNet, create_model

__all__ = list(_C.model_names())


def _factory(name: str) -> Callable[..., ResNet]:
    def factory(pretrained: Optional[str] = None, **overrides: Any) -> ResNet:
        if pretrained:
            from .hub import load_pretrained

            return load_pretrained(name, pretrained, **overrides)
        return create_model(name, **overrides)

    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = __name__
    factory.__doc__ = (
        f"{_C.model_description(name)}. Keyword arguments override its :class:`~sepp.ResNet` options "
        f"(e.g. ``num_classes=10``; ``rd_divisor=8`` gives timm's SE widths). ``pretrained`` names a "
        f"hub repository such as ``'timm/seresnet50.a1_in1k'`` (see :mod:`sepp.hub`); without it the "
        f"model is freshly initialised."
    )
    return factory


globals().update({name: _factory(name) for name in __all__})
