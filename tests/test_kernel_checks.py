"""The kernels' run-time self-checks and their ATen fallback (csrc/ops/kernel_check.cpp).

They are on for CUDA only, whose kernels have never run in CI; here the CPU kernels are checked instead, and a fault
is injected into one check, which exercises the same code a failing CUDA kernel would. A warning raised inside an
operator called through torch.ops is written by c10 to stderr (torch.ops does not turn it into a Python warning);
through sepp's modules and optimize_for_inference it is a Python warning.
"""

import re
import warnings

import pytest
import torch

import sepp
from sepp import _C, ops, reference, selftest
from sepp.testing import randomize_


@pytest.fixture(autouse=True)
def checks_reset():
    _C._configure_kernel_checks_for_testing(False, "")
    yield
    _C._configure_kernel_checks_for_testing(False, "")


def scale_inputs(dtype=torch.float32, channels_last=True):
    x = torch.randn(2, 21, 6, 5, dtype=dtype)
    idn = torch.randn(2, 21, 6, 5, dtype=dtype)
    if channels_last:
        x, idn = x.contiguous(memory_format=torch.channels_last), idn.contiguous(memory_format=torch.channels_last)
    return x, torch.rand(2, 21, dtype=dtype), idn


def scale_reference(x, s, idn):
    return torch.relu(x.double() * s.double()[:, :, None, None] + idn.double())


def test_cpu_kernels_are_not_checked_unless_asked():
    x, s, idn = scale_inputs()
    ops.se_scale(x, s, idn, True)
    ops.se_squeeze(x)
    assert ops.kernel_checks() == []


def test_a_kernel_that_passes_is_checked_once_per_dtype_and_then_used():
    _C._configure_kernel_checks_for_testing(True, "")
    for dtype in (torch.float32, torch.bfloat16, torch.float32):
        x, s, idn = scale_inputs(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ops.se_scale(x, s, idn, True)
            ops.se_squeeze(x, torch.float32)
    got = [(c["op"], c["device"], c["dtype"], c["state"], c["error"]) for c in ops.kernel_checks()]
    assert got == [
        ("se_scale", "cpu", "Float", "ok", ""),
        ("se_squeeze", "cpu", "Float", "ok", ""),
        ("se_scale", "cpu", "BFloat16", "ok", ""),
        ("se_squeeze", "cpu", "BFloat16", "ok", ""),
    ]


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_kernel_that_fails_its_check_is_replaced_by_aten_with_one_warning(channels_last, capfd):
    _C._configure_kernel_checks_for_testing(True, "se_scale")
    x, s, idn = scale_inputs(channels_last=channels_last)
    y = ops.se_scale(x, s, idn, True)
    err = capfd.readouterr().err
    assert re.search(r"kernel of sepp::se_scale for Float failed its self-check \(.*max error", err), err
    torch.testing.assert_close(y.double(), scale_reference(x, s, idn), rtol=1e-6, atol=1e-6)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt)
    (rec,) = ops.kernel_checks()
    assert (rec["op"], rec["state"]) == ("se_scale", "failed") and "max error" in rec["error"]
    y2 = ops.se_scale(x, s, idn, True)
    z = ops.se_squeeze(x)  # another operator keeps its kernel
    assert "self-check" not in capfd.readouterr().err  # warned once: the second call is quiet
    torch.testing.assert_close(y2, y, rtol=0, atol=0)
    torch.testing.assert_close(z.double(), x.double().mean((2, 3)), rtol=1e-6, atol=1e-7)
    assert [c["state"] for c in ops.kernel_checks()] == ["failed", "ok"]


def test_the_fallback_keeps_the_operators_semantics(capfd):
    _C._configure_kernel_checks_for_testing(True, "se_squeeze")
    x = torch.randn(3, 10, 4, 7, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    z = ops.se_squeeze(x, torch.float32)
    assert "sepp::se_squeeze for BFloat16 failed" in capfd.readouterr().err
    assert z.dtype == torch.float32 and z.shape == (3, 10)
    torch.testing.assert_close(z.double(), x.double().mean((2, 3)), rtol=1e-6, atol=1e-6)
    zb = ops.se_squeeze(x)
    assert zb.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"expected x of shape \[N, C, H, W\], got 3-D"):
        ops.se_squeeze(x[0])  # the fallback checks its input as the kernel does


def test_the_in_place_scale_falls_back_with_a_float32_scale(capfd):
    _C._configure_kernel_checks_for_testing(True, "se_scale")
    x, _, idn = scale_inputs(torch.bfloat16)
    s = torch.rand(2, 21)
    want = scale_reference(x, s, idn)
    out = torch.ops.sepp.se_scale_(x, s, idn, True)
    assert "sepp::se_scale for BFloat16 failed" in capfd.readouterr().err
    assert out.data_ptr() == x.data_ptr()
    torch.testing.assert_close(out.double(), want, rtol=1e-2, atol=1e-2)


def test_a_gradient_through_the_fallback_is_the_references():
    _C._configure_kernel_checks_for_testing(True, "se_scale")
    x, s, idn = (t.double().requires_grad_() for t in scale_inputs())
    y = ops.se_scale(x, s, idn, True)
    assert [c["state"] for c in ops.kernel_checks()][:1] == ["failed"]
    xr, sr, ir = (t.detach().clone().requires_grad_() for t in (x, s, idn))
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, s, idn), g)
    want = torch.autograd.grad(scale_reference(xr, sr, ir), (xr, sr, ir), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_optimized_model_checks_the_kernels_when_built_and_stays_right(dtype):
    torch.manual_seed(0)
    model = randomize_(sepp.ResNet(block="bottleneck", layers=(1, 1, 1, 1), num_classes=5, se=True)).eval()
    ref = reference.ResNet(block="bottleneck", layers=(1, 1, 1, 1), num_classes=5, se=True).double().eval()
    ref.load_state_dict(model.state_dict())
    _C._configure_kernel_checks_for_testing(True, "se_squeeze")
    with pytest.warns(UserWarning, match="sepp::se_squeeze .*failed its self-check"):
        opt = sepp.optimize_for_inference(model, dtype=dtype, input_size=[2, 3, 64, 64])
    names = {(c["op"], c["dtype"], c["state"]) for c in ops.kernel_checks()}
    assert ("se_squeeze", "Float", "failed") in names and ("se_scale", "Float", "ok") in names
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # checked when built: the forward warns nothing
        y = opt(x.to(dtype)).double()
        want = ref(x.to(dtype).double())
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    assert float((y - want).abs().max()) <= tol * float(want.abs().max())


def test_selftest_reports_a_kernel_that_failed_its_check():
    _C._configure_kernel_checks_for_testing(True, "se_squeeze")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checks = selftest.run(["cpu"], models=False)
    rows = [c for c in checks if c.name.endswith("kernel self-check")]
    bad = [c for c in rows if not c.ok]
    assert [c.name for c in bad] == ["se_squeeze kernel self-check"] * len(bad) and bad
    assert "max error" in bad[0].message
    # The operator's own checks pass: its answers came from ATen.
    assert all(c.ok for c in checks if c.name.startswith("se_squeeze ") and c not in rows)


def test_an_unknown_fault_is_refused():
    with pytest.raises(ValueError, match="expected a fault in 'se_scale', 'se_squeeze', 'se_excite' or none"):
        _C._configure_kernel_checks_for_testing(True, "se_gate")


def test_a_check_on_a_device_without_checked_kernels_does_nothing():
    assert ops.check_kernels("cpu", torch.float32) == []
