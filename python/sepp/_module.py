"""The adapter that makes a C++ ``torch::nn::Module`` a real :class:`torch.nn.Module`.

A :class:`CppModule` holds the C++ module (``_cpp``) and mirrors it: its ``_parameters`` and ``_buffers`` hold the very
tensors the C++ module computes with (same storage, same autograd leaf), and its ``_modules`` hold the C++ children,
each wrapped the same way. So everything ``torch.nn.Module`` builds on those dictionaries works as usual
(``parameters()``, ``state_dict()``, ``load_state_dict()``, optimizers, DDP, hooks on parameters), while ``forward``
runs in C++.

The leaves (convolutions, batch norms, the classifier, activations, pools) are mirrored as genuine ``torch.nn``
modules of their class (``type(m.conv1) is nn.Conv2d``, with its attributes), holding the C++ module's tensors. Tools
that dispatch on the module type (FLOP counters, summaries) treat them as they treat timm's. Hooks on any submodule
fire as in torch.nn while the computation stays in C++ (see :mod:`sepp._hooks`; a leaf with hooks runs its torch.nn
forward, the same operator on the same tensors). A leaf's options (``stride``, ``inplace``, ...) are its C++ module's:
one set from Python makes the next forward raise; a batch norm's ``training`` flag set directly reaches C++.

What must reach C++ is routed there: ``train()``/``eval()`` (the ``training`` flag lives in C++), device / dtype /
memory-format moves (done in place on the shared tensors, so C++ sees them), ``copy.deepcopy`` (C++ ``clone()``).
Replacing a submodule or a parameter object from Python would leave C++ computing with the old one, so it raises.
"""

from __future__ import annotations

import copy
import functools
import itertools
import types
from collections import OrderedDict
from typing import Any, Callable, ClassVar, Dict, Iterator, Optional, Union

import torch
from torch import nn

from . import _C, _hooks

_CppBase = torch._C.cpp.nn.Module

# C++ type -> Python class, filled by the classes that declare a `_cpp_type`.
_WRAPPERS: Dict[type, type] = {}


_LEAVES: Dict[str, type] = {
    cls.__name__: cls
    for cls in (
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.Linear,
        nn.ReLU,
        nn.MaxPool2d,
        nn.AvgPool2d,
        nn.AdaptiveAvgPool2d,
        nn.Flatten,
        nn.Identity,
        nn.Sigmoid,
        nn.Tanh,
        nn.Hardsigmoid,
    )
}


# The attributes each leaf's torch.nn forward reads: set from Python, they would change the torch.nn forward but not
# the C++ one, so _hooks.sync() refuses a change.
_FORWARD_OPTIONS: Dict[str, tuple] = {
    "Conv2d": ("stride", "padding", "dilation", "groups", "padding_mode"),
    "BatchNorm2d": ("eps", "momentum", "track_running_stats"),
    "ReLU": ("inplace",),
    "MaxPool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "AvgPool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    "AdaptiveAvgPool2d": ("output_size",),
    "Flatten": ("start_dim", "end_dim"),
}


# The hook dictionaries (and the full-backward-hook flag) every torch.nn.Module has.
_HOOK_ATTRS = tuple(k for k in nn.Module().__dict__ if "hook" in k)


def wrap(cpp: Any) -> nn.Module:
    """The Python module for a C++ module: a torch.nn leaf, its registered class, else a plain :class:`CppModule`."""
    spec = _C.leaf_spec(cpp)
    if spec is not None:
        return _leaf(cpp, *spec)
    cls = _WRAPPERS.get(type(cpp)) or (CppSequential if _cpp_name(cpp) == "Sequential" else CppModule)
    obj = cls.__new__(cls)
    CppModule._attach(obj, cpp)
    return obj


