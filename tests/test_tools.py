"""The tools people run on timm's ResNets give the same results on sepp's models with the same weights: class
activation maps (pytorch-grad-cam), attributions (captum), summaries (torchinfo), MAC and FLOP counts (thop, ptflops,
torch.utils.flop_counter). Each test imports its tool itself: without it only that test skips."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from helpers import randomize_, rel_err

import sepp

timm = pytest.importorskip("timm")


def pair(ours="se_resnet50", theirs="seresnet50", dtype=torch.float64, **kwargs):
    """A sepp model and timm's, in eval mode, with the same random weights and BN statistics."""
    t = randomize_(timm.create_model(theirs)).to(dtype).eval()
    m = sepp.create_model(ours, **kwargs).to(dtype).eval()
    m.load_state_dict(t.state_dict())
    return m, t


def image(n=2, size=64, dtype=torch.float64):
    return torch.randn(n, 3, size, size, dtype=dtype)


# ---------------------------------------------------------------------------- pytorch-grad-cam


class NegatedOutput:
    """A grad-cam target: minus the logit of ``category``. With +logit for the same image, one of the two maps is not
    all zero, whatever the random weights (a map is the ReLU of a weighted sum, which flips sign with the target)."""

    def __init__(self, category):
        self.category = category

    def __call__(self, output):
        return -output[..., self.category]


@pytest.mark.parametrize("method", ["GradCAM", "GradCAMPlusPlus"])
def test_grad_cam_maps_on_the_last_block_are_timms(method):
    grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    m, t = pair()
    x = image(1).expand(2, -1, -1, -1).contiguous()
    maps = []
    for model in (m, t):
        with getattr(grad_cam, method)(model=model, target_layers=[model.layer4[-1]]) as cam:
            maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(3), NegatedOutput(3)]))
    ours, theirs = maps
    assert ours.shape == theirs.shape == (2, 64, 64)
    assert theirs.max() > 0.5  # one of the maps at least is not all zero (maps are scaled to [0, 1])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)  # grad-cam returns float32 maps


def test_score_cam_maps_are_timms():
    grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    # ScoreCAM runs the model once per channel of the target layer: layer1 (64 channels) of the basic-block model at
    # 32x32 keeps it cheap, and its 8x8 activations make a map that is not constant.
    m, t = pair("se_resnet18", "seresnet18", rd_divisor=8)
    x = image(1, 32)
    maps = []
    for model in (m, t):
        with grad_cam.ScoreCAM(model=model, target_layers=[model.layer1[-1]]) as cam:
            cam.batch_size = 64
            maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(5)]))
    ours, theirs = maps
    assert ours.shape == theirs.shape == (1, 32, 32) and theirs.max() > 0.5
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------- captum


def test_captum_layer_grad_cam_on_layer4_is_timms():
    attr = pytest.importorskip("captum.attr")
    m, t = pair()
    x, target = image(), torch.tensor([3, 7])
    ours = attr.LayerGradCam(m, m.layer4).attribute(x, target=target)
    theirs = attr.LayerGradCam(t, t.layer4).attribute(x, target=target)
    assert ours.shape == theirs.shape == (2, 1, 2, 2)
    assert theirs.abs().max() > 0 and rel_err(ours, theirs) < 1e-10


def test_captum_layer_conductance_of_a_block_is_timms():
    attr = pytest.importorskip("captum.attr")
    # Conductance runs the model on scaled inputs with a forward hook replacing the block's output.
    m, t = pair()
    x, target = image(), torch.tensor([3, 7])
    ours = attr.LayerConductance(m, m.layer3[0]).attribute(x, target=target, n_steps=4)
    theirs = attr.LayerConductance(t, t.layer3[0]).attribute(x, target=target, n_steps=4)
    assert ours.shape == theirs.shape == (2, 1024, 4, 4)
    assert rel_err(ours, theirs) < 1e-10


# ---------------------------------------------------------------------------- torchinfo

# The classes that legitimately differ: sepp's containers are its own classes (a C++ module each), where timm has
# torch.nn.Sequential, its SEModule and SelectAdaptivePool2d (which sepp's global_pool, a Sequential of
# AdaptiveAvgPool2d and Flatten, mirrors child for child). Every leaf is the same torch.nn class in both.
CONTAINERS = {
    ("CppSequential", "Sequential"),
    ("CppSequential", "SelectAdaptivePool2d"),
    ("SEBlock", "SEModule"),
    ("Bottleneck", "Bottleneck"),
    ("BasicBlock", "BasicBlock"),
    ("ResNet", "ResNet"),
}
CONTAINER_NAMES = re.compile(r"\b(CppSequential|Sequential|SelectAdaptivePool2d|SEBlock|SEModule)\b")


