"""Property-based tests (hypothesis): random valid model options, input shapes (an empty batch too), dtypes, layouts
and train/eval modes give the pure-PyTorch reference's outputs, gradients and BN statistics; the optimized model
computes what the eager model computes in eval mode; sepp's SE operators match their float64 formulas on random
shapes, dtypes and layouts; random invalid options, inputs and operator arguments raise ValueError or TypeError
naming what is wrong.

Hypothesis draws every value an example uses, torch's random numbers included (through a drawn seed), so an example
is replayed exactly from what hypothesis prints when it fails (the arguments, and a @reproduce_failure line). The
default profile, "ci", runs a bounded number of examples, derandomized: the same examples every run, about 30 s on
two idle cores. The "long" profile runs 10 times as many (about 5 minutes), from a fresh random start each run:

    cd tests && SEPP_HYPOTHESIS_PROFILE=long python -m pytest -q -p no:cacheprovider test_properties.py

(``--hypothesis-seed=N`` replays a long run; ``--hypothesis-show-statistics`` shows the timings)."""

from __future__ import annotations

import functools
import inspect
import math
import os

import pytest
import torch
import torch.nn.functional as F
from helpers import DTYPES, TOL, copy_state, randomize_, rel_err
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sepp
import sepp.reference as ref
from sepp.ops import se_excite, se_scale, se_squeeze

# ------------------------------------------------------------------------------------------------------ profiles

_COMMON = dict(deadline=None, database=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=1000, **_COMMON)
settings.load_profile(os.environ.get("SEPP_HYPOTHESIS_PROFILE", "ci"))


def examples(share: float):
    """This test's example count: ``share`` of the profile's, per parametrized case (an example of a model test takes
    ~300 ms, of an operator or error test ~1 ms)."""
    return settings(max_examples=max(1, round(settings.default.max_examples * share)))


seeds = st.integers(0, 2**32 - 1)

# c10's names of the dtypes, as the error messages spell them.
C10_NAME = {
    torch.float64: "Double",
    torch.float32: "Float",
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.int64: "Long",
    torch.int32: "Int",
    torch.int16: "Short",
    torch.int8: "Char",
    torch.uint8: "Byte",
    torch.bool: "Bool",
}
INT_DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]

# ------------------------------------------------------------------------------------------------ valid models

OPTION_NAMES = list(inspect.signature(sepp.ResNet).parameters)
DEFAULTS = [p.default for p in inspect.signature(sepp.ResNet).parameters.values()]
SQUEEZES = ["avg", "max", "avgmax"]
GATES = ["sigmoid", "hard_sigmoid", "tanh"]
STRATEGIES = ["standard", "pre", "post", "identity"]
BLOCKS = ["basic", "bottleneck"]


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


