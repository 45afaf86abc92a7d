"""Every timm SE-ResNet under its timm name: the SE models of timm's resnet.py (seresnet*, seresnext*, senet154) and
senet.py's legacy_* ports of the original Caffe SENets. For each, sepp.reference and sepp's C++ model have timm's
parameter count and state-dict names and shapes (the legacy ones after sepp.convert's "timm_legacy" renaming), and
with timm's weights give timm's logits in float64 to 1e-10 relative; the optimized C++ model gives the eager one's.

timm is a test dependency: without it this file fails to import (it is not skipped)."""

from __future__ import annotations

import inspect
from functools import cached_property

import pytest
import timm
import torch
from helpers import randomize_norms_, rel_err

import sepp
import sepp.reference as ref
from sepp.convert import convert_state_dict, create_from_checkpoint, layout_options

TOL64 = 1e-10

# timm's resnet.py models with SE blocks in every residual block (attn_layer='se'), and senet.py's legacy models.
RESNET_PY = (
    "seresnet18",
    "seresnet34",
    "seresnet50",
    "seresnet50t",
    "seresnet101",
    "seresnet152",
    "seresnet152d",
    "seresnet200d",
    "seresnet269d",
    "seresnetaa50d",
    "seresnext26d_32x4d",
    "seresnext26t_32x4d",
    "seresnext50_32x4d",
    "seresnext101_32x4d",
    "seresnext101_32x8d",
    "seresnext101_64x4d",
    "seresnext101d_32x8d",
    "seresnextaa101d_32x8d",
    "seresnextaa201d_32x8d",
    "senet154",
)
SENET_PY = (
    "legacy_seresnet18",
    "legacy_seresnet34",
    "legacy_seresnet50",
    "legacy_seresnet101",
    "legacy_seresnet152",
    "legacy_senet154",
    "legacy_seresnext26_32x4d",
    "legacy_seresnext50_32x4d",
    "legacy_seresnext101_32x4d",
)
NAMES = RESNET_PY + SENET_PY

