"""The paper's CIFAR-10 networks: pre-activation ResNets (He et al. 2016) of 20 to 164 layers and their SE twins,
held to the pure-Python reference (float64, training and eval, gradients), optimized against eager, as backbones,
under hooks, and trained by ``python -m sepp.train`` on a 32-pixel ImageFolder. (The reference's own structure and
parameter counts are checked against the papers' figures in test_cifar_reference.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import copy_state, randomize_, randomize_norms_, rel_err
from test_train import make_image_folder

import sepp
from sepp import reference

CIFAR = [n for n in sepp.model_names() if n.endswith("_cifar")]
# The shallowest of each block type, with and without SE: the deeper ones differ only in their depth.
SMALL = ["resnet20_cifar", "se_resnet20_cifar", "resnet164_cifar", "se_resnet164_cifar"]


def test_every_cifar_name_of_the_paper_exists_in_sepp_and_in_the_reference():
    depths = (20, 32, 56, 110, 164)
    expected = {f"{p}resnet{d}_cifar" for d in depths for p in ("", "se_")}
    assert set(CIFAR) == expected
    assert expected <= set(reference.model_names())


def _pair(name: str, dtype=torch.float64):
    ref = reference.create_model(name).to(dtype)
    randomize_(ref)
    randomize_norms_(ref)
    m = sepp.create_model(name).to(dtype)
    copy_state(ref, m)
    return m, ref


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_model_has_the_reference_parameters_and_logits_in_eval_mode(name):
    m, ref = _pair(name)
    assert [(k, v.shape) for k, v in m.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in ref.parameters())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        y, y_ref = m.eval()(x), ref.eval()(x)
    assert y.shape == (2, 10)
    assert rel_err(y, y_ref) < 1e-10


@pytest.mark.parametrize("name", SMALL)
def test_cifar_model_trains_as_the_reference_gradients_and_batch_statistics(name):
    m, ref = _pair(name)
    m.train(), ref.train()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    y, y_ref = m(x), ref(x)
    assert rel_err(y, y_ref) < 1e-10
    g = torch.randn_like(y)
    y.backward(g), y_ref.backward(g)
    named = dict(ref.named_parameters())
    for k, p in m.named_parameters():
        assert rel_err(p.grad, named[k].grad) < 1e-9, k
    buffers = dict(ref.named_buffers())
    for k, b in m.named_buffers():
        assert rel_err(b.double(), buffers[k].double()) < 1e-10, k


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("name", SMALL)
def test_optimized_cifar_model_matches_eager(name, dtype, tol):
    m, _ = _pair(name, dtype)
    m.eval()
    x = torch.randn(3, 3, 32, 32, dtype=dtype)
    opt = sepp.optimize_for_inference(m, input_size=(3, 3, 32, 32))
    with torch.no_grad():
        assert rel_err(opt(x), m(x)) < tol


def test_pre_activation_blocks_sum_without_a_relu_and_project_the_pre_activated_input():
    m, _ = _pair("se_resnet20_cifar")
    m.eval()
    block = m.layer2[0]  # 16 -> 32 channels at stride 2: a projection shortcut
    assert [n for n, _ in block.named_children()] == [
        "bn1",
        "act1",
        "conv1",
        "bn2",
        "act2",
        "conv2",
        "se",
        "downsample",
    ]
    assert [type(c) for c in block.downsample] == [torch.nn.Conv2d]  # a projection without BN
    x = torch.randn(2, 16, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        a = torch.relu(block.bn1(x))
        u = block.conv2(torch.relu(block.bn2(block.conv1(a))))
        expected = block.se(u) + block.downsample(a)
        y = block(x)
    assert (y < 0).any()  # no ReLU after the sum
    assert rel_err(y, expected) < 1e-12


@pytest.mark.parametrize(
    "name, channels", [("se_resnet20_cifar", [16, 16, 32, 64]), ("resnet164_cifar", [16, 64, 128, 256])]
)
def test_cifar_backbone_gives_stride_1_2_4_maps_the_last_after_the_final_norm(name, channels):
    b = sepp.create_model(name, features_only=True).double().eval()
    assert b.feature_info.channels() == channels
    assert b.feature_info.reduction() == [1, 1, 2, 4]
    assert b.feature_info.module_name() == ["conv1", "layer1", "layer2", "act"]
    m = sepp.create_model(name).double().eval()
    missing, unexpected = b.load_state_dict(m.state_dict(), strict=False)
    assert missing == [] and unexpected == ["fc.weight", "fc.bias"]
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        maps = b(x)
        assert [tuple(f.shape[1:]) for f in maps] == [(c, s, s) for c, s in zip(channels, (32, 32, 16, 8))]
        assert rel_err(maps[-1], m.forward_features(x)) < 1e-12
        assert rel_err(m.forward_head(maps[-1]), m(x)) < 1e-12


def test_hooks_fire_on_the_same_modules_in_the_same_order_as_on_the_reference():
    m, ref = _pair("se_resnet20_cifar")

    def record(model):
        fired = []
        handles = [
            mod.register_forward_hook(lambda mod, i, o, name=name: fired.append(name))
            for name, mod in model.named_modules()
            if name and not list(mod.children())
        ]
        with torch.no_grad():
            model.eval()(torch.randn(1, 3, 32, 32, dtype=torch.float64))
        for h in handles:
            h.remove()
        return fired

    # The reference's SE block computes its ReLU and gate as functions; sepp's has timm's SEModule children.
    fired = record(m)
    assert [n for n in fired if ".se." not in n] == [n for n in record(ref) if ".se." not in n]
    assert fired[fired.index("layer1.0.se.fc1") :][:5] == [
        f"layer1.0.se.{c}" for c in ("fc1", "bn", "act", "fc2", "gate")
    ]
    assert fired[:4] == ["conv1", "maxpool", "layer1.0.bn1", "layer1.0.act1"]
    assert fired[-4:] == ["act", "global_pool.pool", "global_pool.flatten", "fc"]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(preact=True, se=True, se_strategy="post"), "se_strategy 'standard'"),
        (dict(preact=True, aa_layer="avgpool"), "aa_layer"),
        (dict(preact=True, relu_before_se=True), "relu_before_se"),
        (dict(layers=(1, 1, 1)), "as many stage depths"),
        (dict(stage_planes=(8, 8, 8, 8, 8), layers=(1, 1, 1, 1, 1)), "1 to 4 stages"),
        (dict(layers=(1, 1, 1), stage_planes=(8, 8, 8), se=(True, False)), "one per stage"),
        (dict(layers=(1, 1, 1), stage_planes=(8, 8, 8), stem_type="cifar", aa_layer="avgpool"), "CIFAR stem"),
    ],
)
def test_invalid_pre_activation_and_stage_options_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        sepp.ResNet(**options)


def test_train_command_trains_an_se_resnet_cifar_on_a_32_pixel_image_folder(tmp_path):
    data = make_image_folder(tmp_path / "data", train_per_class=8, val_per_class=4)
    out = tmp_path / "run"
    args = [
        "--data", str(data), "--output", str(out), "--model", "se_resnet20_cifar", "--epochs", "1",
        "--image-size", "32", "--batch-size", "8", "--workers", "0", "--no-progress", "--seed", "1",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "sepp.train", *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any(Path(out).rglob("*.safetensors")), sorted(str(p) for p in Path(out).rglob("*"))