def random_input(shape, dtype, seed, channels_last=False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


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


# ------------------------------------------------------------------------------------------------- the SE ops

op_shapes = st.tuples(st.integers(1, 4), st.integers(1, 80), st.integers(1, 17), st.integers(1, 17))
op_dtypes = st.sampled_from(DTYPES)
# Backward is checked where a float64 formula pins it down to the dtype's rounding (float16 / bfloat16 gradients
# are covered by the op tests).
GRAD_TOL = {torch.float64: 1e-12, torch.float32: 1e-4}


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(True)


@examples(1.0)
@given(
    shape=op_shapes,
    dtype=op_dtypes,
    channels_last=st.booleans(),
    out_dtype=st.sampled_from([None, torch.float32]),
    offset=st.sampled_from([0.0, 3.0, -50.0]),
    seed=seeds,
)
def test_se_squeeze_is_the_channel_mean(shape, dtype, channels_last, out_dtype, offset, seed):
    x = leaf(random_input(shape, torch.float64, seed, channels_last).add(offset).to(dtype))
    z = se_squeeze(x, out_dtype)
    want_dtype = out_dtype or dtype
    assert z.shape == shape[:2] and z.dtype == want_dtype
    x64 = leaf(x.double())
    expected = x64.mean((2, 3))
    assert rel_err(z, expected) <= TOL[want_dtype]
    if dtype in GRAD_TOL and out_dtype is None:
        g = random_input(shape[:2], dtype, seed + 1)
        (dx,) = torch.autograd.grad(z, x, g)
        (dx64,) = torch.autograd.grad(expected, x64, g.double())
        assert dx.shape == shape and dx.dtype == dtype
        assert rel_err(dx, dx64) <= GRAD_TOL[dtype]


def excite_formula(z, w1, b1, w2, b2, gate):
    s = F.linear(torch.relu(F.linear(z, w1, b1)), w2, b2)
    if gate == "sigmoid":
        return torch.sigmoid(s)
    if gate == "hard_sigmoid":
        return F.relu6(s + 3.0) / 6.0
    return torch.tanh(s)


def excite_grad_bounds(args64, g):
    """What each gradient's error is relative to: the gradients of the perceptron on |z|, |w|, |b| with the ReLU and
    the gate taken as the identity (slope 1, the largest a gate has), upstream |g|. A saturated gate's slope,
    1 - tanh^2 or s (1 - s), comes out of a cancellation, so a gradient through it is only as accurate as this bound,
    not as its own (tiny) size."""
    a = [None if t is None else leaf(t.detach().abs()) for t in args64]
    out = F.linear(F.linear(a[0], a[1], a[2]), a[3], a[4])
    return torch.autograd.grad(out, [t for t in a if t is not None], g.abs())


@examples(1.0)
@given(
    n=st.integers(1, 4),
    c=st.integers(1, 80),
    r=st.integers(1, 16),
    dtype=op_dtypes,
    gate=st.sampled_from(GATES),
    bias=st.booleans(),
    z_transposed=st.booleans(),
    scale=st.sampled_from([0.5, 1.0, 2.0]),
    seed=seeds,
)
def test_se_excite_is_the_gated_two_layer_perceptron(n, c, r, dtype, gate, bias, z_transposed, scale, seed):
    g = torch.Generator().manual_seed(seed)

    def rnd(*s, fan_in=1):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * (scale / fan_in**0.5)).to(dtype)

    z = rnd(c, n).t() if z_transposed else rnd(n, c)  # a transposed z is a valid, non-contiguous input
    args = [z, rnd(r, c, fan_in=c), rnd(r) if bias else None, rnd(c, r, fan_in=r), rnd(c) if bias else None]
    args = [None if a is None else leaf(a) for a in args]
    s = se_excite(*args, gate)
    assert s.shape == (n, c) and s.dtype == dtype
    args64 = [None if a is None else leaf(a.double()) for a in args]
    expected = excite_formula(*args64, gate)
    err = float((s.detach().double() - expected.detach()).abs().max())
    assert err <= TOL[dtype]  # gates lie in [-1, 1]: absolute error
    if dtype in GRAD_TOL:
        gs = random_input((n, c), dtype, seed + 1)
        inputs = [a for a in args if a is not None]
        inputs64 = [a for a in args64 if a is not None]
        grads = torch.autograd.grad(s, inputs, gs)
        grads64 = torch.autograd.grad(expected, inputs64, gs.double())
        bounds = excite_grad_bounds(args64, gs.double())
        names = ["z", "w1", "b1", "w2", "b2"] if bias else ["z", "w1", "w2"]
        for name, a, b, bound in zip(names, grads, grads64, bounds):
            assert a.shape == b.shape and a.dtype == dtype, name
            assert float((a.double() - b).abs().max()) <= GRAD_TOL[dtype] * float(bound.max()), name


