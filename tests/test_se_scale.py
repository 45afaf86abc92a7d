"""The fused operator sepp::se_scale: registration (opcheck), gradients (gradcheck), numerics against the formula, on
every device present (CUDA tests skip where no GPU is)."""

from __future__ import annotations

import pytest
import torch
from helpers import DEVICES, cuda_only
from torch.library import opcheck

import sepp
from sepp.ops import se_scale


def formula(x, s, identity=None, relu=False):
    out = x.double() * s.double().reshape(x.shape[0], x.shape[1], 1, 1)
    if identity is not None:
        out = out + identity.double()
    return torch.relu(out) if relu else out


def inputs(device, dtype, shape=(3, 5, 7, 6), channels_last=False, identity=True, scale4d=False, grad=False):
    n, c = shape[:2]
    x = torch.randn(shape, device=device, dtype=dtype)
    s = torch.rand(n, c, 1, 1, device=device, dtype=dtype) if scale4d else torch.rand(n, c, device=device, dtype=dtype)
    idt = torch.randn(shape, device=device, dtype=dtype) if identity else None
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        if idt is not None:
            idt = idt.contiguous(memory_format=torch.channels_last)
    if grad:
        x.requires_grad_(True)
        s.requires_grad_(True)
        if idt is not None:
            idt.requires_grad_(True)
    return x, s, idt


CASES = [
    dict(identity=False, relu=False),
    dict(identity=True, relu=True),
    dict(identity=True, relu=False, scale4d=True),
    dict(identity=False, relu=True, channels_last=True),
    dict(identity=True, relu=True, channels_last=True, scale4d=True),
]


def case_id(c):
    return ",".join(k if v is True else f"no_{k}" for k, v in c.items() if isinstance(v, bool))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_opcheck(device, case):
    case = dict(case)
    relu = case.pop("relu")
    x, s, idt = inputs(device, torch.float32, grad=True, **case)
    opcheck(torch.ops.sepp.se_scale.default, (x, s, idt, relu))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradcheck(device, case):
    case = dict(case)
    relu = case.pop("relu")
    x, s, idt = inputs(device, torch.float64, shape=(2, 3, 4, 5), grad=True, **case)
    args = (x, s) if idt is None else (x, s, idt)

    def f(*a):
        return se_scale(a[0], a[1], a[2] if len(a) > 2 else None, relu)

    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "dtype,tol",
    [(torch.float64, 1e-15), (torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 2e-2)],
    ids=["f64", "f32", "f16", "bf16"],
)
@pytest.mark.parametrize(
    "shape",
    [(1, 1, 1, 1), (3, 5, 7, 7), (2, 64, 13, 17), (1, 33, 1, 1), (3, 8, 1, 7)],
    ids=lambda s: "x".join(map(str, s)),
)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_matches_formula(device, dtype, tol, shape, channels_last):
    x, s, idt = inputs(device, dtype, shape=shape, channels_last=channels_last)
    out = se_scale(x, s, idt, True)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    expected = formula(x, s, idt, True)
    err = (out.double() - expected).abs().max() / expected.abs().max().clamp_min(1e-12)
    assert float(err) <= tol
    if channels_last and shape[1] > 1 and shape[2] * shape[3] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs_and_empty_batch(device):
    base = torch.randn(4, 6, 10, 10, device=device)
    x = base[:, ::2, 1:8, ::3]  # neither contiguous nor channels_last
    s = torch.rand(6, 4, device=device).t()[:, ::2]
    idt = torch.randn(4, 3, 7, 4, device=device).transpose(2, 3).contiguous().transpose(2, 3)
    torch.testing.assert_close(se_scale(x, s, idt, True), formula(x, s, idt, True).float())
    empty = torch.randn(0, 3, 4, 4, device=device)
    assert se_scale(empty, torch.rand(0, 3, device=device)).shape == (0, 3, 4, 4)


def test_relu_keeps_nan_like_torch():
    x = torch.tensor([float("nan"), -1.0, 2.0]).reshape(1, 3, 1, 1)
    out = se_scale(x, torch.ones(1, 3), None, True)
    assert torch.isnan(out[0, 0]).all() and out[0, 1].item() == 0.0 and out[0, 2].item() == 2.0


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(x=torch.randn(2, 3, 4)), r"expected x of shape \[N, C, H, W\], got 3-D"),
        (dict(s=torch.rand(2, 4)), r"expected scale of shape \[2, 3\] or \[2, 3, 1, 1\].*got \[2, 4\]"),
        (dict(s=torch.rand(2, 3, 2, 1)), r"expected scale of shape"),
        (dict(idt=torch.randn(2, 3, 4, 5)), r"expected identity of shape \[2, 3, 4, 4\].*got \[2, 3, 4, 5\]"),
    ],
)
def test_bad_shapes_raise_value_error(bad, match):
    args = dict(x=torch.randn(2, 3, 4, 4), s=torch.rand(2, 3), idt=None)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        se_scale(args["x"], args["s"], args["idt"])


def test_bad_dtypes_raise_type_error():
    with pytest.raises(TypeError, match="expected a floating-point x, got Long"):
        se_scale(torch.ones(1, 2, 2, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="expected scale of dtype Float .x's., got Double"):
        se_scale(torch.ones(1, 2, 2, 2), torch.ones(1, 2, dtype=torch.float64))


@cuda_only
def test_cuda_matches_cpu_and_runs_on_current_stream():
    x, s, idt = inputs("cpu", torch.float32, shape=(3, 16, 9, 9))
    expected = se_scale(x, s, idt, True)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = se_scale(x.cuda(), s.cuda(), idt.cuda(), True)
    stream.synchronize()
    torch.testing.assert_close(out.cpu(), expected)


@cuda_only
def test_cuda_rejects_mixed_devices():
    with pytest.raises(ValueError, match="expected scale on cuda"):
        se_scale(torch.randn(1, 2, 3, 3, device="cuda"), torch.rand(1, 2))


def test_build_info_reports_cuda_kernels():
    info = sepp.build_info()
    assert info["torch_version"] and info["version"]
    assert isinstance(info["cuda"], bool)
    if torch.version.cuda is None:
        assert info["cuda"] is False
