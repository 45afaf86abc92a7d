"""The SE squeeze operator sepp::se_squeeze (and sepp::se_squeeze_backward): registration (opcheck), gradients
(gradcheck), numerics against the float64 mean in every dtype and odd sizes, CUDA against CPU, outputs written in full
(uninitialized memory poisoned with NaN), and clear errors. CUDA tests skip where no GPU is."""

from __future__ import annotations

import pytest
import torch
from helpers import DEVICES, DTYPES, TOL, cuda_only, dtype_id, poisoned_memory, rel_err, shape_id
from torch.library import opcheck

import sepp
from sepp.ops import se_squeeze

# The issue's odd sizes: H x W = 1, 7 (1 x 7), 13 x 17, and the real stage shapes' smallest (7 x 7); batch 1 and 3.
# The last is large enough that the channels_last kernel cuts each sample into runs of pixels, the last one short.
SHAPES = [(1, 1, 1, 1), (3, 5, 1, 1), (1, 33, 1, 7), (3, 64, 13, 17), (1, 256, 7, 7), (3, 40, 56, 3), (3, 40, 56, 31)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("out_dtype", [None, torch.float32], ids=["same", "f32"])
def test_squeeze_opcheck(device, channels_last, out_dtype):
    x = torch.randn(3, 6, 5, 7, device=device, requires_grad=True)
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    opcheck(torch.ops.sepp.se_squeeze.default, (x, out_dtype))
    opcheck(torch.ops.sepp.se_squeeze.default, (x.detach().bfloat16(), out_dtype))
    opcheck(
        torch.ops.sepp.se_squeeze_backward.default,
        (torch.randn(3, 6, device=device), [3, 6, 5, 7], torch.bfloat16, channels_last),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 7, 1, 1), (3, 2, 1, 6)], ids=shape_id)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_squeeze_gradcheck(device, shape, channels_last):
    x = torch.randn(shape, device=device, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: se_squeeze(t), (x,))
    (dx,) = torch.autograd.grad(se_squeeze(x).sum(), x)
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


@pytest.mark.skipif(not torch.backends.openmp.is_available(), reason="this torch has no OpenMP threads")
def test_the_cpu_kernels_are_built_to_split_their_loops_over_torch_s_threads():
    assert sepp.build_info()["openmp"] is True


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_squeeze_on_the_cpu_gives_the_same_bits_on_one_thread_as_on_several(dtype):
    x = torch.randn(2, 72, 40, 45).to(dtype).contiguous(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = se_squeeze(x, torch.float32)
        torch.set_num_threads(3)
        several = se_squeeze(x, torch.float32)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, several)
    assert rel_err(one, x.double().mean((2, 3))) <= TOL[torch.float32]


def test_squeeze_of_empty_planes_is_nan_like_torch_mean():
    x = torch.randn(2, 3, 0, 4)
    assert torch.isnan(se_squeeze(x)).all() and torch.isnan(x.mean((2, 3))).all()
    assert se_squeeze(torch.randn(0, 3, 4, 4)).shape == (0, 3)


def test_squeeze_reads_non_contiguous_inputs():
    base = torch.randn(4, 6, 10, 10, dtype=torch.float64)
    x = base[:, ::2, 1:8, ::3]
    # A mean of 28 values of N(0, 1) can come near zero, where a relative bound alone fails on rounding: the absolute
    # floor is 10 ulps of the values' scale (one measured 8e-17); an element read at a wrong stride is off by ~0.1.
    torch.testing.assert_close(se_squeeze(x), x.mean((2, 3)), rtol=1e-13, atol=2e-15)


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        (torch.randn(2, 3, 4), ValueError, r"se_squeeze: expected x of shape \[N, C, H, W\], got 3-D"),
        (torch.ones(1, 2, 2, 2, dtype=torch.long), TypeError, r"se_squeeze: expected a floating-point x, got Long"),
    ],
)
def test_squeeze_bad_input(bad, exc, match):
    with pytest.raises(exc, match=match):
        se_squeeze(bad)


def test_squeeze_bad_dtype_argument():
    with pytest.raises(TypeError, match="expected a floating-point dtype, got Int"):
        se_squeeze(torch.randn(1, 2, 3, 3), torch.int32)


# ------------------------------------------------------------------------------------------------------ CUDA


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
# (70000, 33, 3, 3): more samples than a grid holds along y (65535), and a second channel block of one channel.
@pytest.mark.parametrize("shape", SHAPES + [(256, 256, 56, 56), (64, 2048, 7, 7), (70000, 33, 3, 3)], ids=shape_id)
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


def test_poisoning_is_active():
    with poisoned_memory():
        assert torch.isnan(torch.empty(4)).all()
