"""The Dynamo entry of :mod:`sepp._twin`, apart so that eager use never imports Dynamo: Dynamo imports this module
(registering :func:`call` as ``nonstrict_trace``) when it first traces a sepp model."""

from __future__ import annotations

from typing import Any, List, Tuple

import torch

from . import _twin

__all__ = ["call"]

if not hasattr(torch.compiler, "nonstrict_trace"):
    raise RuntimeError(
        f"sepp: torch.compile of a sepp model needs torch.compiler.nonstrict_trace, which torch {torch.__version__} "
        f"lacks; use a newer torch, or torch.export / torch.jit.trace"
    )


@torch.compiler.nonstrict_trace
def call(key: str, method: str, names: Tuple[str, ...], tensors: List[torch.Tensor], x: torch.Tensor, args: Any) -> Any:
    """The twin's ``method`` over the named tensors. Dynamo runs it as plain Python on fake tensors and AOTAutograd
    traces it, so the twin may be built here; submodule hooks would run at trace time only, so they are left out."""
    return _twin._call(key, method, names, tensors, x, args, None)
