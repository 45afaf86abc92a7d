"""torch.nn hooks on a sepp model's submodules behave as on timm's model with the same weights: they fire on the same
modules, in the same order, with the same tensors, forward and backward; what a hook returns replaces the module's
input or output downstream; handles, global hooks, train mode, no_grad, direct calls, copies and moves work as in
torch.nn. The leaves are genuine torch.nn modules with timm's attributes."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from helpers import randomize_, rel_err
from torch import nn
from torch.nn.modules import module as nn_module

import sepp
from sepp import _C, _hooks

timm = pytest.importorskip("timm")

PAIRS = [
    ("se_resnet50", "seresnet50", {}),
    ("se_resnet18", "seresnet18", {"rd_divisor": 8}),
    ("seresnetaa50d", "seresnetaa50d", {}),  # deep stem, avg_down, aa pools
]
TOL = 1e-10  # float64, the same weights: the operators are the same up to summation order


def pair(ours="se_resnet50", theirs="seresnet50", dtype=torch.float64, **kwargs):
    """A sepp model and timm's, in eval mode (float64 by default), with the same random weights and BN statistics."""
    t = randomize_(timm.create_model(theirs)).to(dtype).eval()
    m = sepp.create_model(ours, **kwargs).to(dtype).eval()
    m.load_state_dict(t.state_dict())
    return m, t


def image(n=2, size=64, grad=False):
    return torch.randn(n, 3, size, size, dtype=torch.float64, requires_grad=grad)


def clones(tensors):
    return [None if t is None else t.detach().clone() for t in tensors]


def record(model, log, names=None, forward=True, backward=False):
    """Hooks on the submodules ``names`` (all, the model itself included, by default) that append (kind, name,
    tensors at that moment) to ``log``; returns their handles."""
    handles = []
    for name, mod in model.named_modules():
        if names is not None and name not in names:
            continue
        if forward:
            handles.append(
                mod.register_forward_pre_hook(lambda mod, args, name=name: log.append(("pre", name, clones(args))))
            )
            handles.append(
                mod.register_forward_hook(lambda mod, args, out, name=name: log.append(("out", name, clones([out]))))
            )
        if backward:
            handles.append(
                mod.register_full_backward_pre_hook(
                    lambda mod, gout, name=name: log.append(("grad_out", name, clones(gout)))
                )
            )
            handles.append(
                mod.register_full_backward_hook(
                    lambda mod, gin, gout, name=name: log.append(("grad_in", name, clones(gin) + clones(gout)))
                )
            )
    return handles


def assert_same_log(got, expected, tol=TOL):
    assert [e[:2] for e in got] == [e[:2] for e in expected]
    for (kind, name, ours), (_, _, theirs) in zip(got, expected):
        assert len(ours) == len(theirs), (kind, name)
        for a, b in zip(ours, theirs):
            assert (a is None) == (b is None), (kind, name)
            if a is not None:
                assert a.shape == b.shape and rel_err(a, b) < tol, (kind, name, rel_err(a, b))


def remove(handles):
    for h in handles:
        h.remove()


def none_observed(model):
    return not any(_C.is_observed(_hooks.cpp_of(mod)) for mod in model.modules() if mod is not model)


# ---------------------------------------------------------------------------- what fires, in which order


@pytest.mark.parametrize("ours,theirs,kwargs", PAIRS, ids=[p[0] for p in PAIRS])
def test_forward_pre_hooks_and_forward_hooks_fire_on_every_module_in_timms_order_with_timms_tensors(
    ours, theirs, kwargs
):
    m, t = pair(ours, theirs, **kwargs)
    assert [n for n, _ in m.named_modules()] == [n for n, _ in t.named_modules()]
    x = image()
    got, expected = [], []
    record(m, got)
    record(t, expected)
    with torch.no_grad():
        y, e = m(x), t(x)
    assert len(got) == 2 * len(list(t.modules()))
    assert_same_log(got, expected)
    assert rel_err(y, e) < TOL


