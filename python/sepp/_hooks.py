"""torch.nn hooks on the submodules of a C++-backed model.

The C++ modules call their children through observation points (``sepp/observe.h``). A child whose Python module
has hooks is marked in C++; at each call, C++ hands it to :func:`_observer` below together with the computation it
would have run (a continuation). The observer calls the Python module as torch.nn does (``module(x)``: pre-hooks,
forward, forward hooks, backward hooks), and the module's forward runs the continuation: the computation stays in C++,
the hooks see, and may replace, the child's input and output. A torch.nn leaf (a convolution, a ReLU, ...) runs its
torch.nn forward instead, which is the same operator on the same tensors (see :func:`leaf_forward`).

Marks follow the hooks: each call from Python into a C++ forward first brings the marks of the model's submodules up
to date (:func:`sync`), so hooks added or removed in any way (handles, global module hooks) take effect at the next
call. With no hook anywhere this is one pass over the modules' hook dictionaries.
"""

from __future__ import annotations

import operator
import threading
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.modules import module as _nn_module

from . import _C

# Marked modules by the address C++ reports: address -> the Python module (weakly: the model owns its modules).
_MARKED: "weakref.WeakValueDictionary[int, nn.Module]" = weakref.WeakValueDictionary()
_local = threading.local()
# Per entry module, what sync() checks on each call. Kept off the module: torch.export restores modules' attributes
# from copies, which would leave a cache holding copies of the dictionaries it watches.
_CACHES: "weakref.WeakKeyDictionary[nn.Module, List[Any]]" = weakref.WeakKeyDictionary()
# Bumped whenever a model's structure changes (a child replaced), so that cached module lists are rebuilt.
_generation = [0]

_GLOBAL_HOOKS = tuple(
    getattr(_nn_module, name)
    for name in (
        "_global_forward_pre_hooks",
        "_global_forward_hooks",
        "_global_forward_hooks_always_called",
        "_global_backward_pre_hooks",
        "_global_backward_hooks",
    )
    if hasattr(_nn_module, name)
)


def cpp_of(module: nn.Module) -> Any:
    """The C++ module behind a sepp submodule, or None for a plain torch.nn module."""
    d = module.__dict__
    return d.get("_cpp", d.get("_sepp_cpp"))


def _hook_dicts(module: nn.Module) -> Tuple[Dict[Any, Any], ...]:
    return (module._forward_pre_hooks, module._forward_hooks, module._backward_pre_hooks, module._backward_hooks)


def _has_hooks(module: nn.Module) -> bool:
    return any(_hook_dicts(module)) or any(_GLOBAL_HOOKS)


def structure_changed() -> None:
    _generation[0] += 1


def _check_tensors(tensors: List[Tuple[str, Dict[str, Any], str, Any]]) -> None:
    for path, d, key, t in tensors:
        if d.get(key) is not t:
            raise TypeError(
                f"sepp: {path} was replaced from Python, but the C++ forward computes with the module's own tensor. "
                f"Change its values in place instead (e.g. `with torch.no_grad(): model.{path}.copy_(new)`)"
            )


def _check_options(options: List[List[Any]]) -> None:
    """Refuses an option of a torch.nn leaf set from Python (``m.layer4[0].conv2.stride = (1, 1)``): C++ keeps
    computing with the one it was built with. Each entry is [path, the leaf's dict, a getter of its options, their
    values]; values are compared by identity first, so an unchanged leaf costs one getter call."""
    for entry in options:
        path, d, get, expected = entry
        if get(d) == expected:
            continue
        names, values = d["_sepp_options"]
        changed = [f"{k}={d[k]!r} (C++: {v!r})" for k, v in zip(names, values) if d[k] != v]
        if changed:
            raise TypeError(
                f"sepp: {path}: {', '.join(changed)} was set from Python, but the C++ forward keeps the options the "
                f"module was built with. Build the model with the options you need instead"
            )
        entry[3] = get(d)  # equal values in new objects


def _sync_training(norms: List[Tuple[Dict[str, Any], Any]]) -> None:
    """A batch norm's ``training`` set directly from Python (``m.bn1.training = False``) reaches its C++ module (the
    other leaves compute the same in either mode)."""
    for d, cpp in norms:
        if d["training"] != cpp.training:
            cpp.train(d["training"])


