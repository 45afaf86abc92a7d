"""Property-based tests (hypothesis) of the models: random valid model options, input shapes (an empty batch too),
dtypes, layouts and train/eval modes give the pure-PyTorch reference's outputs, gradients and BN statistics (float64
reference); the optimized model computes what the eager model computes in eval mode.

The SE operators' properties are in test_properties_ops.py, the errors' in test_properties_errors.py; the hypothesis
profiles ("ci", derandomized, the default; "long" through SEPP_HYPOTHESIS_PROFILE) are loaded in conftest.py, and
the strategies the files share are in helpers.py."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import BLOCKS, GATES, SQUEEZES, STRATEGIES, copy_state, examples, random_input, randomize_, rel_err, seeds
from hypothesis import given
from hypothesis import strategies as st

import sepp
import sepp.reference as ref

# ------------------------------------------------------------------------------------------------ valid models


@st.composite
def valid_options(draw) -> dict:
    """Random valid ResNet options, small enough for milliseconds: one block per stage (two in at most one stage),
    ResNeXt widths capped at 32x4d's; SE blocks in every stage or in some, their squeeze, gate and placement always
    drawn. Each other option is either given or left at its default."""
    block = draw(st.sampled_from(BLOCKS))
    layers = [1, 1, 1, 1]
    if draw(st.booleans()):
        layers[draw(st.integers(0, 3))] = 2
    o = dict(block=block, layers=tuple(layers) if draw(st.booleans()) else layers)

    def maybe(name, strategy):
        if draw(st.booleans()):
            o[name] = draw(strategy)

    maybe("num_classes", st.integers(0, 10))
    maybe("in_chans", st.integers(1, 4))
    if block == "bottleneck" and draw(st.booleans()):
        groups = draw(st.sampled_from([1, 2, 4, 32]))
        o["groups"] = groups
        o["width_per_group"] = draw(st.sampled_from([w for w in (1, 3, 4, 16, 64) if groups * w <= 128]))
    maybe("stride_in_1x1", st.booleans())
    o["se"] = draw(st.just(True) | st.tuples(*[st.booleans()] * 4) | st.lists(st.booleans(), min_size=4, max_size=4))
    maybe("reduction", st.integers(1, 64))  # every SE block has >= 64 channels
    maybe("rd_channels", st.none() | st.just(0) | st.integers(1, 16))
    maybe("rd_divisor", st.none() | st.just(0) | st.sampled_from([1, 2, 8, 16]))
    o["squeeze"] = draw(st.sampled_from(SQUEEZES))
    o["gate"] = draw(st.sampled_from(GATES))
    o["se_strategy"] = draw(st.sampled_from(STRATEGIES))
    maybe("se_bias", st.booleans())
    maybe("relu_before_se", st.booleans())
    maybe("zero_init_last", st.booleans())
    maybe("stem_pool_ceil_mode", st.booleans())
    maybe("drop_rate", st.just(0.0) | st.floats(0.0, 0.9))
    return o


def last_stage_side(side: int, ceil_stem: bool) -> int:
    """layer4's output side for an input side: conv1 (7x7, stride 2, padding 3), the stem's 3x3 stride-2 max pool
    (padding 1, or padding 0 in ceil mode) and three stride-2 stages."""
    s = (side + 1) // 2
    s = math.ceil((s - 3) / 2) + 1 if ceil_stem else (s + 1) // 2
    for _ in range(3):
        s = (s + 1) // 2
    return s


def model_and_reference(opts: dict, seed: int):
    """sepp's model with random weights (drawn in float32, 10x faster than in float64) and the float64 reference with
    the same values; the reference is built on the meta device (no initialisation) and gets every weight and buffer
    from sepp's."""
    ours = randomize_(sepp.ResNet(**opts), seed=seed)
    with torch.device("meta"):
        theirs = ref.ResNet(**opts)
    theirs = theirs.to_empty(device="cpu").double()
    copy_state(ours, theirs)
    return ours, theirs