# The deepest and widest models (67M to 149M parameters) run one 64x64 image, the others two: the file stays fast.
LARGE = {
    "seresnet152",
    "seresnet152d",
    "seresnet200d",
    "seresnet269d",
    "seresnext101_32x4d",
    "seresnext101_32x8d",
    "seresnext101_64x4d",
    "seresnext101d_32x8d",
    "seresnextaa101d_32x8d",
    "seresnextaa201d_32x8d",
    "senet154",
    "legacy_senet154",
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def shapes(state_dict) -> dict:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


class Family:
    """One timm model and what the tests compare with it. Each piece is made when a test first asks for it (so its
    random values come from that test's seed) and kept until the fixture moves on to the next name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.legacy = name.startswith("legacy_")

    @cached_property
    def timm_model(self) -> torch.nn.Module:
        """timm's model with its own random initialisation, random BN statistics and affine parameters (timm zeroes
        each block's last BN scale), drawn in float32 (so a float32 model loads them exactly) and run in float64."""
        model = timm.create_model(self.name, pretrained=False)
        return randomize_norms_(model).double().eval()

    @cached_property
    def state_dict(self):
        """timm's weights in sepp's names."""
        sd = self.timm_model.state_dict()
        return convert_state_dict(sd, "timm_legacy") if self.legacy else sd

    @cached_property
    def x(self) -> torch.Tensor:
        return torch.randn(1 if self.name in LARGE else 2, 3, 64, 64, dtype=torch.float64)

    @cached_property
    def logits(self) -> torch.Tensor:
        with torch.no_grad():
            return self.timm_model(self.x)

    @cached_property
    def sepp_built(self) -> torch.nn.Module:
        """sepp's C++ model as its factory builds it (the largest take seconds to initialise: built once a name)."""
        return sepp.create_model(self.name)

    @cached_property
    def sepp_model(self) -> torch.nn.Module:
        """sepp's C++ model with timm's weights, float64, eval mode (``sepp_built``, loaded)."""
        if self.legacy:
            return create_from_checkpoint(self.name, self.timm_model.state_dict(), "timm_legacy").double().eval()
        model = self.sepp_built.double().eval()
        model.load_state_dict(self.state_dict, strict=True)
        return model


@pytest.fixture(scope="module", params=NAMES)
def family(request):
    # Module scope with one parameter per name: pytest runs every test of a name in a row, so each timm model is
    # built once, and drops it before the next name (the largest is 1.2 GB in float64).
    f = Family(request.param)
    yield f
    f.__dict__.clear()


def reference_options(name: str) -> dict:
    """Every ResNet option of the reference's model ``name`` (its defaults and CONFIGS), as sepp's ``options`` reads
    them back: ``se`` one bool per stage, ``layers`` a tuple."""
    options = {k: p.default for k, p in inspect.signature(ref.ResNet).parameters.items()}
    options.update(ref.CONFIGS[name])
    if isinstance(options["se"], bool):
        options["se"] = (options["se"],) * 4
    options["layers"] = tuple(options["layers"])
    return options


def test_the_names_are_every_se_resnet_of_timms_resnet_and_senet_modules():
    timm_names = set(timm.list_models(["seresnet*", "seresnext*", "senet*"], module="resnet"))
    assert set(RESNET_PY) == timm_names
    assert set(SENET_PY) == set(timm.list_models(module="senet"))
    for name in NAMES:
        assert name in ref.CONFIGS and name in ref.__all__
        assert getattr(ref, name).__name__ == name


# ------------------------------------------------------------------------------------------------ sepp.reference


def test_the_reference_has_timms_parameter_count_and_state_dict(family):
    with torch.device("meta"):
        model = ref.create_model(family.name)
    assert n_params(model) == n_params(family.timm_model)
    assert shapes(model.state_dict()) == shapes(family.state_dict)


def test_the_reference_with_timms_weights_gives_timms_logits_in_float64(family):
    with torch.device("meta"):
        model = ref.create_model(family.name)
    # No initialisation: the weights are all timm's (a strict load fills every parameter and buffer).
    model = model.to(torch.float64).to_empty(device="cpu")
    model.load_state_dict(family.state_dict, strict=True)
    model.eval()
    with torch.no_grad():
        assert rel_err(model(family.x), family.logits) < TOL64


# ------------------------------------------------------------------------------------------------ sepp (C++)


def test_every_name_is_a_sepp_factory():
    names = sepp.model_names()
    for name in NAMES:
        assert name in names
        assert getattr(sepp, name).__name__ == name


def test_the_sepp_model_has_timms_parameter_count_and_state_dict_and_the_references_options(family):
    model = family.sepp_built
    assert n_params(model) == n_params(family.timm_model)
    assert shapes(model.state_dict()) == shapes(family.state_dict)
    # The C++ factory table and the reference's CONFIGS are written apart: they must describe the same model.
    assert model.options == reference_options(family.name)


def test_the_sepp_model_with_timms_weights_gives_timms_logits_in_float64(family):
    with torch.no_grad():
        assert rel_err(family.sepp_model(family.x), family.logits) < TOL64


def test_the_optimized_sepp_model_gives_the_eager_logits_in_float64(family):
    model = family.sepp_model
    optimized = sepp.optimize_for_inference(model)
    with torch.no_grad():
        assert rel_err(optimized(family.x), model(family.x)) < TOL64


@pytest.mark.parametrize("family", ["legacy_senet154"], indirect=True)
def test_senet154_loads_the_caffe_senet154_weights_with_the_legacy_layout(family):
    # timm's senet154 is the Caffe SENet-154 in resnet.py's names; the legacy layout adds only the stem's ceil-mode
    # pool (SENet-154's bottlenecks stride on the 3x3, as timm's). Its own options give the rest: the deep stem of
    # 64, 64, 128 channels, 3x3 downsamples and halved first 1x1s.
    assert layout_options("timm_legacy", "senet154") == {"stem_pool_ceil_mode": True}
    model = create_from_checkpoint("senet154", family.timm_model.state_dict(), "timm_legacy").double().eval()
    o = model.options
    assert (o["stem_type"], o["stem_width"], o["down_kernel_size"], o["block_reduce_first"]) == ("deep", 64, 3, 2)
    assert o["stem_pool_ceil_mode"] and not o["stride_in_1x1"]
    with torch.no_grad():
        assert rel_err(model(family.x), family.logits) < TOL64
