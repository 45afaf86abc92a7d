"""The paper's CIFAR-10 networks in sepp.reference, held to published facts and to the definition of a pre-activation
block (He et al. 2016, "Identity Mappings in Deep Residual Networks"), with no C++ model involved: parameter counts
against He et al.'s tables, the SE blocks' exact parameter cost, the shapes of every stage, a block's output computed
by hand from its weights, and the options a pre-activation network refuses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_, rel_err

import sepp.reference as ref

CIFAR_NAMES = [
    "resnet20_cifar",
    "resnet32_cifar",
    "resnet56_cifar",
    "resnet110_cifar",
    "resnet164_cifar",
    "se_resnet20_cifar",
    "se_resnet32_cifar",
    "se_resnet56_cifar",
    "se_resnet110_cifar",
    "se_resnet164_cifar",
]
# name -> (block, n): 6n+2 layers with basic blocks, 9n+2 with bottlenecks
DEPTHS = {
    "resnet20_cifar": ("basic", 3),
    "resnet32_cifar": ("basic", 5),
    "resnet56_cifar": ("basic", 9),
    "resnet110_cifar": ("basic", 18),
    "resnet164_cifar": ("bottleneck", 18),
}
PLANES = (16, 32, 64)


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bn(m: torch.nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """An eval-mode BN from its parameters and statistics, without calling the module."""
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, training=False, eps=m.eps)


def conv(m: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, m.weight, None, m.stride, m.padding, 1, m.groups)


def test_the_cifar_names_are_configs_and_factories():
    assert [n for n in ref.model_names() if n.endswith("_cifar")] == CIFAR_NAMES
    for name in CIFAR_NAMES:
        cfg = ref.CONFIGS[name]
        block, n = DEPTHS[name.removeprefix("se_")]
        assert cfg["block"] == block and cfg["layers"] == (n, n, n)
        assert cfg["se"] is name.startswith("se_")
        assert tuple(cfg["stage_planes"]) == PLANES and cfg["stem_type"] == "cifar" and cfg["stem_width"] == 16
        assert cfg["preact"] is True and cfg["num_classes"] == 10 and cfg["zero_init_last"] is False
        assert callable(getattr(ref, name)) and name in ref.__all__


@pytest.mark.parametrize(
    "name, millions", [("resnet20_cifar", 0.27), ("resnet32_cifar", 0.46), ("resnet56_cifar", 0.85)]
)
def test_small_cifar_resnets_exceed_he_2015_counts_by_under_2_percent_for_their_projection_shortcuts(name, millions):
    # He et al. 2015, Table 6, counts parameter-free (zero-padding) shortcuts; ours are 1x1 projections (option B)
    # where the width changes, and there is one BN-ReLU more per block (pre-activation) and after the last stage.
    rel = (num_params(ref.create_model(name)) - millions * 1e6) / (millions * 1e6)
    assert 0 <= rel < 0.02


@pytest.mark.parametrize("name", ["resnet110_cifar", "resnet164_cifar"])
def test_resnet110_and_resnet164_have_1_7m_parameters_as_in_he_2016(name):
    assert round(num_params(ref.create_model(name)) / 1e6, 1) == 1.7


def se_params(block: str, n: int) -> int:
    """Every block's SE block on its output width C: two 1x1 convolutions C -> C // 16 -> C with biases."""
    expansion = 4 if block == "bottleneck" else 1
    total = 0
    for planes in PLANES:
        c = planes * expansion
        total += n * (2 * c * (c // 16) + c // 16 + c)
    return total


@pytest.mark.parametrize("name", [n for n in CIFAR_NAMES if n.startswith("se_")])
def test_se_versions_add_exactly_the_parameters_of_their_se_blocks(name):
    base = name.removeprefix("se_")
    extra = num_params(ref.create_model(name)) - num_params(ref.create_model(base))
    assert extra == se_params(*DEPTHS[base])


@pytest.mark.parametrize("name", CIFAR_NAMES)
def test_cifar_models_give_ten_logits_for_a_batch_of_32x32_images(name):
    model = ref.create_model(name).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name, channels", [("resnet20_cifar", (16, 32, 64)), ("se_resnet164_cifar", (64, 128, 256))])
def test_forward_stages_gives_three_stages_at_32_16_and_8_pixels(name, channels):
    model = ref.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        stages = model.forward_stages(x)
        features = model.forward_features(x)
        logits = model(x)
        head = model.forward_head(features)
    assert [tuple(s.shape) for s in stages] == [(2, c, r, r) for c, r in zip(channels, (32, 16, 8))]
    assert model.num_features == channels[-1]
    # the last stage's output is the features after the final norm and ReLU, which the head pools
    assert torch.equal(features, stages[-1]) and (features >= 0).all()
    assert torch.equal(logits, head)


def test_a_preact_network_has_no_stem_bn_and_ends_in_norm_and_act():
    model = ref.resnet20_cifar()
    assert [n for n, _ in model.named_children()] == [
        "conv1",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "norm",
        "act",
        "global_pool",
        "fc",
    ]
    c = model.conv1
    assert isinstance(c, torch.nn.Conv2d) and c.bias is None
    assert (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) == (3, 16, (3, 3), (1, 1), (1, 1))
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert isinstance(model.norm, torch.nn.BatchNorm2d) and model.norm.num_features == 64
    assert isinstance(model.act, torch.nn.ReLU)
    # the stem is the convolution alone: its output can be negative
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.forward_stem(x), model.conv1(x))
    # a deep stem keeps its Sequential but loses the top-level BN too
    deep = ref.ResNet("basic", (1, 1), stage_planes=(8, 16), stem_type="deep", stem_width=8, preact=True)
    assert isinstance(deep.conv1, torch.nn.Sequential) and not hasattr(deep, "bn1")


def test_a_post_activation_cifar_stem_is_the_3x3_convolution_bn_and_relu_with_no_pool():
    model = ref.ResNet("basic", (1, 1, 1), stage_planes=PLANES, stem_type="cifar", stem_width=16).eval()
    assert [n for n, _ in model.named_children()][:3] == ["conv1", "bn1", "maxpool"]
    assert isinstance(model.maxpool, torch.nn.Identity)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.forward_stem(x), F.relu(model.bn1(model.conv1(x))))


