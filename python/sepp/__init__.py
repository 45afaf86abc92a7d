"""sepp: Squeeze-and-Excitation networks (Hu et al., arXiv 1709.01507) as a LibTorch C++/CUDA library.

    >>> import sepp, torch
    >>> m = sepp.se_resnet50().eval()
    >>> m(torch.randn(1, 3, 224, 224)).shape
    torch.Size([1, 1000])

The networks live in C++ (libsepp); each class here is a ``torch.nn.Module`` backed by the C++ module.
:mod:`sepp.reference` holds the same models in plain PyTorch.
"""

from __future__ import annotations

from typing import Any, Dict

import torch  # noqa: F401  (must be imported before the extension: it provides the C++ module base class)

from . import _C, ops
from ._module import CppModule
from .factories import *  # noqa: F401,F403
from .factories import __all__ as _factory_names
from .inference import OptimizedResNet, optimize_for_inference
from .models import BasicBlock, Bottleneck, ResNet, SEBlock, create_model, model_names
from .weights import load_weights, save_weights

__version__ = _C.build_info()["version"]


def build_info() -> Dict[str, Any]:
    """How this sepp was built: its version, the torch it was compiled against, and whether the CUDA kernels are
    compiled in (``cuda``; ``cuda_version`` is nvcc's), and whether the CPU kernels run their loops on torch's OpenMP
    threads (``openmp``)."""
    info = dict(_C.build_info())
    info["torch_runtime_version"] = torch.__version__
    return info


__all__ = [
    "SEBlock",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "CppModule",
    "create_model",
    "model_names",
    "build_info",
    "ops",
    "save_weights",
    "load_weights",
    "optimize_for_inference",
    "OptimizedResNet",
    *_factory_names,
]
