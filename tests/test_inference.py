"""sepp.optimize_for_inference: the same function as the eager model in eval mode, for every factory, option, dtype,
batch and image size; the same errors on bad input; inference-only behaviour. CUDA: test_inference_cuda.py."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from helpers import INFERENCE_OPTIONS, copy_state, randomize_, rel_err, run_in_threads

import sepp
import sepp.reference as reference


def _pair(name: str, **kw):
    m = randomize_(sepp.create_model(name, **kw)).eval()
    return m


@pytest.mark.parametrize("name", sepp.model_names())
def test_every_factory_float32_matches_eager(name):
    m = _pair(name)
    o = sepp.optimize_for_inference(m)
    assert o.backend == ("onednn" if torch.backends.mkldnn.is_available() else "aten")
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        want = m(x)
        got = o(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert rel_err(got, want) < 1e-4


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("name", ["se_resnet18", "se_resnet50", "se_resnext50_32x4d", "resnet34"])
def test_float64_matches_the_reference_exactly(name, batch):
    """float64 runs the 'aten' path: BN folding and the fused tail checked against the pure-Python reference (at
    batch 1 the bottleneck SE takes its squeeze before conv3 and scales conv3's weights; at batch 2 the early stages
    take it before conv3 and the late ones, whose conv3 weights outweigh h, after)."""
    m = _pair(name).double()
    ref = reference.create_model(name).double().eval()
    copy_state(m, ref)
    o = sepp.optimize_for_inference(m)
    assert o.backend == "aten" and o.dtype == torch.float64
    x = torch.randn(batch, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(o(x), ref(x)) < 1e-10


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
@pytest.mark.parametrize("kw", INFERENCE_OPTIONS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_options_match_the_reference_and_eager(block, kw):
    kw = {"se": True, **kw}
    layers = (1, 2, 1, 1)
    m = randomize_(sepp.ResNet(block=block, layers=layers, **kw)).eval()
    x = torch.randn(2, kw.get("in_chans", 3), 67, 45)
    # float64 against the reference: the algebra of each option
    m64 = copy.deepcopy(m).double()
    ref = reference.ResNet(block=block, layers=layers, **kw).double().eval()
    copy_state(m64, ref)
    with torch.no_grad():
        assert rel_err(sepp.optimize_for_inference(m64)(x.double()), ref(x.double())) < 1e-10
        # float32 (oneDNN) against eager
        assert rel_err(sepp.optimize_for_inference(m)(x), m(x)) < 1e-4


@pytest.mark.parametrize("batch, h, w", [(1, 32, 32), (3, 33, 47), (1, 224, 224), (5, 64, 96)])
def test_batch_and_image_sizes_other_than_the_prepared_one(batch, h, w):
    m = _pair("se_resnet50")
    o = sepp.optimize_for_inference(m, input_size=[2, 3, 128, 128])
    x = torch.randn(batch, 3, h, w)
    with torch.inference_mode():
        assert rel_err(o(x), m(x)) < 1e-4
        # channels_last input, and a non-contiguous one
        assert rel_err(o(x.contiguous(memory_format=torch.channels_last)), m(x)) < 1e-4
        xt = torch.randn(batch, 3, w, h).transpose(2, 3)
        assert rel_err(o(xt), m(xt.contiguous())) < 1e-4


@pytest.mark.parametrize("batch", [1, 32, 33])
@pytest.mark.parametrize("num_classes", [1000, 7, 0])
def test_the_classifier_matches_eager_on_both_sides_of_the_batch_where_it_stops_using_dot_products(batch, num_classes):
    """Up to 32 float32 images the classifier (and the squeeze through conv3) runs as sepp's dot products, beyond
    that through at::linear."""
    m = _pair("se_resnet50", num_classes=num_classes)
    o = sepp.optimize_for_inference(m)
    x = torch.randn(batch, 3, 32, 32)
    with torch.inference_mode():
        got, want = o(x), m(x)
    assert got.shape == want.shape == (batch, num_classes or 2048)
    assert rel_err(got, want) < 1e-4


@pytest.mark.parametrize("name", ["se_resnet18", "se_resnet50", "se_resnext50_32x4d"])
def test_bfloat16_within_2e_2_of_float32(name):
    m = _pair(name)
    o = sepp.optimize_for_inference(m, dtype=torch.bfloat16)
    assert o.dtype == torch.bfloat16
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        got = o(x.bfloat16())
        want = m(x)
    assert got.dtype == torch.bfloat16
    assert rel_err(got, want) < 2e-2


@pytest.mark.parametrize("batch", [1, 4, 33])
@pytest.mark.parametrize(
    "se", [{}, {"squeeze": "avgmax", "gate": "hard_sigmoid", "se_bias": False}, {"squeeze": "max", "gate": "tanh"}]
)
def test_bfloat16_se_weights_give_the_float32_model_within_2e_2_on_both_sides_of_32_images(batch, se):
    """A bfloat16 model on the CPU keeps its SE weights, and conv3's for the squeeze taken before it, in bfloat16:
    sepp's dot products widen them as they read them up to 32 images, ATen's products get them widened beyond. At 64
    x 64, batch 1 scales layer1's conv3 by s, batch 4 squeezes before conv3 and batch 33 takes neither path."""
    m = randomize_(sepp.ResNet(block="bottleneck", layers=(1, 1, 1, 1), se=True, **se)).eval()
    o = sepp.optimize_for_inference(m, dtype=torch.bfloat16)
    x = torch.randn(batch, 3, 64, 64)
    with torch.inference_mode():
        got = o(x.bfloat16())
        want = m(x)
    assert got.dtype == torch.bfloat16
    assert rel_err(got, want) < 2e-2


