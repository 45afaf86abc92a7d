"""Backbones: a ResNet whose forward returns feature maps, as timm's ``features_only=True`` models do.

    >>> m = sepp.create_model("se_resnet50", features_only=True, out_indices=(1, 2, 3, 4))
    >>> [f.shape[1] for f in m(torch.randn(1, 3, 224, 224))] == m.feature_info.channels()
    True

Feature indices are timm's: 0 is the stem's ReLU (``act1``, stride 2), 1 to 4 are ``layer1`` to ``layer4`` (strides 4
to 32). A pre-activation model's index 0 is its stem convolution (``conv1``) and its last stage's map is the one
after the final ``norm`` and ReLU (module ``act``); the CIFAR stem has stride 1 and no pool, so its stages have
strides 1, 2 and 4. The forward runs in C++ (``forward_intermediates``) and stops after the deepest index asked
for; the model has no classifier. Unlike timm, the stages after the deepest index stay in the model (and its
state_dict): load a full model's weights with ``strict=False`` or ask for the last index.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from .models import ResNet, _indices

__all__ = ["FeatureInfo", "ResNetFeatures", "DEFAULT_OUT_INDICES"]

# All the feature maps (index 0 and every stage).
DEFAULT_OUT_INDICES = None


def _feature_modules(options: Dict[str, Any]) -> List[Tuple[str, int]]:
    """(module, reduction) of each feature index of a ResNet with these options."""
    stages = len(options["layers"])
    cifar = options["stem_type"] == "cifar"
    modules = ["conv1" if options["preact"] else "act1"] + [f"layer{i + 1}" for i in range(stages)]
    if options["preact"]:
        modules[-1] = "act"  # the last stage's map after the final norm and its ReLU
    first = 1 if cifar else 2  # the stem's convolution; the stem's pool halves again (none in the CIFAR stem)
    reductions = [first] + [first * (1 if cifar else 2) * 2**i for i in range(stages)]
    return list(zip(modules, reductions))


class FeatureInfo:
    """What the feature maps are, with timm's ``feature_info`` API: ``info`` describes every feature module (index,
    ``num_chs``, ``reduction``, ``module``), ``out_indices`` those the forward returns. ``channels()``,
    ``reduction()``, ``module_name()`` and ``get_dicts()`` give the returned ones by default, or the modules at
    ``idx`` (an index or a list of them); indexing and ``len`` are over every module."""

    def __init__(self, info: List[Dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = info
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: Optional[Union[int, Sequence[int]]] = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: Optional[Sequence[str]] = None, idx: Optional[Union[int, Sequence[int]]] = None) -> Any:
        def pick(i: int) -> Dict[str, Any]:
            return dict(self.info[i]) if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [pick(i) for i in idx]
        return pick(idx)

    def channels(self, idx: Optional[Union[int, Sequence[int]]] = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: Optional[Union[int, Sequence[int]]] = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: Optional[Union[int, Sequence[int]]] = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, item: int) -> Dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(out_indices={self.out_indices}, info={self.info})"


class ResNetFeatures(ResNet):
    """A :class:`~sepp.ResNet` without classifier whose forward returns the feature maps ``out_indices`` (see the
    module docstring). Takes ResNet's options, and ``out_indices``."""

    def __init__(self, *args: Any, out_indices: Optional[Sequence[int]] = DEFAULT_OUT_INDICES, **options: Any) -> None:
        indices = None if out_indices is None else _indices(out_indices)
        if options.get("num_classes", 0) != 0:
            raise ValueError(f"features_only: a backbone has no classifier, got num_classes={options['num_classes']}")
        options["num_classes"] = 0
        super().__init__(*args, **options)
        modules = _feature_modules(dict(self._cpp.options))
        last = len(modules) - 1
        if indices is None:
            indices = list(range(len(modules)))
        if not indices or any(not 0 <= i <= last for i in indices) or len(set(indices)) != len(indices):
            names = ", ".join(m for m, _ in modules)
            raise ValueError(
                f"features_only: expected out_indices to be distinct ints in 0..{last} ({names}), got "
                f"{tuple(out_indices or ())}"
            )
        self.__dict__["out_indices"] = tuple(indices)
        # the stem's width (layer1's input): 64, stem_width (CIFAR) or 2 * stem_width (deep stems)
        channels = (self.layer1[0].conv1.in_channels, *self.stage_channels)
        info = [dict(num_chs=c, reduction=r, module=n, index=i) for i, (c, (n, r)) in enumerate(zip(channels, modules))]
        self.__dict__["feature_info"] = FeatureInfo(info, indices)

    @property
    def options(self) -> Dict[str, Any]:
        """The options by name, ``out_indices`` included: ``ResNetFeatures(**m.options)`` builds the same model."""
        return {**dict(self._cpp.options), "out_indices": self.out_indices}

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:  # type: ignore[override]
        """[N, in_chans, H, W] -> the feature maps of ``out_indices``, in that order."""
        return self._sepp_forward(self._cpp.forward_intermediates, x, list(self.out_indices))
