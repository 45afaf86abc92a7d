"""Checkpoint conversion: the converted sepp model's outputs equal the source model's (float64, random weights)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from helpers import randomize_, rel_err

import sepp
import sepp.reference as ref
from sepp.convert import convert_state_dict, create_from_checkpoint, layout_options


@pytest.mark.parametrize(
    "ours,theirs",
    [
        ("se_resnet50", "legacy_seresnet50"),
        ("se_resnet101", "legacy_seresnet101"),
        ("se_resnet18", "legacy_seresnet18"),
        ("se_resnet34", "legacy_seresnet34"),
        ("se_resnext50_32x4d", "legacy_seresnext50_32x4d"),
    ],
)
@pytest.mark.parametrize("layout", ["timm_legacy", "cadene"])
def test_legacy_caffe_senet_checkpoints(ours, theirs, layout):
    timm = pytest.importorskip("timm")
    # Cadene's pretrainedmodels have the same layout as timm's legacy port (layer0, se_module, last_linear).
    source = randomize_(timm.create_model(theirs, pretrained=False)).double().eval()
    m = create_from_checkpoint(ours, source.state_dict(), layout).double().eval()
    basic = ours in ("se_resnet18", "se_resnet34")
    assert m.stem_pool_ceil_mode and m.relu_before_se == basic
    assert m.stride_in_1x1 == ("resnext" not in ours and not basic)
    for size in (64, 75):  # an odd size, where ceil_mode and the stride placement both matter
        x = torch.randn(2, 3, size, size, dtype=torch.float64)
        with torch.no_grad():
            assert rel_err(m(x), source(x)) < 1e-10


def test_without_the_layout_options_the_outputs_differ():
    timm = pytest.importorskip("timm")
    # The options are what makes the legacy weights right: without them the same tensors give other outputs.
    source = randomize_(timm.create_model("legacy_seresnet50", pretrained=False)).double().eval()
    plain = sepp.se_resnet50().double().eval()
    plain.load_state_dict(convert_state_dict(source.state_dict(), "timm_legacy"))
    x = torch.randn(1, 3, 75, 75, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(plain(x), source(x)) > 1e-3


def senet_pytorch_state_dict(model):
    """The layout of senet.pytorch (moskomule): torchvision names, SE as nn.Linear without bias in se.fc.{0,2}."""
    out = OrderedDict()
    for k, v in model.state_dict().items():
        if ".se.fc1." in k or ".se.fc2." in k:
            k = k.replace(".se.fc1.", ".se.fc.0.").replace(".se.fc2.", ".se.fc.2.")
            v = v.flatten(1)
        out["module." + k] = v  # as saved from DataParallel
    return out


def test_senet_pytorch_checkpoints():
    source = randomize_(ref.se_resnet50(se_bias=False)).double().eval()
    sd = senet_pytorch_state_dict(source)
    assert sd["module.layer1.0.se.fc.0.weight"].shape == (16, 256)
    m = create_from_checkpoint("se_resnet50", sd, "senet_pytorch").double().eval()
    assert m.se_bias is False
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(m(x), source(x)) < 1e-10


def test_torchvision_and_timm_layouts_load_as_they_are():
    torchvision = pytest.importorskip("torchvision")
    timm = pytest.importorskip("timm")
    tv = randomize_(torchvision.models.resnet50(weights=None)).double().eval()
    m = create_from_checkpoint("resnet50", tv.state_dict(), "torchvision").double().eval()
    t = randomize_(timm.create_model("seresnet50", pretrained=False, num_classes=10)).double().eval()
    m2 = create_from_checkpoint("se_resnet50", t.state_dict(), "timm").double().eval()
    assert m2.num_classes == 10  # sized from the checkpoint
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(m(x), tv(x)) < 1e-10 and rel_err(m2(x), t(x)) < 1e-10
    assert layout_options("torchvision", "resnet50") == {}


def test_bad_checkpoints_are_refused_with_the_name():
    with pytest.raises(ValueError, match="unknown checkpoint layout 'caffe'"):
        convert_state_dict({}, "caffe")
    with pytest.raises(ValueError, match=r"'layer0.conv2.weight'.*3x3 stem"):
        convert_state_dict({"layer0.conv2.weight": torch.zeros(1)}, "cadene")
    with pytest.raises(ValueError, match=r"expected se.fc.0.weight or se.fc.2.weight"):
        convert_state_dict({"layer1.0.se.fc.1.weight": torch.zeros(2, 2)}, "senet_pytorch")
    sd = sepp.se_resnet50().state_dict()
    del sd["layer3.2.se.fc2.bias"]
    with pytest.raises(RuntimeError, match=r'(?s)Missing key\(s\).*"layer3.2.se.fc2.bias"'):
        create_from_checkpoint("se_resnet50", sd, "timm")
