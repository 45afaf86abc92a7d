"""Weights as safetensors, the one format shared by Python and C++ (``sepp::save_weights`` / ``sepp::load_weights``).

No pickle anywhere: a weight file is untrusted input. The header is checked by the ``safetensors`` package; names and
shapes are checked against the model before any value is copied, so a failed load leaves the model unchanged. Saving
writes a temporary file beside the target and renames it into place, so a crash mid-save leaves the old file whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from .files import write_atomic

__all__ = ["save_weights", "load_weights", "save_tensors", "load_tensors"]

PathLike = Union[str, "os.PathLike[str]"]


def save_tensors(
    tensors: Mapping[str, torch.Tensor], path: PathLike, metadata: Optional[Dict[str, str]] = None
) -> None:
    """Writes named tensors as a safetensors file, atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    payload = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    data = _st_save(payload, metadata={"format": "pt", "writer": "sepp", **(metadata or {})})
    write_atomic(path, data)


def load_tensors(path: PathLike) -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file (CPU). Raises ValueError naming the file and the problem."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"sepp.load_weights({str(path)!r}): cannot read the file: {e.strerror}") from e
    try:
        return _st_load(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError) as e:
        raise ValueError(f"sepp.load_weights({str(path)!r}): not a valid safetensors file: {e}") from e


def save_weights(model: torch.nn.Module, path: PathLike) -> None:
    """Saves ``model.state_dict()`` as safetensors, atomically. C++ reads it with ``sepp::load_weights``."""
    save_tensors(model.state_dict(), path)


def load_weights(model: torch.nn.Module, path: PathLike) -> torch.nn.Module:
    """Loads a safetensors file (from :func:`save_weights`, ``sepp::save_weights`` or any safetensors writer) into
    ``model``: every entry of its state_dict must be in the file with the same shape, and nothing else. Values are
    converted to each tensor's dtype and device. Returns the model."""
    tensors = load_tensors(path)
    state = model.state_dict()
    missing = [k for k in state if k not in tensors]
    unexpected = [k for k in tensors if k not in state]
    mismatched = [
        f"{k} (file {list(tensors[k].shape)}, model {list(v.shape)})"
        for k, v in state.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = [
            f"{what}: {', '.join(items)}"
            for what, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
            if items
        ]
        raise ValueError(
            f"sepp.load_weights({str(path)!r}): the file does not match the model; {'; '.join(parts)}; "
            f"the model is unchanged"
        )
    with torch.no_grad():
        for k, v in state.items():
            v.copy_(tensors[k])
    return model