def in_place_changed(model, x):
    """The submodules whose input or output an in-place operation changes during the forward (an in-place ReLU,
    ``x += shortcut``). autograd refuses a full backward hook on those (it forbids changing a BackwardHookFunction's
    output in place), in timm as in sepp."""
    seen = {}

    def pre(mod, args, name):
        seen[name] = [args[0], args[0]._version]

    def post(mod, args, out, name):
        seen[name] += [out, out._version]

    handles = []
    for name, mod in model.named_modules():
        handles.append(mod.register_forward_pre_hook(lambda mod, args, name=name: pre(mod, args, name)))
        handles.append(mod.register_forward_hook(lambda mod, args, out, name=name: post(mod, args, out, name)))
    with torch.no_grad():
        model(x)
    remove(handles)
    return {n for n, (i, iv, o, ov) in seen.items() if i._version != iv or o._version != ov}


def test_full_backward_hooks_fire_on_every_module_timm_allows_them_in_timms_order_with_timms_gradients():
    m, t = pair()
    x = image()
    # timm's ReLUs are in place; a full backward hook cannot sit on them, their inputs' producers, the SE blocks
    # (whose output `x += shortcut` changes) and the SE's fc1 / bn (feeding its in-place ReLU).
    excluded = in_place_changed(t, x)
    assert {"act1", "bn1", "layer1.0.se", "layer1.0.act3", "layer1.0.bn2", "layer1.0.se.fc1"} <= excluded
    # sepp's ReLUs before the residual sum are not in place: only the SE blocks and the final ReLUs are excluded there
    blocks = [n for n, mod in t.named_modules() if isinstance(mod, timm.models.resnet.Bottleneck)]
    assert in_place_changed(m, x) == {f"{b}.{c}" for b in blocks for c in ("se", "act3")}
    names = {n for n, _ in t.named_modules()} - excluded
    assert {"", "conv1", "maxpool", "layer1", "layer1.0", "layer1.0.conv3", "layer1.0.bn3", "layer1.0.se.fc2"} <= names
    assert {"layer1.0.se.gate", "layer1.0.downsample", "global_pool", "global_pool.pool", "fc"} <= names
    got, expected = [], []
    record(m, got, names, forward=False, backward=True)
    record(t, expected, names, forward=False, backward=True)
    xm, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    m(xm).square().sum().backward()
    t(xt).square().sum().backward()
    assert len(got) == 2 * len(names)
    assert_same_log(got, expected)
    assert rel_err(xm.grad, xt.grad) < TOL


@pytest.mark.parametrize("name", ["layer1.0.se", "layer2.1.act2"])
def test_a_full_backward_hook_where_the_residual_sum_is_in_place_raises_as_in_timm(name):
    # The block's `x += shortcut` and its in-place final ReLU, in sepp's C++ as in timm: autograd's own error.
    m, t = pair("se_resnet18", "seresnet18", rd_divisor=8)
    for model in (m, t):
        dict(model.named_modules())[name].register_full_backward_hook(lambda *args: None)
        with pytest.raises(RuntimeError, match="BackwardHookFunction is a view and is being modified inplace"):
            model(image(grad=True))


def test_global_module_hooks_fire_on_every_module_in_timms_order():
    m, t = pair("se_resnet18", "seresnet18", rd_divisor=8)
    x = image()
    logs = {}
    for model in (m, t):
        names = {id(mod): n for n, mod in model.named_modules()}
        log = logs[model] = []

        def pre(mod, args, names=names, log=log):
            log.append(("pre", names[id(mod)], clones(args)))

        def post(mod, args, out, names=names, log=log):
            log.append(("out", names[id(mod)], clones([out])))

        handles = [nn_module.register_module_forward_pre_hook(pre), nn_module.register_module_forward_hook(post)]
        try:
            with torch.no_grad():
                model(x)
        finally:
            remove(handles)
    assert len(logs[m]) == 2 * len(list(t.modules()))
    assert_same_log(logs[m], logs[t])
    with torch.no_grad():
        m(x)  # the hooks are gone: this call unmarks every module
    assert none_observed(m)


