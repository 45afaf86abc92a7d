"""The traced path of a sepp :class:`~sepp.models.ResNet`: its computation in plain PyTorch, for tracers.

Tracers (Dynamo / ``torch.compile``, ``torch.export``, ``torch.jit.trace``, ONNX export) cannot see into the C++
forward. While one runs, a model computes through its twin, the :class:`sepp.reference.ResNet` of the same options
(built once on the meta device, so it holds no memory), called with ``torch.func.functional_call`` over the sepp
model's own parameters and buffers: gradients reach sepp's parameters, and in training mode the BatchNorm running
statistics of the sepp model are updated in place, as in its eager forward.

Twins are cached by a key made of the options and the training modes (the model's, and the names of the BatchNorms
whose mode differs from it), not on the model: under Dynamo the key is a constant that Dynamo guards (a change of
options or of a mode recompiles), and the twin is looked up inside a ``nonstrict_trace`` function
(:mod:`sepp._twin_dynamo`), which Dynamo runs as plain Python, so building it on the first trace needs no graph break.

Hooks on the model's submodules fire under torch.export, torch.jit.trace and ONNX export (the twin's submodule of the
same name holds them during the call), not under torch.compile.
"""

from __future__ import annotations

import ast
import contextlib
import functools
from typing import Any, Dict, FrozenSet, Iterator, List, Tuple

import torch
from torch import nn
from torch.utils._python_dispatch import _disable_current_modes

from . import reference

__all__ = ["tracing", "forward", "METHODS"]

# The methods of sepp.models.ResNet that have a traced path, each a method of sepp.reference.ResNet.
METHODS = ("forward", "forward_stem", "forward_features", "forward_head")

_is_exporting = getattr(torch.compiler, "is_exporting", None)
_is_dynamo_compiling = getattr(torch.compiler, "is_dynamo_compiling", torch.compiler.is_compiling)


def tracing() -> bool:
    """Whether a tracer is running: Dynamo (``torch.compile``, strict ``torch.export``), non-strict ``torch.export``
    (also under ``torch.onnx.export(dynamo=True)``), ``torch.jit.trace``, or ``torch.onnx.export(dynamo=False)``."""
    return (
        torch.compiler.is_compiling()
        or (_is_exporting is not None and _is_exporting())
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
    )


class _Call(nn.Module):
    """Calls one method of the twin (its child ``net``), so that ``functional_call`` can run any of them."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.state_names: FrozenSet[str] = frozenset(
            [n for n, _ in net.named_parameters()] + [n for n, _ in net.named_buffers()]
        )

    def forward(self, x: torch.Tensor, method: str, *args: Any) -> Any:
        return getattr(self.net, method)(x, *args)


@contextlib.contextmanager
def _untraced() -> Iterator[None]:
    """Runs its body outside the tracer that is running (the jit tracer, the fake / proxy modes of torch.export and
    Dynamo), so that building a twin leaves nothing in the trace."""
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        with _disable_current_modes():
            yield
    finally:
        torch._C._set_tracing_state(state)


@functools.lru_cache(maxsize=32)
def _twin(key: str) -> _Call:
    """The twin for a key of :func:`_key`, in its training modes (on the meta device: structure, no memory)."""
    others, floats, training, flipped = ast.literal_eval(key)
    options = {**dict(others), **{k: float.fromhex(h) for k, h in floats}}
    with _untraced(), torch.device("meta"):
        net = reference.ResNet(**options)
    net.train(training)
    for name in flipped:
        net.get_submodule(name).train(not training)
    return _Call(net)


def _key(model: nn.Module) -> str:
    """What the twin of ``model`` depends on, as a string: its options, its training mode, and the BatchNorms in the
    other mode (only BatchNorm and the head's dropout read a mode)."""
    training = model.training
    flipped = tuple(
        name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and m.training != training
    )
    items = sorted(model.options.items())
    # Floats as float.hex(): under torch.compile(dynamic=True) Dynamo makes them symbolic, and repr() of a symbolic
    # float is not traceable, while hex() specializes it (with a guard on its value).
    floats = tuple((k, v.hex()) for k, v in items if isinstance(v, float))
    others = tuple((k, v) for k, v in items if not isinstance(v, float))
    return repr((others, floats, training, flipped))


# The hook dictionaries of a torch.nn.Module (what _call_impl reads).
_HOOK_ATTRS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_pre_hooks",
    "_backward_hooks",
    "_is_full_backward_hook",
)


@contextlib.contextmanager
def _hooks_of(model: nn.Module, net: nn.Module) -> Iterator[None]:
    """While it runs, each submodule of the twin ``net`` holds the hooks of the submodule of ``model`` with the same
    name, so that tools hooking submodules (FLOP counters by module, feature extractors) see the traced computation.
    The hooks are called with the twin's module."""
    own = dict(model.named_modules())
    saved = []
    try:
        for name, sub in net.named_modules():
            src = own.get(name) if name else None  # the model's own hooks already ran around its forward
            if src is None or not any(getattr(src, a, None) for a in _HOOK_ATTRS):
                continue
            d = sub.__dict__
            saved.append((d, {a: d[a] for a in _HOOK_ATTRS if a in d}))
            for a in _HOOK_ATTRS:
                if a in src.__dict__:
                    d[a] = src.__dict__[a]
        yield
    finally:
        for d, attrs in saved:
            d.update(attrs)


def _call(
    key: str, method: str, names: Tuple[str, ...], tensors: List[torch.Tensor], x: torch.Tensor, args: Any, model: Any
) -> Any:
    """The twin's ``method(x, *args)`` over the named tensors, with ``model``'s submodule hooks (None: without)."""
    call = _twin(key)
    state = dict(zip(names, tensors))
    missing = sorted(call.state_names - state.keys())
    if missing:
        raise RuntimeError(
            f"sepp: the model lacks tensors its reference twin has ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); sepp.models.ResNet and sepp.reference.ResNet disagree"
        )
    own: Dict[str, torch.Tensor] = {"net." + n: state[n] for n in call.state_names}
    with _hooks_of(model, call.net) if model is not None else contextlib.nullcontext():
        if torch.jit.is_tracing():
            # functional_call refuses any module under the jit tracer (against scripted modules); this is the swap
            # it makes, on a plain torch.nn module
            with torch.nn.utils.stateless._reparametrize_module(call, own):
                return call(x, method, *args)
        return torch.func.functional_call(call, own, (x, method, *args))


def forward(model: nn.Module, x: torch.Tensor, method: str = "forward", **kw: Any) -> Any:
    """``model.<method>(x, **kw)`` computed by the model's twin over the model's own parameters and buffers."""
    if method not in METHODS:
        raise ValueError(f"sepp: expected a method among {METHODS}, got {method!r}")
    args = tuple(kw.pop(name) for name in ("pre_logits",) if name in kw) if method == "forward_head" else ()
    if kw:
        raise TypeError(f"sepp: {method}() got unexpected keyword argument(s) {sorted(kw)}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"sepp: {method}() expected a tensor, got {type(x).__name__}")
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    key, names, tensors = _key(model), tuple(state), list(state.values())
    if _is_dynamo_compiling():
        from . import _twin_dynamo  # imported, and so registered with Dynamo, by the first trace

        return _twin_dynamo.call(key, method, names, tensors, x, args)
    return _call(key, method, names, tensors, x, args, model)