def _leaf(cpp: Any, name: str, kwargs: Dict[str, Any]) -> nn.Module:
    """A genuine torch.nn module of class ``name`` holding the C++ module's parameters and buffers."""
    cls = _LEAVES[name]
    if name in ("MaxPool2d", "AvgPool2d"):  # square sizes as one int, as timm builds them (torch.nn keeps either)
        kwargs = {k: v[0] if isinstance(v, tuple) and len(set(v)) == 1 else v for k, v in kwargs.items()}
    if name in ("Conv2d", "Linear", "BatchNorm2d"):
        kwargs = {**kwargs, "device": "meta"}  # placeholders, replaced by the C++ tensors below
    leaf = cls(**kwargs)
    params = dict(cpp.named_parameters(False).items())
    buffers = dict(cpp.named_buffers(False).items())
    for key in list(leaf._parameters):
        t = params.get(key)
        if t is not None:
            t._is_param = True
        leaf._parameters[key] = t
    for key in list(leaf._buffers):
        leaf._buffers[key] = buffers.get(key)
    d = leaf.__dict__
    options = _FORWARD_OPTIONS.get(name, ())
    d["_sepp_options"] = (options, tuple(d[k] for k in options))
    d["_sepp_cpp"] = cpp
    d["training"] = bool(cpp.training)
    d["forward"] = types.MethodType(_hooks.leaf_forward, leaf)
    d["train"] = types.MethodType(_leaf_train, leaf)
    return leaf


def _leaf_train(leaf: nn.Module, mode: bool = True) -> nn.Module:
    nn.Module.train(leaf, mode)
    leaf.__dict__["_sepp_cpp"].train(mode)
    return leaf


