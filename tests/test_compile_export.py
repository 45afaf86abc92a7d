"""sepp models under tracers: torch.compile(fullgraph=True), torch.export, torch.jit.trace, ONNX export (both
exporters, dynamic batch) and FLOP counting with fvcore, each against the model's own eager (C++) forward with the
same weights. Under a tracer a model computes through its pure-PyTorch twin (sepp._twin).

Inductor compiles are slow on small CI machines: one test uses it; the others use the aot_eager backend (the same
Dynamo capture and AOTAutograd: functionalized BN statistics updates, the backward graph) or the eager one."""

from __future__ import annotations

import copy
import io
import subprocess
import sys
import warnings

import pytest
import torch
from helpers import randomize_, rel_err

import sepp
from sepp import _twin
from sepp.export import export_onnx, main

onnxruntime = pytest.importorskip("onnxruntime")
CompileCounterWithBackend = pytest.importorskip("torch._dynamo.testing").CompileCounterWithBackend


def small(**kw):
    """A one-block-per-stage bottleneck ResNet with random weights and BN statistics, in eval mode."""
    return randomize_(sepp.ResNet(block="bottleneck", layers=[1, 1, 1, 1], num_classes=5, **kw)).eval()


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    # Compile caches and the automatic-dynamic state (also kept on disk) would carry over between tests.
    with torch._dynamo.config.patch(automatic_dynamic_local_pgo=False):
        torch._dynamo.reset()
        yield
        torch._dynamo.reset()


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _ort(path, x):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


# ------------------------------------------------------------------------------------------------ torch.compile


def test_inductor_compiled_model_matches_eager_in_eval_mode():
    m = small()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert rel_err(torch.compile(m, fullgraph=True)(x), m(x)) < 1e-5


def test_compiled_model_in_train_mode_matches_eager_outputs_gradients_and_bn_statistics():
    # float64: train-mode BN over few values per channel magnifies float32 rounding differences
    eager = small(se=True).double().train()
    traced = copy.deepcopy(eager)
    compiled = torch.compile(traced, backend="aot_eager", fullgraph=True)
    for _ in range(2):
        x = torch.randn(4, 3, 64, 64, dtype=torch.float64)
        y, ye = compiled(x), eager(x)
        assert rel_err(y, ye) < 1e-12
        y.square().mean().backward()
        ye.square().mean().backward()
    for (name, p), q in zip(traced.named_parameters(), eager.parameters()):
        assert rel_err(p.grad, q.grad) < 1e-10, name
    for (name, b), c in zip(traced.named_buffers(), eager.buffers()):
        assert rel_err(b, c) < 1e-12, name
    assert int(traced.bn1.num_batches_tracked) == int(eager.bn1.num_batches_tracked) == 2


def test_compiled_channels_last_model_matches_eager_in_eval_and_train_mode():
    eager = small().to(memory_format=torch.channels_last)
    traced = copy.deepcopy(eager)
    compiled = torch.compile(traced, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 64, 64).to(memory_format=torch.channels_last)
    with torch.no_grad():
        y = compiled(x)
        assert y.shape == (2, 5) and rel_err(y, eager(x)) < 1e-5
    eager.train()
    traced.train()
    y, ye = compiled(x), eager(x)
    assert rel_err(y, ye) < 1e-5
    y.sum().backward()
    ye.sum().backward()
    assert rel_err(traced.conv1.weight.grad, eager.conv1.weight.grad) < 1e-4
    assert rel_err(traced.layer4[0].bn3.running_var, eager.layer4[0].bn3.running_var) < 1e-5


def test_compile_makes_one_graph_and_a_second_call_does_not_recompile():
    m = small()
    counter = CompileCounterWithBackend("eager")
    compiled = torch.compile(m, backend=counter, fullgraph=True)  # fullgraph: a graph break would raise
    compiled(torch.randn(2, 3, 64, 64))
    x = torch.randn(2, 3, 64, 64)
    assert rel_err(compiled(x), m(x)) < 1e-5
    assert counter.frame_count == 1


def test_a_new_batch_size_recompiles_once_with_a_dynamic_batch_and_dynamic_true_compiles_once():
    m = small(drop_rate=0.25)  # a float option: symbolic under dynamic=True
    counter = CompileCounterWithBackend("eager")
    compiled = torch.compile(m, backend=counter, fullgraph=True)
    frames = []
    for n in (2, 3, 5):
        x = torch.randn(n, 3, 64, 64)
        assert rel_err(compiled(x), m(x)) < 1e-5
        frames.append(counter.frame_count)
    assert frames == [1, 2, 2]  # the second size makes the batch dimension dynamic
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("eager")
    compiled = torch.compile(m, backend=counter, fullgraph=True, dynamic=True)
    for n in (2, 3, 5):
        x = torch.randn(n, 3, 64, 64)
        assert rel_err(compiled(x), m(x)) < 1e-5
    assert counter.frame_count == 1


def test_compiled_model_follows_mode_changes_frozen_batch_norms_and_a_new_classifier():
    m = small()
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    x = torch.randn(2, 3, 64, 64)
    for setup in (m.train, m.layer2.eval):  # layer2.eval(): one stage's BN frozen while the rest trains
        setup()
        eager = copy.deepcopy(m)
        assert rel_err(compiled(x), eager(x)) < 1e-5
        assert all(rel_err(a, b) < 1e-5 for a, b in zip(m.buffers(), eager.buffers()))
    m.eval()
    m.reset_classifier(3)
    assert compiled(x).shape == (2, 3)
    assert rel_err(compiled(x), m(x)) < 1e-5