# float64: outputs, every gradient and the BN statistics to 1e-10, the reference's own precision, in training and eval
# mode. float32: eval-mode outputs, held to the float64 reference run on the same (rounded) weights and inputs, so that
# only sepp's rounding counts (~4e-7 seen). Not float32 gradients: a ReLU or a max pool that rounding tips the other
# way moves a gradient by its own size (the reference's float32 gradients are as far from float64 as sepp's), and
# batch statistics over a few values per channel make training-mode float32 gradients off by up to 1e-1.
MODES = [(torch.float64, True), (torch.float64, False), (torch.float32, False)]
TOL64 = 1e-10


@st.composite
def parity_shapes(draw, in_chans: int, train: bool, ceil_stem: bool):
    """[N, C, H, W] of 24 to 64 pixels. In training mode N >= 2 and at least 3 values per channel in layer4's batch
    statistics: BN over 2 values is too ill-conditioned to compare at 1e-10 (the normalized outputs are +-1 whatever
    the input)."""
    n = draw(st.integers(2 if train else 1, 3))
    h = draw(st.integers(24, 64))
    w_min = 24
    if train:
        w_min = min(w for w in range(24, 65) if n * last_stage_side(h, ceil_stem) * last_stage_side(w, ceil_stem) >= 3)
    return n, in_chans, h, draw(st.integers(w_min, 64))


def logit_scale(model, x) -> float:
    """What a logit's rounding error is relative to: the largest |W| |f| + |b| (f: the pooled features), the largest
    feature without a classifier. A logit that cancels to near 0 (one class, one sample: 5e-5 from terms of 3 seen)
    is computed to float32's precision of its terms, not of itself, by the reference as well. Eval mode only."""
    with torch.no_grad():
        terms = model.forward_head(model.forward_features(x), pre_logits=True).double().abs()
        if model.num_classes > 0:
            terms = terms @ model.fc.weight.double().abs().T + model.fc.bias.double().abs()
        return float(terms.max()) if terms.numel() else 0.0


def output_error(got: torch.Tensor, want: torch.Tensor, scale: float) -> float:
    """max |got - want| relative to max |want| or to ``scale``, whichever is larger (0 for empty outputs)."""
    if want.numel() == 0:
        return 0.0
    return float((got.detach().double() - want.detach().double()).abs().max()) / max(
        float(want.detach().abs().max()), scale, 1e-300
    )


