"""Property-based tests (hypothesis) of sepp's SE operators: se_squeeze, se_excite and se_scale match their float64
formulas, forward and backward, on random shapes, dtypes and layouts.

The models' properties are in test_properties_models.py, the errors' in test_properties_errors.py; the hypothesis
profiles are loaded in conftest.py, and the strategies the files share are in helpers.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from helpers import DTYPES, GATES, TOL, examples, op_shapes, random_input, rel_err, seeds
from hypothesis import given
from hypothesis import strategies as st

from sepp.ops import se_excite, se_scale, se_squeeze

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
