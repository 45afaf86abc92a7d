"""sepp models behave like any torch.nn.Module: chaining, dtype/device/memory-format moves, state_dict, optimizers,
deepcopy, pickling, repr, options as attributes; and they load timm / torchvision weights as they are."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from helpers import copy_state, cuda_only, randomize_, rel_err
from torch import nn

import sepp
import sepp.reference as ref


@pytest.fixture(scope="module")
def small():
    return dict(block="basic", layers=(1, 1, 1, 1), num_classes=10, se=True)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_are_timms_and_torchvisions():
    assert n_params(sepp.se_resnet50()) == 28_088_024
    assert n_params(sepp.resnet50()) == 25_557_032


def test_is_a_module_and_every_move_returns_the_module(small):
    m = sepp.ResNet(**small)
    assert isinstance(m, nn.Module)
    for call in (
        lambda m: m.cpu(),
        lambda m: m.double(),
        lambda m: m.float(),
        lambda m: m.half(),
        lambda m: m.to(torch.float64),
        lambda m: m.to("cpu"),
        lambda m: m.to(memory_format=torch.channels_last),
        lambda m: m.train(),
        lambda m: m.eval(),
        lambda m: m.requires_grad_(True),
        lambda m: m.float(),
    ):
        assert call(m) is m


def test_dtype_and_memory_format_moves_reach_cpp(small):
    m = randomize_(sepp.ResNet(**small)).eval()  # random weights: no zero-initialised branch hides a difference
    weight = m.conv1.weight
    m.double()
    assert m.conv1.weight is weight and weight.dtype == torch.float64  # same tensor object, new data
    assert all(t.dtype == torch.float64 for t in m.state_dict().values() if t.is_floating_point())
    r = ref.ResNet(**small).double().eval()
    copy_state(m, r)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)  # C++ computes with the moved weights
        expected = r(x)
    assert y.dtype == torch.float64
    assert rel_err(y, expected) < 1e-10
    m.to(memory_format=torch.channels_last)
    assert m.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y2 = m(x)
        y3 = m(x.contiguous(memory_format=torch.channels_last))
    assert y2.shape == (2, 10)
    # The channels_last weights give the contiguous forward's values and the float64 reference's, for either input.
    for out in (y2, y3):
        assert out.dtype == torch.float64
        assert rel_err(out, y) < 1e-12 and rel_err(out, expected) < 1e-10


def test_train_eval_flags_live_in_cpp(small):
    m = sepp.ResNet(**small)
    assert m.training and all(c.training for c in m.modules())
    m.eval()
    assert not m.training and not any(c.training for c in m.modules())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        a = m(x)
        b = m(x[:1])
    torch.testing.assert_close(a[:1], b)  # eval BN uses running stats: a sample's output does not depend on its batch
    m.layer1.train()
    assert m.layer1[0].bn1.training and not m.bn1.training
    m.training = True
    assert m.training


def test_state_dict_keys_shapes_and_round_trip(small):
    m = sepp.ResNet(**small)
    r = ref.ResNet(**small)
    sd = m.state_dict()
    assert list(sd) == list(r.state_dict())
    assert {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in r.state_dict().items()}
    assert sd["layer1.0.se.fc1.weight"].shape == (4, 64, 1, 1)
    m2 = sepp.ResNet(**small)
    m2.load_state_dict(randomize_(m).state_dict())
    m.eval()
    m2.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m2(x), rtol=0, atol=0)


def test_load_state_dict_reports_mismatches_by_name(small):
    m = sepp.ResNet(**small)
    sd = m.state_dict()
    sd["fc.weight"] = torch.zeros(3, 512)
    with pytest.raises(
        RuntimeError,
        match=r"(?s)size mismatch for fc.weight.*torch.Size\(\[3, 512\]\).*"
        r"torch.Size\(\[10, 512\]\)",
    ):
        m.load_state_dict(sd)
    sd = m.state_dict()
    del sd["layer1.0.se.fc2.bias"]
    sd["extra"] = torch.zeros(1)
    with pytest.raises(
        RuntimeError, match=r'(?s)Missing key\(s\).*"layer1.0.se.fc2.bias".*Unexpected key\(s\).*"extra"'
    ):
        m.load_state_dict(sd)


def test_optimizer_step_trains_the_cpp_model(small):
    m = sepp.ResNet(**small, zero_init_last=False)  # with the last BN at zero, the SE's input and gradient are 0
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    x, target = torch.randn(4, 3, 32, 32), torch.tensor([1, 2, 3, 4])
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(x), target)
        loss.backward()
        assert all(p.grad is not None for p in m.parameters())
        assert float(m.layer4[0].se.fc1.weight.grad.abs().sum()) > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_deepcopy_is_independent_and_equal(small):
    m = randomize_(sepp.ResNet(**small)).eval()
    c = copy.deepcopy(m)
    assert type(c) is sepp.ResNet and not c.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(c(x), m(x), rtol=0, atol=0)
        c.fc.bias.add_(1.0)
        assert not torch.equal(c(x), m(x))
    assert c.conv1.weight.data_ptr() != m.conv1.weight.data_ptr()
    block = copy.deepcopy(m.layer2[0])
    assert isinstance(block, sepp.BasicBlock)


def test_pickling_and_torch_save_of_the_whole_model(small):
    m = randomize_(sepp.ResNet(**small)).double().eval()
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    m2 = torch.load(buf, weights_only=False)  # our own file: a whole-model pickle
    m3 = pickle.loads(pickle.dumps(m))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        for other in (m2, m3):
            assert type(other) is sepp.ResNet and not other.training
            torch.testing.assert_close(other(x), m(x), rtol=0, atol=0)
    with pytest.raises(TypeError, match="cannot be pickled on its own"):
        pickle.dumps(m.layer1)


def test_repr_shows_the_structure_and_options_are_attributes(small):
    m = sepp.se_resnet50()
    text = repr(m)
    for part in (
        "ResNet(",
        "(layer1): Sequential(",
        "Bottleneck(",
        "(se): SEBlock(",
        "channels=256, rd_channels=16",
        "(downsample): Sequential(",
        "(fc): Linear(",
    ):
        assert part in text
    assert m.num_classes == 1000 and m.layers == (3, 4, 6, 3) and m.block == "bottleneck"
    assert m.se == (True, True, True, True) and m.reduction == 16 and m.squeeze == "avg"
    se = m.layer1[0].se
    assert isinstance(se, sepp.SEBlock) and se.channels == 256 and callable(se.excitation)  # method, not option
    # ... and the method computes the excitation: the pure-Python reference's, in float64, with the same weights.
    randomize_(se.double())
    r = ref.SEBlock(256).double()
    r.load_state_dict(se.state_dict())
    x = torch.randn(2, 256, 5, 7, dtype=torch.float64)
    with torch.no_grad():
        gate, expected = se.excitation(x), r.excitation(x)
    assert gate.shape == (2, 256, 1, 1) == expected.shape and gate.dtype == torch.float64
    assert rel_err(gate, expected) < 1e-10
    assert m.layer1[0].planes == 64 and len(m.layer3) == 6
    with pytest.raises(AttributeError):
        m.no_such_option


def test_forward_features_head_and_stages(small):
    m = randomize_(sepp.se_resnet50()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = m.forward_features(x)
        assert f.shape == (2, 2048, 2, 2) and m.num_features == 2048
        torch.testing.assert_close(m.forward_head(f), m(x))
        assert m.forward_head(f, pre_logits=True).shape == (2, 2048)
        stages = m.forward_stages(x)
    assert [s.shape[1] for s in stages] == [256, 512, 1024, 2048] == list(m.stage_channels)
    assert [s.shape[-1] for s in stages] == [16, 8, 4, 2]
    torch.testing.assert_close(stages[-1], f)


def test_reset_classifier_replaces_fc_on_the_same_device_and_dtype(small):
    m = sepp.ResNet(**small).double()
    m.reset_classifier(3)
    assert m.num_classes == 3 and m.fc.weight.shape == (3, 512) and m.fc.weight.dtype == torch.float64
    assert "fc.weight" in dict(m.named_parameters())
    assert m(torch.randn(2, 3, 32, 32, dtype=torch.float64)).shape == (2, 3)
    m.reset_classifier(0)
    assert "fc.weight" not in m.state_dict()
    assert m(torch.randn(2, 3, 32, 32, dtype=torch.float64)).shape == (2, 512)


def test_python_side_structure_changes_are_refused(small):
    m = sepp.ResNet(**small)
    with pytest.raises(TypeError, match="C\\+\\+ modules"):
        m.fc = nn.Linear(512, 2)
    # conv1 is a genuine nn.Conv2d, which takes the new parameter; the next forward refuses to ignore it.
    m.conv1.weight = nn.Parameter(torch.zeros(64, 3, 7, 7))
    with pytest.raises(TypeError, match="conv1.weight was replaced from Python"):
        m(torch.randn(1, 3, 32, 32))
    m.note = "plain attributes are fine"
    assert m.note == "plain attributes are fine"


def test_submodules_are_callable(small):
    m = randomize_(sepp.ResNet(**small)).eval()
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        out = m.layer1(x)
        torch.testing.assert_close(out, m.layer1[0](x))
        assert m.layer1[0].conv1(x).shape == (2, 64, 8, 8)


# ---------------------------------------------------------------------------- timm / torchvision checkpoints
# Each test that needs timm or torchvision imports it itself: without them only those tests skip.


@pytest.mark.parametrize(
    "ours,theirs,kwargs",
    [
        ("se_resnet50", "seresnet50", {}),
        ("se_resnext50_32x4d", "seresnext50_32x4d", {}),
        ("se_resnet18", "seresnet18", {"rd_divisor": 8}),
        ("resnet50", "resnet50", {}),
    ],
)
def test_loads_timm_state_dicts_strictly_and_matches_outputs(ours, theirs, kwargs):
    timm = pytest.importorskip("timm")
    t = randomize_(timm.create_model(theirs, pretrained=False)).double().eval()
    m = sepp.create_model(ours, **kwargs).double().eval()
    assert n_params(m) == n_params(t)
    m.load_state_dict(t.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(m(x), t(x)) < 1e-10


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_loads_torchvision_state_dicts_strictly_and_matches_outputs(name):
    torchvision = pytest.importorskip("torchvision")
    t = randomize_(getattr(torchvision.models, name)(weights=None)).double().eval()
    m = sepp.create_model(name).double().eval()
    m.load_state_dict(t.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(m(x), t(x)) < 1e-10


@cuda_only
@pytest.mark.parametrize(
    "dtype,tol", [(torch.float32, 1e-4), (torch.float16, 2e-2), (torch.bfloat16, 5e-2)], ids=["f32", "f16", "bf16"]
)
def test_cuda_moves_and_forward_match_cpu(dtype, tol):
    m = randomize_(sepp.se_resnet50()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = m(x)
        assert m.cuda() is m and m.conv1.weight.is_cuda
        assert m.to(dtype) is m
        for channels_last in (False, True):
            xc = x.cuda().to(dtype)
            if channels_last:
                m.to(memory_format=torch.channels_last)
                xc = xc.contiguous(memory_format=torch.channels_last)
            y = m(xc)
            assert y.is_cuda and y.dtype == dtype
            assert rel_err(y.float().cpu(), expected) < tol
    assert m.cpu().float() is m and not m.conv1.weight.is_cuda
