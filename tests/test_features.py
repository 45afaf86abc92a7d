"""features_only backbones against timm's with the same weights: the feature maps, feature_info, and the errors."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from helpers import randomize_, rel_err

import sepp
from sepp.features import ResNetFeatures

timm = pytest.importorskip("timm")

PAIRS = [("se_resnet50", "seresnet50", {}), ("se_resnet18", "seresnet18", {"rd_divisor": 8})]


def pair(ours, theirs, kwargs, out_indices):
    t = randomize_(timm.create_model(theirs, features_only=True, out_indices=out_indices)).double().eval()
    m = sepp.create_model(ours, features_only=True, out_indices=out_indices, **kwargs).double().eval()
    m.load_state_dict(t.state_dict())
    return m, t


@pytest.mark.parametrize("ours,theirs,kwargs", PAIRS, ids=[p[0] for p in PAIRS])
@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3, 4), (1, 2, 3, 4), (2, 4)], ids=["all", "stages", "two"])
def test_feature_maps_and_feature_info_are_timms(ours, theirs, kwargs, out_indices):
    m, t = pair(ours, theirs, kwargs, out_indices)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        got, expected = m(x), t(x)
    assert isinstance(got, list) and len(got) == len(expected) == len(out_indices)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and rel_err(g, e) < 1e-10
    for key in ("channels", "reduction", "module_name"):
        assert getattr(m.feature_info, key)() == getattr(t.feature_info, key)(), key
    assert [f.shape[1] for f in got] == m.feature_info.channels()
    assert m.feature_info.channels(0) == t.feature_info.channels(0)
    assert (
        len(m.feature_info) == len(t.feature_info) == 5 and m.feature_info[0]["module"] == t.feature_info[0]["module"]
    )
    assert m.feature_info.get_dicts(keys=["num_chs", "reduction"]) == t.feature_info.get_dicts(
        keys=["num_chs", "reduction"]
    )


def test_a_backbone_has_no_classifier_and_trains():
    m = sepp.create_model("se_resnet18", features_only=True, out_indices=(3, 4))
    assert m.num_classes == 0 and not any(k.startswith("fc.") for k in m.state_dict())
    feats = m(torch.randn(2, 3, 64, 64))
    sum(f.square().mean() for f in feats).backward()
    assert m.layer4[0].conv1.weight.grad is not None
    # The stages before layer3 get gradients; the deepest index is the last stage that runs.
    assert m.layer1[0].conv1.weight.grad is not None


def test_the_forward_stops_after_the_deepest_index():
    m = sepp.create_model("se_resnet18", features_only=True, out_indices=(1,)).eval()
    seen = []
    m.layer2.register_forward_hook(lambda *_: seen.append("layer2"))
    m.layer1.register_forward_hook(lambda *_: seen.append("layer1"))
    with torch.no_grad():
        (f,) = m(torch.randn(1, 3, 64, 64))
    assert f.shape == (1, 64, 16, 16) and seen == ["layer1"]


def test_copies_and_pickles_stay_backbones():
    m = randomize_(sepp.create_model("se_resnet18", features_only=True, out_indices=(0, 2))).eval()
    x = torch.randn(1, 3, 64, 64)
    for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m)), ResNetFeatures(**m.options)):
        assert type(other) is ResNetFeatures and other.out_indices == (0, 2)
        assert other.feature_info.channels() == [64, 128]
    with torch.no_grad():
        for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
            for a, b in zip(other.eval()(x), m(x)):
                torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(features_only=True, out_indices=(5,)), ValueError, r"distinct ints in 0\.\.4.*got \(5,\)"),
        (dict(features_only=True, out_indices=(1, 1)), ValueError, r"distinct ints in 0\.\.4.*got \(1, 1\)"),
        (dict(features_only=True, out_indices=()), ValueError, r"distinct ints in 0\.\.4"),
        (dict(features_only=True, out_indices=(True,)), TypeError, r"ints in 0\.\.4, got True"),
        (dict(features_only=True, out_indices="12"), TypeError, r"sequence of feature indices"),
        (dict(features_only=True, num_classes=10), ValueError, r"no classifier, got num_classes=10"),
        (dict(out_indices=(1, 2)), TypeError, r"out_indices needs features_only=True"),
        (dict(features_only=1), TypeError, r"features_only to be a bool, got 1"),
    ],
)
def test_bad_backbone_options_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        sepp.create_model("se_resnet18", **kwargs)


@pytest.mark.parametrize(
    "indices,match", [([], "at least one index"), ([7], "indices in 0..4"), ([2, 2], "given twice")]
)
def test_forward_intermediates_checks_its_indices(indices, match):
    m = sepp.se_resnet18()
    with pytest.raises(ValueError, match=match):
        m.forward_intermediates(torch.randn(1, 3, 32, 32), indices)