# ---------------------------------------------------------------------------- what a hook returns


def check_hook_changes_the_output_as_in_timm(name, register):
    """`register(module)` on the submodule `name` of both models: the outputs agree, and differ from the plain one."""
    m, t = pair()
    x = image()
    with torch.no_grad():
        plain = m(x)
        for model in (m, t):
            register(dict(model.named_modules())[name])
        y, e = m(x), t(x)
    assert rel_err(y, e) < TOL
    assert rel_err(y, plain) > 1e-6


@pytest.mark.parametrize(
    "name,hook",
    [
        ("layer3.0.se", lambda mod, args, out: torch.zeros_like(out)),
        ("layer2.1.conv2", lambda mod, args, out: 2 * out),
        ("layer1.0.se.gate", lambda mod, args, out: torch.ones_like(out)),  # the SE block becomes the identity
        ("layer4.0.downsample", lambda mod, args, out: -out),
        ("global_pool", lambda mod, args, out: out - 1),
    ],
    ids=["se", "conv", "se-gate", "downsample", "pool"],
)
def test_a_forward_hook_that_returns_a_tensor_replaces_the_output_downstream_as_in_timm(name, hook):
    check_hook_changes_the_output_as_in_timm(name, lambda mod: mod.register_forward_hook(hook))


@pytest.mark.parametrize(
    "name,hook",
    [
        ("layer2.1", lambda mod, args: (0.5 * args[0],)),
        ("layer3.0.conv1", lambda mod, args: args[0].flip(-2)),  # a tensor, not a tuple: torch.nn takes both
        ("layer1.1.se.fc2", lambda mod, args: (args[0] + 1,)),
    ],
    ids=["block", "conv", "se-fc2"],
)
def test_a_forward_pre_hook_that_returns_an_input_replaces_it_as_in_timm(name, hook):
    check_hook_changes_the_output_as_in_timm(name, lambda mod: mod.register_forward_pre_hook(hook))


def test_removing_the_handles_stops_the_hooks_and_the_forward_is_again_the_plain_one():
    m, t = pair("se_resnet18", "seresnet18", rd_divisor=8)
    x = image()
    with torch.no_grad():
        plain = m(x)
        log = []
        handles = record(m, log)
        handles.append(m.layer2[0].se.register_forward_hook(lambda mod, args, out: 0 * out))
        changed = m(x)
        assert log and not torch.equal(changed, plain)
        assert not none_observed(m)
        remove(handles)
        log.clear()
        again = m(x)
    assert not log
    assert none_observed(m)  # nothing is handed to the observer: the C++ forward runs as without hooks
    assert torch.equal(again, plain)


def test_a_hook_returning_a_non_tensor_raises_a_clear_type_error():
    m, _ = pair("se_resnet18", "seresnet18", rd_divisor=8)
    x = image()
    for mod in (m.layer2[0].se, m.layer1[0].conv1, m.layer3):
        handle = mod.register_forward_hook(lambda mod, args, out: (out, out))
        with pytest.raises(TypeError, match=r"returned a tuple; inside a sepp model each submodule's output"):
            m(x)
        handle.remove()
    handle = m.layer2[0].register_forward_pre_hook(lambda mod, args: {"x": args[0]})
    with pytest.raises(TypeError):
        m(x)
    handle.remove()
    with torch.no_grad():
        assert m(x).shape == (2, 1000)


class HookError(Exception):
    pass


