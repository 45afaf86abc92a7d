"""Checkpoints from other SE-ResNet implementations, converted into sepp's layout (timm's names) with strict checking.

Layouts:
  ``timm``          timm ``seresnet*`` / ``seresnext*`` / ``resnet*``: sepp's own names, loaded as they are.
  ``torchvision``   torchvision ``resnet*``: as they are.
  ``timm_legacy``   timm ``legacy_seresnet*`` / ``legacy_seresnext*`` (the original Caffe SENet weights).
  ``cadene``        Cadene's pretrainedmodels ``se_resnet*`` / ``se_resnext*`` (same layout as timm_legacy):
                    ``layer0.{conv1,bn1}``, ``se_module``, ``last_linear``; stride on the bottleneck's first 1x1
                    (SE-ResNet only; SE-ResNeXt has it on the 3x3); the stem's max pool with ceil_mode; in the
                    basic block (timm's legacy SE-ResNet-18/34) a ReLU before the SE block.
  ``senet_pytorch`` senet.pytorch: torchvision names, SE as ``se.fc.0`` / ``se.fc.2`` ``nn.Linear`` without bias.

What a layout needs from the model is a model option (:func:`layout_options`), not a special case in forward.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Mapping

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
        opts: Dict[str, Any] = {"stem_pool_ceil_mode": True}
        if model_config(name)["block"] == "basic":
            opts["relu_before_se"] = True  # the legacy basic block applies a ReLU before its SE block
        elif "resnext" not in name:
            opts["stride_in_1x1"] = True  # Caffe SE-ResNet bottlenecks stride on the first 1x1
        return opts
    if layout == "senet_pytorch":
        return {"se_bias": False}
    return {}


_LEGACY_PREFIXES = (("layer0.conv1.", "conv1."), ("layer0.bn1.", "bn1."), ("last_linear.", "fc."))


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], layout: str) -> "OrderedDict[str, torch.Tensor]":
    """Renames (and reshapes) a checkpoint's tensors into sepp's layout. A ``module.`` prefix (DataParallel) is
    dropped. Raises ValueError for keys the layout does not explain."""
    _check_layout(layout)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"checkpoint entry {key!r} is a {type(value).__name__}, expected a tensor")
        k = key[len("module.") :] if key.startswith("module.") else key
        if layout in ("timm_legacy", "cadene"):
            if k.startswith("layer0.") and not k.startswith(("layer0.conv1.", "layer0.bn1.")):
                raise ValueError(
                    f"{layout} checkpoint entry {key!r}: a 3x3 stem (SENet-154 style) is not a sepp "
                    f"model; expected layer0.conv1 / layer0.bn1 only"
                )
            for old, new in _LEGACY_PREFIXES:
                if k.startswith(old):
                    k = new + k[len(old) :]
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
