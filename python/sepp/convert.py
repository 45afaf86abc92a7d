"""Checkpoints from other SE-ResNet implementations, converted into sepp's layout (timm's names) with strict checking.

Layouts:
  ``timm``          timm ``seresnet*`` / ``seresnext*`` / ``resnet*``: sepp's own names, loaded as they are.
  ``torchvision``   torchvision ``resnet*``: as they are.
  ``timm_legacy``   timm ``legacy_seresnet*`` / ``legacy_seresnext*`` / ``legacy_senet154`` (the original Caffe
                    SENet weights).
  ``cadene``        Cadene's pretrainedmodels ``se_resnet*`` / ``se_resnext*`` / ``senet154`` (same layout as
                    timm_legacy): the stem ``layer0.{conv1,bn1}`` (7x7), or SENet-154's three 3x3 convolutions
                    ``layer0.{conv1,bn1,conv2,bn2,conv3,bn3}`` (sepp's deep stem ``conv1.{0,1,3,4,6}``, ``bn1``);
                    ``se_module``, ``last_linear``; stride on the bottleneck's first 1x1 (SE-ResNet only; SE-ResNeXt
                    and SENet-154 have it on the 3x3); the stem's max pool with ceil_mode; in the basic block
                    (timm's legacy SE-ResNet-18/34) a ReLU before the SE block.
  ``senet_pytorch`` senet.pytorch: torchvision names, SE as ``se.fc.0`` / ``se.fc.2`` ``nn.Linear`` without bias.

What a layout needs from the model is a model option (:func:`layout_options`), not a special case in forward.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Mapping, Tuple

import torch

from . import _C
from .models import ResNet, create_model


def model_config(name: str) -> Dict[str, Any]:
    return dict(_C.model_config(name))


__all__ = ["LAYOUTS", "layout_options", "convert_state_dict", "load_converted", "create_from_checkpoint"]

LAYOUTS = ("timm", "torchvision", "timm_legacy", "cadene", "senet_pytorch")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown checkpoint layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def layout_options(layout: str, name: str) -> Dict[str, Any]:
    """The :class:`sepp.ResNet` options a checkpoint of this layout needs for model ``name``."""
    _check_layout(layout)
    if layout in ("timm_legacy", "cadene"):
        # The rest of the Caffe models' shape (SENet-154's deep stem, 3x3 downsamples and halved first 1x1s) is the
        # model's own, in its config; the layout changes only these.
        config = model_config(name)
        opts: Dict[str, Any] = {"stem_pool_ceil_mode": True}
        if config["block"] == "basic":
            opts["relu_before_se"] = True  # the legacy basic block applies a ReLU before its SE block
        elif config["groups"] == 1:
            # Caffe SE-ResNet bottlenecks stride on the first 1x1; the grouped ones (SE-ResNeXt, SENet-154) on the 3x3
            opts["stride_in_1x1"] = True
        return opts
    if layout == "senet_pytorch":
        return {"se_bias": False}
    return {}


# The Caffe stem, layer0, in sepp's names: the 7x7 convolution and its BN; or SENet-154's three 3x3 convolutions, each
# with its BN, which are sepp's deep stem (a Sequential conv1 whose ReLUs are children 2 and 5, the last BN bn1).
_LEGACY_STEM_7X7 = (("layer0.conv1.", "conv1."), ("layer0.bn1.", "bn1."))
_LEGACY_STEM_3X3 = (
    ("layer0.conv1.", "conv1.0."),
    ("layer0.bn1.", "conv1.1."),
    ("layer0.conv2.", "conv1.3."),
    ("layer0.bn2.", "conv1.4."),
    ("layer0.conv3.", "conv1.6."),
    ("layer0.bn3.", "bn1."),
)


def _strip_module(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def _legacy_stem(state_dict: Mapping[str, Any]) -> Tuple[Tuple[str, str], ...]:
    """The stem renaming for this checkpoint: the 3x3 one when it has a layer0.conv3 (decided once, for every key)."""
    deep = any(_strip_module(k).startswith("layer0.conv3.") for k in state_dict)
    return _LEGACY_STEM_3X3 if deep else _LEGACY_STEM_7X7


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], layout: str) -> "OrderedDict[str, torch.Tensor]":
    """Renames (and reshapes) a checkpoint's tensors into sepp's layout. A ``module.`` prefix (DataParallel) is
    dropped. Raises ValueError for keys the layout does not explain."""
    _check_layout(layout)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    stem = _legacy_stem(state_dict) if layout in ("timm_legacy", "cadene") else ()
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"checkpoint entry {key!r} is a {type(value).__name__}, expected a tensor")
        k = _strip_module(key)
        if layout in ("timm_legacy", "cadene"):
            if k.startswith("layer0."):
                renamed = [new + k[len(old) :] for old, new in stem if k.startswith(old)]
                if not renamed:
                    expected = (
                        "layer0.{conv1,bn1,conv2,bn2,conv3,bn3} (a 3x3 stem, SENet-154 style)"
                        if stem is _LEGACY_STEM_3X3
                        else "layer0.conv1 / layer0.bn1 (a 7x7 stem; a 3x3 stem, SENet-154 style, has layer0.conv3)"
                    )
                    raise ValueError(f"{layout} checkpoint entry {key!r}: not a stem entry; expected {expected}")
                k = renamed[0]
            elif k.startswith("last_linear."):
                k = "fc." + k[len("last_linear.") :]
            k = k.replace(".se_module.", ".se.")
        elif layout == "senet_pytorch" and ".se.fc." in k:
            head, _, tail = k.partition(".se.fc.")
            index, _, param = tail.partition(".")
            if index not in ("0", "2") or param != "weight":
                raise ValueError(f"senet_pytorch checkpoint entry {key!r}: expected se.fc.0.weight or se.fc.2.weight")
            if value.dim() != 2:
                raise ValueError(
                    f"senet_pytorch checkpoint entry {key!r}: expected a 2-D Linear weight, got shape "
                    f"{list(value.shape)}"
                )
            k = f"{head}.se.fc{1 if index == '0' else 2}.weight"
            value = value.reshape(*value.shape, 1, 1)
        if k in out:
            raise ValueError(f"checkpoint entries map twice onto {k!r} (last from {key!r})")
        out[k] = value
    return out


def load_converted(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], layout: str) -> torch.nn.Module:
    """Converts a checkpoint and loads it strictly (missing, unexpected and mis-shaped names are listed)."""
    model.load_state_dict(convert_state_dict(state_dict, layout), strict=True)
    return model


def create_from_checkpoint(name: str, state_dict: Mapping[str, torch.Tensor], layout: str, **overrides: Any) -> ResNet:
    """A sepp model ``name`` with the options the layout needs, its classifier sized from the checkpoint, loaded."""
    converted = convert_state_dict(state_dict, layout)
    if "fc.weight" in converted:
        overrides.setdefault("num_classes", converted["fc.weight"].shape[0])
    model = create_model(name, **{**layout_options(layout, name), **overrides})
    model.load_state_dict(converted, strict=True)
    return model