def test_weights_are_a_copy_taken_at_optimization():
    m = _pair("se_resnet18")
    o = sepp.optimize_for_inference(m)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        before = o(x)
        with torch.no_grad():
            m.layer2[0].conv1.weight.mul_(3.0)
            m.layer1[0].se.fc2.bias.add_(1.0)
        assert torch.equal(o(x), before)
        assert rel_err(sepp.optimize_for_inference(m)(x), m(x)) < 1e-4


# ----------------------------------------------------------------------------------------------------- bad input


def _message(fn, exc, match):
    """The type and first line of the error fn raises, which must be exc with a message matching match."""
    with pytest.raises(exc, match=match) as e:
        fn()
    return type(e.value), str(e.value).split("\n")[0]


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (
            lambda: torch.randn(1, 4, 64, 64),
            ValueError,  # channel count
            r"^ResNet: expected 3 input channels, got 4 \(input shape \[1, 4, 64, 64\]\)",
        ),
        (
            lambda: torch.randn(3, 64, 64),
            ValueError,  # rank
            r"^ResNet: expected a 4-D input \[N, C, H, W\], got a 3-D tensor of shape \[3, 64, 64\]",
        ),
        (
            lambda: torch.randn(1, 3, 64, 64, dtype=torch.float64),
            TypeError,  # dtype
            r"^ResNet: expected a Float input \(the weights' dtype\), got Double",
        ),
        (
            lambda: torch.randint(0, 255, (1, 3, 64, 64)),
            TypeError,  # integers
            r"^ResNet: expected a floating-point input, got Long",
        ),
        (
            lambda: torch.randn(1, 3, 64, 64, device="meta"),
            ValueError,  # device
            r"^ResNet: expected the input on cpu \(where the weights are\), got meta",
        ),
    ],
    ids=["channels", "rank", "dtype", "integer", "device"],
)
def test_bad_input_gives_the_same_error_as_eager(make, exc, match):
    m = _pair("se_resnet18")
    o = sepp.optimize_for_inference(m)
    x = make()
    kind, msg = _message(lambda: m(x), exc, match)
    assert kind in (ValueError, TypeError)
    assert _message(lambda: o(x), exc, match) == (kind, msg)


