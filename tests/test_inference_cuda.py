"""sepp.optimize_for_inference on CUDA: cuDNN's fused convolutions against eager and the float64 reference, and the
CUDA graphs (one per input shape, captured once, replayed from several threads and streams)."""

from __future__ import annotations

import pytest
import torch
from helpers import INFERENCE_OPTIONS, copy_state, cuda_only, randomize_, rel_err, run_in_threads

import sepp
import sepp.reference as reference


def _pair(name: str, **kw):
    return randomize_(sepp.create_model(name, **kw)).eval()


@pytest.fixture
def no_tf32():
    """float32 convolutions and matrix products in full float32 while the test runs (cuDNN's convolutions use TF32
    by default, ~1e-3 apart from float32: too far for the float32 tests' 1e-4)."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.backends.cuda.matmul.allow_tf32 = matmul


@cuda_only
@pytest.mark.usefixtures("no_tf32")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 3])
def test_cuda(dtype, batch):
    m = _pair("se_resnet50").cuda()
    o = sepp.optimize_for_inference(m, dtype=dtype)
    assert o.backend == "cudnn" and o.device.type == "cuda"
    x = torch.randn(batch, 3, 64, 64, device="cuda")
    with torch.inference_mode():
        got = o(x.to(dtype))
        assert got.dtype == dtype
        assert rel_err(got, m(x)) < (1e-4 if dtype == torch.float32 else 2e-2)


@cuda_only
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", ["se_resnet18", "se_resnet50", "se_resnext50_32x4d"])
def test_cuda_float64_matches_the_reference(name, batch):
    """float64 on CUDA: the squeeze before conv3, sepp::se_excite and the CUDA graph against the pure-Python
    reference."""
    m = _pair(name).double()
    ref = reference.create_model(name).double().eval()
    copy_state(m, ref)
    o = sepp.optimize_for_inference(m.cuda())
    x = torch.randn(batch, 3, 96, 96, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(o(x.cuda()).cpu(), ref(x)) < 1e-10
    assert o.cuda_graphs_captured == 1


@cuda_only
@pytest.mark.usefixtures("no_tf32")
@pytest.mark.parametrize("options", INFERENCE_OPTIONS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_cuda_options_match_eager(options):
    m = _pair("se_resnet50", **options).cuda()
    o = sepp.optimize_for_inference(m)
    x = torch.randn(2, options.get("in_chans", 3), 64, 64, device="cuda")
    with torch.inference_mode():
        assert rel_err(o(x), m(x)) < 1e-4


@cuda_only
@pytest.mark.usefixtures("no_tf32")
def test_cuda_graphs_capture_once_per_shape_and_return_fresh_outputs():
    m = _pair("se_resnet50").cuda()
    o = sepp.optimize_for_inference(m)
    plain = sepp.optimize_for_inference(m, cuda_graphs=False)
    x1, x2 = torch.randn(2, 2, 3, 64, 64, device="cuda").unbind(0)
    with torch.inference_mode():
        y1 = o(x1)
        assert o.cuda_graphs_captured == 1
        y2 = o(x2)
        assert o.cuda_graphs_captured == 1
        torch.testing.assert_close(y1, plain(x1), rtol=1e-4, atol=1e-4)  # not overwritten by the second replay
        torch.testing.assert_close(y2, plain(x2), rtol=1e-4, atol=1e-4)
        y3 = o(torch.randn(3, 3, 80, 64, device="cuda"))
        assert y3.shape == (3, 1000) and o.cuda_graphs_captured == 2
        assert plain.cuda_graphs_captured == 0
        # A non-default stream (after the default stream's work: x1 is made there), and a channels_last input.
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            y4 = o(x1.contiguous(memory_format=torch.channels_last))
        s.synchronize()
        torch.testing.assert_close(y4, y1)
        assert o.cuda_graphs_captured == 2


@cuda_only
@pytest.mark.usefixtures("no_tf32")
def test_cuda_graphs_from_several_threads():
    m = _pair("se_resnet50").cuda()
    o = sepp.optimize_for_inference(m)
    xs = [torch.randn(2, 3, 64, 64, device="cuda") for _ in range(4)]
    with torch.inference_mode():
        want = [m(x) for x in xs]
    torch.cuda.synchronize()  # xs are made on the default stream and read on the threads' own streams
    got = [None] * len(xs)

    def work(i):
        with torch.inference_mode(), torch.cuda.stream(torch.cuda.Stream()):
            for _ in range(5):
                got[i] = o(xs[i])
            torch.cuda.current_stream().synchronize()

    run_in_threads(work, len(xs))
    for g, w in zip(got, want):
        assert rel_err(g, w) < 1e-4


@cuda_only
@pytest.mark.usefixtures("no_tf32")
def test_cuda_graph_captured_in_inference_mode_runs_outside_it():
    """The graph's own input and output do not carry the first call's mode: captured under inference_mode, replayed
    outside it (the result a normal tensor), and the other way round."""
    m = _pair("se_resnet18").cuda()
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.no_grad():
        want = sepp.optimize_for_inference(m, cuda_graphs=False)(x)
    o = sepp.optimize_for_inference(m)
    with torch.inference_mode():
        y1 = o(x)
    y2 = o(x)
    assert o.cuda_graphs_captured == 1
    assert y1.is_inference() and not y2.is_inference() and not y2.requires_grad
    y2.mul_(1.0)  # in place, outside inference mode: a normal tensor
    torch.testing.assert_close(y1, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y2, want, rtol=1e-4, atol=1e-4)

    o = sepp.optimize_for_inference(m)
    y3 = o(x)
    with torch.inference_mode():
        y4 = o(x)
    assert o.cuda_graphs_captured == 1
    assert not y3.is_inference() and y4.is_inference()
    torch.testing.assert_close(y3, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y4, want, rtol=1e-4, atol=1e-4)


@cuda_only
@pytest.mark.usefixtures("no_tf32")
def test_cuda_graphs_keep_at_most_8_shapes():
    """More batch and image sizes than the cache keeps (8, kMaxCudaGraphs in csrc/inference/cuda_graphs.h): the least
    recently used graph is dropped, so the count stays bounded, and every result stays right, including those of
    shapes captured again after their graph was dropped."""
    m = _pair("se_resnet18").cuda()
    o = sepp.optimize_for_inference(m)
    plain = sepp.optimize_for_inference(m, cuda_graphs=False)
    shapes = [(1 + k % 3, 3, 32 + 8 * k, 40) for k in range(11)]
    with torch.inference_mode():
        for rnd in range(2):
            for k, shape in enumerate(shapes):
                x = torch.randn(shape, device="cuda")
                torch.testing.assert_close(o(x), plain(x), rtol=1e-4, atol=1e-4)
                assert o.cuda_graphs_captured == (min(k + 1, 8) if rnd == 0 else 8)
        # the most recent shape is still held: replayed, not captured again
        x = torch.randn(shapes[-1], device="cuda")
        torch.testing.assert_close(o(x), plain(x), rtol=1e-4, atol=1e-4)
        assert o.cuda_graphs_captured == 8


@cuda_only
@pytest.mark.usefixtures("no_tf32")
def test_cuda_model_freed_while_its_replay_waits_on_another_stream():
    """Freeing the optimized model waits for its graphs' last replays: its weights (memory of the default stream, where
    the model was made) must not be handed out again while a replay queued on a side stream has yet to read them."""
    m = _pair("se_resnet18").cuda()
    x = torch.randn(4, 3, 64, 64, device="cuda")
    with torch.inference_mode():
        plain = sepp.optimize_for_inference(m, cuda_graphs=False)  # kept: its weights' memory is not free
        want = plain(x)
        o = sepp.optimize_for_inference(m)
        o(x)  # the capture
        torch.cuda.synchronize()
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            torch.cuda._sleep(100_000_000)  # the replay below is still queued when the model is freed
            y = o(x)
        del o
        # Memory freed with the model would be reused here at once (the default stream does not wait for s), and
        # filled with NaN: tensors the size of each weight, a few times over (folding leaves free blocks that size).
        _junk = [torch.full_like(p, float("nan")) for p in m.parameters() for _ in range(3)]
        s.synchronize()
        torch.cuda.synchronize()
    torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-4)


@cuda_only
@pytest.mark.usefixtures("no_tf32")
def test_cuda_graphs_captured_by_two_threads_at_once():
    """Two models capturing at the same time from two threads: each capture is thread-local, on a stream of its
    cache's own, so neither thread's allocations, synchronisations or kernels break or land in the other's graph."""
    models = [_pair("se_resnet18").cuda(), _pair("se_resnet50").cuda()]
    optimized = [sepp.optimize_for_inference(m) for m in models]
    xs = [torch.randn(2, 3, 64 + 16 * k, 64, device="cuda") for k in range(3)]
    with torch.inference_mode():
        want = [[m(x) for x in xs] for m in models]
    torch.cuda.synchronize()
    got = [[None] * len(xs) for _ in models]

    def work(i):
        with torch.inference_mode(), torch.cuda.stream(torch.cuda.Stream()):
            for k, x in enumerate(xs):
                got[i][k] = optimized[i](x)
            torch.cuda.current_stream().synchronize()

    run_in_threads(work, len(models))
    for o, g, w in zip(optimized, got, want):
        assert o.cuda_graphs_captured == len(xs)
        for a, b in zip(g, w):
            assert rel_err(a, b) < 1e-4