@examples(1.0)
@given(
    shape=op_shapes,
    dtype=op_dtypes,
    channels_last=st.booleans(),
    identity=st.sampled_from([None, "same layout", "other layout"]),
    scale_4d=st.booleans(),
    relu=st.booleans(),
    seed=seeds,
)
def test_se_scale_is_the_scaled_sum(shape, dtype, channels_last, identity, scale_4d, relu, seed):
    n, c = shape[:2]
    x = leaf(random_input(shape, dtype, seed, channels_last))
    s = leaf(random_input((n, c, 1, 1) if scale_4d else (n, c), dtype, seed + 1))
    idt = None
    if identity is not None:
        idt = leaf(random_input(shape, dtype, seed + 2, channels_last == (identity == "same layout")))
    out = se_scale(x, s, idt, relu)
    assert out.shape == shape and out.dtype == dtype
    x64, s64 = leaf(x.double()), leaf(s.double())
    idt64 = None if idt is None else leaf(idt.double())
    scaled = x64 * s64.reshape(n, c, 1, 1)
    pre = scaled + (0 if idt is None else idt64)
    expected = torch.relu(pre) if relu else pre
    assert rel_err(out, expected) <= TOL[dtype]
    if channels_last and c > 1 and shape[2] * shape[3] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)
    if dtype in GRAD_TOL:
        g = random_input(shape, dtype, seed + 3)
        if relu:
            # Where rounding could tip the ReLU (the sum within a few ulps of zero), the gradient is the rounding's
            # choice: no upstream gradient there.
            terms = scaled.abs() + (0 if idt is None else idt64.abs())
            g = g.masked_fill((pre.abs() <= 4 * torch.finfo(dtype).eps * terms).detach(), 0)
        inputs = [x, s] + ([] if idt is None else [idt])
        inputs64 = [x64, s64] + ([] if idt is None else [idt64])
        grads = torch.autograd.grad(out, inputs, g)
        grads64 = torch.autograd.grad(expected, inputs64, g.double())
        for name, a, b in zip(["x", "scale", "identity"], grads, grads64):
            assert a.shape == b.shape and a.dtype == dtype, name
            assert rel_err(a, b) <= GRAD_TOL[dtype], name


# --------------------------------------------------------------------------------------------- invalid options

SMALL = dict(block="basic", layers=(1, 1, 1, 1), se=True)  # SE blocks in every stage: their options are all checked
NEG = st.integers(min_value=-(2**63), max_value=-1)  # int64: what an option can hold
text = st.text(max_size=8)
floats = st.floats(allow_nan=True, allow_infinity=True)
# Not an int, a bool, a str, a float, a sequence of ints or of bools. sepp refuses a bool for an int or a float option;
# bytes pass for a str and bools for the ints in a sequence (pybind11's conversions), so neither is drawn.
not_int = (
    st.booleans()
    | text
    | floats
    | st.lists(st.integers(0, 3), max_size=3)
    | st.dictionaries(text, st.integers(), max_size=2)
)
not_bool = st.integers(-(2**70), 2**70) | text | floats | st.lists(st.booleans(), max_size=2) | st.none()
not_str = st.integers() | floats | st.booleans() | st.none() | st.lists(text, max_size=2)
not_float = st.booleans() | text | st.none() | st.lists(floats, max_size=2)
not_ints = (
    text
    | st.integers()
    | floats
    | st.none()
    | st.lists(st.integers(1, 2) | floats | text | st.none(), min_size=1, max_size=5).filter(
        lambda v: not all(isinstance(i, int) for i in v)
    )
)
not_bools = (
    text
    | st.integers()
    | floats
    | st.none()
    | st.lists(st.booleans() | st.integers() | st.none(), min_size=1, max_size=5).filter(
        lambda v: not all(isinstance(i, bool) for i in v)
    )
)
INT_OPTIONS = ["num_classes", "in_chans", "groups", "width_per_group", "reduction", "rd_channels", "rd_divisor"]
NULLABLE = {"rd_channels", "rd_divisor"}  # None means "derive it" / "no rounding"
BOOL_OPTIONS = ["stride_in_1x1", "se_bias", "relu_before_se", "zero_init_last", "stem_pool_ceil_mode"]
STR_OPTIONS = {"block": BLOCKS, "squeeze": SQUEEZES, "gate": GATES, "se_strategy": STRATEGIES}


def quoted(v: str) -> str:
    """How a message quotes the string v (up to a NUL, where the C++ message's C string ends)."""
    return f"'{v}'" if "\0" not in v else "'" + v.split("\0")[0]