def _apply_in_place(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """``fn`` (a move, a cast) applied to the module's own tensors in place: the same tensor objects, so C++ and
    optimizers keep them, with new data."""
    with torch.no_grad():
        for t in itertools.chain(module._parameters.values(), module._buffers.values()):
            if t is None:
                continue
            moved = fn(t)
            if moved is not t:
                t.data = moved.data if isinstance(moved, torch.Tensor) else moved
            if t.grad is not None:
                g = fn(t.grad)
                if g is not t.grad:
                    t.grad = g


def _cpp_name(cpp: Any) -> str:
    # "torch::nn::Conv2dImpl" -> "Conv2d"; "sepp::SEBlockImpl" -> "SEBlock"
    name = repr(cpp).split("::")[-1]
    return name[: -len("Impl")] if name.endswith("Impl") else name


class CppModule(nn.Module):
    """A :class:`torch.nn.Module` backed by a C++ ``torch::nn::Module`` (see the module docstring)."""

    _cpp_type: ClassVar[Optional[type]] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_cpp_type") is not None:
            _WRAPPERS[cls._cpp_type] = cls

    def __init__(self, cpp: Any) -> None:
        CppModule._attach(self, cpp)

    def _attach(self, cpp: Any) -> None:
        if not isinstance(cpp, _CppBase):
            raise TypeError(f"expected a C++ torch::nn::Module, got {type(cpp).__name__}")
        d = self.__dict__
        d["_cpp"] = cpp
        d["_sepp_ready"] = False
        nn.Module.__init__(self)  # sets self.training, which the property below ignores until ready
        d["_sepp_ready"] = True
        self._sepp_sync()

    # ------------------------------------------------------------------ mirroring
    def _sepp_sync(self) -> None:
        """(Re)builds the mirror of the C++ module's own parameters, buffers and children.

        Call after any C++ call that replaces a submodule. Unchanged children keep their Python objects.
        """
        cpp = self._cpp
        params: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        for name, t in cpp.named_parameters(False).items():
            t._is_param = True  # isinstance(t, nn.Parameter) holds, and t stays the tensor C++ computes with
            params[name] = t
        buffers: "OrderedDict[str, torch.Tensor]" = OrderedDict(cpp.named_buffers(False).items())
        d = self.__dict__
        own = d.get("_buffers") or {}
        python_buffers = {n for n in d.get("_sepp_python_buffers", ()) if n in own}  # tools may pop theirs
        for name in sorted(python_buffers):
            buffers[name] = d["_buffers"][name]
        old = d.get("_modules") or {}
        children: "OrderedDict[str, nn.Module]" = OrderedDict()
        changed = False
        for name, child in cpp.named_children().items():
            prev = old.get(name)
            if prev is not None and _hooks.cpp_of(prev) is child:
                children[name] = prev
            else:
                children[name] = wrap(child)
                changed = True
        d["_parameters"] = params
        d["_buffers"] = buffers
        d["_modules"] = children
        d["_non_persistent_buffers_set"] = d.get("_sepp_non_persistent", set()) & python_buffers
        d["_sepp_python_buffers"] = python_buffers
        if changed or set(old) != set(children):
            _hooks.structure_changed()

    # ------------------------------------------------------------------ training flag lives in C++
    @property
    def training(self) -> bool:  # type: ignore[override]
        return bool(self.__dict__["_cpp"].training)

    @training.setter
    def training(self, mode: bool) -> None:
        if self.__dict__.get("_sepp_ready"):
            self.__dict__["_cpp"].train(bool(mode))

    def train(self, mode: bool = True) -> "CppModule":
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {type(mode).__name__}")
        self._cpp.train(mode)  # recursive in C++
        for m in self.modules():  # the torch.nn leaves' own flags
            if not isinstance(m, CppModule):
                m.__dict__["training"] = mode
        return self

    # ------------------------------------------------------------------ moves happen in place
    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "CppModule":
        if recurse:
            for m in self.children():
                if isinstance(m, CppModule):
                    m._apply(fn)
                else:
                    _apply_in_place(m, fn)
        _apply_in_place(self, fn)
        return self

    # ------------------------------------------------------------------ structure is owned by C++
    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        if d.get("_sepp_ready") and name not in type(self).__dict__ and name != "training":
            python_buffer = name in d.get("_sepp_python_buffers", ())
            if isinstance(value, nn.Module) or (
                isinstance(value, torch.Tensor)
                and not python_buffer
                and (name in d.get("_parameters", {}) or name in d.get("_buffers", {}) or name in d.get("_modules", {}))
            ):
                raise TypeError(
                    f"{self._get_name()}.{name}: sepp modules are C++ modules; replacing a submodule or a parameter "
                    f"from Python would not reach the C++ forward. Change values in place (e.g. "
                    f"`with torch.no_grad(): m.{name}.copy_(...)`) or use the C++ API (e.g. reset_classifier)"
                )
        super().__setattr__(name, value)

    def register_parameter(self, name: str, param: Optional[nn.Parameter]) -> None:
        if self.__dict__.get("_sepp_ready"):
            raise TypeError(f"{self._get_name()}: cannot register a parameter from Python on a C++ module")
        super().register_parameter(name, param)

    def register_buffer(self, name: str, tensor: Optional[torch.Tensor], persistent: bool = True) -> None:
        """A buffer of the Python module only (the C++ forward never reads it), as tools keep per-module counters
        (thop's ``total_ops``). The C++ module's own buffers cannot be replaced."""
        d = self.__dict__
        if d.get("_sepp_ready"):
            cpp = self._cpp
            cpp_names = set(cpp.named_buffers(False).keys()) | set(cpp.named_parameters(False).keys())
            cpp_names |= set(cpp.named_children().keys())
            if name in cpp_names:
                raise TypeError(
                    f"{self._get_name()}: {name!r} belongs to the C++ module; change it in place instead of "
                    f"registering a new one"
                )
            d.setdefault("_sepp_python_buffers", set()).add(name)
            if not persistent:
                d.setdefault("_sepp_non_persistent", set()).add(name)
        super().register_buffer(name, tensor, persistent)

    def add_module(self, name: str, module: Optional[nn.Module]) -> None:
        if self.__dict__.get("_sepp_ready"):
            raise TypeError(f"{self._get_name()}: cannot add a submodule from Python to a C++ module")
        super().add_module(name, module)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        cpp = self.__dict__.get("_cpp")
        if cpp is not None and not name.startswith("_"):
            opts = getattr(cpp, "options", None)
            if isinstance(opts, dict) and name in opts:
                return opts[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    # ------------------------------------------------------------------ forward, repr, copies
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._sepp_forward(functools.partial(_C.forward, self._cpp), x)

    def _sepp_forward(self, fn: Callable[..., Any], x: torch.Tensor, *rest: Any) -> Any:
        """Runs a C++ forward: the pending C++ continuation when C++ is calling this module for its hooks, else
        ``fn(x, *rest)`` once the hook marks of the submodules are up to date."""
        continuation = _hooks.take_pending(self)
        if continuation is not None:
            return continuation(x)
        return self._sepp_run(fn, x, *rest)

    def _sepp_run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, a call into C++, once the hook marks of the submodules are up to date."""
        _hooks.sync(self)
        return fn(*args)

    def _get_name(self) -> str:
        return type(self).__name__ if type(self)._cpp_type is not None else _cpp_name(self._cpp)

    def extra_repr(self) -> str:
        text = _C.pretty_print(self._cpp)
        start, end = text.find("("), text.rfind(")")
        return text[start + 1 : end] if 0 <= start < end else ""

    def __deepcopy__(self, memo: Dict[int, Any]) -> "CppModule":
        new = type(self).__new__(type(self))
        CppModule._attach(new, self._cpp.clone())  # C++ clone(): new parameters and buffers with the same values
        memo[id(self)] = new
        for name, (src, dst) in self._sepp_python_buffer_pairs(new):
            dst.register_buffer(
                name, copy.deepcopy(src._buffers[name], memo), name not in src.__dict__.get("_sepp_non_persistent", ())
            )
        # Python-side extras (e.g. a pretrained config) are copied too; nn.Module's own state is already there.
        for key, value in self.__dict__.items():
            if key not in new.__dict__:
                new.__dict__[key] = copy.deepcopy(value, memo)
        for (_, p), (_, q) in zip(self.named_parameters(), new.named_parameters()):
            q.requires_grad_(p.requires_grad)
        for src, dst in zip(self.modules(), new.modules()):  # hooks come along, as in a torch.nn module's deepcopy
            for key in _HOOK_ATTRS:
                if key in src.__dict__:
                    dst.__dict__[key] = copy.deepcopy(src.__dict__[key], memo)
        return new

    def _sepp_python_buffer_pairs(self, new: "CppModule") -> Iterator[Any]:
        """(name, (module, its copy)) for each Python-only buffer in this module and its C++ descendants."""
        for (_, src), (_, dst) in zip(self.named_modules(), new.named_modules()):
            if isinstance(src, CppModule):
                for name in sorted(src.__dict__.get("_sepp_python_buffers", ())):
                    if name in src._buffers:
                        yield name, (src, dst)

    def __reduce_ex__(self, protocol: int) -> Any:
        raise TypeError(
            f"a {self._get_name()} submodule of a sepp model cannot be pickled on its own; pickle the whole model "
            f"(or save its state_dict / sepp weights)"
        )


class CppSequential(CppModule):
    """A C++ ``torch::nn::Sequential``: indexable and iterable like :class:`torch.nn.Sequential`."""

    def __getitem__(self, idx: Union[int, slice]) -> Any:
        children = list(self._modules.values())
        if isinstance(idx, slice):
            raise TypeError("slicing a C++ Sequential is not supported; index single blocks")
        return children[idx]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self._modules.values())


class TypedCppModule(CppModule):
    """A CppModule whose class can be rebuilt from its options: picklable (``torch.save(model)``)."""

    def __reduce_ex__(self, protocol: int) -> Any:
        state = OrderedDict((k, v.detach()) for k, v in self.state_dict().items())
        return (_restore, (type(self), dict(self.options), state, self.training))


def _restore(cls: type, options: Dict[str, Any], state: "OrderedDict[str, torch.Tensor]", training: bool) -> Any:
    module = cls(**options)
    first = next((t for t in state.values() if t.is_floating_point()), None)
    if first is not None:
        module.to(device=first.device, dtype=first.dtype)
    module.load_state_dict(state)
    module.train(training)
    return module