@cuda_only
@pytest.mark.usefixtures("no_tf32")
def test_cuda_graph_capture_failure_falls_back_to_the_forward_without_a_graph():
    """A capture that fails (here at the synchronisation after the warm-up, refused in torch's sync debug mode
    "error") runs the forward without a graph instead of raising, and that shape is not captured again, while other
    shapes still are."""
    m = _pair("se_resnet18").cuda()
    o = sepp.optimize_for_inference(m)
    plain = sepp.optimize_for_inference(m, cuda_graphs=False)
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.inference_mode():
        want = plain(x)
        torch.cuda.set_sync_debug_mode("error")
        try:
            y1 = o(x)
            y2 = o(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert o.cuda_graphs_captured == 0
        y3 = o(x)  # synchronisations allowed again: still not captured
        assert o.cuda_graphs_captured == 0
        x4 = torch.randn(1, 3, 64, 64, device="cuda")
        y4 = o(x4)
        assert o.cuda_graphs_captured == 1
        want4 = plain(x4)
    for y in (y1, y2, y3):
        torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y4, want4, rtol=1e-4, atol=1e-4)


@cuda_only
@pytest.mark.usefixtures("no_tf32")
def test_cuda_graphs_called_inside_the_callers_capture():
    """Called while the caller captures a CUDA graph of its own, the model's forward is recorded into that graph,
    which replays it; the model's own graph of the shape is neither replayed nor captured there."""
    m = _pair("se_resnet18").cuda()
    o = sepp.optimize_for_inference(m)
    plain = sepp.optimize_for_inference(m, cuda_graphs=False)
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.inference_mode():
        want = plain(x)
        static_x = torch.zeros_like(x)
        o(static_x)  # the warm-up the caller's capture needs (and the model's own capture of this shape)
        assert o.cuda_graphs_captured == 1
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            static_y = o(static_x)
        static_x.copy_(x)
        g.replay()
        torch.cuda.synchronize()
        assert o.cuda_graphs_captured == 1
    torch.testing.assert_close(static_y, want, rtol=1e-4, atol=1e-4)