def summary_row(row):
    return (
        row.depth,
        row.depth_index,
        row.var_name,
        row.input_size,
        row.output_size,
        row.kernel_size,
        row.num_params,
        row.trainable_params,
        row.macs,
        row.param_bytes,
        row.output_bytes,
        row.is_leaf_layer,
        row.is_recursive,
        row.executed,
    )


@pytest.mark.parametrize("depth", [2, 3])
def test_torchinfo_summary_rows_and_totals_are_timms(depth):
    torchinfo = pytest.importorskip("torchinfo")
    m, t = pair(dtype=torch.float32)
    ours, theirs = (torchinfo.summary(model, input_size=(2, 3, 64, 64), depth=depth, verbose=0) for model in (m, t))
    # The rows printed at this depth: the same modules, shapes, parameters and MACs; the same class where timm's is a
    # torch.nn class, the pairs in CONTAINERS where it is not.
    rows = [[r for r in s.summary_list if r.depth <= depth] for s in (ours, theirs)]
    assert len(rows[0]) == len(rows[1]) > 20
    for a, b in zip(*rows):
        assert summary_row(a) == summary_row(b), (a.var_name, a.depth_index)
        assert a.class_name == b.class_name or (a.class_name, b.class_name) in CONTAINERS, (a.class_name, b.class_name)
    assert sum(r.class_name == "Conv2d" for r in rows[0]) == sum(r.class_name == "Conv2d" for r in rows[1])
    for key in (
        "total_params",
        "trainable_params",
        "total_mult_adds",
        "total_input",
        "total_output_bytes",
        "total_param_bytes",
    ):
        assert getattr(ours, key) == getattr(theirs, key), key
    # The printed table: line for line the same once the container class names are masked (their widths differ).
    text = [[line.split() for line in CONTAINER_NAMES.sub("<container>", str(s)).splitlines()] for s in (ours, theirs)]
    assert text[0] == text[1]


# ---------------------------------------------------------------------------- MAC and FLOP counters


def test_thop_counts_timms_macs_and_parameters_and_leaves_the_model_as_it_was():
    thop = pytest.importorskip("thop")
    m, t = pair(dtype=torch.float32)
    x = image(dtype=torch.float32)
    ours, theirs = (thop.profile(model, inputs=(x,), verbose=False) for model in (m, t))
    assert ours == theirs and theirs[1] == 28_088_024 and theirs[0] > 6e8
    # thop removes its hooks, and its counters from the modules it has a rule for: the leaves, and torch.nn.Sequential.
    # The other containers keep theirs (as buffers in the state_dict), in timm's model too; sepp's Sequentials are C++
    # modules, not torch.nn.Sequential, so they keep theirs as well.
    assert not any(mod._forward_hooks for mod in m.modules())
    ours_keys, theirs_keys = list(m.state_dict()), list(t.state_dict())
    assert "layer1.0.se.total_ops" in theirs_keys and "conv1.total_ops" not in theirs_keys
    sequentials = [n for n, mod in t.named_modules() if type(mod) is torch.nn.Sequential]
    assert set(ours_keys) - set(theirs_keys) == {f"{n}.total_{c}" for n in sequentials for c in ("ops", "params")}
    assert set(theirs_keys) <= set(ours_keys)
    with torch.no_grad():
        assert rel_err(m(x), t(x)) < 1e-5


@pytest.mark.parametrize("backend", ["pytorch", "aten"])
def test_ptflops_counts_timms_macs_and_parameters(backend):
    ptflops = pytest.importorskip("ptflops")
    m, t = pair(dtype=torch.float32)
    ours, theirs = (
        ptflops.get_model_complexity_info(
            model, (3, 64, 64), as_strings=False, print_per_layer_stat=False, backend=backend, verbose=False
        )
        for model in (m, t)
    )
    # pytorch: module hooks on the leaves, and patched torch.nn.functional calls inside them (a sepp leaf with hooks
    # runs its torch.nn forward); aten: the aten convolutions and matrix products, the SE blocks' 1x1 convolutions
    # included (under a dispatch mode sepp's SE blocks run their children one by one).
    assert ours == theirs and theirs[0] > 3e8 and theirs[1] == 28_088_024


def test_torch_flop_counter_counts_timms_flops_per_module():
    from torch.utils.flop_counter import FlopCounterMode

    m, t = pair("se_resnet18", "seresnet18", dtype=torch.float32, rd_divisor=8)
    x = image(dtype=torch.float32)
    counts = []
    for model in (m, t):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
        counts.append({k: {str(op): n for op, n in v.items()} for k, v in counter.get_flop_counts().items()})
    assert counts[0] == counts[1]
    fc1 = m.layer2[0].se.fc1.weight.numel()
    assert counts[1]["ResNet.layer2.0.se.fc1"] == {"aten.convolution": 2 * 2 * fc1}  # 2 images, multiply and add