def contains(msg: str, needle) -> bool:
    """needle: a string, or a tuple of strings any one of which will do."""
    return any(n in msg for n in ((needle,) if isinstance(needle, str) else needle))


def case(values, exc, needles, base=SMALL, name=None):
    """A strategy of (args, kwargs, exception type, strings its message must contain): the options ``base`` with
    option ``name`` set to each value drawn from ``values``; ``needles(v)`` lists the strings."""
    return values.map(lambda v: ((), {**base, name: v}, exc, needles(v)))


def wrong_type(name, values, what):
    return case(
        values, TypeError, lambda v: [f"expected {what} for option '{name}', got {type(v).__name__}"], name=name
    )


def out_of_range(name, values, base=SMALL):
    return case(values, ValueError, lambda v: [name, str(v)], base=base, name=name)


def bad_string(name, valid):
    return case(
        # A NUL is refused before the choice is checked (tests/test_errors.py covers it).
        st.text(max_size=12).filter(lambda v: v not in valid and "\0" not in v),
        ValueError,
        lambda v: [f"expected {name} to be", quoted(v)],
        name=name,
    )


BOTTLENECK = {**SMALL, "block": "bottleneck"}
WIDTH = ("width_per_group", "base_width")
unknown_name = st.text(min_size=1, max_size=12).filter(lambda s: s not in OPTION_NAMES)
INVALID_OPTIONS = {
    "unknown-name": unknown_name.map(lambda n: ((), {**SMALL, n: 1}, TypeError, ["ResNet: unknown option", quoted(n)])),
    "too-many-positional": st.lists(
        st.integers(0, 1), min_size=len(OPTION_NAMES) + 1, max_size=len(OPTION_NAMES) + 3
    ).map(lambda a: (a, {}, TypeError, [f"expected at most {len(OPTION_NAMES)} positional arguments, got {len(a)}"])),
    "given-twice": st.integers(1, len(OPTION_NAMES)).map(
        lambda k: (DEFAULTS[:k], {OPTION_NAMES[k - 1]: DEFAULTS[k - 1]}, TypeError, [f"'{OPTION_NAMES[k - 1]}' twice"])
    ),
    **{f"{n}-not-int": wrong_type(n, not_int if n in NULLABLE else not_int | st.none(), "an int") for n in INT_OPTIONS},
    **{f"{n}-not-bool": wrong_type(n, not_bool, "a bool") for n in BOOL_OPTIONS},
    **{f"{n}-not-str": wrong_type(n, not_str, "a str") for n in STR_OPTIONS},
    "layers-not-ints": wrong_type("layers", not_ints, "a sequence of ints"),
    "se-not-bools": wrong_type("se", not_bools, "a bool or a sequence of bools"),
    "drop_rate-not-float": wrong_type("drop_rate", not_float, "a float"),
    "num_classes-negative": out_of_range("num_classes", NEG),
    "in_chans-below-1": out_of_range("in_chans", NEG | st.just(0)),
    # no SE block has more than 2048 channels
    "reduction-out-of-range": out_of_range("reduction", NEG | st.just(0) | st.integers(2049, 2**63 - 1)),
    "rd_channels-negative": out_of_range("rd_channels", NEG),
    "rd_divisor-negative": out_of_range("rd_divisor", NEG),
    "groups-below-1": out_of_range("groups", NEG | st.just(0), base=BOTTLENECK),
    # The blocks call width_per_group base_width (torchvision's name), and so do their messages.
    "width_per_group-below-1": case(
        NEG | st.just(0), ValueError, lambda v: [WIDTH, str(v)], base=BOTTLENECK, name="width_per_group"
    ),
    "groups-in-basic-blocks": case(st.integers(2, 64), ValueError, lambda v: ["groups", "bottleneck"], name="groups"),
    "width_per_group-in-basic-blocks": case(
        st.integers(1, 63), ValueError, lambda v: [WIDTH, "bottleneck"], name="width_per_group"
    ),
    "drop_rate-out-of-range": case(
        st.floats(min_value=1.0) | st.floats(max_value=0.0, exclude_max=True).filter(lambda v: v < 0) | floats,
        ValueError,
        lambda v: ["expected 0 <= drop_rate < 1"],
        name="drop_rate",
    ).filter(lambda c: not 0 <= c[1]["drop_rate"] < 1),
    "layers-not-4": case(
        st.lists(st.integers(1, 2), max_size=8).filter(lambda v: len(v) != 4),
        ValueError,
        lambda v: [f"expected 4 stage depths in layers, got {len(v)}"],
        name="layers",
    ),
    "layer-depth-below-1": case(
        st.lists(st.integers(-(2**63), 2), min_size=4, max_size=4).filter(lambda v: min(v) < 1),
        ValueError,
        lambda v: ["expected every stage depth >= 1", "layers"],
        name="layers",
    ),
    "se-not-4": case(
        st.lists(st.booleans(), max_size=8).filter(lambda v: len(v) != 4),
        ValueError,
        lambda v: ["se", f"expected a bool or 4 bools (one per stage), got {len(v)}"],
        name="se",
    ),
    **{f"bad-{n}": bad_string(n, valid) for n, valid in STR_OPTIONS.items()},
}