def test_compiled_stem_feature_and_head_methods_match_eager():
    m = small()
    x = torch.randn(2, 3, 64, 64)

    def methods(x):
        f = m.forward_features(x)
        return m.forward_stem(x), f, m.forward_head(f), m.forward_head(f, pre_logits=True)

    f = m.forward_features(x)
    expected = (m.forward_stem(x), f, m.forward_head(f), m.forward_head(f, pre_logits=True))
    for got, want in zip(torch.compile(methods, backend="eager", fullgraph=True)(x), expected):
        assert got.shape == want.shape and rel_err(got, want) < 1e-5


# ------------------------------------------------------------------------------------ export, jit.trace, ONNX


def test_tracing_is_false_in_eager_and_true_under_each_tracer():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(_twin.tracing())
            return x + 1

    x = torch.randn(2, 3)
    Probe()(x)
    torch.export.export(Probe(), (x,))
    _quiet(torch.jit.trace, Probe(), (x,), check_trace=False)
    _quiet(torch.onnx.export, Probe(), (x,), io.BytesIO(), dynamo=False)
    assert seen == [False, True, True, True]
    assert torch.compile(lambda t: t + _twin.tracing(), backend="eager", fullgraph=True)(torch.zeros(1)).item() == 1


def test_torch_export_and_jit_trace_give_sepps_outputs():
    m = small()
    x = torch.randn(3, 3, 64, 64)
    expected = m(x)
    pooled = m.forward_head(m.forward_features(x), pre_logits=True)
    program = torch.export.export(copy.deepcopy(m), (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert rel_err(program.module()(x), expected) < 1e-5
    assert rel_err(program.module()(x[:2]), expected[:2]) < 1e-5
    assert rel_err(_quiet(torch.jit.trace, m, (x,))(x), expected) < 1e-5

    class Pooled(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

    assert rel_err(_quiet(torch.jit.trace, Pooled(m), (x,))(x), pooled) < 1e-5


def test_a_model_still_runs_eagerly_after_torch_export():
    m = small()
    x = torch.randn(2, 3, 64, 64)
    expected = m(x)
    torch.export.export(m, (x,))
    assert rel_err(m(x), expected) == 0


def test_a_forward_hook_on_a_submodule_sees_the_traced_computation():
    m = small()
    x = torch.randn(2, 3, 64, 64)
    expected = m.forward_stem(x)
    seen = []
    handle = m.maxpool.register_forward_hook(lambda mod, args, out: seen.append(out))
    _quiet(torch.jit.trace, m, (x,), check_trace=False)
    handle.remove()
    assert len(seen) == 1 and rel_err(seen[0], expected) < 1e-5


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export_with_a_dynamic_batch_matches_sepp_in_onnxruntime(tmp_path, dynamo):
    if dynamo:
        pytest.importorskip("onnxscript")  # the torch.export based exporter's translator
    m = small()
    xs = [torch.randn(n, 3, 64, 64) for n in (1, 3)]
    expected = [m(x) for x in xs]
    path = _quiet(export_onnx, m, tmp_path / "m.onnx", xs[0], dynamo=dynamo)
    for x, y in zip(xs, expected):
        assert rel_err(_ort(path, x), y) < 1e-4


def test_the_export_cli_writes_an_onnx_file_that_onnxruntime_runs_with_the_given_weights(tmp_path, capsys):
    m = randomize_(sepp.resnet18()).eval()
    sepp.save_weights(m, tmp_path / "w.safetensors")
    x = torch.randn(2, 3, 64, 64)
    expected = m(x)
    out = tmp_path / "m.onnx"
    argv = ["--model", "resnet18", "--weights", str(tmp_path / "w.safetensors"), "--output", str(out)]
    assert main(argv + ["--no-dynamo", "--image-size", "64", "--opset", "17"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert rel_err(_ort(out, x), expected) < 1e-4
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_the_export_cli_names_a_bad_model_or_a_missing_weights_file(tmp_path, capsys):
    out = str(tmp_path / "m.onnx")
    with pytest.raises(SystemExit) as e:
        main(["--model", "se_resnet51", "--output", out])
    assert e.value.code != 0 and "--model: unknown model 'se_resnet51'" in capsys.readouterr().err
    missing = str(tmp_path / "missing.safetensors")
    with pytest.raises(SystemExit) as e:
        main(["--model", "resnet18", "--weights", missing, "--output", out])
    err = capsys.readouterr().err
    assert e.value.code != 0 and missing in err and "cannot read the file" in err
    with pytest.raises(SystemExit) as e:
        main(["--model", "resnet18", "--output", str(tmp_path / "no" / "m.onnx")])
    assert e.value.code != 0 and "--output: the folder" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
    p = subprocess.run([sys.executable, "-m", "sepp.export", "--model", "nope", "--output", out], capture_output=True)
    assert p.returncode == 2 and b"unknown model 'nope'" in p.stderr


# ------------------------------------------------------------------------------------------------------ fvcore


def test_fvcore_flop_counts_of_sepp_equal_timms_in_total_and_by_module():
    fvcore_nn = pytest.importorskip("fvcore.nn")
    timm = pytest.importorskip("timm")
    m = sepp.se_resnet50().eval()
    t = timm.create_model("seresnet50").eval()
    t.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, 64, 64)
    counts = []
    for model in (m, t):
        flops = fvcore_nn.FlopCountAnalysis(model, x)
        flops.unsupported_ops_warnings(False)
        flops.uncalled_modules_warnings(False)
        counts.append((flops.total(), flops.by_module()))
    (total, ours), (timm_total, theirs) = counts
    assert total == timm_total > 0
    top = [name for name, _ in t.named_children() if name in dict(m.named_children())]
    assert top == ["conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4", "global_pool", "fc"]
    assert {k: ours[k] for k in top} == {k: theirs[k] for k in top}
    assert {k: v for k, v in ours.items() if k in theirs} == {k: v for k, v in theirs.items() if k in ours}