def test_an_exception_in_a_hook_propagates_as_that_exception_and_the_model_still_works():
    m, t = pair("se_resnet18", "seresnet18", rd_divisor=8)
    x = image()

    def fail(*args):
        raise HookError("from the hook")

    for register in (
        m.layer2[0].conv1.register_forward_pre_hook,
        m.layer3[1].se.register_forward_hook,
        m.layer4.register_forward_hook,
    ):
        handle = register(fail)
        with pytest.raises(HookError, match="from the hook"):
            m(x)
        handle.remove()
    handle = m.layer3[0].register_full_backward_hook(fail)
    with pytest.raises(HookError, match="from the hook"):
        m(image(grad=True)).sum().backward()
    handle.remove()
    log, expected = [], []
    record(m, log, {"layer1.0.conv1", "fc"})
    record(t, expected, {"layer1.0.conv1", "fc"})
    with torch.no_grad():
        assert rel_err(m(x), t(x)) < TOL
    assert_same_log(log, expected)


def test_prepended_keyword_and_always_called_hooks_behave_as_in_timm():
    m, t = pair("se_resnet18", "seresnet18", rd_divisor=8)
    x = image()
    logs = {}
    for model in (m, t):
        log = logs[model] = []
        conv = model.layer1[0].conv1
        conv.register_forward_hook(lambda mod, args, out: log.append("first"))
        conv.register_forward_hook(lambda mod, args, out: log.append("prepended"), prepend=True)
        conv.register_forward_pre_hook(lambda mod, args, kwargs: log.append(("kwargs", kwargs)), with_kwargs=True)
        model.layer2[0].se.register_forward_hook(lambda *args: log.append("always"), always_call=True)
        failing = model.layer2[0].se.fc2.register_forward_pre_hook(lambda *args: log.append("fail") or 1 / 0)
        with pytest.raises(ZeroDivisionError):
            model(x)  # raised inside the SE block: its always-called hook still fires, through sepp's C++ frames
        failing.remove()
        with torch.no_grad():
            model(x)
    once = [("kwargs", {}), "prepended", "first"]
    assert logs[m] == logs[t] == [*once, "fail", "always", *once, "always"]


# ---------------------------------------------------------------------------- modes and calls


def test_hooks_in_train_mode_give_timms_gradients_and_running_statistics():
    m, t = pair()
    m.train()
    t.train()
    names = {"layer1.0", "layer2.1.conv2", "layer3.0.se.fc2", "layer4", "fc"}
    got, expected = [], []
    record(m, got, names, backward=True)
    record(t, expected, names, backward=True)
    x, target = image(), torch.tensor([1, 7])
    for model in (m, t):
        nn.functional.cross_entropy(model(x), target).backward()
    assert_same_log(got, expected)
    grads = {n: p.grad for n, p in t.named_parameters()}
    for n, p in m.named_parameters():
        assert p.grad is not None and rel_err(p.grad, grads[n]) < 1e-9, n
    state = t.state_dict()
    for n, v in m.state_dict().items():
        assert rel_err(v, state[n]) < TOL, n  # the BatchNorm running statistics moved alike


def test_hooks_under_no_grad_see_tensors_without_history():
    m, t = pair()
    names = {"conv1", "layer2.0.se", "layer3.1.bn2", "global_pool.flatten"}
    got, expected, grad_flags = [], [], []
    record(m, got, names)
    record(t, expected, names)
    m.layer2[0].se.register_forward_hook(lambda mod, args, out: grad_flags.append(out.requires_grad))
    x = image(grad=True)
    with torch.no_grad():
        y, e = m(x), t(x)
    assert not y.requires_grad and grad_flags == [False]
    assert_same_log(got, expected)
    assert rel_err(y, e) < TOL


def test_hooks_fire_on_submodules_called_directly():
    m, t = pair()
    x = torch.randn(2, 256, 16, 16, dtype=torch.float64)
    names = {"layer2", "layer2.0", "layer2.0.se.fc1", "layer2.1.conv1", "layer2.3.act3"}
    got, expected = [], []
    record(m, got, names)
    record(t, expected, names)
    with torch.no_grad():
        y, e = m.layer2(x), t.layer2(x)
        yb, eb = m.layer2[1](y), t.layer2[1](e)  # a block called on its own: its children's hooks fire too
    assert rel_err(y, e) < TOL and rel_err(yb, eb) < TOL
    assert [n for _, n, _ in got].count("layer2.1.conv1") == 4  # pre and post, in layer2 and called alone
    assert_same_log(got, expected)


