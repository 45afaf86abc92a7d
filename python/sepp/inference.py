"""Inference-only models: :func:`optimize_for_inference` (the C++ ``sepp::optimize_for_inference``)."""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from . import _C
from .models import ResNet

_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float64: "float64"}


class OptimizedResNet(nn.Module):
    """What :func:`optimize_for_inference` returns: an ``nn.Module`` computing the same function as the model in eval
    mode, with no parameters and no autograd. It holds its own copy of the weights, in oneDNN's layout on the CPU,
    so it cannot be trained, moved or cast: optimize the model again for that."""

    def __init__(self, impl: Any, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self._impl = impl
        self.dtype = dtype
        self.device = device
        self.training = False

    @property
    def backend(self) -> str:
        """``"onednn"`` (CPU: prepacked oneDNN convolutions with fused post-ops), ``"cudnn"`` (CUDA: cuDNN
        convolutions with fused bias + ReLU and bias + residual sum + ReLU) or ``"aten"`` (folded weights, ATen
        convolutions: float64, or a device without the fused kernels for the dtype)."""
        return self._impl.backend

    @property
    def cuda_graphs_captured(self) -> int:
        """How many CUDA graphs (one per input shape and dtype) the model holds now: at most 8, the least recently
        used dropped first."""
        return self._impl.cuda_graphs_captured

    @property
    def activation_bytes(self) -> int:
        """CPU: the bytes of activation memory the model keeps between calls, so that its large activations are not
        mapped afresh (and page-faulted) on every call; those of a shape not used in the last 4 calls are released.
        0 on CUDA."""
        return self._impl.activation_bytes

    @property
    def options(self) -> Dict[str, Any]:
        """The options of the model this was made from."""
        return self._impl.options

    @property
    def num_classes(self) -> int:
        return self.options["num_classes"]

    @property
    def num_features(self) -> int:
        return self._impl.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._impl.forward(x)

    def train(self, mode: bool = True) -> "OptimizedResNet":
        if mode:
            raise RuntimeError(
                "OptimizedResNet is inference-only: train the original model, then call "
                "sepp.optimize_for_inference on it again"
            )
        return super().train(False)

    def _apply(self, fn: Any, recurse: bool = True) -> "OptimizedResNet":
        raise TypeError(
            "OptimizedResNet cannot be moved or cast: move or cast the original model, then call "
            "sepp.optimize_for_inference(model, dtype=...) on it again"
        )

    def __deepcopy__(self, memo: Dict[int, Any]) -> "OptimizedResNet":
        # The C++ object is immutable, so copies can share it.
        new = OptimizedResNet(self._impl, self.dtype, self.device)
        new.__dict__.update(
            {
                k: copy.deepcopy(v, memo)
                for k, v in self.__dict__.items()
                if k not in ("_impl", "_modules", "_parameters", "_buffers")
            }
        )
        return new

    def __reduce__(self) -> Any:
        raise TypeError(
            "OptimizedResNet cannot be pickled: save the original model's weights "
            "(sepp.save_weights) and optimize again after loading"
        )

    def extra_repr(self) -> str:
        o = self.options
        return (
            f"block={o['block']!r}, layers={tuple(o['layers'])}, num_classes={o['num_classes']}, "
            f"dtype={self.dtype}, device={self.device}, backend={self.backend!r}"
        )


def optimize_for_inference(
    model: ResNet,
    dtype: Optional[torch.dtype] = None,
    input_size: Optional[Sequence[int]] = None,
    cuda_graphs: bool = True,
) -> OptimizedResNet:
    """An inference-only twin of ``model`` (a :class:`sepp.ResNet`, e.g. ``sepp.se_resnet50()``) on the model's
    device: every BatchNorm folded into its convolution, channels_last activations, and on the CPU oneDNN
    convolutions with weights prepacked once and ReLU / residual sum + ReLU fused in; each SE block's scale, residual
    sum and ReLU in one pass; on the CPU, large activations from a pool kept between calls (``activation_bytes``).
    It computes what ``model.eval()`` computes, from a copy of the weights taken now.

    ``dtype``: what it computes in and takes as input: ``torch.float32`` or ``torch.bfloat16`` on the CPU (bfloat16
    runs oneDNN's kernels where the CPU has them: AVX512-BF16 or AMX), float32 / float16 / bfloat16 on CUDA,
    float64 anywhere; default: the model's dtype. ``input_size``: the input shape [N, C, H, W] oneDNN picks its
    weight layouts for (default [1, C, 224, 224]); other shapes run too, with the dense weights (about as fast as the
    eager model: prepare for the shape you run).

    On CUDA: cuDNN convolutions with bias + ReLU (and bias + residual sum + ReLU) fused, channels_last, each
    bottleneck SE's squeeze taken before conv3 (exact in eval mode: mean(conv3(h)) = conv3(mean(h))), the excitation
    in one kernel (``sepp::se_excite``) and the tail relu(U * s + identity) in one pass; with ``cuda_graphs`` (the
    default) the whole forward is captured as a CUDA graph the first time an input shape is seen and replayed after
    (each call copies its input in and returns a fresh output tensor).
    """
    if not isinstance(model, ResNet):
        raise TypeError(
            f"optimize_for_inference: expected a sepp.ResNet (e.g. sepp.se_resnet50()), got {type(model).__name__}"
        )
    if dtype is not None and dtype not in _DTYPES:
        raise TypeError(
            f"optimize_for_inference: expected dtype torch.float32, torch.bfloat16, torch.float16 or "
            f"torch.float64, got {dtype}"
        )
    weight = next(model.parameters())  # the stem's first convolution
    impl = _C.optimize_for_inference(
        model._cpp,
        _DTYPES[dtype] if dtype is not None else "",
        list(input_size) if input_size is not None else [],
        bool(cuda_graphs),
    )
    return OptimizedResNet(impl, dtype if dtype is not None else weight.dtype, weight.device)
