"""The SE excitation operator sepp::se_excite (and sepp::se_excite_backward): registration (opcheck), gradients
(gradcheck), numerics against the float64 formula in every dtype and odd sizes, CUDA against CPU, outputs written in
full (uninitialized memory poisoned with NaN), and clear errors; and the SE block built from sepp's three operators.
CUDA tests skip where no GPU is."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import DEVICES, DTYPES, TOL, cuda_only, dtype_id, poisoned_memory, rel_err
from torch.library import opcheck

import sepp
from sepp.ops import se_excite, se_squeeze

GATES = {"sigmoid": torch.sigmoid, "hard_sigmoid": lambda a: F.relu6(a + 3.0) / 6.0, "tanh": torch.tanh}


def excite_inputs(n, c, r, device, dtype, bias=True, grad=False):
    g = torch.Generator().manual_seed(n * 1000 + c + r)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64) / max(1, s[-1]) ** 0.5 * 2  # noqa: E731
    t = [mk(n, c) * (c**0.5), mk(r, c), mk(r) if bias else None, mk(c, r), mk(c) if bias else None]
    out = [None if a is None else a.to(device=device, dtype=dtype) for a in t]
    if grad:
        for a in out:
            if a is not None:
                a.requires_grad_(True)
    return out


def excite_formula(z, w1, b1, w2, b2, gate):
    d = lambda t: None if t is None else t.double()  # noqa: E731
    return GATES[gate](F.linear(torch.relu(F.linear(d(z), d(w1), d(b1))), d(w2), d(b2)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_excite_opcheck(device, gate, bias):
    z, w1, b1, w2, b2 = excite_inputs(3, 32, 4, device, torch.float32, bias=bias, grad=True)
    opcheck(torch.ops.sepp.se_excite.default, (z, w1, b1, w2, b2, gate))
    s = se_excite(z, w1, b1, w2, b2, gate).detach()
    opcheck(
        torch.ops.sepp.se_excite_backward.default,
        (
            torch.randn_like(s),
            z.detach(),
            w1.detach(),
            b1 if b1 is None else b1.detach(),
            w2.detach(),
            b2 if b2 is None else b2.detach(),
            s,
            gate,
        ),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("n", [1, 5])
def test_excite_gradcheck(device, gate, bias, n):
    z, w1, b1, w2, b2 = excite_inputs(n, 24, 3, device, torch.float64, bias=bias, grad=True)
    if bias:
        assert torch.autograd.gradcheck(lambda *a: se_excite(*a, gate), (z, w1, b1, w2, b2))
    else:
        assert torch.autograd.gradcheck(lambda a, b, c: se_excite(a, b, None, c, None, gate), (z, w1, w2))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize(
    "n,c,r", [(1, 1, 1), (3, 16, 1), (1, 2048, 128), (3, 256, 16), (9, 1000, 62), (5, 64, 33)], ids=lambda v: str(v)
)
def test_excite_matches_formula(device, dtype, gate, n, c, r):
    args = excite_inputs(n, c, r, device, dtype)
    with poisoned_memory():
        s = se_excite(*args, gate)
    assert s.shape == (n, c) and s.dtype == dtype and s.device.type == device
    expected = excite_formula(*args, gate)
    tol = TOL[dtype] if dtype != torch.float32 else 1e-5
    assert float((s.double() - expected).abs().max()) <= tol  # gates lie in [-1, 1]: absolute error


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("n", [1, 3])
def test_excite_keeps_nan_in_the_hidden_layer_like_relu(device, dtype, gate, n):
    """relu keeps NaN, so a NaN in the hidden layer reaches the outputs, on every device: one in b1 makes every output
    NaN; one in a sample's z makes that sample's outputs NaN and leaves the others right."""
    z, w1, b1, w2, b2 = excite_inputs(n, 64, 4, device, dtype)
    b1_nan = b1.clone()
    b1_nan[1] = float("nan")
    assert torch.isnan(se_excite(z, w1, b1_nan, w2, b2, gate)).all()
    z_nan = z.clone()
    z_nan[-1, 5] = float("nan")
    s = se_excite(z_nan, w1, b1, w2, b2, gate)
    expected = excite_formula(z_nan, w1, b1, w2, b2, gate)
    assert torch.isnan(expected[-1]).all() and torch.isnan(s[-1]).all()
    assert not torch.isnan(s[:-1]).any()
    if n > 1:
        assert float((s[:-1].double() - expected[:-1]).abs().max()) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_excite_backward_in_half_precision_matches_float64(dtype):
    args = excite_inputs(4, 64, 4, "cpu", dtype, grad=True)
    s = se_excite(*args, "sigmoid")
    # A fixed gradient, as the inputs are: b1's gradient sums 4 terms, whose cancellation for some random g takes the
    # bf16 error relative to its largest entry to 0.15 (1 in 300 draws; median 0.009).
    g = torch.randn(s.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(dtype)
    ours = torch.autograd.grad(s, [a for a in args], g)
    ref_args = [a.detach().double().requires_grad_(True) for a in args]
    theirs = torch.autograd.grad(excite_formula(*ref_args, "sigmoid"), ref_args, g.double())
    for a, b in zip(ours, theirs):
        assert a.dtype == dtype
        assert rel_err(a, b) <= (5e-2 if dtype == torch.bfloat16 else 1e-4)


@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize(
    "n,c,r", [(32, 96, 6), (33, 96, 6), (2, 80, 48), (1, 3000, 187)], ids=["dots", "matmul", "blocks", "wide"]
)
def test_excite_on_the_cpu_matches_the_formula_on_both_sides_of_the_batch_where_it_stops_using_dot_products(
    gate, n, c, r
):
    """Up to 32 samples of float32 run as dot products (blocks of 32 and 16 lanes, then a tail), beyond that as
    matrix products: both agree with float64, and a non-contiguous z is read by its strides."""
    z, w1, b1, w2, b2 = excite_inputs(n, c, r, "cpu", torch.float32)
    expected = excite_formula(z, w1, b1, w2, b2, gate)
    assert float((se_excite(z, w1, b1, w2, b2, gate).double() - expected).abs().max()) <= 1e-5
    zt = torch.stack([z, torch.zeros_like(z)], 2).flatten(1)[:, ::2]  # z, every other element of a wider row
    assert not zt.is_contiguous()
    assert (
        float(
            (se_excite(zt, w1, None, w2, None, gate).double() - excite_formula(z, w1, None, w2, None, gate)).abs().max()
        )
        <= 1e-5
    )


def test_excite_on_the_cpu_gives_the_same_bits_on_one_thread_as_on_several():
    args = excite_inputs(4, 2048, 128, "cpu", torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = se_excite(*args, "sigmoid")
        torch.set_num_threads(3)
        several = se_excite(*args, "sigmoid")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, several)
    assert float((one.double() - excite_formula(*args, "sigmoid")).abs().max()) <= 1e-5


def test_excite_with_no_hidden_features_is_the_gate_of_b2_like_linear():
    z, _, _, _, b2 = excite_inputs(2, 40, 1, "cpu", torch.float32)
    w1, b1, w2 = torch.empty(0, 40), torch.empty(0), torch.empty(40, 0)
    torch.testing.assert_close(se_excite(z, w1, b1, w2, b2, "tanh"), torch.tanh(b2).expand(2, 40), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        (dict(z=torch.randn(2, 3, 1)), ValueError, r"expected z of shape \[N, C\], got 3-D"),
        (dict(w1=torch.randn(2, 5)), ValueError, r"expected w1 of shape \[R, 8\] \(C from z\), got \[2, 5\]"),
        (
            dict(w2=torch.randn(8, 3)),
            ValueError,
            r"expected w2 of shape \[8, 2\] \(C from z, R from w1\), got \[8, 3\]",
        ),
        (dict(b1=torch.randn(3)), ValueError, r"expected b1 of shape \[2\], got \[3\]"),
        (dict(b2=torch.randn(2)), ValueError, r"expected b2 of shape \[8\], got \[2\]"),
        (dict(w1=torch.randn(2, 8, dtype=torch.float64)), TypeError, r"expected w1 of dtype Float \(z's\), got Double"),
        (dict(gate="relu"), ValueError, r"expected gate 'sigmoid', 'hard_sigmoid' or 'tanh', got 'relu'"),
    ],
)
def test_excite_bad_input(bad, exc, match):
    a = dict(
        z=torch.randn(3, 8),
        w1=torch.randn(2, 8),
        b1=torch.randn(2),
        w2=torch.randn(8, 2),
        b2=torch.randn(8),
        gate="sigmoid",
    )
    a.update(bad)
    with pytest.raises(exc, match=match):
        se_excite(a["z"], a["w1"], a["b1"], a["w2"], a["b2"], a["gate"])


def test_excite_under_autocast_runs_in_the_autocast_dtype_like_linear():
    z, w1, b1, w2, b2 = excite_inputs(2, 32, 4, "cpu", torch.float32, grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = se_excite(z, w1, b1, w2, b2)
        ref = torch.sigmoid(F.linear(torch.relu(F.linear(z, w1, b1)), w2, b2))
    assert s.dtype == ref.dtype == torch.bfloat16
    assert float((s.double() - excite_formula(z, w1, b1, w2, b2, "sigmoid")).abs().max().detach()) < 2e-2
    s.float().sum().backward()
    assert w1.grad is not None and w1.grad.dtype == torch.float32


# What an SE block made of ATen ops would call (pooling, the two FCs, ReLU, the gate, the scaling).
UNFUSED = {
    "aten::mean",
    "aten::adaptive_avg_pool2d",
    "aten::sum",
    "aten::conv2d",
    "aten::convolution",
    "aten::linear",
    "aten::addmm",
    "aten::mm",
    "aten::relu",
    "aten::relu_",
    "aten::sigmoid",
    "aten::sigmoid_",
    "aten::mul",
    "aten::mul_",
}


def _inside_sepp_op(event):
    p = event.cpu_parent
    while p is not None:
        if p.name.startswith("sepp::"):
            return True
        p = p.cpu_parent
    return False


def test_se_block_uses_the_ops_and_matches_the_reference_under_autocast():
    torch.manual_seed(0)
    block = sepp.SEBlock(64)
    x = torch.randn(2, 64, 9, 9).contiguous(memory_format=torch.channels_last)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = block(x.bfloat16())
    assert {"sepp::se_squeeze", "sepp::se_excite", "sepp::se_scale"} <= {e.key for e in prof.key_averages()}
    # The calls the block itself made (outside any sepp operator, whose kernels may call ATen): each operator once,
    # in order, and none of the unfused ATen ops a plain SE block would compute with instead.
    outer = [e.name for e in prof.events() if not _inside_sepp_op(e)]
    assert [n for n in outer if n.startswith("sepp::")] == ["sepp::se_squeeze", "sepp::se_excite", "sepp::se_scale"]
    assert not set(outer) & UNFUSED, outer
    assert y.dtype == torch.bfloat16
    fc1, fc2 = block.fc1, block.fc2
    s = torch.sigmoid(
        F.conv2d(
            torch.relu(F.conv2d(x.double().mean((2, 3), keepdim=True), fc1.weight.double(), fc1.bias.double())),
            fc2.weight.double(),
            fc2.bias.double(),
        )
    )
    assert rel_err(y, x.double() * s) < 3e-2


# ------------------------------------------------------------------------------------------------------ CUDA


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("n,c,r", [(1, 256, 16), (3, 2048, 128), (256, 1024, 64), (7, 3000, 1)], ids=lambda v: str(v))
def test_cuda_excite_matches_cpu(dtype, gate, n, c, r):
    args = excite_inputs(n, c, r, "cpu", dtype)
    cpu = se_excite(*args, gate)
    with poisoned_memory():
        gpu = se_excite(*[None if a is None else a.cuda() for a in args], gate)
    assert float((gpu.cpu().double() - cpu.double()).abs().max()) <= (1e-12 if dtype == torch.float64 else TOL[dtype])


@cuda_only
@pytest.mark.parametrize(
    "n,c,r,dtype",
    [(70000, 16, 4, torch.float32), (270000, 16, 2, torch.float32), (70000, 3100, 4, torch.float16)],
    ids=["70000x16-tiles_of_4", "270000x16-tiles_of_4", "70000x3100-tiles_of_1"],
)
def test_cuda_excite_of_more_than_65535_samples_matches_cpu(n, c, r, dtype):
    """N > 65535 (what a grid holds along y), as the CPU kernel accepts: 4-sample tiles (17500 of them, and 67500:
    more than a grid holds) and, with C + R > 3072 (float accumulation: 4 samples' rows no longer fit in 48 KiB of
    shared memory), 70000 1-sample tiles."""
    g = torch.Generator().manual_seed(n + c)
    z = torch.randn(n, c, generator=g).to(dtype)
    w1 = (torch.randn(r, c, generator=g) * 2 / c**0.5).to(dtype)
    b1 = torch.randn(r, generator=g).to(dtype)
    w2 = (torch.randn(c, r, generator=g) * 2 / r**0.5).to(dtype)
    b2 = torch.randn(c, generator=g).to(dtype)
    cpu = se_excite(z, w1, b1, w2, b2)
    with poisoned_memory():
        gpu = se_excite(*(t.cuda() for t in (z, w1, b1, w2, b2)))
    assert gpu.shape == (n, c)
    assert float((gpu.cpu().double() - cpu.double()).abs().max()) <= TOL[dtype]


@cuda_only
def test_cuda_backward_matches_cpu():
    args = excite_inputs(5, 512, 32, "cpu", torch.float32, grad=True)
    x = torch.randn(5, 512, 7, 7).contiguous(memory_format=torch.channels_last).requires_grad_(True)

    def run(dev):
        a = [t.detach().to(dev).requires_grad_(True) for t in [x] + args]
        s = se_excite(se_squeeze(a[0]), *a[1:])
        return torch.autograd.grad(s.square().sum(), a)

    for g, c in zip(run("cuda"), run("cpu")):
        torch.testing.assert_close(g.cpu(), c, rtol=1e-4, atol=1e-5)
