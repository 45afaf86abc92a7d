"""Pretrained weights from the Hugging Face Hub (timm's published SE-ResNets), through ``huggingface_hub``.

``sepp.se_resnet50(pretrained="timm/seresnet50.a1_in1k")`` downloads ``config.json`` and ``model.safetensors`` (or
finds them in the local hub cache; with ``HF_HUB_OFFLINE=1`` only there), converts the weights into sepp's layout
(``legacy_*`` architectures are the Caffe SENet layout) and attaches the preprocessing config as
``model.pretrained_cfg`` (input size, mean / std, interpolation, crop). Weights are read with the safetensors checks
of :mod:`sepp.weights`; nothing is unpickled.
"""

from __future__ import annotations

import json
from typing import Any, Dict

from .convert import create_from_checkpoint
from .models import ResNet, create_model
from .weights import load_tensors

__all__ = ["load_pretrained", "PUBLISHED"]

# Tags known to exist for each factory (any "owner/repo" in timm's format works); under timm's names, every tag timm
# lists for the model (timm.list_pretrained).
PUBLISHED: Dict[str, tuple] = {
    "resnet50": ("timm/resnet50.a1_in1k", "timm/resnet50.tv_in1k"),
    "se_resnet50": ("timm/seresnet50.a1_in1k", "timm/seresnet50.ra2_in1k", "timm/legacy_seresnet50.in1k"),
    "se_resnet101": ("timm/legacy_seresnet101.in1k",),
    "se_resnet152": ("timm/legacy_seresnet152.in1k",),
    "se_resnext50_32x4d": ("timm/seresnext50_32x4d.racm_in1k", "timm/legacy_seresnext50_32x4d.in1k"),
    "se_resnext101_32x4d": ("timm/seresnext101_32x4d.gluon_in1k", "timm/legacy_seresnext101_32x4d.in1k"),
    "seresnet50": (
        "timm/seresnet50.a1_in1k",
        "timm/seresnet50.a2_in1k",
        "timm/seresnet50.a3_in1k",
        "timm/seresnet50.ra2_in1k",
    ),
    "seresnet152d": ("timm/seresnet152d.ra2_in1k",),
    "seresnext26d_32x4d": ("timm/seresnext26d_32x4d.bt_in1k",),
    "seresnext26t_32x4d": ("timm/seresnext26t_32x4d.bt_in1k",),
    "seresnext50_32x4d": ("timm/seresnext50_32x4d.gluon_in1k", "timm/seresnext50_32x4d.racm_in1k"),
    "seresnext101_32x4d": ("timm/seresnext101_32x4d.gluon_in1k",),
    "seresnext101_32x8d": ("timm/seresnext101_32x8d.ah_in1k",),
    "seresnext101_64x4d": ("timm/seresnext101_64x4d.gluon_in1k",),
    "seresnext101d_32x8d": ("timm/seresnext101d_32x8d.ah_in1k",),
    "seresnextaa101d_32x8d": (
        "timm/seresnextaa101d_32x8d.ah_in1k",
        "timm/seresnextaa101d_32x8d.sw_in12k",
        "timm/seresnextaa101d_32x8d.sw_in12k_ft_in1k",
        "timm/seresnextaa101d_32x8d.sw_in12k_ft_in1k_288",
    ),
    "seresnextaa201d_32x8d": ("timm/seresnextaa201d_32x8d.sw_in12k", "timm/seresnextaa201d_32x8d.sw_in12k_ft_in1k_384"),
    "senet154": ("timm/senet154.gluon_in1k",),
    "legacy_senet154": ("timm/legacy_senet154.in1k",),
    "legacy_seresnet18": ("timm/legacy_seresnet18.in1k",),
    "legacy_seresnet34": ("timm/legacy_seresnet34.in1k",),
    "legacy_seresnet50": ("timm/legacy_seresnet50.in1k",),
    "legacy_seresnet101": ("timm/legacy_seresnet101.in1k",),
    "legacy_seresnet152": ("timm/legacy_seresnet152.in1k",),
    "legacy_seresnext26_32x4d": ("timm/legacy_seresnext26_32x4d.in1k",),
    "legacy_seresnext50_32x4d": ("timm/legacy_seresnext50_32x4d.in1k",),
    "legacy_seresnext101_32x4d": ("timm/legacy_seresnext101_32x4d.in1k",),
}

_CFG_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode", "num_classes", "license")


def _download(repo: str, filename: str) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return hf_hub_download(repo, filename)
    except LocalEntryNotFoundError as e:
        raise RuntimeError(
            f"pretrained={repo!r}: {filename} is not in the local hub cache and cannot be downloaded "
            f"(offline, or no network): {e}"
        ) from e
    except (RepositoryNotFoundError, EntryNotFoundError) as e:
        raise ValueError(f"pretrained={repo!r}: the hub has no {filename} there: {e}") from e


def load_pretrained(name: str, tag: str, **overrides: Any) -> ResNet:
    """Model ``name`` with the weights of hub repository ``tag`` (e.g. ``"timm/seresnet50.a1_in1k"``).

    ``num_classes`` other than the checkpoint's gives a freshly initialised classifier (fine-tuning)."""
    repo = tag[len("hf-hub:") :] if tag.startswith("hf-hub:") else tag
    if repo.count("/") != 1:
        raise ValueError(
            f"pretrained: expected a hub repository 'owner/name' such as 'timm/seresnet50.a1_in1k', got {tag!r}"
        )
    with open(_download(repo, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    arch = str(config.get("architecture") or repo.split("/")[1].split(".")[0])
    layout = "timm_legacy" if arch.startswith("legacy_") else "timm"
    tensors = load_tensors(_download(repo, "model.safetensors"))
    features_only = overrides.pop("features_only", False)
    out_indices = overrides.pop("out_indices", None)
    num_classes = overrides.pop("num_classes", None)
    model = create_from_checkpoint(name, tensors, layout, **overrides)
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    if features_only:
        # The backbone of the loaded model: everything but the classifier.
        backbone = create_model(name, features_only=True, out_indices=out_indices, **overrides)
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
        backbone.load_state_dict(state)
        model = backbone
    cfg = config.get("pretrained_cfg", {})
    model.pretrained_cfg = {**{k: cfg[k] for k in _CFG_KEYS if k in cfg}, "hf_hub_id": repo, "architecture": arch}
    return model