def test_preact_blocks_register_their_modules_in_the_order_they_run():
    basic = ref.resnet20_cifar().layer2[0]
    assert [n for n, _ in basic.named_children()] == ["bn1", "act1", "conv1", "bn2", "act2", "conv2", "downsample"]
    assert basic.bn1.num_features == 16 and basic.bn2.num_features == 32 and basic.conv1.stride == (2, 2)
    se_bottleneck = ref.se_resnet164_cifar().layer1[0]
    assert [n for n, _ in se_bottleneck.named_children()] == [
        "bn1",
        "act1",
        "conv1",
        "bn2",
        "act2",
        "conv2",
        "bn3",
        "act3",
        "conv3",
        "se",
        "downsample",
    ]
    assert se_bottleneck.bn1.num_features == 16 and se_bottleneck.bn3.num_features == 16
    assert se_bottleneck.se.channels == 64 and se_bottleneck.se.fc1.out_channels == 4
    # the projection shortcut is the convolution alone
    assert [k for k in basic.state_dict() if k.startswith("downsample")] == ["downsample.0.weight"]
    pooled = ref.BasicBlock(16, 32, stride=2, avg_down=True, preact=True)
    assert [k for k in pooled.state_dict() if k.startswith("downsample")] == ["downsample.1.weight"]
    assert ref.resnet20_cifar().layer1[0].downsample is None  # 16 -> 16 at stride 1: the identity


def preact_block_by_hand(block, x):
    """He et al. 2016's block from its weights: BN-ReLU, the branch, SE on the branch, plus the shortcut (a projection
    of the pre-activated input, else the input itself), and nothing after the sum."""
    a = F.relu(bn(block.bn1, x))
    out = conv(block.conv2, F.relu(bn(block.bn2, conv(block.conv1, a))))
    if isinstance(block, ref.Bottleneck):
        out = conv(block.conv3, F.relu(bn(block.bn3, out)))
    if block.se is not None:
        s = torch.sigmoid(block.se.fc2(F.relu(block.se.fc1(out.mean((2, 3), keepdim=True)))))
        out = out * s
    if block.downsample is None:
        return out + x
    shortcut = a
    for m in block.downsample:
        shortcut = m(shortcut)
    return out + shortcut


