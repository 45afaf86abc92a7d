"""Bad input raises a Python exception naming what was expected and what came; nothing crashes the interpreter."""

from __future__ import annotations

import pytest
import torch

import sepp


@pytest.fixture(scope="module")
def model():
    return sepp.ResNet(block="basic", layers=(1, 1, 1, 1), num_classes=4, se=True).eval()


@pytest.mark.parametrize(
    "shape,got",
    [
        ((3, 32, 32), r"got a 3-D tensor of shape \[3, 32, 32\]"),
        ((1, 3, 2, 32, 32), r"got a 5-D tensor of shape \[1, 3, 2, 32, 32\]"),
    ],
)
def test_wrong_rank(model, shape, got):
    with pytest.raises(ValueError, match=r"expected a 4-D input \[N, C, H, W\], " + got):
        model(torch.randn(shape))


def test_wrong_channel_count(model):
    with pytest.raises(ValueError, match=r"expected 3 input channels, got 4"):
        model(torch.randn(1, 4, 32, 32))


def test_integer_input(model):
    with pytest.raises(TypeError, match=r"expected a floating-point input, got Long"):
        model(torch.ones(1, 3, 32, 32, dtype=torch.long))


def test_dtype_other_than_the_weights(model):
    with pytest.raises(TypeError, match=r"expected a Float input \(the weights' dtype\), got Double"):
        model(torch.randn(1, 3, 32, 32, dtype=torch.float64))


def test_input_on_another_device_than_the_weights(model):
    other = "cuda" if torch.cuda.is_available() else "meta"
    with pytest.raises(ValueError, match=rf"expected the input on cpu \(where the weights are\), got {other}"):
        model(torch.randn(1, 3, 32, 32, device=other))


def test_blocks_and_se_check_their_inputs_too(model):
    with pytest.raises(ValueError, match=r"BasicBlock: expected 64 input channels, got 3"):
        model.layer1[0](torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"SEBlock: expected 64 input channels, got 5"):
        model.layer1[0].se(torch.randn(1, 5, 8, 8))
    with pytest.raises(ValueError, match=r"forward_head: expected features \[N, 512, H, W\], got shape \[1, 3, 2, 2\]"):
        model.forward_head(torch.randn(1, 3, 2, 2))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(reduction=0), r"expected 1 <= reduction <= channels \(64\), got reduction = 0"),
        (dict(reduction=65), r"expected 1 <= reduction <= channels \(64\), got reduction = 65"),
        (dict(squeeze="mean"), r"expected squeeze to be one of 'avg', 'max', 'avgmax', got 'mean'"),
        (dict(gate="relu"), r"expected gate to be one of 'sigmoid', 'hard_sigmoid', 'tanh', got 'relu'"),
        (dict(rd_channels=-2), r"expected rd_channels >= 1 \(or 0 to derive it\), got -2"),
    ],
)
def test_bad_se_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sepp.SEBlock(64, **kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (
            dict(se_strategy="after"),
            r"expected se_strategy to be one of 'standard', 'pre', 'post', 'identity', got 'after'",
        ),
        (dict(block="wide"), r"expected block to be 'basic' or 'bottleneck', got 'wide'"),
        (dict(layers=(1, 1, 1)), r"expected as many stage depths in layers as stage_planes \(4\), got 3"),
        (dict(layers=(1, 0, 1, 1)), r"expected every stage depth >= 1"),
        (dict(se=(True, False)), r"expected a bool or 4 bools"),
        (dict(num_classes=-1), r"expected num_classes >= 0, got -1"),
        (dict(drop_rate=1.5), r"expected 0 <= drop_rate < 1, got 1.5"),
        (dict(reduction=100), r"expected 1 <= reduction <= channels \(64\), got reduction = 100"),
        (dict(groups=0), r"ResNet: expected groups >= 1, got 0"),
        (dict(width_per_group=0), r"ResNet: expected width_per_group >= 1, got 0"),
        (dict(squeeze="a\0b"), r"option 'squeeze' contains a NUL character"),
    ],
)
def test_bad_resnet_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sepp.ResNet(**{"block": "basic", "layers": (1, 1, 1, 1), "se": True, **kwargs})


def test_unknown_model_and_override():
    with pytest.raises(ValueError, match=r"unknown model 'se_resnet51'; expected one of: resnet18, .*se_resnet50"):
        sepp.create_model("se_resnet51")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['depth'\]"):
        sepp.se_resnet50(depth=3)


def test_load_state_dict_with_a_wrong_shape_names_it(model):
    sd = model.state_dict()
    sd["layer2.0.se.fc1.weight"] = torch.zeros(9, 128, 1, 1)
    with pytest.raises(RuntimeError, match=r"size mismatch for layer2.0.se.fc1.weight"):
        model.load_state_dict(sd)


def test_basic_block_refuses_resnext_options():
    with pytest.raises(ValueError, match=r"BasicBlock: expected groups = 1 and base_width = 64"):
        sepp.BasicBlock(64, 64, groups=32)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(layers=[True, 1, 1, 1]), r"expected a sequence of ints for option 'layers', got list \[True, 1, 1, 1\]"),
        (dict(layers="1111"), r"expected a sequence of ints for option 'layers', got str"),
        (dict(squeeze=b"avg"), r"expected a str for option 'squeeze', got bytes b'avg'"),
    ],
)
def test_options_of_a_lookalike_type_are_refused(kwargs, match):
    with pytest.raises(TypeError, match=match):
        sepp.ResNet(**{"block": "basic", "layers": (1, 1, 1, 1), "se": True, **kwargs})


@pytest.mark.parametrize(
    "opts,train,shape,match",
    [
        (dict(), False, (1, 3, 0, 8), r"expected an image of at least 1x1 pixels, got input shape \[1, 3, 0, 8\]"),
        (dict(stem_pool_ceil_mode=True), False, (1, 3, 2, 2), r"needs images of at least 5x5 pixels"),
        (dict(), True, (1, 3, 8, 8), r"batch of 1 at 8x8 leaves layer4 with one"),
    ],
    ids=["no_pixels", "caffe_stem_2px", "train_one_value"],
)
def test_images_too_small_for_the_network_are_value_errors(opts, train, shape, match):
    m = sepp.ResNet(block="basic", layers=(1, 1, 1, 1), **opts).train(train)
    with pytest.raises(ValueError, match=match):
        m(torch.randn(shape))


def test_the_smallest_images_the_network_takes_run():
    m = sepp.ResNet(block="basic", layers=(1, 1, 1, 1), num_classes=3)
    assert m.train()(torch.randn(2, 3, 1, 1)).shape == (2, 3)  # two values per channel everywhere
    assert m.eval()(torch.randn(1, 3, 1, 1)).shape == (1, 3)
    assert sepp.ResNet(block="basic", layers=(1, 1, 1, 1), stem_pool_ceil_mode=True).eval()(
        torch.randn(1, 3, 5, 5)
    ).shape == (1, 1000)