def sync(root: nn.Module) -> None:
    """Marks in C++ exactly the submodules of ``root`` that have hooks (all of them while global hooks exist), after
    checking that no tensor or option of a torch.nn leaf was replaced from Python (C++ would not see the new one) and
    passing on the leaves' ``training`` flags.

    Under a Python dispatch mode (a FLOP counter such as ``torch.utils.flop_counter.FlopCounterMode`` or ptflops'
    aten backend, a debug mode) each SE block's first child is marked too, so that the SE blocks run their children
    one by one: the mode sees the aten operators timm's SE module runs (its two 1x1 convolutions), not sepp's fused
    excitation operator."""
    cache = _CACHES.get(root)
    if cache is None or cache[0] != _generation[0]:
        named = [(n, m) for n, m in root.named_modules() if m is not root and cpp_of(m) is not None]
        modules = [m for _, m in named]
        dicts = [d for m in modules for d in _hook_dicts(m)]
        leaves = [(n, m.__dict__) for n, m in named if "_sepp_cpp" in m.__dict__]
        options = [
            [n, d, operator.itemgetter(*names), values[0] if len(values) == 1 else values]
            for n, d in leaves
            for names, values in (d["_sepp_options"],)
            if names
        ]
        norms = [(m.__dict__, m._sepp_cpp) for m in modules if isinstance(m, nn.BatchNorm2d)]
        probes = {id(m.fc1) for m in modules if isinstance(cpp_of(m), _C.SEBlock)}
        tensors = [  # (path, the leaf's dict, key, the C++ module's tensor)
            (f"{n}.{key}", d, key, t)
            for n, m in named
            if "_sepp_cpp" in m.__dict__
            for d, cpp_tensors in (
                (m._parameters, m._sepp_cpp.named_parameters(False)),
                (m._buffers, m._sepp_cpp.named_buffers(False)),
            )
            for key, t in cpp_tensors.items()
        ]
        cache = [_generation[0], modules, dicts, True, tensors, options, norms, probes]
        _CACHES[root] = cache
    _, modules, dicts, maybe_marked, tensors, options, norms, probes = cache
    _check_tensors(tensors)
    _check_options(options)
    _sync_training(norms)
    global_hooks = any(_GLOBAL_HOOKS)
    dispatch = torch._C._len_torch_dispatch_stack() > 0
    if not (maybe_marked or global_hooks or dispatch or any(dicts)):
        return  # no hooks, none marked: the forward is the plain C++ one
    any_marked = False
    for m in modules:
        want = global_hooks or any(_hook_dicts(m)) or (dispatch and id(m) in probes)
        cpp = cpp_of(m)
        if want:
            address = _C.module_address(cpp)
            if _MARKED.get(address) is not m:
                _MARKED[address] = m
                _C.observe(cpp, True)
                weakref.finalize(m, _C.observe, cpp, False)
            any_marked = True
        elif _C.is_observed(cpp):
            _C.observe(cpp, False)
            _MARKED.pop(_C.module_address(cpp), None)
    cache[3] = any_marked


def _pending() -> List[Tuple[nn.Module, Any]]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def take_pending(module: nn.Module) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """The C++ continuation waiting for ``module``'s forward, if C++ is calling it through the observer."""
    stack = getattr(_local, "stack", None)
    if stack and stack[-1][0] is module:
        return stack.pop()[1]
    return None


def _observer(address: int, x: torch.Tensor, continuation: Any) -> torch.Tensor:
    module = _MARKED.get(address)
    if module is None or not _has_hooks(module):
        return continuation(x)
    stack = _pending()
    entry = (module, continuation)
    stack.append(entry)
    try:
        out = module(x)
    finally:
        if stack and stack[-1] is entry:  # a pre-hook raised, or replaced the call: forward never took it
            stack.pop()
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"sepp: a hook on the {type(module).__name__} submodule returned a {type(out).__name__}; inside a sepp "
            f"model each submodule's output must stay one tensor"
        )
    return out


# Leaves whose torch.nn forward is not their C++ module's computation: these run the C++ continuation.
_CPP_FORWARD = (nn.Hardsigmoid,)  # sepp's HardSigmoid is clamp(x + 3, 0, 6) / 6, whose backward is exact in float64


def leaf_forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """forward of a mirrored torch.nn leaf: its torch.nn forward, also when C++ calls it for its hooks.

    The torch.nn forward computes what the C++ one does (the same aten operator on the same tensors, with the same
    options), and through ``torch.nn.functional`` as in timm: tools that patch those functions (ptflops' pytorch
    backend) or watch them (``__torch_function__`` modes) see a hooked sepp leaf as they see timm's."""
    continuation = take_pending(module)
    if continuation is not None and isinstance(module, _CPP_FORWARD):
        return continuation(*args, **kwargs)
    return type(module).forward(module, *args, **kwargs)


_C.set_observer(_observer)