def parity_errors(opts: dict, dtype: torch.dtype, train: bool, shape, channels_last: bool, seed: int) -> dict:
    """sepp against the reference on one random input: {what: relative error} for the output and, in float64, the
    input's and every parameter's gradient and every BN buffer; inf for what does not line up (shapes, dtypes,
    names). Plain numbers only, so that a failing example holds on to no model (hypothesis keeps the failures'
    tracebacks while it shrinks)."""
    ours, theirs = model_and_reference(opts, seed)
    ours.to(dtype)
    if channels_last:
        ours.to(memory_format=torch.channels_last)
    ours.train(train)
    theirs.train(train)
    x = random_input(shape, dtype, seed, channels_last)
    xo = x.clone().requires_grad_(dtype == torch.float64)
    xt = x.detach().double().contiguous().requires_grad_(True)
    torch.manual_seed(seed)  # the same dropout mask on both sides
    yo = ours(xo)
    torch.manual_seed(seed)
    yt = theirs(xt)
    want = (shape[0], opts.get("num_classes", 1000) or ours.num_features)
    if yo.shape != want or yt.shape != want or yo.dtype != dtype:
        return {f"output {tuple(yo.shape)} {yo.dtype}, reference {tuple(yt.shape)}, expected {want} {dtype}": math.inf}
    if dtype != torch.float64:  # eval mode (see MODES)
        return {"output": output_error(yo, yt, logit_scale(theirs, xt))}
    errors = {"output": rel_err(yo, yt)}

    gy = torch.randn(yt.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    yo.backward(gy)
    yt.backward(gy)
    errors["input gradient"] = rel_err(xo.grad, xt.grad)
    theirs_params, theirs_buffers = dict(theirs.named_parameters()), dict(theirs.named_buffers())
    if [n for n, _ in ours.named_parameters()] != list(theirs_params):
        errors["parameter names"] = math.inf
    if [n for n, _ in ours.named_buffers()] != list(theirs_buffers):
        errors["buffer names"] = math.inf
    for n, p in ours.named_parameters():
        t = theirs_params.get(n)
        ok = t is not None and p.grad is not None and t.grad is not None
        errors[f"{n}.grad"] = rel_err(p.grad, t.grad) if ok else math.inf
    for n, b in ours.named_buffers():  # BN running statistics (updated in training mode) and batch counts
        t = theirs_buffers.get(n)
        if t is None or not b.is_floating_point():
            errors[n] = 0.0 if t is not None and torch.equal(b, t) else math.inf
        else:
            errors[n] = rel_err(b, t)
    return errors


@pytest.mark.parametrize("dtype,train", MODES, ids=["float64-train", "float64-eval", "float32-eval"])
@examples(0.3)
@given(opts=valid_options(), channels_last=st.booleans(), seed=seeds, data=st.data())
def test_random_valid_options_inputs_and_modes_give_the_references_outputs_gradients_and_statistics(
    dtype, train, opts, channels_last, seed, data
):
    in_chans, ceil_stem = opts.get("in_chans", 3), opts.get("stem_pool_ceil_mode", False)
    shape = data.draw(parity_shapes(in_chans, train, ceil_stem), label="input shape")
    errors = parity_errors(opts, dtype, train, shape, channels_last, seed)
    tol = TOL64 if dtype == torch.float64 else 1e-4
    assert {what: err for what, err in errors.items() if not err < tol} == {}


def optimized_error(opts: dict, shape, dtype: torch.dtype, channels_last: bool, input_size, seed: int) -> float:
    """The optimized model's error against the eager model in eval mode (inf for a wrong shape or dtype)."""
    m = randomize_(sepp.ResNet(**opts), seed=seed).to(dtype).eval()
    o = sepp.optimize_for_inference(m, dtype=dtype, input_size=input_size)
    x = random_input(shape, dtype, seed, channels_last)
    with torch.no_grad():
        want = m(x)
        got = o(x)
    if got.shape != want.shape or got.dtype != dtype:
        return math.inf
    return output_error(got, want, logit_scale(m, x))


@examples(0.6)
@given(
    opts=valid_options(),
    batch=st.integers(1, 3),
    h=st.integers(8, 64),
    w=st.integers(8, 64),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    channels_last=st.booleans(),
    prepared_for_this_shape=st.booleans(),
    seed=seeds,
)
def test_the_optimized_model_computes_what_the_eager_model_computes_in_eval_mode(
    opts, batch, h, w, dtype, channels_last, prepared_for_this_shape, seed
):
    shape = (batch, opts.get("in_chans", 3), h, w)
    input_size = list(shape) if prepared_for_this_shape else None
    err = optimized_error(opts, shape, dtype, channels_last, input_size, seed)
    assert err < (1e-9 if dtype == torch.float64 else 1e-4)


@examples(0.1)
@given(
    opts=valid_options(), dtype=st.sampled_from([torch.float64, torch.float32]), channels_last=st.booleans(), seed=seeds
)
def test_an_empty_batch_gives_an_empty_batch_of_outputs_in_eval_mode(opts, dtype, channels_last, seed):
    shape = (0, opts.get("in_chans", 3), 32, 32)
    errors = parity_errors(opts, dtype, False, shape, channels_last, seed)  # float64: the (zero) gradients too
    assert {what: err for what, err in errors.items() if err != 0} == {}
    assert optimized_error(opts, shape, dtype, channels_last, None, seed) == 0