@cuda_only
@pytest.mark.parametrize("cuda_graphs", [True, False], ids=["graphs", "no_graphs"])
@pytest.mark.parametrize("batch", [1, 3])
def test_cuda_resnext_float16_matches_eager(batch, cuda_graphs):
    """se_resnext50_32x4d in float16: grouped 3x3 convolutions (32 groups), a 3-channel 7x7 / 2 stem; each
    convolution runs cuDNN's fused kernels only where its own probe found they work, the others unfused."""
    m = _pair("se_resnext50_32x4d").cuda()
    o = sepp.optimize_for_inference(m, dtype=torch.float16, cuda_graphs=cuda_graphs)
    assert o.backend == "cudnn"
    x = torch.randn(batch, 3, 64, 64, device="cuda")
    with torch.inference_mode():
        got = o(x.half())
        want = m(x)
    assert got.dtype == torch.float16
    assert rel_err(got, want) < 2e-2


@cuda_only
def test_cuda_eager_training_matches_the_reference():
    """The eager model on CUDA (sepp::se_squeeze / se_excite / se_scale kernels and their backward) against the
    reference on the CPU, float64, train mode: outputs and every gradient."""
    m = _pair("se_resnet50").double()
    ref = reference.create_model("se_resnet50").double()
    copy_state(m, ref)
    m.cuda().train()
    ref.train()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    y = m(x.cuda())
    yr = ref(x)
    assert rel_err(y.cpu(), yr) < 1e-10
    g = torch.randn_like(yr)
    y.backward(g.cuda())
    yr.backward(g)
    theirs = dict(ref.named_parameters())
    for n, p in m.named_parameters():
        assert rel_err(p.grad.cpu(), theirs[n].grad) < 1e-9, n