def test_bfloat16_model_wants_bfloat16_input_like_eager():
    m = _pair("se_resnet18")
    o = sepp.optimize_for_inference(m, dtype=torch.bfloat16)
    x = torch.randn(1, 3, 64, 64)
    match = r"^ResNet: expected a BFloat16 input \(the weights' dtype\), got Float"
    assert _message(lambda: o(x), TypeError, match) == _message(
        lambda: copy.deepcopy(m).bfloat16()(x), TypeError, match
    )


def test_bad_arguments():
    m = _pair("se_resnet18")
    with pytest.raises(TypeError, match="expected a sepp.ResNet"):
        sepp.optimize_for_inference(reference.se_resnet18())
    with pytest.raises(TypeError, match="expected dtype torch.float32, torch.bfloat16, torch.float16 or torch.float64"):
        sepp.optimize_for_inference(m, dtype=torch.int8)
    if not torch.cuda.is_available():
        with pytest.raises(TypeError, match="expected float32, bfloat16 or float64 on the CPU, got Half"):
            sepp.optimize_for_inference(m, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"expected input_size \[N, 3, H, W\] with N, H, W >= 1, got \[1, 3, 224\]"):
        sepp.optimize_for_inference(m, input_size=[1, 3, 224])
    with pytest.raises(ValueError, match=r"got \[1, 4, 224, 224\]"):
        sepp.optimize_for_inference(m, input_size=[1, 4, 224, 224])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_the_cpu_stem_pool_is_sepp_s_channels_last_kernel_and_matches_eager(dtype, ceil_mode):
    """ATen's CPU max pool also computes the argmax indices; the optimized model pools with its own kernel (named in
    torch.profiler's table), edge windows clipped as in torch (odd sizes, ceil_mode)."""
    m = randomize_(sepp.ResNet(block="basic", layers=(1, 1, 1, 1), stem_pool_ceil_mode=ceil_mode, se=True)).eval()
    o = sepp.optimize_for_inference(m, dtype=dtype)
    x = torch.randn(2, 3, 61, 38)
    with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p:
        got = o(x.to(dtype))
    names = {e.key for e in p.key_averages()}
    assert "sepp::max_pool2d" in names and "aten::max_pool2d_with_indices" not in names
    with torch.no_grad():
        want = m(x) if dtype == torch.float32 else m.to(dtype)(x.to(dtype)).float()
    assert rel_err(got.float(), want) < (1e-4 if dtype == torch.float32 else 2e-2)


def test_inference_only_behaviour():
    m = _pair("se_resnet18")
    o = sepp.optimize_for_inference(m)
    assert list(o.parameters()) == [] and o.state_dict() == {}
    assert not o.training and o.eval() is o
    assert o.num_classes == 1000 and o.num_features == 512 and o.options["block"] == "basic"
    assert "backend=" in repr(o)
    with pytest.raises(RuntimeError, match="inference-only"):
        o.train()
    with pytest.raises(TypeError, match="cannot be moved or cast"):
        o.double()
    with pytest.raises(TypeError, match="cannot be moved or cast"):
        o.to("cpu")
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(o)
    x = torch.randn(1, 3, 64, 64)
    y = o(x)
    assert not y.requires_grad
    assert torch.equal(copy.deepcopy(o)(x), y)
    # the eager model is untouched and still trains
    m.train()
    m(torch.randn(2, 3, 64, 64)).sum().backward()
    assert m.conv1.weight.grad is not None


def test_forward_from_several_threads():
    m = _pair("se_resnet18")
    o = sepp.optimize_for_inference(m)
    xs = [torch.randn(2, 3, 64, 64) for _ in range(4)]
    want = [o(x) for x in xs]
    got = [None] * 4

    def work(i):
        for _ in range(3):
            got[i] = o(xs[i])

    run_in_threads(work, 4)
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def _rss_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_no_heap_growth_over_1000_calls():
    m = _pair("se_resnet18")
    o = sepp.optimize_for_inference(m, input_size=[1, 3, 64, 64])
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        for _ in range(100):
            o(x)
        before = _rss_kib()
        for _ in range(1000):
            o(x)
        after = _rss_kib()
    assert after - before < 4096, f"RSS grew by {after - before} KiB over 1000 calls"