@pytest.mark.parametrize(
    "make",
    [
        lambda: ref.BasicBlock(16, 16, preact=True),
        lambda: ref.BasicBlock(16, 32, stride=2, se=True, preact=True),
        lambda: ref.BasicBlock(16, 32, stride=2, avg_down=True, preact=True),
        lambda: ref.Bottleneck(16, 16, preact=True),
        lambda: ref.Bottleneck(64, 16, se=True, preact=True),
        lambda: ref.Bottleneck(64, 32, stride=2, se=True, preact=True),
        lambda: ref.Bottleneck(64, 32, stride=2, stride_in_1x1=True, preact=True),
    ],
    ids=[
        "basic",
        "basic-se-projection",
        "basic-avg-down",
        "bottleneck-projection",
        "bottleneck-se",
        "bottleneck-se-s2",
        "bottleneck-stride-in-1x1",
    ],
)
def test_a_preact_block_outputs_its_branch_of_the_pre_activated_input_plus_the_shortcut_with_no_relu(make):
    block = randomize_(make().double()).eval()
    x = torch.randn(2, block.bn1.num_features, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        y = block(x)
        expected = preact_block_by_hand(block, x)
    assert rel_err(y, expected) < 1e-12
    assert (y < 0).any()  # no ReLU after the sum


def test_a_post_activation_block_never_outputs_negatives():
    block = randomize_(ref.BasicBlock(16, 32, stride=2, se=True).double()).eval()
    with torch.no_grad():
        assert (block(torch.randn(2, 16, 8, 8, dtype=torch.float64)) >= 0).all()


def test_zero_init_last_zeroes_each_preact_branchs_last_convolution_so_blocks_start_as_shortcuts():
    model = ref.ResNet(
        "bottleneck", (2, 2), stage_planes=(8, 16), stem_type="cifar", stem_width=8, preact=True, se=True
    ).eval()
    for block in (m for m in model.modules() if isinstance(m, ref.Bottleneck)):
        assert not block.conv3.weight.any()
        assert block.conv2.weight.any() and torch.equal(block.bn3.weight, torch.ones_like(block.bn3.weight))
    identity_block = model.layer2[1]
    x = torch.randn(2, 64, 4, 4)
    with torch.no_grad():
        assert torch.equal(identity_block(x), x)
    # He's initialisation in the CIFAR configs: nothing starts at zero
    assert all(
        block.conv2.weight.any() for block in ref.resnet20_cifar().modules() if isinstance(block, ref.BasicBlock)
    )


@pytest.mark.parametrize("stage_planes", [(8,), (8, 16), (4, 8, 16, 32)])
def test_any_number_of_stages_halves_the_resolution_after_the_first(stage_planes):
    n = len(stage_planes)
    model = ref.ResNet("basic", (1,) * n, stage_planes=stage_planes, stem_type="cifar", stem_width=8, preact=True)
    assert [name for name, _ in model.named_children() if name.startswith("layer")] == [
        f"layer{i + 1}" for i in range(n)
    ]
    stages = model.eval().forward_stages(torch.randn(1, 3, 32, 32))
    assert [tuple(s.shape[1:]) for s in stages] == [(c, 32 >> i, 32 >> i) for i, c in enumerate(stage_planes)]


@pytest.mark.parametrize(
    "make, option",
    [
        (lambda: ref.ResNet("basic", (1, 1, 1), stage_planes=PLANES, preact=True, se_strategy="pre"), "se_strategy"),
        (
            lambda: ref.ResNet("basic", (1, 1, 1), stage_planes=PLANES, preact=True, relu_before_se=True),
            "relu_before_se",
        ),
        (lambda: ref.ResNet("basic", (1, 1, 1), stage_planes=PLANES, preact=True, aa_layer="avgpool"), "aa_layer"),
        (
            lambda: ref.ResNet("basic", (1, 1, 1), stage_planes=PLANES, preact=True, stem_pool_ceil_mode=True),
            "stem_pool_ceil_mode",
        ),
        (lambda: ref.BasicBlock(16, 16, se=True, se_strategy="post", preact=True), "BasicBlock: .*se_strategy"),
        (lambda: ref.BasicBlock(16, 16, se=True, relu_before_se=True, preact=True), "BasicBlock: .*relu_before_se"),
        (lambda: ref.BasicBlock(16, 32, stride=2, aa_layer="avgpool", preact=True), "BasicBlock: .*aa_layer"),
        (lambda: ref.Bottleneck(64, 16, se=True, se_strategy="identity", preact=True), "Bottleneck: .*se_strategy"),
        (lambda: ref.Bottleneck(64, 16, se=True, relu_before_se=True, preact=True), "Bottleneck: .*relu_before_se"),
        (lambda: ref.Bottleneck(64, 32, stride=2, aa_layer="avgpool", preact=True), "Bottleneck: .*aa_layer"),
        (lambda: ref.ResNet("basic", (1, 1, 1, 1), stage_planes=PLANES), "stage depths in layers"),
        (lambda: ref.ResNet("basic", (1, 1)), "stage depths in layers"),
        (lambda: ref.ResNet("basic", (), stage_planes=()), "1 to 4 stages"),
        (lambda: ref.ResNet("basic", (1,) * 5, stage_planes=(8,) * 5), "1 to 4 stages"),
        (lambda: ref.ResNet("basic", (1, 1, 1), stage_planes=PLANES, stem_type="cifar", aa_layer="avgpool"), "CIFAR"),
        (lambda: ref.ResNet("basic", (1, 1, 1), stage_planes=(16, 0, 64)), "stage_planes"),
        (lambda: ref.ResNet("basic", (1, 1, 1), stage_planes=PLANES, se=[True, False]), "one per stage"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_invalid_combinations_raise_value_errors_that_name_the_option(make, option):
    with pytest.raises(ValueError, match=option):
        make()
