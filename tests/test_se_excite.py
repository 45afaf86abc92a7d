"""The SE operators sepp::se_squeeze and sepp::se_excite (and their backward operators): registration (opcheck),
gradients (gradcheck), numerics against float64 formulas in every dtype and odd sizes, CUDA against CPU, outputs
written in full (uninitialized memory poisoned with NaN), and clear errors. CUDA tests skip where no GPU is."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import sepp
from sepp.ops import se_excite, se_squeeze

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
_skip_without_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
GATES = {"sigmoid": torch.sigmoid, "hard_sigmoid": lambda a: F.relu6(a + 3.0) / 6.0, "tanh": torch.tanh}
# Relative error bounds against the float64 formula (inputs rounded to the dtype first, so only the op's own error).
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
# The issue's odd sizes: H x W = 1, 7 (1 x 7), 13 x 17, and the real stage shapes' smallest (7 x 7); batch 1 and 3.
SHAPES = [(1, 1, 1, 1), (3, 5, 1, 1), (1, 33, 1, 7), (3, 64, 13, 17), (1, 256, 7, 7), (3, 40, 56, 3)]


def cuda_only(f):
    return pytest.mark.cuda(_skip_without_cuda(f))


def dtype_id(d):
    return str(d).replace("torch.", "")


def shape_id(s):
    return "x".join(map(str, s))


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@contextlib.contextmanager
def poisoned_memory():
    """Every new tensor torch allocates is filled with NaN (torch's deterministic mode), so an output element a
    kernel forgets to write shows up as NaN."""
    fill = torch.utils.deterministic.fill_uninitialized_memory
    det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = fill
        torch.use_deterministic_algorithms(det)


def excite_inputs(n, c, r, device, dtype, bias=True, grad=False):
    g = torch.Generator().manual_seed(n * 1000 + c + r)
    mk = lambda *s: (torch.randn(*s, generator=g, dtype=torch.float64) / max(1, s[-1]) ** 0.5 * 2)  # noqa: E731
    t = [mk(n, c) * (c ** 0.5), mk(r, c), mk(r) if bias else None, mk(c, r), mk(c) if bias else None]
    out = [None if a is None else a.to(device=device, dtype=dtype) for a in t]
    if grad:
        for a in out:
            if a is not None:
                a.requires_grad_(True)
    return out


def excite_formula(z, w1, b1, w2, b2, gate):
    d = lambda t: None if t is None else t.double()  # noqa: E731
    return GATES[gate](F.linear(torch.relu(F.linear(d(z), d(w1), d(b1))), d(w2), d(b2)))


# ------------------------------------------------------------------------------------------------------ se_squeeze

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("out_dtype", [None, torch.float32], ids=["same", "f32"])
def test_squeeze_opcheck(device, channels_last, out_dtype):
    x = torch.randn(3, 6, 5, 7, device=device, requires_grad=True)
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    opcheck(torch.ops.sepp.se_squeeze.default, (x, out_dtype))
    opcheck(torch.ops.sepp.se_squeeze.default, (x.detach().bfloat16(), out_dtype))
    opcheck(torch.ops.sepp.se_squeeze_backward.default,
            (torch.randn(3, 6, device=device), [3, 6, 5, 7], torch.bfloat16, channels_last))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 7, 1, 1), (3, 2, 1, 6)], ids=shape_id)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_squeeze_gradcheck(device, shape, channels_last):
    x = torch.randn(shape, device=device, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: se_squeeze(t), (x,))
    dx, = torch.autograd.grad(se_squeeze(x).sum(), x)
    if channels_last and shape[1] > 1 and shape[2] * shape[3] > 1:
        assert dx.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_squeeze_matches_mean(device, dtype, shape, channels_last):
    # A mean far from zero next to small variations: what float32 accumulation must get right.
    x = (torch.randn(shape, dtype=torch.float64) + 3.0).to(device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = x.double().mean((2, 3))
    with poisoned_memory():
        z = se_squeeze(x)
        z32 = se_squeeze(x, torch.float32)
    assert z.shape == shape[:2] and z.dtype == dtype and z.device == x.device
    assert z32.dtype == torch.float32
    assert rel_err(z, expected) <= max(TOL[dtype], torch.finfo(dtype).eps)
    assert rel_err(z32, expected) <= max(TOL[torch.float32], 1e-12 if dtype == torch.float64 else 0)


def test_squeeze_of_empty_planes_is_nan_like_torch_mean():
    x = torch.randn(2, 3, 0, 4)
    assert torch.isnan(se_squeeze(x)).all() and torch.isnan(x.mean((2, 3))).all()
    assert se_squeeze(torch.randn(0, 3, 4, 4)).shape == (0, 3)


def test_squeeze_reads_non_contiguous_inputs():
    base = torch.randn(4, 6, 10, 10, dtype=torch.float64)
    x = base[:, ::2, 1:8, ::3]
    torch.testing.assert_close(se_squeeze(x), x.mean((2, 3)), rtol=1e-13, atol=0)


@pytest.mark.parametrize("bad,exc,match", [
    (torch.randn(2, 3, 4), ValueError, r"se_squeeze: expected x of shape \[N, C, H, W\], got 3-D"),
    (torch.ones(1, 2, 2, 2, dtype=torch.long), TypeError, r"se_squeeze: expected a floating-point x, got Long"),
])
def test_squeeze_bad_input(bad, exc, match):
    with pytest.raises(exc, match=match):
        se_squeeze(bad)


def test_squeeze_bad_dtype_argument():
    with pytest.raises(TypeError, match="expected a floating-point dtype, got Int"):
        se_squeeze(torch.randn(1, 2, 3, 3), torch.int32)


# ------------------------------------------------------------------------------------------------------ se_excite

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_excite_opcheck(device, gate, bias):
    z, w1, b1, w2, b2 = excite_inputs(3, 32, 4, device, torch.float32, bias=bias, grad=True)
    opcheck(torch.ops.sepp.se_excite.default, (z, w1, b1, w2, b2, gate))
    s = se_excite(z, w1, b1, w2, b2, gate).detach()
    opcheck(torch.ops.sepp.se_excite_backward.default,
            (torch.randn_like(s), z.detach(), w1.detach(), b1 if b1 is None else b1.detach(), w2.detach(),
             b2 if b2 is None else b2.detach(), s, gate))


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
@pytest.mark.parametrize("n,c,r", [(1, 1, 1), (3, 16, 1), (1, 2048, 128), (3, 256, 16), (9, 1000, 62), (5, 64, 33)],
                         ids=lambda v: str(v))
def test_excite_matches_formula(device, dtype, gate, n, c, r):
    args = excite_inputs(n, c, r, device, dtype)
    with poisoned_memory():
        s = se_excite(*args, gate)
    assert s.shape == (n, c) and s.dtype == dtype and s.device.type == device
    expected = excite_formula(*args, gate)
    tol = TOL[dtype] if dtype != torch.float32 else 1e-5
    assert float((s.double() - expected).abs().max()) <= tol  # gates lie in [-1, 1]: absolute error


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_excite_backward_in_half_precision_matches_float64(dtype):
    args = excite_inputs(4, 64, 4, "cpu", dtype, grad=True)
    s = se_excite(*args, "sigmoid")
    g = torch.randn_like(s)
    ours = torch.autograd.grad(s, [a for a in args], g)
    ref_args = [a.detach().double().requires_grad_(True) for a in args]
    theirs = torch.autograd.grad(excite_formula(*ref_args, "sigmoid"), ref_args, g.double())
    for a, b in zip(ours, theirs):
        assert a.dtype == dtype
        assert rel_err(a, b) <= (5e-2 if dtype == torch.bfloat16 else 1e-4)


@pytest.mark.parametrize("bad,exc,match", [
    (dict(z=torch.randn(2, 3, 1)), ValueError, r"expected z of shape \[N, C\], got 3-D"),
    (dict(w1=torch.randn(2, 5)), ValueError, r"expected w1 of shape \[R, 8\] \(C from z\), got \[2, 5\]"),
    (dict(w2=torch.randn(8, 3)), ValueError, r"expected w2 of shape \[8, 2\] \(C from z, R from w1\), got \[8, 3\]"),
    (dict(b1=torch.randn(3)), ValueError, r"expected b1 of shape \[2\], got \[3\]"),
    (dict(b2=torch.randn(2)), ValueError, r"expected b2 of shape \[8\], got \[2\]"),
    (dict(w1=torch.randn(2, 8, dtype=torch.float64)), TypeError, r"expected w1 of dtype Float \(z's\), got Double"),
    (dict(gate="relu"), ValueError, r"expected gate 'sigmoid', 'hard_sigmoid' or 'tanh', got 'relu'"),
])
def test_excite_bad_input(bad, exc, match):
    a = dict(z=torch.randn(3, 8), w1=torch.randn(2, 8), b1=torch.randn(2), w2=torch.randn(8, 2), b2=torch.randn(8),
             gate="sigmoid")
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


def test_se_block_uses_the_ops_and_matches_the_reference_under_autocast():
    torch.manual_seed(0)
    block = sepp.SEBlock(64)
    x = torch.randn(2, 64, 9, 9).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x.bfloat16())
    assert y.dtype == torch.bfloat16
    fc1, fc2 = block.fc1, block.fc2
    s = torch.sigmoid(F.conv2d(torch.relu(F.conv2d(x.double().mean((2, 3), keepdim=True), fc1.weight.double(),
                                                   fc1.bias.double())), fc2.weight.double(), fc2.bias.double()))
    assert rel_err(y, x.double() * s) < 3e-2


# ------------------------------------------------------------------------------------------------------ CUDA

@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", SHAPES + [(256, 256, 56, 56), (64, 2048, 7, 7)], ids=shape_id)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_cuda_squeeze_matches_cpu(dtype, shape, channels_last):
    x = torch.randn(shape, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    cpu = se_squeeze(x, torch.float64 if dtype == torch.float64 else torch.float32)
    stream = torch.cuda.Stream()
    with poisoned_memory(), torch.cuda.stream(stream):
        gpu = se_squeeze(x.cuda(), cpu.dtype)
    stream.synchronize()
    assert rel_err(gpu.cpu(), cpu) <= (1e-12 if dtype == torch.float64 else 1e-5)


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("n,c,r", [(1, 256, 16), (3, 2048, 128), (256, 1024, 64), (7, 3000, 1)],
                         ids=lambda v: str(v))
def test_cuda_excite_matches_cpu(dtype, gate, n, c, r):
    args = excite_inputs(n, c, r, "cpu", dtype)
    cpu = se_excite(*args, gate)
    with poisoned_memory():
        gpu = se_excite(*[None if a is None else a.cuda() for a in args], gate)
    assert float((gpu.cpu().double() - cpu.double()).abs().max()) <= (1e-12 if dtype == torch.float64 else TOL[dtype])


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


def test_poisoning_is_active():
    with poisoned_memory():
        assert torch.isnan(torch.empty(4)).all()