# ---------------------------------------------------------------------------- copies, moves, a new classifier


def test_hooks_work_on_a_deepcopy_and_come_along_with_it_as_in_torch_nn():
    m, t = pair("se_resnet18", "seresnet18", rd_divisor=8)
    x = image()
    carried = []
    m.layer1.register_forward_hook(lambda *args: carried.append("sepp"))
    t.layer1.register_forward_hook(lambda *args: carried.append("timm"))
    mc, tc = copy.deepcopy(m), copy.deepcopy(t)
    got, expected = [], []
    record(mc, got, {"layer2.0.se", "layer3.1.conv2", "fc"})
    record(tc, expected, {"layer2.0.se", "layer3.1.conv2", "fc"})
    with torch.no_grad():
        assert rel_err(mc(x), tc(x)) < TOL
        m(x)  # the original has none of the copy's hooks
    assert carried == ["sepp", "timm", "sepp"]
    assert_same_log(got, expected)
    assert len(got) == 6


@pytest.mark.parametrize("move", ["float", "double", "channels_last"])
def test_hooks_registered_before_a_move_still_fire_after_it(move):
    m, t = pair("se_resnet18", "seresnet18", torch.float32 if move == "double" else torch.float64, rd_divisor=8)
    got, expected = [], []
    names = {"bn1", "layer2.0.downsample.0", "layer3.0.se", "fc"}
    record(m, got, names)
    record(t, expected, names)
    x = image()
    if move == "float":
        m.float()
        t.float()
        x, tol = x.float(), 1e-5
    elif move == "double":
        m.double()
        t.double()
        tol = TOL
    else:
        m.to(memory_format=torch.channels_last)
        t.to(memory_format=torch.channels_last)
        x, tol = x.contiguous(memory_format=torch.channels_last), TOL
    with torch.no_grad():
        y, e = m(x), t(x)
    assert y.dtype == x.dtype and rel_err(y, e) < tol
    assert_same_log(got, expected, tol)
    assert {a.dtype for _, _, tensors in got for a in tensors} == {x.dtype}


def test_hooks_on_the_new_classifier_after_reset_classifier():
    m, t = pair("se_resnet18", "seresnet18", rd_divisor=8)
    m.reset_classifier(10)
    t.reset_classifier(10)
    m.fc.load_state_dict(t.fc.state_dict())
    assert type(m.fc) is nn.Linear and m.fc.out_features == 10
    got, expected = [], []
    record(m, got, {"fc", "global_pool", "layer4.1"})
    record(t, expected, {"fc", "global_pool", "layer4.1"})
    x = image()
    with torch.no_grad():
        y, e = m(x), t(x)
    assert y.shape == (2, 10) and rel_err(y, e) < TOL
    assert_same_log(got, expected)
    assert got[-1][1] == "fc" and got[-1][2][0].shape == (2, 10)


# ---------------------------------------------------------------------------- the leaves are torch.nn modules

# What FLOP counters and summaries read from the leaves (thop, ptflops, torchinfo, fvcore).
ATTRIBUTES = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "padding_mode",
    "transposed",
    "output_padding",
    "in_features",
    "out_features",
    "num_features",
    "eps",
    "momentum",
    "affine",
    "track_running_stats",
    "inplace",
    "ceil_mode",
    "return_indices",
    "output_size",
    "start_dim",
    "end_dim",
    "training",
)