@pytest.mark.parametrize("kind", list(INVALID_OPTIONS))
@examples(0.1)
@given(data=st.data())
def test_random_invalid_options_raise_a_value_or_type_error_that_names_the_problem(kind, data):
    args, kwargs, exc, needles = data.draw(INVALID_OPTIONS[kind], label="args, kwargs, exception, message parts")
    with pytest.raises((ValueError, TypeError)) as e:
        sepp.ResNet(*args, **kwargs)
    msg = str(e.value)
    assert isinstance(e.value, exc), msg
    for s in needles:
        assert contains(msg, s), s


# ---------------------------------------------------------------------------------------------- invalid inputs


@functools.lru_cache(maxsize=None)
def small_model(in_chans: int, dtype: torch.dtype, optimized: bool):
    m = randomize_(sepp.ResNet(block="basic", layers=(1, 1, 1, 1), num_classes=3, in_chans=in_chans, se=True))
    m = m.to(dtype).eval()
    return sepp.optimize_for_inference(m) if optimized else m


@st.composite
def invalid_inputs(draw, kind: str, in_chans: int, dtype: torch.dtype):
    """(input, exception type, strings its message must contain): a valid input with one thing of ``kind`` wrong."""
    side = st.integers(1, 40)
    if kind == "rank":
        shape = draw(st.lists(st.integers(1, 5), max_size=6).filter(lambda s: len(s) != 4))
        needles = [f"expected a 4-D input [N, C, H, W], got a {len(shape)}-D tensor"]
        return torch.randn(shape, dtype=dtype), ValueError, needles
    n, h, w = draw(st.integers(1, 3)), draw(side), draw(side)
    if kind == "channels":
        c = draw(st.integers(0, 8).filter(lambda c: c != in_chans))
        needles = [f"expected {in_chans} input channels, got {c}"]
        return torch.randn(n, c, h, w, dtype=dtype), ValueError, needles
    if kind == "integer-dtype":
        bad = draw(st.sampled_from(INT_DTYPES))
        needles = [f"expected a floating-point input, got {C10_NAME[bad]}"]
        return torch.ones(n, in_chans, h, w, dtype=bad), TypeError, needles
    bad = draw(st.sampled_from([d for d in DTYPES if d != dtype]))
    needles = [f"expected a {C10_NAME[dtype]} input (the weights' dtype), got {C10_NAME[bad]}"]
    return torch.randn(n, in_chans, h, w, dtype=bad), TypeError, needles