@pytest.mark.parametrize("ours,theirs,kwargs", PAIRS, ids=[p[0] for p in PAIRS])
def test_the_leaves_are_torch_nn_modules_of_timms_classes_with_timms_attributes(ours, theirs, kwargs):
    m, t = pair(ours, theirs, **kwargs)
    stem = m.conv1 if ours != "seresnetaa50d" else m.conv1[0]  # a deep stem's conv1 is a Sequential, as in timm
    assert type(stem) is nn.Conv2d and type(m.layer1[0].se.fc1) is nn.Conv2d and type(m.fc) is nn.Linear
    assert type(m.bn1) is nn.BatchNorm2d and type(m.layer4[0].downsample[-1]) is nn.BatchNorm2d
    theirs_by_name = dict(t.named_modules())
    leaves = 0
    inplace_differs = set()
    for name, mod in m.named_modules():
        other = theirs_by_name[name]
        if type(mod).__module__.startswith("sepp."):
            assert any(True for _ in mod.children()), name  # sepp's own classes are the containers
            continue
        leaves += 1
        if name.endswith(".gate"):
            # timm's SE gate is timm's own Sigmoid module (not an nn.Sigmoid); sepp's is torch.nn's
            assert type(mod) is nn.Sigmoid and type(other).__name__ == "Sigmoid"
            continue
        assert type(mod) is type(other), name
        for attr in ATTRIBUTES:
            if not hasattr(other, attr):
                assert not hasattr(mod, attr), (name, attr)
            elif attr == "inplace" and mod.inplace != other.inplace:
                inplace_differs.add(name.split(".")[-1])
            else:
                assert getattr(mod, attr) == getattr(other, attr), (name, attr)
        for p in ("weight", "bias"):
            if hasattr(other, p):
                ours_p, theirs_p = getattr(mod, p), getattr(other, p)
                assert (ours_p is None) == (theirs_p is None), (name, p)
                if ours_p is not None:
                    assert isinstance(ours_p, nn.Parameter) and ours_p.shape == theirs_p.shape
    assert leaves > 0
    # timm's ReLUs are all in place; sepp's are in place only after the residual sum (act2 / act3), which a full
    # backward hook then cannot sit on, in either model.
    assert inplace_differs == ({"act1", "act"} if ours == "se_resnet18" else {"act1", "act2", "act"})
    assert repr(m.maxpool) == repr(t.maxpool) and repr(m.layer1[0].conv2) == repr(t.layer1[0].conv2)


def test_an_option_of_a_leaf_set_from_python_is_refused_at_the_next_forward():
    m, _ = pair("se_resnet18", "seresnet18", rd_divisor=8)
    x = image()
    for mod, attr, value in (
        (m.layer4[0].conv1, "stride", (1, 1)),  # the "last stride 1" edit of detection / re-ID backbones
        (m.layer1[0].act2, "inplace", False),
        (m.bn1, "eps", 1e-3),
        (m.maxpool, "ceil_mode", True),
    ):
        old = getattr(mod, attr)
        setattr(mod, attr, value)
        with pytest.raises(TypeError, match=re.escape(f"{attr}={value!r} (C++: {old!r}) was set from Python")):
            m(x)
        setattr(mod, attr, copy.copy(old))  # an equal value is fine
        with torch.no_grad():
            m(x)


def test_a_batch_norms_training_flag_set_directly_reaches_cpp():
    m, t = pair("se_resnet18", "seresnet18", rd_divisor=8)
    m.train()
    t.train()
    for model in (m, t):
        model.layer2[0].bn1.training = False  # a frozen BN, as torch.nn allows
        model.bn1.training = False
    frozen = m.layer2[0].bn1.running_mean.clone()
    moving = m.layer2[1].bn1.running_mean.clone()
    x = image()
    with torch.no_grad():
        assert rel_err(m(x), t(x)) < TOL
    assert torch.equal(m.layer2[0].bn1.running_mean, frozen)  # eval-mode BN: the running statistics, kept
    assert not torch.equal(m.layer2[1].bn1.running_mean, moving)
    assert rel_err(m.layer2[1].bn1.running_mean, t.layer2[1].bn1.running_mean) < TOL