@pytest.mark.parametrize("kind", ["rank", "channels", "integer-dtype", "float-dtype"])
@examples(0.25)
@given(
    in_chans=st.sampled_from([1, 3]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    optimized=st.booleans(),
    train=st.booleans(),
    data=st.data(),
)
def test_random_invalid_inputs_raise_a_value_or_type_error_that_names_the_problem(
    kind, in_chans, dtype, optimized, train, data
):
    m = small_model(in_chans, dtype, optimized)
    if not optimized:
        m.train(train)
    x, exc, needles = data.draw(invalid_inputs(kind, in_chans, dtype), label="input, exception, message parts")
    with pytest.raises((ValueError, TypeError)) as e:
        m(x)
    msg = str(e.value)
    assert isinstance(e.value, exc), msg
    for s in needles:
        assert s in msg, s


@st.composite
def invalid_op_calls(draw, kind: str):
    """(a call of one of the SE operators, exception type, strings its message must contain): valid arguments of a
    random shape with one thing of ``kind`` wrong."""
    n, c, h, w = draw(op_shapes)
    r = draw(st.integers(1, 16))
    x, s = torch.randn(n, c, h, w), torch.rand(n, c)
    z, w1, b1, w2, b2 = torch.randn(n, c), torch.randn(r, c), torch.randn(r), torch.randn(c, r), torch.randn(c)
    if kind in ("squeeze-rank", "scale-rank"):
        shape = draw(st.lists(st.integers(1, 4), max_size=6).filter(lambda v: len(v) != 4))
        op = "se_squeeze" if kind == "squeeze-rank" else "se_scale"
        call = (
            (lambda: se_squeeze(torch.randn(shape))) if op == "se_squeeze" else lambda: se_scale(torch.randn(shape), s)
        )
        return call, ValueError, [f"{op}: expected x of shape [N, C, H, W], got {len(shape)}-D"]
    if kind in ("squeeze-integer", "scale-integer"):
        bad = draw(st.sampled_from(INT_DTYPES))
        xi = torch.ones(n, c, h, w, dtype=bad)
        call = (lambda: se_squeeze(xi)) if kind == "squeeze-integer" else lambda: se_scale(xi, s.to(bad))
        return call, TypeError, [f"expected a floating-point x, got {C10_NAME[bad]}"]
    if kind == "scale-shape":
        shape = draw(st.lists(st.integers(1, 81), min_size=2, max_size=2).filter(lambda v: v != [n, c]))
        return lambda: se_scale(x, torch.rand(shape)), ValueError, [f"expected scale of shape [{n}, {c}] or"]
    if kind == "scale-dtype":
        bad = draw(st.sampled_from([torch.float64, torch.float16, torch.bfloat16]))
        return lambda: se_scale(x, s.to(bad)), TypeError, [f"expected scale of dtype Float (x's), got {C10_NAME[bad]}"]
    if kind == "identity-shape":
        shape = draw(st.tuples(*[st.integers(1, 17)] * 4).filter(lambda v: v != (n, c, h, w)))
        return lambda: se_scale(x, s, torch.randn(shape)), ValueError, ["expected identity of shape"]
    if kind == "excite-w1-shape":
        c1 = draw(st.integers(1, 81).filter(lambda v: v != c))
        bad_w1 = torch.randn(r, c1)
        needles = [f"expected w1 of shape [R, {c}] (C from z), got [{r}, {c1}]"]
        return lambda: se_excite(z, bad_w1, b1, w2, b2), ValueError, needles
    gate = draw(st.text(max_size=12).filter(lambda g: g not in GATES))
    needles = ["expected gate 'sigmoid', 'hard_sigmoid' or 'tanh', got", quoted(gate)]
    return lambda: se_excite(z, w1, b1, w2, b2, gate), ValueError, needles


OP_ERRORS = ["squeeze-rank", "scale-rank", "squeeze-integer", "scale-integer", "scale-shape", "scale-dtype"]
OP_ERRORS += ["identity-shape", "excite-w1-shape", "excite-gate"]


@pytest.mark.parametrize("kind", OP_ERRORS)
@examples(0.25)
@given(data=st.data())
def test_random_invalid_operator_arguments_raise_a_value_or_type_error_that_names_the_problem(kind, data):
    call, exc, needles = data.draw(invalid_op_calls(kind), label="call, exception, message parts")
    with pytest.raises((ValueError, TypeError)) as e:
        call()
    msg = str(e.value)
    assert isinstance(e.value, exc), msg
    for s in needles:
        assert contains(msg, s), s
